"""MP_CAPABLE v1 and MP_JOIN handshakes (RFC 8684 §3.1, §3.2), replaying the
exact bytes of kernel-2subflows.pcap and the probe results of
linux-mptcp-v1.md §5, plus the handshake rows of the fallback table (§2.2)."""

from __future__ import annotations

import random
from ipaddress import ip_address
from pathlib import Path

import pytest
from fastpath.segment import parse_segment

from stack.mptcp.datarecv import DataReceiver, SubflowReceiver
from stack.mptcp.datasend import DataSender
from stack.mptcp.fallback import RST_EMPTCP, RST_EPROHIBIT, Action, Context, Situation, decide
from stack.mptcp.handshake import (
    JoinHold,
    JoinInitiator,
    JoinResponder,
    MpcClient,
    MpcServer,
    options_bytes,
    parse_options,
)
from stack.mptcp.keys import TokenRegistry, key_material
from stack.mptcp.mapping import Mapping
from stack.mptcp.pm import (
    OpenSubflow,
    PathManager,
    SendAddAddr,
    add_addr_option,
    verify_add_addr,
)
from stack.tcp.config import TcpConfig
from stack.tcp.connection import TcpConnection
from stack.tcp.segment import ACK as F_ACK
from stack.tcp.segment import SYN as F_SYN
from stack.trace.pcap import ip_payload, open_capture
from stack.wire.mptcp import Dss, MpCapable, MpJoin, parse_mptcp

H = bytes.fromhex
CKEY, SKEY = 0x0EAE836AAE29D673, 0xDFEFE678E0D6D2AD  # kernel-2subflows.pcap
SYN = H("1e040101")
SYNACK = H("1e0c0101dfefe678e0d6d2ad")
THIRD = H("1e1401010eae836aae29d673dfefe678e0d6d2ad")
ADD_ADDR = H("1e103001c6120202d6a3917808f8b7dd")
ECHO = H("1e083101c6120202")
J_SYN = H("1e0c10019e8a24913403d5b4")
J_SYNACK = H("1e101001dd592f127197122d1d6d0315")
J_ACK = H("1e181000028a62e8dd3deae1593341ef4a959ce6935dd101")
J_4TH = H("1e08200118c4f937")
R_A, R_B = 0x3403D5B4, 0x1D6D0315


class Script:
    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def getrandbits(self, k: int) -> int:
        return self.values.pop(0)


def client() -> MpcClient:
    return MpcClient(key_material(CKEY))


def server() -> MpcServer:
    s = MpcServer.from_syn(key_material(SKEY), [SYN])
    assert s is not None
    return s


# -- MP_CAPABLE, client ------------------------------------------------------


def test_client_handshake_bytes_are_the_kernels():
    c = client()
    assert c.syn_option().emit() == SYN
    assert c.on_synack([SYNACK]) and c.remote.key == SKEY and not c.csum
    assert c.third_ack_option().emit() == THIRD
    assert c.mptcp and not c.fully_established


@pytest.mark.parametrize("opt", [
    None,  # options stripped by a middlebox
    H("1e0c0100dfefe678e0d6d2ad"),  # H clear
    H("1e0c0141dfefe678e0d6d2ad"),  # B set
    H("1e0c0103dfefe678e0d6d2ad"),  # reserved crypto bit G
    H("1e0c0001dfefe678e0d6d2ad"),  # version 0
    H("1e040101"),  # wrong length for a SYN/ACK
    H("1e0c01"),  # malformed: "not there"
])
def test_client_falls_back_on_a_bad_synack(opt):
    c = client()
    assert not c.on_synack([] if opt is None else [opt])
    assert c.fallback is Situation.SYNACK_WITHOUT_MPC and not c.mptcp
    assert decide(c.fallback).action is Action.FALLBACK


def test_mp_capable_only_counts_as_the_first_mptcp_option():
    c = client()
    assert not c.on_synack([H("1e08200100000001"), SYNACK])


def test_checksum_is_on_when_either_side_asks():
    c = MpcClient(key_material(CKEY), want_csum=True)
    assert c.syn_option().emit() == H("1e040181")
    c.on_synack([SYNACK])  # the kernel answers 0x01 even to A
    assert c.csum and c.third_ack_option().flags == 0x81
    c2 = client()
    c2.on_synack([H("1e0c0181dfefe678e0d6d2ad")])
    assert c2.csum and c2.third_ack_option().emit()[3] == 0x81


