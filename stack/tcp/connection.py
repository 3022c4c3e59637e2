"""One TCP connection (one MPTCP subflow), sans-IO (RFC 9293).

Everything enters as a call with the current time ``now`` (seconds, float) and
leaves as a return value: the host feeds received segments to
:meth:`TcpConnection.on_segment`, calls :meth:`on_timer` when
:meth:`next_deadline` has passed and sends what :meth:`poll_transmit` returns.
No clock, thread or socket is touched here.

The class is split by concern:

* this module: the transmission control block, opening, the application calls
  (send/recv/shutdown/close/abort), timers and deadlines;
* :mod:`stack.tcp.receive`: segment arrival (RFC 9293 §3.10.7, RFC 5961,
  RFC 7323 PAWS, ACK processing, loss detection, reassembly);
* :mod:`stack.tcp.transmit`: what to send now (RFC 9293 §3.8.6 windows, Nagle,
  RFC 6675/6582 loss recovery, delayed ACKs, probes).
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Any

from .config import TcpConfig
from .options import MAX_WSCALE, SackGenerator, choose_wscale, ts_offset_from_iss, ts_ticks
from .receive import ReceiveMixin
from .recvbuf import ReceiveBuffer
from .rtt import RttEstimator
from .segment import ACK, RST, TcpSegment
from .sendbuf import SendBuffer
from .seq import MASK32, seq_add, seq_diff, seq_gt
from .state import SENDING, TcpState
from .stats import TcpStats
from .transmit import TransmitMixin

__all__ = ["TcpConnection", "TcpConfig", "TcpState"]

Endpoint = tuple[Any, int]  # (address, port)


def _default_peer_mss(local: Endpoint) -> int:
    """RFC 9293 §3.7.1 / RFC 1122: without an MSS option assume 536 (IPv4) or
    1220 (IPv6, RFC 8200 minimum MTU 1280 less headers)."""
    addr = local[0]
    if isinstance(addr, ipaddress.IPv6Address) or (isinstance(addr, bytes) and len(addr) == 16):
        return 1220
    if isinstance(addr, str) and ":" in addr:
        return 1220
    return 536


class TcpConnection(ReceiveMixin, TransmitMixin):
    """The state of one connection. Build with :meth:`connect` (active open)
    or :meth:`accept_syn` (passive open)."""

    def __init__(
        self,
        config: TcpConfig,
        local: Endpoint,
        remote: Endpoint,
        iss: int,
        now: float,
        *,
        ts_offset: int | None = None,
        upper: Any = None,
    ) -> None:
        self.config = config
        self.local = local
        self.remote = remote
        self.state = TcpState.CLOSED
        self.error: int | None = None
        # MPTCP hook (docs/INTERFACES.md): on_options / write_options.
        self.upper = upper
        # Option bytes the upper layer adds to every data segment (e.g. DSS);
        # subtracted from the effective MSS.
        self.reserved_option_bytes = 0
        # Optional host-wide RFC 5961 §7 limiter: callable(now) -> bool.
        self.challenge_ack_limiter: Any = None
        self._active_open = False
        self._app_closed = False

        # --- send sequence space (RFC 9293 §3.3.1)
        iss &= MASK32
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss  # highest sequence number sent + 1 (never moves back)
        self.snd_wnd = 0
        self.max_snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = iss
        self.snd_wscale = 0  # peer's shift (applied to its window field)
        self.sndbuf = SendBuffer(config.sndbuf, seq_add(iss, 1))
        self.fin_queued = False
        self.fin_seq = 0  # sequence number of our FIN once queued
        # --- receive sequence space
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # right edge of the window last advertised
        self.rcv_wscale = choose_wscale(config.rcvbuf) if config.window_scaling else 0
        self.rcvbuf = ReceiveBuffer(config.rcvbuf)
        self.fin_received = False
        self._ooo_fin: int | None = None  # sequence number of a FIN beyond a hole
        # --- negotiated options
        self.send_mss = config.mss
        self.ts_enabled = False
        self.ts_offset = ts_offset_from_iss(iss) if ts_offset is None else ts_offset & MASK32
        self.ts_recent = 0
        self.ts_recent_time = now
        self.last_ack_sent = 0
        self.sack_enabled = False
        self._wscale_ok = False
        self._sackgen = SackGenerator()
        self._rcv_mss = 536  # estimate of the peer's segment size (delayed ACKs)
        # --- RTT, congestion, loss recovery
        self.rtt = RttEstimator(
            initial_rto=config.initial_rto, min_rto=config.min_rto, max_rto=config.max_rto
        )
        self.cc: Any = None  # created once the MSS is known (ESTABLISHED)
        self.scoreboard: Any = None
        self._rtt_seq: int | None = None  # timed segment (no timestamps), Karn
        self._rtt_time = 0.0
        self._syn_retransmitted = False
        self.dupacks = 0
        self.in_recovery = False  # fast recovery (RFC 6675 / RFC 6582)
        self.rto_recovery = False  # retransmitting after a timeout
        self.recover = iss  # RecoveryPoint
        self._recover_valid = False
        self.high_rxt = iss  # one past the highest retransmitted byte
        self._fast_rtx = False  # retransmit SND.UNA now (entering / partial ACK)
        self._rescue_rxt: int | None = None  # RFC 6675 RescueRxt
        # --- timers: absolute deadlines or None
        self._t_rtx: float | None = None
        self._t_delack: float | None = None
        self._t_persist: float | None = None
        self._t_close: float | None = None  # TIME-WAIT / orphaned FIN-WAIT-2
        self._rtx_count = 0
        self._persist_backoff = 0
        self._ka_probes = 0
        self._ka_last = now  # last segment received or keepalive probe sent
        self._last_rx = now  # last acceptable segment
        self._last_send = now
        # --- output requests
        self._send_syn = False
        self._ack_now = False
        self._unacked_rx = 0
        self._probe = False  # zero-window probe (persist timer fired)
        self._ka_probe = False
        self._rst_pending: TcpSegment | None = None
        self._chal_start = -1e18
        self._chal_count = 0
        self._stats = TcpStats()

    # ------------------------------------------------------------------ opens
    @classmethod
    def connect(
        cls,
        config: TcpConfig,
        local: Endpoint,
        remote: Endpoint,
        iss: int,
        now: float,
        *,
        ts_offset: int | None = None,
        upper: Any = None,
    ) -> TcpConnection:
        """Active open (RFC 9293 §3.10.1): SYN-SENT, the SYN leaves on the
        next :meth:`poll_transmit`."""
        conn = cls(config, local, remote, iss, now, ts_offset=ts_offset, upper=upper)
        conn._active_open = True
        conn.state = TcpState.SYN_SENT
        conn.snd_nxt = conn.iss
        conn._send_syn = True
        return conn

    @classmethod
    def accept_syn(
        cls,
        config: TcpConfig,
        local: Endpoint,
        remote: Endpoint,
        syn: TcpSegment,
        iss: int,
        now: float,
        *,
        ts_offset: int | None = None,
        upper: Any = None,
    ) -> TcpConnection:
        """Passive open from a listener's SYN (RFC 9293 §3.10.7.2): state
        SYN-RECEIVED, the SYN-ACK leaves on the next :meth:`poll_transmit`."""
        conn = cls(config, local, remote, iss, now, ts_offset=ts_offset, upper=upper)
        conn.state = TcpState.SYN_RECEIVED
        conn._take_syn(syn, now)
        conn.snd_wnd = syn.window  # RFC 7323 §2.2: never scaled in a SYN
        conn.max_snd_wnd = conn.snd_wnd
        conn.snd_wl1 = syn.seq
        conn._send_syn = True
        if upper is not None:
            upper.on_options(conn, syn)
        return conn

    def _take_syn(self, syn: TcpSegment, now: float) -> None:
        """Record the peer's ISN and negotiate options from its SYN (or
        SYN-ACK): RFC 9293 §3.7.1 MSS, RFC 7323 §2.2/§3.2, RFC 2018 §2."""
        cfg = self.config
        self.irs = syn.seq
        self.rcv_nxt = seq_add(syn.seq, 1)
        self.rcv_adv = seq_add(self.rcv_nxt, min(cfg.rcvbuf, 0xFFFF))
        peer_mss = syn.mss if syn.mss is not None and syn.mss > 0 else _default_peer_mss(
            self.local
        )
        self.send_mss = max(64, min(cfg.mss, peer_mss))
        self._wscale_ok = cfg.window_scaling and syn.wscale is not None
        if self._wscale_ok:
            assert syn.wscale is not None
            self.snd_wscale = min(syn.wscale, MAX_WSCALE)
        else:
            self.snd_wscale = 0
            self.rcv_wscale = 0
        self.sack_enabled = cfg.sack and syn.sack_permitted
        self.ts_enabled = cfg.timestamps and syn.ts is not None
        if self.ts_enabled and syn.ts is not None:
            self.ts_recent = syn.ts[0]
            self.ts_recent_time = now
        self._rcv_mss = max(536, min(cfg.mss, peer_mss) - (12 if self.ts_enabled else 0))

    # ------------------------------------------------------------ properties
    @property
    def effective_mss(self) -> int:
        """Payload bytes per wire packet: MSS less the option bytes every
        segment carries (RFC 9293 §3.7.1 Eff.snd.MSS; timestamps take 12)."""
        opt = (12 if self.ts_enabled else 0) + self.reserved_option_bytes
        return max(1, self.send_mss - opt)

    @property
    def readable(self) -> int:
        return self.rcvbuf.readable

    @property
    def send_space(self) -> int:
        if self.fin_queued or self.state not in SENDING:
            return 0
        return self.sndbuf.space

    @property
    def write_seq(self) -> int:
        """Sequence number the next byte given to :meth:`send` will get."""
        return self.sndbuf.end

    @property
    def read_seq(self) -> int:
        """Sequence number of the next byte :meth:`recv` will return."""
        return seq_add(self.rcv_nxt, -(self.rcvbuf.readable + (1 if self.fin_received else 0)))

    @property
    def eof_received(self) -> bool:
        return self.fin_received

    @property
    def fin_acked(self) -> bool:
        return self.fin_queued and seq_gt(self.snd_una, self.fin_seq)

    @property
    def all_acked(self) -> bool:
        """Every byte queued (and our FIN, once queued) is acknowledged."""
        if self.state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            return len(self.sndbuf) == 0 and not self.fin_queued
        return (
            len(self.sndbuf) == 0
            and self.snd_una == self.snd_nxt
            and (not self.fin_queued or self.fin_acked)
        )

    @property
    def in_flight(self) -> int:
        """Bytes in the network: RFC 6675 pipe during SACK recovery, else
        outstanding less SACKed (what the congestion window limits)."""
        return self._pipe()

    @property
    def unsent(self) -> int:
        """Queued bytes not sent yet."""
        return max(0, seq_diff(self.sndbuf.end, self.snd_nxt))

    @property
    def _upper_timers(self) -> bool:
        return self.upper is not None and hasattr(self.upper, "next_deadline")

    @property
    def stats(self) -> TcpStats:
        s = self._stats
        s.srtt = self.rtt.srtt
        s.rttvar = self.rtt.rttvar
        s.rto = self.rtt.rto
        s.cwnd = self.cc.cwnd if self.cc is not None else 0
        s.ssthresh = self.cc.ssthresh if self.cc is not None else 0
        s.state = self.state.value
        return s

    def _tsval(self, now: float) -> int:
        return ts_ticks(now, self.ts_offset)

    # ----------------------------------------------------------- application
    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """Queue bytes (RFC 9293 §3.10.2); returns how many were taken (0
        when the send buffer is full). Raises OSError after shutdown/close
        (EPIPE) or a connection error."""
        if self.error is not None:
            raise OSError(self.error, errno.errorcode.get(self.error, "error"))
        if self.fin_queued or self.state not in SENDING:
            raise OSError(errno.EPIPE, "connection is closing for sending")
        return self.sndbuf.write(data)

    def recv(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` in-order bytes; b"" when none are ready (check
        :attr:`readable` and :attr:`eof_received`)."""
        data = self.rcvbuf.read(max_bytes)
        if data:
            self._after_read()
        return data

    def recv_into(self, buf: bytearray | memoryview) -> int:
        n = self.rcvbuf.read_into(buf)
        if n:
            self._after_read()
        return n

    def shutdown_write(self, now: float) -> None:
        """Half-close (RFC 9293 §3.10.4 CLOSE for the sending direction): the
        FIN follows the queued data; receiving goes on."""
        if self.fin_queued or self.state in (TcpState.CLOSED, TcpState.LISTEN):
            return
        self.fin_queued = True
        self.fin_seq = self.sndbuf.end
        self._enter_fin_state()

    def _enter_fin_state(self) -> None:
        if not self.fin_queued:
            return
        if self.state is TcpState.ESTABLISHED:
            self.state = TcpState.FIN_WAIT_1
        elif self.state is TcpState.CLOSE_WAIT:
            self.state = TcpState.LAST_ACK
        # SYN-SENT / SYN-RECEIVED: queued until ESTABLISHED (RFC 9293 §3.10.4).

    def close(self, now: float) -> None:
        """Full close (RFC 9293 §3.10.4). Unread received data makes it an
        abort with RST (RFC 2525 §2.17, as Linux does)."""
        if self.state in (TcpState.CLOSED, TcpState.LISTEN, TcpState.SYN_SENT):
            self._to_closed()
            return
        if self.rcvbuf.readable:
            self.abort(now)
            return
        self._app_closed = True
        self.shutdown_write(now)
        if self.state is TcpState.FIN_WAIT_2:
            self._t_close = now + self.config.time_wait

    def request_ack(self) -> None:
        """Send a pure ACK on the next poll (the upper layer has something to
        say in its options: MPTCP's fourth ACK, ADD_ADDR, DATA_FIN, ...)."""
        if self.state not in (TcpState.CLOSED, TcpState.LISTEN, TcpState.SYN_SENT):
            self._ack_now = True

    def abort(self, now: float, mptcp: tuple[bytes, ...] = ()) -> None:
        """ABORT (RFC 9293 §3.10.5): RST to the peer in the synchronized
        states, then CLOSED. ``mptcp``: raw MPTCP options for the RST
        (MP_TCPRST, MP_FASTCLOSE; RFC 8684 §3.5, §3.6)."""
        if self.state in (
            TcpState.SYN_RECEIVED,
            TcpState.ESTABLISHED,
            TcpState.FIN_WAIT_1,
            TcpState.FIN_WAIT_2,
            TcpState.CLOSE_WAIT,
        ):
            self._rst_pending = TcpSegment(
                self.local[1], self.remote[1], self.snd_nxt, self.rcv_nxt, RST | ACK, 0,
                mptcp=tuple(mptcp),
            )
        self._to_closed()

    # ----------------------------------------------------------------- timers
    def next_deadline(self) -> float | None:
        best: float | None = None
        for t in (
            self._t_rtx,
            self._t_delack,
            self._t_persist,
            self._t_close,
            self._keepalive_deadline(),
            self.upper.next_deadline(self) if self._upper_timers else None,
        ):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def _keepalive_deadline(self) -> float | None:
        cfg = self.config
        if not cfg.keepalive or self.state not in _KEEPALIVE_STATES:
            return None
        if self._ka_probes == 0:
            return self._ka_last + cfg.keepalive_idle
        return self._ka_last + cfg.keepalive_interval

    def on_timer(self, now: float) -> None:
        """Run every timer whose deadline is at or before ``now``."""
        if self._t_close is not None and now >= self._t_close:
            # RFC 9293 §3.10.8: TIME-WAIT timeout (or the FIN-WAIT-2 orphan limit).
            self._to_closed()
            return
        if self._upper_timers:
            self.upper.on_timer(self, now)  # MPTCP timers ride on their subflow
            if self.state is TcpState.CLOSED:
                return
        if self._t_rtx is not None and now >= self._t_rtx:
            self._t_rtx = None
            self._on_rto(now)
            if self.state is TcpState.CLOSED:
                return
        if self._t_delack is not None and now >= self._t_delack:
            self._t_delack = None
            self._ack_now = True
        if self._t_persist is not None and now >= self._t_persist:
            self._t_persist = None
            self._on_persist(now)
        ka = self._keepalive_deadline()
        if ka is not None and now >= ka:
            self._on_keepalive(now)

    def _on_rto(self, now: float) -> None:
        """RFC 6298 §5.4-5.7 retransmission timeout."""
        synchronizing = self.state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED)
        limit = self.config.syn_retries if synchronizing else self.config.max_retries
        if synchronizing or not (self.snd_wnd == 0 and now - self._last_rx < self.config.max_rto):
            # A peer that keeps answering with a zero window is not dead
            # (RFC 9293 §3.8.6.1); only count retries otherwise (as Linux).
            self._rtx_count += 1
        if self._rtx_count > limit:
            self._fail(errno.ETIMEDOUT)
            return
        self._stats.timeouts += 1
        if self.upper is not None and hasattr(self.upper, "on_rto"):
            self.upper.on_rto(self, now)  # MPTCP: stale subflow / MPC SYN fallback
        self.rtt.on_timeout()  # §5.5 back off
        self._rtt_seq = None  # Karn: no sample from a retransmitted segment
        self._t_rtx = now + self.rtt.rto
        if synchronizing:
            self._send_syn = True
            self._syn_retransmitted = True
            return
        if self.snd_una == self.snd_nxt or self.cc is None:
            self._t_rtx = None
            return
        # RFC 5681 §3.1 eq. 4 (the controller), RFC 6582 §4 / RFC 6675 §5.1:
        # RecoveryPoint = HighData, leave fast recovery, retransmit from SND.UNA.
        self.cc.on_rto(now, seq_diff(self.snd_nxt, self.snd_una))  # FlightSize
        self.in_recovery = False
        self.rto_recovery = True
        self.dupacks = 0
        self.recover = self.snd_nxt
        self._recover_valid = True
        self.high_rxt = self.snd_una
        self._fast_rtx = False

    def _on_persist(self, now: float) -> None:
        """RFC 9293 §3.8.6.1: the persist timer fired: probe the window."""
        self._probe = True
        self._persist_backoff += 1

    def _on_keepalive(self, now: float) -> None:
        """RFC 9293 §3.8.4 / RFC 1122 §4.2.3.6: after ``keepalive_idle`` of
        silence probe ``keepalive_count`` times, ``keepalive_interval`` apart."""
        cfg = self.config
        if self.snd_una != self.snd_nxt:
            self._ka_last = now  # data in flight: the RTO is watching
            return
        if self._ka_probes >= cfg.keepalive_count:
            self._fail(errno.ETIMEDOUT)
            return
        self._ka_probes += 1
        self._ka_last = now
        self._ka_probe = True

    # ------------------------------------------------------------ transitions
    def _fail(self, err: int) -> None:
        self.error = err
        self.sndbuf.release(self.sndbuf.end)
        self._to_closed()

    def _to_closed(self) -> None:
        self.state = TcpState.CLOSED
        self._t_rtx = self._t_delack = self._t_persist = self._t_close = None
        self._send_syn = self._ack_now = self._probe = self._ka_probe = False
        self._fast_rtx = False

    def _enter_time_wait(self, now: float) -> None:
        """RFC 9293 §3.10.7.4: TIME-WAIT for 2*MSL."""
        self.state = TcpState.TIME_WAIT
        self._t_rtx = self._t_persist = None
        self._t_close = now + self.config.time_wait

    def __repr__(self) -> str:
        return (
            f"TcpConnection({self.local}->{self.remote} {self.state.value} "
            f"una={self.snd_una} nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt} "
            f"wnd={self.snd_wnd} err={self.error})"
        )


_KEEPALIVE_STATES = frozenset(
    {TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.FIN_WAIT_2}
)
