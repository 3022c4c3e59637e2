"""MPTCP in the sans-IO host: token demultiplexing, MP_CAPABLE listeners,
MP_JOIN subflows in both roles, source addresses for new subflows, and
MPTCP-level events (RFC 8684 §3.1, §3.2; docs/MPTCP-DESIGN.md "The host").

``MptcpHostCore`` is the TCP host of ``core.py`` that also speaks MPTCP;
``stack.host.HostCore`` is this class (MPTCP off unless asked for: the
``mptcp`` flag of the constructor, ``connect`` or ``listen``). It only
overrides the TCP host's extension points (``connect``, ``listen``,
``wake``, the passive-open path ``_no_connection``, ``_register``,
``_service``, ``on_timer``/``next_deadline``); without MPTCP every call
falls through to the TCP host unchanged:

* ``connect(..., mptcp=True)`` returns an ``MptcpConnection`` (default:
  the host's ``mptcp`` flag); ``listen(..., mptcp=True)`` makes a listener
  whose MP_CAPABLE SYNs become MPTCP connections, accepted as
  ``MptcpConnection`` objects (plain TCP SYNs are accepted as TCP, wrapped
  too, so one listener serves both, as a Linux MPTCP listener does);
* an MP_JOIN SYN is demultiplexed by token (``TokenRegistry``): unknown
  token → RST with MP_TCPRST reason 1 and no state (flood-safe); a token
  whose connection is not yet fully established → held briefly
  (``JoinHold``), released when its third ACK arrives, refused on expiry;
  refused by the path manager → RST with MP_TCPRST reason 3;
* after any event on a subflow the whole MPTCP connection is processed and
  all its subflows polled; ``poll_events`` reports the ``MptcpConnection``
  (not its subflows).
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from stack.host.packetize import build_frame
from stack.mptcp.connection import MptcpConfig, MptcpConnection
from stack.mptcp.fallback import RST_EMPTCP, RST_EPROHIBIT
from stack.mptcp.handshake import JoinHold, JoinResponder, MpcServer
from stack.mptcp.keys import TokenExhausted, TokenRegistry
from stack.mptcp.pm import OpenSubflow
from stack.mptcp.subflow import Subflow
from stack.tcp.config import TcpConfig
from stack.tcp.connection import TcpConnection
from stack.tcp.segment import ACK, FIN, RST, SYN, TcpSegment
from stack.wire.mptcp import MpTcpRst

from .core import HostCore

__all__ = ["MptcpHostCore"]


class MptcpHostCore(HostCore):
    """A host whose TCP connections may be MPTCP connections."""

    def __init__(self, rng: random.Random | None = None, *, name: str = "",
                 mptcp: bool = False, mptcp_config: MptcpConfig | None = None,
                 token_capacity: int = 65536) -> None:
        super().__init__(rng, name=name)
        self.mptcp_default = mptcp
        self.mptcp_config = mptcp_config or MptcpConfig()
        self.tokens = TokenRegistry(token_capacity)
        self.join_hold = JoinHold()
        self.mptcp_conns: dict[MptcpConnection, None] = {}
        self._next_upper: tuple[MptcpConnection, Subflow] | None = None
        self._in_mp = False

    # ------------------------------------------------------------------ apps
    def connect(self, remote_addr: Any, remote_port: int, now: float, *,
                local_addr: Any = None, local_port: int = 0,
                config: TcpConfig | None = None, mptcp: bool | None = None,
                mptcp_config: MptcpConfig | None = None) -> Any:
        """Active open; with MPTCP (default: the host's flag) an
        ``MptcpConnection`` whose first subflow sends MP_CAPABLE."""
        if not (self.mptcp_default if mptcp is None else mptcp):
            return super().connect(remote_addr, remote_port, now, local_addr=local_addr,
                                   local_port=local_port, config=config)
        try:
            km = self.tokens.allocate(self.rng)
        except TokenExhausted:
            self.stats["mptcp_token_exhausted"] += 1
            return super().connect(remote_addr, remote_port, now, local_addr=local_addr,
                                   local_port=local_port, config=config)
        mp = MptcpConnection(self, km, self.rng, server=False,
                             config=mptcp_config or self.mptcp_config, now=now)
        self.tokens.bind(km.token, mp)
        sf = mp.initial_client_subflow()
        self._next_upper = (mp, sf)
        try:
            super().connect(remote_addr, remote_port, now, local_addr=local_addr,
                            local_port=local_port, config=mp.subflow_config(config))
        except OSError:
            self.tokens.release(km.token)
            raise
        finally:
            self._next_upper = None
        self.mptcp_conns[mp] = None
        self._service_mp(mp, now)
        return mp

    def listen(self, addr: Any, port: int, backlog: int = 128,
               config: TcpConfig | None = None, *, mptcp: bool | None = None) -> Any:
        listener = super().listen(addr, port, backlog, config)
        listener.mptcp = self.mptcp_default if mptcp is None else mptcp  # type: ignore[attr-defined]
        return listener

    def wake(self, conn: Any, now: float) -> None:
        if isinstance(conn, MptcpConnection):
            self._service_mp(conn, now)
        else:
            super().wake(conn, now)

    def local_addresses(self, first_for: Any = None) -> list[Any]:
        """Every usable address of the host (path-manager input). With
        ``first_for`` (a connection's initial local address): addresses of
        its family on other interfaces first -- the new paths -- then the
        rest, so announcements and joins try real new paths first."""
        out = []
        for iface in self.interfaces.values():
            for a in iface.addresses:
                if not a.ip.is_link_local and not a.ip.is_loopback:
                    out.append((iface.name, a.ip))
        if first_for is not None:
            home = self.owner(first_for)
            home_name = home.name if home is not None else None
            out.sort(key=lambda t: (t[1].version != first_for.version, t[0] == home_name))
        return [ip for _, ip in out]

    def open_subflow(self, mp: MptcpConnection, act: OpenSubflow, now: float, *,
                     local_ports: tuple[int, ...] = (0,)) -> Subflow | None:
        """Open an MP_JOIN subflow for a path-manager action (source: the
        action's local endpoint, else what routing picks). ``local_ports``:
        the local ports to try in turn (0 = an ephemeral one; RFC 6897
        §5.3.3: a port the application gave, or the initial subflow's)."""
        raddr = act.remote.address
        try:
            laddr = act.local.address if act.local is not None else self.select_source(raddr)
        except OSError:
            return None
        if laddr.version != raddr.version or mp.pm is None:
            return None
        sf = mp.join_subflow(act, mp.pm.local_id(laddr))
        base = mp.subflows[0].conn.config if mp.subflows else None
        for port in local_ports:
            self._next_upper = (mp, sf)
            try:
                super().connect(raddr, act.remote_port, now, local_addr=laddr,
                                local_port=port, config=mp.subflow_config(base))
            except OSError:
                continue
            finally:
                self._next_upper = None
            mp.stats["joins_opened"] += 1
            return sf
        mp.subflows.remove(sf)
        return None

    def bind_token(self, mp: MptcpConnection) -> None:
        """The server side is fully established: joins may name it now."""
        if mp.km.token in self.tokens:
            self.tokens.bind(mp.km.token, mp)
        for held in self.join_hold.release(mp.km.token):
            seg, dst, src, _ = held  # type: ignore[misc]
            self.stats["mptcp_join_released"] += 1
            self._join_syn(seg, JoinResponder.syn_join(seg.mptcp), dst, src, mp.now)

    # ---------------------------------------------------------- internals
    def _register(self, key: Any, conn: Any, iface: Any, version: int,
                  listener: Any = None) -> None:
        super()._register(key, conn, iface, version, listener)
        if self._next_upper is not None:
            mp, sf = self._next_upper
            self._next_upper = None
            mp.attach(sf, conn)

    def _service(self, conn: Any, now: float) -> None:
        sf = getattr(conn, "upper", None)
        if self._in_mp or not isinstance(sf, Subflow):
            super()._service(conn, now)
            return
        self._service_mp(sf.mp, now)

    def _service_mp(self, mp: MptcpConnection, now: float) -> None:
        """Process the MPTCP connection, then poll every subflow."""
        if self._in_mp:
            return
        self._in_mp = True
        try:
            for _ in range(4):
                mp.process(now)
                for sf in list(mp.subflows):
                    c = sf.conn
                    if c is None or c not in self._paths:
                        continue
                    path = self._paths[c]
                    lst = path.listener
                    super()._service(c, now)
                    self._events.pop(c, None)
                    if lst is not None and path.listener is None:
                        self._accepted(lst, c, mp)
                if not mp.after_poll(now):
                    break
            for sf in mp.subflows:
                c = sf.conn
                if c is not None and c in self._paths:
                    self.timers.schedule(c, c.next_deadline())
            if not any(sf.conn in self._paths for sf in mp.subflows if sf.conn is not None):
                mp.process(now)  # notice the last closes
                self._release(mp)
            self._events[mp] = None
        finally:
            self._in_mp = False

    def _accepted(self, lst: Any, conn: Any, mp: MptcpConnection) -> None:
        """The initial subflow left the SYN queue: the application accepts
        the MPTCP connection, not the subflow."""
        q = lst.accept_queue
        for i, c in enumerate(q):
            if c is conn:
                q[i] = mp
                self._events[lst] = None
                return

    def _release(self, mp: MptcpConnection) -> None:
        if mp in self.mptcp_conns:
            del self.mptcp_conns[mp]
            owner = self.tokens.lookup(mp.km.token)
            if owner is mp or owner is None:
                self.tokens.release(mp.km.token)
            self.join_hold.discard(mp.km.token)

    def on_timer(self, now: float) -> None:
        for held in self.join_hold.expire(now):
            seg, dst, src, _ = held  # type: ignore[misc]
            self.stats["mptcp_join_hold_expired"] += 1
            self._reset_mptcp(seg, dst, src, RST_EMPTCP)
        super().on_timer(now)

    def next_deadline(self) -> float | None:
        t = super().next_deadline()
        h = self.join_hold.next_deadline()
        if h is not None and (t is None or h < t):
            return h
        return t

    # ------------------------------------------------------- passive opens
    def _no_connection(self, seg: TcpSegment, dst: bytes, src: bytes, now: float) -> None:
        flags = seg.flags
        if not (flags & SYN) or flags & (ACK | RST | FIN) or not seg.mptcp:
            super()._no_connection(seg, dst, src, now)
            return
        join = JoinResponder.syn_join(seg.mptcp)
        if join is not None and (self.mptcp_default or self.mptcp_conns):
            self._join_syn(seg, join, dst, src, now)
            return
        listener = self.table.find_listener(dst, seg.dport)
        if (listener is None or listener.full or not getattr(listener, "mptcp", False)
                or MpcServer.syn_acceptable(seg.mptcp) is None):
            super()._no_connection(seg, dst, src, now)
            return
        self._mpc_syn(seg, listener, dst, src, now)

    def _mpc_syn(self, seg: TcpSegment, listener: Any, dst: bytes, src: bytes,
                 now: float) -> None:
        """A SYN to an MPTCP listener: an MPTCP connection when it carries a
        usable MP_CAPABLE, else (bad flags/version, no token left) plain TCP
        as the kernel answers it (reference §1.1 [probe])."""
        cfg = self.mptcp_config
        hs = None
        if MpcServer.syn_acceptable(seg.mptcp) is not None:
            try:
                km = self.tokens.allocate(self.rng)
            except TokenExhausted:
                self.stats["mptcp_token_exhausted"] += 1
            else:
                hs = MpcServer.from_syn(km, seg.mptcp, want_csum=cfg.checksum,
                                        deny_join_id0=cfg.deny_join_id0)
        if hs is None:
            self.stats["mptcp_syn_plain"] += 1
            super()._no_connection(seg, dst, src, now)
            return
        mp = MptcpConnection(self, hs.local, self.rng, server=True, config=cfg, now=now)
        sf = mp.initial_server_subflow(hs)
        self._next_upper = (mp, sf)
        saved = listener.config
        listener.config = mp.subflow_config(saved)
        try:
            before = self.stats["passive_open"]
            super()._no_connection(seg, dst, src, now)
        finally:
            listener.config = saved
            self._next_upper = None
        if self.stats["passive_open"] == before or sf.conn is None:
            self.tokens.release(hs.local.token)
            return
        self.mptcp_conns[mp] = None

    def _join_syn(self, seg: TcpSegment, join: Any, dst: bytes, src: bytes,
                  now: float) -> None:
        """An MP_JOIN SYN (§3.2): token → connection, or RST/hold; no state
        for a SYN naming no connection."""
        token = join.token
        mp = self.tokens.lookup(token)
        if mp is None:
            if token in self.tokens and self.join_hold.hold(token, (seg, dst, src, now), now):
                self.stats["mptcp_join_held"] += 1
                return
            self.stats["mptcp_join_no_token"] += 1
            self._reset_mptcp(seg, dst, src, RST_EMPTCP)
            return
        if not isinstance(mp, MptcpConnection) or mp.subflows[0].conn is None or \
                seg.dport != mp.subflows[0].conn.local[1]:
            self.stats["mptcp_join_bad_port"] += 1
            self._reset_mptcp(seg, dst, src, RST_EMPTCP)
            return
        laddr = ipaddress.ip_address(dst)
        raddr = ipaddress.ip_address(src)
        sf = mp.accept_join(join, laddr)
        if sf is None:
            self.stats["mptcp_join_rejected"] += 1
            self._reset_mptcp(seg, dst, src, RST_EPROHIBIT)
            return
        route = self.routes.egress(self._addrs[dst], raddr)
        iface = self.interfaces[route.iface]
        base = mp.subflows[0].conn.config
        cfg = self.config_for(iface, laddr.version, mp.subflow_config(base))
        iss = self.isn(dst, seg.dport, src, seg.sport, now)
        conn = TcpConnection.accept_syn(cfg, (laddr, seg.dport), (raddr, seg.sport), seg, iss, now)
        self._next_upper = (mp, sf)
        try:
            self._register((dst, seg.dport, src, seg.sport), conn, iface, laddr.version)
        finally:
            self._next_upper = None
        self.stats["mptcp_join_accepted"] += 1
        if self._in_mp:
            super()._service(conn, now)
        else:
            self._service_mp(mp, now)

    def _reset_mptcp(self, seg: TcpSegment, dst: bytes, src: bytes, reason: int) -> None:
        """RST/ACK answering a SYN, with MP_TCPRST(reason) (§3.6; the
        kernel's answer to an unknown token: ``1e048001``)."""
        n = len(seg.payload) + (1 if seg.flags & SYN else 0)
        rst = TcpSegment(seg.dport, seg.sport, 0, (seg.seq + n) & 0xFFFFFFFF, RST | ACK, 0,
                         mptcp=(MpTcpRst(0, reason).emit(),))
        route = self.routes.egress(self._addrs[dst], ipaddress.ip_address(src))
        frame = build_frame(rst, dst, src, ttl=self.ttl, ip_id=self._ip_id)
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        self.stats["sent"] += 1
        self.stats["mptcp_rst_sent"] += 1
        self._out.append((route.iface, frame))
