"""Local stand-in for ``fastpath.reassembly.Assembler`` used only when neither
the compiled module nor ``fastpath.reference`` provides it (same API as
docs/INTERFACES.md "fastpath.reassembly")."""

from __future__ import annotations

__all__ = ["Assembler"]


class Assembler:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._segs: dict[int, bytes] = {}  # start -> bytes, non-overlapping

    @property
    def buffered(self) -> int:
        return sum(len(b) for b in self._segs.values())

    def add(self, offset: int, data: bytes | memoryview) -> int:
        data = bytes(data[: max(0, self.capacity - offset)])
        if offset < 0 or not data:
            return 0
        buf = bytearray()
        present = bytearray()
        lo, hi = offset, offset + len(data)
        for s in sorted(self._segs):
            b = self._segs[s]
            if s + len(b) >= lo and s <= hi:
                lo, hi = min(lo, s), max(hi, s + len(b))
        buf = bytearray(hi - lo)
        present = bytearray(hi - lo)
        for s in sorted(self._segs):
            b = self._segs[s]
            if s >= lo and s + len(b) <= hi:
                buf[s - lo : s - lo + len(b)] = b
                present[s - lo : s - lo + len(b)] = b"\x01" * len(b)
                del self._segs[s]
        new = 0
        for i, byte in enumerate(data):
            j = offset - lo + i
            if not present[j]:
                buf[j] = byte
                present[j] = 1
                new += 1
        self._segs[lo] = bytes(buf)
        return new

    def pop_contiguous(self) -> bytes:
        b = self._segs.pop(0, b"")
        if b:
            self._segs = {s - len(b): v for s, v in self._segs.items()}
        return b

    def ranges(self) -> list[tuple[int, int]]:
        return [(s, s + len(self._segs[s])) for s in sorted(self._segs)]

    def clear(self) -> None:
        self._segs.clear()
