"""Demultiplexing tables: 4-tuple -> connection, (address|wildcard, port) ->
listener, and ephemeral port allocation.

Keys use raw address bytes (4 or 16) so the hot path does no `ipaddress`
work. A listener's address is the raw address, the family's all-zero address
(every address of that family), or None (every address of both families).
"""

from __future__ import annotations

import errno
import random
from typing import Any

from .listener import Listener

__all__ = ["ConnTable", "EPHEMERAL_LOW", "EPHEMERAL_HIGH"]

# Linux's default net.ipv4.ip_local_port_range.
EPHEMERAL_LOW = 32768
EPHEMERAL_HIGH = 60999

Key = tuple[bytes, int, bytes, int]  # local addr, local port, remote addr, remote port


class ConnTable:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.conns: dict[Key, Any] = {}
        self.keys: dict[Any, Key] = {}
        self.listeners: dict[tuple[bytes | None, int], Listener] = {}

    def __len__(self) -> int:
        return len(self.conns)

    # --- connections ----------------------------------------------------------

    def add(self, key: Key, conn: Any) -> None:
        if key in self.conns:
            raise OSError(errno.EADDRINUSE, "4-tuple in use")
        self.conns[key] = conn
        self.keys[conn] = key

    def remove(self, conn: Any) -> Key | None:
        key = self.keys.pop(conn, None)
        if key is not None:
            del self.conns[key]
        return key

    def get(self, key: Key) -> Any | None:
        return self.conns.get(key)

    # --- listeners ------------------------------------------------------------

    def find_listener(self, dst: bytes, port: int) -> Listener | None:
        ls = self.listeners
        if not ls:
            return None
        return (ls.get((dst, port)) or ls.get((bytes(len(dst)), port))
                or ls.get((None, port)))

    def port_listened(self, port: int, addr: bytes | None) -> bool:
        """True if a listener on `port` overlaps `addr`."""
        for (laddr, lport) in self.listeners:
            if lport != port:
                continue
            if addr is None or laddr is None or laddr == addr:
                return True
            if laddr == bytes(len(laddr)) and len(addr) == len(laddr):
                return True
            if addr == bytes(len(addr)) and len(addr) == len(laddr):
                return True
        return False

    def add_listener(self, listener: Listener) -> None:
        if self.port_listened(listener.port, listener.addr):
            raise OSError(errno.EADDRINUSE, f"port {listener.port} is already listened on")
        self.listeners[(listener.addr, listener.port)] = listener

    def remove_listener(self, listener: Listener) -> None:
        self.listeners.pop((listener.addr, listener.port), None)

    # --- ports ----------------------------------------------------------------

    def ephemeral_port(self, local: bytes | None, remote: bytes | None = None,
                       rport: int = 0) -> int:
        """A free local port: for a connection (local, ?, remote, rport) the
        port only has to make the 4-tuple unique and not be listened on; for a
        listener (remote None) it must be used by nothing on that address.
        RFC 6056 §3.3.2 (Algorithm 2): a random start in the ephemeral range
        (from the host's rng), then the next free port."""
        span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        start = self.rng.randrange(span)
        used_local = None
        if remote is None:
            used_local = {k[1] for k in self.conns if local is None or k[0] == local}
        for i in range(span):
            port = EPHEMERAL_LOW + (start + i) % span
            if self.port_listened(port, local):
                continue
            if remote is None:
                if port in used_local:
                    continue
            elif (local, port, remote, rport) in self.conns:
                continue
            return port
        raise OSError(errno.EADDRNOTAVAIL, "no free ephemeral port")
