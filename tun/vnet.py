"""The virtio-net header that prefixes every TUN read and write with IFF_VNET_HDR.

Layout (`struct virtio_net_hdr`, include/uapi/linux/virtio_net.h, 10 bytes, in
the host's byte order for a TUN device that has not set TUNSETVNETLE/BE):

    u8  flags        VIRTIO_NET_HDR_F_NEEDS_CSUM (1), F_DATA_VALID (2)
    u8  gso_type     GSO_NONE (0), GSO_TCPV4 (1), GSO_UDP (3), GSO_TCPV6 (4),
                     GSO_UDP_L4 (5), | GSO_ECN (0x80)
    u16 hdr_len      bytes of headers (IP + TCP) before the payload
    u16 gso_size     payload bytes per segment (the MSS) of a super-segment
    u16 csum_start   where the checksum coverage starts (the TCP header)
    u16 csum_offset  where, from csum_start, the checksum field is (16 for TCP)

With NEEDS_CSUM the checksum field holds the folded, non-inverted
pseudo-header sum and the receiver (kernel or us) completes it; a received
packet with NEEDS_CSUM therefore carries no valid TCP checksum to verify.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size  # 10

F_NEEDS_CSUM = 0x01
F_DATA_VALID = 0x02
F_RSC_INFO = 0x04

GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

TCP_CSUM_OFFSET = 16  # RFC 9293 §3.1: the checksum is bytes 16-17 of the TCP header

# IPv6 extension headers we walk over to find the TCP header (RFC 8200 §4).
_V6_EXT = {0, 43, 60}  # hop-by-hop, routing, destination options
_PROTO_TCP = 6

PLAIN_HEADER = bytes(VNET_HDR_LEN)


class VnetError(ValueError):
    """A vnet header or the packet behind it cannot be used."""


@dataclass(slots=True, frozen=True)
class VnetInfo:
    """One decoded virtio_net_hdr."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & F_NEEDS_CSUM)

    @property
    def data_valid(self) -> bool:
        return bool(self.flags & F_DATA_VALID)

    @property
    def is_gso(self) -> bool:
        return (self.gso_type & ~GSO_ECN) != GSO_NONE

    @property
    def checksum_verified(self) -> bool:
        """True when the TCP checksum must not (NEEDS_CSUM) or need not be checked."""
        return bool(self.flags & (F_NEEDS_CSUM | F_DATA_VALID))

    def encode(self) -> bytes:
        return VNET_HDR.pack(
            self.flags, self.gso_type, self.hdr_len, self.gso_size,
            self.csum_start, self.csum_offset,
        )


PLAIN_INFO = VnetInfo()


def decode_vnet(buf: bytes | bytearray | memoryview) -> VnetInfo:
    """Decode the first 10 bytes of a TUN read."""
    if len(buf) < VNET_HDR_LEN:
        raise VnetError(f"vnet header truncated: {len(buf)} bytes")
    flags, gso_type, hdr_len, gso_size, start, offset = VNET_HDR.unpack_from(buf)
    if not flags and not gso_type:
        return PLAIN_INFO
    return VnetInfo(flags, gso_type, hdr_len, gso_size, start, offset)


def tcp_header_offset(packet: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Return (ip_version, offset of the TCP header) of an IP packet carrying TCP."""
    if len(packet) < 20:
        raise VnetError("packet too short for an IP header")
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or packet[9] != _PROTO_TCP:
            raise VnetError("not an IPv4/TCP packet")
        return 4, ihl
    if version == 6:
        if len(packet) < 40:
            raise VnetError("packet too short for an IPv6 header")
        nxt, off = packet[6], 40
        while nxt in _V6_EXT:
            if len(packet) < off + 8:
                raise VnetError("IPv6 extension header truncated")
            nxt, off = packet[off], off + (packet[off + 1] + 1) * 8
        if nxt != _PROTO_TCP:
            raise VnetError("not an IPv6/TCP packet")
        return 6, off
    raise VnetError(f"IP version {version}")


def header_for(packet: bytes | bytearray | memoryview, gso_size: int,
               csum_partial: bool, ip_header_len: int = 0, tcp_header_len: int = 0) -> bytes:
    """The vnet header to write in front of `packet`.

    A complete packet (checksums filled in, no segmentation) gets the all-zero
    header. A TCP packet whose checksum field holds only the pseudo-header sum
    (csum_partial) gets NEEDS_CSUM with csum_start at the TCP header and
    csum_offset 16; a super-segment (gso_size > 0) also gets GSO_TCPV4/TCPV6,
    hdr_len = IP + TCP header bytes and gso_size, so the kernel cuts it into
    gso_size-byte segments and completes each checksum. The header lengths are
    taken from the packet unless the caller knows them (`ip_header_len`,
    `tcp_header_len`, both > 0).
    """
    if gso_size <= 0 and not csum_partial:
        return PLAIN_HEADER
    if ip_header_len > 0 and tcp_header_len > 0 and len(packet) >= 20:
        version, start = packet[0] >> 4, ip_header_len
        hdr_len = start + tcp_header_len
    else:
        version, start = tcp_header_offset(packet)
        if len(packet) < start + 20:
            raise VnetError("TCP header truncated")
        hdr_len = start + (packet[start + 12] >> 4) * 4
    if hdr_len > len(packet):
        raise VnetError("headers longer than the packet")
    if gso_size > 0:
        gso_type = GSO_TCPV4 if version == 4 else GSO_TCPV6
        return VNET_HDR.pack(F_NEEDS_CSUM, gso_type, hdr_len, gso_size, start, TCP_CSUM_OFFSET)
    return VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, hdr_len, 0, start, TCP_CSUM_OFFSET)
