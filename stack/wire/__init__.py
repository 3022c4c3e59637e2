"""Packet codecs: IPv4, IPv6, TCP and every MPTCP option (parse/emit exact inverses).

Submodules: `errors` (typed errors), `ip`, `tcp`, `mptcp`, `checksum`.
"""

from __future__ import annotations

from .errors import IntegrityError, SanityError, WireError

__all__ = ["IntegrityError", "SanityError", "WireError"]
