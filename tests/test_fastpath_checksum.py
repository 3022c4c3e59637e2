"""fastpath.checksum against its plain-Python twin and known answers.

Known answers: the RFC 1071 section 3 worked example, and DSS checksums the
Linux kernel put on the wire in ../shared/pcaps/kernel/kernel-1subflow-csum.pcap
(RFC 8684 section 3.3.1), recomputed from the captured payload.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastpath import checksum as fast
from fastpath import reference as ref

PCAPS = Path(__file__).resolve().parents[2] / "shared" / "pcaps"

data_st = st.binary(max_size=300)
buffers = st.one_of(
    data_st,
    data_st.map(bytearray),
    data_st.map(memoryview),
    # a memoryview slice that starts at an odd address inside its object
    data_st.map(lambda b: memoryview(b"x" + b)[1:]),
)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


# --- known answers --------------------------------------------------------


def test_rfc1071_example() -> None:
    # RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert fast.ones_sum(data) == 0xDDF2
    assert fast.internet_checksum(data) == 0x220D


def test_filled_in_checksum_verifies_to_zero() -> None:
    hdr = bytearray.fromhex("450000730000400040110000c0a80001c0a800c7")
    struct.pack_into("!H", hdr, 10, fast.internet_checksum(hdr))
    assert hdr[10:12] == b"\xb8\x61"  # the classic Wikipedia IPv4 example
    assert fast.internet_checksum(hdr) == 0


def test_empty_and_odd() -> None:
    assert fast.ones_sum(b"") == 0
    assert fast.ones_sum(b"", 0x1234) == 0x1234
    assert fast.ones_sum(b"\xab") == 0xAB00
    assert fast.ones_sum(b"\xff\xff\x00\x01") == 0x0001  # end-around carry


def test_bad_arguments_are_typed_errors() -> None:
    with pytest.raises(ValueError):
        fast.ones_sum(b"ab", -1)
    with pytest.raises(ValueError):
        fast.pseudo_sum_v4(b"\x01\x02\x03", b"\x00" * 4, 6, 20)
    with pytest.raises(ValueError):
        fast.incremental_update(0x10000, 0, 0)
    with pytest.raises(ValueError):
        fast.dss_checksum(1 << 64, 0, 0, b"")
    with pytest.raises(TypeError):
        fast.ones_sum("not bytes")  # type: ignore[arg-type]


# --- agreement with the reference ----------------------------------------


@given(buffers, u32)
def test_ones_sum_matches_reference(data: bytes, initial: int) -> None:
    assert fast.ones_sum(data, initial) == ref.ones_sum(data, initial)
    assert fast.internet_checksum(data, initial) == ref.internet_checksum(data, initial)


@given(st.lists(data_st, max_size=6), u16)
def test_chained_sums_equal_one_big_sum(pieces: list[bytes], initial: int) -> None:
    # Chaining only works piecewise on even boundaries; an odd piece must be last.
    even = [p if len(p) % 2 == 0 else p + b"\x00" for p in pieces]
    s = initial
    for p in even:
        s = fast.ones_sum(p, s)
    assert s == fast.ones_sum(b"".join(even), initial)


@given(st.binary(min_size=2, max_size=200).filter(lambda b: len(b) % 2 == 0), st.data())
def test_incremental_update_equals_recompute(data: bytes, draw: st.DataObject) -> None:
    idx = draw.draw(st.integers(0, len(data) // 2 - 1)) * 2
    new_word = draw.draw(u16)
    old_ck = fast.internet_checksum(data)
    old_word = int.from_bytes(data[idx : idx + 2], "big")
    changed = data[:idx] + new_word.to_bytes(2, "big") + data[idx + 2 :]
    got = fast.incremental_update(old_ck, old_word, new_word)
    assert got == ref.incremental_update(old_ck, old_word, new_word)
    # RFC 1624 eqn. 3 gives the recomputed value up to the +0/-0 ambiguity.
    want = fast.internet_checksum(changed)
    assert got == want or {got, want} == {0, 0xFFFF}
    # whichever form, the updated checksum verifies against the changed data
    assert fast.ones_sum(changed, got) == 0xFFFF or fast.ones_sum(changed) == 0


@given(u16, u16, u16)
def test_incremental_update_any_words_match_reference(old: int, old_word: int, new: int) -> None:
    # every 16-bit input, including the 0x0000/0xffff edges of RFC 1624 section 3
    got = fast.incremental_update(old, old_word, new)
    assert got == ref.incremental_update(old, old_word, new)
    assert 0 <= got <= 0xFFFF
    # HC' = ~(~HC + ~m + m') (eqn. 3): the one's-complement sums of both sides agree
    assert ref.ones_sum(b"", ~got & 0xFFFF) == ref.ones_sum(
        (~old & 0xFFFF).to_bytes(2, "big") + (~old_word & 0xFFFF).to_bytes(2, "big"), new
    )


@given(u16, buffers)
def test_tcp_checksum_any_pseudo_sum_matches_reference(pseudo: int, seg: bytes) -> None:
    got = fast.tcp_checksum(pseudo, seg)
    assert got == ref.tcp_checksum(pseudo, seg)
    assert got == fast.internet_checksum(seg, pseudo)


@given(
    st.binary(min_size=4, max_size=4),
    st.binary(min_size=4, max_size=4),
    st.integers(0, 255),
    u16,
    data_st,
)
def test_pseudo_v4_and_tcp_checksum(
    src: bytes, dst: bytes, proto: int, length: int, seg: bytes
) -> None:
    p = fast.pseudo_sum_v4(src, dst, proto, length)
    assert p == ref.pseudo_sum_v4(src, dst, proto, length)
    assert p == fast.ones_sum(src + dst + bytes([0, proto]) + length.to_bytes(2, "big"))
    assert fast.tcp_checksum(p, seg) == ref.tcp_checksum(p, seg)


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 255),
    u32,
)
def test_pseudo_v6(src: bytes, dst: bytes, proto: int, length: int) -> None:
    p = fast.pseudo_sum_v6(bytearray(src), memoryview(dst), proto, length)
    assert p == ref.pseudo_sum_v6(src, dst, proto, length)
    assert p == fast.ones_sum(src + dst + length.to_bytes(4, "big") + bytes([0, 0, 0, proto]))


@given(st.integers(0, 2**64 - 1), u32, u16, st.lists(buffers, max_size=6))
def test_dss_checksum_chain_matches_reference(
    dsn: int, ssn: int, dll: int, pieces: list[bytes]
) -> None:
    joined = b"".join(bytes(p) for p in pieces)
    want = ref.dss_checksum(dsn, ssn, dll, joined)
    assert fast.dss_checksum(dsn, ssn, dll, joined) == want
    assert fast.dss_checksum(dsn, ssn, dll, pieces) == want
    assert fast.dss_checksum(dsn, ssn, dll, tuple(pieces)) == want
    assert ref.dss_checksum(dsn, ssn, dll, pieces) == want


# --- DSS checksums the kernel sent ----------------------------------------


def _tcp_packets(path: Path) -> list[bytes]:
    """IPv4 packets of a classic pcap (Ethernet, raw, SLL or SLL2 link layer)."""
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    skip = {1: 14, 101: 0, 113: 16, 276: 20}[linktype]
    out, off = [], 24
    while off + 16 <= len(data):
        caplen = struct.unpack(endian + "I", data[off + 8 : off + 12])[0]
        frame = data[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        ip = frame[skip:]
        if ip and ip[0] >> 4 == 4 and ip[9] == 6:
            out.append(ip)
    return out


def _client_stream(path: Path) -> tuple[int, dict[int, bytes], list[bytes]]:
    """Client ISN, payload by relative seq, and the client's TCP option blocks."""
    pkts = _tcp_packets(path)
    syn = next(p for p in pkts if p[20 + 13] & 0x3F == 0x02)
    client = syn[12:16]
    isn = struct.unpack("!I", syn[24:28])[0]
    by_seq: dict[int, bytes] = {}
    options = []
    for p in pkts:
        if p[12:16] != client:
            continue
        ihl = (p[0] & 15) * 4
        doff = (p[ihl + 12] >> 4) * 4
        total = struct.unpack("!H", p[2:4])[0]
        seq = (struct.unpack("!I", p[ihl + 4 : ihl + 8])[0] - isn) & 0xFFFFFFFF
        options.append(p[ihl + 20 : ihl + doff])
        if total > ihl + doff:
            by_seq[seq] = p[ihl + doff : total]
    return isn, by_seq, options