def test_client_sends_mpc_with_data_until_fully_established():
    # kernel-1subflow.pcap: "1e16 0101 a5295039fd7c40a7 636422d79ed202ab 0bb8"
    c = MpcClient(key_material(0xA5295039FD7C40A7))
    c.on_synack([H("1e0c0101636422d79ed202ab")])
    m = Mapping(c.local.idsn + 1, 1, 3000)
    assert c.data_option(m).emit() == H("1e160101a5295039fd7c40a7636422d79ed202ab0bb8")
    assert c.data_option(Mapping(c.local.idsn + 3001, 3001, 10)) is None  # later data: DSS
    assert c.on_segment([H("1e0c2003") + (c.local.idsn + 1425).to_bytes(8, "big")], True)
    assert c.fully_established and c.data_option(m) is None


def test_client_mpc_with_data_and_checksum_bytes():
    # kernel-1subflow-csum.pcap pkt 4
    c = MpcClient(key_material(0x55AF3016FE782873), want_csum=True)
    c.on_synack([H("1e0c01818bc276dcbd63916d")])
    m = Mapping(c.local.idsn + 1, 1, 3000, checksum=0x03E8)
    assert c.data_option(m).emit() == H(
        "1e18018155af3016fe7828738bc276dcbd63916d0bb803e8")


def test_add_addr_makes_the_client_fully_established_but_an_echo_does_not():
    c = client()
    c.on_synack([SYNACK])
    assert c.on_segment([ADD_ADDR], True) and c.fully_established  # pkt 4 of the trace
    c2 = client()
    c2.on_synack([SYNACK])
    assert not c2.on_segment([ECHO], True)
    assert c2.fallback is Situation.FIRST_SEGMENT_WITHOUT_DSS


def test_first_server_segment_without_dss_ack_makes_the_client_fall_back():
    c = client()
    c.on_synack([SYNACK])
    assert c.on_segment([], at_first_byte=False)  # out of order: no decision
    assert not c.fully_established and c.mptcp
    assert not c.on_segment([], at_first_byte=True)
    assert c.fallback is Situation.FIRST_SEGMENT_WITHOUT_DSS
    assert decide(c.fallback).action is Action.FALLBACK


def test_mpc_syn_retried_twice_then_sent_without_mp_capable():
    c = client()
    c.on_syn_timeout()
    c.on_syn_timeout()
    assert c.syn_option() is not None
    c.on_syn_timeout()
    assert c.syn_option() is None and c.fallback is Situation.MPC_SYN_TIMEOUT
    assert decide(Situation.MPC_SYN_TIMEOUT, Context(syn_retransmits=1)).action is Action.CONTINUE
    assert decide(Situation.MPC_SYN_TIMEOUT, Context(syn_retransmits=2)).action is \
        Action.RETRY_SYN_WITHOUT_MPC


# -- MP_CAPABLE, server ------------------------------------------------------


def test_server_handshake_bytes_are_the_kernels():
    s = server()
    assert s.synack_option().emit() == SYNACK
    assert s.on_third_ack([THIRD]) is None
    assert s.fully_established and s.remote.key == CKEY and s.remote.token == 0x22C97822


@pytest.mark.parametrize("syn,ok", [
    (H("1e040101"), True),
    (H("1e040201"), True),  # a higher version on a SYN: answer v1
    (H("1e040121"), True),  # C flag
    (H("1e040181"), True),  # A flag
    (H("1e040100"), False),  # H clear
    (H("1e040141"), False),  # B set
    (H("1e0c0001dfefe678e0d6d2ad"), False),  # v0 SYN (carries a key)
    (None, False),
])
def test_server_syn_acceptance_as_probed(syn, ok):
    s = MpcServer.from_syn(key_material(SKEY), [] if syn is None else [syn])
    assert (s is not None) == ok
    if s is not None:
        assert s.synack_option().version == 1


