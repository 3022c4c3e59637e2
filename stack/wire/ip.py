"""IPv4 (RFC 791) and IPv6 (RFC 8200) header codecs.

`parse` and `emit` are exact inverses: `IPv4Header.parse(b)` keeps every bit
of the header (options as raw bytes, the checksum as found), and `emit()`
writes it back byte for byte; IPv6 extension headers are kept as one raw
chain (`ext_headers`) so odd chains round-trip exactly too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from .checksum import internet_checksum
from .errors import IntegrityError, SanityError
from .errors import check_uint as _u

__all__ = [
    "IPV6_EXT_HEADERS",
    "IPv4Header",
    "IPv6Header",
    "PROTO_TCP",
    "parse_ip",
]

PROTO_TCP = 6

# RFC 8200 §4 extension headers that share the generic "next header, length
# in 8-octet units not counting the first 8" layout (hop-by-hop, routing,
# destination options, mobility RFC 6275, HIP RFC 7401, shim6 RFC 5533);
# the fragment header (44) is a fixed 8 bytes and AH (51, RFC 4302) counts
# its length in 4-octet units minus 2.
_GENERIC_EXT = frozenset({0, 43, 60, 135, 139, 140})
_FRAGMENT = 44
_AH = 51
IPV6_EXT_HEADERS = _GENERIC_EXT | {_FRAGMENT, _AH}

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")


@dataclass(slots=True)
class IPv4Header:
    """An IPv4 header (RFC 791 §3.1). `checksum=None` means "compute on emit"."""

    src: IPv4Address
    dst: IPv4Address
    proto: int = PROTO_TCP
    ttl: int = 64
    tos: int = 0
    total_length: int = 20
    ident: int = 0
    flags: int = 0b010  # 3 bits: reserved, DF, MF
    frag_offset: int = 0
    checksum: int | None = None
    options: bytes = b""

    @property
    def header_len(self) -> int:
        return 20 + len(self.options)

    @property
    def payload_len(self) -> int:
        return self.total_length - self.header_len

    @property
    def dont_fragment(self) -> bool:
        return bool(self.flags & 0b010)

    @property
    def more_fragments(self) -> bool:
        return bool(self.flags & 0b001)

    @classmethod
    def parse(
        cls, buf: bytes | bytearray | memoryview, *, verify: bool = True
    ) -> tuple[IPv4Header, int]:
        """Parse the header at the start of `buf`; return it and its length.

        `verify=False` keeps a header whose checksum is wrong (traces).
        """
        if len(buf) < 20:
            raise IntegrityError(f"IPv4 header truncated: {len(buf)} < 20 bytes")
        (vihl, tos, total, ident, frag, ttl, proto, csum, src, dst) = _V4.unpack_from(buf, 0)
        if vihl >> 4 != 4:
            raise SanityError(f"not IPv4: version {vihl >> 4}")
        hlen = (vihl & 0x0F) * 4
        if hlen < 20:
            raise IntegrityError(f"IPv4 IHL {hlen // 4} < 5")
        if len(buf) < hlen:
            raise IntegrityError(f"IPv4 header truncated: {len(buf)} < IHL {hlen} bytes")
        if total < hlen:
            raise IntegrityError(f"IPv4 total length {total} < header length {hlen}")
        if verify and internet_checksum(bytes(buf[:hlen])) != 0:
            raise IntegrityError("IPv4 header checksum mismatch")
        hdr = cls(
            src=IPv4Address(src),
            dst=IPv4Address(dst),
            proto=proto,
            ttl=ttl,
            tos=tos,
            total_length=total,
            ident=ident,
            flags=frag >> 13,
            frag_offset=frag & 0x1FFF,
            checksum=csum,
            options=bytes(buf[20:hlen]),
        )
        return hdr, hlen

    def emit(self, payload_len: int | None = None) -> bytes:
        """Serialise. `payload_len` given: total length = header + payload_len.

        The checksum is written as stored, or computed when it is None.
        """
        if len(self.options) % 4 or len(self.options) > 40:
            raise SanityError(f"IPv4 options length {len(self.options)} not a multiple of 4 <= 40")
        hlen = self.header_len
        total = self.total_length if payload_len is None else hlen + payload_len
        if not hlen <= total <= 0xFFFF:
            raise SanityError(f"IPv4 total length {total} out of range")
        frag = (_u(self.flags, 3, "flags") << 13) | _u(self.frag_offset, 13, "frag_offset")
        raw = bytearray(
            _V4.pack(
                0x40 | hlen // 4,
                _u(self.tos, 8, "tos"),
                total,
                _u(self.ident, 16, "ident"),
                frag,
                _u(self.ttl, 8, "ttl"),
                _u(self.proto, 8, "proto"),
                0 if self.checksum is None else _u(self.checksum, 16, "checksum"),
                IPv4Address(self.src).packed,
                IPv4Address(self.dst).packed,
            )
        )
        raw += self.options
        if self.checksum is None:
            struct.pack_into("!H", raw, 10, internet_checksum(bytes(raw)))
        return bytes(raw)


def ext_chain_end(next_header: int, chain: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Walk IPv6 extension headers from the start of `chain`.

    Returns (upper-layer protocol, length of the chain). Stops at the first
    header that is not an extension header (ESP, 50, and "no next header", 59,
    end the walk too: nothing after them can be read).
    """
    off = 0
    nh = next_header
    n = len(chain)
    while nh in IPV6_EXT_HEADERS:
        if off + 2 > n:
            raise IntegrityError("IPv6 extension header truncated")
        if nh == _FRAGMENT:
            hl = 8
        elif nh == _AH:
            hl = (chain[off + 1] + 2) * 4
        else:
            hl = (chain[off + 1] + 1) * 8
        if off + hl > n:
            raise IntegrityError("IPv6 extension header runs past the packet")
        nh = chain[off]
        off += hl
    return nh, off


