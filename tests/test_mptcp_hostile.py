"""Hostile input at the host's receive path (issue 4): the crafted traces of
``../shared/pcaps/external/`` (SOURCES.md) and hand-built v1 variants of
them leave bounded state and get the answer Linux gives."""

from __future__ import annotations

import random
from ipaddress import ip_address
from pathlib import Path

import pytest
from mptcp_topology import Exchange, payload, two_hosts

from stack.host import HostCore
from stack.host.packetize import build_frame, parse_segment, to_tcp_segment
from stack.mptcp.crypto import key_token_v1
from stack.mptcp.handshake import parse_options
from stack.mptcp.pm import Endpoint, SendAddAddr, add_addr_option
from stack.tcp.segment import ACK, RST, SYN, TcpSegment
from stack.trace.pcap import ip_payload, open_capture
from stack.wire.mptcp import AddAddr, Dss, MpCapable, MpJoin, MpTcpRst

PCAPS = Path(__file__).resolve().parents[2] / "shared" / "pcaps" / "external"


def _trace(name: str) -> list[bytes]:
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    with open_capture(path) as cap:
        return [p for p in (ip_payload(pkt) for pkt in cap) if p]


def _server(addr: str, port: int = 80) -> HostCore:
    h = HostCore(random.Random(3), name="srv", mptcp=True)
    plen = 64 if ":" in addr else 24
    h.add_interface("eth0", 1500, [f"{addr}/{plen}"])
    h.add_route("::/0" if ":" in addr else "0.0.0.0/0", "eth0")
    h.listen(None, port)
    return h


def _out(h: HostCore) -> list[TcpSegment]:
    segs = []
    for _, frame in h.transmit():
        p = parse_segment(frame.data, False)
        segs.append(to_tcp_segment(p, frame.data))
    return segs


def _to(h: HostCore, pkt: bytes, now: float = 0.0) -> list[TcpSegment]:
    h.receive(pkt, "eth0", now, checksum_verified=True)
    return _out(h)


def _fix_ip_checksum(pkt: bytes) -> bytes:
    from stack.wire.checksum import internet_checksum

    b = bytearray(pkt)
    ihl = (b[0] & 0x0F) * 4
    b[10:12] = b"\x00\x00"
    b[10:12] = internet_checksum(bytes(b[:ihl])).to_bytes(2, "big")
    return bytes(b)


def test_join_with_an_unknown_token_gets_rst_with_mp_tcprst_and_no_state() -> None:
    pkts = _trace("dpi-mptcp_mod_tok-join-bad-token.pcap")
    h = _server("104.131.14.231")
    # as crafted, the spoofed SYN's IPv4 header checksum is stale: dropped
    _to(h, pkts[3])
    assert h.stats["bad_ip_checksum"] == 1 and len(h.table) == 0
    join = _fix_ip_checksum(pkts[3])
    assert any(isinstance(o, MpJoin) for o in
               parse_options(to_tcp_segment(parse_segment(join, False), join).mptcp))
    (rst,) = _to(h, join)
    # the kernel's answer (reference §5 [probe]): RST/ACK + MP_TCPRST 1e048001
    assert rst.flags == RST | ACK and rst.mptcp == (bytes.fromhex("1e048001"),)
    assert len(h.table) == 0 and len(h.join_hold) == 0 and len(h.tokens) == 0
    assert h.stats["mptcp_join_no_token"] == 1
    # the v0 MP_CAPABLE SYN of the same trace is answered as plain TCP
    (synack,) = _to(h, pkts[0])
    assert synack.flags == SYN | ACK and synack.mptcp == ()


