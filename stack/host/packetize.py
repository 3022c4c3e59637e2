"""IP packets <-> `TcpSegment`, both ways, on the hot path.

Parsing is one call into the fast path (`fastpath.segment.parse_segment`:
IPv4/IPv6 + TCP headers, options and checksum in C); emitting is `struct`
plus `fastpath.checksum`. Options are laid out as Linux does
(`tcp_options_write`): MSS; SACK-permitted+timestamps (or NOP NOP TS, or NOP
NOP SACK-permitted); NOP wscale; NOP NOP SACK blocks; then the raw MPTCP
options, each NOP-padded to 32 bits. A SYN therefore reads
``mss, sackOK, TS, nop, wscale`` and a data segment ``nop, nop, TS``.

Super-segments (TSO/GSO, see frame.py): `build_frame(..., gso_size=n)` leaves
the TCP checksum partial; `gso_split` is what a device (the kernel, or the
in-memory link) does with it: cut at gso_size, fix lengths, sequence numbers,
IPv4 IDs and flags, and fill in every checksum.
"""

from __future__ import annotations

import struct

from stack.tcp.segment import CWR, FIN, PSH, TcpSegment

from .frame import Frame

try:  # the compiled fast path
    from fastpath.checksum import internet_checksum, ones_sum, pseudo_sum_v4, pseudo_sum_v6
except ImportError:  # pragma: no cover - not built yet: its plain-Python twin
    from fastpath.reference import (  # type: ignore[assignment]
        internet_checksum,
        ones_sum,
        pseudo_sum_v4,
        pseudo_sum_v6,
    )
try:
    from fastpath.segment import ParseError, parse_segment
except ImportError:  # pragma: no cover
    from fastpath.reference import ParseError, parse_segment  # type: ignore[no-redef]

__all__ = [
    "ParseError",
    "parse_segment",
    "to_tcp_segment",
    "encode_options",
    "build_frame",
    "gso_split",
    "MAX_OPTIONS",
]

PROTO_TCP = 6
MAX_OPTIONS = 40  # RFC 9293 §3.1: data offset is at most 15 words
DEFAULT_TTL = 64

_TCP = struct.Struct("!HHIIBBHHH")  # sport dport seq ack off flags window csum urg
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_MSS = struct.Struct("!BBH")
_TS = struct.Struct("!BBBBII")
_WS = struct.Struct("!BBBB")
_SACK_HEAD = struct.Struct("!BBBB")
_SACK_BLOCK = struct.Struct("!II")
_NOPS = (b"", b"\x01\x01\x01", b"\x01\x01", b"\x01")  # pad to 32 bits


def to_tcp_segment(p, packet) -> TcpSegment:
    """The `TcpSegment` of a parsed packet (`p` from `parse_segment`); the
    payload is a zero-copy view, and MPTCP options are copied out raw."""
    if p.mptcp_spans:
        mv = memoryview(packet)
        mptcp = tuple(bytes(mv[o : o + n]) for o, n in p.mptcp_spans)
    else:
        mptcp = ()
    return TcpSegment(
        p.sport,
        p.dport,
        p.seq,
        p.ack,
        p.flags,
        p.window,
        p.mss if p.mss >= 0 else None,
        p.wscale if p.wscale >= 0 else None,
        p.sack_permitted,
        (p.ts_val, p.ts_ecr) if p.ts_present else None,
        p.sack_blocks,
        mptcp,
        p.payload,
    )


def encode_options(seg: TcpSegment) -> bytes:
    """TCP options of `seg` in Linux order, padded to 32 bits. SACK blocks
    that do not fit the 40-byte option space are left out (the first ones,
    most recent first per RFC 2018 §4, are kept)."""
    out: list[bytes] = []
    n = 0
    if seg.mss is not None:
        out.append(_MSS.pack(2, 4, seg.mss))
        n += 4
    if seg.ts is not None:
        if seg.sack_permitted:
            out.append(_TS.pack(4, 2, 8, 10, seg.ts[0], seg.ts[1]))
        else:
            out.append(_TS.pack(1, 1, 8, 10, seg.ts[0], seg.ts[1]))
        n += 12
    elif seg.sack_permitted:
        out.append(b"\x01\x01\x04\x02")
        n += 4
    if seg.wscale is not None:
        out.append(_WS.pack(1, 3, 3, seg.wscale))
        n += 4
    mptcp_len = 0
    for opt in seg.mptcp:
        mptcp_len += (len(opt) + 3) & ~3
    if seg.sack_blocks:
        room = (MAX_OPTIONS - n - mptcp_len - 4) // 8
        blocks = seg.sack_blocks[: max(0, room)]
        if blocks:
            out.append(_SACK_HEAD.pack(1, 1, 5, 2 + 8 * len(blocks)))
            out.extend(_SACK_BLOCK.pack(left, right) for left, right in blocks)
            n += 4 + 8 * len(blocks)
    for opt in seg.mptcp:
        out.append(bytes(opt))
        out.append(_NOPS[len(opt) & 3])
    n += mptcp_len
    if n > MAX_OPTIONS:
        raise ValueError(f"TCP options take {n} bytes, more than {MAX_OPTIONS}")
    return b"".join(out)


