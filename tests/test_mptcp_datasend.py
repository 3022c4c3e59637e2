"""Data-level send: DSN assignment, one mapping per chunk, DSS per segment,
DATA_ACK, DATA_FIN and re-injection (RFC 8684 §3.3), checked against the bytes
Linux sends in the kernel traces."""

from __future__ import annotations

import random
import shutil
import subprocess
from ipaddress import ip_address
from pathlib import Path

import pytest
from fastpath.segment import parse_segment
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.reference import dss_checksum
from stack.mptcp.datarecv import DataReceiver, SubflowReceiver
from stack.mptcp.datasend import DataSender, with_data_fin
from stack.mptcp.dsn import MASK64, dsn_add
from stack.mptcp.handshake import JoinInitiator, JoinResponder, MpcClient, MpcServer
from stack.mptcp.keys import key_material
from stack.mptcp.mapping import Mapping
from stack.mptcp.pm import Endpoint, SendAddAddr, add_addr_option
from stack.trace.pcap import PcapWriter, ip_payload, open_capture
from stack.wire.ip import IPv4Header
from stack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    SYN,
    MptcpOption,
    MssOption,
    TcpHeader,
    emit_segment,
    pad_options,
)

C_IDSN = 0xE8A134FF18C4F936  # kernel-2subflows.pcap client
S_ACK32 = 0xD0CE6683  # the client's 32-bit DATA_ACK in that trace
PCAPS = Path(__file__).resolve().parents[2] / "shared" / "pcaps" / "kernel"


def test_first_write_becomes_one_mapping_repeated_on_each_segment():
    ds = DataSender(C_IDSN)
    assert ds.write(bytes(3000)) == 3000
    sf = ds.subflow(1)
    m, payload = ds.next_mapping(sf, 65535)
    assert m == Mapping(C_IDSN + 1, 1, 3000) and payload == bytes(3000)
    want = bytes.fromhex("1e16200dd0ce6683e8a134ff18c4f937000000010bb8")  # pkts 10/12/14
    for ssn, n in ((1, 1424), (1425, 1424), (2849, 152)):
        assert ds.dss_for(sf, ssn, n, S_ACK32, ack64=False).emit() == want
        assert sf.room(ssn) == 3001 - ssn
    ds.write(bytes(3000))
    m2, _ = ds.next_mapping(sf, 65535)
    assert ds.dss_for(sf, 3001, 1424, S_ACK32, ack64=False).emit() == bytes.fromhex(
        "1e16200dd0ce6683e8a134ff18c504ef00000bb90bb8")  # pkt 16
    assert ds.next_mapping(sf, 65535) is None  # nothing left


def test_shutdown_sends_bare_data_fin_on_every_subflow_until_acked():
    ds = DataSender(C_IDSN)
    sf1, sf2 = ds.subflow(1), ds.subflow(2)
    ds.write(bytes(6000))
    ds.next_mapping(sf1, 3000)
    ds.next_mapping(sf1, 3000)
    ds.on_data_ack(C_IDSN + 6001, True)
    ds.shutdown()
    want = bytes.fromhex("1e16201dd0ce6683e8a134ff18c510a7000000000001")  # pkts 22, 23
    assert ds.dss_for(sf1, 6001, 0, S_ACK32, ack64=False).emit() == want
    assert ds.dss_for(sf2, 1, 0, S_ACK32, ack64=False).emit() == want
    assert ds.snd_nxt == C_IDSN + 6002 and not ds.all_acked
    assert ds.on_data_ack(0xE8A134FF18C510A8, True) == 0  # pkt 24: DATA_FIN acked
    assert ds.fin_acked and ds.all_acked and not ds.data_fin_enabled
    assert ds.dss_for(sf1, 6001, 0, 7, ack64=True).emit() == bytes.fromhex(
        "1e0c20030000000000000007")  # plain DATA_ACK again


def test_data_fin_only_checksum_matches_the_kernel():
    # kernel-1subflow-csum.pcap pkt 16: DATA_FIN at IDSN+6001, checksum 0x6199
    ds = DataSender(0x279180E785145967, csum=True)
    ds.write(bytes(6000))
    sf = ds.subflow(1)
    while ds.next_mapping(sf, 3000):
        pass
    ds.shutdown()
    d = ds.dss_for(sf, 6001, 0, 0xD788E311, ack64=False)
    assert d.emit() == bytes.fromhex("1e18201dd788e311279180e7851470d80000000000016199")


