"""IPv4 / IPv6 header codecs: exact inverses, options and extension chains kept."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire.errors import IntegrityError, SanityError, WireError
from stack.wire.ip import IPv4Header, IPv6Header, parse_ip

H = bytes.fromhex

# A real IPv4 header (kernel-2subflows.pcap, the MPC SYN): DF, ttl 64, TCP.
SYN_V4 = H("45000040a3e240004006" "8ea1" "c6120101c6120102")


def _fix_csum(h: bytes) -> bytes:
    b = bytearray(h)
    b[10:12] = b"\0\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    b[10:12] = struct.pack("!H", ~s & 0xFFFF)
    return bytes(b)


def test_ipv4_parse_emit_real_header() -> None:
    raw = _fix_csum(SYN_V4)
    hdr, hlen = IPv4Header.parse(raw + bytes(44))
    assert hlen == 20
    assert (hdr.src, hdr.dst) == (IPv4Address("198.18.1.1"), IPv4Address("198.18.1.2"))
    assert (hdr.proto, hdr.ttl, hdr.total_length, hdr.payload_len) == (6, 64, 64, 44)
    assert hdr.dont_fragment and not hdr.more_fragments
    assert hdr.emit() == raw
    assert hdr.emit(payload_len=44) == raw


def test_ipv4_checksum_computed_when_none_and_verified() -> None:
    hdr = IPv4Header(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), total_length=40)
    raw = hdr.emit()
    back, _ = IPv4Header.parse(raw)  # verifies
    assert back.checksum is not None
    back.checksum = None
    assert back == hdr
    bad = bytearray(raw)
    bad[8] ^= 0xFF
    with pytest.raises(IntegrityError):
        IPv4Header.parse(bytes(bad))
    kept, _ = IPv4Header.parse(bytes(bad), verify=False)  # offloaded senders in traces
    assert kept.ttl == raw[8] ^ 0xFF and kept.emit() == bytes(bad)


def test_ipv4_options_are_kept_raw() -> None:
    opts = H("94040000")  # router alert
    hdr = IPv4Header(IPv4Address("1.1.1.1"), IPv4Address("2.2.2.2"), options=opts)
    raw = hdr.emit(payload_len=0)
    assert raw[0] == 0x46 and len(raw) == 24
    back, hlen = IPv4Header.parse(raw)
    assert hlen == 24 and back.options == opts
    with pytest.raises(SanityError):
        IPv4Header(IPv4Address("1.1.1.1"), IPv4Address("2.2.2.2"), options=b"\x01").emit()


@pytest.mark.parametrize(
    ("raw", "err"),
    [
        (b"", IntegrityError),
        (H("4500"), IntegrityError),
        (_fix_csum(H("44000014000040004006" "0000" "0a0000010a000002")), IntegrityError),  # IHL 4
        (_fix_csum(H("46000018000040004006" "0000" "0a0000010a000002")), IntegrityError),  # no opts
        (_fix_csum(H("45000010000040004006" "0000" "0a0000010a000002")), IntegrityError),  # len 16
        (_fix_csum(H("55000014000040004006" "0000" "0a0000010a000002")), SanityError),  # ver 5
    ],
)
def test_ipv4_errors(raw: bytes, err: type) -> None:
    with pytest.raises(err):
        IPv4Header.parse(raw)


def test_ipv6_with_extension_chain_roundtrip() -> None:
    hop_by_hop = H("3c00" "050200000100")  # next = dest opts, router alert, 8 bytes
    dest_opts = H("2c01" + "00" * 14)  # next = fragment, 16 bytes
    frag = H("06000001deadbeef")  # next = TCP
    chain = hop_by_hop + dest_opts + frag
    hdr = IPv6Header(IPv6Address("fd00::1"), IPv6Address("fd00::2"), next_header=0,
                     hop_limit=3, traffic_class=0xB8, flow_label=0x12345,
                     payload_length=len(chain) + 20, ext_headers=chain)
    raw = hdr.emit()
    assert len(raw) == 40 + len(chain)
    back, hlen = IPv6Header.parse(raw + bytes(20))
    assert back == hdr and hlen == 40 + len(chain) and back.proto == 6
    assert back.emit() == raw
    assert back.payload_len == 20
    ip, payload = parse_ip(raw + b"T" * 20 + b"pad")
    assert ip == hdr and payload == b"T" * 20


def test_ipv6_ah_length_in_4_byte_units() -> None:
    ah = H("0604" + "00" * 22)  # next TCP, payload len 4 -> (4+2)*4 = 24 bytes
    hdr = IPv6Header(IPv6Address("::1"), IPv6Address("::2"), next_header=51,
                     payload_length=24, ext_headers=ah)
    back, hlen = IPv6Header.parse(hdr.emit())
    assert hlen == 64 and back.proto == 6 and back == hdr


def test_ipv6_errors() -> None:
    base = IPv6Header(IPv6Address("::1"), IPv6Address("::2"), payload_length=0).emit()
    with pytest.raises(IntegrityError):
        IPv6Header.parse(base[:39])
    with pytest.raises(SanityError):
        IPv6Header.parse(b"\x40" + base[1:])
    chain_cut = bytearray(base)
    chain_cut[6] = 0  # hop-by-hop announced, 0 bytes of payload
    with pytest.raises(IntegrityError):
        IPv6Header.parse(bytes(chain_cut))
    with pytest.raises(SanityError):  # ext_headers that are not one chain
        IPv6Header(IPv6Address("::1"), IPv6Address("::2"), next_header=6,
                   ext_headers=bytes(8)).emit()


def test_parse_ip_dispatch_and_truncation() -> None:
    v4 = IPv4Header(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")).emit(payload_len=10)
    hdr, payload = parse_ip(v4 + b"0123456789" + b"eth-pad")
    assert isinstance(hdr, IPv4Header) and payload == b"0123456789"
    with pytest.raises(IntegrityError):
        parse_ip(v4 + b"01234")
    assert parse_ip(v4 + b"01234", allow_truncated=True)[1] == b"01234"
    with pytest.raises(SanityError):
        parse_ip(b"\x70" + bytes(40))
    with pytest.raises(IntegrityError):
        parse_ip(b"")


# ------------------------------------------------------------- hypothesis

u = st.integers


@st.composite
def ipv4_headers(draw):
    opts = draw(st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4]))
    hdr = IPv4Header(
        IPv4Address(draw(u(0, 2**32 - 1))), IPv4Address(draw(u(0, 2**32 - 1))),
        proto=draw(u(0, 255)), ttl=draw(u(0, 255)), tos=draw(u(0, 255)),
        total_length=0, ident=draw(u(0, 0xFFFF)), flags=draw(u(0, 7)),
        frag_offset=draw(u(0, 0x1FFF)), checksum=None, options=opts,
    )
    hdr.total_length = hdr.header_len + draw(u(0, 1000))
    return hdr


@given(ipv4_headers())
def test_ipv4_roundtrip_both_ways(hdr) -> None:
    raw = hdr.emit()
    back, hlen = IPv4Header.parse(raw)
    assert hlen == len(raw) == hdr.header_len
    assert back.checksum is not None
    hdr.checksum = back.checksum  # a valid object carries its right checksum
    assert back == hdr and back.emit() == raw


_EXT = st.sampled_from([0, 43, 60, 44, 51])


@st.composite
def ipv6_headers(draw):
    kinds = draw(st.lists(_EXT, max_size=4))
    upper = draw(st.sampled_from([6, 17, 59]))
    chain = b""
    for i, k in enumerate(kinds):
        nxt = kinds[i + 1] if i + 1 < len(kinds) else upper
        if k == 44:
            chain += bytes((nxt, 0)) + draw(st.binary(min_size=6, max_size=6))
        elif k == 51:
            n = draw(u(1, 4))
            chain += bytes((nxt, n)) + draw(st.binary(min_size=(n + 2) * 4 - 2,
                                                      max_size=(n + 2) * 4 - 2))
        else:
            n = draw(u(0, 2))
            chain += bytes((nxt, n)) + draw(st.binary(min_size=(n + 1) * 8 - 2,
                                                      max_size=(n + 1) * 8 - 2))
    return IPv6Header(
        IPv6Address(draw(u(0, 2**128 - 1))), IPv6Address(draw(u(0, 2**128 - 1))),
        next_header=kinds[0] if kinds else upper, hop_limit=draw(u(0, 255)),
        traffic_class=draw(u(0, 255)), flow_label=draw(u(0, 0xFFFFF)),
        payload_length=len(chain) + draw(u(0, 100)), ext_headers=chain,
    ), upper


@given(ipv6_headers())
def test_ipv6_roundtrip_both_ways(pair) -> None:
    hdr, upper = pair
    raw = hdr.emit()
    back, hlen = IPv6Header.parse(raw + bytes(hdr.payload_len))
    assert back == hdr and hlen == len(raw) and back.proto == upper
    assert back.emit() == raw


@given(st.binary(max_size=100), st.booleans(), st.booleans())
def test_fuzz_only_wire_errors(data, verify, allow_truncated) -> None:
    for parse in (IPv4Header.parse, IPv6Header.parse):
        try:
            hdr, hlen = parse(data, verify=verify)
        except WireError:
            continue
        assert hdr.emit() == data[:hlen]
    try:
        parse_ip(data, verify=verify, allow_truncated=allow_truncated)
    except WireError:
        pass


@given(st.sampled_from([0x45, 0x46, 0x4F, 0x60]), st.binary(max_size=80))
def test_fuzz_plausible_headers(first, rest) -> None:
    data = bytes((first,)) + rest
    try:
        hdr, payload = parse_ip(data, verify=False, allow_truncated=True)
    except WireError:
        return
    assert hdr.emit() == data[: hdr.header_len]
    assert payload == data[hdr.header_len : hdr.header_len + len(payload)]