def test_server_answers_a_flag_with_flags_01_but_uses_checksums():
    s = MpcServer.from_syn(key_material(SKEY), [H("1e040181")])
    assert s.synack_option().flags == 0x01 and s.csum
    s2 = server()
    s2.on_third_ack([H("1e1401810eae836aae29d673dfefe678e0d6d2ad")])  # A on the third ACK
    assert s2.csum


@pytest.mark.parametrize("third", [
    None,  # options stripped: MPCapableFallbackACK
    H("1e1401010eae836aae29d673dfefe678e0d6d2ae"),  # our key not echoed
    H("1e140101" "0000000000000000" "dfefe678e0d6d2ad"),  # zero peer key (syncookie rule)
    H("1e1402010eae836aae29d673dfefe678e0d6d2ad"),  # version 2 on a non-SYN
    H("1e0c0101dfefe678e0d6d2ad"),  # no receiver key
    H("1e08200100000001"),  # only a DSS (OoO data after a lost third ACK)
])
def test_server_falls_back_on_a_bad_third_ack(third):
    s = server()
    assert s.on_third_ack([] if third is None else [third]) is False
    assert s.fallback is Situation.THIRD_ACK_WITHOUT_MPC and not s.mptcp
    assert decide(s.fallback).action is Action.FALLBACK


def test_server_takes_the_implicit_mapping_of_mpc_with_data():
    s = server()
    opt = MpCapable(1, 0x01, CKEY, SKEY, 3000).emit()
    m = s.on_third_ack([opt], payload_len=1424)
    assert m == Mapping(key_material(CKEY).idsn + 1, 1, 3000)


def test_mpc_length_must_match_whether_the_segment_has_data():
    # options.c: 20 bytes on a pure ACK, 22 (24 with checksum) with data
    assert server().on_third_ack([THIRD], payload_len=100) is False
    s = server()
    assert s.on_third_ack([MpCapable(1, 0x01, CKEY, SKEY, 3000).emit()], payload_len=0) is False
    assert s.fallback is Situation.THIRD_ACK_WITHOUT_MPC


# -- MP_JOIN ------------------------------------------------------------------


def test_join_initiator_bytes_are_the_kernels():
    j = JoinInitiator(CKEY, SKEY, R_A, addr_id=1)
    assert j.syn_option().emit() == J_SYN
    assert j.on_synack([J_SYNACK]) and j.peer_addr_id == 1 and j.peer_nonce == R_B
    assert j.ack_option().emit() == J_ACK
    assert not j.established
    assert j.on_segment([J_4TH]) and j.established
    assert j.on_segment([], at_first_byte=False)  # established: anything goes


@pytest.mark.parametrize("opts,first", [([], True), ([J_4TH], False), ([ADD_ADDR], True)])
def test_join_initiator_resets_on_anything_but_the_fourth_ack(opts, first):
    j = JoinInitiator(CKEY, SKEY, R_A, addr_id=1)
    j.on_synack([J_SYNACK])
    assert not j.on_segment(opts, at_first_byte=first) and not j.established
    assert decide(j.failed, Context(mp_join=True)).action is Action.RESET
    assert not j.on_segment([J_4TH])  # stays failed


def test_join_responder_bytes_are_the_kernels():
    syn = JoinResponder.syn_join([J_SYN])
    assert syn.token == 0x9E8A2491 and syn.addr_id == 1
    r = JoinResponder.from_syn(syn, SKEY, CKEY, Script(R_B), addr_id=1)
    assert r.synack_option().emit() == J_SYNACK
    assert r.on_ack([J_ACK]) and r.established
    assert JoinResponder.fourth_ack(Dss(data_ack=0x18C4F937, data_ack_len=4)).emit() == J_4TH


def test_join_reference_vectors():
    # linux-mptcp-v1.md §1.2 synthetic example
    a, b = 0x0102030405060708, 0x1112131415161718
    r = JoinResponder.from_syn(MpJoin("syn", token=0xCCAD45AC, nonce=0x01020304), b, a,
                               Script(0x0A0B0C0D))
    assert r.synack_option().hmac == H("dfd01286724255b2")
    j = JoinInitiator(a, b, 0x01020304)
    assert j.on_synack(options_bytes([r.synack_option()]))
    assert j.ack_option().hmac == H("4c24d5137175aeb366a76ac23a3fd5a0648628d2")


