"""RFC 6528 initial sequence numbers.

    ISN = M + F(localip, localport, remoteip, remoteport, secretkey)

M is a timer ticking every 4 microseconds (RFC 6528 §3, RFC 9293 §3.4.1), taken
from the host's `now`, never from a clock. F is a keyed hash (BLAKE2s with a
128-bit secret drawn from the host's random source, so a seeded source gives
reproducible ISNs).
"""

from __future__ import annotations

import hashlib
import random

__all__ = ["IsnGenerator"]


class IsnGenerator:
    def __init__(self, rng: random.Random) -> None:
        self._key = rng.getrandbits(128).to_bytes(16, "big")

    def __call__(self, local: bytes, lport: int, remote: bytes, rport: int, now: float) -> int:
        msg = local + lport.to_bytes(2, "big") + remote + rport.to_bytes(2, "big")
        f = int.from_bytes(hashlib.blake2s(msg, key=self._key, digest_size=4).digest(), "big")
        m = int(now * 250_000)  # one tick per 4 µs
        return (m + f) & 0xFFFFFFFF
