"""Typed errors raised by the wire codecs.

Every parser in `stack.wire` raises only these on bad input, never anything
else (no `IndexError`, `struct.error`, ...):

- `IntegrityError`: the bytes are not all there or do not add up (a length
  field pointing past the buffer, a header shorter than its minimum, a bad
  checksum, a truncated capture).
- `SanityError`: the bytes are all there but describe something impossible
  (a flag combination no endpoint may send, an option length that matches no
  variant of that option, an unknown version where the layout depends on it).

Both derive from `WireError`, itself a `ValueError`, so callers that only want
"drop this packet" can catch one class.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IntegrityError", "SanityError", "WireError", "check_uint"]


class WireError(ValueError):
    """Base class of every error raised while parsing or emitting wire data."""


class IntegrityError(WireError):
    """Lengths, truncation or checksums do not add up."""


class SanityError(WireError):
    """Field values or flag combinations that no valid sender produces."""


def check_uint(value: Any, bits: int, name: str) -> int:
    """`value` when it is an int (not a bool) that fits in `bits` unsigned
    bits; else `SanityError`. The field check of every emit in `stack.wire`."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise SanityError(f"{name}={value!r} does not fit in {bits} bits")
    return value