def test_join_bad_hmacs_reset_the_subflow():
    j = JoinInitiator(CKEY, SKEY, R_A, addr_id=1)
    bad = bytearray(J_SYNACK)
    bad[5] ^= 1
    assert not j.on_synack([bytes(bad)]) and j.failed is Situation.JOIN_FAILURE
    r = JoinResponder.from_syn(JoinResponder.syn_join([J_SYN]), SKEY, CKEY, Script(R_B))
    bad = bytearray(J_ACK)
    bad[-1] ^= 1
    assert not r.on_ack([bytes(bad)]) and not r.established
    d = decide(r.failed, Context(mp_join=True))
    assert d.action is Action.RESET and d.rst_reason == RST_EMPTCP
    r2 = JoinResponder.from_syn(JoinResponder.syn_join([J_SYN]), SKEY, CKEY, Script(R_B))
    assert not r2.on_ack([])  # MPJ ACK missing: reset, never fallback
    assert decide(r2.failed, Context(mp_join=True)).action is Action.RESET


def test_join_refusals_carry_mp_tcprst_reasons():
    assert decide(Situation.JOIN_UNKNOWN_TOKEN).rst_reason == RST_EMPTCP  # probe: 1e048001
    assert decide(Situation.JOIN_OVER_LIMIT).rst_reason == RST_EPROHIBIT
    assert decide(Situation.FIRST_SEGMENT_WITHOUT_DSS, Context(mp_join=True)).action is \
        Action.RESET


def test_join_ack_retransmission_timer():
    assert JoinInitiator.ack_retransmit_timeout(None) == 1.0
    assert JoinInitiator.ack_retransmit_timeout(0.05) == 0.2
    assert JoinInitiator.ack_retransmit_timeout(0.3) == 0.6


def test_join_hold_is_bounded_and_releases_in_order():
    h = JoinHold(hold_time=0.5, per_token=2, capacity=3)
    assert h.hold(1, "a", 10.0) and h.hold(1, "b", 10.1)
    assert not h.hold(1, "c", 10.2)  # per token
    assert h.hold(2, "d", 10.2) and not h.hold(3, "e", 10.2)  # total
    assert h.next_deadline() == 10.5
    assert h.release(1) == ["a", "b"] and len(h) == 1
    assert h.expire(10.69) == [] and h.expire(10.7) == ["d"] and len(h) == 0


def test_parse_options_drops_malformed_options():
    opts = parse_options([H("1e0c01"), SYN, parse_mptcp(ECHO)])
    assert len(opts) == 2 and isinstance(opts[0], MpCapable)


# -- the pieces together: a whole connection as a dialogue of option bytes -----


