"""Issue 4 acceptance audit: reproductions of the gaps found in review, each
driven through the host like the wire (virtual time, no root needed).

- An IPv6 ADD_ADDR with a port and its HMAC (30 bytes) does not fit next to
  timestamps (12 bytes) in the 40-byte option space: it goes on a pure ACK
  without timestamps (Linux add_addr_v6_port_drop_ts), never an exception
  out of the host.
- MP_FAIL that gets no answer (neither MP_FAIL nor the infinite mapping):
  the subflow is reset with MP_TCPRST EMIDDLEBOX after 120 s (kernel
  ``mptcp_mp_fail_no_response``, TCP_RTO_MAX).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address

from mptcp_topology import Exchange, payload, two_hosts

from stack.host.packetize import gso_split, parse_segment, to_tcp_segment
from stack.mptcp.connection import MptcpConfig
from stack.mptcp.fallback import MP_FAIL_TIMEOUT, RST_EMIDDLEBOX
from stack.mptcp.handshake import parse_options
from stack.mptcp.pm import Endpoint, SendAddAddr
from stack.tcp.segment import RST, SYN
from stack.wire.mptcp import AddAddr, Dss, MpFail, MpJoin, MpTcpRst


@dataclass
class Pkt:
    t: float
    host: str
    flags: int
    plen: int
    ts: tuple[int, int] | None
    olen: int
    opts: list


def capture(topo) -> list[Pkt]:
    out: list[Pkt] = []

    def tap(now, host, iface, frame) -> None:
        for d in gso_split(frame) if frame.gso_size else [frame.data]:
            p = parse_segment(d, False)
            seg = to_tcp_segment(p, d)
            ihl = 40 if d[0] >> 4 == 6 else (d[0] & 0x0F) * 4
            olen = (d[ihl + 12] >> 4) * 4 - 20
            out.append(Pkt(now, host.name, seg.flags, len(seg.payload), seg.ts, olen,
                           parse_options(seg.mptcp)))

    topo.net.taps.append(tap)
    return out


def test_ipv6_add_addr_with_port_drops_timestamps_instead_of_raising() -> None:
    t = two_hosts(2, v6=True)
    wire = capture(t)
    up = payload(2_000_000, 41)
    x = Exchange(t, up, b"", server_addr="fd00:1::2")
    net = t.net
    # run until the server side is fully established and has data
    assert net.run_until(lambda: x.peer is not None and x.n_up > 100_000, timeout=30,
                         on_step=x.step)
    ep = Endpoint(9, ip_address("fd00:2::2"), 6000)
    x.peer.queue_actions([SendAddAddr(ep)])
    t.s.wake(x.peer, net.now)
    assert x.run(60), (x.conn, x.peer)  # no ValueError out of packetize
    assert x.received_up == up
    ann = [p for p in wire if p.host == "s" and p.opts and isinstance(p.opts[0], AddAddr)
           and p.opts[0].port == 6000]
    assert ann, "the IPv6 ADD_ADDR with port was never sent"
    a = ann[0]
    assert str(a.opts[0].address) == "fd00:2::2" and a.opts[0].hmac is not None
    assert a.ts is None and a.plen == 0 and len(a.opts) == 1 and a.olen <= 40
    # every other segment kept its timestamps
    assert all(p.ts is not None for p in wire if p not in ann and not p.flags & RST)
    assert x.peer.mptcp_info()["stats"]["ts_dropped_for_option"] >= 1
    # the client echoed it (HMAC checked)
    echo = [p for p in wire if p.host == "c" and p.opts and isinstance(p.opts[0], AddAddr)
            and p.opts[0].echo and p.opts[0].port == 6000]
    assert echo


def _corrupt_once(link, after: float, hit: list) -> None:
    orig = link.send

    def corrupt(frame, now):
        out = orig(frame, now)
        fixed = []
        for when, pkt, verified in out:
            ihl = (pkt[0] & 0x0F) * 4
            doff = (pkt[ihl + 12] >> 4) * 4
            if not hit and len(pkt) > ihl + doff + 100 and now > after:
                b = bytearray(pkt)
                b[ihl + doff + 50] ^= 0xFF
                pkt = _fix_tcp_checksum(bytes(b))
                hit.append(now)
            fixed.append((when, pkt, verified))
        return fixed

    link.send = corrupt


def _fix_tcp_checksum(pkt: bytes) -> bytes:
    from stack.wire.checksum import pseudo_sum_v4, tcp_checksum

    b = bytearray(pkt)
    ihl = (b[0] & 0x0F) * 4
    total = int.from_bytes(b[2:4], "big")
    b[ihl + 16:ihl + 18] = b"\x00\x00"
    pseudo = pseudo_sum_v4(bytes(b[12:16]), bytes(b[16:20]), 6, total - ihl)
    b[ihl + 16:ihl + 18] = tcp_checksum(pseudo, bytes(b[ihl:])).to_bytes(2, "big")
    return bytes(b)


def test_unanswered_mp_fail_resets_the_subflow_after_120_s() -> None:
    """The sender never answers our MP_FAIL (a peer that ignores it): after
    MP_FAIL_TIMEOUT the receiver resets the subflow with MP_TCPRST
    EMIDDLEBOX, and not before."""
    # slow path so that the transfer is still running at 120 s
    t = two_hosts(1, rate=100e3, c_cfg=MptcpConfig(checksum=True))
    wire = capture(t)
    hit: list[float] = []
    _corrupt_once(t.links[0][0], 0.5, hit)
    up = payload(3_000_000, 5)
    x = Exchange(t, up, b"")
    net = t.net
    assert net.run_until(lambda: x.peer is not None, timeout=5, on_step=x.step)
    x.conn.on_mp_fail = lambda sf, dsn: None  # the peer ignores MP_FAIL
    net.run_until(lambda: x.failed() is not None, timeout=200, on_step=x.step)
    assert hit
    fails = [p for p in wire if p.host == "s" and any(isinstance(o, MpFail) for o in p.opts)]
    assert fails, "no MP_FAIL sent"
    rsts = [p for p in wire if p.host == "s" and p.flags & RST]
    assert rsts, "subflow never reset"
    rst = rsts[0]
    reasons = [o.reason for o in rst.opts if isinstance(o, MpTcpRst)]
    assert reasons == [RST_EMIDDLEBOX]
    assert rst.t - fails[0].t >= MP_FAIL_TIMEOUT - 1
    assert rst.t - fails[0].t < MP_FAIL_TIMEOUT + 5
    si = x.peer.mptcp_info()
    assert si["stats"]["mp_fail_timeout"] == 1


def test_answered_mp_fail_stops_the_timer() -> None:
    """With an answering peer (the normal case) the timer is cleared: the
    connection falls back and lives past 120 s without any RST."""
    t = two_hosts(1, rate=100e3, c_cfg=MptcpConfig(checksum=True))
    wire = capture(t)
    hit: list[float] = []
    _corrupt_once(t.links[0][0], 0.5, hit)
    up = payload(2_000_000, 6)
    x = Exchange(t, up, b"")
    assert x.run(300), (x.conn, x.peer)
    assert hit and x.failed() is None
    got = x.received_up  # the one altered byte is delivered (§3.7), all else intact
    assert len(got) == len(up) and sum(a != b for a, b in zip(got, up, strict=True)) == 1
    assert x.finished_at is not None and x.finished_at > MP_FAIL_TIMEOUT
    assert not [p for p in wire if p.flags & RST]
    si = x.peer.mptcp_info()
    assert si["fallback_reason"] == "mp_fail" and si["stats"].get("mp_fail_timeout", 0) == 0


def test_client_joins_only_after_a_connection_level_data_ack_both_orders() -> None:
    """End to end over two paths, whichever side talks first: the client's
    first MP_JOIN SYN leaves only after it received a DSS whose DATA_ACK
    moved past the initial data sequence number, i.e. the server is fully
    established on its side (Linux refuses earlier joins: MPJoinRejected)."""
    for up, down in ((payload(200_000, 1), b""), (b"", payload(200_000, 2))):
        t = two_hosts(2)
        wire = capture(t)
        x = Exchange(t, up, down)
        assert x.run(30), (x.conn, x.peer)
        assert x.received_up == up and x.received_down == down
        joins = [i for i, p in enumerate(wire) if p.host == "c" and p.flags == SYN
                 and p.opts and isinstance(p.opts[0], MpJoin)]
        assert joins, "no join"
        acks = [p.opts[0].data_ack for p in wire[:joins[0]] if p.host == "s" and p.opts
                and isinstance(p.opts[0], Dss) and p.opts[0].data_ack is not None]
        assert acks, "join before any DATA_ACK from the server"
        info = x.conn.mptcp_info()
        assert sum(1 for s in info["subflows"] if s["established"]) >= 2


def test_kernel_accepts_our_ipv6_add_addr_with_port_without_timestamps(tmp_path) -> None:
    """Interop (root): a kernel MPTCP client over IPv6 (timestamps on)
    receives the stack server's ADD_ADDR for an IPv6 address with a port on
    a pure ACK that had to leave its timestamps out: the kernel takes it
    (MPTcpExtPortAdd) and echoes it, the 10 MB each way arrive intact."""
    import socket

    import pytest

    from tools.topology import Topology, can_run

    if can_run() is not None:
        pytest.skip(str(can_run()))
    from test_interop_mptcp import PORT, Recorder, _kernel_pm, run_pair

    import stack

    rec = Recorder(tmp_path / "stack.pcap")
    with Topology(2) as topo:
        _kernel_pm(topo, server=False, family=socket.AF_INET6, csum=False)
        p2 = topo.paths[1]
        sent: list = []
        with stack.Host.tun(*topo.stack_specs(), netns=topo.ns, tap=rec) as host:

            def on_tick(elapsed: float, got: int) -> None:
                if sent or got < 100_000:
                    return
                for mp in list(host.core.mptcp_conns):
                    ep = Endpoint(9, ip_address(str(p2.stack_v6.ip)), PORT)
                    mp.queue_actions([SendAddAddr(ep)])
                    host.core.wake(mp, host.clock())
                    host.loop.kick()
                    sent.append(mp)

            res = run_pair(topo, host, family=socket.AF_INET6, kernel_is_server=False,
                           size=10 * 1_000_000, on_tick=on_tick)
            stats = sent[0].mptcp_info()["stats"] if sent else {}
        nstat = topo.nstat()
    assert sent and stats.get("ts_dropped_for_option", 0) >= 1, stats
    assert nstat.get("MPTcpExtPortAdd", 0) >= 1, {k: v for k, v in nstat.items() if "MPTcp" in k}
    assert nstat.get("MPTcpExtEchoAddTx", 0) >= 2  # the default announcement and ours
    assert res["info"]["mptcp"] is True
    rec.check(mptcp=True)
