"""`stack.Host`: a running userspace host = the sans-IO core + TUN devices + one loop.

    with stack.Host.tun("tun1,10.1.0.2/24", "tun2,10.2.0.2/24,gw=10.2.0.1") as host:
        s = host.socket(stack.socket.AF_INET, stack.socket.SOCK_STREAM)
        s.connect(("10.1.0.1", 5001))

Each argument of `Host.tun` is `NAME,ADDR/PLEN[,ADDR/PLEN...][,gw=GW][,mtu=N]`:
the TUN device (attached if it exists, created otherwise) and the stack's own
addresses on the far side of it (IPv4 and/or IPv6); `gw=` adds a default
route of that family through the interface. The kernel side of the TUN
(its addresses, routes, link state) is the user's to configure.
"""

from __future__ import annotations

import errno
import inspect
import ipaddress
import random
import socket as _std
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stack.api.policy import DEFAULT_POLICY, MultipathPolicy
from stack.api.socket import AF_INET, SOCK_STREAM, Socket
from stack.host import HostCore
from stack.tcp.state import TcpState
from tun.device import TunDevice
from tun.loop import EventLoop, Tap

_DONE = frozenset({TcpState.CLOSED, TcpState.TIME_WAIT})
_DEFAULT: Any = object()


@dataclass
class IfaceSpec:
    """One parsed `NAME,ADDR/PLEN[,...][,gw=GW][,mtu=N]` argument."""

    name: str
    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = field(
        default_factory=list)
    gateways: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = field(default_factory=list)
    mtu: int | None = None

    @classmethod
    def parse(cls, spec: str) -> IfaceSpec:
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if not parts or "=" in parts[0] or "/" in parts[0]:
            raise ValueError(f"interface spec {spec!r}: expected NAME,ADDR/PLEN[,gw=GW]")
        out = cls(parts[0])
        for part in parts[1:]:
            key, eq, value = part.partition("=")
            try:
                if not eq:
                    if "/" not in part:
                        raise ValueError("address without /PLEN")
                    out.addresses.append(ipaddress.ip_interface(part))
                elif key == "gw":
                    out.gateways.append(ipaddress.ip_address(value))
                elif key == "mtu":
                    out.mtu = int(value)
                else:
                    raise ValueError(f"unknown key {key!r}")
            except ValueError as exc:
                raise ValueError(f"interface spec {spec!r}: {part!r}: {exc}") from None
        if not out.addresses:
            raise ValueError(f"interface spec {spec!r}: no address")
        for gw in out.gateways:
            if not any(a.version == gw.version for a in out.addresses):
                raise ValueError(f"interface spec {spec!r}: gateway {gw} has no address "
                                 f"of its family")
        return out


