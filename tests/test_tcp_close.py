"""Closing: FIN handshakes (active, passive, simultaneous), half-close both
ways, TIME-WAIT, RST processing with RFC 5961 challenge ACKs, abort."""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest
from tcp_fixtures import IN, IRS, ISS, LOCAL, REMOTE, cfg, established, feed, fire, out, syn_sent

from stack.tcp import ACK, FIN, PSH, RST, SYN, TcpConnection, TcpState

W = 64000
# After the peer's FIN the right edge stays put (receiver SWS avoidance, RFC
# 9293 §3.8.6.2.2) while RCV.NXT moves one on: one less to offer.
WF = W - 1


def test_active_close_through_time_wait() -> None:
    conn = established()
    conn.shutdown_write(1.0)
    assert conn.state is TcpState.FIN_WAIT_1
    assert conn.poll_transmit(1.0) == [out(seq=ISS + 1, ack=IRS + 1, flags=ACK | FIN, window=W)]
    assert not conn.all_acked
    assert feed(conn, 1.1, seq=IRS + 1, ack=ISS + 2) == []
    assert conn.state is TcpState.FIN_WAIT_2 and conn.all_acked
    assert feed(conn, 2.0, seq=IRS + 1, ack=ISS + 2, flags=ACK | FIN) == [
        out(seq=ISS + 2, ack=IRS + 2, window=WF)
    ]
    assert conn.state is TcpState.TIME_WAIT and conn.eof_received
    assert conn.next_deadline() == 62.0
    # A retransmitted FIN is acknowledged again and restarts 2*MSL.
    assert feed(conn, 30.0, seq=IRS + 1, ack=ISS + 2, flags=ACK | FIN) == [
        out(seq=ISS + 2, ack=IRS + 2, window=WF)
    ]
    assert conn.next_deadline() == 90.0
    assert fire(conn, 89.9) == [] and conn.state is TcpState.TIME_WAIT
    assert fire(conn, 90.0) == [] and conn.state is TcpState.CLOSED
    assert conn.error is None


def test_fin_ack_together_in_fin_wait_1() -> None:
    conn = established()
    conn.shutdown_write(1.0)
    conn.poll_transmit(1.0)
    assert feed(conn, 1.1, seq=IRS + 1, ack=ISS + 2, flags=ACK | FIN) == [
        out(seq=ISS + 2, ack=IRS + 2, window=WF)
    ]
    assert conn.state is TcpState.TIME_WAIT


def test_passive_close_close_wait_last_ack() -> None:
    conn = established()
    assert feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, flags=ACK | FIN) == [
        out(seq=ISS + 1, ack=IRS + 2, window=WF)
    ]
    assert conn.state is TcpState.CLOSE_WAIT
    assert conn.eof_received and conn.recv(10) == b""
    # Half-closed by the peer: we keep sending.
    conn.send(b"still talking", 1.1)
    assert conn.poll_transmit(1.1) == [
        out(seq=ISS + 1, ack=IRS + 2, flags=ACK | PSH, window=WF, payload=b"still talking")
    ]
    conn.shutdown_write(1.2)
    assert conn.state is TcpState.LAST_ACK
    # Nagle does not hold back a FIN; it is a segment of its own here.
    assert conn.poll_transmit(1.2) == [out(seq=ISS + 14, ack=IRS + 2, flags=ACK | FIN, window=WF)]
    feed(conn, 1.3, seq=IRS + 2, ack=ISS + 14)
    assert conn.state is TcpState.LAST_ACK
    feed(conn, 1.3, seq=IRS + 2, ack=ISS + 15)
    assert conn.state is TcpState.CLOSED and conn.error is None and conn.all_acked


def test_simultaneous_close_closing() -> None:
    conn = established()
    conn.shutdown_write(1.0)
    conn.poll_transmit(1.0)
    # The peer's FIN crosses ours: it does not acknowledge our FIN.
    assert feed(conn, 1.05, seq=IRS + 1, ack=ISS + 1, flags=ACK | FIN) == [
        out(seq=ISS + 2, ack=IRS + 2, window=WF)
    ]
    assert conn.state is TcpState.CLOSING
    assert feed(conn, 1.1, seq=IRS + 2, ack=ISS + 2) == []
    assert conn.state is TcpState.TIME_WAIT