def test_join_syn_flood_leaves_no_state() -> None:
    pkts = _trace("dpi-mptcp_flood-join-syn-flood.pcap")
    assert len(pkts) == 10_000
    h = _server("2604:a880:800:10::74:c001")
    rsts = 0
    for i, pkt in enumerate(pkts):
        h.receive(pkt, "eth0", i * 1e-6, checksum_verified=True)
        if i % 1000 == 999:
            rsts += len(h.transmit())
            assert len(h.table) == 0 and len(h.join_hold) == 0
    rsts += len(h.transmit())
    assert rsts == 10_000 and h.stats["mptcp_join_no_token"] == 10_000
    assert len(h.table) == 0 and len(h.tokens) == 0 and len(h.mptcp_conns) == 0


def _mpc_syn(sport: int, seq: int = 1000) -> bytes:
    syn = TcpSegment(sport, 80, seq, 0, SYN, 65535, mss=1460, sack_permitted=True,
                     mptcp=(MpCapable(1, 0x01).emit(),))
    return build_frame(syn, ip_address("198.18.0.1").packed,
                       ip_address("198.18.0.2").packed).data


def _ack(sport: int, seq: int, ack: int, opts: tuple[bytes, ...], payload_: bytes = b"") -> bytes:
    seg = TcpSegment(sport, 80, seq, ack, ACK, 65535, mptcp=opts, payload=payload_)
    return build_frame(seg, ip_address("198.18.0.1").packed,
                       ip_address("198.18.0.2").packed).data


def test_keys_changing_in_the_third_ack_fall_back_to_tcp() -> None:
    # the v0 trace: keys +20/-42 in the third ACK; v0 is plain TCP for us
    pkts = _trace("dpi-mptcp_mp_key_change.pcap")
    h6 = _server("2604:a880:800:10::74:c001")
    for pkt in pkts:
        h6.receive(pkt, "eth0", 0.0, checksum_verified=True)
    assert all(not s.mptcp for s in _out(h6))
    # the same with v1: the third ACK echoes a key that is not ours
    h = _server("198.18.0.2")
    (synack,) = _to(h, _mpc_syn(40000))
    (mpc,) = parse_options(synack.mptcp)
    skey = mpc.sender_key
    bad = MpCapable(1, 0x01, 0x1122334455667788, (skey - 42) % 2**64).emit()
    out = _to(h, _ack(40000, 1001, synack.seq + 1, (bad,), b"GET /"), 0.01)
    (mp,) = h.mptcp_conns
    info = mp.mptcp_info()
    assert info["mptcp"] is False and info["fallback_reason"] == "third_ack_without_mpc"
    assert all(not s.mptcp for s in out)  # plain TCP from then on
    assert mp.recv(100) == b"GET /"
    # and the token of the failed MPTCP attempt is never joinable
    assert h.tokens.lookup(key_token_v1(skey)) is None


def test_good_third_ack_then_join_held_until_established() -> None:
    h = _server("198.18.0.2")
    (synack,) = _to(h, _mpc_syn(40001))
    skey = parse_options(synack.mptcp)[0].sender_key
    token = key_token_v1(skey)
    # a join for this token arrives before the third ACK (another path)
    join = TcpSegment(40002, 80, 5000, 0, SYN, 65535, mss=1460,
                      mptcp=(MpJoin("syn", False, 1, token=token, nonce=0x01020304).emit(),))
    pkt = build_frame(join, ip_address("198.18.0.3").packed,
                      ip_address("198.18.0.2").packed).data
    assert _to(h, pkt) == [] and len(h.join_hold) == 1  # held, not refused
    # more SYNs for that token are bounded (JoinHold.per_token)
    for i in range(100):
        j = TcpSegment(41000 + i, 80, 5000, 0, SYN, 65535,
                       mptcp=(MpJoin("syn", False, 1, token=token, nonce=i + 1).emit(),))
        h.receive(build_frame(j, ip_address("198.18.0.3").packed,
                              ip_address("198.18.0.2").packed).data, "eth0", 0.001)
    out = _out(h)
    assert len(h.join_hold) == h.join_hold.per_token
    assert all(s.flags & RST and MpTcpRst(0, 1).emit() in s.mptcp for s in out)
    # the third ACK: connection established, the held join answered
    ckey = 0x0102030405060708
    third = MpCapable(1, 0x01, ckey, skey).emit()
    out = _to(h, _ack(40001, 1001, synack.seq + 1, (third,)), 0.01)
    synacks = [s for s in out if s.flags == SYN | ACK]
    refused = [s for s in out if s.flags & RST]
    # within the path manager's limit (2 extra subflows, as the kernel's
    # default); the others: MP_TCPRST "administratively prohibited"
    assert len(synacks) == 2 and len(refused) == h.join_hold.per_token - 2
    assert all(isinstance(parse_options(s.mptcp)[0], MpJoin) for s in synacks)
    assert all(MpTcpRst(0, 3).emit() in s.mptcp for s in refused)
    assert len(h.join_hold) == 0
    # the established connection's first segment carries a DSS DATA_ACK
    dss = [s for s in out if s.dport == 40001]
    assert dss and isinstance(parse_options(dss[0].mptcp)[0], Dss)


