"""One Linux TUN device queue, with virtio-net offloads when the kernel grants them.

Opened with IFF_TUN|IFF_NO_PI|IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6)
(see shared/reference/tun-offload.md): each read then carries a TCP
super-segment of up to 64 KB and each write may carry one, which the kernel
segments and checksums. When the offloads are refused, or `offload=False`,
the device runs in plain mode (no vnet header, MTU-sized packets).

An existing device (`ip tuntap add dev NAME mode tun`) is attached single-queue
and left as found at close: we never touch its addresses, routes or
administrative state, and we restore its TUN feature flags (`ip -d link`
shows pi/vnet_hdr) and offloads. A device that does not exist is created
non-persistent and vanishes when closed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
from dataclasses import dataclass, field
from typing import Protocol

from tun import netlink
from tun.netns import in_netns
from tun.vnet import PLAIN_INFO, VNET_HDR_LEN, VnetError, VnetInfo, decode_vnet, header_for

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
TUNGETFEATURES = 0x800454CF
TUNGETVNETHDRSZ = 0x800454D7

IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_ONE_QUEUE = 0x2000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
IFF_PERSIST = 0x0800
TUN_FEATURES = IFF_NO_PI | IFF_ONE_QUEUE | IFF_VNET_HDR | IFF_MULTI_QUEUE

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6

IFNAMSIZ = 16
_IFREQ = struct.Struct("16sH22x")
READ_SIZE = 65536 + VNET_HDR_LEN + 64  # largest IP packet plus the vnet header


class TunError(OSError):
    """A TUN device could not be opened or used."""


class FrameLike(Protocol):
    data: bytes
    gso_size: int


@dataclass(slots=True)
class TunStats:
    rx_packets: int = 0
    rx_bytes: int = 0
    rx_gso: int = 0
    rx_errors: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_gso: int = 0
    tx_dropped: int = 0
    tx_errors: dict[str, int] = field(default_factory=dict)
    ll_removed: int = 0  # kernel-made IPv6 link-locals removed at close


def _ipv6_ll(index: int) -> list[tuple[bytes, int]]:
    """The link's IPv6 link-local (fe80::/10) addresses."""
    try:
        return [(a, p) for a, p in netlink.ipv6_addresses(index)
                if a[0] == 0xFE and a[1] & 0xC0 == 0x80]
    except OSError:
        return []


def _ifreq(name: str, flags: int) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or b"\0" in raw:
        raise TunError(errno.EINVAL, f"invalid interface name {name!r}")
    return _IFREQ.pack(raw, flags)


def _open_queue(name: str, flags: int) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, flags))
    except OSError:
        os.close(fd)
        raise
    return fd


def _get_flags(fd: int) -> int:
    raw = fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size))
    return _IFREQ.unpack(raw)[1]


