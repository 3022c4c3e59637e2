"""A plain IP forwarder for virtual-time topologies: several hosts behind
one router share its links, so flows compete for a bottleneck (congestion
control experiments, MPTCP subflows over a shared path).

It looks like a host to `Network` (interfaces, receive, on_timer,
next_deadline, transmit). Packets are forwarded unchanged (no TTL
decrement, so no checksum work) by longest-prefix match on the destination.
A super-segment carried whole (`Link(split_gso=False)`) arrives as one packet
and leaves as one; give such links no `mtu`.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

from stack.host.frame import Frame

__all__ = ["Router"]


class Router:
    def __init__(self, name: str = "router") -> None:
        self.name = name
        self.interfaces: dict[str, None] = {}
        self._routes: list[tuple[int, int, int, int, str]] = []  # version, net, mask, plen, if
        self._out: list[tuple[str, Frame]] = []
        self.stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"Router({self.name!r}, ifaces={list(self.interfaces)})"

    def add_interface(self, name: str) -> None:
        self.interfaces[name] = None

    def add_route(self, prefix: str, iface: str) -> None:
        if iface not in self.interfaces:
            raise ValueError(f"no interface {iface}")
        net = ipaddress.ip_network(prefix, strict=False)
        self._routes.append((net.version, int(net.network_address), int(net.netmask),
                             net.prefixlen, iface))
        self._routes.sort(key=lambda r: -r[3])  # longest prefix first; stable

    def lookup(self, version: int, dst: int) -> str | None:
        for v, net, mask, _, iface in self._routes:
            if v == version and dst & mask == net:
                return iface
        return None

    # the host interface Network drives
    def receive(self, packet: bytes, iface: str, now: float, *,
                checksum_verified: bool = False) -> None:
        if len(packet) < 20:
            self.stats["malformed"] += 1
            return
        version = packet[0] >> 4
        if version == 4:
            dst = int.from_bytes(packet[16:20], "big")
        elif version == 6 and len(packet) >= 40:
            dst = int.from_bytes(packet[24:40], "big")
        else:
            self.stats["malformed"] += 1
            return
        out = self.lookup(version, dst)
        if out is None:
            self.stats["no_route"] += 1
            return
        self.stats["forwarded"] += 1
        self._out.append((out, Frame(bytes(packet), 0, checksum_verified)))

    def on_timer(self, now: float) -> None:
        return None

    def next_deadline(self) -> float | None:
        return None

    def transmit(self) -> list[tuple[str, Frame]]:
        out, self._out = self._out, []
        return out
