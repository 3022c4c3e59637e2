"""The MPTCP connection (RFC 8684): the building blocks tied to the subflows'
TCP engines, with the application API of a ``TcpConnection``.

``MptcpConnection`` owns the local key, the peer's key, one ``DataSender``
and one ``DataReceiver`` (data level, §3.3), the path manager (§3.4), the
scheduler, the coupled congestion-control group (RFC 6356) and its
``Subflow`` records (``stack.mptcp.subflow``), each the ``upper`` of one
``TcpConnection``. It never creates a TCP connection itself: the host does,
through the small ``MptcpHostOps`` protocol below (``open_subflow``,
``bind_token``), and calls :meth:`process` after every event on any subflow
(drain received bytes, run the scheduler, carry out path-manager actions,
follow the close sequence), then polls the subflows.

Application API (the same as ``TcpConnection``'s, docs/INTERFACES.md
"stack/mptcp"): ``send``, ``recv``, ``recv_into``, ``shutdown_write``,
``close``, ``abort``, ``readable``, ``send_space``, ``eof_received``,
``error``, ``all_acked``, ``state`` (a ``TcpState`` describing the
connection level), ``local``/``remote`` (the initial subflow's), and
``mptcp_info()``.
"""

from __future__ import annotations

import errno
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from stack.mptcp.app import AppApi
from stack.mptcp.coupled import COUPLED_ALGORITHMS, CoupledGroup
from stack.mptcp.datarecv import DataReceiver, RxResult, SubflowReceiver
from stack.mptcp.datasend import DataSender
from stack.mptcp.dsn import dsn_add, dsn_diff
from stack.mptcp.fallback import (
    MP_FAIL_TIMEOUT,
    RST_EMIDDLEBOX,
    Action,
    Context,
    Situation,
    decide,
    fastclose_valid,
)
from stack.mptcp.handshake import JoinInitiator, JoinResponder, MpcClient
from stack.mptcp.keys import KeyMaterial, RandomSource
from stack.mptcp.pm import (
    CloseSubflows,
    OpenSubflow,
    PathManager,
    PmAction,
    PmLimits,
    SendAddAddr,
    SendRemoveAddr,
    add_addr_option,
    remove_addr_options,
    verify_add_addr,
)
from stack.mptcp.scheduler import StaleTracker, SubflowState, make_scheduler
from stack.mptcp.subflow import Subflow
from stack.tcp.config import TcpConfig
from stack.tcp.seq import seq_diff
from stack.tcp.state import TcpState
from stack.wire.mptcp import AddAddr, MpFastclose, MpPrio, MpTcpRst
from stack.wire.mptcp import MpJoin as _MpJoin

__all__ = ["MptcpConfig", "MptcpConnection", "MptcpHostOps", "DSS_OPTION_SPACE"]

# A DSS with 64-bit DATA_ACK and DSN is 26 bytes, 28 with a checksum or the
# NOP padding: the option bytes every data segment reserves (§1.7 of the
# reference: with timestamps that fills the 40-byte option space).
DSS_OPTION_SPACE = 28
_FALLBACK_WINDOW = 1 << 30  # no DATA_ACKs after fallback: TCP flow control rules


@dataclass
class MptcpConfig:
    """Per-connection MPTCP settings (``net.mptcp.*`` and ``ip mptcp limits``)."""

    checksum: bool = False  # ask for DSS checksums (A flag)
    congestion: str = "lia"  # "lia"/"olia"/"balia" coupled, or an uncoupled TCP name
    scheduler: str = "default"
    limits: PmLimits = field(default_factory=PmLimits)
    rcvbuf: int = 4 << 20  # connection-level receive buffer (§3.3.4)
    sndbuf: int = 4 << 20
    stale_loss_cnt: int = 4  # net.mptcp.stale_loss_cnt
    syn_retrans_before_tcp_fallback: int = 2
    deny_join_id0: bool = False  # C flag