def test_data_fin_is_folded_into_the_last_mapping_with_its_checksum():
    ds = DataSender(C_IDSN, csum=True)
    ds.write(b"z" * 18)
    ds.shutdown()
    sf = ds.subflow(1)
    m, payload = ds.next_mapping(sf, 1000)
    assert m.dll == 18 and ds.data_fin_enabled
    d = ds.dss_for(sf, 1, 18)
    assert d.data_fin and d.dll == 19 and d.ssn == 1 and d.dsn == C_IDSN + 1
    assert d.checksum == dss_checksum(C_IDSN + 1, 1, 19, payload)
    assert ds.snd_nxt == C_IDSN + 20


def test_with_data_fin_updates_the_checksum_incrementally():
    rng = random.Random(5)
    for _ in range(50):
        n = rng.randrange(1, 2000)
        p = bytes(rng.randrange(256) for _ in range(n))
        dsn, ssn = rng.getrandbits(64), rng.getrandbits(32)
        m = Mapping(dsn, ssn, n, checksum=dss_checksum(dsn, ssn, n, p))
        f = with_data_fin(m)
        assert f.dll == n + 1 and f.data_fin
        assert f.checksum == dss_checksum(dsn, ssn, n + 1, p) or {
            f.checksum, dss_checksum(dsn, ssn, n + 1, p)} == {0, 0xFFFF}


def test_mpc_data_checksum_matches_the_kernel_trace():
    path = PCAPS / "kernel-1subflow-csum.pcap"
    if not path.exists():
        pytest.skip("trace missing")
    with open_capture(path) as cap:
        segs = [parse_segment(ip_payload(p), verify_checksum=False) for p in cap]
    client = segs[0].sport
    data = b"".join(bytes(s.payload) for s in segs if s.sport == client)[:3000]
    ds = DataSender(0x279180E785145967, csum=True)
    ds.write(data)
    m, _ = ds.next_mapping(ds.subflow(1), 3000)
    assert m.checksum == 0x03E8  # the MP_CAPABLE+data checksum of pkts 4/6/8


def test_data_ack_32_bit_expansion_and_bounds():
    ds = DataSender(C_IDSN)
    ds.write(bytes(5000))
    sf = ds.subflow(1)
    ds.next_mapping(sf, 4000)
    assert ds.on_data_ack((C_IDSN + 1001) & 0xFFFFFFFF, False) == 1000
    assert ds.snd_una == C_IDSN + 1001
    assert ds.on_data_ack(C_IDSN + 4002, True) == 0 and ds.ignored_acks == 1  # > snd_nxt
    assert ds.on_data_ack(C_IDSN + 500, True) == 0  # old
    assert ds.on_data_ack(C_IDSN + 4001, True) == 3000 and ds.send_space == (1 << 20) - 1000


def test_connection_window_limits_new_data_and_never_shrinks():
    ds = DataSender(C_IDSN, initial_window=1000)
    ds.write(bytes(5000))
    sf = ds.subflow(1)
    m, _ = ds.next_mapping(sf, 4000)
    assert m.dll == 1000 and ds.next_mapping(sf, 4000) is None and not ds.has_work()
    ds.on_data_ack(C_IDSN + 501, True, snd_wnd=2000)  # right edge 2501
    m, _ = ds.next_mapping(sf, 4000)
    assert m.dsn == C_IDSN + 1001 and m.dll == 1500
    ds.on_data_ack(C_IDSN + 601, True, snd_wnd=100)  # would move the edge back
    assert ds.wnd_end == C_IDSN + 2501


def test_mappings_respect_the_16_bit_dll():
    ds = DataSender(C_IDSN, initial_window=1 << 20)
    ds.write(bytes(200_000))
    sf = ds.subflow(1)
    sizes = []
    while (got := ds.next_mapping(sf, 1 << 20)) is not None:
        sizes.append(got[0].dll)
    assert sum(sizes) == 200_000 and max(sizes) == 65534


def test_subflow_ack_releases_mappings():
    ds = DataSender(C_IDSN)
    ds.write(bytes(300))
    sf = ds.subflow(1)
    ds.next_mapping(sf, 100)
    ds.next_mapping(sf, 200)
    sf.on_subflow_ack(101)
    assert len(sf.table) == 1 and sf.mapping_at(1) is None
    assert sf.mapping_at(150).dsn == C_IDSN + 101


