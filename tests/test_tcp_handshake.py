"""Opening: active and passive open, option negotiation, simultaneous open,
SYN retransmission, refusal (RFC 9293 §3.5, §3.10.7.2-3; RFC 7323; RFC 2018)."""

from __future__ import annotations

import errno
from dataclasses import replace

from tcp_fixtures import IN, IRS, ISS, LOCAL, REMOTE, cfg, established, feed, fire, out, syn_sent

from stack.tcp import ACK, RST, SYN, TcpConnection, TcpState
from stack.tcp.segment import PSH

FULL = dict(timestamps=True, sack=True, window_scaling=True, rcvbuf=256000)


def test_active_open_syn_carries_all_options() -> None:
    conn = TcpConnection.connect(cfg(**FULL), LOCAL, REMOTE, ISS, 2.0, ts_offset=0)
    assert conn.state is TcpState.SYN_SENT
    assert conn.poll_transmit(2.0) == [
        out(seq=ISS, ack=0, flags=SYN, window=65535, mss=1460, wscale=2,
            sack_permitted=True, ts=(2000, 0))
    ]
    assert conn.poll_transmit(2.0) == []
    assert conn.next_deadline() == 3.0  # RFC 6298 §2.1 initial RTO 1 s


def test_synack_negotiates_options_and_acks() -> None:
    conn = TcpConnection.connect(cfg(**FULL), LOCAL, REMOTE, ISS, 0.0, ts_offset=0)
    conn.poll_transmit(0.0)
    conn.on_segment(replace(IN, seq=IRS, ack=ISS + 1, flags=SYN | ACK, window=29200, mss=1400,
                            wscale=7, sack_permitted=True, ts=(777, 0)), 0.05)
    assert conn.state is TcpState.ESTABLISHED
    assert conn.send_mss == 1400 and conn.effective_mss == 1388  # 12 bytes of timestamps
    assert conn.snd_wscale == 7 and conn.rcv_wscale == 2
    assert conn.snd_wnd == 29200  # a SYN's window is never scaled (RFC 7323 §2.2)
    assert conn.ts_enabled and conn.sack_enabled and conn.ts_recent == 777
    assert conn.rtt.srtt == 0.05  # RTT from TSecr of the SYN-ACK
    # The next window update from the peer is scaled by 2**7.
    feed(conn, 0.06, seq=IRS + 1, ack=ISS + 1, window=1000, ts=(778, 50))
    assert conn.snd_wnd == 128000


def test_handshake_ack_exact() -> None:
    conn = TcpConnection.connect(cfg(**FULL), LOCAL, REMOTE, ISS, 0.0, ts_offset=0)
    conn.poll_transmit(0.0)
    conn.on_segment(replace(IN, seq=IRS, ack=ISS + 1, flags=SYN | ACK, window=29200,
                            mss=1460, wscale=7, sack_permitted=True, ts=(777, 0)), 0.05)
    # Window: 256000 >> 2 = 64000 (our scale is 2).
    assert conn.poll_transmit(0.05) == [out(seq=ISS + 1, ack=IRS + 1, window=64000, ts=(50, 777))]


def test_synack_without_options_disables_them() -> None:
    conn = TcpConnection.connect(cfg(**FULL), LOCAL, REMOTE, ISS, 0.0)
    conn.poll_transmit(0.0)
    acks = feed(conn, 0.01, seq=IRS, ack=ISS + 1, flags=SYN | ACK, window=8000, mss=None)
    # No window scaling: our window is capped at 65535 and unscaled.
    assert acks == [out(seq=ISS + 1, ack=IRS + 1, window=65535)]
    assert (conn.rcv_wscale, conn.snd_wscale, conn.ts_enabled, conn.sack_enabled) == (
        0, 0, False, False)
    assert conn.send_mss == 536  # RFC 9293 §3.7.1 default for IPv4


def test_passive_open_echoes_only_offered_options() -> None:
    syn = replace(IN, seq=IRS, ack=0, flags=SYN, window=65535, mss=1460, wscale=7,
                  sack_permitted=True, ts=(4242, 0))
    conn = TcpConnection.accept_syn(cfg(**FULL), LOCAL, REMOTE, syn, ISS, 1.0, ts_offset=0)
    assert conn.state is TcpState.SYN_RECEIVED
    assert conn.poll_transmit(1.0) == [
        out(seq=ISS, ack=IRS + 1, flags=SYN | ACK, window=65535, mss=1460, wscale=2,
            sack_permitted=True, ts=(1000, 4242))
    ]
    assert feed(conn, 1.02, seq=IRS + 1, ack=ISS + 1, window=500, ts=(4243, 1000)) == []
    assert conn.state is TcpState.ESTABLISHED
    assert conn.snd_wnd == 500 << 7
    assert conn.rtt.srtt == 0.02

    plain = replace(syn, wscale=None, sack_permitted=False, ts=None)
    conn2 = TcpConnection.accept_syn(cfg(**FULL), LOCAL, REMOTE, plain, ISS, 1.0)
    assert conn2.poll_transmit(1.0) == [
        out(seq=ISS, ack=IRS + 1, flags=SYN | ACK, window=65535, mss=1460)
    ]


