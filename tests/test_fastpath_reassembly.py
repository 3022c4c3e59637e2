"""fastpath.reassembly.Assembler against its plain-Python twin.

The two must agree on every observable (return values, ranges, buffered,
popped bytes) after any sequence of operations, and a stream cut into
shuffled, duplicated, overlapping pieces must come out whole.
"""

from __future__ import annotations

import random

import pytest
from fastpath.reassembly import Assembler
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastpath import reference as ref

# --- wire-like examples -----------------------------------------------------


def test_hole_then_fill() -> None:
    a = Assembler(1000)
    assert a.add(100, b"B" * 50) == 50  # segment after a hole
    assert a.ranges() == [(100, 150)] and a.buffered == 50
    assert a.pop_contiguous() == b""  # offset 0 still missing
    assert a.add(0, b"A" * 100) == 100  # the retransmission fills it
    assert a.ranges() == [(0, 150)]
    assert a.pop_contiguous() == b"A" * 100 + b"B" * 50
    assert a.ranges() == [] and a.buffered == 0


def test_sack_blocks_merge_and_shift() -> None:
    a = Assembler(100)
    a.add(10, b"x" * 10)
    a.add(30, b"y" * 10)
    a.add(20, b"z" * 10)  # bridges the two: one block
    a.add(50, b"w" * 5)
    assert a.ranges() == [(10, 40), (50, 55)]
    a.add(0, b"a" * 12)  # overlaps the first block
    assert a.pop_contiguous() == b"a" * 10 + b"x" * 10 + b"z" * 10 + b"y" * 10
    assert a.ranges() == [(10, 15)]  # offsets now relative to new RCV.NXT


def test_overlap_keeps_bytes_already_held() -> None:
    a = Assembler(100)
    a.add(5, b"OLD")
    assert a.add(0, b"new-new-new") == 8
    assert a.pop_contiguous() == b"new-nOLDnew"


def test_capacity_bounds_and_old_bytes() -> None:
    a = Assembler(8)
    assert a.add(6, b"abcdef") == 2  # only offsets 6, 7 fit
    assert a.add(8, b"zz") == 0 and a.add(10**30, b"z") == 0
    assert a.add(-4, b"0123" + b"45") == 2  # the first 4 bytes were old
    assert a.ranges() == [(0, 2), (6, 8)] and a.buffered == 4
    a.capacity = 4  # shrink: drops 6..8
    assert a.ranges() == [(0, 2)] and a.buffered == 2
    a.capacity = 16
    assert a.add(2, b"xyz") == 3 and a.pop_contiguous() == b"45xyz"
    a.clear()
    assert a.ranges() == [] and a.buffered == 0 and a.capacity == 16


def test_range_count_is_bounded() -> None:
    a = Assembler(10_000, max_ranges=4)
    for k in range(1, 6):
        a.add(100 * k, b"s")
    assert a.ranges() == [(100, 101), (200, 201), (300, 301), (400, 401)]
    assert a.add(50, b"low") == 3  # below the top range: it goes
    assert a.ranges() == [(50, 53), (100, 101), (200, 201), (300, 301)]
    assert a.add(0, b"in order") == 8  # RCV.NXT data is never refused
    assert a.ranges()[0] == (0, 8) and len(a.ranges()) == 4


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Assembler(-1)
    with pytest.raises(TypeError):
        Assembler(10).add(0, "text")  # type: ignore[arg-type]


# --- agreement with the twin ---------------------------------------------


class AgreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fast = Assembler(300, max_ranges=6)
        self.slow = ref.Assembler(300, max_ranges=6)

    @rule(offset=st.integers(-50, 350), length=st.integers(0, 80), tag=st.integers(1, 255))
    def add(self, offset: int, length: int, tag: int) -> None:
        # every add writes different bytes, so keeping old vs new bytes shows
        data = bytes((tag + 7 * k) & 0xFF for k in range(length))
        assert self.fast.add(offset, data) == self.slow.add(offset, data)

    @rule(offset=st.integers(-50, 350), data=st.binary(max_size=80))
    def add_views(self, offset: int, data: bytes) -> None:
        assert self.fast.add(offset, memoryview(data)) == self.slow.add(offset, bytearray(data))

    @rule()
    def pop(self) -> None:
        assert self.fast.pop_contiguous() == self.slow.pop_contiguous()

    @rule(cap=st.integers(0, 400))
    def resize(self, cap: int) -> None:
        self.fast.capacity = cap
        self.slow.capacity = cap

    @precondition(lambda self: self.fast.buffered > 200)
    @rule()
    def clear(self) -> None:
        self.fast.clear()
        self.slow.clear()

    @invariant()
    def same_state(self) -> None:
        assert self.fast.ranges() == self.slow.ranges()
        assert self.fast.buffered == self.slow.buffered
        assert self.fast.capacity == self.slow.capacity
        assert len(self.fast.ranges()) <= 6
        assert all(e <= self.fast.capacity for _, e in self.fast.ranges())
        spans = self.fast.ranges()
        assert all(e1 < s2 for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False))


AgreeMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
test_fast_and_reference_agree = AgreeMachine.TestCase


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=3000), st.integers(0, 2**32 - 1), st.integers(1, 4096))
def test_shuffled_pieces_reassemble(stream: bytes, seed: int, window: int) -> None:
    """Pieces (with duplicates and overlaps) delivered in random order, through
    a receive window smaller than the stream, reassemble into the stream."""
    rng = random.Random(seed)
    pieces = []
    at = 0
    while at < len(stream):
        n = rng.randint(1, 200)
        pieces.append((at, stream[at : at + n]))
        at += n
    for _ in range(len(pieces) // 2 + 1):  # overlapping re-cuts and duplicates
        s = rng.randrange(len(stream))
        pieces.append((s, stream[s : s + rng.randint(1, 300)]))
    fast, slow = Assembler(window), ref.Assembler(window)
    got_fast, got_slow = bytearray(), bytearray()
    pending = pieces[:]
    while len(got_fast) < len(stream):
        rng.shuffle(pending)
        for start, piece in pending:  # a sender retransmits whatever is unacked
            rel = start - len(got_fast)
            assert fast.add(rel, piece) == slow.add(rel, piece)
            got_fast += fast.pop_contiguous()
            got_slow += slow.pop_contiguous()
            assert fast.ranges() == slow.ranges()
        pending = [(s, p) for s, p in pending if s + len(p) > len(got_fast)]
    assert bytes(got_fast) == stream == bytes(got_slow)
    assert fast.buffered == 0 and fast.ranges() == []