def test_two_subflow_connection_dialogue_in_option_bytes():
    """Client and server built only from the building blocks exchange the
    option bytes each would put on the wire: MP_CAPABLE with data, DATA_ACKs,
    ADD_ADDR/echo, MP_JOIN with the token looked up in the server's registry,
    data on both subflows with a re-injection, and DATA_FIN both ways."""
    rng = random.Random(8684)
    creg, sreg = TokenRegistry(), TokenRegistry()
    ckm, skm = creg.allocate(rng), sreg.allocate(rng)

    def wire(opts):
        return [o.emit() for o in opts]

    # MP_CAPABLE handshake
    c = MpcClient(ckm)
    s = MpcServer.from_syn(skm, wire([c.syn_option()]))
    assert c.on_synack(wire([s.synack_option()]))
    assert s.on_third_ack(wire([c.third_ack_option()])) is None and s.fully_established
    sreg.bind(skm.token, "server-conn")

    # client data: the first mapping goes as MP_CAPABLE + data (no DATA_ACK yet)
    cs, sr = DataSender(ckm.idsn), DataReceiver(ckm.idsn + 1)
    ss, cr = DataSender(skm.idsn), DataReceiver(skm.idsn + 1)
    msg = bytes(rng.randrange(256) for _ in range(10_000))
    cs.write(msg)
    csf1, ssf1 = cs.subflow(1), ss.subflow(1)
    srx1, crx1 = SubflowReceiver(), SubflowReceiver()
    m, payload = cs.next_mapping(csf1, 4000)
    opt = c.data_option(m)
    assert opt is not None and opt.length == 22
    mapping = Mapping.from_mpc(parse_mptcp(opt.emit()), c.local.idsn)
    srx1.note(1, len(payload), mapping)
    sr.on_result(srx1.consume(payload, sr.rcv_nxt))
    assert sr.data_ack == ckm.idsn + 4001 and sr.use_64bit_ack  # MPC data: 64-bit acks

    # the server's ACK carries a DSS DATA_ACK: the client is fully established
    ack = ss.dss_for(ssf1, 1, 0, sr.data_ack, sr.use_64bit_ack)
    assert c.on_segment(wire([ack]), at_first_byte=True) and c.fully_established
    assert cs.on_data_ack(ack.data_ack, ack.data_ack_len == 8) == 4000

    # path managers: the server announces its second address, the client
    # echoes it and, the peer having acknowledged data, joins it
    cpm = PathManager(False, ["198.18.1.1"], "198.18.1.1", "198.18.1.2", 5202)
    spm = PathManager(True, ["198.18.1.2", "198.18.2.2"], "198.18.1.2", "198.18.1.1", 40000)
    cpm.on_fully_established(0.0)
    cpm.on_data_acked(0.0)
    (announce,) = spm.on_fully_established(0.0)
    add = add_addr_option(announce, skm.key, ckm.key).emit()
    ep = verify_add_addr(parse_mptcp(add), c.remote.key, c.local.key)
    echo, join = cpm.on_add_addr(ep, 0.1)
    assert isinstance(join, OpenSubflow) and join.remote.address == ip_address("198.18.2.2")
    echo_bytes = add_addr_option(echo, ckm.key, skm.key).emit()
    assert spm.on_add_addr_echo(verify_add_addr(parse_mptcp(echo_bytes), skm.key, ckm.key),
                                0.2) == []
    assert isinstance(announce, SendAddAddr)

    # MP_JOIN: token lookup, HMACs both ways, fourth ACK
    ji = JoinInitiator.start(ckm.key, c.remote.key, rng, addr_id=1)
    syn = JoinResponder.syn_join(wire([ji.syn_option()]))
    assert sreg.lookup(syn.token) == "server-conn" and spm.accept_join()
    jr = JoinResponder.from_syn(syn, skm.key, ckm.key, rng, addr_id=join.remote.addr_id)
    assert ji.on_synack(wire([jr.synack_option()]))
    assert jr.on_ack(wire([ji.ack_option()]))
    assert ji.on_segment(wire([JoinResponder.fourth_ack(sr.ack_dss())])) and ji.established

    # the rest of the data over both subflows; subflow 2 "fails" once and its
    # data is re-injected on subflow 1; then DATA_FIN
    csf2, srx2 = cs.subflow(2), SubflowReceiver()
    cs.shutdown()
    streams = {1: (csf1, srx1, bytearray(), 1 + 4000), 2: (csf2, srx2, bytearray(), 1)}
    turn = 2
    while cs.has_work():
        got = cs.next_mapping(streams[turn][0], 1500)
        streams[turn][2].extend(got[1])
        if turn == 2 and not cs.bytes_reinjected:
            cs.reinject(csf2)  # as if subflow 2 went stale
        turn = 3 - turn
    for sf_tx, sf_rx, buf, start in streams.values():
        pos = 0
        while pos < len(buf):
            n = min(1448, sf_tx.room(start + pos))
            d = cs.dss_for(sf_tx, start + pos, n, cr.data_ack, cr.use_64bit_ack)
            sf_rx.note(start + pos, n, parse_mptcp(d.emit()))
            res = sf_rx.consume(bytes(buf[pos:pos + n]), sr.rcv_nxt)
            assert res.error is None
            sr.on_result(res)
            pos += n
        fin = sf_rx.note(start + pos, 0, parse_mptcp(cs.dss_for(sf_tx, start + pos, 0).emit()))
        if fin is not None:
            sr.on_data_fin(fin.dsn, fin.dsn64)
    assert sr.read() == msg and sr.fin_received and sr.dup_bytes > 0
    cs.on_data_ack(sr.data_ack, True)
    assert cs.all_acked

    # the server answers and closes too
    ss.write(b"bye")
    ss.shutdown()
    m, payload = ss.next_mapping(ssf1, 100)
    d = ss.dss_for(ssf1, 1, 3, sr.data_ack, True)
    assert d.data_fin and d.dll == 4  # DATA_FIN folded into the last mapping
    crx1.note(1, 3, parse_mptcp(d.emit()))
    cr.on_result(crx1.consume(payload, cr.rcv_nxt))
    assert cr.read() == b"bye" and cr.eof
    ss.on_data_ack(cr.data_ack, cr.use_64bit_ack)
    assert ss.all_acked