def build_frame(
    seg: TcpSegment,
    src: bytes,
    dst: bytes,
    *,
    gso_size: int = 0,
    wire_mss: int = 0,
    ttl: int = DEFAULT_TTL,
    ip_id: int = 0,
) -> Frame:
    """One IPv4 (4-byte addresses) or IPv6 (16-byte) packet carrying `seg`.

    With ``gso_size > 0`` and a payload longer than that, the result is a
    super-segment Frame with a partial checksum (see frame.py); otherwise a
    complete packet. ``wire_mss`` (the MSS of the path, options not counted)
    caps it at ``wire_mss - len(options)`` so that every cut packet fits the
    MTU (or sets it, when ``gso_size`` is 0). IPv4 packets carry DF (RFC 1191
    path MTU discovery)."""
    opts = encode_options(seg)
    if wire_mss:
        fit = wire_mss - len(opts)
        gso_size = min(gso_size, fit) if gso_size > 0 else fit
    payload = seg.payload
    thl = 20 + len(opts)
    tcp_len = thl + len(payload)
    partial = 0 < gso_size < len(payload)
    if len(src) == 4:
        ip_id &= 0xFFFF
        total = 20 + tcp_len
        iph = _IP4.pack(0x45, 0, total, ip_id, 0x4000, ttl, PROTO_TCP, 0, src, dst)
        iph = _IP4.pack(0x45, 0, total, ip_id, 0x4000, ttl, PROTO_TCP, internet_checksum(iph),
                        src, dst)
        pseudo = pseudo_sum_v4(src, dst, PROTO_TCP, tcp_len)
        ihl = 20
    else:
        iph = _IP6.pack(0x60000000, tcp_len, PROTO_TCP, ttl, src, dst)
        pseudo = pseudo_sum_v6(src, dst, PROTO_TCP, tcp_len)
        ihl = 40
    off = (thl >> 2) << 4 | (seg.flags >> 8) & 1
    flags = seg.flags & 0xFF
    if partial:
        csum = pseudo  # NEEDS_CSUM: the device finishes it
    else:
        head = _TCP.pack(seg.sport, seg.dport, seg.seq, seg.ack, off, flags, seg.window, 0,
                         0) + opts
        csum = internet_checksum(payload, ones_sum(head, pseudo))
    tcph = _TCP.pack(seg.sport, seg.dport, seg.seq, seg.ack, off, flags, seg.window, csum, 0)
    data = b"".join((iph, tcph, opts, payload))
    if partial:
        return Frame(data, gso_size, True, ihl, thl)
    return Frame(data, 0, False, ihl, thl)


def gso_split(frame: Frame) -> list[bytes]:
    """Cut a super-segment into packets of at most ``gso_size`` payload bytes
    with complete checksums, as the kernel's tcp_gso_segment does: every piece
    gets a copy of the headers, sequence numbers advance, FIN and PSH stay on
    the last piece only, CWR on the first only, IPv4 IDs increase by one."""
    data = frame.data
    if frame.gso_size <= 0:
        return [data]
    version = data[0] >> 4
    ihl = (data[0] & 0x0F) * 4 if version == 4 else 40
    thl = (data[ihl + 12] >> 4) * 4
    hl = ihl + thl
    mv = memoryview(data)
    payload = mv[hl:]
    size = frame.gso_size
    seq0 = int.from_bytes(data[ihl + 4 : ihl + 8], "big")
    flags0 = data[ihl + 13]
    ip_id0 = int.from_bytes(data[4:6], "big")
    src, dst = (data[12:16], data[16:20]) if version == 4 else (data[8:24], data[24:40])
    tcp_rest = bytes(mv[ihl + 14 : ihl + 16]) + b"\x00\x00" + bytes(mv[ihl + 18 : hl])
    ports = bytes(mv[ihl : ihl + 4])
    acknum = bytes(mv[ihl + 8 : ihl + 13])  # ack + data offset byte
    out: list[bytes] = []
    total = len(payload)
    for i, off in enumerate(range(0, total, size)):
        chunk = payload[off : off + size]
        last = off + size >= total
        flags = flags0
        if not last:
            flags &= ~(FIN | PSH)
        if i:
            flags &= ~CWR
        tcp_len = thl + len(chunk)
        head = b"".join((ports, ((seq0 + off) & 0xFFFFFFFF).to_bytes(4, "big"), acknum,
                         bytes((flags,)), tcp_rest))
        if version == 4:
            pseudo = pseudo_sum_v4(src, dst, PROTO_TCP, tcp_len)
            iph = bytearray(mv[:ihl])
            iph[2:4] = (ihl + tcp_len).to_bytes(2, "big")
            iph[4:6] = ((ip_id0 + i) & 0xFFFF).to_bytes(2, "big")
            iph[10:12] = b"\x00\x00"
            iph[10:12] = internet_checksum(iph).to_bytes(2, "big")
        else:
            pseudo = pseudo_sum_v6(src, dst, PROTO_TCP, tcp_len)
            iph = bytearray(mv[:ihl])
            iph[4:6] = tcp_len.to_bytes(2, "big")
        csum = internet_checksum(chunk, ones_sum(head, pseudo))
        out.append(b"".join((iph, head[:16], csum.to_bytes(2, "big"), head[18:], chunk)))
    return out
