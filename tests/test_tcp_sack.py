"""RFC 6675 scoreboard: ACKs with SACK blocks in, loss decisions out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.tcp.sack import NextSeg, Scoreboard

MSS = 1000
M32 = 1 << 32


def sb_at(una: int, **kw) -> Scoreboard:
    return Scoreboard(MSS, una, **kw)


def seg(base: int, n: int) -> tuple[int, int]:
    """SACK block for segment number n (0-based) after base."""
    return ((base + n * MSS) % M32, (base + (n + 1) * MSS) % M32)


BASES = [1000, M32 - 2500]  # the second wraps inside the window


@pytest.mark.parametrize("base", BASES)
def test_blocks_merge_and_count_bytes(base):
    sb = sb_at(base)
    nxt = (base + 10 * MSS) % M32
    assert sb.update(base, [seg(base, 2)], nxt) == MSS
    assert sb.update(base, [seg(base, 4), seg(base, 2)], nxt) == MSS
    assert sb.update(base, [seg(base, 3)], nxt) == MSS  # fills the gap: one range
    assert sb.ranges() == [(seg(base, 2)[0], seg(base, 4)[1])]
    assert sb.sacked_bytes == 3 * MSS
    assert sb.holes() == [(base, seg(base, 2)[0])]
    # The same block again is old news.
    assert sb.update(base, [seg(base, 3)], nxt) == 0


@pytest.mark.parametrize("base", BASES)
def test_cumulative_ack_drops_covered_ranges(base):
    sb = sb_at(base)
    nxt = (base + 10 * MSS) % M32
    sb.update(base, [seg(base, 2), seg(base, 5)], nxt)
    # Cumulative ACK up to the middle of segment 2's range.
    una = (base + 2 * MSS + 500) % M32
    sb.update(una, [], nxt)
    assert sb.snd_una == una
    assert sb.ranges() == [((base + 2 * MSS + 500) % M32, seg(base, 2)[1]), seg(base, 5)]
    assert sb.sacked_bytes == 500 + MSS
    sb.update(nxt, [], nxt)
    assert sb.ranges() == [] and sb.sacked_bytes == 0


@pytest.mark.parametrize("base", BASES)
def test_is_lost_needs_three_segments_above(base):
    # RFC 6675 §4 IsLost: DupThresh (3) SACKed segments above.
    sb = sb_at(base)
    nxt = (base + 10 * MSS) % M32
    sb.update(base, [seg(base, 1)], nxt)
    assert not sb.is_lost(base)
    sb.update(base, [seg(base, 2), seg(base, 1)], nxt)
    assert not sb.is_lost(base)  # 2 segments, 2000 bytes: not more than 2*SMSS
    sb.update(base, [seg(base, 3), seg(base, 1)], nxt)
    assert sb.is_lost(base)
    assert not sb.is_lost(seg(base, 2)[0])  # SACKed bytes are never lost
    assert not sb.is_lost(seg(base, 5)[0])  # nothing SACKed above


def test_is_lost_by_bytes_with_one_large_block():
    # One contiguous SACKed range of 2*SMSS+1 bytes: "more than (DupThresh-1)
    # * SMSS bytes" holds even though it arrived as a single segment (TSO).
    sb = sb_at(0)
    sb.update(0, [(1000, 3001)], 10_000)
    assert sb.is_lost(0)
    sb2 = sb_at(0)
    sb2.update(0, [(1000, 3000)], 10_000)  # exactly 2*SMSS, one segment
    assert not sb2.is_lost(0)


def test_is_lost_counts_small_segments():
    # Three discontiguous 100-byte SACKed segments above: lost by count.
    sb = sb_at(0)
    blocks = [(1000, 1100), (1200, 1300), (1400, 1500)]
    sb.update(0, blocks, 10_000)
    assert sb.sacked_bytes == 300
    assert sb.is_lost(0)
    assert not sb.is_lost(1300)  # one segment above


def test_dsack_below_cum_ack_ignored_and_counted():
    # RFC 2883: first block below the cumulative ACK reports a duplicate.
    sb = sb_at(5000)
    assert sb.update(5000, [(4000, 5000), (6000, 7000)], 10_000) == 1000
    assert sb.dsack_blocks == 1
    assert sb.ranges() == [(6000, 7000)]


def test_dsack_inside_second_block_ignored():
    sb = sb_at(5000)
    sb.update(5000, [(6000, 7000)], 10_000)
    assert sb.update(5000, [(6200, 6500), (6000, 7000)], 10_000) == 0
    assert sb.dsack_blocks == 1


def test_blocks_above_snd_nxt_or_reversed_are_ignored():
    sb = sb_at(0)
    assert sb.update(0, [(9000, 11000)], 10_000) == 0
    assert sb.update(0, [(3000, 2000)], 10_000) == 0
    assert sb.update(0, [(3000, 3000)], 10_000) == 0
    assert sb.invalid_blocks == 3
    assert sb.ranges() == []


def test_block_straddling_snd_una_is_clipped_when_not_first():
    sb = sb_at(5000)
    sb.update(5000, [(8000, 9000), (4000, 6000)], 10_000)
    assert sb.ranges() == [(5000, 6000), (8000, 9000)]


def test_ack_beyond_snd_nxt_is_ignored_entirely():
    sb = sb_at(0)
    assert sb.update(20_000, [(1000, 2000)], 10_000) == 0
    assert sb.snd_una == 0 and sb.ranges() == []


def test_old_ack_still_carries_sack_info():
    sb = sb_at(5000)
    assert sb.update(4000, [(6000, 7000)], 10_000) == 1000
    assert sb.snd_una == 5000


def test_pipe_counts_unlost_and_retransmitted():
    # 10 segments out, segments 3..5 SACKed: segments 0..2 are lost (3 SACKed
    # segments above), 6..9 still in flight.
    sb = sb_at(0)
    sb.update(0, [(3000, 6000)], 10_000)
    assert sb.lost_bytes() == 3000
    assert sb.in_flight(10_000) == 7000
    assert sb.pipe(10_000) == 4000
    # Segment 0 retransmitted: it is in the pipe again.
    assert sb.pipe(10_000, high_rxt=1000) == 5000
    # High_rxt past a SACKed range counts only unSACKed bytes.
    assert sb.pipe(10_000, high_rxt=7000) == 4000 + 3000 + 1000


@pytest.mark.parametrize("base", BASES)
def test_next_seg_rules(base):
    sb = sb_at(base)
    nxt = (base + 10 * MSS) % M32
    sb.update(base, [(seg(base, 3)[0], seg(base, 5)[1]), seg(base, 7)], nxt)
    # Rule 1: the first lost hole, one SMSS at a time from HighRxt.
    assert sb.next_seg(nxt, base) == NextSeg(base, MSS, 1)
    assert sb.next_seg(nxt, (base + MSS) % M32) == NextSeg((base + MSS) % M32, MSS, 1)
    # Segment 6 (between the ranges) has one SACKed segment above: not lost.
    assert not sb.is_lost(seg(base, 6)[0])
    after = (base + 3 * MSS) % M32
    # Rule 2 once the lost holes are retransmitted and new data may go.
    assert sb.next_seg(nxt, after, new_data=5000) == NextSeg(nxt, MSS, 2)
    assert sb.next_seg(nxt, after, new_data=300) == NextSeg(nxt, 300, 2)
    # Rule 3 without new data: the unSACKed hole that is not (yet) lost.
    assert sb.next_seg(nxt, after) == NextSeg(seg(base, 6)[0], MSS, 3)
    # Nothing left below the highest SACK: NextSeg fails without rescue...
    past = seg(base, 7)[0]
    assert sb.next_seg(nxt, past) is None
    # ... and rule 4 picks the segment with the highest unSACKed byte.
    assert sb.next_seg(nxt, past, rescue=True) == NextSeg(seg(base, 9)[0], MSS, 4)


def test_next_seg_clips_to_the_hole_and_honours_max_len():
    sb = sb_at(0)
    sb.update(0, [(1500, 5000)], 10_000)  # 3500 bytes above [0, 1500)
    assert sb.next_seg(10_000, 0) == NextSeg(0, 1000, 1)
    assert sb.next_seg(10_000, 1000) == NextSeg(1000, 500, 1)
    assert sb.next_seg(10_000, 0, max_len=64_000) == NextSeg(0, 1500, 1)


def test_rescue_when_tail_is_sacked():
    sb = sb_at(0)
    sb.update(0, [(8000, 10_000)], 10_000)
    # Not lost (2 segments, 2000 bytes above); rule 3 first.
    assert sb.next_seg(10_000, 0) == NextSeg(0, MSS, 3)
    assert sb.next_seg(10_000, 8000, rescue=True) == NextSeg(7000, MSS, 4)


def test_range_count_is_bounded():
    sb = sb_at(0, max_ranges=8)
    nxt = 1_000_000
    blocks = [(i * 2000 + 1000, i * 2000 + 2000) for i in range(100)]
    for i in range(0, 100, 3):
        sb.update(0, blocks[i : i + 3], nxt)
    assert len(sb.ranges()) == 8
    assert sb.ranges()[0] == (1000, 2000)  # the lowest ranges are kept
    assert sb.sacked_bytes == 8 * 1000


def test_clear_forgets_everything():
    sb = sb_at(0)
    sb.update(0, [(2000, 3000)], 10_000)
    sb.clear()
    assert sb.ranges() == [] and sb.sacked_bytes == 0 and not sb.is_sacked(2500)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError):
        Scoreboard(0)


# ------------------------------------------------------------ model check
@settings(max_examples=200, deadline=None)
@given(
    base=st.integers(0, M32 - 1),
    ops=st.lists(
        st.tuples(
            st.integers(0, 40),  # cumulative ack, in 100-byte units
            st.lists(st.tuples(st.integers(-5, 45), st.integers(1, 12)), max_size=4),
        ),
        max_size=12,
    ),
)
def test_scoreboard_matches_a_set_of_bytes(base, ops):
    """Against a model: the set of SACKed 100-byte units above SND.UNA, for
    any starting sequence number (wrap-around included)."""
    unit = 100
    nxt_units = 40
    nxt = (base + nxt_units * unit) % M32
    sb = Scoreboard(MSS, base, max_ranges=64)
    una_units = 0
    sacked: set[int] = set()
    for ack_u, blocks in ops:
        ack_u = max(ack_u, 0)
        cum = (base + ack_u * unit) % M32
        wire = [((base + s * unit) % M32, (base + (s + n) * unit) % M32) for s, n in blocks]
        sb.update(cum, wire, nxt)
        if ack_u > una_units:
            una_units = ack_u
        sacked = {u for u in sacked if u >= una_units}
        for i, (s, n) in enumerate(blocks):
            lo, hi = s, s + n
            if i == 0 and (lo < ack_u or _inside_second(blocks, lo, hi)):
                continue  # D-SACK
            if hi > nxt_units or hi <= una_units:
                continue
            sacked |= set(range(max(lo, una_units), hi))
        assert sb.snd_una == (base + una_units * unit) % M32
        assert sb.sacked_bytes == len(sacked) * unit
        for u in range(una_units, nxt_units):
            assert sb.is_sacked((base + u * unit) % M32) == (u in sacked)


def _inside_second(blocks, lo, hi):
    if len(blocks) < 2:
        return False
    s2, n2 = blocks[1]
    return s2 <= lo and hi <= s2 + n2 and n2 > 0


@settings(max_examples=200, deadline=None)
@given(
    base=st.integers(0, M32 - 1),
    blocks=st.lists(st.tuples(st.integers(0, 39), st.integers(1, 12)), max_size=6),
    rxt_units=st.integers(0, 40),
)
def test_pipe_and_next_seg_agree_with_is_lost(base, blocks, rxt_units):
    """SetPipe and NextSeg rule 1 byte by byte from IsLost (RFC 6675 §4)."""
    unit = 100
    nxt = (base + 40 * unit) % M32
    sb = Scoreboard(250, base)
    for s, n in blocks:
        if s + n <= 40:
            sb.update(base, [((base + s * unit) % M32, (base + (s + n) * unit) % M32)], nxt)
    high_rxt = (base + rxt_units * unit) % M32
    expected = 0
    first_lost = None
    for u in range(40):
        seq = (base + u * unit) % M32
        if sb.is_sacked(seq):
            continue
        lost = sb.is_lost(seq)
        expected += (0 if lost else unit) + (unit if u < rxt_units else 0)
        if lost and u >= rxt_units and first_lost is None:
            first_lost = seq
    assert sb.pipe(nxt, high_rxt) == expected
    ns = sb.next_seg(nxt, high_rxt)
    if first_lost is not None:
        assert ns is not None and ns.rule == 1 and ns.seq == first_lost
    else:
        assert ns is None or ns.rule == 3


@settings(max_examples=300, deadline=None)
@given(
    una=st.integers(0, M32 - 1),
    span=st.integers(0, 1 << 20),
    acks=st.lists(
        st.tuples(
            st.integers(0, M32 - 1),
            st.lists(st.tuples(st.integers(0, M32 - 1), st.integers(0, M32 - 1)), max_size=4),
        ),
        max_size=8,
    ),
)
def test_garbage_sack_blocks_never_break_invariants(una, span, acks):
    """Any 32-bit values from the wire: no exception, and the ranges stay
    sorted, disjoint, inside [SND.UNA, SND.NXT], with sacked_bytes their sum."""
    nxt = (una + span) % M32
    sb = Scoreboard(MSS, una, max_ranges=8)
    for ack, blocks in acks:
        sb.update(ack, blocks, nxt)
        base = sb.snd_una
        total = 0
        prev_end = 0
        for lo, hi in sb.ranges():
            o_lo, o_hi = (lo - base) % M32, (hi - base) % M32
            assert prev_end <= o_lo < o_hi <= (nxt - base) % M32
            prev_end = o_hi + 1  # disjoint and not adjacent
            total += o_hi - o_lo
        assert total == sb.sacked_bytes
        assert len(sb.ranges()) <= 8
        assert sb.pipe(nxt, ack) >= 0
        sb.next_seg(nxt, ack, new_data=span, rescue=True)