class Host:
    """A userspace TCP host running on TUN devices (see `Host.tun`)."""

    def __init__(self, core: HostCore, devices: dict[str, TunDevice], *,
                 tap: Tap | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 loop: Any = None, gro: bool = True) -> None:
        """Join `core` to its TUN `devices` with a new EventLoop (started here),
        or to a shared driver `loop` (e.g. a VirtualLoop, started by the caller)."""
        self.core = core
        self.devices = devices
        self._shared_loop = loop is not None
        if loop is None:
            loop = EventLoop(core, devices, clock=clock, on_turn=self._on_turn, tap=tap,
                             gro=gro)
        else:
            clock = loop.clock
            loop.hooks.append(self._on_turn)
            loop.users += 1
        self.clock = clock
        self.loop = loop
        # RFC 6897 local policies (stack/api/policy.py): MPTCP on for
        # wildcard-bound sockets, fate-sharing off, a buffer lower bound.
        self.multipath_policy: MultipathPolicy = DEFAULT_POLICY
        self.lock: threading.RLock = self.loop.lock
        self.cond: threading.Condition = self.loop.cond
        # TcpConnection / Listener -> its socket, and sockets bound but not yet
        # listening; weak, so that a socket dropped without close() is closed
        # by the garbage collector (Socket.__del__), as the kernel would.
        self._owners: weakref.WeakValueDictionary[Any, Socket] = weakref.WeakValueDictionary()
        self._bound: weakref.WeakValueDictionary[int, Socket] = weakref.WeakValueDictionary()
        self._orphans: list[Socket] = []  # dropped without close(), see _defer_close
        self._closed = False
        if not self._shared_loop:
            self.loop.start()

    # ------------------------------------------------------------ creation
    @classmethod
    def tun(cls, *ifaces: str | IfaceSpec, offload: bool = True, netns: str | None = None,
            rng: random.Random | None = None, tap: Tap | None = None,
            name: str = "", soft_gso: bool = True, gro: bool = True) -> Host:
        """Start a host on these TUN interfaces (see the module docstring).

        offload: use the kernel's TUN offloads (vnet header, TSO, checksums)
        when granted. In plain mode the driver still cuts the core's
        super-segments itself (`soft_gso`) and joins received in-order
        segments (`gro`, tun/gro.py); both can be switched off."""
        specs = [s if isinstance(s, IfaceSpec) else IfaceSpec.parse(s) for s in ifaces]
        if not specs:
            raise ValueError("Host.tun needs at least one interface")
        if len({s.name for s in specs}) != len(specs):
            raise ValueError("an interface is given twice")
        devices: dict[str, TunDevice] = {}
        try:
            for spec in specs:
                devices[spec.name] = TunDevice(spec.name, offload=offload, netns=netns,
                                               soft_gso=soft_gso)
            core = HostCore(rng, name=name)
            for spec in specs:
                dev = devices[spec.name]
                mtu = min(dev.mtu, spec.mtu) if spec.mtu else dev.mtu
                # The core emits TCP super-segments whenever the device takes
                # them: the kernel cuts them (offload) or the driver does (plain).
                core.add_interface(spec.name, mtu, list(spec.addresses), offload=dev.tso)
                for gw in spec.gateways:
                    core.add_route("0.0.0.0/0" if gw.version == 4 else "::/0", spec.name,
                                   gateway=str(gw))
        except BaseException:
            for dev in devices.values():
                dev.close()
            raise
        return cls(core, devices, tap=tap, gro=gro)

    @classmethod
    def virtual(cls, paths: int = 1, *, rng: random.Random | None = None, mtu: int = 1500,
                offload: bool = False, links: list[dict[str, Any]] | None = None,
                **link_kw: Any) -> tuple[Host, Host]:
        """Two hosts joined by in-memory links run in real time (no TUN, no
        root): path p joins `v<p>` of A (10.<p>.0.1, fd00:<p>::1) and B
        (10.<p>.0.2, fd00:<p>::2); `link_kw` (rate_bps, delay, loss, ...) or one
        dict per path in `links` shape the links (see stack.netsim.Link)."""
        from stack.api.virtual import VirtualLoop, virtual_cores

        net, a, b = virtual_cores(paths, rng=rng, mtu=mtu, offload=offload, links=links,
                                  **link_kw)
        loop = VirtualLoop(net)
        hosts = (cls(a, {}, loop=loop), cls(b, {}, loop=loop))
        loop.start()
        return hosts

    # ---------------------------------------------------------------- API
    def socket(self, family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0) -> Socket:
        self._check_running()
        return Socket(self, family, type, proto)

    def create_connection(self, address: tuple[str, int], timeout: Any = _DEFAULT,
                          source_address: tuple[str, int] | None = None, *,
                          all_errors: bool = False) -> Socket:
        """Like `socket.create_connection`: resolves names (both families) and
        races the addresses Happy-Eyeballs style (RFC 8305; RFC 6897 A5). The
        other addresses of the name are never taken for the same host (RFC 6897
        §6.4): only the winner's connection is kept."""
        from stack.api.happy_eyeballs import create_connection

        if timeout is _DEFAULT:
            return create_connection(self, address, source_address=source_address,
                                     all_errors=all_errors)
        return create_connection(self, address, timeout, source_address,
                                 all_errors=all_errors)

    def create_server(self, address: tuple[str, int], *, family: int = AF_INET,
                      backlog: int = 128) -> Socket:
        sock = self.socket(family)
        sock.bind(address)
        sock.listen(backlog)
        return sock

    @property
    def mptcp_capable(self) -> bool:
        """The core makes MPTCP connections (`connect(..., mptcp=True)`), so
        `socket(family, SOCK_STREAM, IPPROTO_MPTCP)` works."""
        try:
            params = inspect.signature(self.core.connect).parameters
        except (TypeError, ValueError):
            return False
        return "mptcp" in params

    @property
    def running(self) -> bool:
        return not self._closed and self.loop.running

    @property
    def offload(self) -> bool:
        """Every interface uses the kernel's offloads (TUN vnet header)."""
        if self.devices:
            return all(d.offload for d in self.devices.values())
        return all(i.offload for i in self.core.interfaces.values())

    def close(self, timeout: float = 10.0) -> None:
        """Close every socket, let connections deliver what they hold (up to
        `timeout` seconds), reset what is left, stop the loop, release the TUNs."""
        with self.lock:
            if self._closed:
                return
            for sock in list(self._owners.values()) + list(self._bound.values()):
                sock.close()
            end = time.monotonic() + timeout
            while self.loop.running and not self._quiescent():
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.5))
            now = self.clock()
            for conn in self.core.connections:
                if conn.state not in _DONE:
                    conn.abort(now)  # RST: the process is going away
                    self.core.wake(conn, now)
            if self.loop.running:
                self.loop.kick()
            self._closed = True
            self.cond.notify_all()
            if self._shared_loop:
                self.loop.hooks.remove(self._on_turn)
                self.loop.users -= 1
        if not self._shared_loop or self.loop.users == 0:
            self.loop.stop()
        for dev in self.devices.values():
            dev.close()

    def _quiescent(self) -> bool:
        """Nothing left to deliver: every connection is closed or waiting only
        for the peer (TIME-WAIT, FIN-WAIT-2 with all acked), and no timer is
        about to fire (a delayed ACK, e.g. for the peer's FIN, still goes out)."""
        soon = self.clock() + 0.25
        for conn in self.core.connections:
            state = conn.state
            if state not in _DONE and not (state is TcpState.FIN_WAIT_2 and conn.all_acked):
                return False
            deadline = conn.next_deadline()
            if deadline is not None and deadline < soon:
                return False
        return True

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<stack.Host {list(self.devices.values())} {'closed' if self._closed else ''}>"

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "core": dict(self.core.stats),
                "loop": {"turns": self.loop.turns, "errors": self.loop.errors},
                "devices": {n: vars(d.stats) if hasattr(d.stats, "__dict__") else
                            {k: getattr(d.stats, k) for k in d.stats.__slots__}
                            for n, d in self.devices.items()},
            }

    # ------------------------------------------------- used by the sockets
    def _check_running(self) -> None:
        if self.loop.failure is not None:
            raise OSError(errno.EIO, f"stack event loop failed: {self.loop.failure!r}")
        if self._closed:
            raise OSError(errno.EBADF, "host closed")

    def _adopt(self, sock: Socket, obj: Any) -> None:
        self._bound.pop(id(sock), None)
        self._owners[obj] = sock

    def _release(self, sock: Socket) -> None:
        self._bound.pop(id(sock), None)
        for obj in (sock._conn, sock._listener):
            if obj is not None and self._owners.get(obj) is sock:
                del self._owners[obj]

    def _bind(self, sock: Socket) -> None:
        self._bound[id(sock)] = sock

    def _port_in_use(self, ip: Any, port: int, me: Socket) -> bool:
        raw = None if ip.is_unspecified else ip.packed
        if self.core.table.port_listened(port, raw if raw is not None else bytes(ip.packed)):
            return True
        for other in self._bound.values():
            if other is me or other._bound is None or other._bound[1] != port:
                continue
            o_ip = ipaddress.ip_address(other._bound[0])
            if o_ip.version == ip.version and (o_ip == ip or o_ip.is_unspecified
                                               or ip.is_unspecified):
                reuse = (_std.SOL_SOCKET, _std.SO_REUSEADDR)
                if not (me.options.get(reuse) and other.options.get(reuse)):
                    return True  # SO_REUSEADDR on both lets them share
        return False

    def _defer_close(self, sock: Socket) -> None:
        """Close `sock` at the next turn (from __del__: no lock, no core call here)."""
        self._orphans.append(sock)
        if self.loop.running:
            self.loop.wake()

    def _on_turn(self) -> None:
        """After every loop turn and app call (lock held): close orphaned
        sockets, then update the readiness fds of what the core touched."""
        while self._orphans:
            sock = self._orphans.pop()
            if not sock._closed:
                sock._io_refs = 0
                sock._real_close()
        owners = self._owners
        for obj in self.core.poll_events():
            sock = owners.get(obj)
            if sock is not None:
                sock._refresh()


__all__ = ["Host", "IfaceSpec"]
