"""The in-memory link model (rate, delay, loss, reordering, duplication,
queue limit, GSO) and the virtual-time network driver."""

from __future__ import annotations

import ipaddress
import random

import pytest
from fastpath.segment import parse_segment

from stack.host.packetize import build_frame
from stack.netsim import Link, Network, SimulationLimit
from stack.tcp.segment import ACK, TcpSegment

A = ipaddress.ip_address("10.0.0.1").packed
B = ipaddress.ip_address("10.0.0.2").packed


def packet(size: int = 1000) -> bytes:
    return build_frame(TcpSegment(1, 2, 0, 0, ACK, 0, payload=bytes(size - 40)), A, B).data


def test_no_impairment_is_a_wire() -> None:
    link = Link(delay=0.005)
    out = link.send(packet(), 1.0)
    assert out == [(1.005, packet(), False)]


def test_loss_rate_within_tolerance() -> None:
    link = Link(loss=0.1, rng=random.Random(1))
    n = 20000
    delivered = sum(len(link.send(b"x" * 100, i * 1e-3)) for i in range(n))
    assert link.stats.lost + delivered == n
    # binomial: sigma = sqrt(0.09 / 20000) = 0.0021; allow 5 sigma
    assert abs(link.stats.lost / n - 0.1) < 0.0106


def test_rate_limit_serializes_packets() -> None:
    link = Link(rate_bps=8e6, delay=0.010)  # 1000 bytes take 1 ms
    arrivals = [t for _ in range(100) for t, _, _ in link.send(b"y" * 1000, 0.0)]
    assert arrivals[0] == pytest.approx(0.011)
    assert arrivals[-1] == pytest.approx(0.110)  # 100 packets * 1 ms + 10 ms
    # throughput: 100 kB over 100 ms of serialization = 8 Mbit/s
    assert 100 * 1000 * 8 / (arrivals[-1] - 0.010) == pytest.approx(8e6)
    # an idle link starts again at once
    ((t, _, _),) = link.send(b"y" * 1000, 5.0)
    assert t == pytest.approx(5.011)


def test_queue_limit_tail_drops() -> None:
    link = Link(rate_bps=8e6, queue_limit_bytes=10_000)
    results = [link.send(b"z" * 1000, 0.0) for _ in range(100)]
    assert sum(1 for r in results if r) == 10  # 10 x 1000 bytes fit
    assert link.stats.queue_drops == 90
    assert link.queued_bytes(0.0) == 10_000
    assert link.queued_bytes(0.0045) == 6000  # 4 serialized by then
    assert link.send(b"z" * 1000, 0.0045)  # room again
    assert link.stats.max_queue_bytes == 10_000


def test_reordering_lets_later_packets_overtake() -> None:
    link = Link(rate_bps=1e9, delay=0.01, reorder=0.2, reorder_delay=0.002,
                rng=random.Random(2))
    arrivals = []
    for i in range(2000):
        for t, pkt, _ in link.send(i.to_bytes(4, "big") * 250, i * 1e-4):
            arrivals.append((t, int.from_bytes(pkt[:4], "big")))
    order = [i for _, i in sorted(arrivals)]
    assert sorted(order) == list(range(2000))  # nothing lost
    late = sum(1 for a, b in zip(order, order[1:], strict=False) if a > b)
    assert 0.15 < link.stats.reordered / 2000 < 0.25
    assert late > 200  # and they really arrive out of order


def test_duplication() -> None:
    link = Link(duplicate=0.5, rng=random.Random(3))
    copies = [len(link.send(b"d" * 64, 0.0)) for _ in range(1000)]
    assert set(copies) == {1, 2}
    assert link.stats.duplicated == copies.count(2)
    assert 400 < link.stats.duplicated < 600


def test_mtu_drops_oversize_packets() -> None:
    link = Link(mtu=1500)
    assert link.send(packet(1500), 0.0)
    assert link.send(packet(1501), 0.0) == []
    assert link.stats.too_big == 1


def test_super_segments_cut_or_carried_whole() -> None:
    seg = TcpSegment(1, 2, 100, 0, ACK, 0, payload=bytes(14480))
    frame = build_frame(seg, A, B, wire_mss=1448 + 12)  # no options: gso 1460
    assert frame.gso_size == 1460
    cut = Link(mtu=1500).send(frame, 0.0)
    assert len(cut) == 10
    assert all(not v and parse_segment(p).tcp_checksum_ok for _, p, v in cut)
    whole = Link(mtu=1500, split_gso=False).send(frame, 0.0)
    assert whole == [(0.0, frame.data, True)]  # NEEDS_CSUM: nothing to verify
    lossy = Link(loss=0.3, rng=random.Random(4))
    assert 0 < len(lossy.send(frame, 0.0)) < 10  # loss applies per wire packet


