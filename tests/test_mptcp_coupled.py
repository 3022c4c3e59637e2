"""Coupled congestion control (RFC 6356 LIA, OLIA, BALIA) with numbers, and
RFC 6356's three goals in a small seeded per-RTT bottleneck model."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.mptcp.coupled import Balia, CoupledGroup, Lia, Olia
from stack.tcp.congestion import CongestionControl, make_congestion
from stack.tcp.congestion.newreno import NewReno

MSS = 1000


def in_ca(cc, cwnd_segs: int, rtt: float):
    """Put a controller in congestion avoidance with the given window and
    teach it its RTT."""
    cc.cwnd = cwnd_segs * MSS
    cc.ssthresh = cc.cwnd
    cc.rtt = rtt
    return cc


def lia_group(*paths: tuple[int, float]) -> tuple[CoupledGroup, list[Lia]]:
    g = CoupledGroup("lia")
    return g, [in_ca(g.subflow(MSS), w, r) for w, r in paths]


# ---------------------------------------------------------------- plumbing
def test_group_and_registry():
    g = CoupledGroup("lia")
    a = make_congestion("lia", MSS, group=g)
    b = g.subflow(MSS)
    assert isinstance(a, Lia) and isinstance(b, Lia) and g.members == [a, b]
    assert isinstance(a, CongestionControl)
    assert isinstance(CoupledGroup("olia").subflow(MSS), Olia)
    assert isinstance(CoupledGroup("BALIA").subflow(MSS), Balia)
    with pytest.raises(ValueError):
        CoupledGroup("wvegas")
    b.close()
    assert g.members == [a]
    alone = make_congestion("lia", MSS)  # a private group of one
    assert alone.group.members == [alone]


# ---------------------------------------------------------------- LIA alpha
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_lia_alpha_equal_paths_is_one_over_n(n):
    g, _ = lia_group(*[(20, 0.05)] * n)
    assert g.lia_alpha() == pytest.approx(1 / n)


def test_lia_alpha_rtt_mismatch():
    # RFC 6356 eq. (2): 10 packets at 10 ms and 100 packets at 100 ms (same
    # rate): alpha = 110 * max(10/0.01^2, 100/0.1^2) / (10/0.01 + 100/0.1)^2
    g, _ = lia_group((10, 0.01), (100, 0.1))
    assert g.lia_alpha() == pytest.approx(110 * 1e5 / 2000**2)  # 2.75


def test_lia_alpha_ignores_subflows_without_rtt_or_inactive():
    g, (a, b) = lia_group((20, 0.05), (20, 0.05))
    c = g.subflow(MSS)  # no RTT yet
    assert g.lia_alpha() == pytest.approx(0.5)
    c.rtt = 0.05
    c.cwnd = 20 * MSS
    assert g.lia_alpha() == pytest.approx(1 / 3)
    c.active = False  # e.g. an unused backup subflow
    assert g.lia_alpha() == pytest.approx(0.5)


# ---------------------------------------------------------------- LIA increase
def test_lia_single_subflow_is_reno():
    g, (a,) = lia_group((20, 0.05))
    r = in_ca(NewReno(MSS), 20, 0.05)
    for i in range(200):
        a.on_ack(MSS, 0.05, i * 0.001, a.cwnd)
        r.on_ack(MSS, 0.05, i * 0.001, r.cwnd)
    assert a.cwnd == pytest.approx(r.cwnd, abs=MSS)
    assert a.cwnd > 25 * MSS


def test_lia_two_equal_subflows_grow_a_quarter_segment_per_rtt_each():
    # alpha = 1/2, cwnd_total = 2w: one window of ACKs on a subflow adds
    # alpha * w * MSS / (2w) = MSS/4; the connection as a whole adds MSS/2
    # per RTT, while its total window is 2w (a TCP at the same rate would add
    # 1 MSS per RTT on a window of 2w: LIA is half as aggressive here).
    g, (a, b) = lia_group((40, 0.05), (40, 0.05))
    for _ in range(4):
        for cc in (a, b):
            for _ in range(40):
                cc.on_ack(MSS, 0.05, 0.0, cc.cwnd)
    # (41 less a few bytes: each ACK sees the window a little larger.)
    assert a.cwnd == pytest.approx(41 * MSS, abs=20)
    assert b.cwnd == pytest.approx(41 * MSS, abs=20)


def test_lia_increase_capped_by_uncoupled_tcp():
    # A 2-packet subflow at 1 ms next to a 1000-packet one at 1 s: alpha is
    # about 223. On the small, best path the coupled term (alpha * MSS /
    # cwnd_total per MSS acked = 222 bytes) is below Reno's 500; on the big,
    # slow path it would be 222 bytes per MSS acked, but the cap holds it to
    # Reno's MSS / cwnd_i = 1 byte (RFC 6356 §3, goal 2).
    g, (small, big) = lia_group((2, 0.001), (1000, 1.0))
    alpha = g.lia_alpha()
    assert alpha == pytest.approx(1002 * (2 / 0.001**2) / (2 / 0.001 + 1000 / 1.0) ** 2)
    small.on_ack(MSS, 0.001, 0.0, small.cwnd)
    assert small.cwnd - 2 * MSS == int(alpha * MSS * MSS / (1002 * MSS))  # 222
    before = big.cwnd
    for _ in range(1000):
        big.on_ack(MSS, 1.0, 0.0, big.cwnd)
    assert big.cwnd - before == pytest.approx(1000, abs=2)  # 1 MSS per RTT: Reno


@settings(max_examples=200, deadline=None)
@given(
    windows=st.lists(st.integers(2, 500), min_size=1, max_size=5),
    rtts=st.lists(st.floats(0.001, 1.0), min_size=5, max_size=5),
    acked=st.integers(1, 4 * MSS),
)
def test_lia_never_more_aggressive_than_tcp(windows, rtts, acked):
    # Per ACK, on any subflow, whatever the RTTs: at most an uncoupled TCP's
    # increase on that path (the cap of RFC 6356 eq. (1)).
    g, ccs = lia_group(*zip(windows, rtts, strict=False))
    for cc in ccs:
        before = cc.cwnd
        cc._carry = 0.0
        cc.on_ack(acked, cc.rtt, 0.0, cc.cwnd)
        assert cc.cwnd - before <= acked * MSS / before
        cc.cwnd = before
    # With equal RTTs, alpha = max_i w_i / W, so one window acknowledged on
    # every subflow grows the connection by sum_i alpha * w_i / W = alpha <= 1
    # packet per RTT: no more than one TCP (goal 2), exactly one with n = 1.
    g2, ccs2 = lia_group(*[(w, 0.05) for w in windows])
    alpha = g2.lia_alpha()
    total = sum(windows)
    assert alpha == pytest.approx(max(windows) / total if len(windows) > 1 else 1.0)
    per_rtt = sum(min(alpha * w / total, 1.0) for w in windows)
    assert per_rtt <= 1.0 + 1e-9


def test_lia_decrease_is_per_subflow_halving():
    g, (a, b) = lia_group((40, 0.05), (40, 0.05))
    a.on_congestion_event(0.0, 40 * MSS)
    assert a.cwnd == 20 * MSS and b.cwnd == 40 * MSS


# ---------------------------------------------------------------- OLIA
def test_olia_single_path_is_reno():
    g = CoupledGroup("olia")
    a = in_ca(g.subflow(MSS), 20, 0.05)
    for _ in range(20):
        a.on_ack(MSS, 0.05, 0.0, a.cwnd)
    # 1/w per ACK: one window of ACKs adds one segment (less a few bytes).
    assert a.cwnd == pytest.approx(21 * MSS, abs=30)


def test_olia_alpha_moves_window_to_the_best_path():
    # Path 1: best (longest inter-loss distance per rtt^2), small window.
    # Path 2: largest window. alpha_1 = +1/(2*1), alpha_2 = -1/(2*1).
    g = CoupledGroup("olia")
    p1 = in_ca(g.subflow(MSS), 10, 0.05)
    p2 = in_ca(g.subflow(MSS), 30, 0.05)
    p1.loss_gap_prev, p2.loss_gap_prev = 1_000_000, 100_000
    assert p1.olia_alpha() == pytest.approx(0.5)
    assert p2.olia_alpha() == pytest.approx(-0.5)
    # Increase per ACK in packets: (w/rtt^2)/(sum w/rtt)^2 + alpha/w.
    denom = (10 + 30) / 0.05
    before = p1.cwnd
    p1.on_ack(MSS, 0.05, 0.0, p1.cwnd)
    expect1 = ((10 / 0.05**2) / denom**2 + 0.5 / 10) * MSS
    assert p1.cwnd - before == pytest.approx(expect1, abs=1)
    # On the largest-window path alpha is negative: it grows by less than
    # the coupled term alone.
    denom = (p1.cwnd / MSS + 30) / 0.05
    before = p2.cwnd
    p2.on_ack(4 * MSS, 0.05, 0.0, p2.cwnd)
    first = (30 / 0.05**2) / denom**2
    assert p2.cwnd - before == pytest.approx((first - 0.5 / 30) * 4 * MSS, abs=1)
    assert p2.cwnd - before < first * 4 * MSS - 60
    # When the best path also has the largest window, alpha is 0.
    p1.cwnd = 40 * MSS
    assert p1.olia_alpha() == 0.0 and p2.olia_alpha() == 0.0


def test_olia_tracks_inter_loss_distance():
    g = CoupledGroup("olia")
    a = in_ca(g.subflow(MSS), 20, 0.05)
    for _ in range(50):
        a.on_ack(MSS, 0.05, 0.0, a.cwnd)
    a.on_congestion_event(1.0, a.cwnd)
    a.on_recovery_end(1.1)
    for _ in range(10):
        a.on_ack(MSS, 0.05, 2.0, a.cwnd)
    assert a.loss_gap_prev == 50 * MSS and a.loss_gap_now == 10 * MSS
    assert a.inter_loss == 50 * MSS


# ---------------------------------------------------------------- BALIA
def test_balia_single_path_is_reno():
    g = CoupledGroup("balia")
    a = in_ca(g.subflow(MSS), 20, 0.05)
    for _ in range(20):
        a.on_ack(MSS, 0.05, 0.0, a.cwnd)
    # 1/w per ACK: one window of ACKs adds one segment (less a few bytes).
    assert a.cwnd == pytest.approx(21 * MSS, abs=30)
    w = a.cwnd
    a.on_congestion_event(0.0, w)
    assert a.cwnd == w // 2


def test_balia_increase_and_decrease_formulas():
    g = CoupledGroup("balia")
    slow = in_ca(g.subflow(MSS), 10, 0.1)  # x = 100 pkt/s
    fast = in_ca(g.subflow(MSS), 30, 0.1)  # x = 300 pkt/s
    a = 300 / 100
    before = slow.cwnd
    slow.on_ack(MSS, 0.1, 0.0, slow.cwnd)
    inc = 100 / (0.1 * 400**2) * ((1 + a) / 2) * ((4 + a) / 5)
    assert slow.cwnd - before == pytest.approx(inc * MSS, abs=1)
    # Loss on the slow path: w -= w/2 * min(alpha=3, 1.5) = 0.75 w
    slow.on_congestion_event(0.0, slow.cwnd)
    assert slow.cwnd == pytest.approx(int(before * 0.25), abs=MSS) or slow.cwnd == 2 * MSS
    fast.on_congestion_event(0.0, fast.cwnd)
    assert fast.cwnd == 15 * MSS  # alpha = 1 on the fastest path: halve


# ---------------------------------------------------------------- the goals
def _run(flows, links, rounds: int, seed: int = 1) -> list[float]:
    """Per-RTT model, equal RTTs (50 ms). ``flows``: list of (cc, link index).
    Each link carries at most ``cap`` packets per RTT; when the offered load
    exceeds it, every packet is dropped with probability p = excess/offered
    (a bottleneck queue dropping at random), so a flow of w packets sees a
    drop in a round with probability 1 - (1 - p)^w. A flow with a drop has
    one congestion event (one recovery lasting that round); otherwise its
    window is acknowledged by 4 stretch ACKs. Returns packets delivered per flow
    (expected) over the second half of the run."""
    rng = random.Random(seed)
    rtt = 0.05
    delivered = [0.0] * len(flows)
    now = 0.0
    for rnd in range(rounds):
        offered = [0] * len(links)
        for cc, link in flows:
            offered[link] += cc.cwnd // MSS
        drop_p = [
            max(0.0, (o - cap) / o) if o else 0.0 for o, cap in zip(offered, links, strict=True)
        ]
        for i, (cc, link) in enumerate(flows):
            w = cc.cwnd // MSS
            p = drop_p[link]
            if rnd >= rounds // 2:
                delivered[i] += w * (1 - p)  # expected deliveries
            if p and rng.random() < 1 - (1 - p) ** w:  # at least one drop
                cc.on_congestion_event(now, cc.cwnd)
                cc.on_recovery_end(now + rtt)
            else:
                for _ in range(4):
                    cc.on_ack(w * MSS // 4, rtt, now, w * MSS)
        now += rtt
    return delivered


@pytest.mark.parametrize("algo", ["lia", "olia", "balia"])
def test_goal2_shared_bottleneck_fair_to_tcp(algo):
    # RFC 6356 goal 2 (do no harm): a 2-subflow connection and one TCP flow
    # through one bottleneck get shares within a factor 1.25.
    g = CoupledGroup(algo)
    s1, s2 = g.subflow(MSS), g.subflow(MSS)
    tcp = NewReno(MSS)
    got = _run([(s1, 0), (s2, 0), (tcp, 0)], links=[60], rounds=8000)
    mp, single = got[0] + got[1], got[2]
    assert 1 / 1.25 <= mp / single <= 1.25, (mp, single)
    # Uncoupled subflows would take about twice TCP's share.
    u1, u2, tcp2 = NewReno(MSS), NewReno(MSS), NewReno(MSS)
    got = _run([(u1, 0), (u2, 0), (tcp2, 0)], links=[60], rounds=8000)
    assert (got[0] + got[1]) / got[2] > 1.6


@pytest.mark.parametrize("algo", ["lia", "olia", "balia"])
def test_goal1_disjoint_paths_at_least_best_single_path(algo):
    # RFC 6356 goal 1: over two disjoint paths the connection gets at least
    # 90 % of what TCP gets on the better path alone.
    g = CoupledGroup(algo)
    s1, s2 = g.subflow(MSS), g.subflow(MSS)
    got = _run([(s1, 0), (s2, 1)], links=[40, 20], rounds=8000)
    alone = _run([(NewReno(MSS), 0)], links=[40], rounds=8000)
    assert got[0] + got[1] >= 0.9 * alone[0], (got, alone)


@pytest.mark.parametrize("algo", ["lia", "olia", "balia"])
def test_goal3_balance_congestion(algo):
    # RFC 6356 goal 3: a competing TCP flow on path 1 and none on path 2:
    # at least two thirds of the connection's traffic goes over path 2.
    g = CoupledGroup(algo)
    s1, s2 = g.subflow(MSS), g.subflow(MSS)
    tcp = NewReno(MSS)
    got = _run([(s1, 0), (s2, 1), (tcp, 0)], links=[40, 40], rounds=8000)
    assert got[1] / (got[0] + got[1]) >= 2 / 3, got


def test_group_factory_through_make_congestion():
    # What a subflow's TcpConnection does with TcpConfig.congestion =
    # group.subflow: it only calls make_congestion(config.congestion, mss).
    g = CoupledGroup("lia")
    a = make_congestion(g.subflow, 1460)
    b = make_congestion(g.subflow, 1400)
    assert isinstance(a, Lia) and g.members == [a, b] and b.mss == 1400


# ------------------------------------------- the goals on the real TCP engine
# Independent TCP connections whose controllers share one CoupledGroup (what
# MPTCP subflows will do, via TcpConfig.congestion = group.subflow), over the
# in-memory links in virtual time: 8 Mbit/s, 25 ms each way, drop-tail queue of
# one bandwidth-delay product. Bulk senders that never run dry; goodput is
# measured from 5 s to 35 s of virtual time. ~10 s of real time in all.

RATE, DELAY = 8e6, 0.025
QUEUE = int(RATE * 2 * DELAY / 8)  # 50 KB = 1 BDP
_ZEROS = memoryview(bytes(1 << 20))


class _Bulk:
    """Client connections send forever; the server reads and counts."""

    def __init__(self, net, client, server):
        self.net, self.client, self.server = net, client, server
        self.flows: list[list] = []  # [conn, listener, accepted, bytes received]

    def add(self, addr: str, congestion) -> None:
        from stack.tcp.config import TcpConfig

        port = 5001 + len(self.flows)
        listener = self.server.listen(None, port)
        conn = self.client.connect(
            addr, port, self.net.now, config=TcpConfig(congestion=congestion)
        )
        self.flows.append([conn, listener, None, 0])

    def step(self, now: float) -> None:
        for f in self.flows:
            conn = f[0]
            if conn.state.name == "ESTABLISHED" and conn.send_space > 0:
                if conn.send(_ZEROS[: conn.send_space], now):
                    self.client.wake(conn, now)
            if f[2] is None:
                f[2] = f[1].accept()
            peer = f[2]
            if peer is not None and peer.readable:
                while chunk := peer.recv(1 << 20):
                    f[3] += len(chunk)
                self.server.wake(peer, now)

    def goodput(self, t0: float = 5.0, t1: float = 35.0) -> list[float]:
        """Mbit/s of each flow between t0 and t1."""
        self.net.run(until=t0, on_step=self.step)
        start = [f[3] for f in self.flows]
        self.net.run(until=t1, on_step=self.step)
        return [(f[3] - s) * 8 / (t1 - t0) / 1e6 for f, s in zip(self.flows, start, strict=True)]


def _paths(seed: int, rates: list[float]) -> _Bulk:
    """Client and server joined by one link pair per rate; path i is
    10.{i+1}.0.1 -> 10.{i+1}.0.2."""
    host = pytest.importorskip("stack.host")
    netsim = pytest.importorskip("stack.netsim")
    rng = random.Random(seed)
    client = host.HostCore(random.Random(rng.getrandbits(64)), name="client")
    server = host.HostCore(random.Random(rng.getrandbits(64)), name="server")
    net = netsim.Network(random.Random(rng.getrandbits(64)))
    for i, rate in enumerate(rates):
        client.add_interface(f"eth{i}", 1500, [f"10.{i + 1}.0.1/24"])
        server.add_interface(f"eth{i}", 1500, [f"10.{i + 1}.0.2/24"])
        links = [
            netsim.Link(
                rate_bps=rate,
                delay=DELAY,
                queue_limit_bytes=QUEUE,
                rng=random.Random(rng.getrandbits(64)),
            )
            for _ in range(2)
        ]
        net.connect(client, f"eth{i}", server, f"eth{i}", *links)
    return _Bulk(net, client, server)


@pytest.mark.slow
def test_engine_goal2_shared_bottleneck():
    bulk = _paths(1, [RATE])
    group = CoupledGroup("lia")
    bulk.add("10.1.0.2", group.subflow)
    bulk.add("10.1.0.2", group.subflow)
    bulk.add("10.1.0.2", "newreno")
    g = bulk.goodput()
    assert 1 / 1.25 <= (g[0] + g[1]) / g[2] <= 1.25, g
    assert sum(g) > 0.9 * RATE / 1e6  # and the link stays busy


@pytest.mark.slow
def test_engine_goal1_two_disjoint_paths():
    bulk = _paths(2, [RATE, RATE / 2])
    group = CoupledGroup("lia")
    bulk.add("10.1.0.2", group.subflow)
    bulk.add("10.2.0.2", group.subflow)
    both = sum(bulk.goodput())
    alone = _paths(2, [RATE])
    alone.add("10.1.0.2", "newreno")
    best = alone.goodput()[0]
    assert both >= 0.9 * best, (both, best)
    assert both > 1.3 * best  # with no competition it uses both paths


@pytest.mark.slow
def test_engine_goal3_balance_congestion():
    bulk = _paths(3, [RATE, RATE])
    group = CoupledGroup("lia")
    bulk.add("10.1.0.2", group.subflow)
    bulk.add("10.2.0.2", group.subflow)
    bulk.add("10.1.0.2", "newreno")  # competes on path 1 only
    g = bulk.goodput()
    assert g[1] / (g[0] + g[1]) >= 2 / 3, g
