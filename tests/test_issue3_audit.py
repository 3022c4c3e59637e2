"""Issue 3 acceptance audit: exact reproductions of what stack/tcp and
stack/host do differently from a good (Linux) kernel. Each test states the
expected behaviour; the ones that fail today are strict xfails, so a fix
turns them into failures to remove the marker (see
/work/helper/notes-issue3-audit.md)."""

from __future__ import annotations

import dataclasses

from tcp_fixtures import IRS, ISS, cfg, established, feed, fire
from test_host_core import SYN_SEG, assert_no_state, emitted, make_host
from test_host_core import feed as host_feed

from stack.tcp.segment import ACK, FIN, SYN, TcpSegment
from stack.tcp.state import TcpState


def test_duplicate_of_last_acked_segment_echoes_its_tsval() -> None:
    conn = established(cfg(timestamps=True), ts=(100, 0))
    feed(conn, 0.1, seq=IRS + 1, ack=ISS + 1, ts=(110, 1), payload=b"a" * 1000)
    acks = fire(conn, 0.3)  # the delayed ACK
    assert [(s.ack, s.ts[1]) for s in acks] == [(IRS + 1001, 110)]
    # Our ACK was lost; the peer's RTO resends the same bytes with a new TSval.
    dup = feed(conn, 2.0, seq=IRS + 1, ack=ISS + 1, ts=(300, 1), payload=b"a" * 1000)
    assert [(s.ack, s.ts[1]) for s in dup] == [(IRS + 1001, 300)]


def test_syn_fin_to_listener_is_dropped_without_state() -> None:
    host = make_host()
    host.listen("10.0.0.2", 80, 4)
    assert host_feed(host, dataclasses.replace(SYN_SEG, flags=SYN | FIN)) == []
    assert len(host.table) == 0


def test_new_syn_in_time_wait_opens_a_new_connection() -> None:
    host = make_host()
    lst = host.listen("10.0.0.2", 80, 4)
    synack = host_feed(host, SYN_SEG)[0]
    host_feed(host, TcpSegment(5555, 80, 1001, synack.seq + 1, ACK, 502, ts=(2, synack.ts[0])))
    conn = lst.accept()
    conn.close(0.1)  # we close first: TIME-WAIT is on our side
    host.wake(conn, 0.1)
    fin = emitted(host)[0]
    host_feed(host, TcpSegment(5555, 80, 1001, synack.seq + 2, ACK | FIN, 502,
                               ts=(3, fin.ts[0])), now=0.2)
    assert conn.state is TcpState.TIME_WAIT
    # Same 4-tuple, ISN well above the old RCV.NXT, newer TSval.
    out = host_feed(host, dataclasses.replace(SYN_SEG, seq=50_000, ts=(10, 0)), now=1.0)
    assert [(s.flags, s.ack) for s in out] == [(SYN | ACK, 50_001)]


def test_junk_flag_combinations_to_closed_port_leave_no_state() -> None:
    """Passes today: every flag combination to a closed port gets at most one
    RST (none for a RST) and creates nothing (RFC 9293 §3.10.7.1)."""
    for flags in range(0x40):
        host = make_host()
        seg = dataclasses.replace(SYN_SEG, flags=flags, ack=777 if flags & ACK else 0)
        out = host_feed(host, seg)
        assert len(out) <= 1
        if flags & 0x04:  # RST
            assert out == []
        assert_no_state(host)