def test_fin_piggybacks_on_last_data() -> None:
    conn = established()
    conn.send(b"bye", 0.0)
    conn.shutdown_write(0.0)
    assert conn.poll_transmit(0.0) == [
        out(seq=ISS + 1, ack=IRS + 1, flags=ACK | PSH | FIN, window=W, payload=b"bye")
    ]
    with pytest.raises(OSError) as exc:
        conn.send(b"more", 0.0)
    assert exc.value.errno == errno.EPIPE
    feed(conn, 0.1, seq=IRS + 1, ack=ISS + 4)
    assert conn.state is TcpState.FIN_WAIT_1 and not conn.all_acked
    feed(conn, 0.1, seq=IRS + 1, ack=ISS + 5)
    assert conn.state is TcpState.FIN_WAIT_2 and conn.all_acked


def test_half_close_keeps_receiving() -> None:
    conn = established()
    conn.shutdown_write(1.0)
    conn.poll_transmit(1.0)
    feed(conn, 1.1, seq=IRS + 1, ack=ISS + 2)
    assert conn.state is TcpState.FIN_WAIT_2
    acks = feed(conn, 1.2, seq=IRS + 1, ack=ISS + 2, flags=ACK | PSH, payload=b"x" * 3000)
    assert acks == [out(seq=ISS + 2, ack=IRS + 3001, window=W - 3000)]
    assert conn.recv(5000) == b"x" * 3000
    feed(conn, 1.3, seq=IRS + 3001, ack=ISS + 2, flags=ACK | FIN)
    assert conn.state is TcpState.TIME_WAIT and conn.eof_received


def test_fin_beyond_hole_waits_for_data() -> None:
    conn = established()
    acks = feed(conn, 1.0, seq=IRS + 11, ack=ISS + 1, flags=ACK | FIN, payload=b"B" * 10)
    assert acks == [out(seq=ISS + 1, ack=IRS + 1, window=W)]
    assert conn.state is TcpState.ESTABLISHED
    acks = feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, payload=b"A" * 10)
    assert acks == [out(seq=ISS + 1, ack=IRS + 22, window=W - 21)]
    assert conn.state is TcpState.CLOSE_WAIT
    assert conn.recv(100) == b"A" * 10 + b"B" * 10


def test_fin_retransmitted_on_timeout() -> None:
    conn = established()
    conn.shutdown_write(0.0)
    fin = out(seq=ISS + 1, ack=IRS + 1, flags=ACK | FIN, window=W)
    assert conn.poll_transmit(0.0) == [fin]
    rto = conn.rtt.rto
    assert fire(conn, rto) == [fin]
    assert conn.next_deadline() == pytest.approx(3 * rto)


def test_close_with_unread_data_resets() -> None:
    conn = established()
    feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, payload=b"unread")
    conn.close(1.1)
    assert conn.state is TcpState.CLOSED
    assert conn.poll_transmit(1.1) == [out(seq=ISS + 1, ack=IRS + 7, flags=RST | ACK, window=0)]


def test_abort_sends_rst() -> None:
    conn = established()
    conn.abort(1.0)
    assert conn.poll_transmit(1.0) == [out(seq=ISS + 1, ack=IRS + 1, flags=RST | ACK, window=0)]
    assert conn.state is TcpState.CLOSED and conn.poll_transmit(1.0) == []


def test_close_then_fin_wait_2_orphan_timeout() -> None:
    conn = established(cfg(time_wait=10.0))
    conn.close(1.0)
    conn.poll_transmit(1.0)
    feed(conn, 1.1, seq=IRS + 1, ack=ISS + 2)
    assert conn.state is TcpState.FIN_WAIT_2
    assert conn.next_deadline() == pytest.approx(11.1)
    fire(conn, 11.1)
    assert conn.state is TcpState.CLOSED


# ---------------------------------------------------------------- RST, RFC 5961
def test_rst_exact_sequence_resets() -> None:
    conn = established()
    assert feed(conn, 1.0, seq=IRS + 1, ack=0, flags=RST, window=0) == []
    assert conn.state is TcpState.CLOSED and conn.error == errno.ECONNRESET
    with pytest.raises(OSError):
        conn.send(b"x", 1.0)


def test_rst_in_window_not_exact_challenge_ack() -> None:
    conn = established()
    assert feed(conn, 1.0, seq=IRS + 100, ack=0, flags=RST, window=0) == [
        out(seq=ISS + 1, ack=IRS + 1, window=W)
    ]
    assert conn.state is TcpState.ESTABLISHED and conn.stats.challenge_acks == 1


def test_rst_outside_window_dropped_silently() -> None:
    conn = established()
    assert feed(conn, 1.0, seq=IRS + 1 + W, ack=0, flags=RST, window=0) == []
    assert feed(conn, 1.0, seq=IRS, ack=0, flags=RST, window=0) == []
    assert conn.state is TcpState.ESTABLISHED