# -- hostile traces (../shared/pcaps/external) ---------------------------------

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "pcaps" / "external"


def _options_of(name: str) -> list[tuple[int, list]]:
    path = EXTERNAL / name
    if not path.exists():
        pytest.skip(f"{path} missing")
    out = []
    with open_capture(path) as cap:
        for pkt in cap:
            ip = ip_payload(pkt)
            s = parse_segment(ip, verify_checksum=False)
            out.append((s.flags, [bytes(ip[o:o + n]) for o, n in s.mptcp_spans]))
    return out


def _answer_join_syn(opts, registry, hold, pm, now):
    """What the host does with an MP_JOIN SYN, using the building blocks:
    returns the MP_TCPRST reason of the RST it sends, or "held"/"accepted"."""
    syn = JoinResponder.syn_join(opts)
    owner = registry.lookup(syn.token)
    if owner is None:
        if syn.token in registry and hold.hold(syn.token, syn, now):
            return "held"
        return decide(Situation.JOIN_UNKNOWN_TOKEN).rst_reason
    if not pm.accept_join():
        return decide(Situation.JOIN_OVER_LIMIT).rst_reason
    return "accepted"


def test_join_syn_flood_leaves_no_state():
    pkts = _options_of("dpi-mptcp_flood-join-syn-flood.pcap")
    assert len(pkts) == 10_000
    reg, hold = TokenRegistry(), JoinHold()
    reg.allocate(random.Random(1), owner="conn")
    pm = PathManager(True, ["198.18.1.2"], "198.18.1.2", "198.18.1.1", 1)
    answers = [_answer_join_syn(opts, reg, hold, pm, 0.0) for _, opts in pkts]
    assert answers == [1] * 10_000  # RST + MP_TCPRST "MPTCP-specific error"
    assert len(reg) == 1 and len(hold) == 0 and pm.extra_subflows == 0


def test_join_syn_flood_with_a_valid_token_is_capped_by_the_pm_limit():
    pkts = _options_of("dpi-mptcp_flood-join-syn-flood.pcap")
    reg, hold = TokenRegistry(), JoinHold()
    km = reg.allocate(random.Random(1), owner="conn")
    pm = PathManager(True, ["198.18.1.2"], "198.18.1.2", "198.18.1.1", 1)
    answers = []
    for _, opts in pkts:
        syn = JoinResponder.syn_join(opts)
        syn.token = km.token  # the attacker knows the token
        answers.append(_answer_join_syn([syn], reg, hold, pm, 0.0))
    assert answers[:2] == ["accepted"] * 2 and set(answers[2:]) == {RST_EPROHIBIT}


def test_join_syn_flood_for_a_connection_still_starting_is_held_boundedly():
    pkts = _options_of("dpi-mptcp_flood-join-syn-flood.pcap")
    reg, hold = TokenRegistry(), JoinHold(per_token=4, capacity=64)
    km = reg.allocate(random.Random(1))  # allocated, third ACK not seen yet
    pm = PathManager(True, ["198.18.1.2"], "198.18.1.2", "198.18.1.1", 1)
    answers = []
    for _, opts in pkts[:1000]:
        syn = JoinResponder.syn_join(opts)
        syn.token = km.token
        answers.append(_answer_join_syn([syn], reg, hold, pm, 0.0))
    assert answers.count("held") == 4 and answers.count(1) == 996 and len(hold) == 4
    assert len(hold.expire(1.0)) == 4 and len(hold) == 0


