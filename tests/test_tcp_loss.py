"""Loss: RFC 6298 retransmission timer (backoff, Karn, give-up), RFC 5681/6582
fast retransmit and NewReno partial ACKs, RFC 3042 limited transmit, RFC 6675
SACK recovery without timeouts, and 1 MB transfers through a lossy pipe."""

from __future__ import annotations

import errno

import pytest
from tcp_fixtures import IRS, ISS, Pipe, cfg, established, feed, fire, out, pair, payload, transfer

from stack.tcp import ACK, PSH, TcpSegment, TcpState

MSS = 1460
W = 64000


def seg_of(data: bytes, i: int, *, last: bool = False) -> TcpSegment:
    flags = ACK | PSH if last else ACK
    return out(seq=ISS + 1 + i * MSS, ack=IRS + 1, flags=flags, window=W,
               payload=data[i * MSS: (i + 1) * MSS])


def test_rto_backoff_and_karn() -> None:
    conn = established(rtt=0.1)  # SRTT 0.1, RTTVAR 0.05: RTO 0.3
    assert conn.rtt.rto == pytest.approx(0.3)
    conn.send(b"ping", 1.0)
    first = conn.poll_transmit(1.0)
    t = conn.next_deadline()
    assert t == pytest.approx(1.3)
    assert fire(conn, t - 1e-6) == []
    assert fire(conn, t) == first  # same bytes, same sequence number
    t2 = conn.next_deadline()
    assert t2 == pytest.approx(1.9)  # doubled (RFC 6298 §5.5)
    assert fire(conn, t2) == first
    assert conn.next_deadline() == pytest.approx(3.1)
    samples = conn.rtt.samples
    feed(conn, 2.0, seq=IRS + 1, ack=ISS + 5)
    # Karn: the ACK of a retransmitted segment gives no RTT sample; the
    # backed-off RTO stays until a fresh sample.
    assert conn.rtt.samples == samples and conn.rtt.backoff == 2
    assert conn.next_deadline() is None
    conn.send(b"pong", 2.0)
    conn.poll_transmit(2.0)
    assert conn.next_deadline() == pytest.approx(2.0 + 1.2)
    feed(conn, 2.05, seq=IRS + 1, ack=ISS + 9)
    assert conn.rtt.samples == samples + 1 and conn.rtt.backoff == 0
    assert conn.stats.retransmissions == 2 and conn.stats.timeouts == 2


def test_rto_gives_up_with_etimedout() -> None:
    conn = established(cfg(max_retries=3), rtt=0.1)
    conn.send(b"x", 0.0)
    conn.poll_transmit(0.0)
    for _ in range(3):
        t = conn.next_deadline()
        assert t is not None and len(fire(conn, t)) == 1
    t = conn.next_deadline()
    assert t is not None
    assert fire(conn, t) == []
    assert conn.state is TcpState.CLOSED and conn.error == errno.ETIMEDOUT


def test_rto_restarts_in_slow_start_from_snd_una() -> None:
    conn = established(rtt=0.1)
    d = payload(10 * MSS)
    conn.send(d, 1.0)
    assert len(conn.poll_transmit(1.0)) == 10
    # RTO: cwnd = 1 MSS, the first segment only.
    t = conn.next_deadline()
    assert t is not None
    assert fire(conn, t) == [seg_of(d, 0)]
    assert conn.cc.cwnd == MSS
    # Its ACK: slow start, 2 MSS: the next two holes go out.
    assert feed(conn, 1.4, seq=IRS + 1, ack=ISS + 1 + MSS) == [seg_of(d, 1), seg_of(d, 2)]
    assert conn.stats.retransmissions == 3


def test_fast_retransmit_newreno_with_limited_transmit_and_partial_ack() -> None:
    conn = established(rtt=0.1)
    d = payload(14 * MSS)
    conn.send(d, 0.1)
    assert len(conn.poll_transmit(0.1)) == 10
    dup = dict(seq=IRS + 1, ack=ISS + 1)
    # Segment 0 was lost. RFC 3042: the first two dupacks each send new data.
    assert feed(conn, 0.1, **dup) == [seg_of(d, 10, last=True)]  # PSH: end of a burst
    assert feed(conn, 0.1, **dup) == [seg_of(d, 11, last=True)]
    # The third: fast retransmit (RFC 5681 §3.2), ssthresh = 6 MSS, cwnd = 9 MSS.
    assert feed(conn, 0.1, **dup) == [seg_of(d, 0)]
    assert conn.in_recovery and conn.cc.ssthresh == 6 * MSS
    # More dupacks inflate cwnd; flight is 12 MSS, so the 4th dupack (cwnd
    # 10 MSS) sends nothing yet.
    assert feed(conn, 0.11, **dup) == []
    # Partial ACK up to segment 5 (segment 5 lost too): RFC 6582 retransmits it at once.
    segs = feed(conn, 0.2, seq=IRS + 1, ack=ISS + 1 + 5 * MSS)
    assert segs[0] == seg_of(d, 5)
    assert conn.in_recovery
    # Full ACK: recovery ends with cwnd = ssthresh.
    feed(conn, 0.3, seq=IRS + 1, ack=conn.snd_nxt)
    assert not conn.in_recovery and conn.cc.cwnd == conn.cc.ssthresh
    assert conn.stats.fast_retransmits == 1 and conn.stats.timeouts == 0


