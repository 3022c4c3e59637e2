"""Internet checksum helpers for the codecs (RFC 1071, RFC 793, RFC 8200 §8.1).

Uses the compiled `fastpath.checksum` when it is importable; otherwise a small
pure-Python fallback with the same semantics (see docs/INTERFACES.md,
"fastpath.checksum"), so the codecs work before the extension is built.
"""

from __future__ import annotations

import struct

__all__ = [
    "internet_checksum",
    "ones_sum",
    "pseudo_sum_v4",
    "pseudo_sum_v6",
    "tcp_checksum",
]


def _py_ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """Folded (not inverted) 16-bit one's-complement sum, odd byte zero-padded."""
    b = bytes(data)
    if len(b) & 1:
        b += b"\x00"
    total = initial + sum(struct.unpack(f"!{len(b) // 2}H", b)) if b else initial
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _py_internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    return ~_py_ones_sum(data, initial) & 0xFFFF


def _py_pseudo_sum_v4(src: bytes, dst: bytes, proto: int, length: int) -> int:
    return _py_ones_sum(bytes(src) + bytes(dst) + struct.pack("!BBH", 0, proto, length))


def _py_pseudo_sum_v6(src: bytes, dst: bytes, proto: int, length: int) -> int:
    return _py_ones_sum(bytes(src) + bytes(dst) + struct.pack("!IxxxB", length, proto))


def _py_tcp_checksum(pseudo: int, segment: bytes | bytearray | memoryview) -> int:
    return _py_internet_checksum(segment, pseudo)


try:  # the compiled fast path, when it has been built
    from fastpath.checksum import (  # type: ignore[import-not-found]
        internet_checksum,
        ones_sum,
        pseudo_sum_v4,
        pseudo_sum_v6,
        tcp_checksum,
    )
except ImportError:  # pragma: no cover - depends on the build
    ones_sum = _py_ones_sum
    internet_checksum = _py_internet_checksum
    pseudo_sum_v4 = _py_pseudo_sum_v4
    pseudo_sum_v6 = _py_pseudo_sum_v6
    tcp_checksum = _py_tcp_checksum
