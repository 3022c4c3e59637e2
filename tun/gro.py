"""Receive coalescing (GRO) for TUN devices in plain mode.

Without offloads the kernel hands the TUN one MTU-sized packet per read. Like
Linux's GRO (net/ipv4/tcp_offload.c `tcp_gro_receive`) and wireguard-go's
`tcpGRO`, consecutive in-order segments of one TCP flow from a batch of reads
are joined into one super-segment before the core sees them, so the core
processes (and acknowledges) a byte range instead of every packet, as it does
with the kernel's own super-segments in offload mode.

Packets are joined only when that loses nothing: both checksums verified,
only ACK (and PSH on the last) set, payload present, no IPv4 fragment, the
next sequence number exactly, and the same addresses, ports, ACK number,
window, TCP options, TOS/traffic class and TTL; at most 64 KB. The result
keeps the first packet's headers with the lengths (and IPv4 header
checksum) updated; its TCP checksum is not recomputed, so it is handed over
with `checksum_verified=True`. Anything else passes through unchanged with
`checksum_verified=False` (the core checks it and counts what is bad). The
order of packets within a flow is kept.
"""

from __future__ import annotations

import struct

from fastpath.checksum import internet_checksum
from fastpath.segment import ParseError, parse_segment

ACK, PSH = 0x10, 0x08
MAX_PACKET = 65535  # IPv4 total length / IPv6 payload length limit
MAX_SEGMENTS = 44  # segments joined into one (64 KB of 1448-byte segments)


class _Run:
    __slots__ = ("packets", "hdr_len", "tcp_off", "compat", "next_seq", "size", "version",
                 "psh")

    def __init__(self, pkt: bytes, seg: object, compat: tuple, version: int) -> None:
        self.packets = [pkt]
        self.hdr_len = seg.payload_offset  # type: ignore[attr-defined]
        self.tcp_off = seg.tcp_offset  # type: ignore[attr-defined]
        self.compat = compat
        self.next_seq = (seg.seq + seg.payload_len) & 0xFFFFFFFF  # type: ignore[attr-defined]
        self.size = len(pkt)
        self.version = version
        self.psh = bool(seg.flags & PSH)  # type: ignore[attr-defined]

    def build(self) -> bytes:
        if len(self.packets) == 1:
            return self.packets[0]
        h = self.hdr_len
        first = self.packets[0]
        hdr = bytearray(first[:h])
        if self.version == 4:
            ihl = (hdr[0] & 0x0F) * 4
            struct.pack_into("!H", hdr, 2, self.size)
            hdr[10:12] = b"\0\0"
            struct.pack_into("!H", hdr, 10, internet_checksum(bytes(hdr[:ihl])))
        else:
            struct.pack_into("!H", hdr, 4, self.size - 40)
        if self.psh:
            hdr[self.tcp_off + 13] |= PSH
        return b"".join([bytes(hdr), first[h:], *(p[h:] for p in self.packets[1:])])


def coalesce(packets: list[bytes], max_segments: int = MAX_SEGMENTS) -> list[tuple[bytes, bool]]:
    """Join in-order TCP segments; returns (packet, checksum_verified) in order."""
    out: list[tuple[bytes, bool]] = []
    runs: dict[tuple, _Run] = {}  # flow -> its open run; flushed to `out` in flow order

    def flush(flow: tuple) -> None:
        run = runs.pop(flow, None)
        if run is not None:
            out.append((run.build(), True))

    for pkt in packets:
        try:
            seg = parse_segment(pkt, True)
        except ParseError:
            out.append((pkt, False))
            continue
        version = seg.version
        flow = (seg.src, seg.dst, seg.sport, seg.dport)
        plen = seg.payload_len
        flags = seg.flags
        if (seg.truncated or not seg.tcp_checksum_ok or not seg.ip_checksum_ok or plen == 0
                or flags & ~(ACK | PSH) or not flags & ACK
                or seg.payload_offset + plen != len(pkt)
                or (version == 4 and pkt[6] & 0x3F | pkt[7])):  # MF flag or fragment offset
            flush(flow)
            out.append((pkt, False))
            continue
        opts = pkt[seg.options_offset:seg.options_offset + seg.options_len]
        compat = (seg.ack, seg.window, opts, seg.payload_offset,
                  pkt[:2] if version == 4 else pkt[:4], seg.ttl)
        run = runs.get(flow)
        if run is not None:
            if (not run.psh and run.compat == compat and seg.seq == run.next_seq
                    and run.size + plen <= MAX_PACKET and len(run.packets) < max_segments):
                run.packets.append(pkt)
                run.size += plen
                run.next_seq = (run.next_seq + plen) & 0xFFFFFFFF
                run.psh = bool(flags & PSH)
                continue
            flush(flow)
        runs[flow] = _Run(pkt, seg, compat, version)
    for flow in list(runs):
        flush(flow)
    return out