def test_reinjection_resends_unacked_ranges_of_a_failed_subflow():
    ds = DataSender(C_IDSN)
    sf1, sf2 = ds.subflow(1), ds.subflow(2)
    ds.write(bytes(range(256)) * 4)
    ds.next_mapping(sf1, 300)  # [1, 301)
    ds.next_mapping(sf2, 300)  # [301, 601)
    ds.next_mapping(sf2, 300)  # [601, 901)
    ds.on_data_ack(C_IDSN + 401, True)
    assert ds.unacked_ranges(sf2) == [(C_IDSN + 401, C_IDSN + 901)]
    assert ds.reinject(sf2) == [(C_IDSN + 401, C_IDSN + 901)]
    m, payload = ds.next_mapping(sf1, 200)
    assert (m.dsn, m.ssn, m.dll) == (C_IDSN + 401, 301, 200)
    assert payload == (bytes(range(256)) * 4)[400:600]
    ds.on_data_ack(C_IDSN + 701, True)  # the rest got through meanwhile
    m, payload = ds.next_mapping(sf1, 1000)
    assert (m.dsn, m.dll) == (C_IDSN + 701, 200) and ds.bytes_reinjected == 400
    m, _ = ds.next_mapping(sf1, 1000)
    assert m.dsn == C_IDSN + 901  # then new data


def test_write_after_shutdown_is_refused():
    ds = DataSender(C_IDSN)
    ds.shutdown()
    with pytest.raises(ValueError):
        ds.write(b"x")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20_000), st.booleans(), st.integers(0, 2**32 - 1), st.data())
def test_sender_to_receiver_over_two_subflows(size, csum, seed, draw):
    """Everything the sender maps, cut into random segments on two subflows
    and re-injected once, reassembles exactly at the receiver."""
    rng = random.Random(seed)
    idsn = rng.getrandbits(64) | (MASK64 - 70_000) * draw.draw(st.booleans())  # near the wrap
    idsn &= MASK64
    payload = bytes(rng.randrange(256) for _ in range(size))
    ds = DataSender(idsn, csum=csum, initial_window=1 << 20)
    ds.write(payload)
    ds.shutdown()
    dr = DataReceiver(dsn_add(idsn, 1))
    subs = {i: (ds.subflow(i), SubflowReceiver(csum=csum)) for i in (1, 2)}
    streams: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
    reinjected = False
    while ds.has_work():
        i = rng.choice((1, 2))
        sf, _ = subs[i]
        got = ds.next_mapping(sf, rng.randrange(1, 5000))
        if got is None:
            break
        streams[i] += got[1]
        if not reinjected and rng.random() < 0.3:
            ds.reinject(sf)
            reinjected = True
    for i, (sf, rx) in subs.items():
        buf, pos = streams[i], 0
        while pos < len(buf):  # cut at random, never across a mapping
            n = min(rng.randrange(1, 3000), sf.room(1 + pos))
            d = ds.dss_for(sf, 1 + pos, n)
            fin = rx.note(1 + pos, n, d)
            assert fin is None
            res = rx.consume(buf[pos:pos + n], dr.rcv_nxt)
            assert res.error is None
            dr.on_result(res)
            pos += n
        d = ds.dss_for(sf, 1 + pos, 0)  # a pure ACK after the data
        fin = rx.note(1 + pos, 0, d)
        if fin is not None:
            dr.on_data_fin(fin.dsn, fin.dsn64)
    assert dr.read() == payload and dr.fin_received
    assert ds.on_data_ack(dr.data_ack, True) == size and ds.all_acked


def test_data_fin_retransmission_timer_backs_off_until_acked():
    ds = DataSender(C_IDSN)
    sf = ds.subflow(1)
    assert not ds.fin_timer(0.0)  # nothing sent yet
    ds.shutdown()
    ds.dss_for(sf, 1, 0)  # the bare DATA_FIN goes out
    assert not ds.fin_timer(1.0) and ds.fin_deadline == 1.2
    assert not ds.fin_timer(1.1)
    assert ds.fin_timer(1.2) and ds.fin_deadline == pytest.approx(1.6)
    assert ds.fin_timer(1.6) and ds.fin_deadline == pytest.approx(2.4)
    ds.on_data_ack(C_IDSN + 2, True)
    assert ds.fin_acked and ds.fin_deadline is None and not ds.fin_timer(9.0)


