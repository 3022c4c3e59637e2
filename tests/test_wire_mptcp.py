"""MPTCP option codecs: every variant of RFC 8684 (and RFC 6824 v0), byte-exact."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire.errors import IntegrityError, SanityError, WireError
from stack.wire.mptcp import (
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoin,
    MpPrio,
    MpTcpRst,
    RemoveAddr,
    UnknownMptcp,
    parse_mptcp,
    to_fields,
)

H = bytes.fromhex


def roundtrip(hexstr: str, **flags: bool):
    raw = H(hexstr)
    opt = parse_mptcp(raw, **flags)
    assert opt.emit() == raw
    assert parse_mptcp(opt.emit(), **flags) == opt
    return opt


# ------------------------------------------------ captured bytes (§1.1-§1.5)


def test_mp_capable_kernel_bytes() -> None:
    syn = roundtrip("1e040101", syn=True)
    assert syn == MpCapable(version=1, flags=0x01)
    assert syn.hmac_sha256 and not syn.checksum_required
    synack = roundtrip("1e0c0101dfefe678e0d6d2ad", syn=True, ack=True)
    assert synack.sender_key == 0xDFEFE678E0D6D2AD and synack.receiver_key is None
    ack = roundtrip("1e1401010eae836aae29d673dfefe678e0d6d2ad", ack=True)
    assert (ack.sender_key, ack.receiver_key) == (0x0EAE836AAE29D673, 0xDFEFE678E0D6D2AD)
    data = roundtrip("1e160101a5295039fd7c40a7636422d79ed202ab0bb8", ack=True)
    assert data.data_len == 3000 and data.checksum is None
    cs = roundtrip("1e18018155af3016fe7828738bc276dcbd63916d0bb803e8", ack=True)
    assert cs.checksum_required and cs.data_len == 3000 and cs.checksum == 0x03E8


def test_mp_capable_v0_and_future_versions() -> None:
    # RFC 6824: the SYN (and the SYN/ACK) carry the sender's key, 12 bytes.
    for flags in ({"syn": True}, {"syn": True, "ack": True}):
        v0 = roundtrip("1e0c00819c9eabd1e46a33b2", **flags)
        assert v0 == MpCapable(version=0, flags=0x81, sender_key=0x9C9EABD1E46A33B2)
    v0ack = roundtrip("1e1400819c9eabd1e46a33b2967d2770b6960552", ack=True)
    assert v0ack.receiver_key == 0x967D2770B6960552
    # RFC 8684 §3.1: a SYN may offer a later version (no key).
    assert roundtrip("1e040301", syn=True).version == 3


def test_mp_join_kernel_bytes() -> None:
    syn = roundtrip("1e0c10019e8a24913403d5b4", syn=True)
    assert syn == MpJoin("syn", backup=False, addr_id=1, token=0x9E8A2491, nonce=0x3403D5B4)
    synack = roundtrip("1e101001dd592f127197122d1d6d0315", syn=True, ack=True)
    assert synack == MpJoin("synack", addr_id=1, nonce=0x1D6D0315, hmac=H("dd592f127197122d"))
    ack = roundtrip("1e181000028a62e8dd3deae1593341ef4a959ce6935dd101", ack=True)
    assert ack.variant == "ack" and ack.hmac == H("028a62e8dd3deae1593341ef4a959ce6935dd101")
    backup = roundtrip("1e0c1105deadbeef01020304", syn=True)
    assert backup.backup and backup.addr_id == 5


def test_dss_kernel_bytes() -> None:
    ack32 = roundtrip("1e08200118c4f937")
    assert ack32 == Dss(data_ack=0x18C4F937, data_ack_len=4)
    ack64 = roundtrip("1e0c2003e8a134ff18c4fec7")
    assert (ack64.data_ack_len, ack64.data_ack) == (8, 0xE8A134FF18C4FEC7)
    m = roundtrip("1e16200dd0ce6683e8a134ff18c4f937000000010bb8")
    assert (m.data_ack_len, m.dsn_len, m.dsn, m.ssn, m.dll) == (4, 8, 0xE8A134FF18C4F937, 1, 3000)
    assert m.checksum is None and not m.data_fin and m.flags == 0x0D
    fin = roundtrip("1e1a201fe8a134ff18c510a8dfe08a64d0ce6683000000000001")
    assert fin.data_fin and (fin.ssn, fin.dll) == (0, 1)
    cs = roundtrip("1e18201d4dbe14aa8bf2962e4b8c13ae0000000000017ea3")
    assert cs.checksum == 0x7EA3 and cs.data_fin


def test_add_addr_kernel_bytes_and_v0() -> None:
    a = roundtrip("1e103001c6120202d6a3917808f8b7dd")
    assert a == AddAddr(1, False, 1, IPv4Address("198.18.2.2"), None, H("d6a3917808f8b7dd"))
    echo = roundtrip("1e083101c6120202")
    assert echo == AddAddr(1, True, 1, IPv4Address("198.18.2.2"))
    # RFC 6824 v0: low nibble = IPVer; no echo, no HMAC
    v0 = roundtrip("1e0834010a010202")
    assert v0 == AddAddr(0, False, 1, IPv4Address("10.1.2.2"))
    v0p = roundtrip("1e0a34020a0102021f90")
    assert v0p.port == 8080
    v6 = IPv6Address("2001:db8::1")
    v0v6 = roundtrip("1e143608" + v6.packed.hex())
    assert v0v6.address == v6 and v0v6.version == 0


@pytest.mark.parametrize(
    ("opt", "length"),
    [
        (AddAddr(1, True, 9, IPv4Address("10.0.0.1")), 8),
        (AddAddr(1, True, 9, IPv4Address("10.0.0.1"), 443), 10),
        (AddAddr(1, False, 9, IPv4Address("10.0.0.1"), None, bytes(8)), 16),
        (AddAddr(1, False, 9, IPv4Address("10.0.0.1"), 443, bytes(8)), 18),
        (AddAddr(1, True, 9, IPv6Address("fd00::1")), 20),
        (AddAddr(1, True, 9, IPv6Address("fd00::1"), 443), 22),
        (AddAddr(1, False, 9, IPv6Address("fd00::1"), None, bytes(8)), 28),
        (AddAddr(1, False, 9, IPv6Address("fd00::1"), 443, bytes(8)), 30),
    ],
)
def test_add_addr_v1_lengths(opt: AddAddr, length: int) -> None:
    raw = opt.emit()
    assert raw[1] == length == len(raw)
    assert raw[2] == (0x31 if opt.echo else 0x30)
    assert parse_mptcp(raw) == opt


def test_remove_addr_prio_fail_fastclose_tcprst() -> None:
    assert roundtrip("1e044000") == RemoveAddr((0,))
    assert roundtrip("1e0640010203").addr_ids == (1, 2, 3)
    assert roundtrip("1e0350") == MpPrio(backup=False)
    assert roundtrip("1e0351") == MpPrio(backup=True)
    assert roundtrip("1e045102") == MpPrio(backup=True, addr_id=2)  # v0 with address id
    assert roundtrip("1e0c60005009d3c2b0f1b4f7") == MpFail(0x5009D3C2B0F1B4F7)
    assert roundtrip("1e0c70000102030405060708") == MpFastclose(0x0102030405060708)
    rst = roundtrip("1e048001")
    assert rst == MpTcpRst(flags=0, reason=1) and not rst.transient
    assert roundtrip("1e048106").transient


def test_unknown_subtype_and_reserved_bits_are_preserved() -> None:
    unk = roundtrip("1e06f0aabbcc")
    assert unk == UnknownMptcp(0xF, H("1e06f0aabbcc"))
    assert roundtrip("1e049001").subtype == 9
    # reserved bits: MP_JOIN nibble bits 1..3, DSS high flags, MP_FAIL 12 bits
    j = roundtrip("1e0c1f010000000100000002")
    assert j.backup and j.reserved == 0x0E
    d = roundtrip("1e0c2ae3e8a134ff18c4fec7")
    assert d.data_ack_len == 8 and d.reserved == 0xAE0
    # 'a' without 'A' and 'm' without 'M' are not representable as lengths: kept raw
    d2 = roundtrip("1e04200a")
    assert d2 == Dss(reserved=0x0A)
    assert roundtrip("1e0c6abc0000000000000001").reserved == 0xABC


# ----------------------------------------------------------- error cases


# Lengths that fit no layout of the subtype, or disagree with its flags, are
# integrity errors; field values no layout allows are sanity errors.
@pytest.mark.parametrize(
    "hexstr",
    [
        "1e040001",  # v0 without a key: a v0 SYN carries one
        "1e160001" + "00" * 18,  # v0 has no 22-byte form
        "1e0c0201" + "00" * 8,  # v2 layout unknown beyond the SYN
        "1e0832010a010202",  # ADD_ADDR flag nibble 2: neither v1 nor v0
        "0204aabb",  # not kind 30
    ],
)
def test_sanity_errors(hexstr: str) -> None:
    with pytest.raises(SanityError):
        parse_mptcp(H(hexstr))


@pytest.mark.parametrize(
    "hexstr",
    [
        "",
        "1e",
        "1e0501",  # length byte beyond the bytes given
        "1e040101ff",  # length byte short of the bytes given
        "1e02",
        "1e0c0101",
        "1e050101aa",  # MP_CAPABLE length 5
        "1e0d0101" + "00" * 9,  # 13
        "1e150101" + "00" * 17,  # 21
        "1e170101" + "00" * 19,  # 23
        "1e0310",  # MP_JOIN 3 (no address id byte)
        "1e0d1001" + "00" * 9,  # MP_JOIN 13
        "1e141001" + "00" * 16,  # MP_JOIN 20
        "1e0320",  # DSS 3
        "1e062001aabb",  # DSS ack32 needs length 8
        "1e0a2001aabbccdd0000",  # DSS: checksum bytes without a mapping
        "1e0c2005" + "00" * 8,  # DSS A+M with only 8 bytes
        "1e0a3001c61202020000",  # ADD_ADDR v1 HMAC form of 10 bytes
        "1e103101c6120202d6a3917808f8b7dd",  # echo with an HMAC length
        "1e083001c6120202",  # non-echo without HMAC
        "1e0734010a0102",  # v0 IPv4 length 7
        "1e1434" + "00" * 17,  # v0 IPVer 4 with IPv6 length
        "1e0340",  # REMOVE_ADDR with no ids
        "1e05500102",  # MP_PRIO 5
        "1e0b6000" + "00" * 7,  # MP_FAIL 11
        "1e0d7000" + "00" * 9,  # MP_FASTCLOSE 13
        "1e05800100",  # MP_TCPRST 5
    ],
)
def test_integrity_errors(hexstr: str) -> None:
    with pytest.raises(IntegrityError):
        parse_mptcp(H(hexstr))


@pytest.mark.parametrize(
    "opt",
    [
        MpCapable(sender_key=None, receiver_key=1),
        MpCapable(version=0),
        MpCapable(version=0, sender_key=1, receiver_key=2, data_len=5),
        MpCapable(sender_key=2**64),
        MpJoin("bogus"),
        MpJoin("syn", token=1),
        MpJoin("synack", nonce=1, hmac=bytes(20)),
        MpJoin("ack", hmac=bytes(8)),
        Dss(data_ack=1, data_ack_len=0),
        Dss(data_ack=1, data_ack_len=3),
        Dss(dsn=1, dsn_len=4),
        Dss(checksum=1),
        Dss(dsn=2**32, dsn_len=4, ssn=0, dll=0),
        Dss(reserved=0x01, data_ack=1, data_ack_len=4),  # reserved overlaps the A flag
        AddAddr(1, False, 1, IPv4Address("1.2.3.4")),
        AddAddr(1, True, 1, IPv4Address("1.2.3.4"), None, bytes(8)),
        AddAddr(0, False, 1, IPv4Address("1.2.3.4"), None, bytes(8)),
        AddAddr(2, True, 1, IPv4Address("1.2.3.4")),
        RemoveAddr(()),
        RemoveAddr((256,)),
        MpPrio(reserved=1),
        MpTcpRst(flags=16),
        UnknownMptcp(9, H("1e04a000")),
        UnknownMptcp(8, H("1e048001")),  # a known subtype has its own class
    ],
)
def test_emit_rejects_invalid_objects(opt) -> None:
    with pytest.raises(SanityError):
        opt.emit()


# ------------------------------------------------------------- hypothesis

u8 = st.integers(0, 255)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
ipv4 = st.builds(IPv4Address, u32)
ipv6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))


@st.composite
def mp_capable(draw):
    version = draw(st.sampled_from([0, 1]))
    n = draw(st.integers(1 if version == 0 else 0, 2 if version == 0 else 4))
    vals = [draw(u64), draw(u64), draw(u16), draw(u16)][:n]
    vals += [None] * (4 - n)
    return MpCapable(version, draw(u8), *vals)


@st.composite
def mp_join(draw):
    variant = draw(st.sampled_from(["syn", "synack", "ack"]))
    common = {"backup": draw(st.booleans()), "addr_id": draw(u8),
              "reserved": draw(st.sampled_from([0, 2, 4, 8, 14]))}
    if variant == "syn":
        return MpJoin("syn", token=draw(u32), nonce=draw(u32), **common)
    if variant == "synack":
        return MpJoin("synack", nonce=draw(u32), hmac=draw(st.binary(min_size=8, max_size=8)),
                      **common)
    return MpJoin("ack", hmac=draw(st.binary(min_size=20, max_size=20)), **common)


@st.composite
def dss(draw):
    ack_len = draw(st.sampled_from([0, 4, 8]))
    dsn_len = draw(st.sampled_from([0, 4, 8]))
    opt = Dss(data_ack_len=ack_len, dsn_len=dsn_len, data_fin=draw(st.booleans()))
    if ack_len:
        opt.data_ack = draw(st.integers(0, 2 ** (8 * ack_len) - 1))
    if dsn_len:
        opt.dsn = draw(st.integers(0, 2 ** (8 * dsn_len) - 1))
        opt.ssn, opt.dll = draw(u32), draw(u16)
        opt.checksum = draw(st.none() | u16)
    free = 0xFE0 | (0 if ack_len else 0x02) | (0 if dsn_len else 0x08)
    opt.reserved = draw(st.integers(0, 0xFFF)) & free
    return opt


@st.composite
def add_addr(draw):
    version = draw(st.sampled_from([0, 1]))
    addr = draw(ipv4 | ipv6)
    port = draw(st.none() | u16)
    if version == 0:
        return AddAddr(0, False, draw(u8), addr, port, None)
    echo = draw(st.booleans())
    hmac = None if echo else draw(st.binary(min_size=8, max_size=8))
    return AddAddr(1, echo, draw(u8), addr, port, hmac)


def _unknown(subtype: int, body: bytes) -> UnknownMptcp:
    return UnknownMptcp(subtype, bytes((30, 3 + len(body), subtype << 4)) + body)


any_option = st.one_of(
    mp_capable(),
    mp_join(),
    dss(),
    add_addr(),
    st.builds(RemoveAddr, st.lists(u8, min_size=1, max_size=20).map(tuple), st.integers(0, 15)),
    st.builds(MpPrio, st.booleans(), st.none() | u8, st.sampled_from([0, 2, 4, 8, 14])),
    st.builds(MpFail, u64, st.integers(0, 0xFFF)),
    st.builds(MpFastclose, u64, st.integers(0, 0xFFF)),
    st.builds(MpTcpRst, st.integers(0, 15), u8),
    st.builds(_unknown, st.integers(9, 15), st.binary(max_size=30)),
)


@given(any_option, st.booleans(), st.booleans())
def test_parse_emit_roundtrip_every_valid_object(opt, syn, ack) -> None:
    raw = opt.emit()
    assert raw[0] == 30 and raw[1] == len(raw)
    back = parse_mptcp(raw, syn=syn, ack=ack)
    assert back == opt
    assert back.emit() == raw
    json.dumps(to_fields(back))  # the JSON view always serialises


@given(st.integers(0, 15), st.integers(0, 15), st.binary(max_size=40))
def test_random_bodies_give_wire_errors_or_exact_roundtrip(subtype, nibble, body) -> None:
    raw = bytes((30, 3 + len(body), (subtype << 4) | nibble)) + body
    try:
        opt = parse_mptcp(raw)
    except WireError:
        return
    assert opt.emit() == raw


@pytest.mark.parametrize("subtype", range(16))
def test_every_subtype_at_every_length_gives_wire_errors_or_exact_roundtrip(subtype) -> None:
    # 3..40 bytes (a TCP option area holds at most 40), all flag nibbles,
    # bodies of zeros and of ones: a WireError or an exact round trip, never
    # another exception (a 3-byte MP_JOIN once raised IndexError).
    for length in range(3, 41):
        for nibble in range(16):
            for fill in (0x00, 0xFF):
                raw = bytes((30, length, (subtype << 4) | nibble)) + bytes([fill]) * (length - 3)
                try:
                    opt = parse_mptcp(raw)
                except WireError:
                    continue
                assert opt.emit() == raw, raw.hex()
                json.dumps(to_fields(opt))


@given(st.binary(max_size=48), st.booleans(), st.booleans())
def test_fuzz_random_bytes_only_wire_errors(data, syn, ack) -> None:
    try:
        opt = parse_mptcp(data, syn=syn, ack=ack)
    except WireError:
        return
    assert opt.emit() == data


# ------------------------------------------------------------ JSON fields

FIELDS = {
    "MP_CAPABLE": {"version", "flags", "sender_key", "receiver_key", "data_len", "checksum"},
    "MP_JOIN": {"backup", "addr_id", "token", "nonce", "hmac"},
    "DSS": {"flags", "data_ack", "dsn", "ssn", "dll", "checksum", "data_fin"},
    "ADD_ADDR": {"version", "echo", "addr_id", "address", "port", "hmac"},
    "REMOVE_ADDR": {"addr_ids"},
    "MP_PRIO": {"backup", "addr_id"},
    "MP_FAIL": {"dsn"},
    "MP_FASTCLOSE": {"receiver_key"},
    "MP_TCPRST": {"flags", "reason"},
}


@given(any_option)
def test_to_fields_key_sets(opt) -> None:
    f = to_fields(opt)
    if f["subtype"] == "UNKNOWN":
        assert set(f) == {"subtype", "subtype_id", "raw"}
        return
    assert set(f) == FIELDS[f["subtype"]] | {"subtype"}


def test_to_fields_values() -> None:
    f = to_fields(parse_mptcp(H("1e1401010eae836aae29d673dfefe678e0d6d2ad")))
    assert f == {"subtype": "MP_CAPABLE", "version": 1, "flags": 1,
                 "sender_key": "0eae836aae29d673", "receiver_key": "dfefe678e0d6d2ad",
                 "data_len": None, "checksum": None}
    f = to_fields(parse_mptcp(H("1e0c10019e8a24913403d5b4")))
    assert f == {"subtype": "MP_JOIN", "backup": False, "addr_id": 1, "token": 0x9E8A2491,
                 "nonce": "3403d5b4", "hmac": None}
    f = to_fields(parse_mptcp(H("1e181000028a62e8dd3deae1593341ef4a959ce6935dd101")))
    assert f["backup"] is None and f["addr_id"] is None
    assert f["hmac"] == "028a62e8dd3deae1593341ef4a959ce6935dd101"
    f = to_fields(parse_mptcp(H("1e16200dd0ce6683e8a134ff18c4f937000000010bb8")))
    assert f == {"subtype": "DSS", "flags": 0x0D, "data_ack": 0xD0CE6683,
                 "dsn": 0xE8A134FF18C4F937, "ssn": 1, "dll": 3000, "checksum": None,
                 "data_fin": False}
    f = to_fields(parse_mptcp(H("1e083101c6120202")))
    assert f == {"subtype": "ADD_ADDR", "version": 1, "echo": True, "addr_id": 1,
                 "address": "198.18.2.2", "port": None, "hmac": None}
    assert to_fields(RemoveAddr((3, 4))) == {"subtype": "REMOVE_ADDR", "addr_ids": [3, 4]}
    assert to_fields(MpPrio(True)) == {"subtype": "MP_PRIO", "backup": True, "addr_id": None}
    assert to_fields(MpFastclose(1)) == {"subtype": "MP_FASTCLOSE",
                                         "receiver_key": "0000000000000001"}
    assert to_fields(MpTcpRst(1, 6)) == {"subtype": "MP_TCPRST", "flags": 1, "reason": 6}
    assert to_fields(MpFail(7)) == {"subtype": "MP_FAIL", "dsn": 7}


# ------------------------------------------- every option in every capture

PCAPS = Path(__file__).resolve().parents[2] / "shared" / "pcaps"


def _mptcp_options_in(path: Path):
    """Yield the raw kind-30 options of every TCP segment in a capture."""
    from stack.trace.pcap import ip_payload, open_capture
    from stack.wire.ip import parse_ip

    with open_capture(path) as cap:
        try:
            for pkt in cap:
                ip = ip_payload(pkt)
                if ip is None:
                    continue
                try:
                    hdr, seg = parse_ip(ip, verify=False, allow_truncated=True)
                except WireError:
                    continue
                if hdr.proto != 6 or len(seg) < 20:
                    continue
                opts = seg[20 : min(len(seg), (seg[12] >> 4) * 4)]
                i = 0
                while i < len(opts):
                    if opts[i] == 0:
                        break
                    if opts[i] == 1:
                        i += 1
                        continue
                    if i + 1 >= len(opts) or opts[i + 1] < 2:
                        break
                    if opts[i] == 30:
                        yield opts[i : i + opts[i + 1]]
                    i += opts[i + 1]
        except WireError:  # a capture cut short: what was read is checked
            return


CAPTURES = sorted(
    p for sub in ("kernel", "external") if (PCAPS / sub).is_dir()
    for p in (PCAPS / sub).iterdir()
    if p.suffix in (".pcap", ".pcapng") and p.stat().st_size < 2_000_000
)


@pytest.mark.skipif(not CAPTURES, reason="../shared/pcaps not present")
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_every_captured_option_parses_and_reemits_exactly(path: Path) -> None:
    pytest.importorskip("stack.trace.pcap")
    n_ok = 0
    for raw in _mptcp_options_in(path):
        try:
            opt = parse_mptcp(raw)
        except WireError:
            assert "oobr" in path.name, f"{raw.hex()} rejected"
            continue
        assert opt.emit() == raw
        assert not isinstance(opt, UnknownMptcp), raw.hex()
        n_ok += 1
    if "oobr" not in path.name and "rejected" not in path.name:
        assert n_ok > 0
