"""Data transfer in ESTABLISHED: segment sizing (effective MSS, super-segments,
PSH), Nagle, delayed and immediate ACKs, reassembly and SACK generation, the
receive window (SWS avoidance, scaling, zero window), PAWS and sequence wrap."""

from __future__ import annotations

from tcp_fixtures import IRS, ISS, cfg, established, feed, fire, out, pair, payload, transfer

from stack.tcp import ACK, PSH, TcpState
from stack.tcp.seq import seq_add

MSS = 1460


def test_small_write_one_segment_with_psh() -> None:
    conn = established()
    assert conn.send(b"hello", 0.0) == 5
    assert conn.poll_transmit(0.0) == [
        out(seq=ISS + 1, ack=IRS + 1, flags=ACK | PSH, window=64000, payload=b"hello")
    ]
    assert conn.next_deadline() == conn.rtt.rto  # RFC 6298 §5.1 timer started
    assert not conn.all_acked
    assert feed(conn, 0.03, seq=IRS + 1, ack=ISS + 6) == []
    assert conn.all_acked and conn.next_deadline() is None  # §5.2: timer stopped
    assert conn.stats.bytes_sent == 5


def test_bulk_send_fills_cwnd_in_one_poll() -> None:
    conn = established()
    data = payload(20000)
    conn.send(data, 0.0)
    segs = conn.poll_transmit(0.0)
    # Initial window 10 * MSS (RFC 6928): ten full segments, PSH on the
    # last of the burst only.
    assert [len(s.payload) for s in segs] == [MSS] * 10
    assert [s.seq for s in segs] == [ISS + 1 + i * MSS for i in range(10)]
    assert [s.flags for s in segs] == [ACK] * 9 + [ACK | PSH]
    assert b"".join(bytes(s.payload) for s in segs) == data[: 10 * MSS]
    # An ACK for two segments: slow start (+2 MSS) opens room for 4 segments;
    # 5400 bytes are left: three full ones go, the 1020-byte tail waits (Nagle).
    segs = feed(conn, 0.05, seq=IRS + 1, ack=ISS + 1 + 2 * MSS)
    assert [len(s.payload) for s in segs] == [MSS] * 3
    assert conn.cc.cwnd == 12 * MSS
    segs = feed(conn, 0.06, seq=IRS + 1, ack=ISS + 1 + 13 * MSS)
    assert segs == [
        out(seq=ISS + 1 + 13 * MSS, ack=IRS + 1, flags=ACK | PSH, window=64000,
            payload=data[13 * MSS:])
    ]


def test_super_segments_with_tso() -> None:
    conn = established(cfg(max_segment=65000, sndbuf=200000))
    data = payload(100000)
    conn.send(data, 0.0)
    segs = conn.poll_transmit(0.0)
    assert len(segs) == 1
    assert len(segs[0].payload) == 10 * MSS and segs[0].gso == MSS
    # One ACK for all ten: slow start with byte counting (RFC 3465, L=2)
    # grows cwnd by 2 MSS; the whole window leaves as one super-segment.
    segs = feed(conn, 0.05, seq=IRS + 1, ack=ISS + 1 + 10 * MSS, window=64000)
    assert [len(s.payload) for s in segs] == [12 * MSS]
    assert all(s.gso == MSS for s in segs)


def test_effective_mss_excludes_timestamp_option() -> None:
    conn = established(cfg(timestamps=True), ts=(100, 0))
    assert conn.effective_mss == MSS - 12
    conn.send(payload(3000), 0.0)
    segs = conn.poll_transmit(0.0)
    # Two full segments of 1448; the 104-byte tail is held by Nagle.
    assert [len(s.payload) for s in segs] == [1448, 1448]
    assert segs[0].ts == (0, 100)
    segs = feed(conn, 0.05, seq=IRS + 1, ack=ISS + 1 + 2896, ts=(150, 0))
    assert [len(s.payload) for s in segs] == [104]
    assert segs[0].flags == ACK | PSH and segs[0].ts == (50, 150)


def test_nagle_holds_second_small_segment() -> None:
    conn = established()
    conn.send(b"a", 0.0)
    assert [bytes(s.payload) for s in conn.poll_transmit(0.0)] == [b"a"]
    conn.send(b"b", 0.0)
    conn.send(b"c", 0.0)
    assert conn.poll_transmit(0.001) == []
    assert feed(conn, 0.05, seq=IRS + 1, ack=ISS + 2) == [
        out(seq=ISS + 2, ack=IRS + 1, flags=ACK | PSH, window=64000, payload=b"bc")
    ]


def test_nodelay_sends_at_once() -> None:
    conn = established(cfg(nodelay=True))
    conn.send(b"a", 0.0)
    conn.poll_transmit(0.0)
    conn.send(b"b", 0.0)
    assert conn.poll_transmit(0.001) == [
        out(seq=ISS + 2, ack=IRS + 1, flags=ACK | PSH, window=64000, payload=b"b")
    ]


