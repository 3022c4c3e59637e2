"""Option helpers for one connection: the timestamp clock (RFC 7323 §4-5),
window-scale choice (RFC 7323 §2) and SACK block generation (RFC 2018 §4)."""

from __future__ import annotations

from .seq import MASK32, seq_add, seq_diff, seq_ge, seq_lt

__all__ = [
    "MAX_WSCALE",
    "PAWS_IDLE_LIMIT",
    "choose_wscale",
    "ts_offset_from_iss",
    "ts_ticks",
    "SackGenerator",
    "ts_older",
]

MAX_WSCALE = 14  # RFC 7323 §2.3
PAWS_IDLE_LIMIT = 24 * 24 * 3600.0  # RFC 7323 §5.5: TS.Recent is invalid after 24 days idle


def choose_wscale(rcvbuf: int) -> int:
    """Smallest shift that lets the window field cover the whole receive
    buffer (RFC 7323 §2.2)."""
    shift = 0
    while shift < MAX_WSCALE and (0xFFFF << shift) < rcvbuf:
        shift += 1
    return shift


def ts_offset_from_iss(iss: int) -> int:
    """A per-connection timestamp offset (RFC 7323 §5.4 recommends a random
    one) derived from the already random ISS when the host gives none."""
    x = (iss * 0x9E3779B1 + 0x7F4A7C15) & MASK32
    x ^= x >> 15
    return (x * 0x2C1B3C6D) & MASK32


def ts_ticks(now: float, offset: int) -> int:
    """TSval: a 1 ms clock (RFC 7323 §5.4 allows 1 ms..1 s ticks) plus offset."""
    return (int(now * 1000.0) + offset) & MASK32


class SackGenerator:
    """Chooses the SACK blocks of RFC 2018 §4: the block holding the most
    recently received segment first, then the other most recently touched
    blocks, at most ``limit`` (4, or 3 next to timestamps)."""

    __slots__ = ("_recent",)

    def __init__(self) -> None:
        self._recent: list[int] = []  # sequence numbers of recent out-of-order arrivals

    def note(self, seq: int) -> None:
        """An out-of-order segment starting at ``seq`` was stored."""
        if seq in self._recent:
            self._recent.remove(seq)
        self._recent.insert(0, seq)
        del self._recent[8:]

    def clear(self) -> None:
        self._recent.clear()

    def blocks(
        self, rcv_nxt: int, ranges: list[tuple[int, int]], limit: int
    ) -> tuple[tuple[int, int], ...]:
        """``ranges`` are the reassembly ranges as offsets from ``rcv_nxt``."""
        if not ranges or limit <= 0:
            self._recent = [s for s in self._recent if seq_ge(s, rcv_nxt)]
            return ()
        absolute = [(seq_add(rcv_nxt, lo), seq_add(rcv_nxt, hi)) for lo, hi in ranges]
        out: list[tuple[int, int]] = []
        keep: list[int] = []
        for s in self._recent:
            for blk in absolute:
                if seq_ge(s, blk[0]) and seq_lt(s, blk[1]):
                    keep.append(s)
                    if blk not in out:
                        out.append(blk)
                    break
        self._recent = keep
        # RFC 2018 §4: then repeat other blocks; newest data (highest) first.
        for blk in reversed(absolute):
            if len(out) >= limit:
                break
            if blk not in out:
                out.append(blk)
        return tuple(out[:limit])


def ts_older(a: int, b: int) -> bool:
    """``a`` is older than ``b`` in 32-bit timestamp space (RFC 7323 §5.2)."""
    return seq_diff(a, b) < 0
