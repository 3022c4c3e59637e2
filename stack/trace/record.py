"""Types shared by the capture readers and writers: the packet record, the
error type, the link-layer type numbers and the writers' time-stamp split.

Link-layer type numbers are those of the tcpdump.org LINKTYPE registry
(draft-ietf-opsawg-pcaplinktype), which pcap and pcapng files both carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stack.wire.errors import WireError

# --- LINKTYPE_* values (https://www.tcpdump.org/linktypes.html) ---
LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family in host byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_DLT12 = 12  # DLT_RAW as some BSDs number it (raw IPv4/IPv6)
LINKTYPE_RAW_DLT14 = 14  # DLT_RAW as OpenBSD numbers it
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, version from the first nibble
LINKTYPE_LOOP = 108  # OpenBSD loopback: address family in network byte order
LINKTYPE_LINUX_SLL = 113  # Linux "cooked" capture v1 (16-byte header)
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276  # Linux "cooked" capture v2 (20-byte header)

LINKTYPE_NAMES = {
    LINKTYPE_NULL: "null",
    LINKTYPE_ETHERNET: "ethernet",
    LINKTYPE_RAW_DLT12: "raw",
    LINKTYPE_RAW_DLT14: "raw",
    LINKTYPE_RAW: "raw",
    LINKTYPE_LOOP: "loop",
    LINKTYPE_LINUX_SLL: "linux-sll",
    LINKTYPE_IPV4: "ipv4",
    LINKTYPE_IPV6: "ipv6",
    LINKTYPE_LINUX_SLL2: "linux-sll2",
}


class CaptureError(WireError):
    """A capture file that cannot be read: bad magic, a truncated file or
    block header, an impossible record length.

    ``index`` is the 1-based number of the record being read when the error
    happened (None for errors in the file header); the records before it were
    delivered normally.
    """

    def __init__(self, msg: str, *, index: int | None = None) -> None:
        super().__init__(msg)
        self.index = index


@dataclass(slots=True, frozen=True)
class CapturedPacket:
    """One captured frame.

    ``index`` is the frame number counted from 1, as tshark's
    ``frame.number``; ``timestamp`` is seconds since the epoch (float; the
    exact value is ``timestamp_ns``); ``data`` holds the captured bytes, which
    are fewer than ``orig_len`` when the snap length cut the frame;
    ``interface`` is the pcapng interface id (0 for classic pcap).
    """

    index: int
    timestamp: float
    linktype: int
    data: bytes
    orig_len: int
    interface: int = 0
    timestamp_ns: int = 0

    @property
    def truncated(self) -> bool:
        """True when the snap length cut this frame short."""
        return len(self.data) < self.orig_len


def split_timestamp(timestamp: float, units: int) -> tuple[int, int]:
    """Seconds and fraction (in 1/units s) of a float time stamp, rounded to
    the nearest unit without the error of scaling the whole value."""
    sec = math.floor(timestamp)
    frac = round((timestamp - sec) * units)
    if frac >= units:
        sec, frac = sec + 1, frac - units
    return sec, frac
