"""The routing table and the egress rule of a multihomed host.

Routes are (prefix, interface, gateway). Each interface address also gives a
*connected* route for its on-link prefix. Because the host sits on L3 devices
(TUN) and in-memory links, the gateway is informational: what the lookup
decides is the interface a packet leaves through (and the next hop, reported
for diagnostics).

The egress rule (documented in docs/INTERFACES.md):

1. A packet whose source address S belongs to interface I leaves through I
   ("egress by source address", RFC 8684's multihomed host: each subflow uses
   the path of its own address), **unless** an explicitly added route
   (`add_route`) with a non-zero prefix length matches the destination through
   another interface and is strictly more specific than every route through I
   that matches (I's connected prefixes, and explicit routes through I). Default
   routes (prefix length 0) never pull a packet away from its source's
   interface.
2. With no source yet (`connect()` without a local address), the classic
   longest-prefix match over every route decides: connected prefixes, explicit
   routes and default gateways; ties go to the route added first (interfaces'
   connected routes count as added when the address was). The source address
   is then chosen on that interface (see `select_source`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .interfaces import Interface

__all__ = ["Route", "RouteTable", "NoRoute"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NoRoute(OSError):
    """No route to the destination (errno ENETUNREACH)."""

    def __init__(self, msg: str) -> None:
        import errno

        super().__init__(errno.ENETUNREACH, msg)


@dataclass(frozen=True, slots=True)
class Route:
    prefix: IpNetwork
    iface: str
    gateway: IpAddress | None = None
    connected: bool = False

    def matches(self, dst: IpAddress) -> bool:
        return dst.version == self.prefix.version and dst in self.prefix


class RouteTable:
    def __init__(self) -> None:
        self._routes: list[Route] = []  # insertion order breaks ties

    def __iter__(self):
        return iter(self._routes)

    def add(self, prefix: str | IpNetwork, iface: str, gateway: str | IpAddress | None = None,
            *, connected: bool = False) -> Route:
        net = ipaddress.ip_network(prefix, strict=False) if isinstance(prefix, str) else prefix
        gw = ipaddress.ip_address(gateway) if isinstance(gateway, str) else gateway
        if gw is not None and gw.version != net.version:
            raise ValueError(f"gateway {gw} is not of the family of {net}")
        route = Route(net, iface, gw, connected)
        self._routes.append(route)
        return route

    def remove_iface(self, iface: str) -> None:
        self._routes = [r for r in self._routes if r.iface != iface]

    def lookup(self, dst: IpAddress) -> Route | None:
        """Longest prefix match over all routes (rule 2); ties: first added."""
        best: Route | None = None
        for r in self._routes:
            if r.matches(dst) and (best is None or r.prefix.prefixlen > best.prefix.prefixlen):
                best = r
        return best

    def egress(self, src_iface: Interface, dst: IpAddress) -> Route:
        """Rule 1: the route a packet from an address of `src_iface` takes."""
        own: Route | None = None  # most specific match through the source's iface
        other: Route | None = None  # most specific explicit non-default elsewhere
        for r in self._routes:
            if not r.matches(dst):
                continue
            if r.iface == src_iface.name:
                if own is None or r.prefix.prefixlen > own.prefix.prefixlen:
                    own = r
            elif not r.connected and r.prefix.prefixlen > 0:
                if other is None or r.prefix.prefixlen > other.prefix.prefixlen:
                    other = r
        if other is not None and (own is None or other.prefix.prefixlen > own.prefix.prefixlen):
            return other
        if own is not None:
            return own
        # No route at all through the source's interface: it still leaves
        # there (a point-to-point L3 device needs no next hop).
        return Route(ipaddress.ip_network(dst), src_iface.name, None, connected=True)
