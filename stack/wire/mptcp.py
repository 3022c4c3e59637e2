"""MPTCP option codecs: every suboption of RFC 8684 (v1), and RFC 6824 (v0) for traces.

All MPTCP suboptions are TCP option kind 30; byte 1 is the option length and
the high nibble of byte 2 the subtype (RFC 8684 §3). `parse_mptcp(data)`
takes one whole option (kind and length included) and returns one of the
dataclasses below; `opt.emit()` gives the bytes back, so
`parse_mptcp(b).emit() == b` for every option that parses, and
`parse_mptcp(o.emit()) == o` for every valid object. Reserved bits are kept
in a `reserved` field (in their wire position) so odd senders round-trip.

The layout of every variant is decided by the option length, the version
nibble (MP_CAPABLE) and the flag nibble (ADD_ADDR v0 IPVer vs v1 echo); the
`syn`/`ack` arguments of `parse_mptcp` are accepted so callers can pass the
segment's flags, but no RFC 8684 / RFC 6824 layout needs them (a v0
MP_CAPABLE of 12 bytes carries "the sender's key" on both SYN and SYN/ACK).

Lengths (an option whose length fits no layout of its subtype, or disagrees
with its flags or with the bytes given, raises `IntegrityError`; a field value
that no layout allows, such as an unknown ADD_ADDR flag nibble or a version
without a layout of that length, raises `SanityError`):

=============  =====================================================================
MP_CAPABLE     v1: 4 (SYN), 12 (SYN/ACK), 20 (ACK), 22 (+data len), 24 (+checksum);
               v0: 12 (SYN or SYN/ACK, sender key), 20 (ACK); version >= 2: 4 only
MP_JOIN        12 (SYN), 16 (SYN/ACK), 24 (ACK)                     (RFC 8684 §3.2)
DSS            4 + {0, 4, 8} + {0, 10, 14} (+2 checksum, only with a mapping) (§3.3)
ADD_ADDR       v1 (low nibble 000E): v4 8/10 echo, 16/18 HMAC; v6 20/22, 28/30 (§3.4.1)
               v0 (low nibble = IPVer 4|6): v4 8/10, v6 20/22 (RFC 6824 §3.4.1)
REMOVE_ADDR    3 + n, n >= 1                                         (§3.4.2)
MP_PRIO        3 (v1, and v0 without id), 4 (v0 with address id)     (§3.3.8 / 6824)
MP_FAIL        12;  MP_FASTCLOSE 12;  MP_TCPRST 4                     (§3.7, §3.5, §3.6)
=============  =====================================================================

JSON view (`to_fields(opt)`, used by `mpstack trace dump --json`): a dict with
`subtype` (the name) and these keys, all present for that subtype; a field
the variant does not carry on the wire is `None`. Integers are ints (dsn and
data_ack are the raw wire values, 4 or 8 bytes, not expanded), keys, nonces
and HMACs are lowercase hex strings (keys 16 digits, nonces 8), addresses
strings.

=============  =====================================================================
MP_CAPABLE     version, flags, sender_key, receiver_key, data_len, checksum
MP_JOIN        backup, addr_id, token, nonce, hmac  (ACK: backup/addr_id/token/nonce
               None; SYN: hmac None; SYN/ACK: token None; hmac 8 or 20 bytes)
DSS            flags (byte 3 as on the wire), data_ack, dsn, ssn, dll, checksum, data_fin
ADD_ADDR       version, echo, addr_id, address, port, hmac
REMOVE_ADDR    addr_ids (list of ints)
MP_PRIO        backup, addr_id (None in the 3-byte form)
MP_FAIL        dsn
MP_FASTCLOSE   receiver_key
MP_TCPRST      flags (the UVWT nibble), reason
other          subtype "UNKNOWN", subtype_id (int), raw (hex of the whole option)
=============  =====================================================================
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, ClassVar

from .errors import IntegrityError, SanityError
from .errors import check_uint as _u

__all__ = [
    "ADD_ADDR",
    "AddAddr",
    "CAP_A",
    "CAP_B",
    "CAP_C",
    "CAP_H",
    "DSS",
    "DSS_A",
    "DSS_F",
    "DSS_M",
    "DSS_a",
    "DSS_m",
    "Dss",
    "KIND_MPTCP",
    "MP_CAPABLE",
    "MP_FAIL",
    "MP_FASTCLOSE",
    "MP_JOIN",
    "MP_PRIO",
    "MP_TCPRST",
    "MpCapable",
    "MpFail",
    "MpFastclose",
    "MpJoin",
    "MpPrio",
    "MpTcpRst",
    "MptcpSuboption",
    "REMOVE_ADDR",
    "RemoveAddr",
    "SUBTYPE_NAMES",
    "TCPRST_REASONS",
    "UnknownMptcp",
    "parse_mptcp",
    "to_fields",
]

KIND_MPTCP = 30

# RFC 8684 §3 / IANA "MPTCP Option Subtypes"
MP_CAPABLE = 0x0
MP_JOIN = 0x1
DSS = 0x2
ADD_ADDR = 0x3
REMOVE_ADDR = 0x4
MP_PRIO = 0x5
MP_FAIL = 0x6
MP_FASTCLOSE = 0x7
MP_TCPRST = 0x8

SUBTYPE_NAMES = {
    MP_CAPABLE: "MP_CAPABLE",
    MP_JOIN: "MP_JOIN",
    DSS: "DSS",
    ADD_ADDR: "ADD_ADDR",
    REMOVE_ADDR: "REMOVE_ADDR",
    MP_PRIO: "MP_PRIO",
    MP_FAIL: "MP_FAIL",
    MP_FASTCLOSE: "MP_FASTCLOSE",
    MP_TCPRST: "MP_TCPRST",
}

# MP_CAPABLE flags (RFC 8684 §3.1): A checksum required, B extensibility,
# C no joins to the initial address, D..G crypto (reserved), H HMAC-SHA256.
CAP_A = 0x80
CAP_B = 0x40
CAP_C = 0x20
CAP_H = 0x01

# DSS flags, low bits of byte 3 (RFC 8684 §3.3): A data ACK present, a data
# ACK is 8 octets, M mapping present, m DSN is 8 octets, F DATA_FIN.
DSS_A = 0x01
DSS_a = 0x02
DSS_M = 0x04
DSS_m = 0x08
DSS_F = 0x10

# MP_TCPRST reason codes (RFC 8684 §3.6)
TCPRST_REASONS = {
    0: "unspecified",
    1: "MPTCP-specific error",
    2: "lack of resources",
    3: "administratively prohibited",
    4: "too much outstanding data",
    5: "unacceptable performance",
    6: "middlebox interference",
}


def _hdr(subtype: int, length: int, nibble: int) -> bytes:
    return bytes((KIND_MPTCP, length, (subtype << 4) | nibble))


def _hexkey(v: int | None, digits: int) -> str | None:
    return None if v is None else f"{v:0{digits}x}"


# ---------------------------------------------------------------- MP_CAPABLE


@dataclass(slots=True)
class MpCapable:
    """MP_CAPABLE (RFC 8684 §3.1; v0 RFC 6824 §3.1).

    The variant follows from which fields are set: no key (4, SYN v1),
    sender_key (12), both keys (20), + data_len (22), + checksum (24).
    """

    version: int = 1
    flags: int = CAP_H
    sender_key: int | None = None
    receiver_key: int | None = None
    data_len: int | None = None
    checksum: int | None = None

    subtype: ClassVar[int] = MP_CAPABLE

    @property
    def checksum_required(self) -> bool:
        return bool(self.flags & CAP_A)

    @property
    def hmac_sha256(self) -> bool:
        return bool(self.flags & CAP_H)

    @property
    def length(self) -> int:
        if self.sender_key is None:
            return 4
        if self.receiver_key is None:
            return 12
        if self.data_len is None:
            return 20
        return 22 if self.checksum is None else 24

    def _check(self) -> None:
        later = (self.sender_key, self.receiver_key, self.data_len, self.checksum)
        seen_none = False
        for v in later:
            if v is None:
                seen_none = True
            elif seen_none:
                raise SanityError("MP_CAPABLE fields must be filled in order (keys, len, csum)")
        _check_mpc_version(self.version, self.length)

    def emit(self) -> bytes:
        self._check()
        out = bytearray(_hdr(MP_CAPABLE, self.length, _u(self.version, 4, "version")))
        out.append(_u(self.flags, 8, "flags"))
        if self.sender_key is not None:
            out += _u(self.sender_key, 64, "sender_key").to_bytes(8, "big")
        if self.receiver_key is not None:
            out += _u(self.receiver_key, 64, "receiver_key").to_bytes(8, "big")
        if self.data_len is not None:
            out += _u(self.data_len, 16, "data_len").to_bytes(2, "big")
        if self.checksum is not None:
            out += _u(self.checksum, 16, "checksum").to_bytes(2, "big")
        return bytes(out)


def _check_mpc_version(version: int, length: int) -> None:
    # RFC 8684 §3.1: a SYN may offer a higher version (4 bytes, no key); the
    # layout of any other variant is only known for v0 (RFC 6824) and v1.
    if length == 4:
        if version == 0:
            raise SanityError("MP_CAPABLE v0 always carries a key (length 12 or 20)")
    elif length in (12, 20):
        if version > 1:
            raise SanityError(f"MP_CAPABLE version {version} with length {length}: unknown layout")
    elif length in (22, 24):
        if version != 1:
            raise SanityError(f"MP_CAPABLE length {length} only exists in v1, not v{version}")
    else:
        raise SanityError(f"MP_CAPABLE length {length} matches no variant")


def _parse_capable(d: bytes) -> MpCapable:
    n = len(d)
    version = d[2] & 0x0F
    if n not in (4, 12, 20, 22, 24):
        raise IntegrityError(f"MP_CAPABLE length {n} matches no variant")
    _check_mpc_version(version, n)
    opt = MpCapable(version=version, flags=d[3])
    if n >= 12:
        opt.sender_key = int.from_bytes(d[4:12], "big")
    if n >= 20:
        opt.receiver_key = int.from_bytes(d[12:20], "big")
    if n >= 22:
        opt.data_len = int.from_bytes(d[20:22], "big")
    if n == 24:
        opt.checksum = int.from_bytes(d[22:24], "big")
    return opt


# ------------------------------------------------------------------- MP_JOIN

_JOIN_LEN = {"syn": 12, "synack": 16, "ack": 24}


@dataclass(slots=True)
class MpJoin:
    """MP_JOIN (RFC 8684 §3.2). SYN: token + nonce; SYN/ACK: 8-byte truncated
    HMAC + nonce; ACK: 20-byte HMAC (its backup/addr_id bits are reserved on
    the wire and kept raw here)."""

    variant: str
    backup: bool = False
    addr_id: int = 0
    token: int | None = None
    nonce: int | None = None
    hmac: bytes | None = None
    reserved: int = 0  # bits 1..3 of the flag nibble

    subtype: ClassVar[int] = MP_JOIN

    def emit(self) -> bytes:
        if self.variant not in _JOIN_LEN:
            raise SanityError(f"MP_JOIN variant {self.variant!r} not syn/synack/ack")
        if _u(self.reserved, 4, "reserved") & 1:
            raise SanityError("MP_JOIN reserved overlaps the backup bit")
        nibble = self.reserved | (1 if self.backup else 0)
        out = bytearray(_hdr(MP_JOIN, _JOIN_LEN[self.variant], nibble))
        out.append(_u(self.addr_id, 8, "addr_id"))
        if self.variant == "syn":
            if self.hmac is not None or self.token is None or self.nonce is None:
                raise SanityError("MP_JOIN SYN carries token and nonce, no HMAC")
            out += struct.pack("!II", _u(self.token, 32, "token"), _u(self.nonce, 32, "nonce"))
        elif self.variant == "synack":
            if self.token is not None or self.nonce is None or not _is_bytes(self.hmac, 8):
                raise SanityError("MP_JOIN SYN/ACK carries an 8-byte HMAC and a nonce")
            out += bytes(self.hmac) + _u(self.nonce, 32, "nonce").to_bytes(4, "big")
        else:
            if self.token is not None or self.nonce is not None or not _is_bytes(self.hmac, 20):
                raise SanityError("MP_JOIN ACK carries only a 20-byte HMAC")
            out += bytes(self.hmac)
        return bytes(out)


def _is_bytes(v: object, n: int) -> bool:
    return isinstance(v, bytes) and len(v) == n


def _parse_join(d: bytes) -> MpJoin:
    n = len(d)
    if n not in (12, 16, 24):
        raise IntegrityError(f"MP_JOIN length {n} is not 12, 16 or 24")
    nibble = d[2] & 0x0F
    opt = MpJoin("syn", backup=bool(nibble & 1), addr_id=d[3], reserved=nibble & 0x0E)
    if n == 12:
        opt.token, opt.nonce = struct.unpack_from("!II", d, 4)
    elif n == 16:
        opt.variant = "synack"
        opt.hmac = bytes(d[4:12])
        opt.nonce = int.from_bytes(d[12:16], "big")
    else:
        opt.variant = "ack"
        opt.hmac = bytes(d[4:24])
    return opt


# ----------------------------------------------------------------------- DSS


@dataclass(slots=True)
class Dss:
    """Data Sequence Signal (RFC 8684 §3.3; same layout in v0).

    `data_ack`/`dsn` are the raw wire values; `*_len` is 0 (absent), 4 or 8.
    A mapping has dsn, ssn (relative subflow sequence) and dll; `checksum`
    is present (not None) only when the checksum was negotiated.
    """

    data_ack: int | None = None
    data_ack_len: int = 0
    dsn: int | None = None
    dsn_len: int = 0
    ssn: int | None = None
    dll: int | None = None
    checksum: int | None = None
    data_fin: bool = False
    reserved: int = 0  # 12 flag bits not otherwise represented (wire positions)

    subtype: ClassVar[int] = DSS

    @property
    def has_mapping(self) -> bool:
        return self.dsn_len != 0

    @property
    def flags(self) -> int:
        """Byte 3 as on the wire."""
        return self._flags12() & 0xFF

    def _flags12(self) -> int:
        f = 0
        if self.data_ack_len:
            f |= DSS_A | (DSS_a if self.data_ack_len == 8 else 0)
        if self.dsn_len:
            f |= DSS_M | (DSS_m if self.dsn_len == 8 else 0)
        if self.data_fin:
            f |= DSS_F
        return f

    @property
    def length(self) -> int:
        n = 4 + self.data_ack_len
        if self.dsn_len:
            n += self.dsn_len + 6 + (2 if self.checksum is not None else 0)
        return n

    def emit(self) -> bytes:
        if self.data_ack_len not in (0, 4, 8) or self.dsn_len not in (0, 4, 8):
            raise SanityError("DSS data_ack_len/dsn_len must be 0, 4 or 8")
        if (self.data_ack is None) != (self.data_ack_len == 0):
            raise SanityError("DSS data_ack and data_ack_len disagree")
        mapping = (self.dsn, self.ssn, self.dll)
        if self.dsn_len == 0:
            if any(v is not None for v in (*mapping, self.checksum)):
                raise SanityError("DSS without mapping cannot carry dsn/ssn/dll/checksum")
        elif any(v is None for v in mapping):
            raise SanityError("DSS mapping needs dsn, ssn and dll")
        f = self._flags12()
        rep = DSS_A | DSS_M | DSS_F | (DSS_a if self.data_ack_len else 0)
        rep |= DSS_m if self.dsn_len else 0
        if _u(self.reserved, 12, "reserved") & rep:
            raise SanityError("DSS reserved overlaps represented flags")
        f |= self.reserved
        out = bytearray(_hdr(DSS, self.length, f >> 8))
        out.append(f & 0xFF)
        if self.data_ack_len:
            out += _u(self.data_ack, self.data_ack_len * 8, "data_ack").to_bytes(
                self.data_ack_len, "big"
            )
        if self.dsn_len:
            out += _u(self.dsn, self.dsn_len * 8, "dsn").to_bytes(self.dsn_len, "big")
            out += struct.pack("!IH", _u(self.ssn, 32, "ssn"), _u(self.dll, 16, "dll"))
            if self.checksum is not None:
                out += _u(self.checksum, 16, "checksum").to_bytes(2, "big")
        return bytes(out)


def _parse_dss(d: bytes) -> Dss:
    n = len(d)
    if n < 4:
        raise IntegrityError(f"DSS length {n} < 4")
    f = ((d[2] & 0x0F) << 8) | d[3]
    ack_len = (8 if f & DSS_a else 4) if f & DSS_A else 0
    dsn_len = (8 if f & DSS_m else 4) if f & DSS_M else 0
    base = 4 + ack_len + (dsn_len + 6 if dsn_len else 0)
    if n == base:
        has_csum = False
    elif n == base + 2 and dsn_len:
        has_csum = True
    else:
        raise IntegrityError(f"DSS length {n} does not match flags 0x{f & 0xFF:02x}")
    rep = DSS_A | DSS_M | DSS_F | (DSS_a if ack_len else 0) | (DSS_m if dsn_len else 0)
    opt = Dss(
        data_ack_len=ack_len, dsn_len=dsn_len, data_fin=bool(f & DSS_F), reserved=f & ~rep & 0xFFF
    )
    off = 4
    if ack_len:
        opt.data_ack = int.from_bytes(d[off : off + ack_len], "big")
        off += ack_len
    if dsn_len:
        opt.dsn = int.from_bytes(d[off : off + dsn_len], "big")
        off += dsn_len
        opt.ssn, opt.dll = struct.unpack_from("!IH", d, off)
        off += 6
        if has_csum:
            opt.checksum = int.from_bytes(d[off : off + 2], "big")
    return opt


# ------------------------------------------------------------------ ADD_ADDR

_ADD_ADDR_LEN = {  # (family, has HMAC, has port) -> length, v1 (RFC 8684 §3.4.1)
    (4, False, False): 8,
    (4, False, True): 10,
    (4, True, False): 16,
    (4, True, True): 18,
    (6, False, False): 20,
    (6, False, True): 22,
    (6, True, False): 28,
    (6, True, True): 30,
}
_ADD_ADDR_LAYOUT = {v: k for k, v in _ADD_ADDR_LEN.items()}


@dataclass(slots=True)
class AddAddr:
    """ADD_ADDR. v1 (RFC 8684 §3.4.1): E flag, HMAC unless echo. v0 (RFC 6824
    §3.4.1): the low nibble is IPVer (4 or 6), never an echo or HMAC."""

    version: int = 1
    echo: bool = False
    addr_id: int = 0
    address: IPv4Address | IPv6Address = IPv4Address(0)
    port: int | None = None
    hmac: bytes | None = None

    subtype: ClassVar[int] = ADD_ADDR

    @property
    def length(self) -> int:
        return _ADD_ADDR_LEN[(self.address.version, self.hmac is not None, self.port is not None)]

    def emit(self) -> bytes:
        if not isinstance(self.address, IPv4Address | IPv6Address):
            raise SanityError(f"ADD_ADDR address {self.address!r} is not an IP address")
        if self.version == 1:
            if self.echo == (self.hmac is not None):
                raise SanityError("ADD_ADDR v1 carries an HMAC exactly when it is not an echo")
            if self.hmac is not None and not _is_bytes(self.hmac, 8):
                raise SanityError("ADD_ADDR HMAC must be 8 bytes")
            nibble = 1 if self.echo else 0
        elif self.version == 0:
            if self.echo or self.hmac is not None:
                raise SanityError("ADD_ADDR v0 has no echo flag and no HMAC")
            nibble = self.address.version
        else:
            raise SanityError(f"ADD_ADDR version {self.version} unknown")
        out = bytearray(_hdr(ADD_ADDR, self.length, nibble))
        out.append(_u(self.addr_id, 8, "addr_id"))
        out += self.address.packed
        if self.port is not None:
            out += _u(self.port, 16, "port").to_bytes(2, "big")
        if self.hmac is not None:
            out += self.hmac
        return bytes(out)


def _parse_add_addr(d: bytes) -> AddAddr:
    n = len(d)
    nibble = d[2] & 0x0F
    if nibble in (4, 6):  # RFC 6824: IPVer
        version = 0
        layout = _ADD_ADDR_LAYOUT.get(n)
        if layout is None or layout[1] or layout[0] != nibble:
            raise IntegrityError(f"ADD_ADDR v0 IPv{nibble} with bad length {n}")
        echo = False
    elif nibble & 0x0E == 0:  # RFC 8684: 000E
        version = 1
        echo = bool(nibble & 1)
        layout = _ADD_ADDR_LAYOUT.get(n)
        if layout is None or layout[1] == echo:
            raise IntegrityError(f"ADD_ADDR length {n} does not fit echo={int(echo)}")
    else:
        raise SanityError(f"ADD_ADDR flag nibble 0x{nibble:x} is neither v1 nor v0")
    family, has_hmac, has_port = layout
    alen = 4 if family == 4 else 16
    address: IPv4Address | IPv6Address = (
        IPv4Address(d[4:8]) if family == 4 else IPv6Address(d[4:20])
    )
    off = 4 + alen
    port = None
    if has_port:
        port = int.from_bytes(d[off : off + 2], "big")
        off += 2
    hmac = bytes(d[off : off + 8]) if has_hmac else None
    return AddAddr(version, echo, d[3], address, port, hmac)


# -------------------------------------------------- REMOVE_ADDR, MP_PRIO, ...


@dataclass(slots=True)
class RemoveAddr:
    """REMOVE_ADDR (RFC 8684 §3.4.2): one or more address ids."""

    addr_ids: tuple[int, ...] = ()
    reserved: int = 0

    subtype: ClassVar[int] = REMOVE_ADDR

    def emit(self) -> bytes:
        if not self.addr_ids:
            raise SanityError("REMOVE_ADDR needs at least one address id")
        if len(self.addr_ids) > 252:
            raise SanityError("REMOVE_ADDR: too many ids for one option")
        ids = bytes(_u(i, 8, "addr_id") for i in self.addr_ids)
        return _hdr(REMOVE_ADDR, 3 + len(ids), _u(self.reserved, 4, "reserved")) + ids


@dataclass(slots=True)
class MpPrio:
    """MP_PRIO (RFC 8684 §3.3.8: 3 bytes; RFC 6824 §3.3.8: optional address id)."""

    backup: bool = False
    addr_id: int | None = None
    reserved: int = 0  # bits 1..3 of the flag nibble

    subtype: ClassVar[int] = MP_PRIO

    def emit(self) -> bytes:
        if _u(self.reserved, 4, "reserved") & 1:
            raise SanityError("MP_PRIO reserved overlaps the backup bit")
        nibble = self.reserved | (1 if self.backup else 0)
        if self.addr_id is None:
            return _hdr(MP_PRIO, 3, nibble)
        return _hdr(MP_PRIO, 4, nibble) + bytes((_u(self.addr_id, 8, "addr_id"),))


def _emit_r12_u64(subtype: int, reserved: int, value: int, name: str) -> bytes:
    """The 12-byte layout shared by MP_FAIL and MP_FASTCLOSE: 12 reserved bits
    after the subtype, then a 64-bit value (RFC 8684 §3.7, §3.5)."""
    r = _u(reserved, 12, "reserved")
    return _hdr(subtype, 12, r >> 8) + bytes((r & 0xFF,)) + _u(value, 64, name).to_bytes(8, "big")


def _parse_r12_u64(d: bytes, name: str) -> tuple[int, int]:
    """``(value, reserved)`` of an MP_FAIL or MP_FASTCLOSE option."""
    _parse_fixed(d, 12, name)
    return int.from_bytes(d[4:12], "big"), ((d[2] & 0x0F) << 8) | d[3]


@dataclass(slots=True)
class MpFail:
    """MP_FAIL (RFC 8684 §3.7): 64-bit DSN of the failed mapping."""

    dsn: int = 0
    reserved: int = 0  # 12 bits after the subtype

    subtype: ClassVar[int] = MP_FAIL

    def emit(self) -> bytes:
        return _emit_r12_u64(MP_FAIL, self.reserved, self.dsn, "dsn")


@dataclass(slots=True)
class MpFastclose:
    """MP_FASTCLOSE (RFC 8684 §3.5): the receiver's key."""

    receiver_key: int = 0
    reserved: int = 0  # 12 bits after the subtype

    subtype: ClassVar[int] = MP_FASTCLOSE

    def emit(self) -> bytes:
        return _emit_r12_u64(MP_FASTCLOSE, self.reserved, self.receiver_key, "receiver_key")


