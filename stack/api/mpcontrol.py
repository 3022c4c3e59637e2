"""Per-connection multipath control behind the RFC 6897 socket API (sans-IO).

`MultipathControl(core, conn, settings)` sits beside one `MptcpConnection`
and carries out what the application asked for through `stack.api.multipath`:
which local addresses the path manager may use (TCP_MULTIPATH_ADD/REMOVE,
§5.3.3), when extra subflows open (A10: at once / after N bytes / never),
which scheduler runs (A11, switchable mid-connection; a true `redundant`
sender, A12; `backup` hot standby; `lowrtt` for the `interactive` profile),
MP_PRIO (A11), fate-sharing of the initial subflow (§4.2.2, A13) and the
subflow/address event stream (A14). It needs no thread and no clock: the
caller passes `now` and calls `poll(now)` after every event of the
connection (the facade does it in `Socket._refresh`; virtual-time tests in
their `on_step`), which returns the new `MultipathEvent`s.

It uses the connection's control calls (`set_scheduler`, `set_backup`,
`close_subflow`, `queue_actions`) and the host's `open_subflow(...,
local_ports=)`. One local fallback remains until the path manager takes an
address filter: the control puts a `_HostView` in front of the connection's
host (`mp.host`), so that address restrictions (bind, TCP_MULTIPATH_ADD /
REMOVE) apply to the path manager's joins and source choices.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

from stack.mptcp.pm import Endpoint, OpenSubflow, SendAddAddr, SendRemoveAddr
from stack.mptcp.scheduler import make_scheduler
from stack.tcp.state import TcpState

__all__ = ["MultipathSettings", "MultipathControl", "MultipathEvent", "SCHEDULER_NAMES",
           "PROFILES", "apply_hints", "make_sched"]

IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


# ------------------------------------------------------------------ schedulers
SCHEDULER_NAMES = ("minrtt", "roundrobin", "redundant", "backup", "lowrtt")


def make_sched(name: str) -> Any:
    """The scheduler object for an API name (EINVAL for an unknown one)."""
    if name not in SCHEDULER_NAMES:
        raise OSError(errno.EINVAL, f"unknown scheduler {name!r} (have {SCHEDULER_NAMES})")
    return make_scheduler(name)


# ------------------------------------------------------------------- settings
PROFILES: dict[str, dict[str, Any]] = {
    # A8: the scheduler and path-manager behaviour of each profile.
    "bulk": {"scheduler": "minrtt", "pm_mode": "immediate", "max_subflows": 8},
    "interactive": {"scheduler": "lowrtt", "pm_mode": "immediate", "max_subflows": 2},
    "reliable": {"scheduler": "redundant", "pm_mode": "immediate", "max_subflows": 4},
}
SMALL_TRANSFER = 100_000  # bytes (A9): below this one subflow is enough
LOW_RATE = 1_000_000  # bit/s (A9): at most this, latency matters more than bandwidth
LONG_EXCHANGE = 60.0  # s (A9): a longer exchange with no size or rate is interactive


@dataclass
class MultipathSettings:
    """What the application asked for on one socket (None: the host policy)."""

    enable: bool | None = None  # TCP_MULTIPATH_ENABLE
    allowed: dict[IpAddr, int] | None = None  # TCP_MULTIPATH_ADD (address -> port, 0 any)
    removed: set[IpAddr] = field(default_factory=set)  # TCP_MULTIPATH_REMOVE
    scheduler: str | None = None
    pm_mode: str | None = None  # "immediate" | "after" | "never"
    pm_after_bytes: int = 0
    max_subflows: int | None = None  # extra subflows the PM may open
    fate_sharing: bool | None = None
    profile: str | None = None
    hints: dict[str, float] = field(default_factory=dict)
    sndbuf: int | None = None  # SO_SNDBUF / SO_RCVBUF as set by the application
    rcvbuf: int | None = None
    keepalive: bool | None = None

    def copy(self) -> MultipathSettings:
        return replace(self, allowed=None if self.allowed is None else dict(self.allowed),
                       removed=set(self.removed), hints=dict(self.hints))

    def local_allowed(self, addr: Any) -> bool:
        a = ipaddress.ip_address(addr)
        if a in self.removed:
            return False
        return self.allowed is None or a in self.allowed


def apply_hints(st: MultipathSettings, *, size: int | None = None,
                duration: float | None = None, rate: float | None = None) -> None:
    """A9: a small transfer (< SMALL_TRANSFER bytes) opens no extra subflow;
    a low rate (<= LOW_RATE bit/s) or a long, rate-less exchange is
    interactive; a large transfer or high rate uses every path."""
    for k, v in (("size", size), ("duration", duration), ("rate", rate)):
        if v is not None:
            if not isinstance(v, int | float) or v < 0:
                raise OSError(errno.EINVAL, f"hint {k} must be a non-negative number")
            st.hints[k] = v
    if size is not None and size < SMALL_TRANSFER:
        st.pm_mode = "never"
    elif (rate is not None and rate <= LOW_RATE) or (
            rate is None and size is None and duration is not None and duration >= LONG_EXCHANGE):
        st.profile = "interactive"
        st.scheduler, st.pm_mode = "lowrtt", "immediate"
    elif size is not None or (rate is not None and rate > LOW_RATE):
        st.pm_mode = "immediate"
        st.scheduler = st.scheduler or "minrtt"


# --------------------------------------------------------------------- events
@dataclass(frozen=True)
class MultipathEvent:
    """One A14 event. `kind`: "subflow_established", "subflow_closed" (with
    `reason`), "priority_changed" (`backup`, `by_peer`), "address_announced"
    / "address_removed" (the peer's `addr_id`, `address`, `port`), "fallback"
    (`reason`)."""

    kind: str
    time: float
    subflow: int | None = None
    local: tuple[str, int] | None = None
    remote: tuple[str, int] | None = None
    reason: str | None = None
    backup: bool | None = None
    by_peer: bool | None = None
    addr_id: int | None = None
    address: str | None = None
    port: int | None = None


def _ep(e: Any) -> tuple[str, int]:
    return (str(e[0]), int(e[1]))


# ---------------------------------------------------------------- host view
class _HostView:
    """The connection's host as the path manager sees it: only the addresses
    the application allows (TCP_MULTIPATH_ADD / REMOVE, bind)."""

    def __init__(self, core: Any, ctl: MultipathControl) -> None:
        self._core = core
        self._ctl = ctl

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)

    def local_addresses(self, first_for: Any = None) -> list[Any]:
        return [a for a in self._core.local_addresses(first_for)
                if self._ctl.settings.local_allowed(a)]

    def select_source(self, dst: Any) -> Any:
        st = self._ctl.settings
        src = self._core.select_source(dst)
        if st.local_allowed(src):
            return src
        for a in self._core.local_addresses():
            if a.version == ipaddress.ip_address(dst).version and st.local_allowed(a):
                return a
        raise OSError(errno.EADDRNOTAVAIL, "no allowed local address of that family")

    def open_subflow(self, mp: Any, act: OpenSubflow, now: float) -> Any:
        return self._ctl.open_join(act, now)

    def bind_token(self, mp: Any) -> None:
        self._core.bind_token(mp)


# ------------------------------------------------------------------- control
class MultipathControl:
    """See the module docstring. `conn` is an `MptcpConnection`."""

    def __init__(self, core: Any, conn: Any, settings: MultipathSettings) -> None:
        self.core = core
        self.mp = conn
        self.settings = settings
        self.view = _HostView(core, self)
        conn.host = self.view
        self.sched_name = "minrtt"
        self.after_done = False
        self.pending_open = False  # "immediate" asked for after connect
        self.acted = False  # poll() queued work: the driver must flush
        self._removing: dict[IpAddr, float] = {}
        self._seen: dict[int, tuple[bool, bool, bool, bool]] = {}
        self._remote_ids: dict[int, tuple[str, int | None]] = {}
        self._fallback_seen = False
        self._fate_done = False
        self.events_total = 0
        self.set_scheduler(settings.scheduler or "minrtt")
        self._restrict_announcements()

    # ----------------------------------------------------------- scheduling
    def set_scheduler(self, name: str) -> None:
        """A11: switch the scheduler now (mid-connection is fine: the next
        chunk is placed by the new one; "redundant" copies every chunk)."""
        make_sched(name)
        self.mp.set_scheduler(name)
        self.sched_name = name
        self.settings.scheduler = name

    def set_backup(self, sid: int, backup: bool, now: float) -> None:
        """A11: mark our end of a subflow backup (or not); MP_PRIO tells the peer."""
        sf = self.subflow(sid)
        if not sf.alive or not sf.established:
            raise OSError(errno.ENOTCONN, f"subflow {sid} is not established")
        self.mp.set_backup(sf, backup)
        self.core.wake(self.mp, now)

    def subflow(self, sid: int) -> Any:
        for sf in self.mp.subflows:
            if sf.id == sid:
                return sf
        raise OSError(errno.ENOENT, f"no subflow {sid}")

    # ----------------------------------------------------------- addresses
    def _restrict_announcements(self) -> None:
        """A connection accepted before the application's restriction applied
        (a listener's TCP_MULTIPATH_ADD/REMOVE): announce none of the other
        addresses, withdraw those announced (REMOVE_ADDR) and close the
        subflows that use them."""
        mp = self.mp
        pm = mp.pm
        st = self.settings
        if pm is None or (st.allowed is None and not st.removed):
            return
        pm._to_announce = [e for e in pm._to_announce if st.local_allowed(e.address)]
        pending = {e.addr_id for e in pm._to_announce}
        if pm._announcing is not None and not st.local_allowed(pm._announcing.endpoint.address):
            pm._announcing = None
        gone = tuple(i for a, i in pm._local_ids.items()
                     if i != 0 and i not in pending and not st.local_allowed(a))
        if gone:
            mp.queue_actions([SendRemoveAddr(gone)])
        for sf in mp.subflows:
            if sf.alive and sf.conn is not None and not st.local_allowed(sf.conn.local[0]):
                sf.close_reason = "address_not_allowed"
                mp.close_subflow(sf, mp.now, "address_not_allowed")
        self.core.wake(mp, mp.now)

    def add_addresses(self, addrs: list[tuple[IpAddr, int]], now: float) -> None:
        """B5: during a connection, allow these local addresses, announce
        them (ADD_ADDR) and open a subflow from each (a hint: the PM mode and
        limits still apply)."""
        st, mp = self.settings, self.mp
        for a, port in addrs:
            st.removed.discard(a)
            if st.allowed is not None:
                st.allowed[a] = port
        pm = mp.pm
        if pm is None or mp.fallen_back:
            return
        for a, _port in addrs:
            if a != mp.local[0]:
                # no port: ours are not listening ports (RFC 8684 §3.4.1)
                mp.queue_actions([SendAddAddr(Endpoint(pm.local_id(a), a))])
        if not mp.server and self.pm_open_allowed():
            r0 = pm.remote_addrs.get(0)
            for a, _ in addrs:
                if r0 is not None and a.version == r0.address.version and \
                        not self._pair_used(a, r0.address):
                    self.open_join(OpenSubflow(Endpoint(pm.local_id(a), a), r0,
                                               r0.port or pm.remote_port), now)
        self.core.wake(mp, now)

    def remove_addresses(self, addrs: list[IpAddr], now: float,
                         grace: float = 2.0) -> None:
        """B7: never use these local addresses again (unless added), send
        REMOVE_ADDR, close their subflows -- after a replacement subflow on
        an unused allowed path is up (make-before-break), at most `grace`
        seconds later."""
        st, mp = self.settings, self.mp
        for a in addrs:
            st.removed.add(a)
            if st.allowed is not None:
                st.allowed.pop(a, None)
        pm = mp.pm
        if pm is None:
            return
        for a in addrs:
            mp.queue_actions(pm.remove_local(a))
            if any(sf.alive and sf.conn.local[0] == a for sf in mp.subflows):
                self._removing[a] = now + grace
        if self._removing and not self._replacement_ready() and not mp.server:
            self.open_more(1, now)
        self._finish_removals(now)
        self.core.wake(mp, now)

    def _replacement_ready(self) -> bool:
        return any(sf.alive and sf.established and not sf.closing
                   and sf.conn.local[0] not in self._removing for sf in self.mp.subflows)

    def _finish_removals(self, now: float) -> bool:
        if not self._removing:
            return False
        ready = self._replacement_ready()
        acted = False
        for a, deadline in list(self._removing.items()):
            if ready or now >= deadline:
                for sf in self.mp.subflows:
                    if sf.alive and sf.conn.local[0] == a:
                        sf.close_reason = "address_removed"
                        self.mp.close_subflow(sf, now, "address_removed")
                        acted = True
                del self._removing[a]
        return acted

    # -------------------------------------------------------------- subflows
    def pm_open_allowed(self) -> bool:
        mode = self.settings.pm_mode or "immediate"
        if mode == "never":
            return False
        if mode == "after":
            return self.mp.ds.bytes_acked + (self.mp.dr.bytes_received if self.mp.dr else 0) \
                >= self.settings.pm_after_bytes
        return True

    def _pair_used(self, local: Any, remote: Any) -> bool:
        return any(sf.alive and sf.conn is not None and sf.conn.local[0] == local
                   and sf.conn.remote[0] == remote for sf in self.mp.subflows)

    def open_join(self, act: OpenSubflow, now: float, *, local_port: int = 0,
                  force: bool = False, dedupe: bool = True) -> Any:
        """Open an MP_JOIN subflow (the host's `open_subflow`, plus: only from
        allowed addresses, the PM mode, and the local port -- the port the
        application gave with the address, else the initial subflow's, §5.3.3)."""
        mp, core, st = self.mp, self.core, self.settings
        if mp.pm is None or mp.fallen_back or mp.closed:
            return None
        if not force and not self.pm_open_allowed():
            return None
        raddr = act.remote.address
        try:
            laddr = act.local.address if act.local is not None else \
                self.view.select_source(raddr)
        except OSError:
            return None
        if laddr.version != raddr.version or not st.local_allowed(laddr):
            return None
        if core.owner(laddr) is None or (dedupe and self._pair_used(laddr, raddr)):
            return None
        ports = [local_port] if local_port else []
        given = (st.allowed or {}).get(laddr, 0)
        if given:
            ports.append(given)
        ports += [mp.local[1], 0]
        return core.open_subflow(mp, replace(act, local=Endpoint(mp.pm.local_id(laddr), laddr)),
                                 now, local_ports=tuple(dict.fromkeys(ports)))

    def candidate_pairs(self) -> list[tuple[Any, Endpoint]]:
        """Unused (local, remote) paths: each other allowed local address to
        the peer's initial address, then each announced address from the
        source routing picks (the kernel PM's order)."""
        mp = self.mp
        pm = mp.pm
        if pm is None or mp.subflows[0].conn is None:
            return []
        first = mp.subflows[0].conn
        out: list[tuple[Any, Endpoint]] = []
        r0 = pm.remote_addrs.get(0)
        if r0 is not None:
            for a in self.view.local_addresses(first.local[0]):
                if a.version == r0.address.version and not self._pair_used(a, r0.address):
                    out.append((a, r0))
        for rid, ep in sorted(pm.remote_addrs.items()):
            if rid == 0:
                continue
            try:
                src = self.view.select_source(ep.address)
            except OSError:
                continue
            if not self._pair_used(src, ep.address):
                out.append((src, ep))
        return out

    def open_more(self, n: int, now: float) -> int:
        """A7: open up to `n` more subflows on unused paths; how many started."""
        pm = self.mp.pm
        started = 0
        for local, remote in self.candidate_pairs():
            if started >= n:
                break
            act = OpenSubflow(Endpoint(pm.local_id(local), local), remote,
                              remote.port or pm.remote_port)
            if self.open_join(act, now, force=True) is not None:
                started += 1
        if started:
            self.core.wake(self.mp, now)
        return started

    def open_path(self, local: tuple[IpAddr, int], remote: tuple[IpAddr, int],
                  now: float, *, backup: bool = False) -> int:
        """A7: a subflow from this local address (and port, 0 = any) to this
        remote address and port; returns its id."""
        mp = self.mp
        if mp.pm is None or not mp.established or mp.fallen_back:
            raise OSError(errno.ENOTCONN, "MPTCP connection not established")
        laddr, lport = local
        if self.core.owner(laddr) is None:
            raise OSError(errno.EADDRNOTAVAIL, f"{laddr} is not a local address")
        if not self.settings.local_allowed(laddr):
            raise OSError(errno.EADDRNOTAVAIL, f"{laddr} was removed or not added")
        raddr, rport = remote
        if laddr.version != raddr.version:
            raise OSError(errno.EAFNOSUPPORT, "address families differ")
        rid = next((i for i, ep in mp.pm.remote_addrs.items() if ep.address == raddr), None)
        ep = Endpoint(rid if rid is not None else 0, raddr, rport)
        act = OpenSubflow(Endpoint(mp.pm.local_id(laddr), laddr), ep,
                          rport or mp.pm.remote_port, backup)
        sf = self.open_join(act, now, local_port=lport, force=True, dedupe=False)
        if sf is None:
            raise OSError(errno.EADDRINUSE if lport else errno.ENETUNREACH,
                          "could not open the subflow")
        self.core.wake(mp, now)
        return sf.id

    def close_subflow(self, sid: int, now: float) -> None:
        """A7: close one subflow (TCP FIN; its unacknowledged data goes on
        the others). The initial subflow too: with fate-sharing off the
        connection lives on (L4)."""
        sf = self.subflow(sid)
        if not sf.alive:
            raise OSError(errno.ENOTCONN, f"subflow {sid} is already closed")
        sf.close_reason = "closed_by_application"
        self.mp.close_subflow(sf, now, "closed_by_application")
        self.core.wake(self.mp, now)

    def set_count(self, n: int, now: float) -> int:
        """A7: ask for `n` subflows in all: open more on unused paths or close
        the newest extra ones. Returns how many are (or are becoming) alive."""
        if n < 1:
            raise OSError(errno.EINVAL, "at least one subflow")
        alive = [sf for sf in self.mp.subflows if sf.alive and not sf.closing]
        if len(alive) < n:
            self.open_more(n - len(alive), now)
        else:
            for sf in sorted(alive, key=lambda s: -s.id)[:len(alive) - n]:
                self.close_subflow(sf.id, now)
        return len([sf for sf in self.mp.subflows if sf.alive and not sf.closing])

    # -------------------------------------------------------------- polling
    def fate_sharing(self, policy_default: bool) -> bool:
        fs = self.settings.fate_sharing
        return policy_default if fs is None else fs

    def poll(self, now: float, *, fate_default: bool = False) -> list[MultipathEvent]:
        """After any event of the connection: PM mode, fate-sharing, pending
        removals; returns the events since the last call."""
        mp = self.mp
        acted = False
        due = self.pending_open or (self.settings.pm_mode == "after" and not self.after_done)
        if (due and mp.pm is not None and mp.established and not mp.fallen_back
                and mp.pm.data_acked | mp.server and self.pm_open_allowed()):
            self.after_done = True
            self.pending_open = False
            limit = self.settings.max_subflows if self.settings.max_subflows is not None \
                else 8
            acted |= self.open_more(limit, now) > 0
        acted |= self._finish_removals(now)
        for sf in mp.subflows:
            # Local fallback: a subflow sends one signal (ADD_ADDR, REMOVE_ADDR,
            # MP_PRIO) per pure ACK and asks for none for the next one queued.
            if sf.signals and sf.alive and sf.established and sf.conn is not None \
                    and sf.conn.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
                sf.conn.request_ack()
                acted = True
        first = mp.subflows[0] if mp.subflows else None
        if (first is not None and _leaving(first) and not self._fate_done and not mp.closed
                and mp.state is TcpState.ESTABLISHED and self.fate_sharing(fate_default)):
            # A13 / §4.2.2: the connection shares the initial subflow's fate.
            self._fate_done = True
            mp.error = errno.ECONNRESET
            mp.abort(now)
            acted = True
        if acted:
            self.core.wake(mp, now)
            self.acted = True
        return self.events(now)

    def events(self, now: float) -> list[MultipathEvent]:
        out: list[MultipathEvent] = []
        closed: list[MultipathEvent] = []  # after the others of this round
        mp = self.mp
        for sf in mp.subflows:
            c = sf.conn
            cur = (bool(sf.established), _leaving(sf), bool(sf.backup), bool(sf.peer_backup))
            old = self._seen.get(sf.id, (False, False, bool(sf.backup), False))
            loc = _ep(c.local) if c is not None else None
            rem = _ep(c.remote) if c is not None else None
            if cur[0] and not old[0]:
                out.append(MultipathEvent("subflow_established", now, sf.id, loc, rem))
            if cur[1] and not old[1]:
                closed.append(MultipathEvent("subflow_closed", now, sf.id, loc, rem,
                                             reason=sf.close_reason))
            if cur[2] != old[2]:
                out.append(MultipathEvent("priority_changed", now, sf.id, loc, rem,
                                          backup=cur[2], by_peer=False))
            if cur[3] != old[3]:
                out.append(MultipathEvent("priority_changed", now, sf.id, loc, rem,
                                          backup=cur[3], by_peer=True))
            self._seen[sf.id] = cur
        out.extend(closed)
        pm = mp.pm
        if pm is not None:
            now_ids = {i: (str(ep.address), ep.port) for i, ep in pm.remote_addrs.items()
                       if i != 0}
            for i, (a, p) in now_ids.items():
                if i not in self._remote_ids:
                    out.append(MultipathEvent("address_announced", now, addr_id=i, address=a,
                                              port=p))
            for i, (a, p) in self._remote_ids.items():
                if i not in now_ids:
                    out.append(MultipathEvent("address_removed", now, addr_id=i, address=a,
                                              port=p))
            self._remote_ids = now_ids
        if mp.fallen_back and not self._fallback_seen:
            self._fallback_seen = True
            out.append(MultipathEvent("fallback", now, reason=mp.fallback_reason))
        self.events_total += len(out)
        return out

    # ----------------------------------------------------------------- info
    def info(self) -> dict[str, Any]:
        """A6: see `subflow_info` / `connection_info`."""
        return connection_info(self.mp, scheduler=self.sched_name, settings=self.settings)


def _leaving(sf: Any) -> bool:
    """The subflow is closed or closing (FIN sent or received, or reset)."""
    c = sf.conn
    return (not sf.alive or sf.closing or c is None
            or c.state not in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT,
                               TcpState.SYN_SENT, TcpState.SYN_RECEIVED)
            or bool(c.eof_received))


def subflow_info(sid: int, c: Any, *, join: bool, backup: bool, peer_backup: bool,
                 established: bool, closed: bool, reason: str | None,
                 leaving: bool = False) -> dict[str, Any]:
    """One subflow's A6 statistics; "state" is "connecting", "established",
    "closing" (FIN sent or received, or being removed) or "closed" (gone,
    or in TIME-WAIT: it carries no more data)."""
    st = c.stats
    if closed or c.state in (TcpState.CLOSED, TcpState.TIME_WAIT):
        state = "closed"
    elif leaving and established:
        state = "closing"
    else:
        state = "established" if established else "connecting"
    return {
        "id": sid, "state": state, "tcp_state": c.state.value,
        "local": _ep(c.local), "remote": _ep(c.remote), "join": join,
        "backup": backup, "peer_backup": peer_backup,
        "bytes_sent": st.bytes_sent, "bytes_received": st.bytes_received,
        "bytes_retransmitted": st.bytes_retransmitted,
        "segments_sent": st.segments_sent, "segments_received": st.segments_received,
        "retransmissions": st.retransmissions, "timeouts": st.timeouts,
        "srtt": c.rtt.srtt, "rttvar": c.rtt.rttvar, "rto": c.rtt.rto,
        "cwnd": c.cc.cwnd if c.cc is not None else 0,
        "ssthresh": c.cc.ssthresh if c.cc is not None else 0,
        "close_reason": reason,
    }


def connection_info(conn: Any, *, scheduler: str | None = None,
                    settings: MultipathSettings | None = None) -> dict[str, Any]:
    """A6: per-subflow statistics and connection totals (every subflow that
    ever existed counts, so totals survive subflow close)."""
    if not hasattr(conn, "subflows"):  # plain TCP
        subs = [subflow_info(1, conn, join=False, backup=False, peer_backup=False,
                             established=conn.state not in (TcpState.SYN_SENT,
                                                            TcpState.SYN_RECEIVED),
                             closed=conn.state is TcpState.CLOSED, reason=None)]
        mptcp, extra = False, {"fallback": False, "fallback_reason": None, "connid": None}
    else:
        subs = [subflow_info(sf.id, sf.conn, join=sf.join, backup=bool(sf.backup),
                             peer_backup=bool(sf.peer_backup),
                             established=sf.established, closed=not sf.alive,
                             reason=sf.close_reason, leaving=_leaving(sf))
                for sf in conn.subflows if sf.conn is not None]
        mptcp = not conn.fallen_back
        extra = {"fallback": conn.fallen_back, "fallback_reason": conn.fallback_reason,
                 "connid": conn.token,
                 "data_bytes_acked": conn.ds.bytes_acked,
                 "data_bytes_received": conn.dr.bytes_received if conn.dr else 0,
                 "reinjected": conn.ds.bytes_reinjected,
                 "duplicate_bytes_received": conn.dr.dup_bytes if conn.dr else 0}
    total_sent = sum(s["bytes_sent"] for s in subs)
    total_rcvd = sum(s["bytes_received"] for s in subs)
    for s in subs:
        s["share_sent"] = s["bytes_sent"] / total_sent if total_sent else 0.0
        s["share_received"] = s["bytes_received"] / total_rcvd if total_rcvd else 0.0
    totals = {k: sum(s[k] for s in subs) for k in (
        "bytes_sent", "bytes_received", "bytes_retransmitted", "segments_sent",
        "segments_received", "retransmissions", "timeouts")}
    totals["subflows_opened"] = len(subs)
    totals["subflows_closed"] = sum(1 for s in subs if s["state"] == "closed")
    return {"mptcp": mptcp, **extra, "state": conn.state.value,
            "scheduler": scheduler, "profile": settings.profile if settings else None,
            "pm_mode": (settings.pm_mode or "immediate") if settings else None,
            "subflows": subs, "totals": totals}
