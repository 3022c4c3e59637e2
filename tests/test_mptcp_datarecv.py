"""Data-level receive: mapping discipline as Linux enforces it, reassembly
across subflows, DATA_ACK, DATA_FIN, window (RFC 8684 §3.3), and the kernel's
own traces replayed through it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fastpath.segment import parse_segment
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.reference import dss_checksum
from stack.mptcp.crypto import key_idsn_v1
from stack.mptcp.datarecv import DataReceiver, MapError, SubflowReceiver
from stack.mptcp.dsn import MASK32, MASK64, dsn_add
from stack.mptcp.fallback import (
    RST_EMIDDLEBOX,
    RST_EMPTCP,
    Action,
    Context,
    Situation,
    allow_infinite_fallback,
    decide,
    fastclose_valid,
    rst_options,
)
from stack.mptcp.mapping import Mapping
from stack.trace.pcap import ip_payload, open_capture
from stack.wire.mptcp import Dss, MpCapable, MpFail, MpFastclose, parse_mptcp

IDSN = 0xE8A134FF18C4F936  # client IDSN of kernel-2subflows.pcap
PCAPS = Path(__file__).resolve().parents[2] / "shared" / "pcaps" / "kernel"
EXTERNAL = PCAPS.parent / "external"


def dss(dsn: int, ssn: int, dll: int, *, fin: bool = False, csum: int | None = None,
        dsn_len: int = 8) -> Dss:
    return Dss(dsn=dsn & (MASK64 if dsn_len == 8 else MASK32), dsn_len=dsn_len, ssn=ssn,
               dll=dll, data_fin=fin, checksum=csum)


def feed(sf: SubflowReceiver, dr: DataReceiver, ssn: int, payload: bytes, opt=None):
    """One in-order segment: note its mapping, consume its bytes, apply."""
    fin = sf.note(ssn, len(payload), opt)
    if fin is not None:
        dr.on_data_fin(fin.dsn, fin.dsn64)
    res = sf.consume(payload, dr.rcv_nxt)
    dr.on_result(res)
    return res


def data(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


# -- the kernel's own pattern: one mapping repeated on every segment -----------


def test_one_mapping_repeated_on_three_segments():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    payload = data(3000)
    m = dss(IDSN + 1, 1, 3000)
    acks = []
    for off, n in ((0, 1424), (1424, 1424), (2848, 152)):
        res = feed(sf, dr, 1 + off, payload[off:off + n], m)
        assert res.error is None and res.chunks == [(IDSN + 1 + off, payload[off:off + n])]
        acks.append(dr.data_ack - IDSN)
    assert acks == [1425, 2849, 3001]  # the DATA_ACKs of pkts 11, 13, 15
    assert dr.read() == payload


def test_mapping_only_on_the_first_segment_covers_the_following_ones():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    payload = data(300)
    feed(sf, dr, 1, payload[:100], dss(IDSN + 1, 1, 300))
    res = feed(sf, dr, 101, payload[100:200])
    assert res.error is None and res.chunks == [(IDSN + 101, payload[100:200])]
    feed(sf, dr, 201, payload[200:])
    assert dr.read() == payload


# -- mapping discipline (subflow.c get_mapping_status / validate_mapping) -----


def test_data_without_any_mapping_is_invalid():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    res = feed(sf, dr, 1, b"x" * 10)
    assert res.error is MapError.NO_DSS and res.chunks == [] and dr.readable == 0


def test_data_past_the_end_of_the_mapping_without_a_new_one_is_invalid():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    res = feed(sf, dr, 1, b"a" * 20, dss(IDSN + 1, 1, 10))
    assert res.error is MapError.NO_DSS
    assert res.chunks == [(IDSN + 1, b"a" * 10)]  # the mapped part was delivered


def test_mapping_that_starts_after_the_segment_start_is_invalid():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    res = feed(sf, dr, 1, b"a" * 20, dss(IDSN + 1, 5, 20))
    assert res.error is MapError.BAD_MAPPING and dr.readable == 0


def test_mapping_that_ends_before_the_segment_is_invalid():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    feed(sf, dr, 1, b"a" * 10, dss(IDSN + 1, 1, 10))
    res = feed(sf, dr, 11, b"b" * 10, dss(IDSN + 1, 1, 10))  # stale mapping again
    assert res.error is MapError.BAD_MAPPING


def test_mapping_starting_before_the_segment_is_fine():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    feed(sf, dr, 1, b"a" * 10, dss(IDSN + 1, 1, 10))
    # a retransmitted big mapping seen first on a later segment: SSN 11 starts it
    res = feed(sf, dr, 11, b"b" * 10, dss(IDSN + 11, 11, 30))
    res = feed(sf, dr, 21, b"c" * 20, dss(IDSN + 11, 11, 30))
    assert res.error is None and dr.read() == b"a" * 10 + b"b" * 10 + b"c" * 20


def test_different_mapping_on_a_fully_covered_segment_is_refused():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    feed(sf, dr, 1, b"a" * 10, dss(IDSN + 1, 1, 100))
    res = feed(sf, dr, 11, b"b" * 10, dss(IDSN + 11, 11, 90))  # same bytes, other map
    assert res.error is MapError.MAP_CHANGED and res.error_dsn == IDSN + 1


def test_new_mapping_on_a_segment_that_straddles_the_end_is_taken_after_it():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    feed(sf, dr, 1, b"a" * 10, dss(IDSN + 1, 1, 20))
    # segment [11, 31) carries the mapping of its tail [21, 31), DSNs far away
    res = feed(sf, dr, 11, b"b" * 10 + b"c" * 10, dss(IDSN + 1001, 21, 10))
    assert res.error is None
    assert res.chunks == [(IDSN + 11, b"b" * 10), (IDSN + 1001, b"c" * 10)]
    assert dr.data_ack == IDSN + 21 and dr.readable == 20  # [1001, 1011) is out of order


def test_infinite_mapping_is_reported_and_fall_back_maps_in_order():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    feed(sf, dr, 1, b"a" * 10, dss(IDSN + 1, 1, 10))
    res = feed(sf, dr, 11, b"b" * 10, dss(IDSN + 11, 11, 0))
    assert res.error is MapError.INFINITE and res.chunks == []
    assert feed(sf, dr, 21, b"c").error is MapError.INFINITE  # stays failed
    sf.fall_back()
    res = sf.consume(b"", dr.rcv_nxt)  # the held bytes now flow as plain TCP
    dr.on_result(res)
    feed(sf, dr, 22, b"d" * 5)
    assert dr.read() == b"a" * 10 + b"b" * 10 + b"c" + b"d" * 5


def test_out_of_order_segments_keep_their_mappings():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    # segment 2 (its own mapping) arrives before segment 1; TCP then delivers both
    assert sf.note(101, 100, dss(IDSN + 101, 101, 100)) is None
    assert sf.note(1, 100, dss(IDSN + 1, 1, 100)) is None
    res = sf.consume(b"a" * 100 + b"b" * 100, dr.rcv_nxt)
    assert res.error is None
    assert res.chunks == [(IDSN + 1, b"a" * 100), (IDSN + 101, b"b" * 100)]


def test_bounded_record_table_counts_drops():
    sf = SubflowReceiver(max_records=2)
    for i in range(4):
        sf.note(1 + 200 + 10 * i, 10, dss(IDSN + 1, 1, 10))
    assert len(sf.table) == 2 and sf.dropped_records == 2


# -- 32-bit DSNs and DATA_ACK width -----------------------------------------


def test_32_bit_dsn_is_expanded_against_rcv_nxt_across_the_wrap():
    start = (1 << 32) - 50  # low half about to wrap
    sf, dr = SubflowReceiver(), DataReceiver(start)
    res = feed(sf, dr, 1, b"a" * 100, dss(start, 1, 100, dsn_len=4))
    assert res.chunks == [(start, b"a" * 100)]
    res = feed(sf, dr, 101, b"b" * 10, dss(start + 100, 101, 10, dsn_len=4))
    assert res.chunks == [((1 << 32) + 50, b"b" * 10)]
    assert dr.data_ack == (1 << 32) + 60


def test_data_ack_width_follows_the_peers_last_mapping():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    assert dr.ack_dss().emit() == bytes.fromhex("1e08200118c4f937")  # pkt 9 of the trace
    feed(sf, dr, 1, b"a" * 1424, dss(IDSN + 1, 1, 3000))
    assert dr.ack_dss().emit() == bytes.fromhex("1e0c2003e8a134ff18c4fec7")  # pkt 11
    feed(sf, dr, 1425, b"b" * 1576, dss(IDSN + 1, 1, 3000))
    feed(sf, dr, 3001, b"c", dss(IDSN + 3001, 3001, 1, dsn_len=4))
    assert dr.ack_dss().data_ack_len == 4  # the kernel follows each mapping


# -- checksums (§3.3.1) ------------------------------------------------------


def test_checksummed_mapping_is_delivered_only_when_complete_and_valid():
    payload = data(3000, 3)
    cs = dss_checksum(IDSN + 1, 1, 3000, payload)
    sf, dr = SubflowReceiver(csum=True), DataReceiver(IDSN + 1)
    m = dss(IDSN + 1, 1, 3000, csum=cs)
    acks = []
    for off, n in ((0, 1424), (1424, 1424), (2848, 152)):
        res = feed(sf, dr, 1 + off, payload[off:off + n], m)
        assert res.error is None
        acks.append(dr.data_ack - IDSN)
    assert acks == [1, 1, 3001]  # as kernel-1subflow-csum.pcap pkts 5, 7, 9
    assert sf.valid_csum_seen and dr.read() == payload


def test_bad_checksum_withholds_the_mapping_and_names_its_dsn():
    payload = data(100)
    sf, dr = SubflowReceiver(csum=True), DataReceiver(IDSN + 1)
    cs = dss_checksum(IDSN + 1, 1, 100, payload)
    res = feed(sf, dr, 1, payload[:50] + b"X" + payload[51:], dss(IDSN + 1, 1, 100, csum=cs))
    assert res.error is MapError.BAD_CSUM and res.error_dsn == IDSN + 1
    assert res.withheld == (IDSN + 1, payload[:50] + b"X" + payload[51:])
    assert res.chunks == [] and dr.readable == 0 and not sf.valid_csum_seen
    # the subflow goes on with the next mapping
    p2 = data(10, 9)
    cs2 = dss_checksum(IDSN + 101, 101, 10, p2)
    res = feed(sf, dr, 101, p2, dss(IDSN + 101, 101, 10, csum=cs2))
    assert res.error is None and res.chunks == [(IDSN + 101, p2)]


def test_checksum_presence_must_match_the_negotiation():
    sf, dr = SubflowReceiver(csum=True), DataReceiver(IDSN + 1)
    assert feed(sf, dr, 1, b"a", dss(IDSN + 1, 1, 1)).error is MapError.CSUM_MISMATCH
    sf, dr = SubflowReceiver(csum=False), DataReceiver(IDSN + 1)
    assert feed(sf, dr, 1, b"a", dss(IDSN + 1, 1, 1, csum=0)).error is MapError.CSUM_MISMATCH


# -- data level: reassembly across subflows, duplicates, DATA_FIN, window -----


def test_reassembly_across_two_subflows_and_reinjection_duplicates():
    dr = DataReceiver(IDSN + 1)
    sf1, sf2 = SubflowReceiver(), SubflowReceiver()
    a, b = data(1000, 1), data(1000, 2)
    feed(sf2, dr, 1, b, dss(IDSN + 1001, 1, 1000))  # second half first, other path
    assert dr.data_ack == IDSN + 1 and dr.readable == 0 and not dr.ooo_empty
    feed(sf1, dr, 1, a, dss(IDSN + 1, 1, 1000))
    assert dr.data_ack == IDSN + 2001 and dr.ooo_empty
    # the sender re-injects [1001, 2001) on subflow 1 with a new SSN: dropped
    res = feed(sf1, dr, 1001, b, dss(IDSN + 1001, 1001, 1000))
    assert res.error is None and dr.dup_bytes == 1000 and dr.data_ack == IDSN + 2001
    assert dr.read() == a + b


def test_folded_data_fin_is_received_only_in_order():
    dr = DataReceiver(IDSN + 1)
    sf1, sf2 = SubflowReceiver(), SubflowReceiver()
    feed(sf2, dr, 1, b"b" * 18, dss(IDSN + 11, 1, 19, fin=True))  # data + DATA_FIN
    assert dr.fin_dsn == IDSN + 29 and not dr.fin_received
    feed(sf1, dr, 1, b"a" * 10, dss(IDSN + 1, 1, 10))
    assert dr.fin_received and dr.data_ack == IDSN + 30
    assert dr.read() == b"a" * 10 + b"b" * 18 and dr.eof


def test_bare_data_fin_on_an_empty_segment():
    # pkts 22/23: DATA_FIN (SSN 0, DLL 1) on a pure ACK of each subflow
    dr, sf1, sf2 = DataReceiver(IDSN + 1), SubflowReceiver(), SubflowReceiver()
    feed(sf1, dr, 1, b"a" * 6000, dss(IDSN + 1, 1, 6000))
    fin = parse_mptcp(bytes.fromhex("1e16201dd0ce6683e8a134ff18c510a7000000000001"))
    feed(sf1, dr, 6001, b"", fin)
    feed(sf2, dr, 1, b"", fin)  # the copy on the other subflow changes nothing
    assert dr.fin_received and dr.data_ack == IDSN + 6002  # pkts 24/25


def test_data_beyond_the_receive_buffer_is_dropped_and_window_never_shrinks():
    dr, sf = DataReceiver(IDSN + 1, rcvbuf=100), SubflowReceiver()
    assert dr.window() == 100
    feed(sf, dr, 1, b"a" * 150, dss(IDSN + 1, 1, 150))
    assert dr.readable == 100 and dr.beyond_window_bytes == 50
    assert dr.window() == 0 and dr.data_ack == IDSN + 101
    dr.read(40)
    assert dr.window() == 40
    assert dr.in_window(IDSN + 140) and not dr.in_window(IDSN + 141)


def test_stale_data_ack_region_is_a_duplicate():
    dr = DataReceiver(IDSN + 1)
    assert dr.on_data(IDSN + 1, b"abc") == 3
    assert dr.on_data(IDSN - 2, b"xyzabcd") == 1  # 6 old bytes, 1 new
    assert dr.dup_bytes == 6 and dr.read() == b"abcd"


# -- the kernel's traces -------------------------------------------------------


def _trace(name: str):
    path = (PCAPS if name.startswith("kernel") else EXTERNAL) / name
    if not path.exists():
        pytest.skip(f"{path} missing")
    out = []
    with open_capture(path) as cap:
        for pkt in cap:
            ip = ip_payload(pkt)
            s = parse_segment(ip, verify_checksum=False)
            opts = [parse_mptcp(bytes(ip[o:o + n])) for o, n in s.mptcp_spans]
            out.append((s.sport, s.dport, s.seq, s.flags, bytes(s.payload), opts))
    return out


@pytest.mark.parametrize("name,csum,c2s,s2c", [
    ("kernel-2subflows.pcap", False, 6000, 3206),
    ("kernel-1subflow.pcap", False, 6000, 3206),
    ("kernel-2subflows-csum.pcap", True, 6000, 3206),
    ("kernel-1subflow-csum.pcap", True, 6000, 3205),
    ("ptcpdump_mptcp-v1-basic.pcap", False, 9, 0),  # MPC+data, DATA_FIN both ways
    ("tcpdump_mptcp-v1.pcap", False, 10268, 10268),  # TSO segments, mapping spans 2
])
def test_kernel_trace_replays_with_the_same_data_acks(name, csum, c2s, s2c):
    """Feed every mapping of a kernel-to-kernel capture through datarecv: the
    streams reassemble to the right length, and every DATA_ACK either kernel
    sent equals our rcv_nxt at that point, in the same width."""
    pkts = _trace(name)
    server_port = pkts[0][1]
    keys: dict[str, int] = {}
    isn: dict[tuple[int, int], int] = {}
    recv: dict[str, DataReceiver] = {}
    subs: dict[tuple[int, int], SubflowReceiver] = {}
    history: dict[str, list[tuple[int, bool]]] = {}
    checked = 0
    for sport, dport, seq, flags, payload, opts in pkts:
        side = "server" if sport == server_port else "client"  # the sender
        peer = "client" if side == "server" else "server"
        if flags & 0x02:  # SYN
            isn[(sport, dport)] = seq
        for o in opts:
            if isinstance(o, MpCapable) and o.sender_key is not None:
                keys[side] = o.sender_key
        if not recv and len(keys) == 2:
            for who in ("server", "client"):
                other = "client" if who == "server" else "server"
                recv[who] = DataReceiver(dsn_add(key_idsn_v1(keys[other]), 1))
                history[who] = [(recv[who].data_ack, False)]
        if not recv:
            continue
        rel = (seq - isn[(sport, dport)]) & MASK32
        sf = subs.setdefault((sport, dport), SubflowReceiver(csum=csum))
        dr = recv[peer]
        for o in opts:
            if isinstance(o, Dss) and o.data_ack_len:
                # the capture interleaves both directions, so an ACK may lag:
                # it must be a state (rcv_nxt, width) the receiver went through
                states = {(a & (MASK64 if w else MASK32), w) for a, w in history[side]}
                if name.startswith("kernel"):
                    assert (o.data_ack, o.data_ack_len == 8) in states
                else:  # older kernels sent 64-bit DATA_ACKs from the start
                    mask = MASK64 if o.data_ack_len == 8 else MASK32
                    assert o.data_ack in {a & mask for a, _ in history[side]}
                checked += 1
        mapping = None
        for o in opts:
            if isinstance(o, Dss) and o.has_mapping:
                mapping = o
            elif isinstance(o, MpCapable) and o.data_len is not None:
                mapping = Mapping.from_mpc(o, key_idsn_v1(keys[side]))
        if mapping is None and not payload:
            continue
        fin = sf.note(rel, len(payload), mapping)
        if fin is not None:
            dr.on_data_fin(fin.dsn, fin.dsn64)
        res = sf.consume(payload, dr.rcv_nxt)
        assert res.error is None
        dr.on_result(res)
        history[peer].append((dr.data_ack, dr.use_64bit_ack))
    assert checked > 3
    for who in ("server", "client") if name.startswith("kernel") else ():
        # the last DATA_ACKs are exact
        last = [o for sp, _, _, _, _, opts in pkts for o in opts
                if isinstance(o, Dss) and o.data_ack_len
                and (sp == server_port) == (who == "server")][-1]
        assert last.data_ack == recv[who].data_ack & MASK64
    assert len(recv["server"].read()) == c2s and recv["server"].fin_received
    assert len(recv["client"].read()) == s2c and recv["client"].fin_received


# -- what to do about a mapping error: fallback.decide, row by row (§2.2) -----

@pytest.mark.parametrize("ctx,action,reason", [
    # data without DSS before the subflow is fully established: fall back
    (Context(map_error=MapError.NO_DSS, map_data_len=0), Action.FALLBACK, None),
    # ... once fully established (no checksums) a mapping violation resets
    (Context(map_error=MapError.BAD_MAPPING, fully_established=True), Action.RESET, RST_EMPTCP),
    (Context(map_error=MapError.MAP_CHANGED, fully_established=True), Action.RESET, RST_EMPTCP),
    # the infinite mapping: fallback while allow_infinite_fallback holds
    (Context(map_error=MapError.INFINITE, fully_established=True), Action.FALLBACK, None),
    (Context(map_error=MapError.INFINITE, fully_established=True, subflows=2),
     Action.RESET, RST_EMPTCP),
    (Context(map_error=MapError.INFINITE, fully_established=True, join_seen=True),
     Action.RESET, RST_EMPTCP),
    (Context(map_error=MapError.INFINITE, fully_established=True, data_retransmitted=True),
     Action.RESET, RST_EMPTCP),
    (Context(map_error=MapError.INFINITE, fully_established=True, ooo_empty=False),
     Action.RESET, RST_EMPTCP),
    # bad checksum before any valid one: fallback (checksums "don't work" here)
    (Context(map_error=MapError.BAD_CSUM, csum_enabled=True, fully_established=True),
     Action.FALLBACK, None),
    # bad checksum after a valid one: MP_FAIL and keep delivering
    (Context(map_error=MapError.BAD_CSUM, csum_enabled=True, valid_csum_seen=True),
     Action.SEND_MP_FAIL, None),
    (Context(map_error=MapError.BAD_CSUM, csum_enabled=True, valid_csum_seen=True, subflows=2),
     Action.RESET, RST_EMIDDLEBOX),
    (Context(map_error=MapError.BAD_CSUM, csum_enabled=True, mp_join=True, join_seen=True,
             subflows=2), Action.RESET, RST_EMIDDLEBOX),
    # a join subflow never falls back
    (Context(map_error=MapError.NO_DSS, mp_join=True, join_seen=True, subflows=2),
     Action.RESET, RST_EMPTCP),
    (Context(map_error=MapError.CSUM_MISMATCH, csum_enabled=True, valid_csum_seen=True),
     Action.RESET, RST_EMPTCP),
])
def test_mapping_error_decisions(ctx, action, reason):
    d = decide(Situation.MAPPING_ERROR, ctx)
    assert d.action is action and d.rst_reason == reason
    assert d.deliver == (action in (Action.FALLBACK, Action.SEND_MP_FAIL))


def test_allow_infinite_fallback_conditions():
    assert allow_infinite_fallback(Context())
    for bad in (dict(subflows=2), dict(join_seen=True), dict(data_retransmitted=True),
                dict(ooo_empty=False)):
        assert not allow_infinite_fallback(Context(**bad))


def test_mp_fail_received_decisions():
    assert decide(Situation.MP_FAIL_RECEIVED).action is Action.MP_FAIL_AND_FALLBACK
    assert decide(Situation.MP_FAIL_RECEIVED, Context(mp_fail_sent=True)).action is \
        Action.STOP_FAIL_TIMER
    assert decide(Situation.MP_FAIL_RECEIVED, Context(subflows=2)).action is Action.CONTINUE
    d = decide(Situation.MP_FAIL_TIMEOUT)
    assert d.action is Action.RESET and d.rst_reason == RST_EMIDDLEBOX


def test_bad_checksum_end_to_end_gives_mp_fail_with_the_mapping_dsn():
    """Probe 7 of linux-mptcp-v1.md §5: a good checksum, then a corrupted one:
    MP_FAIL(DSN of that mapping), data still delivered."""
    sf, dr = SubflowReceiver(csum=True), DataReceiver(IDSN + 1)
    p1, p2 = data(100, 1), data(100, 2)
    feed(sf, dr, 1, p1, dss(IDSN + 1, 1, 100, csum=dss_checksum(IDSN + 1, 1, 100, p1)))
    res = feed(sf, dr, 101, p2[:-1] + b"\x00",
               dss(IDSN + 101, 101, 100, csum=dss_checksum(IDSN + 101, 101, 100, p2)))
    d = decide(Situation.MAPPING_ERROR, Context(
        map_error=res.error, csum_enabled=True, valid_csum_seen=sf.valid_csum_seen,
        fully_established=True, ooo_empty=dr.ooo_empty))
    assert d.action is Action.SEND_MP_FAIL and res.error_dsn == IDSN + 101
    want = bytes.fromhex("1e0c6000") + (IDSN + 101).to_bytes(8, "big")
    assert MpFail(res.error_dsn).emit() == want
    if d.deliver:
        dr.on_data(*res.withheld)
    assert dr.read() == p1 + p2[:-1] + b"\x00"


# -- every segment's mapping is looked at, even when TCP delivers many at once --


def test_mapping_change_inside_a_batch_of_segments_is_caught():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    sf.note(1, 10, dss(IDSN + 1, 1, 100))
    sf.note(11, 10, dss(IDSN + 500, 11, 10))  # fully covered by the first mapping
    res = sf.consume(b"a" * 20, dr.rcv_nxt)
    assert res.error is MapError.MAP_CHANGED and res.chunks == [(IDSN + 1, b"a" * 10)]


def test_data_fin_folded_into_a_repeat_of_the_mapping_in_use_is_seen():
    # the sender shut down after sending the first segment of its last mapping:
    # later segments repeat it with DATA_FIN folded in (DLL + 1)
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    sf.note(1, 10, dss(IDSN + 1, 1, 20))
    sf.note(11, 10, dss(IDSN + 1, 1, 21, fin=True))
    dr.on_result(sf.consume(b"a" * 20, dr.rcv_nxt))
    assert dr.fin_received and dr.data_ack == IDSN + 22 and dr.read() == b"a" * 20


def test_infinite_mapping_wins_over_the_mapping_in_use():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    feed(sf, dr, 1, b"a" * 10, dss(IDSN + 1, 1, 100))
    res = feed(sf, dr, 11, b"b" * 10, dss(IDSN + 11, 11, 0))
    assert res.error is MapError.INFINITE and res.chunks == []
    d = decide(Situation.MAPPING_ERROR, Context(map_error=res.error, fully_established=True))
    assert d.action is Action.FALLBACK
    sf.fall_back()
    dr.on_result(sf.consume(b"", dr.rcv_nxt))
    assert dr.read() == b"a" * 10 + b"b" * 10


# -- wrap-around and hostile input ---------------------------------------------


def test_subflow_sequence_wraps_past_2_32():
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    sf.pos = (1 << 32) - 5  # 4 GiB into the subflow
    m = dss(IDSN + 1, (1 << 32) - 5, 20)  # mapping straddles the 32-bit wrap
    res = feed(sf, dr, (1 << 32) - 5, b"a" * 10, m)
    assert res.error is None
    res = feed(sf, dr, 5, b"b" * 10, m)  # the wire SSN wrapped to 5
    assert res.error is None and res.chunks == [(IDSN + 11, b"b" * 10)]
    assert sf.pos == (1 << 32) + 15 and dr.read() == b"a" * 10 + b"b" * 10


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 600)), max_size=40),
       st.integers(0, 2**32 - 1))
def test_data_level_reassembly_with_reordering_and_duplicates(pieces, seed):
    """Chunks in any order, overlapping, repeated: the stream comes out exact."""
    rng = random.Random(seed)
    stream = data(3600, seed & 0xFF)
    chunks = [(off, stream[off:off + n]) for off, n in pieces]
    chunks += [(off, stream[off:off + 500]) for off in range(0, 3600, 500)]  # full cover
    rng.shuffle(chunks)
    start = (MASK64 - 1800) if seed & 1 else IDSN  # sometimes across the 2**64 wrap
    dr = DataReceiver(start, rcvbuf=1 << 16)
    for off, chunk in chunks:
        dr.on_data(dsn_add(start, off), chunk)
    assert dr.read() == stream and dr.data_ack == dsn_add(start, 3600)


dss_strategy = st.builds(
    Dss,
    data_ack=st.none(),
    dsn=st.integers(0, MASK64),
    dsn_len=st.sampled_from([4, 8]),
    ssn=st.integers(0, 2**32 - 1) | st.integers(0, 400),
    dll=st.integers(0, 0xFFFF) | st.integers(0, 400),
    checksum=st.none() | st.integers(0, 0xFFFF),
    data_fin=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 300), st.none() | dss_strategy), max_size=12),
       st.booleans())
def test_hostile_mappings_never_crash_and_only_deliver_mapped_bytes(segs, csum):
    sf, dr = SubflowReceiver(csum=csum), DataReceiver(IDSN + 1)
    pos = 1
    for n, opt in segs:
        fin = sf.note(pos, n, opt)
        if fin is not None:
            dr.on_data_fin(fin.dsn, fin.dsn64)
        res = sf.consume(b"q" * n, dr.rcv_nxt)
        for _, chunk in res.chunks:
            assert chunk == b"q" * len(chunk)
        dr.on_result(res)
        pos += n
        if res.error is not None and res.error is not MapError.BAD_CSUM:
            assert sf.failed is res.error
    assert sf.pos <= pos and dr.readable <= dr.rcvbuf


def test_failed_subflow_backlog_is_bounded():
    sf, dr = SubflowReceiver(max_pending=100), DataReceiver(IDSN + 1)
    assert feed(sf, dr, 1, b"x" * 60).error is MapError.NO_DSS
    assert sf.consume(b"y" * 60, dr.rcv_nxt).error is MapError.NO_DSS
    assert sf.dropped_bytes == 20
    sf.fall_back()
    res = sf.consume(b"", dr.rcv_nxt)
    assert res.chunks == [(IDSN + 1, b"x" * 60 + b"y" * 40)]


def test_reset_options_and_fastclose_check():
    d = decide(Situation.JOIN_UNKNOWN_TOKEN)
    assert [o.emit() for o in rst_options(d)] == [bytes.fromhex("1e048001")]  # the probe's RST
    d = decide(Situation.MAPPING_ERROR, Context(map_error=MapError.BAD_CSUM, csum_enabled=True,
                                                 valid_csum_seen=True, subflows=2))
    opts = rst_options(d, fail_dsn=IDSN + 1, transient=True)
    assert [type(o).__name__ for o in opts] == ["MpFail", "MpTcpRst"]
    assert opts[1].emit() == bytes.fromhex("1e048106")
    with pytest.raises(ValueError):
        rst_options(decide(Situation.SYNACK_WITHOUT_MPC))
    assert fastclose_valid(MpFastclose(0x1234), 0x1234)
    assert not fastclose_valid(MpFastclose(0x1235), 0x1234)


# -- the fast-path translation table (fastpath.dssmap) ---------------------------


def test_validated_mapping_lives_in_the_dss_map_from_the_consumed_byte():
    """The mapping in use sits in the compiled SSN->DSN table from the first
    unconsumed byte to its end; consumed bytes are discarded from it."""
    sf, dr = SubflowReceiver(), DataReceiver(IDSN + 1)
    m = dss(IDSN + 1, 1, 3000)
    res = feed(sf, dr, 1, data(1000), m)
    assert res.chunks == [(IDSN + 1, data(1000))]
    assert sf.dssmap.entries() == [(1001, IDSN + 1001, 2000)]
    res = feed(sf, dr, 1001, data(2000, 1), m)
    assert res.chunks == [(IDSN + 1001, data(2000, 1))]
    assert len(sf.dssmap) == 0
    # the next mapping starts where the subflow stands
    res = feed(sf, dr, 3001, data(500, 2), dss(IDSN + 3001, 3001, 1000))
    assert sf.dssmap.entries() == [(3501, IDSN + 3501, 500)]
    sf.fall_back()
    assert len(sf.dssmap) == 0


def test_dss_map_translation_across_both_wraps():
    """A mapping straddling the 32-bit SSN wrap and the 64-bit DSN wrap."""
    sf, dr = SubflowReceiver(), DataReceiver(MASK64 - 9)
    sf.pos = (1 << 32) - 5
    m = dss(MASK64 - 9, (1 << 32) - 5, 20)
    assert feed(sf, dr, (1 << 32) - 5, b"a" * 8, m).chunks == [(MASK64 - 9, b"a" * 8)]
    assert sf.dssmap.entries() == [(3, MASK64 - 1, 12)]
    res = feed(sf, dr, 3, b"b" * 12, m)
    assert res.chunks == [(MASK64 - 1, b"b" * 12)]
    assert dr.read() == b"a" * 8 + b"b" * 12 and dr.rcv_nxt == 10


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 300), st.none() | dss_strategy), max_size=12),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_compiled_and_reference_dss_maps_translate_alike(segs, csum, start):
    """The same segments through a receiver on the compiled table and one on
    the plain-Python twin: the same chunks, errors, positions and table."""
    from fastpath import reference as ref

    a = SubflowReceiver(csum=csum)
    assert type(a.dssmap).__module__ == "fastpath.dssmap"  # the compiled one
    b = SubflowReceiver(csum=csum)
    b.dssmap = ref.DssMap(4)
    for sf in (a, b):
        sf.pos = start
    rcv_nxt, pos = IDSN + 1, start
    for n, opt in segs:
        outs = []
        for sf in (a, b):
            sf.note(pos & MASK32, n, opt)
            outs.append(sf.consume(b"q" * n, rcv_nxt))
        ra, rb = outs
        assert (ra.chunks, ra.error, ra.error_dsn, ra.data_fins) == \
            (rb.chunks, rb.error, rb.error_dsn, rb.data_fins)
        assert a.pos == b.pos and a.dssmap.entries() == b.dssmap.entries()
        pos += n
