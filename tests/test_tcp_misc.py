"""The MPTCP ``upper`` hook, statistics, buffers and odd inputs."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


_near = st.integers(-70000, 70000)


@st.composite
def _segments(draw: st.DrawFn) -> dict[str, object]:
    return dict(
        seq_off=draw(_near),
        ack_off=draw(_near),
        flags=draw(st.integers(0, 0xFF)),
        window=draw(st.integers(0, 0xFFFF)),
        length=draw(st.sampled_from([0, 0, 1, 100, 1460, 3000])),
        ts=draw(st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))),
        sack=draw(st.lists(st.tuples(_near, _near), max_size=4)),
        dt=draw(st.sampled_from([0.0, 0.001, 0.05, 0.5, 5.0])),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    setup=st.sampled_from(["established", "fin_wait", "close_wait", "syn_received", "syn_sent"]),
    options=st.booleans(),
    segs=st.lists(_segments(), max_size=25),
)
def test_random_segments_never_crash(setup: str, options: bool, segs: list) -> None:  # type: ignore[type-arg]
    """Bad input gives a drop, an ACK or a state change, never an exception;
    the sequence variables stay ordered and the buffers bounded."""
    c = cfg(sack=options, timestamps=options, window_scaling=options, rcvbuf=20000)
    if setup == "syn_sent":
        conn = TcpConnection.connect(c, LOCAL, REMOTE, ISS, 0.0)
        conn.poll_transmit(0.0)
    elif setup == "syn_received":
        syn = replace(IN, seq=IRS, flags=SYN, mss=1460, wscale=7 if options else None,
                      sack_permitted=options, ts=(1, 0) if options else None)
        conn = TcpConnection.accept_syn(c, LOCAL, REMOTE, syn, ISS, 0.0)
        conn.poll_transmit(0.0)
    else:
        conn = established(c, sack=options, ts=(1, 0) if options else None,
                           wscale=7 if options else None)
        conn.send(payload(30000), 0.0)
        conn.poll_transmit(0.0)
        if setup == "fin_wait":
            conn.shutdown_write(0.0)
        elif setup == "close_wait":
            feed(conn, 0.0, seq=IRS + 1, ack=ISS + 1, flags=ACK | FIN)
    now = 0.0
    for s in segs:
        now += s["dt"]
        seg = replace(
            IN,
            seq=(conn.rcv_nxt + s["seq_off"]) % 2**32,
            ack=(conn.snd_una + s["ack_off"]) % 2**32,
            flags=s["flags"],
            window=s["window"],
            ts=s["ts"],
            sack_blocks=tuple(((conn.snd_una + lo) % 2**32, (conn.snd_una + hi) % 2**32)
                              for lo, hi in s["sack"]),
            payload=bytes(s["length"]),
        )
        conn.on_segment(seg, now)
        conn.on_timer(now)
        for o in conn.poll_transmit(now):
            assert 0 <= o.window <= 0xFFFF
            assert len(o.payload) <= max(conn.effective_mss, 1460)
        assert (conn.snd_nxt - conn.snd_una) % 2**32 < 2**31
        assert conn.readable + conn.rcvbuf.out_of_order <= 20000 + (1 << conn.rcv_wscale)
        conn.recv(5000)
        deadline = conn.next_deadline()
        assert deadline is None or deadline >= now - 1e-9 or conn.state is TcpState.CLOSED


def test_write_and_read_sequence_numbers() -> None:
    conn = established()
    assert conn.write_seq == ISS + 1
    conn.send(b"abc", 0.0)
    assert conn.write_seq == ISS + 4
    feed(conn, 0.1, seq=IRS + 1, ack=ISS + 1, payload=b"xyz", flags=ACK | FIN)
    assert conn.read_seq == IRS + 1
    assert conn.recv(2) == b"xy" and conn.read_seq == IRS + 3


def test_upper_sees_syn_on_passive_open() -> None:
    up = Recorder()
    syn = replace(IN, seq=IRS, flags=SYN, mss=1460, mptcp=(b"\x1e\x04\x01\x00",))
    conn = TcpConnection.accept_syn(cfg(), LOCAL, REMOTE, syn, ISS, 0.0, upper=up)
    assert up.seen == [syn]
    synack, = conn.poll_transmit(0.0)
    assert synack.flags == SYN | ACK and synack.mptcp == (DSS,)
