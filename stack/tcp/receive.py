"""Segment arrival for :class:`stack.tcp.connection.TcpConnection`
(RFC 9293 §3.10.7 "SEGMENT ARRIVES"), with RFC 5961 (blind in-window attacks),
RFC 7323 (PAWS, TS.Recent), RFC 2018/6675 (SACK scoreboard), RFC 5681 and
RFC 6582 (duplicate ACKs, fast retransmit) and RFC 6298 (RTT samples, timer
restart).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .congestion import make_congestion
from .options import PAWS_IDLE_LIMIT, ts_older
from .sack import Scoreboard
from .segment import ACK, FIN, RST, SYN, TcpSegment
from .seq import MASK32, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from .state import TcpState

if TYPE_CHECKING:  # pragma: no cover
    from .connection import TcpConnection

__all__ = ["ReceiveMixin"]

S = TcpState
_DUP_THRESH = 3
# RFC 9293 §3.10.7.4 seventh step: states that accept segment text.
_TEXT_STATES = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})


class ReceiveMixin:
    """Input half of the connection (see the module docstring)."""

    # ---------------------------------------------------------------- entry
    def on_segment(self: TcpConnection, seg: TcpSegment, now: float) -> None:
        """Process one received segment (already demultiplexed to us)."""
        self._stats.segments_received += 1
        state = self.state
        if state is S.CLOSED or state is S.LISTEN:
            self._stats.dropped += 1
            return
        if state is S.SYN_SENT:
            self._on_segment_syn_sent(seg, now)
            return
        flags = seg.flags
        # SYN-RECEIVED: the peer retransmitted its SYN: repeat our SYN-ACK.
        if state is S.SYN_RECEIVED and flags & SYN and not flags & (ACK | RST):
            if seg.seq == self.irs:
                self._send_syn = True
            else:
                self._challenge_ack(now)
            return
        # Simultaneous open (RFC 9293 §3.5 figure 8): a SYN-ACK in
        # SYN-RECEIVED that acknowledges our SYN completes the handshake.
        if (
            state is S.SYN_RECEIVED
            and flags & SYN
            and flags & ACK
            and not flags & RST
            and seg.seq == self.irs
            and seg.ack == self.snd_nxt
        ):
            self._simultaneous_synack(seg, now)
            return

        # RFC 7323 §5.3 R1: PAWS.
        if self.ts_enabled and seg.ts is not None and not flags & RST and self._paws_reject(
            seg, now
        ):
            self._stats.paws_drops += 1
            self._ack_now = True
            return
        # RFC 9293 §3.10.7.4 first check: sequence number acceptability.
        if not self._acceptable(seg):
            self._stats.out_of_window += 1
            if not flags & RST:
                # A retransmission that ends at or past the last ACK we sent (that
                # ACK was lost) refreshes TS.Recent (RFC 7323 §4.3 R3), as Linux's
                # tcp_sequence() accepts end_seq >= rcv_wup: the duplicate ACK then
                # echoes its TSval and the peer's RTT sample is not inflated by its
                # whole retransmission timeout.
                if seg.seg_len and seq_ge(seq_add(seg.seq, seg.seg_len), self.last_ack_sent):
                    self._update_ts_recent(seg, now)
                self._ack_now = True
                if state is S.TIME_WAIT and flags & FIN:
                    self._t_close = now + self.config.time_wait  # re-ACK, restart 2MSL
            return
        # Second check: RST (RFC 5961 §3.2).
        if flags & RST:
            if seg.seq == self.rcv_nxt:
                if seg.mptcp and hasattr(self.upper, "on_reset"):
                    self.upper.on_reset(self, seg)  # MP_TCPRST / MP_FASTCLOSE
                self._on_reset()
            else:
                self._challenge_ack(now)
            return
        # Fourth check: SYN in a synchronized state (RFC 5961 §4.2).
        if flags & SYN:
            self._challenge_ack(now)
            return
        # Fifth check: the ACK field.
        if not flags & ACK:
            self._stats.dropped += 1
            return
        self._ka_last = self._last_rx = now
        self._ka_probes = 0
        if state is S.SYN_RECEIVED:
            if not (seq_lt(self.snd_una, seg.ack) and seq_le(seg.ack, self.snd_nxt)):
                self._queue_rst(seg.ack)
                return
            self._established(now)
            self.snd_wnd = seg.window << self.snd_wscale
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
        elif seq_gt(seg.ack, self.snd_nxt) or seq_lt(
            seg.ack, seq_add(self.snd_una, -self.max_snd_wnd)
        ):
            # RFC 5961 §5.2 / RFC 9293: ACK of something not sent, or too old.
            self._stats.bad_acks += 1
            self._challenge_ack(now)
            return
        self._update_ts_recent(seg, now)
        if self.upper is not None:
            self.upper.on_options(self, seg)
        self._process_ack(seg, now)
        if self.state is S.CLOSED:
            return
        # Seventh and eighth: segment text and FIN.
        self._process_text(seg, seg.seq, now)

    # ------------------------------------------------------------- SYN-SENT
    def _on_segment_syn_sent(self: TcpConnection, seg: TcpSegment, now: float) -> None:
        """RFC 9293 §3.10.7.3."""
        flags = seg.flags
        if flags & ACK and (seq_le(seg.ack, self.iss) or seq_gt(seg.ack, self.snd_nxt)):
            if not flags & RST:
                self._queue_rst(seg.ack)
            self._stats.dropped += 1
            return
        if flags & RST:
            if flags & ACK:  # acceptable ACK (checked above): refused
                if seg.mptcp and hasattr(self.upper, "on_reset"):
                    self.upper.on_reset(self, seg)  # e.g. MP_TCPRST on a refused MP_JOIN
                self._fail(errno.ECONNREFUSED)
            else:
                self._stats.dropped += 1
            return
        if not flags & SYN:
            self._stats.dropped += 1
            return
        self._take_syn(seg, now)
        self._ka_last = now
        if flags & ACK:
            self.snd_una = seg.ack
            self.snd_wnd = seg.window  # not scaled in a SYN (RFC 7323 §2.2)
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
            self._syn_rtt_sample(seg, now)
            self._established(now)
            if self.upper is not None:
                self.upper.on_options(self, seg)
            self._ack_now = True
            self._process_text(seg, seq_add(seg.seq, 1), now)
        else:
            # Simultaneous open: SYN-RECEIVED, SYN-ACK with our same ISS.
            self.state = S.SYN_RECEIVED
            self.snd_wnd = seg.window
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1 = seg.seq
            self._send_syn = True
            if self.upper is not None:
                self.upper.on_options(self, seg)

    def _simultaneous_synack(self: TcpConnection, seg: TcpSegment, now: float) -> None:
        self.snd_una = seg.ack
        self.snd_wnd = seg.window
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
        if self.ts_enabled and seg.ts is not None:
            self.ts_recent = seg.ts[0]
        self._syn_rtt_sample(seg, now)
        self._established(now)
        if self.upper is not None:
            self.upper.on_options(self, seg)
        self._ack_now = True

    def _syn_rtt_sample(self: TcpConnection, seg: TcpSegment, now: float) -> None:
        self._t_rtx = None
        self._rtx_count = 0
        if self.ts_enabled and seg.ts is not None and seg.ts[1]:
            self._rtt_from_tsecr(seg.ts[1], now)
        elif not self._syn_retransmitted and self._rtt_seq is not None:
            self._rtt_sample(max(0.0, now - self._rtt_time), now)
        self._rtt_seq = None
        if self._syn_retransmitted:
            self.rtt.on_handshake_timeout_recovered()  # RFC 6298 §5.7

    def _established(self: TcpConnection, now: float) -> None:
        """Both SYNs acknowledged: create the controller and scoreboard for
        the now known effective MSS, apply a queued FIN."""
        self.state = S.ESTABLISHED
        self._t_rtx = None
        self._rtx_count = 0
        mss = self.effective_mss
        self.cc = make_congestion(self.config.congestion, mss, **self.config.congestion_options)
        if self.sack_enabled:
            self.scoreboard = Scoreboard(mss, self.snd_una)
        self.recover = self.snd_una
        self.high_rxt = self.snd_una
        self._last_send = now
        self._enter_fin_state()

    # ------------------------------------------------------------ checks
    def _rcv_wnd(self: TcpConnection) -> int:
        return max(0, seq_diff(self.rcv_adv, self.rcv_nxt))

    def _acceptable(self: TcpConnection, seg: TcpSegment) -> bool:
        """RFC 9293 §3.10.7.4 table of the four acceptability cases."""
        seg_len = seg.seg_len
        wnd = self._rcv_wnd()
        rel = seq_diff(seg.seq, self.rcv_nxt)
        if seg_len == 0:
            return rel == 0 if wnd == 0 else 0 <= rel < wnd
        if wnd == 0:
            return False
        end = rel + seg_len - 1
        return (0 <= rel < wnd) or (0 <= end < wnd)

    def _paws_reject(self: TcpConnection, seg: TcpSegment, now: float) -> bool:
        """RFC 7323 §5.3 R1 with the §5.5 rule: a TS.Recent idle for more
        than 24 days is no longer valid."""
        assert seg.ts is not None
        if now - self.ts_recent_time > PAWS_IDLE_LIMIT:
            self.ts_recent = seg.ts[0]
            self.ts_recent_time = now
            return False
        return ts_older(seg.ts[0], self.ts_recent)

    def _update_ts_recent(self: TcpConnection, seg: TcpSegment, now: float) -> None:
        """RFC 7323 §4.3 (2): SEG.TSval >= TS.Recent and SEG.SEQ <= Last.ACK.sent."""
        if self.ts_enabled and seg.ts is not None:
            if not ts_older(seg.ts[0], self.ts_recent) and seq_le(seg.seq, self.last_ack_sent):
                self.ts_recent = seg.ts[0]
                self.ts_recent_time = now

    def _challenge_ack(self: TcpConnection, now: float) -> None:
        """RFC 5961 §3.2/§4.2/§5.2 challenge ACK, rate limited (§7)."""
        limiter = self.challenge_ack_limiter
        if limiter is not None:
            allowed = bool(limiter(now))
        else:
            if now - self._chal_start >= 1.0:
                self._chal_start = now
                self._chal_count = 0
            allowed = self._chal_count < self.config.challenge_ack_limit
            if allowed:
                self._chal_count += 1
        if allowed:
            self._stats.challenge_acks += 1
            self._ack_now = True
        else:
            self._stats.challenge_acks_suppressed += 1

    def _queue_rst(self: TcpConnection, seq: int) -> None:
        """RFC 9293 §3.10.7.3/4: <SEQ=SEG.ACK><CTL=RST> for an unacceptable ACK."""
        self._rst_pending = TcpSegment(self.local[1], self.remote[1], seq & MASK32, 0, RST, 0)

    def _on_reset(self: TcpConnection) -> None:
        """An acceptable RST (RFC 9293 §3.10.7.4 second check)."""
        state = self.state
        if state is S.SYN_RECEIVED:
            err: int | None = errno.ECONNREFUSED if self._active_open else errno.ECONNRESET
        elif state in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT):
            err = errno.ECONNRESET
        else:  # CLOSING, LAST-ACK, TIME-WAIT
            err = None
        self.rcvbuf.clear()
        self.sndbuf.release(self.sndbuf.end)
        if err is not None:
            self.error = err
        self._to_closed()

    # ------------------------------------------------------------- ACKs
    def _process_ack(self: TcpConnection, seg: TcpSegment, now: float) -> None:
        """RFC 9293 §3.10.7.4 fifth check for the synchronized states."""
        ack = seg.ack
        acked = seq_diff(ack, self.snd_una)
        # Send window update (RFC 9293 §3.10.7.4: SND.WL1/SND.WL2 rule).
        window_changed = False
        if acked >= 0 and (
            seq_lt(self.snd_wl1, seg.seq)
            or (self.snd_wl1 == seg.seq and seq_le(self.snd_wl2, ack))
        ):
            wnd = seg.window << self.snd_wscale
            window_changed = wnd != self.snd_wnd
            self.snd_wnd = wnd
            self.snd_wl1, self.snd_wl2 = seg.seq, ack
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
            if wnd > 0:
                self._t_persist = None
                self._persist_backoff = 0
        sb = self.scoreboard
        newly_sacked = 0
        if sb is not None and (acked > 0 or seg.sack_blocks) and acked >= 0:
            newly_sacked = sb.update(ack, seg.sack_blocks, self.snd_nxt)
        if acked > 0:
            self._on_new_ack(seg, acked, now)
            if newly_sacked and not self.in_recovery:
                # RFC 6675 §5: any ACK with new SACK information may reveal
                # a loss (IsLost(HighACK + 1)).
                self._detect_loss(False, newly_sacked, now)
        elif acked == 0 and self.state is not S.TIME_WAIT:
            dup = (
                self.snd_una != self.snd_nxt
                and not seg.payload
                and not seg.flags & (SYN | FIN)
                and not window_changed
                # RFC 8684 §3.4 / Linux: ADD_ADDR (and its echo) ride on pure
                # ACKs that are not duplicate ACKs
                and not (seg.mptcp and hasattr(self.upper, "signal_only")
                         and self.upper.signal_only(self, seg))
            )
            self._detect_loss(dup, newly_sacked, now)
        state = self.state
        if state is S.FIN_WAIT_1 and self.fin_acked:
            self.state = S.FIN_WAIT_2
            if self._app_closed:
                self._t_close = now + self.config.time_wait
        elif state is S.CLOSING and self.fin_acked:
            self._enter_time_wait(now)
        elif state is S.LAST_ACK and self.fin_acked:
            self._to_closed()

    def _on_new_ack(self: TcpConnection, seg: TcpSegment, acked: int, now: float) -> None:
        ack = seg.ack
        fin_now_acked = self.fin_queued and seq_gt(ack, self.fin_seq) and not self.fin_acked
        before = self._flight_size()
        syn_acked = seq_le(self.snd_una, self.iss)
        self.sndbuf.release(ack)
        self.snd_una = ack
        self._rtx_count = 0
        data_acked = acked - (1 if fin_now_acked else 0) - (1 if syn_acked else 0)
        # RTT (RFC 6298 §3 with Karn; RFC 7323 §4 with timestamps).
        if self.ts_enabled and seg.ts is not None and seg.ts[1]:
            self._rtt_from_tsecr(seg.ts[1], now)
            self._rtt_seq = None
        elif self._rtt_seq is not None and seq_ge(ack, self._rtt_seq):
            self._rtt_sample(max(0.0, now - self._rtt_time), now)
            self._rtt_seq = None
        cc = self.cc
        if cc is not None and data_acked > 0:
            # Every ACK advancing SND.UNA, before recovery ends (the controller
            # does not grow cwnd while in recovery).
            cc.on_ack(data_acked, self.rtt.srtt, now, before)
        if self._recover_valid and seq_gt(ack, self.recover) and not self.in_recovery:
            self._recover_valid = False
        if self.rto_recovery:
            if seq_ge(ack, self.recover):
                self.rto_recovery = False
        if seq_lt(self.high_rxt, ack):
            self.high_rxt = ack
        if self.in_recovery:
            if seq_ge(ack, self.recover):
                # RFC 6582 §3.2 step 3 / RFC 6675 §5: full ACK ends recovery.
                self.in_recovery = False
                self.dupacks = 0
                if cc is not None:
                    cc.on_recovery_end(now)
            else:
                # Partial ACK: RFC 6582 §3.2 step 5 (retransmit the next hole);
                # with SACK the scoreboard drives NextSeg instead.
                if self.scoreboard is None:
                    self._fast_rtx = True
                    self.high_rxt = ack
                    if cc is not None:
                        cc.on_partial_ack(data_acked)
        else:
            self.dupacks = 0

        # RFC 6298 §5.2/§5.3: stop the timer when all is acknowledged,
        # otherwise restart it.
        if self.snd_una == self.snd_nxt:
            self._t_rtx = None
        else:
            self._t_rtx = now + self.rtt.rto

    def _rtt_from_tsecr(self: TcpConnection, tsecr: int, now: float) -> None:
        """RFC 7323 §4.1: RTT = now - the send time that TSecr names."""
        ms = (self._tsval(now) - tsecr) & MASK32
        if ms < 0x7FFFFFFF:
            self._rtt_sample(ms / 1000.0, now)

    def _rtt_sample(self: TcpConnection, rtt: float, now: float) -> None:
        self.rtt.on_sample(rtt, now)
        hook = getattr(self.cc, "on_rtt_sample", None)
        if hook is not None:
            hook(rtt, now)  # HyStart++ (optional part of the interface)

    def _detect_loss(self: TcpConnection, dup: bool, newly_sacked: int, now: float) -> None:
        """RFC 5681 §3.2, RFC 6675 §5 and RFC 6582 §3.2: count duplicate ACKs,
        enter fast recovery, limited transmit (RFC 3042)."""
        sb = self.scoreboard
        if dup:
            self.dupacks += 1
            self._stats.dupacks += 1
        cc = self.cc
        if cc is None:
            return
        if self.in_recovery:
            if dup and sb is None:
                cc.on_dupack(1)  # RFC 6582 step 4: inflate
            return
        if self.rto_recovery:
            return
        lost = sb is not None and newly_sacked > 0 and sb.is_lost(self.snd_una)
        if self.dupacks < _DUP_THRESH and not lost:
            return
        # RFC 6582 §3.2 step 2 / RFC 6675 §5: a new recovery only when the
        # cumulative ACK is above the previous RecoveryPoint.
        if self._recover_valid and not seq_gt(self.snd_una, self.recover):
            return
        self.in_recovery = True
        self.recover = self.snd_nxt
        self._recover_valid = True
        self.high_rxt = self.snd_una
        self._rescue_rxt = None
        self._fast_rtx = True
        self._stats.fast_retransmits += 1
        # RFC 5681 eq. 4 / RFC 6675 §5 (4.2): FlightSize, SACKed data included.
        cc.on_congestion_event(now, seq_diff(self.snd_nxt, self.snd_una))
        if sb is None:
            cc.on_dupack(_DUP_THRESH)  # RFC 6582 step 3: ssthresh + 3*SMSS

    # ------------------------------------------------------------- data
    def _process_text(self: TcpConnection, seg: TcpSegment, data_seq: int, now: float) -> None:
        """RFC 9293 §3.10.7.4 seventh (text) and eighth (FIN) steps."""
        payload = seg.payload
        state = self.state
        if payload and state in _TEXT_STATES:
            self._receive_data(data_seq, payload, now)
        if seg.flags & FIN:
            fin_seq = seq_add(data_seq, len(payload))
            rel = seq_diff(fin_seq, self.rcv_nxt)
            if rel == 0:
                self._on_fin(now)
            elif 0 < rel < self._rcv_wnd() and state in _TEXT_STATES:
                self._ooo_fin = fin_seq  # FIN beyond a hole: wait for the data
                self._ack_now = True

    def _receive_data(
        self: TcpConnection, seq: int, payload: bytes | memoryview, now: float
    ) -> None:
        offset = seq_diff(seq, self.rcv_nxt)
        n = len(payload)
        if offset + n <= 0:
            self._ack_now = True  # entirely old: a duplicate, ACK at once
            return
        if self._app_closed:
            # Data after close(): nobody will read it; acknowledge and drop.
            delivered = offset + n if offset <= 0 else 0
            if delivered:
                self.rcv_nxt = seq_add(self.rcv_nxt, delivered)
            self._ack_now = True
            return
        had_ooo = self.rcvbuf.out_of_order > 0
        wnd = self._rcv_wnd()
        advanced = self.rcvbuf.add(offset, payload, wnd)
        if n <= self.config.mss and n > self._rcv_mss:
            self._rcv_mss = n
        if offset > 0:
            # RFC 5681 §4.2: out-of-order: immediate (duplicate) ACK with SACK.
            self._stats.ooo_segments += 1
            if offset < wnd:
                self._sackgen.note(seq)
            self._ack_now = True
            return
        if advanced:
            self.rcv_nxt = seq_add(self.rcv_nxt, advanced)
            self._stats.bytes_received += advanced
            if self._ooo_fin is not None and self.rcv_nxt == self._ooo_fin:
                self._ooo_fin = None
                self._on_fin(now)
                return
        if had_ooo:
            self._ack_now = True  # RFC 5681 §4.2: a segment filling a gap
            return
        # Delayed ACK: at least every second full-sized segment (RFC 5681
        # §4.2), otherwise within config.delayed_ack.
        self._unacked_rx += n
        if self.config.delayed_ack <= 0 or self._unacked_rx >= 2 * self._rcv_mss:
            self._ack_now = True
        elif self._t_delack is None:
            self._t_delack = now + self.config.delayed_ack

    def _on_fin(self: TcpConnection, now: float) -> None:
        """RFC 9293 §3.10.7.4 eighth step."""
        if not self.fin_received:
            self.fin_received = True
            self.rcv_nxt = seq_add(self.rcv_nxt, 1)
        self._ack_now = True
        state = self.state
        if state in (S.SYN_RECEIVED, S.ESTABLISHED):
            self.state = S.CLOSE_WAIT
        elif state is S.FIN_WAIT_1:
            if self.fin_acked:
                self._enter_time_wait(now)
            else:
                self.state = S.CLOSING
        elif state is S.FIN_WAIT_2:
            self._enter_time_wait(now)
        elif state is S.TIME_WAIT:
            self._t_close = now + self.config.time_wait