def test_join_with_a_bad_token_is_refused():
    pkts = _options_of("dpi-mptcp_mod_tok-join-bad-token.pcap")
    reg = TokenRegistry()
    syn_flags, syn_opts = pkts[0]
    server_side = MpcServer.from_syn(reg.allocate(random.Random(3)), syn_opts)
    assert server_side is None  # a v0 MP_CAPABLE: answered as plain TCP
    assert _answer_join_syn(pkts[3][1], reg, JoinHold(), server(), 0.0) == RST_EMPTCP


def test_keys_changed_in_the_third_ack_mean_fallback():
    pkts = _options_of("dpi-mptcp_mp_key_change.pcap")
    assert MpcServer.from_syn(key_material(SKEY), pkts[0][1]) is None  # v0
    # the same attack on v1: the third ACK echoes a different server key
    s = server()
    bad = MpCapable(1, 0x01, CKEY + 20, SKEY - 42).emit()
    assert s.on_third_ack([bad]) is False and s.fallback is Situation.THIRD_ACK_WITHOUT_MPC


def test_add_addr_without_hmac_or_id_reuse_is_not_used():
    pkts = _options_of("dpi-mptcp_wrongAdd_Addr.pcap")
    adds = [parse_mptcp(o) for _, opts in pkts for o in opts if o[2] >> 4 == 3]
    assert [a.addr_id for a in adds] == [2, 2]
    assert all(verify_add_addr(a, SKEY, CKEY) is None for a in adds)  # v0: no HMAC


# -- through the real TCP engine's `upper` hook --------------------------------


class _Upper:
    """One end of a single-subflow MPTCP connection: the building blocks glued
    to a real ``TcpConnection`` through its ``upper`` hook (on_options /
    write_options), the way docs/MPTCP-DESIGN.md describes it."""

    def __init__(self, km, server: bool) -> None:
        self.km, self.server = km, server
        self.hs = None if server else MpcClient(km)
        self.tx = self.dr = self.sf = None
        self.rx = SubflowReceiver()

    def _ready(self) -> None:
        self.tx = DataSender(self.km.idsn, initial_window=64000)
        self.dr = DataReceiver(self.hs.remote.idsn + 1)
        self.sf = self.tx.subflow(1)

    def on_options(self, conn, seg) -> None:
        opts = parse_options(seg.mptcp)
        rel = (seg.seq - conn.irs) & 0xFFFFFFFF
        if self.server:
            if seg.flags & F_SYN and not seg.flags & F_ACK:
                self.hs = MpcServer.from_syn(self.km, opts)
                return
            if self.tx is None:  # the segment completing the handshake
                m = self.hs.on_third_ack(opts, len(seg.payload))
                assert m is not False
                self._ready()
                if m is not None:
                    self.rx.note(rel, len(seg.payload), m)
                return
        else:
            if seg.flags & F_SYN:
                assert self.hs.on_synack(opts)
                self._ready()
                return
            assert self.hs.on_segment(opts, rel == 1)
        for o in opts:
            if isinstance(o, Dss):
                if o.data_ack_len:
                    self.tx.on_data_ack(o.data_ack, o.data_ack_len == 8, conn.snd_wnd)
                fin = self.rx.note(rel, len(seg.payload), o)
                if fin is not None:
                    self.dr.on_data_fin(fin.dsn, fin.dsn64)
            elif isinstance(o, MpCapable) and o.data_len is not None:
                self.rx.note(rel, len(seg.payload), Mapping.from_mpc(o, self.hs.remote.idsn))

    def write_options(self, conn, seg) -> tuple[bytes, ...]:
        if seg.flags & F_SYN:
            opt = self.hs.synack_option() if self.server else self.hs.syn_option()
            return (opt.emit(),)
        rel = (seg.seq - conn.iss) & 0xFFFFFFFF
        if not self.server:
            m = self.sf.mapping_at(rel) if seg.payload else None
            mpc = self.hs.option_for(rel, m)
            if mpc is not None:  # third ACK, or MP_CAPABLE with the first data
                return (mpc.emit(),)
        d = self.tx.dss_for(self.sf, rel, len(seg.payload), self.dr.data_ack,
                            self.dr.use_64bit_ack)
        return (d.emit(),)

    def pump(self, conn, now) -> None:
        """Scheduler of one subflow: mappings of one effective MSS each."""
        while self.tx is not None and conn.send_space >= conn.effective_mss:
            got = self.tx.next_mapping(self.sf, conn.effective_mss)
            if got is None:
                break
            conn.send(got[1], now)

    def drain(self, conn) -> None:
        data = conn.recv(1 << 20)
        if data and self.dr is not None:
            res = self.rx.consume(data, self.dr.rcv_nxt)
            assert res.error is None
            self.dr.on_result(res)