@dataclass(slots=True)
class IPv6Header:
    """An IPv6 header (RFC 8200 §3) with its raw extension-header chain."""

    src: IPv6Address
    dst: IPv6Address
    next_header: int = PROTO_TCP
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0
    payload_length: int = 0  # from the header: extension headers + upper layer
    ext_headers: bytes = field(default=b"")

    @property
    def header_len(self) -> int:
        return 40 + len(self.ext_headers)

    @property
    def payload_len(self) -> int:
        """Upper-layer payload length (after the extension headers)."""
        return self.payload_length - len(self.ext_headers)

    @property
    def proto(self) -> int:
        """The upper-layer protocol after the extension-header chain."""
        return ext_chain_end(self.next_header, self.ext_headers)[0]

    @property
    def ttl(self) -> int:
        return self.hop_limit

    @classmethod
    def parse(
        cls, buf: bytes | bytearray | memoryview, *, verify: bool = True
    ) -> tuple[IPv6Header, int]:
        """Parse the fixed header and the extension chain; return (hdr, length).

        `verify` is accepted for symmetry with IPv4 (IPv6 has no header checksum).
        """
        del verify
        if len(buf) < 40:
            raise IntegrityError(f"IPv6 header truncated: {len(buf)} < 40 bytes")
        (vtf, plen, nh, hop, src, dst) = _V6.unpack_from(buf, 0)
        if vtf >> 28 != 6:
            raise SanityError(f"not IPv6: version {vtf >> 28}")
        # The chain may not run past the payload length nor the buffer.
        avail = memoryview(bytes(buf[40 : 40 + plen]))
        _, chain_len = ext_chain_end(nh, avail)
        hdr = cls(
            src=IPv6Address(src),
            dst=IPv6Address(dst),
            next_header=nh,
            hop_limit=hop,
            traffic_class=(vtf >> 20) & 0xFF,
            flow_label=vtf & 0xFFFFF,
            payload_length=plen,
            ext_headers=bytes(avail[:chain_len]),
        )
        return hdr, 40 + chain_len

    def emit(self, payload_len: int | None = None) -> bytes:
        """Serialise. `payload_len` given: payload length = chain + payload_len."""
        _, chain_len = ext_chain_end(self.next_header, self.ext_headers)
        if chain_len != len(self.ext_headers):
            raise SanityError("IPv6 ext_headers is not exactly one chain of extension headers")
        plen = self.payload_length if payload_len is None else len(self.ext_headers) + payload_len
        if not len(self.ext_headers) <= plen <= 0xFFFF:
            raise SanityError(f"IPv6 payload length {plen} out of range")
        vtf = (
            (6 << 28)
            | (_u(self.traffic_class, 8, "traffic_class") << 20)
            | _u(self.flow_label, 20, "flow_label")
        )
        return (
            _V6.pack(
                vtf,
                plen,
                _u(self.next_header, 8, "next_header"),
                _u(self.hop_limit, 8, "hop_limit"),
                IPv6Address(self.src).packed,
                IPv6Address(self.dst).packed,
            )
            + self.ext_headers
        )


def parse_ip(
    buf: bytes | bytearray | memoryview, *, verify: bool = True, allow_truncated: bool = False
) -> tuple[IPv4Header | IPv6Header, bytes]:
    """Parse an IPv4 or IPv6 packet; return (header, upper-layer payload).

    The payload is cut at the length the IP header declares (link-layer
    padding dropped). A buffer shorter than that raises `IntegrityError`
    unless `allow_truncated` (captures cut by their snap length), in which
    case the payload is what was captured.
    """
    if len(buf) < 1:
        raise IntegrityError("empty IP packet")
    version = buf[0] >> 4
    hdr: IPv4Header | IPv6Header
    if version == 4:
        hdr, hlen = IPv4Header.parse(buf, verify=verify)
        end = hdr.total_length
    elif version == 6:
        hdr, hlen = IPv6Header.parse(buf, verify=verify)
        end = 40 + hdr.payload_length
    else:
        raise SanityError(f"unknown IP version {version}")
    if end > len(buf) and not allow_truncated:
        raise IntegrityError(f"IP packet truncated: {len(buf)} < {end} bytes")
    return hdr, bytes(buf[hlen:end])