def test_delayed_ack_timer_and_every_second_segment() -> None:
    conn = established()
    d = payload(3 * MSS)
    assert feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, payload=d[:MSS]) == []
    assert conn.next_deadline() == 1.04
    assert fire(conn, 1.039) == []
    assert fire(conn, 1.04) == [out(seq=ISS + 1, ack=IRS + 1 + MSS, window=64000 - MSS)]
    # Two full segments: the second is acknowledged at once (RFC 5681 §4.2).
    assert feed(conn, 2.0, seq=IRS + 1 + MSS, ack=ISS + 1, payload=d[MSS: 2 * MSS]) == []
    assert feed(conn, 2.0, seq=IRS + 1 + 2 * MSS, ack=ISS + 1, payload=d[2 * MSS:]) == [
        out(seq=ISS + 1, ack=IRS + 1 + 3 * MSS, window=64000 - 3 * MSS)
    ]
    assert conn.next_deadline() is None
    assert conn.recv(10**6) == d
    # Reading reopens the window by 3 MSS, but that does not double it: no
    # update of its own (as Linux); the next ACK carries the full window.
    assert conn.poll_transmit(2.1) == []
    assert feed(conn, 2.2, seq=IRS + 1 + 3 * MSS, ack=ISS + 1, payload=b"x") == []
    assert fire(conn, 2.3) == [out(seq=ISS + 1, ack=IRS + 2 + 3 * MSS, window=63999)]


def test_delayed_ack_disabled() -> None:
    conn = established(cfg(delayed_ack=0))
    assert feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, payload=b"x") == [
        out(seq=ISS + 1, ack=IRS + 2, window=63999)
    ]


def test_out_of_order_immediate_dupack_then_fill() -> None:
    conn = established()
    d = payload(3 * MSS)
    assert feed(conn, 1.0, seq=IRS + 1 + MSS, ack=ISS + 1, payload=d[MSS: 2 * MSS]) == [
        out(seq=ISS + 1, ack=IRS + 1, window=64000)
    ]
    assert feed(conn, 1.0, seq=IRS + 1 + 2 * MSS, ack=ISS + 1, payload=d[2 * MSS:]) == [
        out(seq=ISS + 1, ack=IRS + 1, window=64000)
    ]
    assert conn.readable == 0
    # The hole is filled: immediate ACK of everything (RFC 5681 §4.2).
    assert feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, payload=d[:MSS]) == [
        out(seq=ISS + 1, ack=IRS + 1 + 3 * MSS, window=64000 - 3 * MSS)
    ]
    assert conn.recv(10**6) == d


def test_sack_blocks_most_recent_first() -> None:
    conn = established(cfg(sack=True), sack=True)
    d = payload(6 * MSS)
    base = IRS + 1

    def seg(i: int) -> dict[str, object]:
        return dict(seq=base + i * MSS, ack=ISS + 1, payload=d[i * MSS: (i + 1) * MSS])

    assert feed(conn, 1.0, **seg(1)) == [
        out(seq=ISS + 1, ack=base, window=64000, sack_blocks=((base + MSS, base + 2 * MSS),))
    ]
    assert feed(conn, 1.0, **seg(4))[0].sack_blocks == (
        (base + 4 * MSS, base + 5 * MSS), (base + MSS, base + 2 * MSS))
    assert feed(conn, 1.0, **seg(2))[0].sack_blocks == (
        (base + MSS, base + 3 * MSS), (base + 4 * MSS, base + 5 * MSS))
    acks = feed(conn, 1.0, **seg(0))
    assert acks == [out(seq=ISS + 1, ack=base + 3 * MSS, window=64000 - 3 * MSS,
                        sack_blocks=((base + 4 * MSS, base + 5 * MSS),))]


def test_data_beyond_window_is_dropped() -> None:
    conn = established(cfg(rcvbuf=4000))
    d = payload(5000)
    # In order but larger than the window: only 4000 bytes are taken.
    acks = feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, payload=d)
    assert acks == [out(seq=ISS + 1, ack=IRS + 1 + 4000, window=0)]
    assert conn.readable == 4000
    # Zero window: a new segment is not acceptable; ACK, drop (RFC 9293 §3.10.7.4).
    assert feed(conn, 1.1, seq=IRS + 4001, ack=ISS + 1, payload=d[4000:]) == [
        out(seq=ISS + 1, ack=IRS + 4001, window=0)
    ]
    assert conn.stats.out_of_window == 1
    # The application reads: the window reopens with an update.
    assert conn.recv(4000) == d[:4000]
    assert conn.poll_transmit(1.2) == [out(seq=ISS + 1, ack=IRS + 4001, window=4000)]