def test_requeue_clips_to_what_is_unacked_and_marks_retransmission():
    ds = DataSender(C_IDSN)
    ds.write(bytes(range(200)))
    sf = ds.subflow(1)
    ds.next_mapping(sf, 150)  # [1, 151)
    ds.on_data_ack(C_IDSN + 51, True)
    assert not ds.retransmitted
    ds.requeue(C_IDSN + 1, C_IDSN + 500)  # the data-level RTO re-sends the head
    assert ds.retransmitted
    m, payload = ds.next_mapping(ds.subflow(2), 1000)
    assert (m.dsn, m.dll) == (C_IDSN + 51, 100) and payload == bytes(range(50, 150))
    ds.requeue(C_IDSN + 1, C_IDSN + 40)  # all acked already: nothing
    m, _ = ds.next_mapping(sf, 1000)
    assert m.dsn == C_IDSN + 151  # new data again


def test_fallback_acks_everything_sent():
    ds = DataSender(C_IDSN)
    ds.write(bytes(300))
    ds.next_mapping(ds.subflow(1), 200)
    assert ds.on_fallback_ack() == 200 and ds.snd_una == C_IDSN + 201


# -- an independent decoder: tshark's MPTCP mapping analysis -------------------

TSHARK = shutil.which("tshark")