def _mapping_payload(by_seq: dict[int, bytes], ssn: int, dll: int) -> list[bytes]:
    pieces, at = [], ssn
    while at < ssn + dll:
        piece = by_seq[at]
        pieces.append(piece)
        at += len(piece)
    assert at == ssn + dll
    return pieces


@pytest.fixture(scope="module")
def csum_trace() -> Path:
    path = PCAPS / "kernel" / "kernel-1subflow-csum.pcap"
    if not path.exists():
        pytest.skip("kernel traces not available")
    return path


def test_kernel_dss_checksum_over_mapping(csum_trace: Path) -> None:
    # Client DSS 1e18200d ... 00000bb9 0bb8 ec77: DSN 0x279180e785146520,
    # SSN 3001, DLL 3000, carried over three TCP segments (1424+1424+152).
    _, by_seq, options = _client_stream(csum_trace)
    dss = bytes.fromhex("1e18200dd788e311279180e78514652000000bb90bb8ec77")
    assert any(dss in o for o in options)
    dsn, ssn, dll, wire = struct.unpack("!QIHH", dss[8:24])
    pieces = _mapping_payload(by_seq, ssn, dll)
    assert len(pieces) == 3
    assert fast.dss_checksum(dsn, ssn, dll, pieces) == wire == 0xEC77
    assert fast.dss_checksum(dsn, ssn, dll, b"".join(pieces)) == wire
    # the receiver's check: sum with the wire checksum in place is 0xffff
    pseudo = struct.pack("!QIHH", dsn, ssn, dll, wire)
    assert fast.ones_sum(b"".join(pieces), fast.ones_sum(pseudo)) == 0xFFFF


