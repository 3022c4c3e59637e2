"""Modular sequence arithmetic, the send/receive buffers and SACK block choice."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.tcp.options import SackGenerator, choose_wscale, ts_ticks
from stack.tcp.recvbuf import ReceiveBuffer
from stack.tcp.sendbuf import SendBuffer
from stack.tcp.seq import (
    seq64_add,
    seq64_diff,
    seq64_gt,
    seq64_lt,
    seq_add,
    seq_diff,
    seq_ge,
    seq_gt,
    seq_in_range,
    seq_le,
    seq_lt,
    seq_max,
    seq_min,
)

u32 = st.integers(0, 2**32 - 1)


def test_wrap_comparisons() -> None:
    top = 2**32 - 1
    assert seq_add(top, 1) == 0
    assert seq_add(0, -1) == top
    assert seq_lt(top, 0) and seq_gt(0, top)
    assert seq_diff(5, top) == 6
    assert seq_diff(top, 5) == -6
    assert seq_le(7, 7) and seq_ge(7, 7)
    assert seq_max(top - 10, 10) == 10
    assert seq_min(top - 10, 10) == top - 10
    assert seq_in_range(2, top - 3, 5)
    assert not seq_in_range(5, top - 3, 5)
    assert not seq_in_range(5, 5, 5)


@given(u32, st.integers(-(2**31) + 1, 2**31 - 1))
def test_add_diff_inverse(a: int, n: int) -> None:
    b = seq_add(a, n)
    assert seq_diff(b, a) == n
    assert seq_lt(a, b) == (n > 0)
    assert seq_gt(a, b) == (n < 0)


def test_seq64() -> None:
    top = 2**64 - 1
    assert seq64_add(top, 2) == 1
    assert seq64_diff(1, top) == 2
    assert seq64_lt(top, 1) and seq64_gt(1, top)


def test_send_buffer_ring_wraps_sequence_and_storage() -> None:
    start = 2**32 - 10
    buf = SendBuffer(16, start)
    assert buf.write(b"0123456789abcdefXYZ") == 16  # bounded by capacity
    assert buf.space == 0
    assert bytes(buf.view(start, 4)) == b"0123"
    assert bytes(buf.view(seq_add(start, 12), 4)) == b"cdef"
    assert buf.release(seq_add(start, 12)) == 12
    assert buf.start == 2
    assert buf.write(b"ghijklmnop") == 10  # wraps in the ring
    assert bytes(buf.view(2, 14)) == b"cdefghijklmnop"  # straddles the ring end
    assert buf.end == seq_add(2, 14)
    with pytest.raises(IndexError):
        buf.view(seq_add(start, 11), 2)  # released already


def test_receive_buffer_reassembles_and_bounds() -> None:
    rb = ReceiveBuffer(100)
    assert rb.add(10, b"K" * 10, 100) == 0
    assert rb.ranges() == [(10, 20)]
    assert rb.add(0, b"A" * 10, 100) == 20
    assert rb.read(100) == b"A" * 10 + b"K" * 10
    assert rb.add(95, b"Z" * 10, 100) == 0  # kept only up to the limit
    assert rb.ranges() == [(95, 100)]
    assert rb.add(-5, b"y" * 10, 100) == 5  # the old part is trimmed


def test_sack_generator_most_recent_first() -> None:
    gen = SackGenerator()
    rcv_nxt = 2**32 - 100
    ranges = [(100, 200), (300, 400), (500, 600)]
    gen.note(seq_add(rcv_nxt, 300))
    gen.note(seq_add(rcv_nxt, 100))
    blocks = gen.blocks(rcv_nxt, ranges, 3)
    assert blocks == (
        (seq_add(rcv_nxt, 100), seq_add(rcv_nxt, 200)),
        (seq_add(rcv_nxt, 300), seq_add(rcv_nxt, 400)),
        (seq_add(rcv_nxt, 500), seq_add(rcv_nxt, 600)),
    )
    assert gen.blocks(rcv_nxt, ranges, 1) == ((seq_add(rcv_nxt, 100), seq_add(rcv_nxt, 200)),)
    assert gen.blocks(rcv_nxt, [], 3) == ()


def test_wscale_choice_and_ts_clock() -> None:
    assert choose_wscale(65535) == 0
    assert choose_wscale(65536) == 1
    assert choose_wscale(4 * 1024 * 1024) == 7
    assert choose_wscale(1 << 40) == 14
    assert ts_ticks(1.5, 10) == 1510
    assert ts_ticks(0.0, 2**32 - 1) == 2**32 - 1
