"""TCP header and option codecs (RFC 9293 §3.1, RFC 7323, RFC 2018, RFC 8684).

`parse_options` / `emit_options` are exact inverses: NOPs are kept as
`NopOption`, an end-of-option-list keeps whatever padding follows it
(`EolOption.trailing`), unknown kinds keep their bytes, and MPTCP options
(kind 30) are parsed into `stack.wire.mptcp` dataclasses. `TcpHeader.parse`
and `TcpHeader.emit` are exact inverses too (the 3 reserved bits of byte 12
are kept in `reserved`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from .checksum import internet_checksum, pseudo_sum_v4, pseudo_sum_v6, tcp_checksum
from .errors import IntegrityError, SanityError
from .errors import check_uint as _u
from .mptcp import KIND_MPTCP, MptcpSuboption, parse_mptcp

__all__ = [
    "ACK",
    "AE",
    "CWR",
    "ECE",
    "FIN",
    "PSH",
    "RST",
    "SYN",
    "URG",
    "EolOption",
    "MptcpOption",
    "MssOption",
    "NopOption",
    "SackOption",
    "SackPermittedOption",
    "TcpHeader",
    "TcpOption",
    "TimestampsOption",
    "UnknownOption",
    "WindowScaleOption",
    "emit_options",
    "emit_segment",
    "flags_str",
    "pad_options",
    "parse_options",
    "parse_tcp",
    "segment_checksum",
]

# RFC 9293 §3.1 control bits (byte 13), plus AE (ex-NS, RFC 3540 / accurate ECN)
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80
AE = 0x100

_FLAG_LETTERS = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"),
                 (ECE, "E"), (CWR, "W"), (AE, "A"))

KIND_EOL = 0
KIND_NOP = 1
KIND_MSS = 2
KIND_WSCALE = 3
KIND_SACK_PERMITTED = 4
KIND_SACK = 5
KIND_TIMESTAMPS = 8

MAX_OPTIONS_LEN = 40

_HDR = struct.Struct("!HHIIHHHH")


def flags_str(flags: int) -> str:
    """tcpdump-style flag letters, e.g. "S." for SYN/ACK."""
    return "".join(ch for bit, ch in _FLAG_LETTERS if flags & bit) or "none"


# ------------------------------------------------------------------- options


@dataclass(slots=True)
class EolOption:
    """End of option list (kind 0); `trailing` is the padding after it."""

    trailing: bytes = b""

    def emit(self) -> bytes:
        return b"\x00" + bytes(self.trailing)


@dataclass(slots=True)
class NopOption:
    """No-operation (kind 1)."""

    def emit(self) -> bytes:
        return b"\x01"


@dataclass(slots=True)
class MssOption:
    """Maximum segment size (kind 2, length 4; RFC 9293 §3.7.1)."""

    mss: int

    def emit(self) -> bytes:
        return struct.pack("!BBH", KIND_MSS, 4, _u(self.mss, 16, "mss"))


@dataclass(slots=True)
class WindowScaleOption:
    """Window scale (kind 3, length 3; RFC 7323 §2). Shift kept raw (> 14 legal on wire)."""

    shift: int

    def emit(self) -> bytes:
        return bytes((KIND_WSCALE, 3, _u(self.shift, 8, "shift")))


@dataclass(slots=True)
class SackPermittedOption:
    """SACK permitted (kind 4, length 2; RFC 2018 §2)."""

    def emit(self) -> bytes:
        return bytes((KIND_SACK_PERMITTED, 2))


@dataclass(slots=True)
class SackOption:
    """SACK blocks (kind 5, length 2 + 8n, n >= 1; RFC 2018 §3)."""

    blocks: tuple[tuple[int, int], ...]

    def emit(self) -> bytes:
        if not self.blocks:
            raise SanityError("SACK option needs at least one block")
        out = bytearray((KIND_SACK, 2 + 8 * len(self.blocks)))
        for left, right in self.blocks:
            out += struct.pack("!II", _u(left, 32, "sack left"), _u(right, 32, "sack right"))
        return bytes(out)


@dataclass(slots=True)
class TimestampsOption:
    """Timestamps (kind 8, length 10; RFC 7323 §3)."""

    ts_val: int
    ts_ecr: int

    def emit(self) -> bytes:
        val, ecr = _u(self.ts_val, 32, "ts_val"), _u(self.ts_ecr, 32, "ts_ecr")
        return struct.pack("!BBII", KIND_TIMESTAMPS, 10, val, ecr)


@dataclass(slots=True)
class MptcpOption:
    """An MPTCP option (kind 30), parsed into its suboption dataclass."""

    option: MptcpSuboption

    def emit(self) -> bytes:
        return self.option.emit()


@dataclass(slots=True)
class UnknownOption:
    """Any other kind; `data` is what follows the kind and length bytes."""

    kind: int
    data: bytes = b""

    def emit(self) -> bytes:
        if self.kind in _KNOWN_KINDS:
            raise SanityError(f"kind {self.kind} has its own option class")
        if len(self.data) > 253:
            raise SanityError("option data too long")
        return bytes((_u(self.kind, 8, "kind"), 2 + len(self.data))) + bytes(self.data)


TcpOption = (
    EolOption | NopOption | MssOption | WindowScaleOption | SackPermittedOption | SackOption
    | TimestampsOption | MptcpOption | UnknownOption
)

_KNOWN_KINDS = frozenset(
    {KIND_EOL, KIND_NOP, KIND_MSS, KIND_WSCALE, KIND_SACK_PERMITTED, KIND_SACK, KIND_TIMESTAMPS,
     KIND_MPTCP}
)
_FIXED_LEN = {KIND_MSS: 4, KIND_WSCALE: 3, KIND_SACK_PERMITTED: 2, KIND_TIMESTAMPS: 10}


def parse_options(
    data: bytes | bytearray | memoryview, *, syn: bool = False, ack: bool = False
) -> list[TcpOption]:
    """Parse a TCP option area (RFC 9293 §3.1). `syn`/`ack` go to `parse_mptcp`.

    Raises `IntegrityError` for an option whose length byte is missing, < 2
    or runs past the area, and `SanityError` for a known option with a length
    it never has (or an MPTCP option that matches no variant).
    """
    d = bytes(data)
    out: list[TcpOption] = []
    i = 0
    n = len(d)
    while i < n:
        kind = d[i]
        if kind == KIND_EOL:
            out.append(EolOption(d[i + 1 :]))
            break
        if kind == KIND_NOP:
            out.append(NopOption())
            i += 1
            continue
        if i + 1 >= n:
            raise IntegrityError(f"TCP option kind {kind} truncated: no length byte")
        olen = d[i + 1]
        if olen < 2:
            raise IntegrityError(f"TCP option kind {kind} has length {olen} < 2")
        if i + olen > n:
            raise IntegrityError(f"TCP option kind {kind} length {olen} runs past the header")
        body = d[i : i + olen]
        fixed = _FIXED_LEN.get(kind)
        if fixed is not None and olen != fixed:
            raise IntegrityError(f"TCP option kind {kind} has length {olen}, not {fixed}")
        opt: TcpOption
        if kind == KIND_MSS:
            opt = MssOption(int.from_bytes(body[2:4], "big"))
        elif kind == KIND_WSCALE:
            opt = WindowScaleOption(body[2])
        elif kind == KIND_SACK_PERMITTED:
            opt = SackPermittedOption()
        elif kind == KIND_TIMESTAMPS:
            opt = TimestampsOption(*struct.unpack_from("!II", body, 2))
        elif kind == KIND_SACK:
            if (olen - 2) % 8 or olen < 10:
                raise IntegrityError(f"SACK option length {olen} is not 2 + 8n (n >= 1)")
            vals = struct.unpack_from(f"!{(olen - 2) // 4}I", body, 2)
            opt = SackOption(tuple(zip(vals[::2], vals[1::2], strict=True)))
        elif kind == KIND_MPTCP:
            opt = MptcpOption(parse_mptcp(body, syn=syn, ack=ack))
        else:
            opt = UnknownOption(kind, body[2:])
        out.append(opt)
        i += olen
    return out


def emit_options(opts: list[TcpOption]) -> bytes:
    """Serialise an option list; exact inverse of `parse_options`."""
    parts = []
    for k, opt in enumerate(opts):
        if isinstance(opt, EolOption) and k != len(opts) - 1:
            raise SanityError("EOL must be the last option (its padding follows it)")
        parts.append(opt.emit())
    return b"".join(parts)


def pad_options(opts: list[TcpOption]) -> list[TcpOption]:
    """Return `opts` followed by NOPs up to a multiple of 4 bytes (Linux style)."""
    size = len(emit_options(opts))
    return list(opts) + [NopOption() for _ in range(-size % 4)]


# -------------------------------------------------------------------- header


@dataclass(slots=True)
class TcpHeader:
    """A TCP header (RFC 9293 §3.1). `checksum` is as found / to be written
    (None = 0 in `emit`; `emit_segment` always computes it)."""

    sport: int
    dport: int
    seq: int = 0
    ack: int = 0
    flags: int = 0
    window: int = 0
    urgent: int = 0
    checksum: int | None = None
    options: list[TcpOption] = field(default_factory=list)
    reserved: int = 0  # the 3 reserved bits of byte 12

    @property
    def header_len(self) -> int:
        return 20 + len(emit_options(self.options))

    def option(self, cls: type) -> TcpOption | None:
        """The first option of class `cls`, or None."""
        for o in self.options:
            if isinstance(o, cls):
                return o
        return None

    @property
    def mptcp(self) -> list[MptcpSuboption]:
        """The parsed MPTCP suboptions, in order."""
        return [o.option for o in self.options if isinstance(o, MptcpOption)]

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview) -> tuple[TcpHeader, int]:
        """Parse the header at the start of `buf`; return it and its length."""
        if len(buf) < 20:
            raise IntegrityError(f"TCP header truncated: {len(buf)} < 20 bytes")
        sport, dport, seq, ack, off_flags, window, csum, urg = _HDR.unpack_from(buf, 0)
        hlen = (off_flags >> 12) * 4
        if hlen < 20:
            raise IntegrityError(f"TCP data offset {hlen // 4} < 5")
        if len(buf) < hlen:
            raise IntegrityError(f"TCP header truncated: {len(buf)} < data offset {hlen}")
        flags = off_flags & 0x1FF
        _check_flags(flags)
        opts = parse_options(buf[20:hlen], syn=bool(flags & SYN), ack=bool(flags & ACK))
        hdr = cls(
            sport, dport, seq, ack, flags, window, urg, csum, opts, (off_flags >> 9) & 0x7
        )
        return hdr, hlen

    def emit(self) -> bytes:
        """Serialise the header (options included), checksum as stored."""
        opts = emit_options(self.options)
        if len(opts) % 4 or len(opts) > MAX_OPTIONS_LEN:
            raise SanityError(f"TCP options length {len(opts)} not a multiple of 4 <= 40")
        hlen = 20 + len(opts)
        off_flags = (hlen // 4) << 12 | _u(self.reserved, 3, "reserved") << 9
        off_flags |= _u(self.flags, 9, "flags")
        return (
            _HDR.pack(
                _u(self.sport, 16, "sport"),
                _u(self.dport, 16, "dport"),
                _u(self.seq, 32, "seq"),
                _u(self.ack, 32, "ack"),
                off_flags,
                _u(self.window, 16, "window"),
                0 if self.checksum is None else _u(self.checksum, 16, "checksum"),
                _u(self.urgent, 16, "urgent"),
            )
            + opts
        )


def _check_flags(flags: int) -> None:
    # RFC 9293 §3.10.7: no sender sets SYN with FIN or with RST.
    if flags & SYN and flags & (FIN | RST):
        raise SanityError(f"impossible TCP flag combination {flags_str(flags)}")


Address = IPv4Address | IPv6Address | bytes


def _addr_bytes(a: Address | str) -> bytes:
    if isinstance(a, bytes | bytearray):
        if len(a) not in (4, 16):
            raise SanityError(f"address of {len(a)} bytes")
        return bytes(a)
    if isinstance(a, str):
        try:
            a = ip_address(a)
        except ValueError as e:
            raise SanityError(str(e)) from None
    return a.packed


def _pseudo(src: Address | str, dst: Address | str, length: int) -> int:
    s, d = _addr_bytes(src), _addr_bytes(dst)
    if len(s) != len(d):
        raise SanityError("source and destination address families differ")
    if len(s) == 4:
        return pseudo_sum_v4(s, d, 6, length)
    return pseudo_sum_v6(s, d, 6, length)


def segment_checksum(
    segment: bytes | bytearray | memoryview, src: Address | str, dst: Address | str
) -> int:
    """Ones'-complement verification sum of a TCP segment: 0 when it is intact."""
    return internet_checksum(segment, _pseudo(src, dst, len(segment)))


def emit_segment(
    hdr: TcpHeader,
    payload: bytes | bytearray | memoryview,
    src: Address | str,
    dst: Address | str,
) -> bytes:
    """Header + payload with the checksum computed (RFC 9293 §3.1)."""
    raw = bytearray(hdr.emit())
    raw[16:18] = b"\x00\x00"
    raw += payload
    csum = tcp_checksum(_pseudo(src, dst, len(raw)), raw)
    struct.pack_into("!H", raw, 16, csum)
    return bytes(raw)


def parse_tcp(
    segment: bytes | bytearray | memoryview,
    src: Address | str | None = None,
    dst: Address | str | None = None,
) -> tuple[TcpHeader, bytes]:
    """Parse a whole TCP segment; return (header, payload).

    With `src` and `dst` the checksum is verified (`IntegrityError` if bad).
    """
    hdr, hlen = TcpHeader.parse(segment)
    if src is not None and dst is not None and segment_checksum(segment, src, dst) != 0:
        raise IntegrityError("TCP checksum mismatch")
    return hdr, bytes(segment[hlen:])