class TunDevice:
    """A single TUN queue: `read()` packets in, `write(frame)` packets out.

    name:    the interface name (created if absent, attached if present).
    offload: ask for IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6);
             `.offload` tells whether it was granted.
    netns:   open the device inside that network namespace (`ip netns` name
             or path); only the opening thread switches, the fd keeps working
             from any thread afterwards.
    soft_gso: in plain mode, cut super-segments given to `write()` into
             MTU-sized packets with full checksums (software GSO) instead of
             dropping them.
    """

    def __init__(self, name: str, *, offload: bool = True, netns: str | None = None,
                 soft_gso: bool = True) -> None:
        self.name = name
        self.soft_gso = soft_gso
        self.netns = netns
        self.stats = TunStats()
        self._lock = threading.Lock()
        self._fd = -1
        self.offload = False
        self.vnet = False
        with in_netns(netns):
            self._found = netlink.get_link(name)
            if self._found is not None and (self._found.kind != "tun"
                                            or self._found.tun_type != 1):
                raise TunError(errno.EINVAL, f"{name} exists and is not a TUN device")
            self.created = self._found is None
            # The IPv6 link-local addresses it has before we open it: when our
            # open brings the carrier up, the kernel may add one (addrgenmode
            # eui64/stable/random), which close() removes again.
            self._found_ll: set[tuple[bytes, int]] = (
                set(_ipv6_ll(self._found.index)) if self._found is not None else set())
            mq = IFF_MULTI_QUEUE if self._found is not None and self._found.multi_queue else 0
            base = IFF_TUN | IFF_NO_PI | mq
            fd = -1
            if offload:
                fd = self._try_offload(name, base)
            if fd < 0:
                try:
                    fd = _open_queue(name, base)
                except OSError as exc:
                    raise TunError(exc.errno, f"cannot open TUN {name}: {exc.strerror}") from None
            self._fd = fd
            self.flags = _get_flags(fd)
            link = netlink.get_link(name)
        self.mtu = link.mtu if link is not None else 1500
        self.index = link.index if link is not None else 0

    def _try_offload(self, name: str, base: int) -> int:
        """Open with a vnet header and offloads; -1 if the kernel refuses either."""
        try:
            fd = _open_queue(name, base | IFF_VNET_HDR)
        except OSError:
            return -1
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, OFFLOADS)
        except OSError:
            os.close(fd)
            return -1
        self.offload = self.vnet = True
        return fd

    # -- introspection -------------------------------------------------------------
    @property
    def tso(self) -> bool:
        """Whether `write()` takes TCP super-segments: by the kernel (offload) or
        cut here (plain mode with soft_gso)."""
        return self.offload or self.soft_gso

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    @property
    def persistent(self) -> bool:
        return bool(self.flags & IFF_PERSIST)

    def __repr__(self) -> str:
        mode = "offload" if self.offload else "plain"
        return f"<TunDevice {self.name} {mode} mtu={self.mtu} fd={self._fd}>"

    # -- data path -----------------------------------------------------------------
    def read(self) -> tuple[bytes, VnetInfo] | None:
        """One packet and its vnet info, or None when nothing is waiting (EAGAIN)."""
        try:
            buf = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return None
            raise
        st = self.stats
        if not self.vnet:
            st.rx_packets += 1
            st.rx_bytes += len(buf)
            return buf, PLAIN_INFO
        try:
            info = decode_vnet(buf)
        except VnetError:
            st.rx_errors += 1
            return None
        st.rx_packets += 1
        st.rx_bytes += len(buf) - VNET_HDR_LEN
        if info.gso_size:
            st.rx_gso += 1
        return buf[VNET_HDR_LEN:], info

    def read_batch(self, limit: int = 64) -> list[tuple[bytes, VnetInfo]]:
        """Up to `limit` packets, stopping at EAGAIN."""
        out = []
        while len(out) < limit:
            item = self.read()
            if item is None:
                break
            out.append(item)
        return out

    def write(self, frame: FrameLike | bytes) -> bool:
        """Send one IP packet (or a Frame, possibly a super-segment). False if dropped."""
        iph = tcph = 0
        if isinstance(frame, bytes | bytearray | memoryview):
            data, gso, partial = frame, 0, False
        else:
            data = frame.data
            gso = frame.gso_size
            partial = getattr(frame, "csum_partial", gso > 0) or gso > 0
            iph = getattr(frame, "ip_header_len", 0)
            tcph = getattr(frame, "tcp_header_len", 0)
        st = self.stats
        if self.vnet:
            try:
                hdr = header_for(data, gso, partial, iph, tcph)
            except VnetError:
                return self._drop("bad_frame")
            payload: list[bytes | bytearray | memoryview] = [hdr, data]
        elif gso or partial:
            # A plain device cannot carry super-segments: cut them here, in
            # software, as the kernel's GSO does for a device without TSO.
            if not self.soft_gso:
                return self._drop("offload_on_plain_device")
            return self._write_split(frame)  # type: ignore[arg-type]
        else:
            payload = [data]
        try:
            os.writev(self._fd, payload)
        except BlockingIOError:
            return self._drop("eagain")
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EINVAL, errno.ENOBUFS, errno.EAGAIN,
                             errno.EMSGSIZE):
                return self._drop(errno.errorcode.get(exc.errno or 0, "oserror").lower())
            raise
        st.tx_packets += 1
        st.tx_bytes += len(data)
        if gso:
            st.tx_gso += 1
        return True

    def _write_split(self, frame: FrameLike) -> bool:
        from stack.host.packetize import gso_split

        try:
            packets = gso_split(frame)  # type: ignore[arg-type]
        except (ValueError, IndexError):
            return self._drop("bad_frame")
        st = self.stats
        st.tx_gso += 1
        fd = self._fd
        for pkt in packets:
            try:
                os.write(fd, pkt)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EIO, errno.ENOBUFS, errno.EINVAL):
                    self._drop(errno.errorcode.get(exc.errno or 0, "oserror").lower())
                    continue
                raise
            st.tx_packets += 1
            st.tx_bytes += len(pkt)
        return True

    def _drop(self, reason: str) -> bool:
        st = self.stats
        st.tx_dropped += 1
        st.tx_errors[reason] = st.tx_errors.get(reason, 0) + 1
        return False

    # -- teardown ------------------------------------------------------------------
    def close(self) -> None:
        """Detach; an attached device gets its TUN flags and offloads back."""
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd < 0:
            return
        found = self._found
        if found is not None and self.offload:
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, 0)  # a fresh device has no offloads
            except OSError:
                pass
        os.close(fd)
        if found is None:
            return
        self._remove_our_link_locals()
        if not found.persist:
            return
        original = (IFF_TUN | (0 if found.pi else IFF_NO_PI)
                    | (IFF_VNET_HDR if found.vnet_hdr else 0)
                    | (IFF_MULTI_QUEUE if found.multi_queue else 0))
        if (self.flags & TUN_FEATURES) == (original & TUN_FEATURES):
            return
        # TUNSETIFF on an existing device stores the opener's feature flags;
        # open it once more with the flags it had, then let go.
        try:
            with in_netns(self.netns):
                os.close(_open_queue(self.name, original))
        except OSError:
            pass

    def _remove_our_link_locals(self) -> None:
        """Delete the IPv6 link-local addresses the kernel generated while we
        held the device (carrier up); the user's own addresses stay."""
        try:
            with in_netns(self.netns):
                for addr, plen in _ipv6_ll(self.index):
                    if (addr, plen) not in self._found_ll:
                        netlink.delete_ipv6_address(self.index, addr, plen)
                        self.stats.ll_removed += 1
        except OSError:
            pass

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
