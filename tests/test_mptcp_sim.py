"""MPTCP end to end between two hosts in virtual time (RFC 8684): one and
several subflows, loss, a path cut, DSS checksums, IPv6."""

from __future__ import annotations

import pytest
from mptcp_topology import Exchange, payload, two_hosts

from stack.mptcp.connection import MptcpConfig
from stack.tcp.state import TcpState


@pytest.mark.parametrize("csum", [False, True])
def test_single_subflow_5mb_each_way(csum: bool) -> None:
    t = two_hosts(1, c_cfg=MptcpConfig(checksum=csum), c_mptcp=True)
    up, down = payload(5_000_000, 1), payload(5_000_000, 2)
    x = Exchange(t, up, down)
    assert x.run(60)
    assert x.failed() is None
    assert x.received_up == up and x.received_down == down
    ci, si = x.conn.mptcp_info(), x.peer.mptcp_info()
    assert ci["mptcp"] and si["mptcp"] and not ci["fallback"]
    # checksums are on for both ends when the client asks (A flag, §3.1)
    assert ci["checksum"] is csum and si["checksum"] is csum
    assert ci["token"] == si["remote_token"] and si["token"] == ci["remote_token"]
    assert len(ci["subflows"]) == 1
    assert ci["subflows"][0]["bytes_sent"] == 5_000_000
    # both DATA_FINs acknowledged, then TCP FIN on the subflow (reference §2.4)
    assert x.conn.state is TcpState.TIME_WAIT or x.conn.state is TcpState.CLOSED
    assert x.conn.fin_acked and x.peer.fin_acked
    assert ci["subflows"][0]["close_reason"] in ("mptcp_closed", "peer_fin")


def test_ipv6_single_path() -> None:
    t = two_hosts(1, v6=True)
    up = payload(300_000, 3)
    x = Exchange(t, up, b"reply", server_addr="fd00:1::2")
    assert x.run(30)
    assert x.received_up == up and x.received_down == b"reply"
    assert x.conn.mptcp_info()["subflows"][0]["remote"] == "[fd00:1::2]:5001"


def test_two_paths_one_percent_loss_uses_every_subflow() -> None:
    t = two_hosts(2, loss=0.01, seed=3)
    up, down = payload(3_000_000, 4), payload(3_000_000, 5)
    x = Exchange(t, up, down)
    assert x.run(120)
    assert x.received_up == up and x.received_down == down
    ci, si = x.conn.mptcp_info(), x.peer.mptcp_info()
    # initial subflow + join from the second local address + join to the
    # server's announced address (ADD_ADDR, echoed)
    assert len(ci["subflows"]) == 3
    assert ci["stats"]["add_addr_rx"] == 1 and si["stats"]["add_addr_tx"] == 1
    assert ci["stats"]["add_addr_echo_tx"] == 1
    assert si["stats"]["joins_established"] == 2
    for rec in ci["subflows"]:
        assert rec["bytes_sent"] > 300_000 and rec["bytes_received"] > 300_000
    locals_ = {r["local"].split(":")[0] for r in ci["subflows"]}
    assert locals_ == {"10.1.0.1", "10.2.0.1"}


def test_path_cut_mid_transfer_reinjects_and_completes() -> None:
    t = two_hosts(2, seed=4)
    up, down = payload(5_000_000, 6), payload(5_000_000, 8)
    x = Exchange(t, up, down)
    t.net.call_at(0.15, lambda now: t.cut(2))
    assert x.run(120)
    assert x.failed() is None
    assert x.received_up == up and x.received_down == down
    ci, si = x.conn.mptcp_info(), x.peer.mptcp_info()
    on_path2 = [r for r in ci["subflows"] if r["local"].startswith("10.2.")]
    assert len(on_path2) == 2 and all(r["stale"] for r in on_path2)
    # stale after stale_loss_cnt RTOs, and their data re-sent on path 1
    assert ci["stats"]["stale"] == 2 and ci["reinjected"] > 0 and si["reinjected"] > 0
    path1 = [r for r in ci["subflows"] if r["local"].startswith("10.1.")][0]
    assert not path1["stale"]


def test_ipv4_and_ipv6_subflows_in_one_connection() -> None:
    # the server announces its other addresses, IPv6 ones included; with
    # room for three extra subflows the client joins across families
    from stack.mptcp.pm import PmLimits

    cfg = MptcpConfig(limits=PmLimits(subflows=3, add_addr_accepted=3,
                                      join_from_local_addrs=False))
    t = two_hosts(2, v6=True, c_cfg=cfg, s_cfg=cfg)
    up = payload(2_000_000, 13)
    x = Exchange(t, up, b"done")
    assert x.run(60)
    assert x.received_up == up
    subs = x.conn.mptcp_info()["subflows"]
    remotes = {s["remote"].rsplit(":", 1)[0] for s in subs}
    assert "10.1.0.2" in remotes and "10.2.0.2" in remotes
    assert any(r.startswith("[fd00:") for r in remotes), remotes
    assert all(s["closed_at"] is not None and s["close_reason"] for s in subs)
