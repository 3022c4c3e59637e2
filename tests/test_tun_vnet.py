"""virtio_net_hdr codec: decode what the kernel writes, build what it must read."""

from __future__ import annotations

import struct

import pytest

from tun.vnet import (
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    PLAIN_HEADER,
    PLAIN_INFO,
    VNET_HDR_LEN,
    VnetError,
    VnetInfo,
    decode_vnet,
    header_for,
    tcp_header_offset,
)


def ipv4_tcp(payload_len: int, *, ihl: int = 5, tcp_words: int = 8, proto: int = 6) -> bytes:
    total = ihl * 4 + tcp_words * 4 + payload_len
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total & 0xFFFF, 1, 0x4000, 64, proto, 0,
                     bytes([10, 1, 0, 2]), bytes([10, 1, 0, 1]))
    ip += bytes(ihl * 4 - 20)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5001, 1, 2, tcp_words << 4, 0x10, 512, 0, 0)
    if tcp_words >= 8:  # NOP NOP timestamps
        tcp += b"\x01\x01\x08\x0a" + bytes(8)
    tcp += bytes(tcp_words * 4 - len(tcp))
    return ip + tcp + bytes(payload_len)


def ipv6_tcp(payload_len: int, *, ext: bool = False) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5001, 1, 2, 5 << 4, 0x10, 512, 0, 0)
    body = tcp + bytes(payload_len)
    nxt = 6
    if ext:  # one 8-byte destination-options header in front of TCP
        body = bytes([6, 0]) + bytes(6) + body
        nxt = 60
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(body), nxt, 64,
                     bytes.fromhex("fd00000000000000" "0000000000000002"),
                     bytes.fromhex("fd00000000000000" "0000000000000001"))
    return ip + body


def test_decode_kernel_gso_read() -> None:
    # What the kernel writes in front of a 64 KB TCP super-segment (tun-offload.md §4a).
    raw = struct.pack("=BBHHHH", F_NEEDS_CSUM, GSO_TCPV4, 52, 1448, 20, 16) + b"payload"
    info = decode_vnet(raw)
    assert info == VnetInfo(F_NEEDS_CSUM, GSO_TCPV4, 52, 1448, 20, 16)
    assert info.needs_csum and info.is_gso and info.checksum_verified
    assert not info.data_valid


def test_decode_plain_and_data_valid() -> None:
    assert decode_vnet(bytes(10)) is PLAIN_INFO
    assert not PLAIN_INFO.checksum_verified and not PLAIN_INFO.is_gso
    info = decode_vnet(struct.pack("=BBHHHH", F_DATA_VALID, GSO_NONE, 0, 0, 0, 0))
    assert info.data_valid and info.checksum_verified and not info.needs_csum


def test_decode_truncated() -> None:
    with pytest.raises(VnetError):
        decode_vnet(b"\x01\x01\x00")


def test_encode_decode_round_trip() -> None:
    info = VnetInfo(F_NEEDS_CSUM, GSO_TCPV6, 72, 1428, 40, 16)
    assert len(info.encode()) == VNET_HDR_LEN
    assert decode_vnet(info.encode()) == info


def test_complete_packet_gets_zero_header() -> None:
    assert header_for(ipv4_tcp(100), 0, False) == PLAIN_HEADER


def test_ipv4_super_segment_header() -> None:
    pkt = ipv4_tcp(1448 * 40)  # 20 B IP + 32 B TCP (timestamps)
    hdr = decode_vnet(header_for(pkt, 1448, True))
    assert hdr == VnetInfo(F_NEEDS_CSUM, GSO_TCPV4, 52, 1448, 20, 16)


def test_ipv4_with_ip_options() -> None:
    hdr = decode_vnet(header_for(ipv4_tcp(3000, ihl=6, tcp_words=5), 1460, True))
    assert (hdr.csum_start, hdr.hdr_len, hdr.gso_type) == (24, 44, GSO_TCPV4)


def test_ipv6_super_segment_header() -> None:
    hdr = decode_vnet(header_for(ipv6_tcp(1440 * 3), 1440, True))
    assert hdr == VnetInfo(F_NEEDS_CSUM, GSO_TCPV6, 60, 1440, 40, 16)


def test_ipv6_extension_header_walked() -> None:
    hdr = decode_vnet(header_for(ipv6_tcp(10, ext=True), 0, True))
    assert hdr == VnetInfo(F_NEEDS_CSUM, GSO_NONE, 68, 0, 48, 16)


def test_partial_checksum_without_gso() -> None:
    hdr = decode_vnet(header_for(ipv4_tcp(10), 0, True))
    assert hdr == VnetInfo(F_NEEDS_CSUM, GSO_NONE, 52, 0, 20, 16)


def test_known_header_lengths_skip_parsing() -> None:
    pkt = ipv4_tcp(2000)
    assert header_for(pkt, 1000, True, 20, 32) == header_for(pkt, 1000, True)


@pytest.mark.parametrize("bad", [
    b"",  # nothing
    bytes(19),  # shorter than an IPv4 header
    ipv4_tcp(10, proto=17),  # UDP
    b"\x50" + bytes(40),  # IP version 5
    ipv6_tcp(0)[:30],  # truncated IPv6 header
    ipv4_tcp(0)[:30],  # truncated TCP header
])
def test_bad_packets_raise_typed_error(bad: bytes) -> None:
    with pytest.raises(VnetError):
        header_for(bad, 1448, True)


def test_tcp_header_offset() -> None:
    assert tcp_header_offset(ipv4_tcp(0)) == (4, 20)
    assert tcp_header_offset(ipv6_tcp(0)) == (6, 40)
    assert tcp_header_offset(ipv6_tcp(0, ext=True)) == (6, 48)