def test_sack_loss_detection_retransmits_hole_without_dupack_count() -> None:
    conn = established(cfg(sack=True), sack=True, rtt=0.1)
    d = payload(10 * MSS)
    conn.send(d, 0.1)
    conn.poll_transmit(0.1)
    base = ISS + 1
    # One ACK SACKing three segments above the hole: IsLost(SND.UNA) (RFC 6675 §4).
    segs = feed(conn, 0.1, seq=IRS + 1, ack=base, sack_blocks=((base + MSS, base + 4 * MSS),))
    assert segs == [seg_of(d, 0)]
    assert conn.in_recovery and conn.dupacks == 1
    # Segment 4 is lost too: later SACKs reveal it; NextSeg retransmits it
    # when pipe allows, with no retransmission timeout.
    segs = feed(conn, 0.2, seq=IRS + 1, ack=base + 4 * MSS,
                sack_blocks=((base + 5 * MSS, base + 10 * MSS),))
    assert segs == [seg_of(d, 4, last=False)]
    feed(conn, 0.3, seq=IRS + 1, ack=base + 10 * MSS)
    assert not conn.in_recovery and conn.all_acked
    assert conn.stats.timeouts == 0 and conn.stats.retransmissions == 2


def test_dupacks_below_recover_do_not_restart_recovery() -> None:
    conn = established(rtt=0.1)
    d = payload(10 * MSS)
    conn.send(d, 0.1)
    conn.poll_transmit(0.1)
    for _ in range(3):
        feed(conn, 0.1, seq=IRS + 1, ack=ISS + 1)
    feed(conn, 0.2, seq=IRS + 1, ack=ISS + 1 + 10 * MSS)
    assert not conn.in_recovery
    assert conn.stats.fast_retransmits == 1


def _drop_first_transmissions(indices: set[int]):  # type: ignore[no-untyped-def]
    seen: set[int] = set()
    count = [0]

    def drop(direction: int, seg: TcpSegment) -> bool:
        if direction != 0 or not seg.payload or seg.seq in seen:
            return False
        seen.add(seg.seq)
        count[0] += 1
        return count[0] - 1 in indices

    return drop


@pytest.mark.parametrize("sack", [True, False])
def test_1mb_through_pipe_with_chosen_drops(sack: bool) -> None:
    c = cfg(sack=sack, timestamps=True, window_scaling=True, rcvbuf=256000, sndbuf=256000)
    a, b, pipe = pair(c, c)
    pipe.drop = _drop_first_transmissions({5, 60, 61, 300, 301, 302, 600})
    data = payload(1_000_000, seed=3)
    assert transfer(a, b, pipe, data) == data
    assert a.stats.retransmissions >= 7
    if sack:
        assert a.stats.timeouts == 0  # SACK repairs every loss (RFC 6675)
    assert a.state is TcpState.FIN_WAIT_2 and b.state is TcpState.CLOSE_WAIT


def test_1mb_random_loss_both_directions() -> None:
    import random

    rng = random.Random(7)
    c = cfg(sack=True, timestamps=True, window_scaling=True, rcvbuf=128000, sndbuf=128000)
    a, b, pipe = pair(c, c)
    pipe.drop = lambda d, s: rng.random() < 0.02
    data = payload(1_000_000, seed=4)
    assert transfer(a, b, pipe, data) == data


def test_1mb_tso_with_loss() -> None:
    c = cfg(sack=True, timestamps=True, window_scaling=True, rcvbuf=256000, sndbuf=256000,
            max_segment=64000)
    a, b, pipe = pair(c, c)
    pipe.drop = _drop_first_transmissions({3, 10, 40})
    data = payload(1_000_000, seed=5)
    assert transfer(a, b, pipe, data) == data


