"""DSS mappings and mapping tables (RFC 8684 §3.3), checked against kernel bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.mptcp.dsn import MASK32, MASK64
from stack.mptcp.mapping import Mapping, RxMappingTable, TxMappingTable
from stack.wire.mptcp import Dss, MpCapable, parse_mptcp

C_IDSN = 0xE8A134FF18C4F936  # client IDSN of kernel-2subflows.pcap


def test_mapping_emits_the_kernels_dss_bytes():
    # pkt 10 of kernel-2subflows.pcap: ack32 + dsn64, SSN 1, DLL 3000
    m = Mapping(C_IDSN + 1, 1, 3000)
    assert m.to_dss(0xD0CE6683, ack64=False).emit() == bytes.fromhex(
        "1e16200dd0ce6683e8a134ff18c4f937000000010bb8")


def test_data_fin_only_mapping_bytes():
    # pkt 22: DATA_FIN without data: F|M, SSN 0, DLL 1
    m = Mapping(C_IDSN + 6001, 0, 1, data_fin=True)
    assert m.fin_only and m.length == 0 and m.end_dsn == C_IDSN + 6001
    assert m.to_dss(0xD0CE6683, ack64=False).emit() == bytes.fromhex(
        "1e16201dd0ce6683e8a134ff18c510a7000000000001")


def test_ssn_goes_on_the_wire_as_its_low_32_bits():
    m = Mapping(5, (1 << 32) + 7, 10)
    d = m.to_dss()
    assert d.ssn == 7 and d.data_ack is None and d.dsn_len == 8


def test_folded_data_fin_counts_in_dll_not_in_length():
    m = Mapping(100, 1, 19, data_fin=True)
    assert m.length == 18 and m.end_ssn == 19 and m.end_dsn == 118 and not m.fin_only


def test_from_dss_round_trip_and_widths():
    d = parse_mptcp(bytes.fromhex("1e16200dd0ce6683e8a134ff18c4f937000000010bb8"))
    m = Mapping.from_dss(d)
    assert m == Mapping(C_IDSN + 1, 1, 3000, False, None, True)
    ack_only = parse_mptcp(bytes.fromhex("1e0c2003e8a134ff18c4fec7"))
    assert Mapping.from_dss(ack_only) is None
    d32 = Dss(dsn=0x18C4F937, dsn_len=4, ssn=1, dll=10)
    m32 = Mapping.from_dss(d32)
    assert not m32.dsn64 and m32.expanded(C_IDSN + 1).dsn == C_IDSN + 1


def test_from_dss_unwraps_ssn_against_the_segment_position():
    seg = (1 << 32) + 5  # subflow stream past 4 GiB
    m = Mapping.from_dss(Dss(dsn=1, dsn_len=8, ssn=3, dll=100), seg)
    assert m.ssn == (1 << 32) + 3


def test_from_mpc_is_the_implicit_first_mapping():
    mpc = MpCapable(1, 0x81, 1, 2, 3000, 0x03E8)
    assert Mapping.from_mpc(mpc, 0x279180E785145967) == Mapping(
        0x279180E785145968, 1, 3000, False, 0x03E8, True)
    assert Mapping.from_mpc(MpCapable(1, 0x01, 1, 2), 7) is None


def test_same_as_ignores_the_fin_octet_like_the_kernel():
    a = Mapping(100, 1, 18)
    assert a.same_as(Mapping(100, 1, 19, data_fin=True))
    assert not a.same_as(Mapping(100, 1, 17))
    assert not a.same_as(Mapping(100, 1, 18, checksum=5))


def test_tx_table_find_room_release():
    t = TxMappingTable()
    t.add(Mapping(1000, 1, 100))
    t.add(Mapping(5000, 101, 50))
    assert t.find(1).dsn == 1000 and t.find(100).dsn == 1000 and t.find(101).dsn == 5000
    assert t.find(151) is None and t.find(0) is None
    assert t.room(1) == 100 and t.room(60) == 41 and t.room(150) == 1 and t.room(151) == 0
    assert t.release(100) == 0 and t.release(101) == 1 and len(t) == 1
    with pytest.raises(ValueError):
        t.add(Mapping(1, 200, 5))  # gap in subflow space


def test_rx_table_covering_picks_the_segment_holding_the_position():
    t = RxMappingTable()
    m1, m2 = Mapping(10, 1, 100), Mapping(200, 101, 100)
    assert t.note(1, 51, m1) and t.note(51, 151, m2)
    assert t.covering(1).mapping is m1 and t.covering(50).mapping is m1
    assert t.covering(51).mapping is m2 and t.covering(150).mapping is m2
    assert t.covering(151) is None
    t.discard_before(51)
    assert len(t) == 1 and t.covering(10) is None


def test_rx_table_keeps_the_first_copy_and_is_bounded():
    t = RxMappingTable(max_records=2)
    m1 = Mapping(10, 1, 100)
    assert t.note(1, 51, m1) and t.note(1, 51, Mapping(99, 1, 100))
    assert t.covering(1).mapping is m1
    assert t.note(51, 101, m1)
    assert not t.note(101, 151, m1) and len(t) == 2


# -- the send table's ranges live in the fast-path DssMap ----------------------


def test_tx_table_room_and_dsn_come_from_the_dss_map_across_the_wrap():
    t = TxMappingTable()
    base = (1 << 32) - 100  # unwrapped positions straddling 2**32
    t.add(Mapping(MASK64 - 49, base, 150))
    t.add(Mapping(7, base + 150, 60))
    assert type(t._dss).__module__ == "fastpath.dssmap"
    assert t.room(base) == 150 and t.room(base + 100) == 50 and t.room(base + 150) == 60
    assert t.dsn_of(base + 49) == MASK64 and t.dsn_of(base + 50) == 0
    assert t.dsn_of(base + 209) == 66 and t.dsn_of(base + 210) is None
    assert t.room(base + 210) == 0 and t.room(base - 1) == 0
    # the same low 32 bits one wrap later are not this table's bytes
    assert t.room(base + (1 << 32)) == 0 and t.dsn_of(base + (1 << 32)) is None
    assert t.release(base + 150) == 1
    assert t._dss.entries() == [((base + 150) & MASK32, 7, 60)]
    assert t.room(base + 149) == 0 and t.room(base + 151) == 59
    assert t.release(base + 210) == 1 and len(t._dss) == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**33), st.lists(st.tuples(st.integers(0, 3000), st.integers(0, MASK64),
                                                 st.integers(0, 4000)), max_size=30),
       st.lists(st.integers(-50, 70_000), max_size=40))
def test_tx_table_agrees_with_its_records_and_the_reference_map(start, maps, probes):
    """room/dsn_of through the compiled DssMap equal what the Mapping records
    say, and a table on the plain-Python twin answers the same."""
    from fastpath import reference as ref

    a, b = TxMappingTable(), TxMappingTable()
    b._dss = ref.DssMap(1 << 22)
    pos, recs = start, []
    for length, dsn, una_step in maps:
        m = Mapping(dsn, pos, length)
        a.add(m)
        b.add(m)
        recs.append(m)
        pos += length
        una = recs[0].ssn + una_step
        assert a.release(una) == b.release(una)
        recs = [r for r in recs if r.end_ssn > una]
        for off in probes:
            p = start + off
            want = next((r for r in recs if r.contains_ssn(p)), None)
            room = want.end_ssn - p if want else 0
            dsn_at = (want.dsn + p - want.ssn) & MASK64 if want else None
            assert a.room(p) == b.room(p) == room
            assert a.dsn_of(p) == b.dsn_of(p) == dsn_at
