"""One MPTCP subflow: a ``TcpConnection`` plus its MPTCP state, and the
``upper`` hook through which the TCP engine talks to the MPTCP layer
(docs/INTERFACES.md "stack/tcp", docs/MPTCP-DESIGN.md).

The engine calls, on the subflow's ``TcpConnection``:

* ``on_options(conn, seg)`` for every acceptable received segment (before its
  ACK and text are processed): handshake steps (RFC 8684 §3.1, §3.2), then
  DSS (DATA_ACK, mapping), ADD_ADDR, REMOVE_ADDR, MP_PRIO, MP_FAIL,
  MP_FASTCLOSE -- handed to the connection;
* ``write_options(conn, seg)`` for every emitted segment: the MPTCP options
  the segment carries (one MPTCP option per segment except MP_FAIL+DSS, as
  the kernel; linux-mptcp-v1.md §1.6);
* ``segment_limit(conn, seq)``: no segment straddles two mappings (§3.3.1);
* ``receive_window(conn)``: the connection-level window (§3.3.4);
* ``next_deadline(conn)`` / ``on_timer(conn, now)`` / ``on_rto(conn, now)``:
  MPTCP timers ride on the subflow's timer; RTOs feed stale detection;
* ``signal_only(conn, seg)``: an ADD_ADDR pure ACK is not a duplicate ACK;
* ``on_reset(conn, seg)``: MP_TCPRST reason / MP_FASTCLOSE on a RST.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stack.mptcp.datarecv import SubflowReceiver
from stack.mptcp.datasend import SubflowSender
from stack.mptcp.dsn import MASK32
from stack.mptcp.handshake import (
    JoinInitiator,
    JoinResponder,
    MpcClient,
    MpcServer,
    parse_options,
)
from stack.mptcp.mapping import Mapping
from stack.mptcp.scheduler import StaleTracker
from stack.tcp.segment import ACK, FIN, RST, SYN, options_length
from stack.tcp.seq import seq_gt
from stack.wire.mptcp import (
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpPrio,
    MpTcpRst,
    MptcpSuboption,
    RemoveAddr,
)

if TYPE_CHECKING:  # pragma: no cover
    from stack.mptcp.connection import MptcpConnection
    from stack.tcp.connection import TcpConnection
    from stack.tcp.segment import TcpSegment

__all__ = ["Subflow"]

MAX_TCP_OPTIONS = 40  # RFC 9293 §3.1: data offset is at most 15 words

Handshake = MpcClient | MpcServer | JoinInitiator | JoinResponder


@dataclass(eq=False)
class Subflow:
    """A subflow of ``mp``; also the ``upper`` object of its TcpConnection."""

    mp: MptcpConnection
    id: int
    hs: Handshake
    tx: SubflowSender
    rx: SubflowReceiver
    join: bool = False
    local_id: int = 0
    remote_id: int = 0
    backup: bool = False  # our B bit (MP_JOIN / MP_PRIO)
    peer_backup: bool = False  # the peer's
    conn: Any = None  # TcpConnection, set by the host when created
    established: bool = False  # may carry data (join: after the fourth ACK)
    stale: StaleTracker = field(default_factory=StaleTracker)
    closed_at: float | None = None  # its TCP connection reached CLOSED
    ended_at: float | None = None  # it stopped carrying data: FIN/RST sent or received
    close_reason: str | None = None
    reset_reason: int | None = None  # MP_TCPRST we must send (RST pending)
    peer_reset_reason: int | None = None  # MP_TCPRST the peer sent
    signals: list[MptcpSuboption] = field(default_factory=list)  # on pure ACKs
    join_ack_deadline: float | None = None
    fourth_ack_due: bool = False
    closing: bool = False  # TCP FIN requested by the MPTCP layer
    opened_at: float = 0.0
    cc: Any = None

    # ------------------------------------------------------------ helpers
    @property
    def alive(self) -> bool:
        return self.closed_at is None

    @property
    def usable(self) -> bool:
        """May the scheduler put data on it now?"""
        c = self.conn
        if c is None or not self.alive or not self.established or self.closing:
            return False
        return c.cc is not None and c.send_space > 0 and c.state.value in (
            "ESTABLISHED", "CLOSE-WAIT")

    def _rel_rx(self, conn: TcpConnection, seq: int) -> int:
        return (seq - conn.irs) & MASK32

    def _rel_tx(self, conn: TcpConnection, seq: int) -> int:
        return (seq - conn.iss) & MASK32

    # ------------------------------------------------------- engine hooks
    def on_options(self, conn: TcpConnection, seg: TcpSegment) -> None:
        mp = self.mp
        flags = seg.flags
        if flags & SYN and not flags & ACK:
            return  # the SYN of a passive open: parsed when the subflow was made
        if mp.fallen_back:
            return
        opts = parse_options(seg.mptcp)
        if flags & SYN:  # our SYN was answered
            self._on_synack(conn, opts)
            return
        hs = self.hs
        rel = self._rel_rx(conn, seg.seq)
        plen = len(seg.payload)
        if isinstance(hs, MpcServer) and not hs.fully_established:
            m = hs.on_third_ack(opts, plen)
            if m is False:
                mp.fall_back(hs.fallback.value if hs.fallback else "third_ack")
                return
            mp.on_server_established(self)
            if isinstance(m, Mapping):
                self.rx.note(rel, plen, m)
            return
        if isinstance(hs, MpcClient) and not hs.fully_established:
            if not hs.on_segment(opts, rel == 1):
                mp.fall_back(hs.fallback.value if hs.fallback else "first_segment")
                return
            if hs.fully_established:
                mp.on_client_fully_established(self)
        elif isinstance(hs, JoinInitiator) and not hs.established:
            if not hs.on_segment(opts, rel == 1):
                mp.reset_subflow(self, 1, "join: no fourth ACK")
                return
            self.established = True
            self.join_ack_deadline = None
            mp.on_subflow_established(self)
        elif isinstance(hs, JoinResponder) and not hs.established:
            if not hs.on_ack(opts):
                mp.reset_subflow(self, 1, "join: bad third ACK")
                return
            self.established = True
            self.fourth_ack_due = True  # sent at once (linux-mptcp-v1.md §2.3 rule 6)
            conn.request_ack()
            mp.on_subflow_established(self)
            return
        if seq_gt(seg.ack, conn.snd_una) and self.stale.on_progress():
            mp.on_subflow_revived(self)
        for o in opts:
            if isinstance(o, Dss):
                if o.data_ack_len and o.data_ack is not None:
                    mp.on_data_ack(self, o.data_ack, o.data_ack_len == 8,
                                   seg.window << conn.snd_wscale)
                if o.dsn_len:
                    if o.dll == 0:
                        mp.on_infinite_mapping(self)
                        continue
                    fin = self.rx.note(rel, plen, o)
                    if fin is not None:
                        mp.dr.on_data_fin(fin.dsn, fin.dsn64)
            elif isinstance(o, MpCapable) and o.data_len is not None and mp.peer is not None:
                self.rx.note(rel, plen, Mapping.from_mpc(o, mp.peer.idsn))
            elif isinstance(o, AddAddr):
                mp.on_add_addr(self, o)
            elif isinstance(o, RemoveAddr):
                mp.on_remove_addr(o.addr_ids)
            elif isinstance(o, MpPrio):
                self.peer_backup = o.backup
            elif isinstance(o, MpFail):
                mp.on_mp_fail(self, o.dsn)
            elif isinstance(o, MpFastclose):
                mp.on_fastclose(o)

    def _on_synack(self, conn: TcpConnection, opts: list[MptcpSuboption]) -> None:
        mp = self.mp
        hs = self.hs
        if isinstance(hs, MpcClient):
            if hs.on_synack(opts):
                mp.on_client_synack(self)
            else:
                mp.fall_back(hs.fallback.value if hs.fallback else "synack")
        elif isinstance(hs, JoinInitiator):
            if hs.on_synack(opts):
                self.peer_backup = hs.peer_backup
                self.remote_id = hs.peer_addr_id or 0
                conn.request_ack()
                self.join_ack_deadline = mp.now + JoinInitiator.ack_retransmit_timeout(None)
            else:
                mp.reset_subflow(self, 1, "join: bad SYN/ACK HMAC")

    def write_options(self, conn: TcpConnection, seg: TcpSegment) -> tuple[bytes, ...]:
        return self._fit(seg, self._write_options(conn, seg))

    def _fit(self, seg: TcpSegment, opts: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """Keep the TCP options within 40 bytes (RFC 9293 §3.1). An IPv6
        ADD_ADDR with port and HMAC (30 bytes) does not fit next to
        timestamps: that pure ACK goes without timestamps, as Linux
        (add_addr_v6_port_drop_ts); whatever still does not fit is dropped and
        counted, never an exception out of the host."""
        if not opts:
            return opts
        fixed = options_length(seg, sack=False)
        need = sum((len(o) + 3) & ~3 for o in opts)
        if fixed + need <= MAX_TCP_OPTIONS:
            return opts
        if seg.ts is not None and not seg.flags & SYN:
            seg.ts = None
            self.mp.stats["ts_dropped_for_option"] += 1
            fixed -= 12
        kept: list[bytes] = []
        for o in opts:
            n = (len(o) + 3) & ~3
            if fixed + n <= MAX_TCP_OPTIONS:
                kept.append(o)
                fixed += n
            else:
                self.mp.stats["option_tx_drop"] += 1
        return tuple(kept)

    def _write_options(self, conn: TcpConnection, seg: TcpSegment) -> tuple[bytes, ...]:
        mp = self.mp
        if mp.fallen_back:
            return ()
        hs = self.hs
        flags = seg.flags
        if flags & SYN:
            opt = hs.synack_option() if flags & ACK else hs.syn_option()  # type: ignore[union-attr]
            return () if opt is None else (opt.emit(),)
        if flags & RST:
            return ()
        rel = self._rel_tx(conn, seg.seq)
        plen = len(seg.payload)
        if isinstance(hs, MpcServer) and not hs.fully_established:
            return ()  # nothing but the SYN/ACK before the third ACK
        if isinstance(hs, JoinInitiator) and not hs.established:
            if hs.peer_nonce is None:
                return ()
            return (hs.ack_option().emit(),)  # third ACK and its repeats (no data yet)
        if isinstance(hs, MpcClient):
            m = self.tx.mapping_at(rel) if plen else None
            mpc = hs.option_for(rel, m)
            if mpc is not None:
                return (mpc.emit(),)
        if mp.dr is None:
            return ()
        if mp.fail_reply is not None and mp.fail_reply[0] is self:
            # RFC 8684 §3.7: MP_FAIL back and the infinite mapping (DLL 0)
            # starting at the failed DSN, then fall back to TCP
            dsn = mp.fail_reply[1]
            mp.fail_reply = None
            # 32-bit DSN and no DATA_ACK: with MP_FAIL and timestamps that
            # is exactly the 40 option bytes
            inf = Dss(dsn=dsn & MASK32, dsn_len=4, ssn=rel & MASK32, dll=0,
                      checksum=0 if mp.csum else None)
            mp.stats["infinite_mapping_tx"] += 1
            mp.fall_back("mp_fail")
            return (MpFail(dsn).emit(), inf.emit())
        if self.signals and not plen and not flags & FIN:
            # ADD_ADDR / echo / REMOVE_ADDR / MP_PRIO alone on a pure ACK, all
            # other MPTCP options dropped, as the kernel (§1.6)
            return (self.signals.pop(0).emit(),)
        d = mp.ds.dss_for(self.tx, rel, plen, mp.dr.data_ack, mp.dr.use_64bit_ack)
        out: list[bytes] = []
        if d is not None:
            out.append(d.emit())
        if mp.mp_fail_dsn is not None and not plen:
            out.append(MpFail(mp.mp_fail_dsn).emit())
            mp.on_mp_fail_sent(self)
        self.fourth_ack_due = False
        return tuple(out)

    def segment_limit(self, conn: TcpConnection, seq: int) -> int:
        if self.mp.fallen_back:
            return 0
        return self.tx.room(self._rel_tx(conn, seq))

    def receive_window(self, conn: TcpConnection) -> int:
        dr = self.mp.dr
        return conn.rcvbuf.free if dr is None else dr.window()

    def signal_only(self, conn: TcpConnection, seg: TcpSegment) -> bool:
        return any(len(o) > 2 and (o[2] >> 4) in (3, 4, 5) for o in seg.mptcp)

    def next_deadline(self, conn: TcpConnection) -> float | None:
        best = self.mp.next_deadline()
        if self.join_ack_deadline is not None and (best is None or self.join_ack_deadline < best):
            best = self.join_ack_deadline
        return best

    def on_timer(self, conn: TcpConnection, now: float) -> None:
        if self.join_ack_deadline is not None and now >= self.join_ack_deadline:
            # protocol.c schedule_3rdack_retransmission: resend the MPJ ACK
            conn.request_ack()
            self.join_ack_deadline = now + JoinInitiator.ack_retransmit_timeout(conn.rtt.srtt)
        self.mp.on_timer(now)

    def on_rto(self, conn: TcpConnection, now: float) -> None:
        hs = self.hs
        if conn.state.value == "SYN-SENT":
            if isinstance(hs, MpcClient) and not self.mp.fallen_back:
                hs.on_syn_timeout()  # after N MPC SYNs, retry without MP_CAPABLE
            return
        if self.stale.on_rto():
            self.mp.on_subflow_stale(self)

    def on_reset(self, conn: TcpConnection, seg: TcpSegment) -> None:
        for o in parse_options(seg.mptcp):
            if isinstance(o, MpTcpRst):
                self.peer_reset_reason = o.reason
            elif isinstance(o, MpFastclose):
                self.mp.on_fastclose(o)

    def record(self) -> dict[str, Any]:
        """The per-subflow record of ``MptcpConnection.mptcp_info``."""
        c = self.conn
        st = c.stats if c is not None else None
        local = remote = ""
        if c is not None:
            local = _fmt(c.local)
            remote = _fmt(c.remote)
        return {
            "id": self.id, "local": local, "remote": remote, "join": self.join,
            "local_id": self.local_id, "remote_id": self.remote_id,
            "backup": self.backup or self.peer_backup,
            "established": self.established,
            "bytes_sent": st.bytes_sent if st else 0,
            "bytes_received": st.bytes_received if st else 0,
            "opened_at": self.opened_at, "closed_at": self.ended_at,
            "close_reason": self.close_reason, "stale": self.stale.stale,
            "peer_reset_reason": self.peer_reset_reason,
        }


def _fmt(ep: tuple[Any, int]) -> str:
    addr = str(ep[0])
    return f"[{addr}]:{ep[1]}" if ":" in addr else f"{addr}:{ep[1]}"