def test_kernel_data_fin_only_checksum(csum_trace: Path) -> None:
    # DATA_FIN on a bare ACK: DSN = last byte + 1, SSN 0, DLL 1, no payload.
    _, _, options = _client_stream(csum_trace)
    dss = bytes.fromhex("1e18201dd788e311279180e7851470d80000000000016199")
    assert any(dss in o for o in options)
    dsn, ssn, dll, wire = struct.unpack("!QIHH", dss[8:24])
    assert fast.dss_checksum(dsn, ssn, dll, b"") == wire == 0x6199
    assert fast.dss_checksum(dsn, ssn, dll, []) == wire


def test_kernel_mp_capable_data_checksum(csum_trace: Path) -> None:
    # MP_CAPABLE with data (24 bytes, checksum 0x03e8): implicit mapping
    # DSN = IDSN(client key) + 1, SSN 1, DLL 3000 (RFC 8684 sections 3.1, 3.3.1).
    _, by_seq, options = _client_stream(csum_trace)
    mpc = next(o[o.index(b"\x1e\x18") :][:24] for o in options if b"\x1e\x18\x01\x81" in o)
    key = mpc[4:12]
    dll, wire = struct.unpack("!HH", mpc[20:24])
    idsn = int.from_bytes(hashlib.sha256(key).digest()[24:32], "big")
    dsn = (idsn + 1) & 0xFFFFFFFFFFFFFFFF
    pieces = _mapping_payload(by_seq, 1, dll)
    assert fast.dss_checksum(dsn, 1, dll, pieces) == wire == 0x03E8
    assert ref.dss_checksum(dsn, 1, dll, pieces) == wire
