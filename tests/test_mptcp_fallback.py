"""Fallback to plain TCP where RFC 8684 §3.7 and Linux do it (reference
§2.2), in virtual time; a fallen-back connection keeps working as TCP."""

from __future__ import annotations

from mptcp_topology import Exchange, payload, tcp_flags, two_hosts

from stack.mptcp.connection import MptcpConfig
from stack.tcp import TcpConnection
from stack.tcp.segment import ACK, SYN


def _intact(x: Exchange, up: bytes, down: bytes) -> None:
    assert x.run(60), (x.conn, x.peer)
    assert x.failed() is None
    assert x.received_up == up and x.received_down == down


def test_server_without_mptcp() -> None:
    t = two_hosts(1, s_mptcp=False)
    up, down = payload(500_000, 1), payload(200_000, 2)
    x = Exchange(t, up, down)
    _intact(x, up, down)
    assert isinstance(x.peer, TcpConnection)  # the server is plain TCP
    info = x.conn.mptcp_info()
    assert info["mptcp"] is False and info["fallback_reason"] == "synack_without_mpc"


def test_client_without_mptcp_to_an_mptcp_listener() -> None:
    t = two_hosts(1, c_mptcp=False)
    up, down = payload(300_000, 3), payload(100_000, 4)
    x = Exchange(t, up, down)
    _intact(x, up, down)
    # a SYN without MP_CAPABLE to an MPTCP listener is plain TCP (as Linux)
    assert isinstance(x.conn, TcpConnection) and isinstance(x.peer, TcpConnection)
    assert t.s.stats["passive_open"] == 1 and not t.s.mptcp_conns
    assert len(t.s.tokens) == 0  # no token reserved for a plain connection


def test_options_stripped_on_the_synack() -> None:
    syn_ack = SYN | ACK
    t = two_hosts(1, strip_ba=lambda pkt: tcp_flags(pkt) & syn_ack == syn_ack)
    up, down = payload(400_000, 5), payload(400_000, 6)
    x = Exchange(t, up, down)
    _intact(x, up, down)
    ci, si = x.conn.mptcp_info(), x.peer.mptcp_info()
    assert ci["mptcp"] is False and ci["fallback_reason"] == "synack_without_mpc"
    # the server saw no MP_CAPABLE on the third ACK (MPCapableFallbackACK)
    assert si["mptcp"] is False and si["fallback_reason"] == "third_ack_without_mpc"
    assert t.links[0][1].stripped == 1


def test_options_stripped_after_the_syn() -> None:
    t = two_hosts(1, strip_ab=lambda pkt: not tcp_flags(pkt) & SYN)
    up, down = payload(400_000, 7), payload(400_000, 8)
    x = Exchange(t, up, down)
    _intact(x, up, down)
    ci, si = x.conn.mptcp_info(), x.peer.mptcp_info()
    assert si["mptcp"] is False and si["fallback_reason"] == "third_ack_without_mpc"
    # the server's first segment had no DSS: the client falls back too
    # (MPCapableDataFallback)
    assert ci["mptcp"] is False and ci["fallback_reason"] == "first_segment_without_dss"


def test_mpc_syns_dropped_then_retried_without_mp_capable() -> None:
    drops = []
    t = two_hosts(1)
    link = t.links[0][0]
    orig = link.send

    def send(frame, now):
        data = frame.data if hasattr(frame, "data") else frame
        if tcp_flags(data) == SYN and b"\x1e\x04\x01\x01" in data[20:]:
            drops.append(now)
            return []
        return orig(frame, now)

    link.send = send  # a middlebox dropping SYNs with MP_CAPABLE
    up = payload(100_000, 9)
    x = Exchange(t, up, b"ok")
    _intact(x, up, b"ok")
    # net.mptcp.syn_retrans_before_tcp_fallback = 2: SYN + 2 retries with MPC
    assert len(drops) == 3
    assert x.conn.mptcp_info()["fallback_reason"] == "mpc_syn_timeout"
    assert isinstance(x.peer, TcpConnection)


def test_checksum_and_fallback_config_are_per_host() -> None:
    cfg = MptcpConfig(checksum=True, syn_retrans_before_tcp_fallback=0)
    t = two_hosts(1, s_cfg=cfg)
    up = payload(200_000, 10)
    x = Exchange(t, up, b"")
    _intact(x, up, b"")
    # the server asked for checksums in its SYN/ACK: both ends use them
    assert x.conn.mptcp_info()["checksum"] and x.peer.mptcp_info()["checksum"]