def test_handshake_ack_carrying_data() -> None:
    syn = replace(IN, seq=IRS, flags=SYN, mss=1460)
    conn = TcpConnection.accept_syn(cfg(), LOCAL, REMOTE, syn, ISS, 0.0)
    conn.poll_transmit(0.0)
    feed(conn, 0.01, seq=IRS + 1, ack=ISS + 1, flags=ACK | PSH, payload=b"GET /")
    assert conn.state is TcpState.ESTABLISHED
    assert conn.recv(100) == b"GET /"


def test_syn_retransmission_backoff_then_etimedout() -> None:
    conn = syn_sent(cfg(syn_retries=3))
    syn = out(seq=ISS, flags=SYN, window=64000, mss=1460)
    t = 0.0
    for rto in (1.0, 2.0, 4.0):
        t += rto
        assert conn.next_deadline() == t
        assert fire(conn, t - 0.001) == []
        assert fire(conn, t) == [syn]
    t += 8.0
    assert conn.next_deadline() == t
    assert fire(conn, t) == []
    assert conn.state is TcpState.CLOSED and conn.error == errno.ETIMEDOUT
    assert conn.stats.retransmissions == 3


def test_synack_after_syn_retransmission_rto_fallback() -> None:
    conn = syn_sent()
    fire(conn, 1.0)  # SYN retransmitted: no RTT sample (Karn)
    feed(conn, 1.1, seq=IRS, ack=ISS + 1, flags=SYN | ACK, mss=1460)
    assert conn.state is TcpState.ESTABLISHED
    assert conn.rtt.srtt is None
    assert conn.rtt.rto == 3.0  # RFC 6298 §5.7


def test_rst_in_syn_sent_refuses() -> None:
    conn = syn_sent()
    assert feed(conn, 0.1, seq=0, ack=ISS + 1, flags=RST | ACK, window=0) == []
    assert conn.state is TcpState.CLOSED
    assert conn.error == errno.ECONNREFUSED


def test_rst_without_ack_or_with_bad_ack_in_syn_sent_is_ignored() -> None:
    conn = syn_sent()
    assert feed(conn, 0.1, seq=0, ack=0, flags=RST, window=0) == []
    assert feed(conn, 0.1, seq=0, ack=ISS + 5, flags=RST | ACK, window=0) == []
    assert conn.state is TcpState.SYN_SENT


def test_bad_ack_in_syn_sent_answered_with_rst() -> None:
    conn = syn_sent()
    # RFC 9293 §3.10.7.3: <SEQ=SEG.ACK><CTL=RST>
    assert feed(conn, 0.1, seq=IRS, ack=ISS + 77, flags=SYN | ACK) == [
        out(seq=ISS + 77, ack=0, flags=RST, window=0)
    ]
    assert conn.state is TcpState.SYN_SENT


def test_simultaneous_open() -> None:
    a = TcpConnection.connect(cfg(), LOCAL, REMOTE, ISS, 0.0)
    b = TcpConnection.connect(cfg(), REMOTE, LOCAL, IRS, 0.0)
    syn_a, = a.poll_transmit(0.0)
    syn_b, = b.poll_transmit(0.0)
    a.on_segment(syn_b, 0.01)
    b.on_segment(syn_a, 0.01)
    assert a.state is b.state is TcpState.SYN_RECEIVED
    synack_a, = a.poll_transmit(0.01)
    synack_b, = b.poll_transmit(0.01)
    assert synack_a == out(seq=ISS, ack=IRS + 1, flags=SYN | ACK, window=64000, mss=1460)
    a.on_segment(synack_b, 0.02)
    b.on_segment(synack_a, 0.02)
    assert a.state is b.state is TcpState.ESTABLISHED
    assert a.poll_transmit(0.02) == [out(seq=ISS + 1, ack=IRS + 1, window=64000)]
    assert a.snd_una == ISS + 1 and b.snd_una == IRS + 1


def test_syn_received_retransmits_synack_on_duplicate_syn_and_timeout() -> None:
    syn = replace(IN, seq=IRS, flags=SYN, mss=1460)
    conn = TcpConnection.accept_syn(cfg(), LOCAL, REMOTE, syn, ISS, 0.0)
    synack = out(seq=ISS, ack=IRS + 1, flags=SYN | ACK, window=64000, mss=1460)
    assert conn.poll_transmit(0.0) == [synack]
    conn.on_segment(syn, 0.5)
    assert conn.poll_transmit(0.5) == [synack]
    assert fire(conn, 1.0) == [synack]
    assert conn.next_deadline() == 3.0


def test_syn_received_bad_ack_rst_and_reset() -> None:
    syn = replace(IN, seq=IRS, flags=SYN, mss=1460)
    conn = TcpConnection.accept_syn(cfg(), LOCAL, REMOTE, syn, ISS, 0.0)
    conn.poll_transmit(0.0)
    assert feed(conn, 0.1, seq=IRS + 1, ack=ISS + 9) == [out(seq=ISS + 9, flags=RST, window=0)]
    assert conn.state is TcpState.SYN_RECEIVED
    assert feed(conn, 0.1, seq=IRS + 1, ack=0, flags=RST, window=0) == []
    assert conn.state is TcpState.CLOSED


def test_established_fixture_state() -> None:
    conn = established()
    assert (conn.snd_una, conn.snd_nxt, conn.rcv_nxt) == (ISS + 1, ISS + 1, IRS + 1)
    assert conn.cc is not None and conn.cc.cwnd == 10 * 1460
    assert conn.next_deadline() is None
