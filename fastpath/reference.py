"""Plain-Python twins of every fast-path function (same names, same results).

Slow and obvious on purpose: the tests check the compiled modules against
these on random inputs. Nothing here is used on the data path.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BytesLike = bytes | bytearray | memoryview

# --------------------------------------------------------------------------
# Checksums (RFC 1071, RFC 1624, RFC 9293 section 3.1, RFC 8200 section 8.1,
# RFC 8684 section 3.3.1)
# --------------------------------------------------------------------------


def _fold(s: int) -> int:
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _raw_sum(data: BytesLike) -> int:
    b = bytes(data)
    if len(b) % 2:
        b += b"\x00"
    return sum(int.from_bytes(b[i : i + 2], "big") for i in range(0, len(b), 2))


def _check_initial(initial: int) -> int:
    if not 0 <= initial <= 0xFFFFFFFF:
        raise ValueError("initial sum must be in 0..0xffffffff")
    return _fold(initial)


def ones_sum(data: BytesLike, initial: int = 0) -> int:
    """Folded, non-inverted one's-complement sum of data plus initial."""
    return _fold(_check_initial(initial) + _raw_sum(data))


def internet_checksum(data: BytesLike, initial: int = 0) -> int:
    """RFC 1071 checksum."""
    return ~ones_sum(data, initial) & 0xFFFF