def test_challenge_acks_rate_limited() -> None:
    conn = established(cfg(challenge_ack_limit=10))
    sent = sum(len(feed(conn, 1.0 + i * 0.01, seq=IRS + 50, flags=RST, window=0))
               for i in range(15))
    assert sent == 10
    assert conn.stats.challenge_acks_suppressed == 5
    assert len(feed(conn, 2.5, seq=IRS + 50, flags=RST, window=0)) == 1


def test_host_challenge_limiter() -> None:
    conn = established()
    calls: list[float] = []
    conn.challenge_ack_limiter = lambda now: calls.append(now) or False
    assert feed(conn, 1.0, seq=IRS + 50, flags=RST, window=0) == []
    assert calls == [1.0]


def test_syn_in_established_challenge_ack() -> None:
    conn = established()
    assert feed(conn, 1.0, seq=IRS + 7, ack=0, flags=SYN, mss=1460) == [
        out(seq=ISS + 1, ack=IRS + 1, window=W)
    ]
    assert conn.state is TcpState.ESTABLISHED


def test_ack_of_unsent_data_challenged_and_dropped() -> None:
    conn = established()
    # RFC 5961 §5.2: SEG.ACK > SND.NXT: send an ACK, drop the segment (data too).
    assert feed(conn, 1.0, seq=IRS + 1, ack=ISS + 500, payload=b"data") == [
        out(seq=ISS + 1, ack=IRS + 1, window=W)
    ]
    assert conn.readable == 0 and conn.stats.bad_acks == 1


def test_ack_too_old_dropped() -> None:
    conn = established()
    # Older than SND.UNA - MAX.SND.WND (64000): not acceptable.
    acks = feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1 - 70000, payload=b"data")
    assert conn.readable == 0 and conn.stats.bad_acks == 1
    assert acks == [out(seq=ISS + 1, ack=IRS + 1, window=W)]


def test_rst_in_close_wait_and_time_wait() -> None:
    conn = established()
    feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, flags=ACK | FIN)
    feed(conn, 1.1, seq=IRS + 2, flags=RST, window=0)
    assert conn.state is TcpState.CLOSED and conn.error == errno.ECONNRESET

    conn = established()
    conn.shutdown_write(1.0)
    conn.poll_transmit(1.0)
    feed(conn, 1.1, seq=IRS + 1, ack=ISS + 2, flags=ACK | FIN)
    assert conn.state is TcpState.TIME_WAIT
    feed(conn, 1.2, seq=IRS + 2, flags=RST, window=0)
    assert conn.state is TcpState.CLOSED and conn.error is None


def test_close_in_syn_sent_is_immediate() -> None:
    conn = syn_sent()
    conn.close(0.1)
    assert conn.state is TcpState.CLOSED and conn.poll_transmit(0.1) == []
    assert conn.next_deadline() is None


def test_shutdown_in_syn_sent_fin_follows_establishment() -> None:
    conn = syn_sent()
    conn.send(b"early", 0.0)
    conn.shutdown_write(0.0)
    assert conn.state is TcpState.SYN_SENT
    assert feed(conn, 0.1, seq=IRS, ack=ISS + 1, flags=SYN | ACK, mss=1460) == [
        out(seq=ISS + 1, ack=IRS + 1, flags=ACK | PSH | FIN, window=W, payload=b"early")
    ]
    assert conn.state is TcpState.FIN_WAIT_1


def test_shutdown_in_syn_received_then_fin_wait_1() -> None:
    syn = replace(IN, seq=IRS, flags=SYN, mss=1460)
    conn = TcpConnection.accept_syn(cfg(), LOCAL, REMOTE, syn, ISS, 0.0)
    conn.poll_transmit(0.0)
    conn.shutdown_write(0.0)
    assert conn.state is TcpState.SYN_RECEIVED
    assert feed(conn, 0.1, seq=IRS + 1, ack=ISS + 1) == [
        out(seq=ISS + 1, ack=IRS + 1, flags=ACK | FIN, window=W)
    ]
    assert conn.state is TcpState.FIN_WAIT_1


def test_syn_received_to_close_wait_on_ack_with_fin() -> None:
    syn = replace(IN, seq=IRS, flags=SYN, mss=1460)
    conn = TcpConnection.accept_syn(cfg(), LOCAL, REMOTE, syn, ISS, 0.0)
    conn.poll_transmit(0.0)
    assert feed(conn, 0.1, seq=IRS + 1, ack=ISS + 1, flags=ACK | FIN, payload=b"q") == [
        out(seq=ISS + 1, ack=IRS + 3, window=W - 2)
    ]
    assert conn.state is TcpState.CLOSE_WAIT and conn.recv(5) == b"q"