def test_pipe_is_deterministic() -> None:
    def run() -> list[tuple[float, int, TcpSegment]]:
        import random

        rng = random.Random(11)
        c = cfg(sack=True, timestamps=True)
        a, b, pipe = pair(c, c)
        pipe.drop = lambda d, s: rng.random() < 0.05
        transfer(a, b, pipe, payload(200_000))
        return pipe.log

    assert run() == run()


def test_pipe_fixture_sanity() -> None:
    pipe = Pipe(delay=0.5)
    assert pipe.now == 0.0 and not pipe.queue


@pytest.mark.parametrize("seed", range(6))
def test_both_ways_at_once_through_chaos(seed: int) -> None:
    """Loss, reordering and duplication both ways, data both ways at once,
    both sides close; every byte arrives and both reach CLOSED."""
    import random

    rng = random.Random(seed)
    configs = [
        cfg(),
        cfg(sack=True, timestamps=True, window_scaling=True, rcvbuf=200000),
        cfg(sack=True, timestamps=True, max_segment=60000),
        cfg(nodelay=True, rcvbuf=5000, sndbuf=3000),
        cfg(congestion="cubic", sack=True, timestamps=True, delayed_ack=0),
        cfg(sack=True, timestamps=True, time_wait=5.0),
    ]
    c = configs[seed % len(configs)]
    a, b, pipe = pair(c, c, iss_a=rng.getrandbits(32), iss_b=rng.getrandbits(32))
    pipe.rng, pipe.reorder, pipe.duplicate = rng, 0.2, 0.03
    pipe.drop = lambda d, s: rng.random() < 0.03
    da, db = payload(150_000, seed), payload(120_000, seed + 100)
    got_a, got_b = bytearray(), bytearray()
    sent = [0, 0]

    def done() -> bool:
        for i, (conn, data) in enumerate(((a, da), (b, db))):
            if sent[i] < len(data):
                sent[i] += conn.send(memoryview(data)[sent[i]:], pipe.now)
                if sent[i] == len(data):
                    conn.shutdown_write(pipe.now)
        while a.readable:
            got_a.extend(a.recv(1 << 20))
        while b.readable:
            got_b.extend(b.recv(1 << 20))
        return a.state is TcpState.CLOSED and b.state is TcpState.CLOSED

    pipe.run(a, b, done, limit=2000)
    assert bytes(got_b) == da and bytes(got_a) == db
    assert a.error is None and b.error is None


def test_rto_retransmission_skips_sacked_data() -> None:
    conn = established(cfg(sack=True), sack=True, rtt=0.1)
    d = payload(10 * MSS)
    conn.send(d, 0.1)
    conn.poll_transmit(0.1)
    base = ISS + 1
    # Two SACKed segments are not enough to call segment 0 lost (RFC 6675 IsLost).
    sacked = ((base + 2 * MSS, base + 4 * MSS),)
    assert feed(conn, 0.2, seq=IRS + 1, ack=base, sack_blocks=sacked) == []
    assert not conn.in_recovery
    t = conn.next_deadline()
    assert t is not None
    assert fire(conn, t) == [seg_of(d, 0)]
    # cwnd 2 MSS after the ACK: segment 1, then segment 4 (2 and 3 are SACKed).
    segs = feed(conn, t + 0.1, seq=IRS + 1, ack=base + MSS, sack_blocks=sacked)
    assert segs == [seg_of(d, 1), seg_of(d, 4)]


def test_sack_rescue_retransmission_of_the_tail() -> None:
    """RFC 6675 NextSeg rule 4: the first and the last segment are lost; the
    SACKs above the first make it lost (rule 1), nothing marks the last one
    lost and there is no new data: one rescue retransmission covers it."""
    conn = established(cfg(sack=True), sack=True, rtt=0.1)
    d = payload(10 * MSS)
    conn.send(d, 0.1)
    assert len(conn.poll_transmit(0.1)) == 10
    base = ISS + 1
    sacked = ((base + MSS, base + 9 * MSS),)
    # ssthresh = cwnd = FlightSize/2 = 5 MSS; pipe after the retransmission 2 MSS.
    segs = feed(conn, 0.2, seq=IRS + 1, ack=base, sack_blocks=sacked)
    assert segs == [seg_of(d, 0), seg_of(d, 9, last=True)]
    assert conn.cc.ssthresh == 5 * MSS
    # Once per recovery: a further SACK brings no second rescue.
    assert feed(conn, 0.21, seq=IRS + 1, ack=base, sack_blocks=sacked) == []
    feed(conn, 0.3, seq=IRS + 1, ack=base + 10 * MSS)
    assert conn.all_acked and conn.stats.timeouts == 0
