"""The sans-IO host: interfaces, routes, demultiplexing, listeners, timers.

Everything enters as a call and leaves as a return value (DESIGN.md §1):

    host.receive(packet, iface, now)     a packet arrived on `iface`
    host.on_timer(now)                   the deadline from next_deadline() passed
    host.transmit() -> [(iface, Frame)]  what to send, in order
    host.next_deadline() -> float|None
    host.connect(...) / host.listen(...) / host.wake(conn, now) / host.poll_events()

No clock, socket, thread or global randomness: `now` is passed in and the
random source is injected (a seeded `random.Random` in tests, a CSPRNG by
default), so the same inputs give byte-identical outputs.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from stack.tcp.config import TcpConfig
from stack.tcp.connection import TcpConnection
from stack.tcp.segment import ACK, FIN, RST, SYN, TcpSegment
from stack.tcp.seq import seq_diff
from stack.tcp.state import TcpState

from .demux import ConnTable, Key
from .frame import Frame
from .interfaces import Interface, IpInterface
from .isn import IsnGenerator
from .listener import Listener
from .packetize import ParseError, build_frame, gso_split, parse_segment, to_tcp_segment
from .routes import NoRoute, Route, RouteTable
from .timers import TimerHeap

__all__ = ["HostCore"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CLOSED = TcpState.CLOSED
_SYN_RECEIVED = TcpState.SYN_RECEIVED
_TIME_WAIT = TcpState.TIME_WAIT


@dataclass(slots=True)

class _Path:
    """Where a connection's packets go: egress interface, raw addresses, and
    the largest TCP payload of one wire packet on that interface."""

    iface: str
    src: bytes
    dst: bytes
    iface_mss: int
    offload: bool
    listener: Listener | None = None  # set while the connection is an embryo


def _martian(raw: bytes) -> bool:
    """Source addresses no packet may legitimately come from (RFC 1122
    §3.2.1.3, RFC 4291 §2.5.2/§2.7): unspecified, "this network", loopback,
    multicast, class E/broadcast."""
    if len(raw) == 4:
        b = raw[0]
        return b == 0 or b == 127 or b >= 224
    return raw[0] == 0xFF or raw == bytes(16) or raw == bytes(15) + b"\x01"


class HostCore:
    def __init__(self, rng: random.Random | None = None, *, name: str = "") -> None:
        self.name = name
        self.rng: random.Random = rng if rng is not None else random.SystemRandom()
        self.interfaces: dict[str, Interface] = {}
        self.routes = RouteTable()
        self.table = ConnTable(self.rng)
        self.timers = TimerHeap()
        # RFC 6528 ISN source; a callable (local, lport, remote, rport, now)
        # -> int that tests may replace (e.g. to start near 2**32).
        self.isn = IsnGenerator(self.rng)
        self.stats: Counter[str] = Counter()
        self.ttl = 64
        self._addrs: dict[bytes, Interface] = {}
        self._paths: dict[Any, _Path] = {}
        self._out: list[tuple[str, Frame]] = []
        self._events: dict[Any, None] = {}
        self._ip_id = 0

    def __repr__(self) -> str:
        return f"HostCore({self.name!r}, ifaces={list(self.interfaces)}, conns={len(self.table)})"

    # ------------------------------------------------------------------ setup

    def add_interface(self, name: str, mtu: int = 1500,
                      addresses: list[str | IpInterface] | tuple = (),
                      offload: bool = False) -> Interface:
        if name in self.interfaces:
            raise ValueError(f"interface {name} exists")
        iface = Interface(name, mtu, offload)
        self.interfaces[name] = iface
        for spec in addresses:
            self.add_address(name, spec)
        return iface

    def add_address(self, iface_name: str, spec: str | IpInterface) -> None:
        iface = self.interfaces[iface_name]
        a = iface.add_address(spec)
        if a.raw in self._addrs:
            raise ValueError(f"address {a.ip} already on {self._addrs[a.raw].name}")
        if a.ip.version == 6 and iface.mtu < 1280:
            raise ValueError("IPv6 needs an MTU of at least 1280 (RFC 8200 §5)")
        self._addrs[a.raw] = iface
        self.routes.add(a.network, iface_name, connected=True)

    def add_route(self, prefix: str, iface: str, gateway: str | None = None) -> Route:
        """A route (`"0.0.0.0/0"` or `"::/0"` for a default gateway)."""
        if iface not in self.interfaces:
            raise ValueError(f"no interface {iface}")
        return self.routes.add(prefix, iface, gateway)

    def owner(self, addr: IpAddress | bytes) -> Interface | None:
        raw = addr if isinstance(addr, bytes) else addr.packed
        return self._addrs.get(raw)

    # ------------------------------------------------------------- addressing

    def route(self, dst: IpAddress, src: IpAddress | None = None) -> Route:
        """The route a packet to `dst` from `src` takes (routes.py, egress rule)."""
        if src is not None:
            iface = self.owner(src)
            if iface is None:
                raise OSError(errno.EADDRNOTAVAIL, f"{src} is not an address of this host")
            return self.routes.egress(iface, dst)
        r = self.routes.lookup(dst)
        if r is None:
            raise NoRoute(f"no route to {dst}")
        return r

    def select_source(self, dst: IpAddress) -> IpAddress:
        """Source address for a connection to `dst` (a small RFC 6724): the
        longest-prefix route picks the interface; on it, an address of the
        same family whose prefix holds `dst`, else one of matching scope
        (link-local only for link-local destinations), else the first."""
        iface = self.interfaces[self.route(dst).iface]
        cands = [a for a in iface.addresses if a.ip.version == dst.version]
        if not cands:
            raise OSError(errno.EADDRNOTAVAIL, f"no IPv{dst.version} address on {iface.name}")
        for a in cands:
            if dst in a.network:
                return a.ip
        dst_ll = dst.is_link_local
        for a in cands:
            if a.ip.is_link_local == dst_ll:
                return a.ip
        return cands[0].ip

    def config_for(self, iface: Interface, version: int, config: TcpConfig | None) -> TcpConfig:
        """The connection's TcpConfig: MSS from the egress interface MTU
        (clamped by a smaller `config.mss`), and `max_segment` up to ~64 KB
        when the interface takes TSO."""
        mss = iface.mss_for(version)
        if config is None:
            config = TcpConfig(mss=mss)
        else:
            config = dataclasses.replace(config, mss=min(config.mss, mss))
        if iface.offload:
            limit = iface.max_segment_for(version)
            if config.max_segment:
                limit = max(config.mss, min(limit, config.max_segment))
            config.max_segment = limit
        else:
            config.max_segment = None
        return config

    # --------------------------------------------------------------- sans-IO

    def receive(self, packet: bytes | bytearray | memoryview, iface: str, now: float, *,
                checksum_verified: bool = False) -> None:
        """One IP packet (or a GSO super-segment) arrived on `iface`. Bad
        input is counted in `stats`, never raised. `checksum_verified=True`
        skips the TCP checksum (the device verified it, or it is a
        super-segment marked NEEDS_CSUM that has none)."""
        try:
            p = parse_segment(packet, not checksum_verified)
        except ParseError as e:
            self.stats["malformed"] += 1
            self.stats[f"malformed_{getattr(e, 'kind', 'other')}"] += 1
            return
        if p.truncated:
            self.stats["malformed"] += 1
            self.stats["malformed_truncated"] += 1
            return
        if not p.ip_checksum_ok:
            self.stats["bad_ip_checksum"] += 1
            return
        if p.tcp_checksum_ok is False:
            self.stats["bad_checksum"] += 1
            return
        dst = p.dst
        if dst not in self._addrs:
            self.stats["not_for_us"] += 1
            return
        src = p.src
        if _martian(src) or src in self._addrs:
            self.stats["bad_address"] += 1
            return
        if p.sport == 0 or p.dport == 0:
            self.stats["bad_port"] += 1
            return
        if p.options_error is not None:
            # RFC 9293 §3.1 / Linux: stop at the bad option, keep the segment.
            self.stats["bad_options"] += 1
        self.stats["received"] += 1
        seg = to_tcp_segment(p, packet)
        conn = self.table.conns.get((dst, p.dport, src, p.sport))
        if conn is not None and conn.state is _TIME_WAIT and _reopens_time_wait(conn, seg):
            # RFC 6191 (RFC 9293 §3.10.7.4 note, Linux TCP_TW_SYN): a new SYN
            # that is provably newer than the old incarnation ends TIME-WAIT and
            # is handled as a new connection attempt.
            self.stats["time_wait_reopened"] += 1
            self._forget(conn, self._paths[conn])
            conn = None
        if conn is not None:
            conn.on_segment(seg, now)
            self._service(conn, now)
            return
        self._no_connection(seg, dst, src, now)

    def on_timer(self, now: float) -> None:
        """Run every connection whose deadline is at or before `now`."""
        for conn in self.timers.pop_due(now):
            if conn not in self._paths:
                continue
            deadline = conn.next_deadline()
            if deadline is None:
                continue
            if deadline > now:  # moved later since it was scheduled
                self.timers.schedule(conn, deadline)
                continue
            conn.on_timer(now)
            self._service(conn, now)

    def next_deadline(self) -> float | None:
        """When on_timer() should run next (may be early, never late)."""
        return self.timers.peek()

    def transmit(self) -> list[tuple[str, Frame]]:
        """Frames to send, oldest first, as (interface name, Frame)."""
        out, self._out = self._out, []
        return out

    def wake(self, conn: Any, now: float) -> None:
        """Tell the host the application acted on `conn` (send, recv,
        shutdown_write, close, abort, option change): it polls the connection
        for segments and re-reads its deadline."""
        if conn in self._paths:
            self._service(conn, now)

    def poll_events(self) -> list[Any]:
        """Connections and listeners touched since the last call (a packet,
        a timer, or wake()), each once, in order. A facade re-checks their
        state (readable, send_space, state, error; a listener's pending)."""
        if not self._events:
            return []
        ev = list(self._events)
        self._events.clear()
        return ev

    # ------------------------------------------------------------------- apps

    def connect(self, remote_addr: IpAddress | str, remote_port: int, now: float, *,
                local_addr: IpAddress | str | None = None, local_port: int = 0,
                config: TcpConfig | None = None) -> Any:
        """Active open (RFC 9293 §3.10.1): returns the TcpConnection in SYN-SENT
        (its SYN is in the next transmit())."""
        raddr = ipaddress.ip_address(remote_addr)
        if not 0 < remote_port < 65536:
            raise OSError(errno.EINVAL, "bad remote port")
        if raddr.is_multicast or raddr.is_unspecified or _martian(raddr.packed):
            raise OSError(errno.EINVAL, f"cannot connect to {raddr}")
        if local_addr is None:
            laddr = self.select_source(raddr)
        else:
            laddr = ipaddress.ip_address(local_addr)
            if laddr.version != raddr.version:
                raise OSError(errno.EAFNOSUPPORT, "address families differ")
        route = self.route(raddr, laddr)
        src, dst = laddr.packed, raddr.packed
        if local_port:
            lport = local_port
            if (src, lport, dst, remote_port) in self.table.conns:
                raise OSError(errno.EADDRINUSE, "4-tuple in use")
        else:
            lport = self.table.ephemeral_port(src, dst, remote_port)
        iface = self.interfaces[route.iface]
        cfg = self.config_for(iface, raddr.version, config)
        iss = self.isn(src, lport, dst, remote_port, now)
        conn = TcpConnection.connect(cfg, (laddr, lport), (raddr, remote_port), iss, now)
        self._register((src, lport, dst, remote_port), conn, iface, raddr.version)
        self._service(conn, now)
        return conn

    def listen(self, addr: IpAddress | str | None, port: int, backlog: int = 128,
               config: TcpConfig | None = None) -> Listener:
        """Passive open (RFC 9293 §3.10.1). `addr` None or "" listens on every
        address; "0.0.0.0" / "::" on every address of that family. Port 0
        picks an ephemeral port (`listener.port`)."""
        raw: bytes | None
        if addr is None or addr == "":
            raw = None
        else:
            ip = ipaddress.ip_address(addr)
            raw = ip.packed
            if not ip.is_unspecified and raw not in self._addrs:
                raise OSError(errno.EADDRNOTAVAIL, f"{ip} is not an address of this host")
        if not 0 <= port < 65536:
            raise OSError(errno.EINVAL, "bad port")
        if port == 0:
            port = self.table.ephemeral_port(raw)
        listener = Listener(raw, port, backlog, config)
        self.table.add_listener(listener)
        return listener

    def close_listener(self, listener: Listener, now: float) -> None:
        """Stop listening; connections not yet accepted are aborted (RST), as
        Linux does when a listening socket is closed."""
        self.table.remove_listener(listener)
        listener.closed = True
        pending = list(listener.syn_queue) + list(listener.accept_queue)
        listener.syn_queue.clear()
        listener.accept_queue.clear()
        for conn in pending:
            conn.abort(now)
            self.wake(conn, now)

    @property
    def connections(self) -> list[Any]:
        return list(self.table.conns.values())

    def path_of(self, conn: Any) -> _Path | None:
        return self._paths.get(conn)

    # -------------------------------------------------------------- internals

    def _register(self, key: Key, conn: Any, iface: Interface, version: int,
                  listener: Listener | None = None) -> None:
        self.table.add(key, conn)
        self._paths[conn] = _Path(iface.name, key[0], key[2], iface.mss_for(version),
                                  iface.offload, listener)

    def _service(self, conn: Any, now: float) -> None:
        """After anything happened to `conn`: send what it has, re-arm its
        timer, move it between listener queues, drop it once CLOSED."""
        path = self._paths.get(conn)
        if path is None:
            return
        segs = conn.poll_transmit(now)
        for seg in segs:
            self._emit(path, self._frame(seg, path, conn))
        self._events[conn] = None
        state = conn.state
        if state is _CLOSED:
            self._forget(conn, path)
            return
        self.timers.schedule(conn, conn.next_deadline())
        lst = path.listener
        if lst is not None and state is not _SYN_RECEIVED:
            path.listener = None
            if not lst.closed and lst.established(conn):
                self._events[lst] = None

    def _forget(self, conn: Any, path: _Path) -> None:
        """RFC 9293 §3.3.2: a CLOSED connection is deleted (after TIME-WAIT)."""
        self.table.remove(conn)
        self.timers.discard(conn)
        del self._paths[conn]
        if path.listener is not None:
            path.listener.forget(conn)
            self.stats["embryo_closed"] += 1

    def _frame(self, seg: TcpSegment, path: _Path, conn: Any | None = None) -> Frame:
        """The Frame of one emitted segment. A super-segment (the engine's
        `seg.gso` > 0, or a payload longer than one wire packet) is cut at
        min(seg.gso, path MSS - this header's options): the path MSS is
        min(our MTU's MSS, the connection's send_mss, i.e. the peer's MSS
        option; RFC 6691: options not counted)."""
        n = len(seg.payload)
        wire = 0
        if n > 536:
            wire = path.iface_mss
            peer = getattr(conn, "send_mss", None)
            if peer:
                wire = min(wire, peer)
        frame = build_frame(seg, path.src, path.dst, gso_size=getattr(seg, "gso", 0),
                            wire_mss=wire, ttl=self.ttl, ip_id=self._ip_id)
        pieces = -(-n // frame.gso_size) if frame.gso_size else 1
        self._ip_id = (self._ip_id + pieces) & 0xFFFF
        self.stats["sent"] += 1
        return frame

    def _emit(self, path: _Path, frame: Frame) -> None:
        """Queue a frame; a super-segment for a device without offload is
        cut here (software GSO)."""
        if frame.gso_size and not path.offload:
            self.stats["sw_gso"] += 1
            for pkt in gso_split(frame):
                self._out.append((path.iface, Frame(pkt, 0, False, frame.ip_header_len,
                                                    frame.tcp_header_len)))
        else:
            self._out.append((path.iface, frame))

    def _no_connection(self, seg: TcpSegment, dst: bytes, src: bytes, now: float) -> None:
        flags = seg.flags
        if flags & RST:
            # RFC 9293 §3.10.7.1/§3.10.7.2: an incoming RST is discarded.
            self.stats["rst_no_conn"] += 1
            return
        listener = self.table.find_listener(dst, seg.dport)
        if listener is None:
            # §3.10.7.1 CLOSED: answer with a reset.
            self.stats["no_listener_rst"] += 1
            self._reset(seg, dst, src)
            return
        # §3.10.7.2 LISTEN: first check for an ACK, then for a SYN.
        if flags & ACK:
            self.stats["listen_ack_rst"] += 1
            self._reset(seg, dst, src)
            return
        if not flags & SYN or flags & FIN:
            # A SYN+FIN is scan junk: no state, no answer (as Linux, which
            # discards it in tcp_rcv_state_process before creating a request).
            self.stats["listen_junk"] += 1
            return
        if listener.full:
            listener.dropped_syns += 1
            self.stats["listen_overflow"] += 1
            return
        laddr = ipaddress.ip_address(dst)
        raddr = ipaddress.ip_address(src)
        route = self.routes.egress(self._addrs[dst], raddr)
        iface = self.interfaces[route.iface]
        cfg = self.config_for(iface, laddr.version, listener.config)
        iss = self.isn(dst, seg.dport, src, seg.sport, now)
        conn = TcpConnection.accept_syn(cfg, (laddr, seg.dport), (raddr, seg.sport), seg,
                                            iss, now)
        self._register((dst, seg.dport, src, seg.sport), conn, iface, laddr.version, listener)
        listener.add_embryo(conn)
        self.stats["passive_open"] += 1
        self._service(conn, now)

    def _reset(self, seg: TcpSegment, dst: bytes, src: bytes) -> None:
        """RFC 9293 §3.10.7.1: <SEQ=SEG.ACK><CTL=RST> if the segment has ACK,
        else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. No options."""
        if seg.flags & ACK:
            rst = TcpSegment(seg.dport, seg.sport, seg.ack, 0, RST, 0)
        else:
            n = len(seg.payload) + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)
            rst = TcpSegment(seg.dport, seg.sport, 0, (seg.seq + n) & 0xFFFFFFFF, RST | ACK, 0)
        route = self.routes.egress(self._addrs[dst], ipaddress.ip_address(src))
        frame = build_frame(rst, dst, src, ttl=self.ttl, ip_id=self._ip_id)
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        self.stats["sent"] += 1
        self._out.append((route.iface, frame))


def _reopens_time_wait(conn: Any, seg: TcpSegment) -> bool:
    """RFC 6191 §2: a bare SYN may reopen a 4-tuple in TIME-WAIT when its
    timestamp is newer than TS.Recent (both sides use timestamps), or, without
    timestamps, when its sequence number is above the old RCV.NXT."""
    if seg.flags & (ACK | RST | FIN) or not seg.flags & SYN:
        return False
    if getattr(conn, "ts_enabled", False) and seg.ts is not None:
        return seq_diff(seg.ts[0], conn.ts_recent) > 0
    if seg.ts is not None or getattr(conn, "ts_enabled", False):
        return False
    return seq_diff(seg.seq, conn.rcv_nxt) > 0
