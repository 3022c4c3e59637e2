"""The default path manager, as pure decisions (RFC 8684 §3.4; Linux
in-kernel PM, net/mptcp/pm.c and pm_kernel.c, linux-mptcp-v1.md §2.5-§2.6).

Events go in (connection fully established, data acknowledged, ADD_ADDR /
echo / REMOVE_ADDR received, a timer, a subflow closed, a join request) and
actions come out: ``SendAddAddr`` (an announcement or an echo, each on its own
pure ACK as the kernel does), ``SendRemoveAddr``, ``OpenSubflow``,
``CloseSubflows``. Nothing here touches a socket or reads a clock.

Client (the side that opened the connection): once the peer has acknowledged
data at the connection level -- Linux refuses a join that reaches it before
the connection is fully established on its side (``MPJoinRejected``) -- it
opens one subflow from each of its other local addresses to the peer's initial
address (unless the peer set the C flag) and one to each address the peer
announces, within ``PmLimits.subflows`` (extra subflows) and
``PmLimits.add_addr_accepted`` (announcements used).

Server: once fully established it announces its other addresses one at a
time; each ADD_ADDR is retransmitted until echoed, at most 3 times, after
``min(rto, 120 s) << n`` (pm.c ``mptcp_pm_add_timer``, ADD_ADDR_RETRANS_MAX),
then the next address goes out. It accepts joins within ``PmLimits.subflows``.

Every valid ADD_ADDR is echoed (§3.4.1), even one we will not use; one with
id 0 is only taken for the peer's initial address, and an id already bound
to another address is not used (hostile-trace rule). Remote state is bounded
by ``PmLimits.max_remote_addrs``.
"""

from __future__ import annotations

import hmac as _hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from stack.mptcp.crypto import add_addr_hmac
from stack.wire.mptcp import AddAddr, RemoveAddr

__all__ = [
    "ADD_ADDR_RETRANS_MAX",
    "ADD_ADDR_TIMEOUT",
    "CloseSubflows",
    "Endpoint",
    "OpenSubflow",
    "PathManager",
    "PmAction",
    "PmLimits",
    "SendAddAddr",
    "SendRemoveAddr",
    "add_addr_option",
    "remove_addr_options",
    "verify_add_addr",
]

ADD_ADDR_RETRANS_MAX = 3  # pm.c
ADD_ADDR_TIMEOUT = 120.0  # net.mptcp.add_addr_timeout
RM_IDS_MAX = 8  # kernel MPTCP_RM_IDS_MAX: ids per REMOVE_ADDR

Address = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An address with its MPTCP address id (and an optional port, §3.4.1)."""

    addr_id: int
    address: Address
    port: int | None = None
    backup: bool = False


@dataclass(frozen=True, slots=True)
class SendAddAddr:
    endpoint: Endpoint
    echo: bool = False


@dataclass(frozen=True, slots=True)
class SendRemoveAddr:
    addr_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OpenSubflow:
    """Open an MP_JOIN subflow. ``local`` None: the host's routing picks the
    source address (then ask ``PathManager.local_id`` for its id)."""

    local: Endpoint | None
    remote: Endpoint
    remote_port: int
    backup: bool = False


@dataclass(frozen=True, slots=True)
class CloseSubflows:
    """Close every subflow to the peer's address id ``remote_id``."""

    remote_id: int


PmAction = SendAddAddr | SendRemoveAddr | OpenSubflow | CloseSubflows


@dataclass(frozen=True, slots=True)
class PmLimits:
    subflows: int = 2  # extra subflows (the initial one not counted), as `ip mptcp limits`
    add_addr_accepted: int = 2  # peer announcements we open subflows to
    join_from_local_addrs: bool = True  # client: a subflow from each other local address
    announce: bool = True  # server: announce our other addresses
    max_remote_addrs: int = 8


@dataclass(slots=True)
class _Announce:
    endpoint: Endpoint
    retrans: int = 0
    deadline: float = 0.0


