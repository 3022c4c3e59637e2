"""Two hosts over in-memory links in virtual time: 10 MB transfers arrive
intact (SHA-256) with loss, reordering, a sequence-number wrap and a zero
window, in seconds of real time."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import pytest
from fastpath.segment import parse_segment

from stack.host import HostCore
from stack.netsim import Link, Network
from stack.netsim.bulk import BulkTransfer
from stack.tcp.config import TcpConfig

MB = 1_000_000


@dataclass
class Sim:
    net: Network
    client: HostCore
    server: HostCore
    ab: Link  # client -> server
    ba: Link


def make_sim(seed: int, *, rate: float = 100e6, delay: float = 0.005, loss: float = 0.0,
             reorder: float = 0.0, queue: int | None = 1_000_000, offload: bool = False,
             split_gso: bool = True, mtu: int = 1500) -> Sim:
    rng = random.Random(seed)
    client = HostCore(random.Random(rng.getrandbits(64)), name="client")
    server = HostCore(random.Random(rng.getrandbits(64)), name="server")
    client.add_interface("eth0", mtu, ["10.0.0.1/24", "fd00::1/64"], offload=offload)
    server.add_interface("eth0", mtu, ["10.0.0.2/24", "fd00::2/64"], offload=offload)
    net = Network(random.Random(rng.getrandbits(64)))

    def link() -> Link:
        return Link(rate_bps=rate, delay=delay, loss=loss, reorder=reorder,
                    queue_limit_bytes=queue, rng=random.Random(rng.getrandbits(64)),
                    mtu=mtu, split_gso=split_gso)

    ab, ba = net.connect(client, "eth0", server, "eth0", link(), link())
    return Sim(net, client, server, ab, ba)


def transfer(sim: Sim, size: int, *, seed: int = 1, server_addr: str = "10.0.0.2",
             timeout: float = 300.0, **kw) -> BulkTransfer:
    data = random.Random(seed).randbytes(size)
    cfg = TcpConfig(time_wait=5.0)  # > any RTO here: the last ACK can be repeated
    xfer = BulkTransfer(sim.net, sim.client, sim.server, data, server_addr=server_addr,
                        client_config=cfg, server_config=cfg, **kw)
    ok = sim.net.run_until(lambda: xfer.done() or xfer.failed() is not None, timeout=timeout,
                           on_step=xfer.step)
    assert ok, f"transfer stalled at t={sim.net.now}: {xfer.received_len}/{size} bytes"
    assert xfer.failed() is None
    assert hashlib.sha256(xfer.received).digest() == hashlib.sha256(data).digest()
    return xfer


def assert_clean_close(sim: Sim) -> None:
    """After TIME-WAIT both hosts forget the connection and go quiet."""
    sim.net.run_until(lambda: False, timeout=10.0)
    assert len(sim.client.table) == 0 and len(sim.server.table) == 0
    assert sim.client.next_deadline() is None and sim.server.next_deadline() is None


def test_10mb_no_loss() -> None:
    sim = make_sim(1)
    xfer = transfer(sim, 10 * MB)
    # 100 Mbit/s: 10 MB needs 0.8 s of serialization; allow for slow start
    assert xfer.finished_at < 1.2
    assert xfer.conn.stats.retransmissions == 0
    assert sim.ab.stats.lost == 0 and sim.client.stats["sent"] > 6800  # ~10 MB / 1448
    assert_clean_close(sim)


def test_10mb_ipv6_with_offload_super_segments_cut_on_the_wire() -> None:
    sim = make_sim(2, offload=True)
    sizes = []
    sim.net.taps.append(lambda now, h, i, f: sizes.append(f.gso_size) if h is sim.client else 0)
    transfer(sim, 10 * MB, server_addr="fd00::2")
    assert max(sizes) == 1440 - 12  # IPv6 MSS less timestamps
    assert sim.ab.stats.too_big == 0  # every wire packet fits the 1500 MTU
    assert_clean_close(sim)


def test_10mb_offload_carried_whole() -> None:
    sim = make_sim(3, offload=True, split_gso=False, rate=1e9)
    transfer(sim, 10 * MB)
    assert sim.ab.stats.packets < 2000  # super-segments, not 7000 packets
    assert_clean_close(sim)


@pytest.mark.parametrize("loss", [0.01, 0.05])
def test_10mb_with_loss(loss: float) -> None:
    sim = make_sim(4, loss=loss, rate=50e6)
    xfer = transfer(sim, 10 * MB)
    assert sim.ab.stats.lost > 0 and sim.ba.stats.lost > 0
    st = xfer.conn.stats
    assert st.fast_retransmits > 0 and st.retransmissions >= sim.ab.stats.lost * 0.9
    assert_clean_close(sim)


def test_10mb_with_reordering_and_loss() -> None:
    sim = make_sim(5, loss=0.01, reorder=0.05, rate=50e6)
    for link in (sim.ab, sim.ba):
        link.reorder_delay = 0.002
    transfer(sim, 10 * MB)
    assert sim.ab.stats.reordered > 100
    assert_clean_close(sim)


def test_10mb_through_a_bottleneck_queue() -> None:
    # 20 Mbit/s, 20 ms RTT, a 30 kB drop-tail queue: congestion losses only.
    sim = make_sim(8, rate=20e6, delay=0.01, queue=30_000)
    xfer = transfer(sim, 10 * MB)
    assert sim.ab.stats.queue_drops > 0 and sim.ab.stats.lost == 0
    assert xfer.conn.stats.retransmissions >= sim.ab.stats.queue_drops
    assert xfer.finished_at < 4.0 / 0.75  # 4 s at line rate: keep >= 75 % of it
    assert_clean_close(sim)


def test_10mb_with_duplication() -> None:
    sim = make_sim(9, rate=50e6)
    for link in (sim.ab, sim.ba):
        link.duplicate = 0.05
    xfer = transfer(sim, 10 * MB)
    assert sim.ab.stats.duplicated > 100
    assert xfer.conn.stats.retransmissions == 0  # duplicates are no loss signal
    assert_clean_close(sim)


def test_10mb_across_sequence_wrap() -> None:
    sim = make_sim(6, loss=0.01)
    # Both ISSs just below 2**32: every sequence number comparison sees the wrap.
    sim.client.isn = lambda *a: 2**32 - 3_000_000
    sim.server.isn = lambda *a: 2**32 - 1_000
    seqs = []

    def tap(now, host, iface, frame):
        if host is sim.client:
            seqs.append(parse_segment(frame.data, False).seq)

    sim.net.taps.append(tap)
    transfer(sim, 10 * MB)
    assert seqs[0] == 2**32 - 3_000_000 and any(s < 8 * MB for s in seqs)
    assert_clean_close(sim)


def test_10mb_through_zero_window() -> None:
    sim = make_sim(7)
    windows = []

    def tap(now, host, iface, frame):
        if host is sim.server:
            windows.append((now, parse_segment(frame.data, False).window))

    sim.net.taps.append(tap)
    # The server application stops reading from t=0.3 s to t=2.3 s.
    resumed = []
    sim.net.call_at(2.3, resumed.append)  # the reader wakes up then: an event
    xfer = transfer(sim, 10 * MB, reading=lambda now: not 0.3 <= now < 2.3)
    zero = [t for t, w in windows if w == 0]
    assert zero and 0.3 <= min(zero) < 2.3  # the window really closed
    assert resumed == [2.3]
    # the window update leaves as soon as the application reads
    assert min(t for t, w in windows if t >= 2.3 and w > 0) == 2.3
    assert xfer.conn.stats.zero_window_probes > 0
    # 100 Mbit/s: what was left after the pause takes well under a second
    assert 2.3 < xfer.finished_at < 3.3
    assert_clean_close(sim)


@pytest.mark.parametrize("seed", range(12))
def test_random_impairments(seed: int) -> None:
    """Random mixes of every impairment, buffer sizes, offload and families."""
    r = random.Random(seed)
    sim = make_sim(100 + seed, loss=r.choice([0, 0.01, 0.05, 0.1, 0.2]),
                   reorder=r.choice([0, 0.05, 0.3]), offload=r.choice([False, True]),
                   split_gso=r.choice([True, False]), queue=r.choice([None, 20_000, 200_000]),
                   rate=r.choice([10e6, 100e6]))
    for link in (sim.ab, sim.ba):
        link.duplicate = r.choice([0, 0.05])
    if r.random() < 0.3:
        sim.client.isn = lambda *a: 2**32 - 100_000
    size = r.choice([1, 1000, 300_000])
    data = r.randbytes(size)
    cfg = TcpConfig(time_wait=5.0, rcvbuf=r.choice([16384, 65536, 262144]),
                    sndbuf=r.choice([16384, 262144]))
    xfer = BulkTransfer(sim.net, sim.client, sim.server, data,
                        server_addr=r.choice(["10.0.0.2", "fd00::2"]),
                        client_config=cfg, server_config=cfg)
    assert sim.net.run_until(lambda: xfer.done() or xfer.failed() is not None,
                             timeout=20_000, on_step=xfer.step)
    assert xfer.failed() is None and xfer.received == data


def test_capture_is_clean_for_tshark(tmp_path) -> None:
    """A pcap of a lossy run: tshark finds every checksum good, nothing
    malformed, and sees the retransmissions the loss caused."""
    import shutil
    import subprocess

    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    from stack.netsim.capture import PcapTap

    sim = make_sim(12, loss=0.02, offload=True)
    tap = PcapTap(tmp_path / "run.pcap")
    sim.net.taps.append(tap)
    transfer(sim, 500_000)
    tap.close()

    def count(display_filter: str) -> int:
        res = subprocess.run(["tshark", "-r", str(tmp_path / "run.pcap"), "-n",
                              "-o", "tcp.check_checksum:TRUE", "-Y", display_filter],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        return len(res.stdout.splitlines())

    assert count("tcp") == tap.count > 300
    assert count("tcp.checksum.status == 1 && ip.version == 4") == tap.count
    assert count("_ws.malformed || _ws.expert.severity == error") == 0
    assert count("tcp.analysis.retransmission || tcp.analysis.fast_retransmission") > 0
    assert count("tcp.flags.syn == 1") == 2 and count("tcp.flags.reset == 1") == 0


def test_two_flows_share_a_bottleneck_behind_a_router() -> None:
    """Two clients, one router, one server behind a 20 Mbit/s link with a 60 kB
    queue: both 5 MB transfers arrive intact, the link is kept busy and the
    flows share it (when the first ends, the other has most of its data)."""
    from stack.netsim import Router

    rng = random.Random(5)
    net = Network(random.Random(1))
    router = Router()
    server = HostCore(random.Random(2), name="server")
    server.add_interface("eth0", 1500, ["10.3.0.2/24"])
    router.add_interface("r3")
    router.add_route("10.3.0.0/24", "r3")
    net.connect(router, "r3", server, "eth0",
                Link(rate_bps=20e6, delay=0.005, queue_limit_bytes=60_000, rng=random.Random(3)),
                Link(rate_bps=100e6, delay=0.005, rng=random.Random(4)))
    cfg = TcpConfig(time_wait=5.0)
    xfers = []
    for i in (1, 2):
        client = HostCore(random.Random(10 + i), name=f"c{i}")
        client.add_interface("eth0", 1500, [f"10.{i}.0.1/24"])
        client.add_route("0.0.0.0/0", "eth0", f"10.{i}.0.254")
        router.add_interface(f"r{i}")
        router.add_route(f"10.{i}.0.0/24", f"r{i}")
        net.connect(client, "eth0", router, f"r{i}",
                    Link(rate_bps=100e6, delay=0.005, rng=random.Random(20 + i)),
                    Link(rate_bps=100e6, delay=0.005, rng=random.Random(30 + i)))
        xfers.append(BulkTransfer(net, client, server, rng.randbytes(5 * MB),
                                  server_addr="10.3.0.2", port=5000 + i,
                                  client_config=cfg, server_config=cfg))
    first_done: list[list[int]] = []

    def all_done() -> bool:
        if not first_done and any(x.done() for x in xfers):
            first_done.append([x.received_len for x in xfers])
        return all(x.done() for x in xfers)

    def step(now: float) -> None:
        for x in xfers:
            x.step(now)

    assert net.run_until(all_done, timeout=60, on_step=step)
    assert all(x.received == bytes(x.data) for x in xfers)
    assert net.link(router, "r3").stats.queue_drops > 0
    assert max(x.finished_at for x in xfers) < 4.0 / 0.8  # 10 MB at 20 Mbit/s = 4 s
    assert min(first_done[0]) > 0.5 * 5 * MB
    assert router.stats["forwarded"] > 10_000
