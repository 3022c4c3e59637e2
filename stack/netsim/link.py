"""One direction of an in-memory link in virtual time.

A packet handed to `Link.send(frame, now)` goes through, in order:
  1. GSO: a super-segment Frame is cut into MSS packets (as a NIC or the
     kernel would, with full checksums) unless the link carries super-segments
     whole (`split_gso=False`, a "large MTU" link: fewer events, loss applies
     per super-segment);
  2. MTU: a packet longer than `mtu` is dropped (counted `too_big`);
  3. the queue: tail drop when the bytes waiting or being serialized would
     exceed `queue_limit_bytes`;
  4. serialization at `rate_bps` (None = infinitely fast), one packet at a time;
  5. the wire: random loss (`loss`), then `delay` of propagation; a fraction
     `reorder` is held back `reorder_delay` extra (later packets overtake
     it), and a fraction `duplicate` arrives twice.
Every random choice comes from `rng` (seeded: the same run twice is the same).
`send` returns the deliveries as (arrival time, packet bytes, checksum_verified).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from stack.host.frame import Frame
from stack.host.packetize import gso_split

__all__ = ["Link", "LinkStats"]


@dataclass
class LinkStats:
    packets: int = 0  # offered (after GSO split)
    delivered: int = 0  # copies handed to the far end (duplicates included)
    bytes_delivered: int = 0
    lost: int = 0
    queue_drops: int = 0
    too_big: int = 0
    reordered: int = 0
    duplicated: int = 0
    max_queue_bytes: int = field(default=0)


class Link:
    def __init__(
        self,
        rate_bps: float | None = None,
        delay: float = 0.0,
        loss: float = 0.0,
        reorder: float = 0.0,
        duplicate: float = 0.0,
        queue_limit_bytes: int | None = None,
        rng: random.Random | None = None,
        *,
        reorder_delay: float = 0.001,
        mtu: int | None = None,
        split_gso: bool = True,
    ) -> None:
        for name, p in (("loss", loss), ("reorder", reorder), ("duplicate", duplicate)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability")
        if rate_bps is not None and rate_bps <= 0:
            raise ValueError("rate_bps must be positive")
        self.rate_bps = rate_bps
        self.delay = delay
        self.loss = loss
        self.reorder = reorder
        self.reorder_delay = reorder_delay
        self.duplicate = duplicate
        self.queue_limit_bytes = queue_limit_bytes
        self.mtu = mtu
        self.split_gso = split_gso
        self.rng = rng if rng is not None else random.Random(0)
        self.stats = LinkStats()
        self._busy_until = 0.0
        self._queue: deque[tuple[float, int]] = deque()  # (serialized at, size)
        self._queued = 0

    def __repr__(self) -> str:
        return (f"Link(rate={self.rate_bps} delay={self.delay} loss={self.loss} "
                f"reorder={self.reorder} dup={self.duplicate} q={self.queue_limit_bytes})")

    def queued_bytes(self, now: float) -> int:
        """Bytes waiting for or under serialization at `now`."""
        q = self._queue
        while q and q[0][0] <= now:
            self._queued -= q.popleft()[1]
        return self._queued

    def send(self, frame: Frame | bytes, now: float) -> list[tuple[float, bytes, bool]]:
        wire = 0  # largest wire packet, when not len(pkt)
        if isinstance(frame, Frame):
            if frame.gso_size and self.split_gso:
                packets = gso_split(frame)
                verified = False
            else:
                packets = [frame.data]
                verified = frame.csum_partial  # NEEDS_CSUM: nothing to verify
                if frame.gso_size:  # carried whole: each piece must fit the MTU
                    wire = frame.ip_header_len + frame.tcp_header_len + frame.gso_size
        else:
            packets = [bytes(frame)]
            verified = False
        out: list[tuple[float, bytes, bool]] = []
        for pkt in packets:
            self._one(pkt, now, verified, out, wire)
        return out

    def _one(self, pkt: bytes, now: float, verified: bool,
             out: list[tuple[float, bytes, bool]], wire: int = 0) -> None:
        st = self.stats
        st.packets += 1
        size = len(pkt)
        if self.mtu is not None and (wire or size) > self.mtu:
            st.too_big += 1
            return
        t = now
        if self.rate_bps is not None:
            queued = self.queued_bytes(now)
            if self.queue_limit_bytes is not None and queued + size > self.queue_limit_bytes:
                st.queue_drops += 1  # tail drop
                return
            start = max(now, self._busy_until)
            t = self._busy_until = start + size * 8.0 / self.rate_bps
            self._queue.append((t, size))
            self._queued += size
            if self._queued > st.max_queue_bytes:
                st.max_queue_bytes = self._queued
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            st.lost += 1
            return
        t += self.delay
        if self.reorder and rng.random() < self.reorder:
            st.reordered += 1
            t += self.reorder_delay
        out.append((t, pkt, verified))
        st.delivered += 1
        st.bytes_delivered += size
        if self.duplicate and rng.random() < self.duplicate:
            st.duplicated += 1
            st.delivered += 1
            st.bytes_delivered += size
            out.append((t, pkt, verified))
