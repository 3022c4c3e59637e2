"""Record what hosts transmit in a virtual-time run as a pcap (raw IP
link type), with virtual timestamps: `net.taps.append(PcapTap(path))`.

Super-segments are written as the wire would carry them (cut at gso_size,
checksums complete) unless `split_gso=False`, so tshark and tcpdump verify
every checksum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stack.host.frame import Frame
from stack.host.packetize import gso_split
from stack.trace.pcap import PcapWriter

__all__ = ["PcapTap"]


class PcapTap:
    def __init__(self, target: str | Path | Any, *, hosts: list[Any] | None = None,
                 split_gso: bool = True) -> None:
        self.writer = PcapWriter(target)
        self.hosts = hosts  # None: every host
        self.split_gso = split_gso

    def __call__(self, now: float, host: Any, iface: str, frame: Frame) -> None:
        if self.hosts is not None and all(h is not host for h in self.hosts):
            return
        if frame.gso_size and self.split_gso:
            for pkt in gso_split(frame):
                self.writer.write(pkt, now)
        else:
            self.writer.write(frame.data, now)

    @property
    def count(self) -> int:
        return self.writer.count

    def close(self) -> None:
        self.writer.close()