def test_single_subflow_mptcp_over_the_tcp_engine():
    rng = random.Random(1)
    cfg = TcpConfig(mss=1460, rcvbuf=64000, sndbuf=64000, timestamps=False, sack=False,
                    window_scaling=False, nodelay=True)
    c_addr, s_addr = (ip_address("198.18.1.1"), 40000), (ip_address("198.18.1.2"), 5202)
    cu, su = _Upper(key_material(rng.getrandbits(64)), False), _Upper(
        key_material(rng.getrandbits(64)), True)
    c = TcpConnection.connect(cfg, c_addr, s_addr, 1000, 0.0, upper=cu)
    c.reserved_option_bytes = 28  # DSS with 64-bit ACK and DSN (+2 padding)
    (syn,) = c.poll_transmit(0.0)
    assert syn.mptcp == (bytes.fromhex("1e040101"),)
    s = TcpConnection.accept_syn(cfg, s_addr, c_addr, syn, 5000, 0.0, upper=su)
    s.reserved_option_bytes = 28
    msg_c = bytes(rng.randrange(256) for _ in range(20_000))
    msg_s = bytes(rng.randrange(256) for _ in range(7_000))
    now, sent = 0.0, False
    wire_log: list = []
    for _ in range(200):
        now += 0.001
        if cu.tx is not None and not sent:
            cu.tx.write(msg_c)
            cu.tx.shutdown()
            sent = True
        if su.tx is not None and su.tx.fin_dsn is None and su.dr.fin_received:
            su.tx.write(msg_s)
            su.tx.shutdown()
        for up, a, b in ((cu, c, s), (su, s, c)):
            up.pump(a, now)
            for seg in a.poll_transmit(now):
                wire_log.append((a is s, seg.flags, list(parse_options(seg.mptcp))))
                b.on_segment(seg, now)
                (su if b is s else cu).drain(b)
        if su.tx is not None and su.tx.fin_dsn is not None and su.tx.all_acked \
                and cu.tx.all_acked:
            break
    assert cu.hs.fully_established and su.hs.fully_established
    assert su.dr.read() == msg_c and su.dr.fin_received
    assert cu.dr.read() == msg_s and cu.dr.fin_received
    assert cu.tx.all_acked and su.tx.all_acked
    # what a kernel peer insists on (linux-mptcp-v1.md §2.1): every server
    # segment after the SYN/ACK carries a DSS DATA_ACK; the client's first
    # segments carry MP_CAPABLE, never a DSS, until it saw one
    server_segs = [opts for srv, flags, opts in wire_log if srv and not flags & F_SYN]
    assert server_segs and all(
        len(o) == 1 and isinstance(o[0], Dss) and o[0].data_ack_len for o in server_segs)
    client = [opts[0] for srv, flags, opts in wire_log if not srv and not flags & F_SYN]
    assert isinstance(client[0], MpCapable) and client[0].data_len == 1432  # seq ISN+1
    first_dss = next(i for i, o in enumerate(client) if isinstance(o, Dss))
    assert all(isinstance(o, Dss) for o in client[first_dss:])  # no loss: no MPC repeats


def test_client_option_for_follows_the_kernels_isn_plus_one_rule():
    c = client()
    c.on_synack([SYNACK])
    m = Mapping(c.local.idsn + 1, 1, 100)
    assert c.option_for(1, None).emit() == THIRD  # third ACK (and its repeats)
    assert c.option_for(1, m).length == 22  # first data
    assert c.option_for(101, None) is None and c.option_for(101, Mapping(7, 101, 5)) is None
    c.on_segment([J_4TH], True)  # any DSS DATA_ACK
    assert c.option_for(1, m) is None
