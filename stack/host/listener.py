"""A listening socket's queues (RFC 9293 §3.10.7.2 LISTEN state).

Connections that received a SYN and answered SYN,ACK sit in the SYN queue
(state SYN-RECEIVED) until the handshake completes; then they move to the
accept queue until the application takes them. The backlog bounds the two
queues together: a SYN arriving when they hold `backlog` connections is
dropped (and counted by the host), so the peer retransmits it later, as Linux
does without SYN cookies.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["Listener"]


class Listener:
    def __init__(self, addr: bytes | None, port: int, backlog: int, config: Any | None) -> None:
        self.addr = addr  # raw address, or None for every address
        self.port = port
        self.backlog = max(1, backlog)
        self.config = config
        self.syn_queue: dict[Any, None] = {}  # SYN-RECEIVED connections, in arrival order
        self.accept_queue: deque[Any] = deque()
        self.closed = False
        self.dropped_syns = 0

    def __repr__(self) -> str:
        return (f"Listener(port={self.port} syn={len(self.syn_queue)} "
                f"ready={len(self.accept_queue)} backlog={self.backlog})")

    @property
    def pending(self) -> int:
        """Connections ready for accept()."""
        return len(self.accept_queue)

    @property
    def full(self) -> bool:
        return len(self.syn_queue) + len(self.accept_queue) >= self.backlog

    def accept(self) -> Any | None:
        """The oldest established connection, or None."""
        return self.accept_queue.popleft() if self.accept_queue else None

    # --- used by the host ---------------------------------------------------

    def add_embryo(self, conn: Any) -> None:
        self.syn_queue[conn] = None

    def established(self, conn: Any) -> bool:
        """Move `conn` from the SYN queue to the accept queue; False if it was
        not in the SYN queue."""
        if conn not in self.syn_queue:
            return False
        del self.syn_queue[conn]
        self.accept_queue.append(conn)
        return True

    def forget(self, conn: Any) -> None:
        self.syn_queue.pop(conn, None)