class _Trace:
    """Builds IPv4 packets for a synthetic connection into a pcap."""

    def __init__(self, path: Path) -> None:
        self.w = PcapWriter(path)
        self.t = 0.0

    def send(self, src, dst, sport, dport, seq, ack, flags, opts=(), payload=b"", mss=False):
        tcp_opts = [MssOption(1460)] if mss else []
        tcp_opts += [MptcpOption(o) for o in opts]
        hdr = TcpHeader(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 65535,
                        options=pad_options(tcp_opts))
        seg = emit_segment(hdr, payload, src, dst)
        ip = IPv4Header(ip_address(src), ip_address(dst)).emit(len(seg)) + seg
        self.t += 0.001
        self.w.write(ip, self.t)


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
@pytest.mark.parametrize("csum", [False, True])
def test_synthetic_two_subflow_trace_decodes_cleanly_in_tshark(tmp_path, csum):
    """Everything the building blocks put on the wire for a 2-subflow
    connection (handshakes, MPC+data, ADD_ADDR/echo, MP_JOIN, DSS mappings on
    both subflows with a re-injection, DATA_FIN both ways) decodes in tshark
    with mapping analysis on: no malformed packet, no error-level expert info."""
    rng = random.Random(5)
    ckm, skm = key_material(rng.getrandbits(64)), key_material(rng.getrandbits(64))
    c = MpcClient(ckm, want_csum=csum)
    s = MpcServer.from_syn(skm, [c.syn_option().emit()])
    tr = _Trace(tmp_path / "syn.pcap")
    C1, S1, C2, S2 = "198.18.1.1", "198.18.1.2", "198.18.2.1", "198.18.2.2"
    sub = {1: (C1, S1, 40000, 1000, 5000), 2: (C2, S2, 40001, 2000, 6000)}
    ssn = {1: 0, 2: 0}  # subflow data sent so far by the client

    def up(i, flags, opts=(), payload=b"", rel=None, mss=False):
        src, dst, port, cisn, sisn = sub[i]
        seq = cisn + 1 + (ssn[i] if rel is None else rel)
        tr.send(src, dst, port, 5202, seq, sisn + 1, flags, opts, payload, mss)

    def down(i, flags, opts=(), ack_rel=None, seq_rel=0):
        src, dst, port, cisn, sisn = sub[i]
        ack = cisn + 1 + (ssn[i] if ack_rel is None else ack_rel)
        tr.send(dst, src, 5202, port, sisn + 1 + seq_rel, ack, flags, opts)

    src, dst, port, cisn, sisn = sub[1]
    tr.send(src, dst, port, 5202, cisn, 0, SYN, [c.syn_option()], mss=True)
    tr.send(dst, src, 5202, port, sisn, cisn + 1, SYN | ACK, [s.synack_option()], mss=True)
    assert c.on_synack([s.synack_option().emit()])
    up(1, ACK, [c.third_ack_option()])
    s.on_third_ack([c.third_ack_option().emit()])

    cs, sr = DataSender(ckm.idsn, csum=c.csum), DataReceiver(ckm.idsn + 1)
    msg = bytes(rng.randrange(256) for _ in range(20_000))
    cs.write(msg)
    tx1, tx2 = cs.subflow(1), cs.subflow(2)
    m, payload = cs.next_mapping(tx1, 3000)
    for off in (0, 1448, 2896):  # MP_CAPABLE with data on every segment of it
        part = payload[off:off + 1448]
        up(1, ACK | PSH, [c.data_option(m)], part, rel=off)
    ssn[1] = 3000
    sr.on_data(m.dsn, payload)
    down(1, ACK, [sr.ack_dss()])
    c.on_segment([sr.ack_dss().emit()], True)
    cs.on_data_ack(sr.data_ack, True)

    add = add_addr_option(SendAddAddr(Endpoint(1, ip_address(S2))), skm.key, ckm.key)
    down(1, ACK, [add])
    up(1, ACK, [add_addr_option(SendAddAddr(Endpoint(1, ip_address(S2)), echo=True),
                                ckm.key, skm.key)])

    ji = JoinInitiator(ckm.key, skm.key, 0x01020304, addr_id=1)
    jr = JoinResponder.from_syn(ji.syn_option(), skm.key, ckm.key, rng, addr_id=1)
    src, dst, port, cisn, sisn = sub[2]
    tr.send(src, dst, port, 5202, cisn, 0, SYN, [ji.syn_option()], mss=True)
    tr.send(dst, src, 5202, port, sisn, cisn + 1, SYN | ACK, [jr.synack_option()], mss=True)
    assert ji.on_synack([jr.synack_option().emit()])
    up(2, ACK, [ji.ack_option()])
    assert jr.on_ack([ji.ack_option().emit()])
    down(2, ACK, [sr.ack_dss()])

    turn, reinjected = 2, False
    while cs.has_work():
        tx = tx1 if turn == 1 else tx2
        m, payload = cs.next_mapping(tx, 2896)
        off = 0
        while off < len(payload):
            n = min(1448, len(payload) - off)
            d = cs.dss_for(tx, ssn[turn] + 1, n, sr.data_ack, sr.use_64bit_ack)
            up(turn, ACK, [d], payload[off:off + n])
            ssn[turn] += n
            off += n
        sr.on_data(m.dsn, payload)
        sr.note_mapping_width(True)
        down(turn, ACK, [sr.ack_dss()])
        if turn == 2 and not reinjected:
            cs.reinject(tx2)  # the same data again on subflow 1
            reinjected = True
        else:
            cs.on_data_ack(sr.data_ack, True)
        turn = 3 - turn
    cs.shutdown()
    for i, tx in ((1, tx1), (2, tx2)):
        up(i, ACK, [cs.dss_for(tx, ssn[i] + 1, 0, sr.data_ack, True)])
    sr.on_data_fin(cs.fin_dsn)
    assert sr.read() == msg and sr.fin_received
    for i in (1, 2):
        down(i, ACK, [sr.ack_dss()])
        up(i, FIN | ACK, [sr.ack_dss()])
        down(i, FIN | ACK, [sr.ack_dss()], ack_rel=ssn[i] + 1)
    tr.w.close()

    out = subprocess.run(
        [TSHARK, "-r", str(tmp_path / "syn.pcap"), "-o", "mptcp.analyze_mappings:TRUE",
         "-o", "mptcp.intersubflows_retransmission:TRUE", "-q", "-z", "expert"],
        capture_output=True, text=True, check=True).stdout
    assert "Errors (" not in out and "Malformed" not in out, out
    fields = subprocess.run(
        [TSHARK, "-r", str(tmp_path / "syn.pcap"), "-o", "mptcp.analyze_mappings:TRUE",
         "-T", "fields", "-e", "mptcp.stream", "-e", "tcp.options.mptcp.subtype"],
        capture_output=True, text=True, check=True).stdout.splitlines()
    streams = {f.split("\t")[0] for f in fields} - {""}  # SYNs are not attributed yet
    assert streams == {"0"}  # both subflows belong to one MPTCP connection
