"""What the host hands to a driver: one IP packet, or one TCP super-segment.

A `Frame` with ``gso_size == 0`` is a complete packet with every checksum
filled in. A frame with ``gso_size > 0`` is a TCP super-segment (TSO/GSO): the
device cuts its payload into ``gso_size``-byte packets, each with a copy of
the headers, and finishes each TCP checksum. Its TCP checksum field holds the
folded, *non-inverted* pseudo-header sum (virtio-net ``NEEDS_CSUM`` with
``csum_start`` = IP header length and ``csum_offset`` = 16; see
shared/reference/tun-offload.md), and ``csum_partial`` is True.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Frame"]


@dataclass(slots=True)
class Frame:
    # (not frozen: a frozen dataclass costs ~1 µs more per packet to build)
    data: bytes
    gso_size: int = 0
    csum_partial: bool = False
    # Length of the IP header (where the TCP header starts): the virtio-net
    # header's csum_start, and hdr_len = ip_header_len + tcp_header_len.
    ip_header_len: int = 20
    tcp_header_len: int = 20

    @property
    def version(self) -> int:
        return self.data[0] >> 4 if self.data else 0

    def __len__(self) -> int:
        return len(self.data)
