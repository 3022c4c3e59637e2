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

__all__ = ["IntegrityError", "SanityError", "WireError"]


class WireError(ValueError):
    """Base class of every error raised while parsing or emitting wire data."""


class IntegrityError(WireError):
    """Lengths, truncation or checksums do not add up."""


class SanityError(WireError):
    """Field values or flag combinations that no valid sender produces."""