@dataclass(slots=True)
class MpTcpRst:
    """MP_TCPRST (RFC 8684 §3.6): flags U V W T (T=0x1 transient) and a reason."""

    flags: int = 0
    reason: int = 0

    subtype: ClassVar[int] = MP_TCPRST

    @property
    def transient(self) -> bool:
        return bool(self.flags & 1)

    def emit(self) -> bytes:
        return _hdr(MP_TCPRST, 4, _u(self.flags, 4, "flags")) + bytes(
            (_u(self.reason, 8, "reason"),)
        )


@dataclass(slots=True)
class UnknownMptcp:
    """A suboption with a subtype this module does not know; `raw` is the whole option."""

    subtype: int
    raw: bytes

    def emit(self) -> bytes:
        r = self.raw
        if (
            not isinstance(r, bytes)
            or len(r) < 3
            or r[0] != KIND_MPTCP
            or r[1] != len(r)
            or r[2] >> 4 != self.subtype
            or self.subtype in SUBTYPE_NAMES
        ):
            raise SanityError("UnknownMptcp.raw is not one kind-30 option of its subtype")
        return r


MptcpSuboption = (
    MpCapable | MpJoin | Dss | AddAddr | RemoveAddr | MpPrio | MpFail | MpFastclose | MpTcpRst
    | UnknownMptcp
)


