"""TCP header and option codecs: exact inverses, typed errors, checksums."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_wire_mptcp import any_option

from stack.wire.errors import IntegrityError, SanityError, WireError
from stack.wire.mptcp import Dss, MpCapable
from stack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    EolOption,
    MptcpOption,
    MssOption,
    NopOption,
    SackOption,
    SackPermittedOption,
    TcpHeader,
    TimestampsOption,
    UnknownOption,
    WindowScaleOption,
    emit_options,
    emit_segment,
    flags_str,
    pad_options,
    parse_options,
    parse_tcp,
    segment_checksum,
)

H = bytes.fromhex
SRC4, DST4 = IPv4Address("198.18.1.1"), IPv4Address("198.18.1.2")
SRC6, DST6 = IPv6Address("fd00::1"), IPv6Address("fd00::2")

# The kernel's MPC SYN option area (linux-mptcp-v1.md §1.7): mss, sackOK, TS,
# nop, wscale, MPC(4) = 24 bytes.
KERNEL_SYN_OPTS = H("020405b4" "0402" "080a0001e2400000000001" "030307" "1e040101")


def test_kernel_syn_option_area() -> None:
    opts = parse_options(KERNEL_SYN_OPTS, syn=True)
    assert opts == [
        MssOption(1460),
        SackPermittedOption(),
        TimestampsOption(0x0001E240, 0),
        NopOption(),
        WindowScaleOption(7),
        MptcpOption(MpCapable(version=1, flags=1)),
    ]
    assert emit_options(opts) == KERNEL_SYN_OPTS


def test_data_segment_options_with_dss_and_trailing_nops() -> None:
    raw = H("0101080a00000001000000021e16200dd0ce6683e8a134ff18c4f937000000010bb80101")
    opts = parse_options(raw, ack=True)
    assert [type(o) for o in opts] == [NopOption, NopOption, TimestampsOption, MptcpOption,
                                       NopOption, NopOption]
    dss = opts[3].option
    assert isinstance(dss, Dss) and dss.dll == 3000
    assert emit_options(opts) == raw


def test_eol_keeps_its_padding_and_unknown_kinds_are_kept() -> None:
    raw = H("fe06aabbccdd" "01" "00" "00deadbeef")
    opts = parse_options(raw)
    assert opts == [UnknownOption(0xFE, H("aabbccdd")), NopOption(), EolOption(H("00deadbeef"))]
    assert emit_options(opts) == raw
    assert parse_options(b"") == []
    assert parse_options(H("0101")) == [NopOption(), NopOption()]


def test_sack_blocks() -> None:
    raw = H("0101050a0000000a00000014")
    opts = parse_options(raw)
    assert opts[2] == SackOption(((10, 20),))
    assert emit_options(opts) == raw


@pytest.mark.parametrize(
    ("hexstr", "err"),
    [
        ("02", IntegrityError),  # no length byte
        ("0201", IntegrityError),  # length < 2
        ("0208aabb", IntegrityError),  # runs past the area
        ("020600000000", IntegrityError),  # MSS of length 6
        ("0302", IntegrityError),  # wscale of length 2
        ("0403ff", IntegrityError),  # SACK-permitted of length 3
        ("080400000000"[:8], IntegrityError),  # TS of length 4
        ("0502", IntegrityError),  # SACK with no block
        ("050600000000", IntegrityError),  # SACK of 2 + 4
        ("1e050101aa", IntegrityError),  # bad MPTCP length
        ("1e040001", SanityError),  # MPTCP v0 SYN without its key
    ],
)
def test_option_errors(hexstr: str, err: type) -> None:
    with pytest.raises(err):
        parse_options(H(hexstr))


def test_emit_rejects_eol_before_other_options() -> None:
    with pytest.raises(SanityError):
        emit_options([EolOption(), NopOption()])
    with pytest.raises(SanityError):
        UnknownOption(1, b"").emit()
    with pytest.raises(SanityError):  # a known kind must use its own class
        UnknownOption(8, bytes(8)).emit()


def test_header_parse_emit_and_checksum_ipv4() -> None:
    hdr = TcpHeader(55526, 5202, seq=1000, ack=0, flags=SYN, window=64240,
                    options=parse_options(KERNEL_SYN_OPTS, syn=True))
    seg = emit_segment(hdr, b"", SRC4, DST4)
    assert len(seg) == 44 and seg[12] >> 4 == 11
    assert segment_checksum(seg, SRC4, DST4) == 0
    back, payload = parse_tcp(seg, SRC4, DST4)
    assert payload == b""
    assert back.checksum == struct.unpack_from("!H", seg, 16)[0]
    back.checksum = None
    assert back == hdr
    # flipping a byte breaks the checksum
    bad = bytearray(seg)
    bad[4] ^= 1
    with pytest.raises(IntegrityError):
        parse_tcp(bytes(bad), SRC4, DST4)
    # without addresses no verification happens
    assert parse_tcp(bytes(bad))[0].seq == 1000 ^ (1 << 24)


def test_checksum_ipv6_with_payload_and_odd_length() -> None:
    hdr = TcpHeader(1, 2, seq=5, ack=6, flags=ACK | PSH, window=100)
    seg = emit_segment(hdr, b"hello", SRC6, DST6)
    assert segment_checksum(seg, SRC6, DST6) == 0
    assert segment_checksum(seg, "fd00::1", "fd00::2") == 0
    assert segment_checksum(seg, SRC6.packed, DST6.packed) == 0
    assert segment_checksum(seg, DST6, SRC4.packed * 4) != 0
    assert parse_tcp(seg, SRC6, DST6)[1] == b"hello"
    with pytest.raises(SanityError):
        emit_segment(hdr, b"", SRC4, DST6)


def test_checksum_matches_scapy() -> None:
    scapy = pytest.importorskip("scapy.all")
    pkt = scapy.IP(src=str(SRC4), dst=str(DST4)) / scapy.TCP(
        sport=1234, dport=80, seq=7, ack=9, flags="PA", window=512
    ) / b"payload!"
    wire = bytes(pkt)
    tcp = wire[20:]
    hdr, payload = parse_tcp(tcp, SRC4, DST4)
    assert emit_segment(hdr, payload, SRC4, DST4) == tcp


@pytest.mark.parametrize("flags", [SYN | FIN, SYN | RST, SYN | RST | FIN | ACK])
def test_impossible_flag_combinations(flags: int) -> None:
    raw = TcpHeader(1, 2, flags=flags).emit()  # emit builds hostile test input
    with pytest.raises(SanityError):
        TcpHeader.parse(raw)


def test_header_errors() -> None:
    good = TcpHeader(1, 2, flags=ACK).emit()
    with pytest.raises(IntegrityError):
        TcpHeader.parse(good[:19])
    short_off = bytearray(good)
    short_off[12] = 4 << 4
    with pytest.raises(IntegrityError):
        TcpHeader.parse(bytes(short_off))
    long_off = bytearray(good)
    long_off[12] = 6 << 4
    with pytest.raises(IntegrityError):
        TcpHeader.parse(bytes(long_off))
    with pytest.raises(SanityError):  # 3 option bytes: not a multiple of 4
        TcpHeader(1, 2, options=[WindowScaleOption(7)]).emit()
    with pytest.raises(SanityError):
        TcpHeader(1, 2, seq=2**32).emit()


def test_pad_options_and_flags_str() -> None:
    opts = pad_options([WindowScaleOption(7)])
    assert emit_options(opts) == H("03030701")
    assert flags_str(SYN | ACK) == "S."
    assert flags_str(0) == "none"


# ------------------------------------------------------------- hypothesis

simple_option = st.one_of(
    st.just(NopOption()),
    st.builds(MssOption, st.integers(0, 0xFFFF)),
    st.builds(WindowScaleOption, st.integers(0, 255)),
    st.just(SackPermittedOption()),
    st.builds(SackOption, st.lists(st.tuples(st.integers(0, 2**32 - 1),
                                             st.integers(0, 2**32 - 1)),
                                   min_size=1, max_size=4).map(tuple)),
    st.builds(TimestampsOption, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(UnknownOption, st.integers(6, 255).filter(lambda k: k not in (8, 30)),
              st.binary(max_size=8)),
    st.builds(MptcpOption, any_option),
)


@st.composite
def option_lists(draw, max_len: int = 40):
    opts, size = [], 0
    for o in draw(st.lists(simple_option, max_size=8)):
        n = len(o.emit())
        if size + n <= max_len:
            opts.append(o)
            size += n
    if draw(st.booleans()) and size < max_len:
        opts.append(EolOption(draw(st.binary(max_size=max_len - size - 1))))
    return opts


@given(option_lists(max_len=200))
def test_options_roundtrip_object_first(opts) -> None:
    raw = emit_options(opts)
    assert parse_options(raw) == opts
    assert emit_options(parse_options(raw)) == raw


@st.composite
def headers(draw):
    opts = draw(option_lists())
    size = len(emit_options(opts))
    if size % 4:
        if opts and isinstance(opts[-1], EolOption):
            opts[-1] = EolOption(opts[-1].trailing + bytes(-size % 4))
        else:
            opts += [NopOption()] * (-size % 4)
    if len(emit_options(opts)) > 40:
        opts = []
    flags = draw(st.integers(0, 0x1FF).filter(lambda f: not (f & SYN and f & (FIN | RST))))
    return TcpHeader(
        draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)), flags,
        draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFF)), opts, draw(st.integers(0, 7)),
    )


@given(headers(), st.binary(max_size=64))
def test_header_roundtrip_both_ways(hdr, payload) -> None:
    raw = hdr.emit()
    back, hlen = TcpHeader.parse(raw + payload)
    assert hlen == len(raw) and back == hdr
    assert back.emit() == raw
    seg = emit_segment(hdr, payload, SRC4, DST4)
    assert segment_checksum(seg, SRC4, DST4) == 0
    assert parse_tcp(seg, SRC4, DST4)[1] == payload


@given(st.binary(max_size=80))
def test_fuzz_header_bytes_only_wire_errors(data) -> None:
    try:
        parse_tcp(data, SRC4, DST4)
    except WireError:
        pass
    try:
        hdr, hlen = TcpHeader.parse(data)
    except WireError:
        return
    assert hdr.emit() == data[:hlen]


@given(st.binary(max_size=99), st.integers(0, 0xFFFF), st.binary(min_size=16, max_size=16),
       st.binary(min_size=16, max_size=16))
def test_pure_python_checksum_fallback_matches_active(data, initial, src, dst) -> None:
    from stack.wire import checksum as c

    assert c._py_ones_sum(data, initial) == c.ones_sum(data, initial)
    assert c._py_internet_checksum(data) == c.internet_checksum(data)
    assert c._py_pseudo_sum_v4(src[:4], dst[:4], 6, len(data)) == c.pseudo_sum_v4(
        src[:4], dst[:4], 6, len(data))
    assert c._py_pseudo_sum_v6(src, dst, 6, len(data)) == c.pseudo_sum_v6(src, dst, 6, len(data))
    pseudo = c.pseudo_sum_v6(src, dst, 6, len(data))
    assert c._py_tcp_checksum(pseudo, data) == c.tcp_checksum(pseudo, data)


@given(st.binary(max_size=60), st.booleans(), st.booleans())
def test_fuzz_option_bytes_only_wire_errors(data, syn, ack) -> None:
    try:
        opts = parse_options(data, syn=syn, ack=ack)
    except WireError:
        return
    assert emit_options(opts) == data


@given(st.lists(st.sampled_from([b"\x01", b"\x1e", b"\x04", b"\x02", b"\x00", b"\x08\x0a"]),
                max_size=12).map(b"".join), st.binary(max_size=30))
def test_fuzz_option_shaped_bytes(prefix, tail) -> None:
    data = (prefix + tail)[:40]
    try:
        opts = parse_options(data)
    except WireError:
        return
    assert emit_options(opts) == data
