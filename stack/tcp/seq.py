"""Modular sequence-number arithmetic (RFC 9293 §3.4, RFC 1982).

TCP sequence numbers live in a 32-bit circle: ``a < b`` means "b is ahead of a
by less than half the circle". Never compare raw sequence numbers with ``<``;
use these helpers. The ``seq64_*`` variants do the same for MPTCP's 64-bit data
sequence space (RFC 8684 §3.3).
"""

from __future__ import annotations

__all__ = [
    "MASK32",
    "seq_add",
    "seq_diff",
    "seq_lt",
    "seq_le",
    "seq_gt",
    "seq_ge",
    "seq_max",
    "seq_min",
    "seq_in_range",
    "seq64_add",
    "seq64_diff",
    "seq64_lt",
    "seq64_le",
    "seq64_gt",
    "seq64_ge",
]

MASK32 = 0xFFFFFFFF
_HALF32 = 0x80000000
MASK64 = 0xFFFFFFFFFFFFFFFF
_HALF64 = 0x8000000000000000


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32 (n may be negative)."""
    return (a + n) & MASK32


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in the 32-bit circle, in [-2**31, 2**31)."""
    d = (a - b) & MASK32
    return d - 0x100000000 if d & _HALF32 else d


def seq_lt(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0


def seq_gt(a: int, b: int) -> bool:
    return seq_diff(a, b) > 0


def seq_ge(a: int, b: int) -> bool:
    return seq_diff(a, b) >= 0


def seq_max(a: int, b: int) -> int:
    return a if seq_ge(a, b) else b


def seq_min(a: int, b: int) -> int:
    return a if seq_le(a, b) else b


def seq_in_range(x: int, lo: int, hi: int) -> bool:
    """``lo <= x < hi`` in the circle (empty when lo == hi)."""
    return ((x - lo) & MASK32) < ((hi - lo) & MASK32)


def seq64_add(a: int, n: int) -> int:
    return (a + n) & MASK64


def seq64_diff(a: int, b: int) -> int:
    d = (a - b) & MASK64
    return d - 0x10000000000000000 if d & _HALF64 else d


def seq64_lt(a: int, b: int) -> bool:
    return seq64_diff(a, b) < 0


def seq64_le(a: int, b: int) -> bool:
    return seq64_diff(a, b) <= 0


def seq64_gt(a: int, b: int) -> bool:
    return seq64_diff(a, b) > 0


def seq64_ge(a: int, b: int) -> bool:
    return seq64_diff(a, b) >= 0