def _parse_fixed(d: bytes, n: int, name: str) -> None:
    if len(d) != n:
        raise IntegrityError(f"{name} length {len(d)} is not {n}")


def parse_mptcp(
    data: bytes | bytearray | memoryview, *, syn: bool = False, ack: bool = False
) -> MptcpSuboption:
    """Parse one whole kind-30 option (kind and length bytes included).

    `syn`/`ack` are the segment's flags; see the module docstring (no layout
    of RFC 8684 or RFC 6824 depends on them, they are accepted for callers).
    """
    del syn, ack
    d = bytes(data)
    if len(d) < 2:
        raise IntegrityError(f"MPTCP option truncated: {len(d)} bytes")
    if d[0] != KIND_MPTCP:
        raise SanityError(f"not an MPTCP option: kind {d[0]}")
    if d[1] != len(d):
        raise IntegrityError(f"MPTCP option length byte {d[1]} != {len(d)} bytes given")
    if len(d) < 3:
        raise IntegrityError("MPTCP option too short for a subtype")
    st = d[2] >> 4
    if st == MP_CAPABLE:
        return _parse_capable(d)
    if st == MP_JOIN:
        return _parse_join(d)
    if st == DSS:
        return _parse_dss(d)
    if st == ADD_ADDR:
        return _parse_add_addr(d)
    if st == REMOVE_ADDR:
        if len(d) < 4:
            raise IntegrityError("REMOVE_ADDR with no address ids")
        return RemoveAddr(tuple(d[3:]), d[2] & 0x0F)
    if st == MP_PRIO:
        if len(d) not in (3, 4):
            raise IntegrityError(f"MP_PRIO length {len(d)} is not 3 or 4")
        return MpPrio(bool(d[2] & 1), d[3] if len(d) == 4 else None, d[2] & 0x0E)
    if st == MP_FAIL:
        return MpFail(*_parse_r12_u64(d, "MP_FAIL"))
    if st == MP_FASTCLOSE:
        return MpFastclose(*_parse_r12_u64(d, "MP_FASTCLOSE"))
    if st == MP_TCPRST:
        _parse_fixed(d, 4, "MP_TCPRST")
        return MpTcpRst(d[2] & 0x0F, d[3])
    return UnknownMptcp(st, d)


