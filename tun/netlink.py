"""Minimal rtnetlink: one link's flags, MTU and TUN attributes; its IPv6 addresses.

Used to learn how an existing TUN device was configured before we attach to
it (so that it is left exactly as found) and to read the MTU. Only RTM_GETLINK
is implemented; the reply's IFLA_LINKINFO/IFLA_INFO_DATA carries the IFLA_TUN_*
attributes (linux/if_link.h) that `ip -d link` prints.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_ROUTE = 0
RTM_GETLINK = 18
RTM_NEWLINK = 16
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 1, 4, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2

IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_OPERSTATE = 16
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_TUN_TYPE, IFLA_TUN_PI, IFLA_TUN_VNET_HDR = 3, 4, 5
IFLA_TUN_PERSIST, IFLA_TUN_MULTI_QUEUE, IFLA_TUN_NUM_QUEUES = 6, 7, 8

IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index


@dataclass(slots=True, frozen=True)
class LinkInfo:
    name: str
    index: int
    ifflags: int
    mtu: int
    operstate: int
    kind: str
    tun_type: int | None = None  # 1 = tun, 2 = tap
    pi: bool = False
    vnet_hdr: bool = False
    persist: bool = False
    multi_queue: bool = False
    num_queues: int = 0

    @property
    def up(self) -> bool:
        return bool(self.ifflags & IFF_UP)


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        length, kind = _RTATTR.unpack_from(buf, off)
        if length < 4 or off + length > end:
            break
        out[kind & 0x3FFF] = buf[off + 4:off + length]
        off += (length + 3) & ~3
    return out


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _RTATTR.pack(4 + len(payload), kind) + payload
    return raw + bytes(-len(raw) % 4)


def get_link(name: str) -> LinkInfo | None:
    """The link called `name` in this thread's namespace, or None if absent."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       NETLINK_ROUTE) as nl:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        body += _attr(IFLA_IFNAME, name.encode() + b"\0")
        nl.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETLINK, NLM_F_REQUEST, 1, 0)
                + body)
        reply = nl.recv(65536)
    length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(reply)
    if mtype == NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", reply, _NLMSGHDR.size)
        if -code == errno.ENODEV:
            return None
        raise OSError(-code, f"RTM_GETLINK {name}: {os.strerror(-code)}")
    if mtype != RTM_NEWLINK:
        raise OSError(errno.EPROTO, f"unexpected netlink reply type {mtype}")
    off = _NLMSGHDR.size
    _family, _type, index, ifflags, _change = _IFINFOMSG.unpack_from(reply, off)
    attrs = _attrs(reply, off + _IFINFOMSG.size, length)
    mtu = struct.unpack("=I", attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0
    oper = attrs.get(IFLA_OPERSTATE, b"\0")[0]
    kind, data = "", {}
    if IFLA_LINKINFO in attrs:
        li = attrs[IFLA_LINKINFO]
        info = _attrs(li, 0, len(li))
        kind = info.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()
        if IFLA_INFO_DATA in info:
            d = info[IFLA_INFO_DATA]
            data = _attrs(d, 0, len(d))

    def u8(k: int) -> int:
        return data[k][0] if k in data else 0

    return LinkInfo(
        name=name, index=index, ifflags=ifflags, mtu=mtu, operstate=oper, kind=kind,
        tun_type=u8(IFLA_TUN_TYPE) if kind == "tun" else None,
        pi=bool(u8(IFLA_TUN_PI)), vnet_hdr=bool(u8(IFLA_TUN_VNET_HDR)),
        persist=bool(u8(IFLA_TUN_PERSIST)), multi_queue=bool(u8(IFLA_TUN_MULTI_QUEUE)),
        num_queues=struct.unpack("=I", data[IFLA_TUN_NUM_QUEUES])[0]
        if IFLA_TUN_NUM_QUEUES in data else 0,
    )


def _request(msg_type: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
    """Send one request; the (type, message) replies up to DONE or the ACK."""
    out: list[tuple[int, bytes]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       NETLINK_ROUTE) as nl:
        nl.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | flags,
                               1, 0) + body)
        while True:
            buf = nl.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(buf):
                length, mtype, _f, _seq, _pid = _NLMSGHDR.unpack_from(buf, off)
                if length < _NLMSGHDR.size:
                    return out
                msg = buf[off:off + length]
                off += (length + 3) & ~3
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", msg, _NLMSGHDR.size)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return out  # the ACK
                out.append((mtype, msg))
            if not flags & NLM_F_DUMP and not flags & NLM_F_ACK:
                return out


def ipv6_addresses(index: int) -> list[tuple[bytes, int]]:
    """(address, prefixlen) of every IPv6 address on link `index`."""
    found = []
    body = _IFADDRMSG.pack(socket.AF_INET6, 0, 0, 0, 0)
    for mtype, msg in _request(RTM_GETADDR, NLM_F_DUMP, body):
        if mtype != RTM_NEWADDR:
            continue
        family, plen, _flags, _scope, idx = _IFADDRMSG.unpack_from(msg, _NLMSGHDR.size)
        if family != socket.AF_INET6 or idx != index:
            continue
        attrs = _attrs(msg, _NLMSGHDR.size + _IFADDRMSG.size, len(msg))
        addr = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if addr is not None and len(addr) == 16:
            found.append((addr, plen))
    return found


def delete_ipv6_address(index: int, addr: bytes, plen: int) -> None:
    """RTM_DELADDR of one IPv6 address (OSError if the kernel refuses)."""
    body = _IFADDRMSG.pack(socket.AF_INET6, plen, 0, 0, index) + _attr(IFA_LOCAL, addr)
    _request(RTM_DELADDR, NLM_F_ACK, body)