class MptcpHostOps(Protocol):
    """What the connection needs from its host."""

    def open_subflow(self, mp: MptcpConnection, act: OpenSubflow, now: float) -> Any: ...

    def bind_token(self, mp: MptcpConnection) -> None: ...

    def local_addresses(self, first_for: Any = None) -> list[Any]: ...

    def select_source(self, dst: Any) -> Any: ...


class MptcpConnection(AppApi):
    """One MPTCP connection (client or server side)."""

    def __init__(self, host: MptcpHostOps, km: KeyMaterial, rng: RandomSource, *,
                 server: bool, config: MptcpConfig | None = None, now: float = 0.0) -> None:
        self.host = host
        self.km = km
        self.rng = rng
        self.server = server
        self.cfg = config or MptcpConfig()
        self.now = now
        self.peer: KeyMaterial | None = None  # the peer's key
        self.csum = False
        self.ds = DataSender(km.idsn, sndbuf=self.cfg.sndbuf)
        self.dr: DataReceiver | None = None
        self.pm: PathManager | None = None
        self.sched = make_scheduler(self.cfg.scheduler)
        self.ds.set_redundant(self.cfg.scheduler == "redundant")
        algo = self.cfg.congestion.lower()
        self.group = CoupledGroup(algo) if algo in COUPLED_ALGORITHMS else None
        self.subflows: list[Subflow] = []
        self.established = False
        self.fallen_back = False
        self.fallback_reason: str | None = None
        self.error: int | None = None
        self.closed = False
        self.join_seen = False
        self.mp_fail_dsn: int | None = None
        self.mp_fail_sent = False
        # kernel mptcp_mp_fail_no_response: reset the subflow when no MP_FAIL
        # or infinite mapping answers ours within TCP_RTO_MAX (§3.7)
        self.fail_deadline: float | None = None
        self.fail_subflow: Subflow | None = None
        self.fail_reply: tuple[Subflow, int] | None = None  # MP_FAIL to answer
        self.stats: Counter[str] = Counter()
        self._next_id = 1
        self._actions: list[tuple[PmAction, Subflow | None]] = []
        self._bind_pending = False
        self._app_closed = False
        self._subflows_closing = False
        self._wnd_known = False  # wnd_end taken from the peer's real window
        # data-level retransmission (kernel protocol.c __mptcp_retrans): the
        # DATA_ACK did not move for an RTO although data is outstanding
        self._rtx_deadline: float | None = None
        self._rtx_backoff = 0
        self._last_una = self.ds.snd_una

    # ================================================================ subflows
    def _new_subflow(self, hs: Any, *, join: bool, local_id: int = 0, remote_id: int = 0,
                     backup: bool = False) -> Subflow:
        sid = self._next_id
        self._next_id += 1
        sf = Subflow(self, sid, hs, self.ds.subflow(sid), SubflowReceiver(self.csum),
                     join=join, local_id=local_id, remote_id=remote_id, backup=backup,
                     opened_at=self.now)
        sf.stale = StaleTracker(self.cfg.stale_loss_cnt)
        self.subflows.append(sf)
        return sf

    def initial_client_subflow(self) -> Subflow:
        hs = MpcClient(self.km, want_csum=self.cfg.checksum, deny_join_id0=self.cfg.deny_join_id0,
                       syn_retrans_limit=self.cfg.syn_retrans_before_tcp_fallback)
        return self._new_subflow(hs, join=False)

    def initial_server_subflow(self, hs: Any) -> Subflow:
        return self._new_subflow(hs, join=False)

    def join_subflow(self, act: OpenSubflow, local_id: int) -> Subflow:
        """An MP_JOIN subflow we open (§3.2, host A)."""
        assert self.peer is not None
        hs = JoinInitiator.start(self.km.key, self.peer.key, self.rng, addr_id=local_id,
                                 backup=act.backup)
        self.join_seen = True
        return self._new_subflow(hs, join=True, local_id=local_id,
                                 remote_id=act.remote.addr_id, backup=act.backup)

    def accept_join(self, syn: _MpJoin, local_addr: Any) -> Subflow | None:
        """An MP_JOIN SYN named this connection (§3.2, host B): a subflow,
        or None when the path manager refuses it (RST, MP_TCPRST reason 3)."""
        if self.pm is None or self.peer is None or self.fallen_back or self.closed:
            return None
        if not self.pm.accept_join():
            self.stats["join_rejected"] += 1
            return None
        local_id = self.pm.local_id(local_addr)
        hs = JoinResponder.from_syn(syn, self.km.key, self.peer.key, self.rng,
                                    addr_id=local_id)
        self.join_seen = True
        return self._new_subflow(hs, join=True, local_id=local_id, remote_id=syn.addr_id,
                                 backup=False)

    def subflow_config(self, base: TcpConfig | None) -> TcpConfig:
        """The TcpConfig of a subflow: no Nagle (the scheduler hands whole
        chunks), a receive buffer as large as the connection's window, and
        the coupled controller of this connection (RFC 6356) by default."""
        cfg = replace(base) if base is not None else TcpConfig()
        cfg.nodelay = True
        cfg.rcvbuf = max(cfg.rcvbuf, self.cfg.rcvbuf)
        cfg.sndbuf = max(cfg.sndbuf, self.cfg.sndbuf)
        if self.group is not None:
            cfg.congestion = self.group.subflow  # type: ignore[assignment]
            cfg.congestion_options = {}
        else:
            cfg.congestion = self.cfg.congestion
        return cfg

    def attach(self, sf: Subflow, conn: Any) -> None:
        """The host created ``sf``'s TcpConnection."""
        sf.conn = conn
        conn.upper = sf
        conn.reserved_option_bytes = 0 if self.fallen_back else DSS_OPTION_SPACE

    @property
    def alive(self) -> list[Subflow]:
        return [sf for sf in self.subflows if sf.alive]

    # ========================================================== handshake events
    def _make_receiver(self) -> None:
        assert self.peer is not None
        self.dr = DataReceiver(dsn_add(self.peer.idsn, 1), self.cfg.rcvbuf,
                               slack=self.cfg.rcvbuf // 2)
        self.ds.csum = self.csum
        for sf in self.subflows:
            sf.rx.csum = self.csum

    def _make_pm(self, sf: Subflow) -> None:
        c = sf.conn
        self.pm = PathManager(
            server=self.server, local_addrs=self.host.local_addresses(c.local[0]),
            initial_local=c.local[0], initial_remote=c.remote[0], remote_port=c.remote[1],
            limits=self.cfg.limits, peer_deny_join_id0=getattr(sf.hs, "peer_deny_join_id0",
                                                               False),
            source_for=self._source_for)

    def _source_for(self, dst: Any) -> Any:
        try:
            return self.host.select_source(dst)
        except OSError:
            return None

    def on_client_synack(self, sf: Subflow) -> None:
        hs = sf.hs
        assert isinstance(hs, MpcClient) and hs.remote is not None
        self.peer = hs.remote
        self.csum = hs.csum
        self._make_receiver()
        self.established = True
        sf.established = True
        self._make_pm(sf)
        assert self.pm is not None
        self._queue(self.pm.on_fully_established(self.now), sf)

    def on_client_fully_established(self, sf: Subflow) -> None:
        """The server's first DSS arrived: it has our third ACK, so it is
        fully established and will accept joins (it refuses them before)."""
        if self.pm is not None:
            self._queue(self.pm.on_data_acked(self.now), sf)

    def on_server_established(self, sf: Subflow) -> None:
        hs = sf.hs
        assert hs.remote is not None  # type: ignore[union-attr]
        self.peer = hs.remote  # type: ignore[union-attr]
        self.csum = hs.csum  # type: ignore[union-attr]
        self._make_receiver()
        self.established = True
        sf.established = True
        sf.conn.request_ack()  # a DSS DATA_ACK at once tells the client (§2.1)
        self._make_pm(sf)
        assert self.pm is not None
        self._queue(self.pm.on_fully_established(self.now), sf)
        self._bind_pending = True

    def on_subflow_established(self, sf: Subflow) -> None:
        self.stats["joins_established"] += 1

    def on_subflow_stale(self, sf: Subflow) -> None:
        """``stale_loss_cnt`` RTOs in a row: re-inject its data elsewhere."""
        self.stats["stale"] += 1
        if any(o is not sf and o.usable and not o.stale.stale for o in self.subflows):
            got = self.ds.reinject(sf.tx)
            self.stats["reinjected_ranges"] += len(got)

    def on_subflow_revived(self, sf: Subflow) -> None:
        self.stats["revived"] += 1

    # ============================================================ option events
    def on_data_ack(self, sf: Subflow, value: int, ack64: bool, wnd: int) -> None:
        self.ds.on_data_ack(value, ack64, wnd)

    def on_add_addr(self, sf: Subflow, opt: AddAddr) -> None:
        if self.pm is None or self.peer is None:
            return
        ep = verify_add_addr(opt, self.peer.key, self.km.key)
        if ep is None:
            self.stats["add_addr_dropped"] += 1
            return
        if opt.echo:
            self._queue(self.pm.on_add_addr_echo(ep, self.now), sf)
        else:
            self.stats["add_addr_rx"] += 1
            self._queue(self.pm.on_add_addr(ep, self.now), sf)

    def on_remove_addr(self, ids: tuple[int, ...]) -> None:
        if self.pm is not None:
            self._queue(self.pm.on_remove_addr(ids), None)

    def on_mp_fail(self, sf: Subflow, dsn: int) -> None:
        """MP_FAIL (§3.7): answer and fall back when still allowed."""
        self.stats["mp_fail_rx"] += 1
        d = decide(Situation.MP_FAIL_RECEIVED, self._ctx(sf))
        if d.action is Action.MP_FAIL_AND_FALLBACK:
            # answer with MP_FAIL + the infinite mapping on the next segment,
            # then plain TCP (kernel pm.c mptcp_pm_mp_fail_received)
            self.fail_reply = (sf, dsn)
            sf.conn.request_ack()
        elif d.action is Action.STOP_FAIL_TIMER:
            self.fail_deadline = None
            self.fall_back("mp_fail")

    def on_mp_fail_sent(self, sf: Subflow) -> None:
        """Our MP_FAIL went out on ``sf``: start the response timer once."""
        self.mp_fail_sent = True
        if self.fail_deadline is None and not self.fallen_back:
            self.fail_deadline = self.now + MP_FAIL_TIMEOUT
            self.fail_subflow = sf

    def on_infinite_mapping(self, sf: Subflow) -> None:
        self.stats["infinite_mapping_rx"] += 1
        self.fail_deadline = None  # the answer to our MP_FAIL (§3.7)
        if self.fallen_back:
            return
        d = decide(Situation.MAPPING_ERROR, replace(self._ctx(sf), map_data_len=0))
        if d.action is Action.FALLBACK:
            self.fall_back("infinite_mapping")
        else:
            self.reset_subflow(sf, d.rst_reason or 1, "infinite mapping")

    def on_fastclose(self, opt: MpFastclose) -> None:
        """MP_FASTCLOSE with our key (§3.5): reset everything, ECONNRESET."""
        if not fastclose_valid(opt, self.km.key):
            self.stats["fastclose_bad_key"] += 1
            return
        self.stats["fastclose_rx"] += 1
        self.error = errno.ECONNRESET
        for sf in self.alive:
            sf.reset_reason = None
            sf.close_reason = "fastclose"
            sf.conn.abort(self.now)

    def fall_back(self, reason: str) -> None:
        """Plain TCP from now on (§3.7): no more MPTCP options, the single
        subflow's byte stream is the data stream."""
        if self.fallen_back:
            return
        self.fallen_back = True
        self.fallback_reason = reason
        self.stats["fallback"] += 1
        if self.dr is None:
            self.dr = DataReceiver(0, self.cfg.rcvbuf)
        self.ds.csum = False
        self.established = True
        for sf in self.subflows:
            sf.rx.fall_back()
            sf.established = True
            if sf.conn is not None:
                sf.conn.reserved_option_bytes = 0

    def reset_subflow(self, sf: Subflow, reason: int, why: str) -> None:
        """RST this subflow with MP_TCPRST(reason) at the next processing."""
        if sf.reset_reason is None:
            sf.reset_reason = reason
            sf.close_reason = why
            self.stats["subflow_resets"] += 1

    def _ctx(self, sf: Subflow) -> Context:
        dr = self.dr
        return Context(mp_join=sf.join, csum_enabled=self.csum,
                       valid_csum_seen=sf.rx.valid_csum_seen, fully_established=True,
                       subflows=len(self.alive), join_seen=self.join_seen,
                       data_retransmitted=self.ds.retransmitted,
                       ooo_empty=dr.ooo_empty if dr is not None else True,
                       mp_fail_sent=self.mp_fail_sent)

    def _map_error(self, sf: Subflow, res: RxResult) -> None:
        assert self.dr is not None
        ctx = replace(self._ctx(sf), map_error=res.error)
        d = decide(Situation.MAPPING_ERROR, ctx)
        self.stats[f"map_error_{res.error.value if res.error else '?'}"] += 1
        if d.action is Action.FALLBACK:
            if res.withheld is not None:
                self.dr.on_data(*res.withheld)
            self.fall_back(f"mapping_{res.error.value if res.error else 'error'}")
            self.dr.on_result(sf.rx.consume(b"", self.dr.rcv_nxt))
        elif d.action is Action.SEND_MP_FAIL:
            if res.withheld is not None:
                self.dr.on_data(*res.withheld)
            self.mp_fail_dsn = res.error_dsn
            sf.conn.request_ack()
        else:
            self.reset_subflow(sf, d.rst_reason or 1, f"mapping error {res.error}")

    # =============================================================== PM actions
    def _queue(self, actions: list[PmAction], sf: Subflow | None) -> None:
        self._actions.extend((a, sf) for a in actions)

    # ------------------------------------------- control (RFC 6897 API, A7/A11)
    def queue_actions(self, actions: list[PmAction]) -> None:
        """Path-manager actions from outside the PM (the socket API's ADD /
        REMOVE): carried out at the next ``process``."""
        self._queue(actions, None)

    def set_scheduler(self, name: str) -> None:
        """Switch the packet scheduler now (the next chunk follows it);
        "redundant" also makes the data sender copy each chunk to every
        subflow. ValueError for an unknown name."""
        self.sched = make_scheduler(name)
        self.ds.set_redundant(name == "redundant")

    def set_backup(self, sf: Subflow, backup: bool) -> None:
        """Mark our end of ``sf`` backup (or not) and tell the peer with
        MP_PRIO (RFC 8684 §3.3.8), alone on a pure ACK of that subflow."""
        sf.backup = backup
        sf.signals.append(MpPrio(backup, None))
        sf.conn.request_ack()
        self.stats["mp_prio_tx"] += 1

    def close_subflow(self, sf: Subflow, now: float, why: str) -> None:
        """Close one subflow (TCP FIN); its unacknowledged data goes on the others."""
        self._close_subflow(sf, now, why)

    def _signal_subflow(self, prefer: Subflow | None) -> Subflow | None:
        if prefer is not None and prefer.alive and prefer.established:
            return prefer
        for sf in self.subflows:
            if sf.alive and sf.established and not sf.closing:
                return sf
        return None

    def _run_actions(self, now: float) -> None:
        while self._actions:
            act, origin = self._actions.pop(0)
            if isinstance(act, SendAddAddr):
                assert self.peer is not None
                sf = self._signal_subflow(origin)
                if sf is not None:
                    sf.signals.append(add_addr_option(act, self.km.key, self.peer.key))
                    sf.conn.request_ack()
                    self.stats["add_addr_echo_tx" if act.echo else "add_addr_tx"] += 1
            elif isinstance(act, SendRemoveAddr):
                sf = self._signal_subflow(origin)
                if sf is not None:
                    sf.signals.extend(remove_addr_options(act))
                    sf.conn.request_ack()
            elif isinstance(act, OpenSubflow):
                if self.fallen_back or self.closed or self._subflows_closing:
                    continue
                if self.host.open_subflow(self, act, now) is None:
                    self.stats["join_open_failed"] += 1
                    if self.pm is not None:
                        self.pm.on_subflow_closed(act.local.address if act.local else None,
                                                  act.remote.addr_id)
            elif isinstance(act, CloseSubflows):
                for sf in self.alive:
                    if sf.join and sf.remote_id == act.remote_id:
                        self._close_subflow(sf, now, "remove_addr")

    def _close_subflow(self, sf: Subflow, now: float, why: str) -> None:
        if sf.closing or not sf.alive:
            return
        sf.closing = True
        sf.ended_at = sf.ended_at if sf.ended_at is not None else now
        sf.close_reason = sf.close_reason or why
        if not self.ds.all_acked:
            self.ds.reinject(sf.tx)
        sf.conn.close(now)

    # ================================================================= driving
    def process(self, now: float) -> None:
        """After any event on any subflow (called by the host before it
        polls the subflows): data in, data out, actions, close sequence."""
        self.now = now
        dr = self.dr
        for sf in list(self.subflows):
            if not sf.alive:
                continue
            c = sf.conn
            if sf.reset_reason is not None and c.state is not TcpState.CLOSED:
                c.abort(now, (MpTcpRst(0, sf.reset_reason).emit(),))
            if dr is not None and c.readable:
                data = c.recv(c.readable)
                res = sf.rx.consume(data, dr.rcv_nxt)
                dr.on_result(res)
                if res.error is not None:
                    self._map_error(sf, res)
            if self.fallen_back and dr is not None and c.eof_received and dr.fin_dsn is None:
                dr.on_data_fin(dr.rcv_nxt)  # the TCP FIN stands for the DATA_FIN
            if c.iss is not None and c.state is not TcpState.SYN_SENT:
                sf.tx.on_subflow_ack((c.snd_una - c.iss) & 0xFFFFFFFF)
            if c.state is TcpState.CLOSED:
                self._subflow_closed(sf, now)
            elif (c.eof_received and not self.fallen_back and not sf.closing
                  and sf.established):
                self._close_subflow(sf, now, "peer_fin")
        if self.fallen_back:
            self._fallback_acks()
        else:
            self._data_rtx_check(now)
        if self._bind_pending:
            self._bind_pending = False
            self.host.bind_token(self)
        self._run_actions(now)
        self._pump(now)
        self._close_sequence(now)

    def after_poll(self, now: float) -> bool:
        """After the host polled the subflows: arm the DATA_FIN timer.
        True when another process/poll round is needed."""
        self.ds.fin_timer(now)
        again = any(sf.reset_reason is not None and sf.alive
                    and sf.conn.state is not TcpState.CLOSED for sf in self.subflows)
        # one signal (ADD_ADDR, REMOVE_ADDR, MP_PRIO) leaves per pure ACK: ask
        # for another while a subflow still holds some
        waiting = False
        for sf in self.subflows:
            if sf.signals and sf.alive and sf.established and sf.conn is not None \
                    and sf.conn.state in _SENDING:
                sf.conn.request_ack()
                waiting = True
        return again or bool(self._actions) or waiting

    def _rto_base(self) -> float:
        return max([0.2] + [sf.conn.rtt.rto for sf in self.alive if sf.conn.cc is not None])

    def _data_rtx_check(self, now: float) -> None:
        """Arm, reset or stop the data-level retransmission timer. Also take
        the first connection-level window from the peer's real TCP window
        (not an assumed 64 KiB: a Linux peer drops data beyond its window)."""
        ds = self.ds
        if not self._wnd_known and self.established and self.subflows:
            c = self.subflows[0].conn
            if c.cc is not None and c.snd_wnd:
                self._wnd_known = True
                if ds.snd_una == self._last_una:  # no DATA_ACK seen yet
                    ds.wnd_end = dsn_add(ds.snd_una, c.snd_wnd)
        if ds.snd_una != self._last_una:
            self._last_una = ds.snd_una
            self._rtx_backoff = 0
            self._rtx_deadline = None
        outstanding = dsn_diff(ds.snd_nxt, ds.snd_una) > 0 and not ds.fin_acked
        if not outstanding:
            self._rtx_deadline = None
        elif self._rtx_deadline is None:
            self._rtx_deadline = now + self._rto_base() * (1 << self._rtx_backoff)

    def _data_rtx(self, now: float) -> None:
        """The DATA_ACK is stuck: send the oldest unacknowledged chunk again
        on whichever subflow the scheduler picks (a peer may have dropped it
        at the data level after its subflow acknowledged it)."""
        ds = self.ds
        self._rtx_deadline = None
        if self.fallen_back or dsn_diff(ds.snd_nxt, ds.snd_una) <= 0 or ds.fin_acked:
            return
        if any(sf.conn.snd_una != sf.conn.snd_nxt and not sf.stale.stale
               for sf in self.alive if sf.conn.cc is not None):
            # a subflow still has unacknowledged data: its own loss recovery
            # explains the stuck DATA_ACK; look again later
            self._rtx_deadline = now + self._rto_base()
            return
        n = min(dsn_diff(ds.write_seq, ds.snd_una), ds.max_mapping)
        if n > 0:
            ds.requeue(ds.snd_una, dsn_add(ds.snd_una, n))
            self.stats["data_rtx"] += 1
        self._rtx_backoff = min(self._rtx_backoff + 1, 7)
        self._rtx_deadline = now + self._rto_base() * (1 << self._rtx_backoff)

    def _fallback_acks(self) -> None:
        """After fallback the TCP ACK is the DATA_ACK: the data level has
        been acknowledged up to what the subflow no longer holds."""
        live = [sf for sf in self.subflows if sf.alive] or self.subflows
        if not live:
            return
        c = live[0].conn
        unacked = max(0, seq_diff(c.write_seq, c.snd_una))
        ds = self.ds
        if ds.fin_sent:
            return
        una = dsn_add(ds.snd_nxt, -unacked)
        ds.on_data_ack(una, True)
        ds.wnd_end = dsn_add(ds.snd_una, _FALLBACK_WINDOW)

    def _pump(self, now: float) -> None:
        """Hand data to subflows (the scheduler), DATA_FIN when all is sent."""
        ds = self.ds
        if not self.established or self.closed or self.error is not None:
            return
        if self.fallen_back:
            live = [sf for sf in self.subflows if sf.alive]
            if not live:
                return
            c = live[0].conn
            while ds.pending and c.state in _SENDING and c.send_space > 0:
                got = ds.next_mapping(live[0].tx, min(c.send_space, ds.max_mapping))
                if got is None:
                    break
                c.send(got[1], now)
            if ds.fin_dsn is not None and not ds.pending and not c.fin_queued:
                c.shutdown_write(now)
            return
        by_id = {sf.id: sf for sf in self.subflows}
        for _ in range(256):
            if not ds.has_work():
                break
            states = [self._state_of(sf) for sf in self.subflows if sf.alive]
            sel = self.sched.select(states)
            progress = False
            for st in sel:
                sf = by_id[st.id]
                c = sf.conn
                mss = c.effective_mss
                room = min(st.space, c.send_space)
                if room >= mss:
                    room -= room % mss
                elif ds.pending >= mss or room <= 0:
                    continue  # wait for a whole segment's worth of window
                got = ds.next_mapping(sf.tx, min(room, (ds.max_mapping // mss) * mss or room))
                if got is None:
                    continue
                c.send(got[1], now)
                progress = True
            if not progress:
                break
        if ds.data_fin_enabled and not ds.fin_sent:
            for sf in self.subflows:
                if sf.alive and sf.established and not sf.closing:
                    sf.conn.request_ack()

    def _state_of(self, sf: Subflow) -> SubflowState:
        c = sf.conn
        usable = sf.usable
        cwnd = c.cc.cwnd if c.cc is not None else 0
        # what the window limits: the pipe (SACKed bytes are not in flight,
        # RFC 6675) plus what the subflow holds unsent
        in_flight = (c.in_flight + c.unsent) if c.cc is not None else 0
        if cwnd - in_flight < c.effective_mss and self.ds.pending >= c.effective_mss:
            in_flight = cwnd  # less than a segment of room: not a candidate now
        return SubflowState(sf.id, c.rtt.srtt, cwnd, in_flight,
                            sf.backup or sf.peer_backup, usable, sf.stale.stale)

    def _close_sequence(self, now: float) -> None:
        """RFC 8684 §3.3.3 / reference §2.4: once both DATA_FINs are
        acknowledged the connection is closed: TCP FIN on every subflow."""
        if self.fallen_back or self._subflows_closing or self.dr is None:
            return
        if self.ds.fin_acked and self.dr.fin_received:
            self._subflows_closing = True
            for sf in self.alive:
                self._close_subflow(sf, now, "mptcp_closed")

    def _subflow_closed(self, sf: Subflow, now: float) -> None:
        c = sf.conn
        sf.closed_at = now
        if sf.ended_at is None:
            sf.ended_at = now
        if sf.close_reason is None:
            if sf.peer_reset_reason is not None:
                sf.close_reason = f"reset by peer (MP_TCPRST {sf.peer_reset_reason})"
            elif c.error is not None:
                sf.close_reason = errno.errorcode.get(c.error, str(c.error))
            else:
                sf.close_reason = "closed"
        if c.cc is not None and hasattr(c.cc, "close"):
            c.cc.close()
        if not self.ds.all_acked and not self.fallen_back:
            self.ds.reinject(sf.tx)
        if sf.join and self.pm is not None:
            self.pm.on_subflow_closed(c.local[0] if not self.server else None, sf.remote_id)
        if not self.alive:
            done = self.ds.all_acked and (self.dr is not None and self.dr.fin_received)
            if self.fallen_back:
                done = c.error is None and c.fin_acked and c.eof_received
            if not done and self.error is None and not self._app_closed:
                self.error = c.error or errno.ECONNRESET
            self.closed = True

    def next_deadline(self) -> float | None:
        best = self.ds.fin_deadline
        if self._rtx_deadline is not None and (best is None or self._rtx_deadline < best):
            best = self._rtx_deadline
        if self.pm is not None:
            t = self.pm.next_deadline()
            if t is not None and (best is None or t < best):
                best = t
        if self.fail_deadline is not None and (best is None or self.fail_deadline < best):
            best = self.fail_deadline
        return best

    def on_timer(self, now: float) -> None:
        self.now = now
        if self._rtx_deadline is not None and now >= self._rtx_deadline:
            self._data_rtx(now)
        if self.fail_deadline is not None and now >= self.fail_deadline:
            self._mp_fail_timeout()
        if self.ds.fin_timer(now):
            for sf in self.alive:
                if sf.established:
                    sf.conn.request_ack()  # DATA_FIN again on every subflow
        if self.pm is not None:
            rto = max((sf.conn.rtt.rto for sf in self.alive), default=1.0)
            self.pm.set_rto(rto)
            self._queue(self.pm.on_timer(now), None)

    def _mp_fail_timeout(self) -> None:
        """No answer to our MP_FAIL within MP_FAIL_TIMEOUT: RST the subflow
        with MP_TCPRST EMIDDLEBOX (kernel mptcp_mp_fail_no_response)."""
        self.fail_deadline = None
        sf, self.fail_subflow = self.fail_subflow, None
        if self.fallen_back or sf is None or not sf.alive:
            return
        d = decide(Situation.MP_FAIL_TIMEOUT, self._ctx(sf))
        self.stats["mp_fail_timeout"] += 1
        self.reset_subflow(sf, d.rst_reason or RST_EMIDDLEBOX, "MP_FAIL: no response")

    def __repr__(self) -> str:
        return (f"MptcpConnection(token={self.km.token:08x} {self.state.value} "
                f"subflows={len(self.alive)}/{len(self.subflows)} fallback={self.fallen_back})")


_SENDING = frozenset({TcpState.ESTABLISHED, TcpState.CLOSE_WAIT})