# ------------------------------------------------------------------ JSON view


def to_fields(opt: MptcpSuboption) -> dict[str, Any]:
    """The JSON view of one option (see the module docstring for the key sets)."""
    if isinstance(opt, MpCapable):
        return {
            "subtype": "MP_CAPABLE",
            "version": opt.version,
            "flags": opt.flags,
            "sender_key": _hexkey(opt.sender_key, 16),
            "receiver_key": _hexkey(opt.receiver_key, 16),
            "data_len": opt.data_len,
            "checksum": opt.checksum,
        }
    if isinstance(opt, MpJoin):
        is_ack = opt.variant == "ack"
        return {
            "subtype": "MP_JOIN",
            "backup": None if is_ack else opt.backup,
            "addr_id": None if is_ack else opt.addr_id,
            "token": opt.token,
            "nonce": _hexkey(opt.nonce, 8),
            "hmac": None if opt.hmac is None else opt.hmac.hex(),
        }
    if isinstance(opt, Dss):
        return {
            "subtype": "DSS",
            "flags": opt.flags,
            "data_ack": opt.data_ack,
            "dsn": opt.dsn,
            "ssn": opt.ssn,
            "dll": opt.dll,
            "checksum": opt.checksum,
            "data_fin": opt.data_fin,
        }
    if isinstance(opt, AddAddr):
        return {
            "subtype": "ADD_ADDR",
            "version": opt.version,
            "echo": opt.echo,
            "addr_id": opt.addr_id,
            "address": str(opt.address),
            "port": opt.port,
            "hmac": None if opt.hmac is None else opt.hmac.hex(),
        }
    if isinstance(opt, RemoveAddr):
        return {"subtype": "REMOVE_ADDR", "addr_ids": list(opt.addr_ids)}
    if isinstance(opt, MpPrio):
        return {"subtype": "MP_PRIO", "backup": opt.backup, "addr_id": opt.addr_id}
    if isinstance(opt, MpFail):
        return {"subtype": "MP_FAIL", "dsn": opt.dsn}
    if isinstance(opt, MpFastclose):
        return {"subtype": "MP_FASTCLOSE", "receiver_key": _hexkey(opt.receiver_key, 16)}
    if isinstance(opt, MpTcpRst):
        return {"subtype": "MP_TCPRST", "flags": opt.flags, "reason": opt.reason}
    if isinstance(opt, UnknownMptcp):
        return {"subtype": "UNKNOWN", "subtype_id": opt.subtype, "raw": opt.raw.hex()}
    raise TypeError(f"not an MPTCP suboption: {type(opt).__name__}")
