"""The send-side SACK scoreboard and loss recovery rules of RFC 6675.

One :class:`Scoreboard` per connection holds which bytes between SND.UNA
(HighACK) and SND.NXT (HighData + 1) the peer has selectively acknowledged
(RFC 2018). It answers the questions RFC 6675 §4 asks: ``IsLost``, ``SetPipe``
and ``NextSeg``. The connection keeps HighRxt, RecoveryPoint and RescueRxt
(recovery state) and passes them in.

Sequence numbers are 32-bit and wrap: everything here is compared as an offset
from SND.UNA, never with ``<`` on raw sequence numbers. Memory is bounded: at
most ``max_ranges`` merged SACKed ranges are kept whatever the peer sends.

Conventions: ``high_rxt`` is one past the highest byte retransmitted during the
current recovery (SND.UNA when nothing was), so RFC 6675's "octet <= HighRxt"
reads "octet < high_rxt" here and "S2 > HighRxt" reads "S2 >= high_rxt".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Scoreboard", "NextSeg", "DUP_THRESH", "MAX_RANGES"]

MASK = 0xFFFFFFFF
HALF = 0x80000000
DUP_THRESH = 3  # RFC 6675 §2 DupThresh
MAX_RANGES = 64


def _off(seq: int, base: int) -> int:
    """Offset of ``seq`` from ``base`` in 32-bit sequence space (RFC 9293 §3.4)."""
    return (seq - base) & MASK


@dataclass(slots=True, frozen=True)
class NextSeg:
    """What RFC 6675 NextSeg() returns: a range of at most ``mss`` bytes.

    ``rule`` is the rule of RFC 6675 §4 NextSeg that picked it: 1 (a lost
    segment: retransmit), 2 (new data), 3 (an unSACKed, not-yet-lost segment:
    retransmit) or 4 (the rescue retransmission)."""

    seq: int
    length: int
    rule: int

    @property
    def retransmission(self) -> bool:
        return self.rule != 2


class Scoreboard:
    """SACKed byte ranges above SND.UNA (RFC 6675 §3, §4).

    Ranges are kept as ``[start, end, segments]`` with absolute sequence
    numbers, sorted by offset from ``snd_una``, disjoint and not adjacent.
    ``segments`` estimates how many SACKed segments the range holds (RFC 6675
    IsLost counts "discontiguous SACKed sequences"): each update adds
    ceil(newly SACKed bytes / SMSS) to the range that received them.
    """

    __slots__ = (
        "mss",
        "dup_thresh",
        "max_ranges",
        "snd_una",
        "sacked_bytes",
        "dsack_blocks",
        "invalid_blocks",
        "_ranges",
    )

    def __init__(
        self,
        mss: int,
        snd_una: int = 0,
        *,
        dup_thresh: int = DUP_THRESH,
        max_ranges: int = MAX_RANGES,
    ) -> None:
        if mss <= 0 or dup_thresh < 1 or max_ranges < 1:
            raise ValueError("mss, dup_thresh and max_ranges must be positive")
        self.mss = mss
        self.dup_thresh = dup_thresh
        self.max_ranges = max_ranges
        self.snd_una = snd_una & MASK
        self.sacked_bytes = 0
        self.dsack_blocks = 0  # D-SACK blocks seen (RFC 2883), counted and ignored
        self.invalid_blocks = 0  # blocks outside [SND.UNA, SND.NXT], counted and ignored
        self._ranges: list[list[int]] = []

    # ------------------------------------------------------------------ input
    def clear(self, snd_una: int | None = None) -> None:
        """Forget every SACKed range (e.g. when the receiver reneged, RFC 2018
        §8); optionally move SND.UNA. RFC 6675 §5.1 keeps the scoreboard
        across an RTO so that the retransmissions after it skip SACKed data."""
        self._ranges.clear()
        self.sacked_bytes = 0
        if snd_una is not None:
            self.snd_una = snd_una & MASK

    def update(self, cum_ack: int, sack_blocks: Iterable[tuple[int, int]], snd_nxt: int) -> int:
        """Process the cumulative ACK and SACK blocks of one ACK (RFC 6675 §5
        step "update the scoreboard"). Returns the number of bytes newly
        SACKed by this ACK (RFC 6675 §2: a duplicate ACK counts for loss
        detection only when it SACKs new data).

        Ignored (and counted): a D-SACK block (RFC 2883 §4: the first block,
        when it lies below the cumulative ACK or inside the second block),
        empty or reversed blocks, and blocks reaching above ``snd_nxt``. A block
        straddling SND.UNA is clipped. A cumulative ACK above ``snd_nxt`` is not
        acceptable (RFC 9293 §3.10.7.4) and the whole ACK is ignored.
        """
        cum_ack &= MASK
        snd_nxt &= MASK
        outstanding = _off(snd_nxt, self.snd_una)
        if outstanding >= HALF:  # snd_nxt behind snd_una: caller state is bad
            raise ValueError("snd_nxt is behind snd_una")
        adv = _off(cum_ack, self.snd_una)
        if adv < HALF:  # cum_ack at or above snd_una (else: an old ACK, no advance)
            if adv > outstanding:
                self.invalid_blocks += 1
                return 0
            if adv:
                self._advance(cum_ack)
                outstanding -= adv
        blocks = list(sack_blocks)
        newly = 0
        for i, (left, right) in enumerate(blocks):
            left &= MASK
            right &= MASK
            if i == 0 and self._is_dsack(left, right, cum_ack, blocks):
                self.dsack_blocks += 1
                continue
            lo = _off(left, self.snd_una)
            hi = _off(right, self.snd_una)
            length = (right - left) & MASK
            if length == 0 or length >= HALF:
                self.invalid_blocks += 1
                continue
            if lo >= HALF:  # starts below SND.UNA
                if hi >= HALF or hi == 0:
                    continue  # entirely below: old news, nothing to learn
                lo = 0
            if hi > outstanding or lo >= hi:
                self.invalid_blocks += 1
                continue
            newly += self._insert(lo, hi)
        return newly

    @staticmethod
    def _is_dsack(left: int, right: int, cum_ack: int, blocks: list[tuple[int, int]]) -> bool:
        # RFC 2883 §4: a D-SACK block is the first block and either reports
        # data below the cumulative ACK, or lies within the second block.
        if _off(left, cum_ack) >= HALF:
            return True
        if len(blocks) > 1:
            l2, r2 = blocks[1][0] & MASK, blocks[1][1] & MASK
            span = _off(r2, l2)
            return span < HALF and _off(left, l2) <= span and _off(right, l2) <= span
        return False

    def _advance(self, cum_ack: int) -> None:
        """SND.UNA moved to ``cum_ack``: drop what it covers."""
        shift = _off(cum_ack, self.snd_una)
        kept: list[list[int]] = []
        for r in self._ranges:
            lo = _off(r[0], self.snd_una)
            hi = _off(r[1], self.snd_una)
            if hi <= shift:
                self.sacked_bytes -= hi - lo
                continue
            if lo < shift:
                self.sacked_bytes -= shift - lo
                r[0] = cum_ack
            kept.append(r)
        self._ranges = kept
        self.snd_una = cum_ack

    def _insert(self, lo: int, hi: int) -> int:
        """Merge the range [lo, hi) (offsets from SND.UNA); return new bytes."""
        una = self.snd_una
        out: list[list[int]] = []
        new_lo, new_hi = lo, hi
        covered = 0  # bytes of [lo, hi) already SACKed
        segs = 0
        i = 0
        ranges = self._ranges
        n = len(ranges)
        # Ranges entirely before the new one (not adjacent).
        while i < n and _off(ranges[i][1], una) < lo:
            out.append(ranges[i])
            i += 1
        # Ranges overlapping or adjacent: absorb them.
        while i < n and _off(ranges[i][0], una) <= hi:
            rlo = _off(ranges[i][0], una)
            rhi = _off(ranges[i][1], una)
            covered += max(0, min(rhi, hi) - max(rlo, lo))
            new_lo = min(new_lo, rlo)
            new_hi = max(new_hi, rhi)
            segs += ranges[i][2]
            i += 1
        newly = (hi - lo) - covered
        if newly:
            segs += -(-newly // self.mss)
        out.append([(una + new_lo) & MASK, (una + new_hi) & MASK, segs])
        out.extend(ranges[i:])
        self.sacked_bytes += newly
        # Bounded memory: forget the highest ranges (the least useful for
        # repairing the lowest holes; forgetting SACK info is always safe).
        while len(out) > self.max_ranges:
            r = out.pop()
            self.sacked_bytes -= _off(r[1], r[0])
        self._ranges = out
        return newly

    # ---------------------------------------------------------------- queries
    def ranges(self) -> list[tuple[int, int]]:
        """SACKed ranges (start, end) above SND.UNA, lowest first."""
        return [(r[0], r[1]) for r in self._ranges]

    @property
    def high_sacked(self) -> int | None:
        """One past the highest SACKed byte, or None when nothing is SACKed."""
        return self._ranges[-1][1] if self._ranges else None

    def is_sacked(self, seq: int) -> bool:
        o = _off(seq, self.snd_una)
        for r in self._ranges:
            if o < _off(r[0], self.snd_una):
                return False
            if o < _off(r[1], self.snd_una):
                return True
        return False

    def holes(self) -> list[tuple[int, int]]:
        """Unsacked ranges (start, end) between SND.UNA and the highest SACKed
        byte, lowest first (RFC 6675 §4 rule 1.b: only these can be lost)."""
        out: list[tuple[int, int]] = []
        prev = self.snd_una
        for r in self._ranges:
            if r[0] != prev:
                out.append((prev, r[0]))
            prev = r[1]
        return out

    def _hole_info(self) -> list[tuple[int, int, bool]]:
        """Holes as (lo, hi, lost) offsets. Inside a hole the SACKed data above
        is the same for every byte, so IsLost is per hole (RFC 6675 §4)."""
        ranges = self._ranges
        una = self.snd_una
        # Suffix sums of SACKed bytes and segments above each range index.
        above_bytes = [0] * (len(ranges) + 1)
        above_segs = [0] * (len(ranges) + 1)
        for i in range(len(ranges) - 1, -1, -1):
            r = ranges[i]
            above_bytes[i] = above_bytes[i + 1] + _off(r[1], r[0])
            above_segs[i] = above_segs[i + 1] + r[2]
        limit = (self.dup_thresh - 1) * self.mss
        out: list[tuple[int, int, bool]] = []
        prev = 0
        for i, r in enumerate(ranges):
            lo = _off(r[0], una)
            if lo > prev:
                lost = above_segs[i] >= self.dup_thresh or above_bytes[i] > limit
                out.append((prev, lo, lost))
            prev = _off(r[1], una)
        return out

    def is_lost(self, seq: int) -> bool:
        """RFC 6675 §4 IsLost(SeqNum): true when DupThresh discontiguous
        SACKed segments, or more than (DupThresh - 1) * SMSS SACKed bytes, lie
        above ``seq``. A SACKed byte is never lost."""
        o = _off(seq, self.snd_una)
        if o >= HALF:
            return False
        for lo, hi, lost in self._hole_info():
            if lo <= o < hi:
                return lost
        return False

    def lost_bytes(self) -> int:
        return sum(hi - lo for lo, hi, lost in self._hole_info() if lost)

    def in_flight(self, snd_nxt: int) -> int:
        """Outstanding bytes not SACKed (FlightSize less SACKed data)."""
        return _off(snd_nxt, self.snd_una) - self.sacked_bytes

    def pipe(self, snd_nxt: int, high_rxt: int | None = None) -> int:
        """RFC 6675 §4 SetPipe(), in bytes: for every unSACKed byte in
        [SND.UNA, SND.NXT), count 1 if it is not lost (the original may still
        be in flight) and 1 more if it was retransmitted (byte < high_rxt)."""
        una = self.snd_una
        outstanding = _off(snd_nxt, una)
        rxt = 0 if high_rxt is None else _off(high_rxt, una)
        if rxt >= HALF:
            rxt = 0
        rxt = min(rxt, outstanding)
        pipe = outstanding - self.sacked_bytes
        for lo, hi, lost in self._hole_info():
            if lost:
                pipe -= hi - lo
        # (b): retransmitted unSACKed bytes below high_rxt.
        pipe += rxt - self._sacked_below(rxt)
        return pipe

    def _sacked_below(self, off: int) -> int:
        una = self.snd_una
        total = 0
        for r in self._ranges:
            lo, hi = _off(r[0], una), _off(r[1], una)
            if lo >= off:
                break
            total += min(hi, off) - lo
        return total

    def next_seg(
        self,
        snd_nxt: int,
        high_rxt: int | None = None,
        *,
        new_data: int = 0,
        max_len: int | None = None,
        rescue: bool = False,
    ) -> NextSeg | None:
        """RFC 6675 §4 NextSeg().

        ``new_data``: bytes of never-sent data the sender may send now (unsent
        data that the peer's window allows), for rule 2. ``max_len``: largest
        segment to return (default SMSS; a TSO sender may ask for more).
        ``rescue``: the caller allows rule 4 (it checked HighACK > RescueRxt
        and sets RescueRxt = RecoveryPoint when this returns rule 4).
        Returns None when NextSeg fails (rule 5).
        """
        una = self.snd_una
        size = self.mss if max_len is None else max_len
        rxt = 0 if high_rxt is None else _off(high_rxt, una)
        if rxt >= HALF:
            rxt = 0
        holes = self._hole_info()
        # Rule 1: the lowest unSACKed S2 >= HighRxt, below the highest SACKed
        # byte (holes only), with IsLost(S2).
        for lo, hi, lost in holes:
            if lost and hi > rxt:
                start = max(lo, rxt)
                return NextSeg((una + start) & MASK, min(size, hi - start), 1)
        # Rule 2: new data.
        if new_data > 0:
            return NextSeg(snd_nxt & MASK, min(size, new_data), 2)
        # Rule 3: like rule 1 without IsLost.
        for lo, hi, _lost in holes:
            if hi > rxt:
                start = max(lo, rxt)
                return NextSeg((una + start) & MASK, min(size, hi - start), 3)
        # Rule 4: one segment holding the highest outstanding unSACKed byte.
        if rescue:
            ranges = self._ranges
            top = _off(snd_nxt, una)
            below = ranges
            if ranges and _off(ranges[-1][1], una) == top:
                top = _off(ranges[-1][0], una)
                below = ranges[:-1]
            if top > 0:
                floor = _off(below[-1][1], una) if below else 0
                start = max(floor, top - size)
                return NextSeg((una + start) & MASK, top - start, 4)
        return None

    def __repr__(self) -> str:
        return f"Scoreboard(snd_una={self.snd_una}, ranges={self.ranges()})"
