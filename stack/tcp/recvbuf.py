"""The receive side buffers: in-order bytes waiting for the application and the
out-of-order ranges (RFC 9293 §3.10.7.4 seventh step; RFC 2018 for SACK).

Out-of-order data lives in ``fastpath.reassembly.Assembler`` (Cython), or its
plain-Python twin ``fastpath.reference.Assembler`` when the compiled module is
not built. The total (readable + out-of-order) is bounded by the receive
buffer size, which is what the connection advertises as its window.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ReceiveBuffer", "Assembler"]

try:  # the compiled fast path
    from fastpath.reassembly import Assembler  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the build
    from fastpath.reference import Assembler  # type: ignore[no-redef]


class ReceiveBuffer:
    """``readable`` bytes for the application plus out-of-order ranges whose
    offsets are relative to RCV.NXT."""

    __slots__ = ("capacity", "_ready", "_ooo")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ready = bytearray()
        self._ooo: Any = Assembler(capacity)

    @property
    def readable(self) -> int:
        return len(self._ready)

    @property
    def out_of_order(self) -> int:
        return int(self._ooo.buffered)

    @property
    def free(self) -> int:
        """Room left for new in-order data (what the window may offer)."""
        return max(0, self.capacity - len(self._ready))

    def add(self, offset: int, data: bytes | memoryview, limit: int) -> int:
        """Store ``data`` at ``offset`` from RCV.NXT, keeping only bytes below
        ``limit`` (the advertised window). Return how far RCV.NXT advances."""
        if offset < 0:
            data = data[-offset:]
            offset = 0
        if offset + len(data) > limit:
            data = data[: max(0, limit - offset)]
        if not data:
            return 0
        ooo = self._ooo
        if offset == 0 and not ooo.buffered:
            self._ready += data  # fast path: in order, nothing pending
            return len(data)
        ooo.add(offset, data)  # bounded by its capacity (the buffer size)
        chunk = ooo.pop_contiguous()
        if chunk:
            self._ready += chunk
        return len(chunk)

    def ranges(self) -> list[tuple[int, int]]:
        """Out-of-order ranges (start, end), offsets relative to RCV.NXT."""
        return list(self._ooo.ranges()) if self._ooo.buffered else []

    def read(self, max_bytes: int) -> bytes:
        ready = self._ready
        if max_bytes >= len(ready):
            out = bytes(ready)  # one copy; the common case of a bulk reader
            ready.clear()
            return out
        out = bytes(ready[:max_bytes])
        del ready[:max_bytes]
        return out

    def read_into(self, buf: bytearray | memoryview) -> int:
        mv = memoryview(buf).cast("B")
        n = min(len(mv), len(self._ready))
        mv[:n] = self._ready[:n]
        del self._ready[:n]
        return n

    def clear(self) -> None:
        self._ready.clear()
        self._ooo.clear()
