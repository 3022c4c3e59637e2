"""One timer structure for every connection of the host: a heap of
(deadline, seq, conn) with lazy invalidation.

A connection's deadline is never removed from the heap when it changes. When an
entry is popped, the connection's *current* `next_deadline()` is read again:
if it moved later the entry is pushed back at the new time, if it went away the
entry is dropped. `_scheduled` remembers the earliest entry held for each
connection so that a deadline moving earlier pushes one new entry and a
deadline moving later pushes none.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

__all__ = ["TimerHeap"]


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._scheduled: dict[Any, float] = {}

    def __len__(self) -> int:
        return len(self._scheduled)

    def schedule(self, conn: Any, deadline: float | None) -> None:
        """Make sure `conn` is looked at no later than `deadline`."""
        if deadline is None:
            return
        held = self._scheduled.get(conn)
        if held is not None and held <= deadline:
            return  # an earlier entry will fire and re-read the deadline
        self._scheduled[conn] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), conn))

    def discard(self, conn: Any) -> None:
        """Forget `conn` (its heap entries become stale and are skipped)."""
        self._scheduled.pop(conn, None)

    def peek(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, conn = heap[0]
            if self._scheduled.get(conn) == deadline:
                return deadline
            heapq.heappop(heap)  # stale
        return None

    def pop_due(self, now: float) -> list[Any]:
        """Remove and return (in deadline order) each connection whose entry is
        due at `now`. The caller re-reads its real deadline (lazy
        invalidation) and schedules it again; a connection rescheduled at or
        before `now` is not returned twice by one call."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            deadline, _, conn = heapq.heappop(heap)
            if self._scheduled.get(conn) != deadline:
                continue  # stale: superseded or discarded
            del self._scheduled[conn]
            due.append(conn)
        return due
