"""The TCP segment as the connection sees it: header fields, decoded options and
a payload view (RFC 9293 §3.1). One object may describe a super-segment of up
to ~64 KB that the device cuts into MSS-sized packets (TSO/GSO).
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 9293 §3.1 control bits (and RFC 3168 ECE/CWR) and their tcpdump letters
# are defined once, in the wire codec (stack/tcp may import stack/wire).
from stack.wire.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, flags_str

# Re-exported: callers take the flags from here (docs/INTERFACES.md).
__all__ = [
    "FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR",
    "TcpSegment",
    "flags_str",
    "options_length",
]


@dataclass(slots=True)
class TcpSegment:
    """A TCP segment. ``window`` is the raw 16-bit header field (unscaled);
    ``ts`` is ``(TSval, TSecr)``; ``sack_blocks`` holds ``(left, right)``
    pairs; ``mptcp`` holds raw kind-30 options (kind and length included),
    passed through untouched for the MPTCP layer."""

    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0
    window: int = 0
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    ts: tuple[int, int] | None = None
    sack_blocks: tuple[tuple[int, int], ...] = ()
    mptcp: tuple[bytes, ...] = ()
    payload: bytes | memoryview = b""
    # Emitted super-segments only: cut the payload into packets of this many
    # bytes (TSO/GSO); 0 = one packet.
    gso: int = 0

    @property
    def seg_len(self) -> int:
        """SEG.LEN of RFC 9293 §3.4: payload octets plus one for SYN and FIN."""
        n = len(self.payload)
        if self.flags & SYN:
            n += 1
        if self.flags & FIN:
            n += 1
        return n

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    def __repr__(self) -> str:
        parts = [f"{flags_str(self.flags)} seq={self.seq} ack={self.ack} win={self.window}"]
        if self.mss is not None:
            parts.append(f"mss={self.mss}")
        if self.wscale is not None:
            parts.append(f"ws={self.wscale}")
        if self.sack_permitted:
            parts.append("sackOK")
        if self.ts is not None:
            parts.append(f"ts={self.ts[0]}/{self.ts[1]}")
        if self.sack_blocks:
            parts.append(f"sack={list(self.sack_blocks)}")
        if self.mptcp:
            parts.append(f"mptcp={[bytes(o).hex() for o in self.mptcp]}")
        if self.payload:
            parts.append(f"len={len(self.payload)}")
        return f"TcpSegment({' '.join(parts)})"


def options_length(seg: TcpSegment, *, sack: bool = True) -> int:
    """Bytes the options of ``seg`` take on the wire, padded to 32 bits, laid
    out as Linux does (NOPs before wscale, timestamps and SACK). With
    ``sack=False`` the SACK blocks are not counted (the host trims them to
    whatever room the other options leave)."""
    n = 0
    if seg.mss is not None:
        n += 4
    if seg.ts is not None:
        n += 12 if not seg.sack_permitted else 10  # SACK-permitted shares the pad
    if seg.sack_permitted:
        n += 2 if seg.ts is not None else 4
    if seg.wscale is not None:
        n += 4
    if sack and seg.sack_blocks:
        n += 4 + 8 * len(seg.sack_blocks)
    for opt in seg.mptcp:
        n += (len(opt) + 3) & ~3  # each padded to 32 bits
    return n