def test_hold_expires_with_rst() -> None:
    h = _server("198.18.0.2")
    (synack,) = _to(h, _mpc_syn(40005))
    token = key_token_v1(parse_options(synack.mptcp)[0].sender_key)
    j = TcpSegment(42000, 80, 5000, 0, SYN, 65535,
                   mptcp=(MpJoin("syn", False, 1, token=token, nonce=9).emit(),))
    h.receive(build_frame(j, ip_address("198.18.0.1").packed,
                          ip_address("198.18.0.2").packed).data, "eth0", 0.0)
    assert _out(h) == [] and len(h.join_hold) == 1
    deadline = h.next_deadline()
    assert deadline is not None and deadline <= 1.0
    h.on_timer(1.0)
    out = [s for s in _out(h) if s.dport == 42000]
    assert len(out) == 1 and out[0].flags & RST and len(h.join_hold) == 0


def test_add_addr_id_reused_for_another_address() -> None:
    # the v0 trace: two ADD_ADDR id 2 for .57 and .58 -- v0, ignored by us
    pkts = _trace("dpi-mptcp_wrongAdd_Addr.pcap")
    h6 = _server("2604:a880:800:10::74:c001")
    for pkt in pkts:
        h6.receive(pkt, "eth0", 0.0, checksum_verified=True)
    assert len(h6.mptcp_conns) == 0
    # v1: the server announces id 5 twice, for two addresses (valid HMACs)
    t = two_hosts(1)
    x = Exchange(t, payload(200_000), b"")
    t.net.run_until(lambda: x.peer is not None and x.conn.pm is not None
                    and x.conn.pm.data_acked, timeout=5, on_step=x.step)
    srv, cli = x.peer, x.conn
    sf = srv.subflows[0]
    for addr in ("10.9.0.1", "10.9.0.2"):
        ep = Endpoint(5, ip_address(addr))
        sf.signals.append(add_addr_option(SendAddAddr(ep), srv.km.key, srv.peer.key))
    sf.conn.request_ack()
    t.s.wake(srv, t.net.now)
    assert x.run(30)
    assert cli.pm.remote_addrs[5].address == ip_address("10.9.0.1")
    assert cli.pm.rejected_announcements == 1
    assert cli.stats["add_addr_rx"] == 2  # both valid, both echoed
    assert cli.stats["add_addr_echo_tx"] == 2


def test_add_addr_with_a_bad_hmac_is_dropped_not_echoed() -> None:
    t = two_hosts(1)
    x = Exchange(t, payload(100_000), b"")
    t.net.run_until(lambda: x.peer is not None and x.conn.established, timeout=5,
                    on_step=x.step)
    srv = x.peer
    sf = srv.subflows[0]
    sf.signals.append(AddAddr(1, False, 7, ip_address("10.7.0.1"), None, b"\x00" * 8))
    sf.conn.request_ack()
    t.s.wake(srv, t.net.now)
    assert x.run(30)
    assert x.conn.stats["add_addr_dropped"] == 1 and x.conn.stats["add_addr_echo_tx"] == 0
