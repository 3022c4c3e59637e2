"""The MPTCP ``upper`` hook, statistics, buffers and odd inputs."""

from __future__ import annotations

from dataclasses import replace

from tcp_fixtures import (
    IN,
    IRS,
    ISS,
    LOCAL,
    REMOTE,
    cfg,
    established,
    feed,
    out,
    pair,
    payload,
    transfer,
)

from stack.tcp import ACK, FIN, PSH, RST, SYN, TcpConnection, TcpSegment, TcpState
from stack.tcp.segment import flags_str, options_length

W = 64000
DSS = bytes([30, 4, 0x20, 0x01])  # a raw kind-30 option (content irrelevant here)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[TcpSegment] = []
        self.written: list[TcpSegment] = []

    def on_options(self, conn: TcpConnection, seg: TcpSegment) -> None:
        self.seen.append(seg)

    def write_options(self, conn: TcpConnection, seg: TcpSegment) -> tuple[bytes, ...]:
        self.written.append(seg)
        return (DSS,)


def test_upper_hook_sees_acceptable_segments_and_adds_options() -> None:
    up = Recorder()
    conn = TcpConnection.connect(cfg(), LOCAL, REMOTE, ISS, 0.0, upper=up)
    syn, = conn.poll_transmit(0.0)
    assert syn.mptcp == (DSS,) and syn.flags == SYN
    synack = replace(IN, seq=IRS, ack=ISS + 1, flags=SYN | ACK, mss=1460, mptcp=(b"\x1e\x0c",))
    conn.on_segment(synack, 0.01)
    assert up.seen == [synack] and up.seen[0].mptcp == (b"\x1e\x0c",)  # untouched
    ack, = conn.poll_transmit(0.01)
    assert ack == out(seq=ISS + 1, ack=IRS + 1, window=W, mptcp=(DSS,))
    # An unacceptable segment is not passed up.
    conn.on_segment(replace(IN, seq=IRS + 10**6, ack=ISS + 1, payload=b"x"), 0.02)
    assert len(up.seen) == 1
    conn.on_segment(replace(IN, seq=IRS + 1, ack=ISS + 1, payload=b"y", mptcp=(DSS,)), 0.03)
    assert len(up.seen) == 2 and up.seen[1].mptcp == (DSS,)


def test_reserved_option_bytes_shrink_effective_mss() -> None:
    conn = established(cfg(timestamps=True), ts=(1, 0))
    conn.reserved_option_bytes = 20
    assert conn.effective_mss == 1460 - 12 - 20
    conn.send(payload(3000), 0.0)
    assert [len(s.payload) for s in conn.poll_transmit(0.0)] == [1428, 1428]


def test_stats_after_transfer() -> None:
    a, b, pipe = pair()
    data = payload(50_000)
    assert transfer(a, b, pipe, data) == data
    sa, sb = a.stats, b.stats
    assert sa.bytes_sent == 50_000 and sb.bytes_received == 50_000
    assert sa.segments_sent >= 35 and sb.segments_received >= 35
    assert sa.retransmissions == 0
    # The handshake sample is 10 ms (the SYN reached b at once), later ones 20 ms.
    assert sa.srtt is not None and 0.01 < sa.srtt < 0.03
    assert sa.rttvar is not None
    assert sa.cwnd > 10 * 1460 and sa.ssthresh > 0
    assert sa.state == "FIN-WAIT-2" and sb.state == "CLOSE-WAIT"
    assert set(sa.as_dict()) >= {"bytes_sent", "bytes_received", "retransmissions", "srtt",
                                 "rttvar", "cwnd", "ssthresh", "state"}


def test_send_buffer_bound_and_recv_into() -> None:
    conn = established(cfg(sndbuf=3000))
    assert conn.send(payload(5000), 0.0) == 3000
    assert conn.send_space == 0 and conn.send(b"more", 0.0) == 0
    conn.poll_transmit(0.0)
    feed(conn, 0.1, seq=IRS + 1, ack=ISS + 1 + 2920)
    assert conn.send_space == 2920
    feed(conn, 0.2, seq=IRS + 1, ack=ISS + 1 + 2920, payload=b"abcdef", flags=ACK | PSH)
    buf = bytearray(4)
    assert conn.recv_into(buf) == 4 and buf == b"abcd"
    assert conn.readable == 2 and conn.recv(10) == b"ef"
    assert conn.recv(10) == b"" and not conn.eof_received


def test_segments_to_closed_connection_are_dropped() -> None:
    conn = established()
    conn.abort(1.0)
    conn.poll_transmit(1.0)
    assert feed(conn, 1.1, seq=IRS + 1, ack=ISS + 1, payload=b"late") == []
    assert conn.stats.dropped == 1


def test_abort_in_syn_sent_is_silent() -> None:
    conn = TcpConnection.connect(cfg(), LOCAL, REMOTE, ISS, 0.0)
    conn.poll_transmit(0.0)
    conn.abort(0.1)
    assert conn.state is TcpState.CLOSED and conn.poll_transmit(0.1) == []


def test_segment_without_ack_bit_dropped() -> None:
    conn = established()
    assert feed(conn, 1.0, seq=IRS + 1, ack=0, flags=PSH, payload=b"noack") == []
    assert conn.readable == 0 and conn.stats.dropped == 1


def test_time_wait_ignores_new_data() -> None:
    conn = established()
    conn.shutdown_write(1.0)
    conn.poll_transmit(1.0)
    feed(conn, 1.1, seq=IRS + 1, ack=ISS + 2, flags=ACK | FIN)
    assert conn.state is TcpState.TIME_WAIT
    # Beyond the FIN: in the window, but no text is accepted in TIME-WAIT.
    feed(conn, 1.2, seq=IRS + 2, ack=ISS + 2, payload=b"zombie")
    assert conn.readable == 0


def test_old_duplicate_segment_is_acked() -> None:
    conn = established()
    feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, payload=b"abc", flags=ACK | PSH)
    conn.on_timer(1.04)
    conn.poll_transmit(1.04)
    # A retransmission of bytes we already have: immediate ACK, nothing delivered twice.
    assert feed(conn, 1.5, seq=IRS + 1, ack=ISS + 1, payload=b"abc") == [
        out(seq=ISS + 1, ack=IRS + 4, window=W - 3)
    ]
    assert conn.recv(10) == b"abc"


def test_overlapping_retransmission_delivers_only_new_bytes() -> None:
    conn = established()
    feed(conn, 1.0, seq=IRS + 1, ack=ISS + 1, payload=b"abc")
    feed(conn, 1.0, seq=IRS + 2, ack=ISS + 1, payload=b"bcdef")
    assert conn.recv(10) == b"abcdef"


def test_options_length_and_flags_str() -> None:
    assert options_length(out(mss=1460, wscale=7, sack_permitted=True, ts=(1, 0))) == 20
    assert options_length(out(mss=1460, wscale=7, sack_permitted=True)) == 12
    assert options_length(out(ts=(1, 2), sack_blocks=((1, 2), (3, 4), (5, 6)))) == 40
    assert options_length(out()) == 0
    assert flags_str(SYN | ACK) == "S." and flags_str(RST) == "R"