def test_receiver_sws_avoidance_keeps_right_edge() -> None:
    conn = established(cfg(rcvbuf=10000))
    feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, payload=payload(9000))
    fire(conn, 1.1)
    assert conn.recv(500) and conn.readable == 8500
    # 500 bytes free is less than min(MSS, rcvbuf/2): the window stays at 1000.
    assert conn.poll_transmit(1.2) == []
    acks = feed(conn, 1.3, seq=IRS + 9001, ack=ISS + 1, payload=b"z" * 100, flags=ACK | PSH)
    assert acks == [] and conn._rcv_wnd() == 900
    conn.recv(8000)
    assert fire(conn, 1.4) == [out(seq=ISS + 1, ack=IRS + 9101, window=9400)]


def test_window_scaling_both_ways() -> None:
    conn = established(cfg(window_scaling=True, rcvbuf=256000), wscale=3, window=1000)
    assert conn.rcv_wscale == 2 and conn.snd_wscale == 3
    assert conn.snd_wnd == 1000  # SYN-ACK window: unscaled
    feed(conn, 0.1, seq=IRS + 1, ack=ISS + 1, window=1000)
    assert conn.snd_wnd == 8000
    acks = feed(conn, 0.2, seq=IRS + 1, ack=ISS + 1, window=1000, payload=b"q" * 1000,
                flags=ACK | PSH)
    assert acks == []
    assert fire(conn, 0.25) == [out(seq=ISS + 1, ack=IRS + 1001, window=(256000 - 1000) >> 2)]


def test_send_window_limits_and_sws_small_segment() -> None:
    conn = established(window=3000)
    conn.send(payload(10000), 0.0)
    segs = conn.poll_transmit(0.0)
    # 3000 bytes of window: two full segments; 80 bytes is below half the
    # largest window seen, so the sender waits (RFC 9293 §3.8.6.2.1).
    assert [len(s.payload) for s in segs] == [MSS, MSS]


def test_paws_drops_old_timestamp_and_24_day_rule() -> None:
    conn = established(cfg(timestamps=True), ts=(5000, 0))
    acks = feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, ts=(4000, 1000), payload=b"old")
    assert acks == [out(seq=ISS + 1, ack=IRS + 1, window=64000, ts=(1000, 5000))]
    assert conn.readable == 0 and conn.stats.paws_drops == 1
    # Newer timestamp: accepted; TS.Recent follows (RFC 7323 §4.3).
    feed(conn, 2.0, seq=IRS + 1, ack=ISS + 1, ts=(5001, 1000), payload=b"new")
    assert conn.readable == 3 and conn.ts_recent == 5001
    # After 24 days without a segment TS.Recent is invalid: a wrapped TSval passes.
    later = 2.0 + 25 * 86400
    feed(conn, later, seq=IRS + 4, ack=ISS + 1, ts=(10, 1000), payload=b"late")
    assert conn.readable == 7 and conn.ts_recent == 10


def test_sequence_wrap_100k_both_ways() -> None:
    c = cfg(timestamps=True, sack=True, window_scaling=True)
    a, b, pipe = pair(c, c, iss_a=2**32 - 1000, iss_b=2**32 - 500)
    data = payload(100_000, seed=1)
    assert transfer(a, b, pipe, data, close=False) == data
    back = payload(100_000, seed=2)
    assert transfer(b, a, pipe, back) == back
    assert seq_add(2**32 - 1000, 100_001) == a.snd_una
    assert a.snd_una < 2**32 - 1000  # wrapped


def test_receive_after_wrap_with_fixture() -> None:
    irs = 2**32 - 3
    conn = established(irs=irs)
    feed(conn, 1.0, seq=seq_add(irs, 1), ack=ISS + 1, payload=b"0123456789", flags=ACK | PSH)
    assert conn.rcv_nxt == 8
    assert conn.recv(100) == b"0123456789"
    assert conn.state is TcpState.ESTABLISHED


def test_tsecr_echoes_earliest_unacknowledged_segment() -> None:
    """RFC 7323 §4.3: with delayed ACKs TSecr echoes the TSval of the first
    segment the ACK covers (TS.Recent moves only when SEG.SEQ <= Last.ACK.sent)."""
    conn = established(cfg(timestamps=True), ts=(100, 0))
    feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, ts=(200, 0), payload=b"a" * 1000)
    feed(conn, 1.01, seq=IRS + 1001, ack=ISS + 1, ts=(210, 0), payload=b"b" * 1000)
    assert fire(conn, 1.04) == [out(seq=ISS + 1, ack=IRS + 2001, window=62000, ts=(1040, 200))]
    # The next segment starts at Last.ACK.sent: TS.Recent follows it.
    feed(conn, 1.1, seq=IRS + 2001, ack=ISS + 1, ts=(220, 0), payload=b"c")
    assert conn.ts_recent == 220


def test_idle_restart_window() -> None:
    """RFC 5681 §4.1: after an idle period longer than the RTO, at most the
    initial window leaves at once."""
    conn = established(cfg(sndbuf=200000), window=64000)
    conn.cc.cwnd = 40 * MSS
    conn.send(payload(100000), 10.0)
    assert len(conn.poll_transmit(10.0)) == 10
