"""64-bit data-sequence arithmetic (RFC 8684 §3.3) and 32-bit expansion.

The data sequence space is a 64-bit circle: ``a < b`` means "b is ahead of a by
less than half the circle" (the serial-number arithmetic of RFC 1982, as the
kernel's ``before64``/``after64``). Never compare raw DSNs with ``<``.

RFC 8684 §3.3: a DSN or DATA_ACK may be sent as its low 32 bits; the receiver
"expands" it against the current 64-bit value. ``expand32`` is the kernel's
``__mptcp_expand_seq`` (net/mptcp/options.c): take the high half of the
reference, then step one 2**32 block forward or back when the 32-bit values
wrapped between the reference and the new value.
"""

from __future__ import annotations

__all__ = [
    "MASK32",
    "MASK64",
    "dsn_add",
    "dsn_diff",
    "dsn_lt",
    "dsn_le",
    "dsn_gt",
    "dsn_ge",
    "dsn_max",
    "expand32",
    "expand",
]

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
_HALF32 = 1 << 31
_HALF64 = 1 << 63


def dsn_add(a: int, n: int) -> int:
    """``a + n`` on the 64-bit circle (n may be negative)."""
    return (a + n) & MASK64


def dsn_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in [-2**63, 2**63)."""
    d = (a - b) & MASK64
    return d - (1 << 64) if d >= _HALF64 else d


def dsn_lt(a: int, b: int) -> bool:
    return dsn_diff(a, b) < 0


def dsn_le(a: int, b: int) -> bool:
    return dsn_diff(a, b) <= 0


def dsn_gt(a: int, b: int) -> bool:
    return dsn_diff(a, b) > 0


def dsn_ge(a: int, b: int) -> bool:
    return dsn_diff(a, b) >= 0


def dsn_max(a: int, b: int) -> int:
    return b if dsn_lt(a, b) else a


def _before32(a: int, b: int) -> bool:
    return ((a - b) & MASK32) >= _HALF32


def expand32(old: int, cur32: int) -> int:
    """Expand the 32-bit value ``cur32`` against the 64-bit reference ``old``.

    Kernel ``__mptcp_expand_seq``: the result keeps old's high 32 bits, plus
    one block when the low half wrapped forward (cur32 numerically smaller but
    32-bit-after old), minus one when it wrapped backward.
    """
    old32 = old & MASK32
    cur32 &= MASK32
    cur = ((old & ~MASK32) + cur32) & MASK64
    if cur32 < old32 and _before32(old32, cur32):
        return (cur + (1 << 32)) & MASK64
    if cur32 > old32 and _before32(cur32, old32):
        return (cur - (1 << 32)) & MASK64
    return cur


def expand(old: int, value: int, is64: bool) -> int:
    """``mptcp_expand_seq``: a 64-bit wire value is taken as is."""
    return value & MASK64 if is64 else expand32(old, value)
