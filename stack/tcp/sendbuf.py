"""The send buffer: bytes queued by the application, keyed by sequence number.

A fixed-size ring (allocated on first use, never resized) holds the bytes from SND.UNA
onwards; transmission and retransmission read ``memoryview`` slices of it
(zero copy unless the range straddles the end of the ring), and an ACK releases
bytes from the front. A view handed out stays valid until the bytes it covers
are acknowledged and the space is reused; the host serialises segments at once.
"""

from __future__ import annotations

from .seq import seq_add, seq_diff

__all__ = ["SendBuffer"]


class SendBuffer:
    __slots__ = ("capacity", "start", "_buf", "_mv", "_head", "_len")

    def __init__(self, capacity: int, start_seq: int) -> None:
        if capacity <= 0:
            raise ValueError("send buffer capacity must be positive")
        self.capacity = capacity
        self.start = start_seq  # sequence number of the oldest byte held
        # The ring is allocated on the first write: a connection that never
        # sends (or an embryonic one) costs no buffer memory.
        self._buf: bytearray | None = None
        self._mv = memoryview(b"")
        self._head = 0  # ring index of `start`
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def space(self) -> int:
        return self.capacity - self._len

    @property
    def end(self) -> int:
        """Sequence number just past the last queued byte."""
        return seq_add(self.start, self._len)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as fits; return the byte count taken."""
        n = min(len(data), self.capacity - self._len)
        if n <= 0:
            return 0
        if self._buf is None:
            self._buf = bytearray(self.capacity)
            self._mv = memoryview(self._buf)
        src = memoryview(data).cast("B")[:n]
        pos = (self._head + self._len) % self.capacity
        first = min(n, self.capacity - pos)
        self._mv[pos : pos + first] = src[:first]
        if first < n:
            self._mv[0 : n - first] = src[first:]
        self._len += n
        return n

    def view(self, seq: int, n: int) -> bytes | memoryview:
        """``n`` bytes starting at sequence number ``seq`` (must be held)."""
        off = seq_diff(seq, self.start)
        if off < 0 or n < 0 or off + n > self._len:
            raise IndexError(f"range {seq}+{n} not in send buffer [{self.start}, +{self._len})")
        pos = (self._head + off) % self.capacity
        if pos + n <= self.capacity:
            return self._mv[pos : pos + n]
        first = self.capacity - pos
        return bytes(self._mv[pos:]) + bytes(self._mv[: n - first])

    def release(self, upto_seq: int) -> int:
        """Drop bytes before ``upto_seq`` (they were acknowledged)."""
        n = seq_diff(upto_seq, self.start)
        if n <= 0:
            return 0
        n = min(n, self._len)
        self._head = (self._head + n) % self.capacity
        self._len -= n
        self.start = seq_add(self.start, n)
        return n