@dataclass
class PathManager:
    """Path-manager decisions of one MPTCP connection."""

    server: bool
    local_addrs: Sequence[Address | str]
    initial_local: Address | str
    initial_remote: Address | str
    remote_port: int
    limits: PmLimits = field(default_factory=PmLimits)
    peer_deny_join_id0: bool = False  # the peer's C flag
    source_for: Callable[[Address], Address | None] | None = None

    def __post_init__(self) -> None:
        self.initial_local = ip_address(self.initial_local)
        self.initial_remote = ip_address(self.initial_remote)
        self._local_ids: dict[Address, int] = {self.initial_local: 0}
        for a in self.local_addrs:
            a = ip_address(a)
            if a not in self._local_ids:
                self._local_ids[a] = len(self._local_ids)
        self.remote_addrs: dict[int, Endpoint] = {
            0: Endpoint(0, self.initial_remote, self.remote_port)}
        self.established = False
        self.data_acked = False
        self.extra_subflows = 0
        self.accepted = 0  # announcements we opened subflows to
        self.rejected_announcements = 0
        self.rto = 1.0
        self._opened: set[tuple[Address | None, int]] = set()  # (local, remote id)
        self._pending_remote: list[Endpoint] = []  # announced before joins were allowed
        self._to_announce: list[Endpoint] = [
            Endpoint(i, a) for a, i in self._local_ids.items() if i != 0]
        self._announcing: _Announce | None = None

    # -- ids -------------------------------------------------------------

    def local_id(self, address: Address | str) -> int:
        """Our address id for ``address`` (a new id for an address first used
        now, as the kernel's implicit endpoints)."""
        a = ip_address(address)
        if a not in self._local_ids:
            self._local_ids[a] = max(self._local_ids.values()) + 1
        return self._local_ids[a]

    def local_endpoint(self, address: Address | str) -> Endpoint:
        a = ip_address(address)
        return Endpoint(self.local_id(a), a)

    # -- establishment ---------------------------------------------------

    def set_rto(self, rto: float) -> None:
        """The largest RTO of the connection's subflows (ADD_ADDR timer base)."""
        self.rto = rto

    @property
    def add_addr_timeout(self) -> float:
        return min(self.rto, ADD_ADDR_TIMEOUT)

    def on_fully_established(self, now: float) -> list[PmAction]:
        self.established = True
        if self.server:
            return self._announce_next(now) if self.limits.announce else []
        return self._client_joins()

    def on_data_acked(self, now: float) -> list[PmAction]:
        """Client: the peer acknowledged data at the connection level, so it
        is fully established on its side and will accept joins."""
        del now
        if self.server or self.data_acked:
            return []
        self.data_acked = True
        return self._client_joins()

    def _joins_allowed(self) -> bool:
        return not self.server and self.established and self.data_acked

    def _room(self) -> bool:
        return self.extra_subflows < self.limits.subflows

    def _open(self, local: Endpoint | None, remote: Endpoint) -> OpenSubflow | None:
        key = (None if local is None else local.address, remote.addr_id)
        if key in self._opened or not self._room():
            return None
        self._opened.add(key)
        self.extra_subflows += 1
        backup = bool(local is not None and local.backup)
        return OpenSubflow(local, remote, remote.port or self.remote_port, backup)

    def _client_joins(self) -> list[PmAction]:
        if not self._joins_allowed():
            return []
        out: list[PmAction] = []
        if self.limits.join_from_local_addrs and not self.peer_deny_join_id0:
            remote0 = self.remote_addrs[0]
            for addr, lid in self._local_ids.items():
                if lid == 0 or addr.version != remote0.address.version:
                    continue
                act = self._open(Endpoint(lid, addr), remote0)
                if act is not None:
                    out.append(act)
        pending, self._pending_remote = self._pending_remote, []
        for ep in pending:
            out.extend(self._use_announcement(ep))
        return out

    def _use_announcement(self, ep: Endpoint) -> list[PmAction]:
        if self.accepted >= self.limits.add_addr_accepted or not self._room():
            return []
        local = None
        if self.source_for is not None:
            src = self.source_for(ep.address)
            local = None if src is None else self.local_endpoint(src)
        act = self._open(local, ep)
        if act is None:
            return []
        self.accepted += 1
        return [act]

    # -- announcements received ------------------------------------------

    def on_add_addr(self, ep: Endpoint, now: float) -> list[PmAction]:
        """A valid (HMAC-checked) ADD_ADDR from the peer: always echoed."""
        del now
        out: list[PmAction] = [SendAddAddr(ep, echo=True)]
        known = self.remote_addrs.get(ep.addr_id)
        if ep.addr_id == 0 and ep.address != self.initial_remote:
            self.rejected_announcements += 1  # id 0 is the initial address only
            return out
        if known is not None:
            if known.address != ep.address or known.port != ep.port:
                self.rejected_announcements += 1  # id reused for another address
            return out
        if len(self.remote_addrs) >= self.limits.max_remote_addrs:
            self.rejected_announcements += 1
            return out
        self.remote_addrs[ep.addr_id] = ep
        if self.server:
            return out  # the server does not open subflows
        if self._joins_allowed():
            out.extend(self._use_announcement(ep))
        elif len(self._pending_remote) < self.limits.max_remote_addrs:
            self._pending_remote.append(ep)
        return out

    def on_remove_addr(self, addr_ids: Sequence[int]) -> list[PmAction]:
        """REMOVE_ADDR: close the subflows to those ids, forget them (§3.4.2)."""
        out: list[PmAction] = []
        for i in addr_ids:
            ep = self.remote_addrs.pop(i, None) if i != 0 else self.remote_addrs.get(0)
            if ep is None:
                continue
            out.append(CloseSubflows(i))
            self._pending_remote = [p for p in self._pending_remote if p.addr_id != i]
            if any(r == i for _, r in self._opened) and i != 0:
                self.accepted = max(0, self.accepted - 1)
        return out

    # -- our announcements (server) --------------------------------------

    def _announce_next(self, now: float) -> list[PmAction]:
        if not self._to_announce:
            self._announcing = None
            return []
        ep = self._to_announce.pop(0)
        self._announcing = _Announce(ep, 0, now + self.add_addr_timeout)
        return [SendAddAddr(ep)]

    def on_add_addr_echo(self, ep: Endpoint, now: float) -> list[PmAction]:
        """The peer echoed an announcement: stop its timer, announce the next."""
        cur = self._announcing
        if cur is None or cur.endpoint.addr_id != ep.addr_id or \
                cur.endpoint.address != ep.address:
            return []
        return self._announce_next(now)

    def next_deadline(self) -> float | None:
        return None if self._announcing is None else self._announcing.deadline

    def on_timer(self, now: float) -> list[PmAction]:
        """ADD_ADDR retransmission (pm.c ``mptcp_pm_add_timer``): resend, back
        off ``timeout << n``; after the last retransmission move on."""
        cur = self._announcing
        if cur is None or now < cur.deadline:
            return []
        out: list[PmAction] = []
        if cur.retrans < ADD_ADDR_RETRANS_MAX:
            out.append(SendAddAddr(cur.endpoint))
            cur.retrans += 1
            cur.deadline = now + (self.add_addr_timeout * (1 << cur.retrans))
        if cur.retrans >= ADD_ADDR_RETRANS_MAX:
            out.extend(self._announce_next(now))
        return out

    def remove_local(self, address: Address | str) -> list[PmAction]:
        """Stop using a local address: REMOVE_ADDR with its id."""
        a = ip_address(address)
        lid = self._local_ids.get(a)
        if lid is None:
            return []
        self._to_announce = [e for e in self._to_announce if e.addr_id != lid]
        if self._announcing is not None and self._announcing.endpoint.addr_id == lid:
            self._announcing = None
        return [SendRemoveAddr((lid,))]

    # -- subflows ----------------------------------------------------------

    def accept_join(self) -> bool:
        """Server: may another MP_JOIN subflow be accepted? (else RST with
        MP_TCPRST "administratively prohibited", MPJoinRejected)."""
        if not self._room():
            return False
        self.extra_subflows += 1
        return True

    def on_subflow_closed(self, local: Address | str | None, remote_id: int) -> None:
        """An extra subflow is gone: its slot is free again."""
        key = (None if local is None else ip_address(local), remote_id)
        if key not in self._opened:
            key = (None, remote_id)  # opened with "routing picks the source"
        self._opened.discard(key)
        self.extra_subflows = max(0, self.extra_subflows - 1)


