"""Link layers of captured frames: find the network-layer packet inside.

Supported link types (tcpdump.org LINKTYPE registry): Ethernet (1, with any
number of IEEE 802.1Q / 802.1ad "QinQ" VLAN tags), raw IP (101, and the
DLT_RAW numbers 12 and 14; 228 = IPv4, 229 = IPv6), Linux cooked capture
SLL (113) and SLL2 (276), BSD loopback "null" (0, host byte order) and
OpenBSD loop (108, network byte order; both byte orders accepted for both).
"""

from __future__ import annotations

import struct

from stack.trace.record import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NAMES,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    LINKTYPE_RAW_DLT12,
    LINKTYPE_RAW_DLT14,
    CapturedPacket,
)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD
# IEEE 802.1Q C-tag, 802.1ad S-tag, and the pre-standard QinQ tags.
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))

ETHERTYPE_NAMES = {
    ETHERTYPE_IPV4: "ipv4",
    ETHERTYPE_ARP: "arp",
    ETHERTYPE_IPV6: "ipv6",
    0x8035: "rarp",
    0x88CC: "lldp",
    0x8863: "pppoe-discovery",
    0x8864: "pppoe",
    0x8847: "mpls",
}

# BSD loopback address families: AF_INET is 2 everywhere; AF_INET6 is 10 on
# Linux, 24 on NetBSD/OpenBSD/BSD/OS, 28 on FreeBSD, 30 on Darwin.
_AF_TO_ETHERTYPE = {2: ETHERTYPE_IPV4, 10: ETHERTYPE_IPV6, 24: ETHERTYPE_IPV6,
                    28: ETHERTYPE_IPV6, 30: ETHERTYPE_IPV6}

# Every link type record.py names is one that link_layer() below decodes.
SUPPORTED_LINKTYPES = frozenset(LINKTYPE_NAMES)
_RAW_TYPES = frozenset((LINKTYPE_RAW, LINKTYPE_RAW_DLT12, LINKTYPE_RAW_DLT14))
_U16 = struct.Struct("!H")
_U32BE = struct.Struct("!I")
_U32LE = struct.Struct("<I")


def _raw_ethertype(data: bytes, offset: int) -> int | None:
    """Ethertype implied by the IP version nibble at ``offset``."""
    if offset >= len(data):
        return None
    version = data[offset] >> 4
    if version == 4:
        return ETHERTYPE_IPV4
    if version == 6:
        return ETHERTYPE_IPV6
    return None


def _skip_vlan(data: bytes, ethertype: int, offset: int) -> tuple[int | None, int]:
    """Skip 802.1Q/802.1ad tags (4 bytes each: TCI, then the inner type)."""
    while ethertype in VLAN_TPIDS:
        if offset + 4 > len(data):
            return None, offset
        ethertype = _U16.unpack_from(data, offset + 2)[0]
        offset += 4
    return ethertype, offset


def link_layer(linktype: int, data: bytes) -> tuple[int | None, int]:
    """Return ``(ethertype, offset)``: the network protocol carried by the
    frame (an Ethernet type number, None when unknown or cut short) and the
    offset of its first byte in ``data``."""
    n = len(data)
    if linktype == LINKTYPE_ETHERNET:
        # dst MAC (6), src MAC (6), type (2); a type <= 1500 is an 802.3 length.
        if n < 14:
            return None, n
        ethertype = _U16.unpack_from(data, 12)[0]
        if ethertype <= 1500:
            return None, 14
        return _skip_vlan(data, ethertype, 14)
    if linktype in _RAW_TYPES:
        return _raw_ethertype(data, 0), 0
    if linktype == LINKTYPE_IPV4:
        return ETHERTYPE_IPV4, 0
    if linktype == LINKTYPE_IPV6:
        return ETHERTYPE_IPV6, 0
    if linktype == LINKTYPE_LINUX_SLL:
        # packet type (2), ARPHRD type (2), address length (2), address (8),
        # protocol (2).
        if n < 16:
            return None, n
        return _skip_vlan(data, _U16.unpack_from(data, 14)[0], 16)
    if linktype == LINKTYPE_LINUX_SLL2:
        # protocol (2), reserved (2), ifindex (4), ARPHRD type (2),
        # packet type (1), address length (1), address (8).
        if n < 20:
            return None, n
        return _skip_vlan(data, _U16.unpack_from(data, 0)[0], 20)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        # 4-byte address family: host order for NULL, network order for LOOP;
        # captures moved between machines carry either, so try both.
        if n < 4:
            return None, n
        family = _U32BE.unpack_from(data, 0)[0]
        if family not in _AF_TO_ETHERTYPE:
            family = _U32LE.unpack_from(data, 0)[0]
        ethertype = _AF_TO_ETHERTYPE.get(family)
        if ethertype is None:  # unknown family: trust the IP version nibble
            ethertype = _raw_ethertype(data, 4)
        return ethertype, 4
    return None, 0


def strip_link(linktype: int, data: bytes) -> bytes | None:
    """The IPv4 or IPv6 packet inside a frame, or None (not IP, unknown link
    type, or the link header itself was cut short)."""
    ethertype, offset = link_layer(linktype, data)
    if ethertype not in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) or offset >= len(data):
        return None
    return data[offset:] if offset else data


def ip_payload(pkt: CapturedPacket) -> bytes | None:
    """The IP packet (IPv4 or IPv6 header first) of a captured frame, or None
    when the frame does not carry IP (ARP, LLDP...) or its link type is not
    supported."""
    return strip_link(pkt.linktype, pkt.data)