def incremental_update(old_checksum: int, old_word: int, new_word: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')."""
    for v in (old_checksum, old_word, new_word):
        if not 0 <= v <= 0xFFFF:
            raise ValueError("checksum and words must be 16-bit values")
    return ~_fold((~old_checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word) & 0xFFFF


def _addr(addr: BytesLike, want: int) -> bytes:
    b = bytes(addr)
    if len(b) != want:
        raise ValueError(f"address must be {want} bytes, got {len(b)}")
    return b


def pseudo_sum_v4(src: BytesLike, dst: BytesLike, proto: int, length: int) -> int:
    """RFC 9293 section 3.1 pseudo-header sum (folded, not inverted)."""
    if not (0 <= proto <= 0xFF and 0 <= length <= 0xFFFF):
        raise ValueError("proto must fit 8 bits and length 16 bits")
    return ones_sum(_addr(src, 4) + _addr(dst, 4) + struct.pack("!BBH", 0, proto, length))


def pseudo_sum_v6(src: BytesLike, dst: BytesLike, proto: int, length: int) -> int:
    """RFC 8200 section 8.1 pseudo-header sum (folded, not inverted)."""
    if not (0 <= proto <= 0xFF and 0 <= length <= 0xFFFFFFFF):
        raise ValueError("proto must fit 8 bits and length 32 bits")
    return ones_sum(_addr(src, 16) + _addr(dst, 16) + struct.pack("!IxxxB", length, proto))


def tcp_checksum(pseudo: int, segment: BytesLike) -> int:
    """Final TCP checksum of header+payload given the pseudo-header sum."""
    return internet_checksum(segment, pseudo)


def dss_checksum(dsn: int, ssn: int, dll: int, payload: BytesLike | Sequence[BytesLike]) -> int:
    """RFC 8684 section 3.3.1: checksum of DSN64 || SSN32 || DLL16 || 0 || payload."""
    if not (0 <= dsn <= 0xFFFFFFFFFFFFFFFF and 0 <= ssn <= 0xFFFFFFFF and 0 <= dll <= 0xFFFF):
        raise ValueError("dsn must fit 64 bits, ssn 32 bits, dll 16 bits")
    pieces: Iterable[BytesLike] = payload if isinstance(payload, list | tuple) else (payload,)
    data = struct.pack("!QIHH", dsn, ssn, dll, 0) + b"".join(bytes(p) for p in pieces)
    return internet_checksum(data)


# --------------------------------------------------------------------------
# Segment parser (twin of fastpath.segment)
# --------------------------------------------------------------------------


class ParseError(ValueError):
    """Twin of fastpath.segment.ParseError (same `kind` values)."""

    def __init__(self, kind: str, msg: str) -> None:
        super().__init__(msg)
        self.kind = kind


E_OPT_TRUNC = "option kind without length byte"
E_OPT_LEN = "bad option length"
E_MSS = "bad MSS option length"
E_WS = "bad window scale option length"
E_SACKP = "bad SACK-permitted option length"
E_SACK = "bad SACK option length"
E_TS = "bad timestamps option length"

SEGMENT_FIELDS = (
    "version",
    "src",
    "dst",
    "ttl",
    "ip_header_len",
    "ip_total_len",
    "ip_checksum_ok",
    "truncated",
    "tcp_offset",
    "sport",
    "dport",
    "seq",
    "ack",
    "flags",
    "window",
    "urgent",
    "tcp_checksum",
    "tcp_checksum_ok",
    "payload_offset",
    "payload_len",
    "options_offset",
    "options_len",
    "mss",
    "wscale",
    "sack_permitted",
    "ts_present",
    "ts_val",
    "ts_ecr",
    "sack_blocks",
    "mptcp_spans",
    "options_error",
    "payload",
)


@dataclass(slots=True)
class Segment:
    """Plain-Python twin of fastpath.segment.Segment (same attribute names)."""

    version: int = 0
    src: bytes = b""
    dst: bytes = b""
    ttl: int = 0
    ip_header_len: int = 0
    ip_total_len: int = 0
    ip_checksum_ok: bool = False
    truncated: bool = False
    tcp_offset: int = 0
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0
    window: int = 0
    urgent: int = 0
    tcp_checksum: int = 0
    tcp_checksum_ok: bool | None = None
    payload_offset: int = 0
    payload_len: int = 0
    options_offset: int = 0
    options_len: int = 0
    mss: int = -1
    wscale: int = -1
    sack_permitted: bool = False
    ts_present: bool = False
    ts_val: int = 0
    ts_ecr: int = 0
    sack_blocks: tuple[tuple[int, int], ...] = ()
    mptcp_spans: tuple[tuple[int, int], ...] = ()
    options_error: str | None = None
    payload: memoryview = field(default_factory=lambda: memoryview(b""))


def _u16(b: bytes, off: int) -> int:
    return int.from_bytes(b[off : off + 2], "big")


def _u32(b: bytes, off: int) -> int:
    return int.from_bytes(b[off : off + 4], "big")


# IPv6 extension headers skipped on the way to TCP (RFC 8200 section 4,
# RFC 4302 AH, RFC 6564 uniform format: mobility, HIP, shim6).
IPV6_EXT_HEADERS = frozenset({0, 43, 44, 51, 60, 135, 139, 140})


def _ext_fits(end: int, total: int, n: int) -> None:
    if end > total:
        raise ParseError("bad_header", "IPv6 extension header beyond payload length")
    if end > n:
        raise ParseError("truncated", "IPv6 extension header cut short")


def _ip_layer(p: bytes) -> tuple[int, int, int, int, bytes, bytes, bool, bytes]:
    """(version, header length incl. v6 extensions, total length, ttl, src, dst, ip ok,
    destination for the TCP pseudo-header)."""
    n = len(p)
    if n < 1:
        raise ParseError("truncated", "empty packet")
    version = p[0] >> 4
    if version == 4:
        if n < 20:
            raise ParseError("truncated", "shorter than an IPv4 header")
        ihl = (p[0] & 15) * 4
        if ihl < 20:
            raise ParseError("bad_header", "IPv4 IHL below 5")
        total = _u16(p, 2)
        if total < ihl:
            raise ParseError("bad_header", "IPv4 total length below header length")
        if n < ihl:
            raise ParseError("truncated", "IPv4 options cut short")
        if p[9] != 6:
            raise ParseError("not_tcp", "IPv4 protocol is not TCP")
        if _u16(p, 6) & 0x3FFF:
            raise ParseError("not_tcp", "IPv4 fragment")
        ok = internet_checksum(p[:ihl]) == 0
        return 4, ihl, total, p[8], p[12:16], p[16:20], ok, p[16:20]
    if version == 6:
        if n < 40:
            raise ParseError("truncated", "shorter than an IPv6 header")
        total = 40 + _u16(p, 4)
        nh, t = p[6], 40
        final_dst = p[24:40]
        while nh != 6:
            if nh not in IPV6_EXT_HEADERS:
                raise ParseError("not_tcp", "IPv6 next header is not TCP")
            # the fixed 8 bytes first, then the length the header gives itself:
            # fragment 8, AH (RFC 4302 section 2.2) 4-octet units minus 2, the
            # others (RFC 8200 section 4, RFC 6564) 8-octet units beyond the first
            _ext_fits(t + 8, total, n)
            if nh == 44:
                hl = 8
            elif nh == 51:
                hl = (p[t + 1] + 2) * 4
            else:
                hl = (p[t + 1] + 1) * 8
            _ext_fits(t + hl, total, n)
            if nh == 44 and _u16(p, t + 2) & 0xFFF9:
                raise ParseError("not_tcp", "IPv6 fragment")
            if nh == 43 and p[t + 3] and hl >= 24:
                # RFC 8200 section 8.1: with segments left, the pseudo-header
                # holds the final destination: the last address of a type 0
                # or 2 routing header, Segment List[0] of an SRH (RFC 8754).
                if p[t + 2] in (0, 2):
                    addresses = (hl - 8) // 16
                    final_dst = p[t + 8 + 16 * (addresses - 1) : t + 8 + 16 * addresses]
                elif p[t + 2] == 4:
                    final_dst = p[t + 8 : t + 24]
            nh, t = p[t], t + hl
        return 6, t, total, p[7], p[8:24], p[24:40], True, final_dst
    raise ParseError("bad_version", "IP version is neither 4 nor 6")


def parse_segment(packet: BytesLike, verify_checksum: bool = True) -> Segment:
    """Twin of fastpath.segment.parse_segment."""
    try:
        view = memoryview(packet).cast("B")
    except (TypeError, ValueError):
        raise ParseError("bad_header", "not a contiguous bytes-like object") from None
    p = bytes(view)
    n = len(p)
    version, t, total, ttl, src, dst, ip_ok, pseudo_dst = _ip_layer(p)
    if t + 20 > total:
        raise ParseError("bad_header", "TCP header beyond IP length")
    if t + 20 > n:
        raise ParseError("truncated", "TCP header cut short")
    doff = (p[t + 12] >> 4) * 4
    if doff < 20:
        raise ParseError("bad_header", "TCP data offset below 5")
    if t + doff > total:
        raise ParseError("bad_header", "TCP options beyond IP length")
    if t + doff > n:
        raise ParseError("truncated", "TCP options cut short")
    truncated = n < total
    end = min(n, total)
    s = Segment(
        version=version,
        src=src,
        dst=dst,
        ttl=ttl,
        ip_header_len=t,
        ip_total_len=total,
        ip_checksum_ok=ip_ok,
        truncated=truncated,
        tcp_offset=t,
        sport=_u16(p, t),
        dport=_u16(p, t + 2),
        seq=_u32(p, t + 4),
        ack=_u32(p, t + 8),
        flags=((p[t + 12] & 1) << 8) | p[t + 13],
        window=_u16(p, t + 14),
        tcp_checksum=_u16(p, t + 16),
        urgent=_u16(p, t + 18),
        options_offset=t + 20,
        options_len=doff - 20,
        payload_offset=t + doff,
        payload_len=end - t - doff,
        payload=view[t + doff : end],
    )
    if verify_checksum and not truncated:
        pseudo = (pseudo_sum_v4 if version == 4 else pseudo_sum_v6)(src, pseudo_dst, 6, total - t)
        s.tcp_checksum_ok = ones_sum(p[t:total], pseudo) == 0xFFFF
    _walk_options(p, t + 20, t + doff, s)
    return s


def _walk_options(p: bytes, i: int, end: int, s: Segment) -> None:
    """RFC 9293 section 3.2 option list; the first bad length stops the walk."""
    spans = []
    while i < end:
        kind = p[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end:
            s.options_error = E_OPT_TRUNC
            break
        ol = p[i + 1]
        if ol < 2 or i + ol > end:
            s.options_error = E_OPT_LEN
            break
        body = p[i + 2 : i + ol]
        if kind == 2:
            if ol != 4:
                s.options_error = E_MSS
                break
            s.mss = _u16(body, 0)
        elif kind == 3:
            if ol != 3:
                s.options_error = E_WS
                break
            s.wscale = body[0]
        elif kind == 4:
            if ol != 2:
                s.options_error = E_SACKP
                break
            s.sack_permitted = True
        elif kind == 5:
            if ol < 10 or (ol - 2) % 8:
                s.options_error = E_SACK
                break
            s.sack_blocks = tuple((_u32(body, k), _u32(body, k + 4)) for k in range(0, ol - 2, 8))
        elif kind == 8:
            if ol != 10:
                s.options_error = E_TS
                break
            s.ts_present, s.ts_val, s.ts_ecr = True, _u32(body, 0), _u32(body, 4)
        elif kind == 30:
            spans.append((i, ol))
        i += ol
    s.mptcp_spans = tuple(spans)


# --------------------------------------------------------------------------
# Reassembly (twin of fastpath.reassembly)
# --------------------------------------------------------------------------


class Assembler:
    """Twin of fastpath.reassembly.Assembler: a flat bytearray and a range list."""

    def __init__(self, capacity: int, max_ranges: int = 1024) -> None:
        if capacity < 0 or max_ranges < 1:
            raise ValueError("capacity must be >= 0 and max_ranges >= 1")
        self._cap = capacity
        self.max_ranges = max_ranges
        self._data = bytearray(capacity)
        self._ranges: list[list[int]] = []

    @property
    def capacity(self) -> int:
        return self._cap

    @capacity.setter
    def capacity(self, value: int) -> None:
        if value < 0:
            raise ValueError("capacity must be >= 0")
        self._ranges = [[s, min(e, value)] for s, e in self._ranges if s < value]
        self._data = (self._data + bytearray(max(0, value - self._cap)))[:value]
        self._cap = value

    @property
    def buffered(self) -> int:
        return sum(e - s for s, e in self._ranges)

    def clear(self) -> None:
        self._ranges = []

    def ranges(self) -> list[tuple[int, int]]:
        return [(s, e) for s, e in self._ranges]

    def add(self, offset: int, data: BytesLike) -> int:
        data = bytes(data)
        lo, hi = max(offset, 0), min(offset + len(data), self._cap)
        if hi <= lo:
            return 0
        touching = [r for r in self._ranges if r[1] >= lo and r[0] <= hi]
        if not touching and len(self._ranges) >= self.max_ranges:
            if all(r[1] < lo for r in self._ranges):
                return 0
            self._ranges.pop()  # the highest range goes (Linux prunes the far end)
        held = bytearray(hi - lo)  # 1 where a byte is already held
        for s, e in self._ranges:
            for k in range(max(s, lo), min(e, hi)):
                held[k - lo] = 1
        new = 0
        for k in range(lo, hi):
            if not held[k - lo]:
                self._data[k] = data[k - offset]
                new += 1
        merged = [min([lo] + [r[0] for r in touching]), max([hi] + [r[1] for r in touching])]
        rest = [r for r in self._ranges if r not in touching]
        self._ranges = sorted(rest + [merged])
        return new

    def pop_contiguous(self) -> bytes:
        if not self._ranges or self._ranges[0][0] != 0:
            return b""
        n = self._ranges.pop(0)[1]
        out = bytes(self._data[:n])
        self._data = self._data[n:] + bytearray(n)
        self._ranges = [[s - n, e - n] for s, e in self._ranges]
        return out


# --------------------------------------------------------------------------
# DSS mapping table (twin of fastpath.dssmap)
# --------------------------------------------------------------------------

_HALF = 1 << 31
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


class MappingConflict(ValueError):
    """Twin of fastpath.dssmap.MappingConflict."""


class MappingTableFull(ValueError):
    """Twin of fastpath.dssmap.MappingTableFull."""


def _rel32(ssn: int, base: int) -> int:
    d = (ssn - base) & _M32
    return d - (1 << 32) if d >= _HALF else d


class DssMap:
    """Twin of fastpath.dssmap.DssMap: a sorted list of [start, length, dsn]."""

    def __init__(self, max_entries: int = 1024) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._base = 0
        self._e: list[list[int]] = []  # start relative to base, length, dsn

    def __len__(self) -> int:
        return len(self._e)

    def clear(self) -> None:
        self._e = []

    def entries(self) -> list[tuple[int, int, int]]:
        return [((self._base + s) & _M32, d, n) for s, n, d in self._e]

    def _covering(self, rel: int) -> list[int] | None:
        return next((e for e in self._e if e[0] <= rel < e[0] + e[1]), None)

    def add(self, ssn_start: int, dsn_start: int, length: int) -> None:
        if not (0 <= ssn_start <= _M32 and 0 <= dsn_start <= _M64 and 0 < length < _HALF):
            raise ValueError("ssn must fit 32 bits, dsn 64 bits, 0 < length < 2**31")
        if not self._e:
            self._base = ssn_start
        rel = _rel32(ssn_start, self._base)
        end = rel + length
        if end > _HALF:
            raise ValueError("mapping reaches beyond 2**31 of the table's base SSN")
        overlapped = [e for e in self._e if e[0] < end and e[0] + e[1] > rel]
        for s, _, d in overlapped:
            if (d - s) & _M64 != (dsn_start - rel) & _M64:
                raise MappingConflict("mapping conflicts with a held mapping")
        gaps, cur = [], rel
        for s, n, _ in overlapped:
            if s > cur:
                gaps.append((cur, s))
            cur = max(cur, s + n)
        if cur < end:
            gaps.append((cur, end))
        if len(self._e) + len(gaps) > self.max_entries:
            raise MappingTableFull("mapping table full")
        for a, b in gaps:
            self._e.append([a, b - a, (dsn_start + a - rel) & _M64])
        self._e.sort()

    def lookup(self, ssn: int) -> tuple[int, int] | None:
        if not 0 <= ssn <= _M32:
            raise ValueError("ssn must fit 32 bits")
        rel = _rel32(ssn, self._base)
        e = self._covering(rel)
        if e is None:
            return None
        return (e[2] + rel - e[0]) & _M64, e[0] + e[1] - rel

    def translate(self, ssn: int, length: int) -> list[tuple[int, int]]:
        if not (0 <= ssn <= _M32 and 0 <= length < _HALF):
            raise ValueError("ssn must fit 32 bits and 0 <= length < 2**31")
        out: list[tuple[int, int]] = []
        cur = _rel32(ssn, self._base)
        end = cur + length
        while cur < end:
            e = self._covering(cur)
            if e is None:
                break
            n = min(end, e[0] + e[1]) - cur
            d = (e[2] + cur - e[0]) & _M64
            if out and (out[-1][0] + out[-1][1]) & _M64 == d:
                out[-1] = (out[-1][0], out[-1][1] + n)
            else:
                out.append((d, n))
            cur += n
        return out

    def discard_before(self, ssn: int) -> None:
        if not 0 <= ssn <= _M32:
            raise ValueError("ssn must fit 32 bits")
        rel = _rel32(ssn, self._base)
        kept = []
        for s, n, d in self._e:
            if s + n <= rel:
                continue
            if s < rel:
                s, n, d = rel, n - (rel - s), (d + rel - s) & _M64
            kept.append([s - rel, n, d])
        self._e = kept
        self._base = ssn


__all__ = [
    "ones_sum",
    "internet_checksum",
    "incremental_update",
    "pseudo_sum_v4",
    "pseudo_sum_v6",
    "tcp_checksum",
    "dss_checksum",
    "ParseError",
    "Segment",
    "SEGMENT_FIELDS",
    "parse_segment",
    "Assembler",
    "DssMap",
    "MappingConflict",
    "MappingTableFull",
]