# -- options -------------------------------------------------------------------


def add_addr_option(act: SendAddAddr, local_key: int, remote_key: int) -> AddAddr:
    """The ADD_ADDR for an action: an announcement carries the rightmost 64
    bits of HMAC(Key_local‖Key_remote, id‖address‖port) (§3.4.1), an echo
    (E=1) carries none."""
    ep = act.endpoint
    if act.echo:
        return AddAddr(1, True, ep.addr_id, ep.address, ep.port, None)
    mac = add_addr_hmac(local_key, remote_key, ep.addr_id, ep.address, ep.port)
    return AddAddr(1, False, ep.addr_id, ep.address, ep.port, mac)


def verify_add_addr(opt: AddAddr, remote_key: int, local_key: int) -> Endpoint | None:
    """The endpoint a received ADD_ADDR announces (or echoes), None when its
    HMAC is wrong -- dropped silently, not echoed (options.c
    ``add_addr_hmac_valid``). v0 announcements are not ours to use."""
    if opt.version != 1:
        return None
    ep = Endpoint(opt.addr_id, opt.address, opt.port)
    if opt.echo:
        return ep
    if opt.hmac is None:
        return None
    want = add_addr_hmac(remote_key, local_key, opt.addr_id, opt.address, opt.port)
    return ep if _hmac.compare_digest(want, opt.hmac) else None


def remove_addr_options(act: SendRemoveAddr) -> list[RemoveAddr]:
    """REMOVE_ADDR options, at most 8 ids each as the kernel sends them."""
    ids = act.addr_ids
    return [RemoveAddr(tuple(ids[i:i + RM_IDS_MAX])) for i in range(0, len(ids), RM_IDS_MAX)]
