"""Network interfaces of the host: a name, an MTU, IPv4/IPv6 addresses with
their prefixes, and whether the device takes TCP offloads (TSO + partial
checksums)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

__all__ = ["Interface", "IfAddress", "parse_ifaddr", "IPV4_HEADER", "IPV6_HEADER", "TCP_HEADER",
           "GSO_MAX_PACKET"]

IpInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPV4_HEADER = 20
IPV6_HEADER = 40
TCP_HEADER = 20
# Largest packet a TSO super-segment may be: the 16-bit IPv4 total length
# (and IPv6 payload length) field.
GSO_MAX_PACKET = 65535
_MAX_TCP_OPTIONS = 40


def parse_ifaddr(spec: str | IpInterface) -> IpInterface:
    """``"10.1.0.2/24"`` or ``"fd00::2/64"`` (a bare address is a host /32 or
    /128) -> an `ipaddress` interface object."""
    if isinstance(spec, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return spec
    return ipaddress.ip_interface(spec.strip())


@dataclass(slots=True)
class IfAddress:
    """One address of an interface, kept also as raw bytes for the hot path."""

    iface: IpInterface
    raw: bytes

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return self.iface.ip

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return self.iface.network


@dataclass
class Interface:
    name: str
    mtu: int = 1500
    offload: bool = False
    addresses: list[IfAddress] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mtu < 576 and self.mtu != 0:
            # RFC 791 minimum reassembly size for IPv4; 1280 for IPv6 is
            # checked per family in mss_for().
            raise ValueError(f"MTU {self.mtu} too small")

    def add_address(self, spec: str | IpInterface) -> IfAddress:
        ifa = parse_ifaddr(spec)
        a = IfAddress(ifa, ifa.ip.packed)
        self.addresses.append(a)
        return a

    def owns(self, raw: bytes) -> bool:
        return any(a.raw == raw for a in self.addresses)

    def mss_for(self, version: int) -> int:
        """RFC 9293 §3.7.1 / RFC 6691: MSS = MTU - IP header - 20 (options
        are not counted)."""
        ip = IPV4_HEADER if version == 4 else IPV6_HEADER
        return self.mtu - ip - TCP_HEADER

    def max_segment_for(self, version: int) -> int:
        """Largest payload of one emitted segment: the MSS, or with TSO a
        whole number of MSS-sized pieces fitting a 64 KB packet (leaving room
        for a full 40 bytes of TCP options)."""
        mss = self.mss_for(version)
        if not self.offload:
            return mss
        ip = IPV4_HEADER if version == 4 else IPV6_HEADER
        room = GSO_MAX_PACKET - (ip if version == 4 else 0) - TCP_HEADER - _MAX_TCP_OPTIONS
        return max(mss, (room // mss) * mss)
