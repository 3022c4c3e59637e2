"""Timers: deadlines, keepalive (RFC 9293 §3.8.4), the persist timer and
zero-window probes (RFC 9293 §3.8.6.1), the delayed-ACK timer."""

from __future__ import annotations

import errno

import pytest
from tcp_fixtures import IRS, ISS, cfg, established, feed, fire, out, payload

from stack.tcp import ACK, PSH, TcpState

W = 64000
MSS = 1460


def test_idle_connection_has_no_deadline() -> None:
    conn = established()
    assert conn.next_deadline() is None
    assert fire(conn, 1000.0) == []


def test_keepalive_probes_then_timeout() -> None:
    conn = established(cfg(keepalive=True, keepalive_idle=10.0, keepalive_interval=2.0,
                           keepalive_count=3))
    probe = out(seq=ISS, ack=IRS + 1, window=W)  # SND.UNA - 1, no data
    assert conn.next_deadline() == 10.0
    assert fire(conn, 9.9) == []
    assert fire(conn, 10.0) == [probe]
    assert conn.next_deadline() == 12.0
    # The peer answers: the idle period starts again.
    assert feed(conn, 10.1, seq=IRS + 1, ack=ISS + 1) == []
    assert conn.next_deadline() == pytest.approx(20.1)
    for t in (20.1, 22.1, 24.1):
        assert fire(conn, t) == [probe]
    assert fire(conn, 26.1) == []
    assert conn.state is TcpState.CLOSED and conn.error == errno.ETIMEDOUT
    assert conn.stats.keepalive_probes == 4


def test_keepalive_postponed_by_traffic() -> None:
    conn = established(cfg(keepalive=True, keepalive_idle=10.0))
    feed(conn, 5.0, seq=IRS + 1, ack=ISS + 1, payload=b"hi", flags=ACK | PSH)
    fire(conn, 5.04)
    assert conn.next_deadline() == 15.0


def test_zero_window_probe_with_backoff_then_reopen() -> None:
    conn = established(window=0)
    d = payload(3000)
    conn.send(d, 1.0)
    assert conn.poll_transmit(1.0) == []
    assert conn.next_deadline() == pytest.approx(1.2)  # persist: max(RTO, 0.2)
    probe = out(seq=ISS, ack=IRS + 1, window=W)
    assert fire(conn, 1.2) == [probe]
    assert conn.next_deadline() == pytest.approx(1.6)  # backed off x2
    # Still zero in the answer: probing goes on, the interval doubles again.
    assert feed(conn, 1.25, seq=IRS + 1, ack=ISS + 1, window=0) == []
    assert fire(conn, 1.6) == [probe]
    assert conn.next_deadline() == pytest.approx(2.4)
    assert conn.stats.zero_window_probes == 2 and conn.state is TcpState.ESTABLISHED
    # The window opens: data flows at once, the persist timer is gone.
    segs = feed(conn, 1.7, seq=IRS + 1, ack=ISS + 1, window=W)
    assert [len(s.payload) for s in segs] == [MSS, MSS]  # the 80-byte tail: Nagle
    assert conn.next_deadline() == pytest.approx(1.7 + conn.rtt.rto)
    segs = feed(conn, 1.8, seq=IRS + 1, ack=ISS + 1 + 2 * MSS, window=W)
    assert segs == [out(seq=ISS + 1 + 2 * MSS, ack=IRS + 1, flags=ACK | PSH, window=W,
                        payload=d[2 * MSS:])]


def test_window_shrinks_to_zero_with_data_in_flight() -> None:
    conn = established()
    conn.send(payload(1000), 0.0)
    conn.poll_transmit(0.0)
    conn.send(payload(1000, 1), 0.0)
    # All acknowledged but the window is closed: the rest waits for the persist timer.
    assert feed(conn, 0.1, seq=IRS + 1, ack=ISS + 1001, window=0) == []
    t = conn.next_deadline()
    assert t is not None
    assert fire(conn, t) == [out(seq=ISS + 1000, ack=IRS + 1, window=W)]


def test_persist_sws_override_sends_into_small_window() -> None:
    conn = established()
    conn.send(payload(20000), 0.0)
    assert len(conn.poll_transmit(0.0)) == 10  # the initial window
    # Everything acked, but only 1000 bytes of window (< MAX.SND.WND / 2):
    # the sender waits (SWS) until the persist timer overrides (RFC 9293 §3.8.6.2.1).
    assert feed(conn, 0.1, seq=IRS + 1, ack=ISS + 1 + 10 * MSS, window=1000) == []
    t = conn.next_deadline()
    assert t is not None
    segs = fire(conn, t)
    assert [len(s.payload) for s in segs] == [1000]


def test_delayed_ack_deadline_and_piggyback() -> None:
    conn = established()
    feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, payload=b"req", flags=ACK | PSH)
    assert conn.next_deadline() == pytest.approx(1.04)
    # A reply before the timer carries the ACK; the timer is cancelled.
    conn.send(b"resp", 1.01)
    assert conn.poll_transmit(1.01) == [
        out(seq=ISS + 1, ack=IRS + 4, flags=ACK | PSH, window=W - 3, payload=b"resp")
    ]
    assert conn.next_deadline() == pytest.approx(1.01 + conn.rtt.rto)


def test_time_wait_deadline_configurable() -> None:
    conn = established(cfg(time_wait=2.0))
    conn.shutdown_write(1.0)
    conn.poll_transmit(1.0)
    feed(conn, 1.1, seq=IRS + 1, ack=ISS + 2, flags=ACK | 0x01)
    assert conn.state is TcpState.TIME_WAIT
    assert conn.next_deadline() == pytest.approx(3.1)
    fire(conn, 3.1)
    assert conn.state is TcpState.CLOSED and conn.next_deadline() is None


def test_persist_interval_capped() -> None:
    conn = established(cfg(persist_max=1.0), window=0)
    conn.send(b"x" * 100, 0.0)
    conn.poll_transmit(0.0)
    gaps = []
    t = 0.0
    for _ in range(6):
        nxt = conn.next_deadline()
        assert nxt is not None
        gaps.append(round(nxt - t, 6))
        t = nxt
        assert len(fire(conn, t)) == 1
    assert gaps == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert conn.state is TcpState.ESTABLISHED  # persist never gives up (RFC 9293 §3.8.6.1)


def test_keepalive_waits_while_data_in_flight() -> None:
    conn = established(cfg(keepalive=True, keepalive_idle=10.0, keepalive_interval=1.0,
                           max_retries=100, max_rto=1.0))
    conn.send(b"x", 0.0)
    conn.poll_transmit(0.0)
    # No answer at all: the RTO retransmits; keepalive does not probe meanwhile.
    t = 0.0
    while t < 12.0:
        nxt = conn.next_deadline()
        assert nxt is not None
        t = nxt
        for seg in fire(conn, t):
            assert seg.payload == b"x"
    assert conn.stats.keepalive_probes == 0