def test_same_seed_same_fate() -> None:
    def run(seed: int) -> list:
        link = Link(rate_bps=1e7, delay=0.01, loss=0.05, reorder=0.1, duplicate=0.05,
                    queue_limit_bytes=20_000, rng=random.Random(seed))
        return [link.send(bytes([i % 256]) * 500, i * 3e-4) for i in range(3000)]

    assert run(9) == run(9)
    assert run(9) != run(10)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Link(loss=1.5)
    with pytest.raises(ValueError):
        Link(rate_bps=0)


# --- the network driver with minimal hosts --------------------------------------


class Pinger:
    """A stand-in host: sends one packet every `period` on its timer and
    records what it receives (the Network only needs this much)."""

    def __init__(self, name: str, period: float | None) -> None:
        self.name = name
        self.interfaces = {"eth0": None}
        self.period = period
        self.deadline = 0.0 if period else None
        self.out: list = []
        self.got: list[tuple[float, bytes]] = []

    def receive(self, pkt, iface, now, *, checksum_verified=False):
        self.got.append((now, pkt))

    def on_timer(self, now):
        self.out.append(("eth0", packet(100)))
        self.deadline = now + self.period

    def next_deadline(self):
        return self.deadline

    def transmit(self):
        out, self.out = self.out, []
        return out


def test_network_runs_in_virtual_time() -> None:
    a, b = Pinger("a", 0.1), Pinger("b", None)
    net = Network()
    net.connect(a, "eth0", b, "eth0", ab=Link(delay=0.05))
    assert net.run(until=1.0) is False
    assert net.now == 1.0
    assert [round(t, 9) for t, _ in b.got] == [round(0.05 + 0.1 * i, 9) for i in range(10)]
    steps = []
    assert net.run(condition=lambda: len(b.got) >= 15, on_step=steps.append)
    assert len(b.got) == 15 and steps and steps == sorted(steps)
    assert net.run_until(lambda: False, timeout=0.5) is False and net.now == pytest.approx(1.95)
    with pytest.raises(SimulationLimit):
        net.run(max_events=10)


def test_call_at_runs_app_actions_at_their_instant() -> None:
    a, b = Pinger("a", None), Pinger("b", None)
    net = Network()
    net.connect(a, "eth0", b, "eth0", ab=Link(delay=0.01))
    calls = []

    def act(now: float) -> None:
        calls.append(now)
        a.out.append(("eth0", packet(60)))  # the app made the host send

    net.call_at(0.5, act)
    net.call_at(0.25, act)
    steps = []
    assert net.run(until=1.0, on_step=steps.append) is False
    assert calls == [0.25, 0.5]
    assert [t for t, _ in b.got] == [0.26, 0.51]
    assert steps == [0.25, 0.26, 0.5, 0.51]  # on_step after every event


def test_network_rejects_unknown_or_double_attachment() -> None:
    a, b, c = Pinger("a", None), Pinger("b", None), Pinger("c", None)
    net = Network()
    net.connect(a, "eth0", b, "eth0")
    with pytest.raises(ValueError):
        net.connect(a, "eth0", c, "eth0")
    with pytest.raises(ValueError):
        net.connect(c, "eth9", b, "eth0")
    assert net.run() is False  # nothing to do: idle


def test_router_forwards_by_longest_prefix() -> None:
    from stack.netsim import Router

    r = Router()
    for name in ("a", "b", "c"):
        r.add_interface(name)
    r.add_route("10.0.0.0/8", "a")
    r.add_route("10.1.0.0/16", "b")
    r.add_route("::/0", "c")
    with pytest.raises(ValueError):
        r.add_route("10.2.0.0/16", "nope")
    pkt = packet(100)  # to 10.0.0.2
    r.receive(pkt, "c", 0.0)
    r.receive(pkt[:12] + pkt[12:16] + bytes([10, 1, 2, 3]) + pkt[20:], "c", 0.0)
    r.receive(pkt[:12] + pkt[12:16] + bytes([11, 1, 2, 3]) + pkt[20:], "c", 0.0)
    r.receive(b"\x45", "c", 0.0)
    out = r.transmit()
    assert [name for name, _ in out] == ["a", "b"]
    assert out[0][1].data == pkt  # forwarded unchanged
    assert r.stats == {"forwarded": 2, "no_route": 1, "malformed": 1}
    v6 = b"\x60" + bytes(39)
    r.receive(v6, "a", 0.0)
    assert r.transmit()[0][0] == "c"
