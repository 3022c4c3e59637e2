"""What :class:`stack.tcp.connection.TcpConnection` sends now.

One call of :meth:`TransmitMixin.poll_transmit` emits everything the windows
allow (DESIGN.md §5: never one segment per event): retransmissions chosen by
RFC 6675 NextSeg (SACK) or RFC 6582 (NewReno), then new data in as few
segments as possible (super-segments of up to ``config.max_segment`` bytes when
the device does TSO; the host cuts them at ``seg.gso`` bytes), subject to the
peer's window, the congestion window, Nagle (RFC 9293 §3.7.4, against the
effective MSS) and sender SWS avoidance (RFC 9293 §3.8.6.2.1). Pure ACKs
(delayed, immediate, challenge), window updates, zero-window and keepalive
probes complete the picture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .segment import ACK, FIN, PSH, SYN, TcpSegment
from .seq import seq_add, seq_diff, seq_gt, seq_le, seq_lt, seq_max, seq_min
from .state import TcpState

if TYPE_CHECKING:  # pragma: no cover
    from .connection import TcpConnection

__all__ = ["TransmitMixin"]

S = TcpState
_DATA_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})


class TransmitMixin:
    """Output half of the connection (see the module docstring)."""

    def poll_transmit(self: TcpConnection, now: float) -> list[TcpSegment]:
        """The segments to send now, in order. Payloads may be memoryviews
        into the send buffer: serialise them before the next call."""
        out: list[TcpSegment] = []
        if self._rst_pending is not None:
            out.append(self._rst_pending)
            self._rst_pending = None
            self._stats.segments_sent += 1
        state = self.state
        if state is S.CLOSED or state is S.LISTEN:
            return out
        if state is S.SYN_SENT or state is S.SYN_RECEIVED:
            if self._send_syn or (self._ack_now and state is S.SYN_RECEIVED):
                out.append(self._syn_segment(now))
            self._ack_now = False
            return out
        ooo = self.sack_enabled and self.rcvbuf.out_of_order > 0
        if self._ack_now and ooo:
            # SACK blocks ride on a pure ACK so that data segments keep their
            # full effective MSS.
            out.append(self._make_segment(self.snd_nxt, ACK, now, sack=True))
        if state in _DATA_STATES and self.cc is not None:
            self._send_data(now, out)
        if self._probe:
            self._send_probe(now, out)
        if self._ka_probe:
            self._ka_probe = False
            self._stats.keepalive_probes += 1
            # RFC 1122 §4.2.3.6: SEG.SEQ = SND.NXT-1 with no data (as Linux,
            # SND.UNA-1: an old sequence number the peer must acknowledge).
            out.append(self._make_segment(seq_add(self.snd_una, -1), ACK, now))
        if self._ack_now:
            out.append(self._make_segment(self.snd_nxt, ACK, now, sack=ooo))
        return out

    # ------------------------------------------------------------- segments
    def _syn_segment(self: TcpConnection, now: float) -> TcpSegment:
        """SYN (active open) or SYN-ACK: RFC 9293 §3.5, options per RFC 7323
        §2.2/§3.2 and RFC 2018 §2 (a SYN-ACK only echoes what the SYN had)."""
        cfg = self.config
        passive = self.state is S.SYN_RECEIVED
        flags = SYN | ACK if passive else SYN
        seg = TcpSegment(
            self.local[1],
            self.remote[1],
            self.iss,
            self.rcv_nxt if passive else 0,
            flags,
            min(cfg.rcvbuf, 0xFFFF),
        )
        seg.mss = cfg.mss
        if passive:
            seg.wscale = self.rcv_wscale if self._wscale_ok else None
            seg.sack_permitted = self.sack_enabled
            seg.ts = (self._tsval(now), self.ts_recent) if self.ts_enabled else None
            self.last_ack_sent = self.rcv_nxt
        else:
            seg.wscale = self.rcv_wscale if cfg.window_scaling else None
            seg.sack_permitted = cfg.sack
            seg.ts = (self._tsval(now), 0) if cfg.timestamps else None
        if self.upper is not None:
            self._merge_upper(seg)
        if self._syn_retransmitted:
            self._stats.retransmissions += 1
        elif self._rtt_seq is None:
            self._rtt_seq = seq_add(self.iss, 1)
            self._rtt_time = now
        self.snd_nxt = seq_add(self.iss, 1)
        self._send_syn = False
        if self._t_rtx is None:
            self._t_rtx = now + self.rtt.rto
        self._stats.segments_sent += 1
        self._last_send = now
        return seg

    def _make_segment(
        self: TcpConnection,
        seq: int,
        flags: int,
        now: float,
        payload: bytes | memoryview = b"",
        *,
        sack: bool = False,
    ) -> TcpSegment:
        """A segment of the synchronized states: always ACK, current window,
        timestamps (RFC 7323 §3.2, TSecr = TS.Recent), SACK blocks on request."""
        seg = TcpSegment(
            self.local[1],
            self.remote[1],
            seq,
            self.rcv_nxt,
            flags | ACK,
            self._advertise(),
            payload=payload,
        )
        if self.ts_enabled:
            seg.ts = (self._tsval(now), self.ts_recent)
        if sack:
            limit = 3 if self.ts_enabled else 4  # RFC 2018 §3 with timestamps
            seg.sack_blocks = self._sackgen.blocks(self.rcv_nxt, self.rcvbuf.ranges(), limit)
        if self.upper is not None:
            self._merge_upper(seg)
        self.last_ack_sent = self.rcv_nxt
        self._ack_now = False
        self._t_delack = None
        self._unacked_rx = 0
        self._stats.segments_sent += 1
        return seg

    def _merge_upper(self: TcpConnection, seg: TcpSegment) -> None:
        opts = self.upper.write_options(self, seg)
        if opts:
            seg.mptcp = tuple(seg.mptcp) + tuple(opts)

    def _advertise(self: TcpConnection) -> int:
        """The window field to send, with receiver SWS avoidance (RFC 9293
        §3.8.6.2.2: move the right edge only by min(RCV.BUFF/2, Eff.MSS) or
        more) and no shrinking (RFC 9293 §3.8.6.2.2, RFC 7323 §2.4)."""
        ws = self.rcv_wscale
        upper_wnd = getattr(self.upper, "receive_window", None) if self.upper is not None else None
        if upper_wnd is not None:
            # MPTCP (RFC 8684 §3.3.4): the window is the connection-level one,
            # relative to the DATA_ACK this segment carries; the upper keeps
            # its right edge from moving left in data-sequence space, so no
            # subflow-level SWS/no-shrink rule applies (kernel mptcp_set_rwin).
            # Our acceptance edge (rcv_adv) still never moves left.
            field = min(0xFFFF, min(upper_wnd(self), self.rcvbuf.free) >> ws)
            edge = seq_add(self.rcv_nxt, field << ws)
            if seq_gt(edge, self.rcv_adv):
                self.rcv_adv = edge
            return field
        cur = self._rcv_wnd()
        free = self.rcvbuf.capacity if self._app_closed else self.rcvbuf.free
        thresh = min(self.rcvbuf.capacity // 2, self._rcv_mss)
        new = free if free - cur >= thresh else cur
        new = min(new, 0xFFFF << ws)
        field = new >> ws
        if (field << ws) < cur:
            field = min(0xFFFF, (cur + (1 << ws) - 1) >> ws)
        edge = seq_add(self.rcv_nxt, field << ws)
        if seq_gt(edge, self.rcv_adv):
            self.rcv_adv = edge
        return field

    def _after_read(self: TcpConnection) -> None:
        """The application read: send a window update when the window can
        grow by the SWS threshold and at least doubles (as Linux)."""
        if self.state not in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2):
            return
        cur = self._rcv_wnd()
        free = self.rcvbuf.free
        thresh = min(self.rcvbuf.capacity // 2, self._rcv_mss)
        if free - cur >= thresh and free >= 2 * cur:
            self._ack_now = True

    # ----------------------------------------------------------------- data
    def _flight_size(self: TcpConnection) -> int:
        """Outstanding bytes less SACKed ones."""
        n = seq_diff(self.snd_nxt, self.snd_una)
        if self.scoreboard is not None:
            n -= self.scoreboard.sacked_bytes
        return max(0, n)

    def _pipe(self: TcpConnection) -> int:
        if self.in_recovery and self.scoreboard is not None:
            return self.scoreboard.pipe(self.snd_nxt, self.high_rxt)  # RFC 6675 SetPipe
        return self._flight_size()

    def _max_payload(self: TcpConnection, mss: int) -> int:
        limit = self.config.max_segment
        if limit and limit > self.config.mss:
            return max(mss, limit - limit % mss)
        return mss

    def _send_data(self: TcpConnection, now: float, out: list[TcpSegment]) -> None:
        if (
            self.snd_nxt == self.sndbuf.end  # no unsent data (and no FIN sent)
            and not self.fin_queued
            and not (self.rto_recovery or self._fast_rtx or self.in_recovery)
        ):
            # Fast path (a receiver polled after each segment): nothing to send.
            self._t_persist = None
            self._persist_backoff = 0
            return
        mss = self.effective_mss
        max_seg = self._max_payload(mss)
        cwnd = self.cc.cwnd
        sb = self.scoreboard
        sent_before = len(out)

        # 1. After an RTO: retransmit every un-SACKed byte up to RecoveryPoint
        #    (RFC 6298 §5.4, RFC 6675 §5.1) as the (slow-start) window allows.
        if self.rto_recovery:
            while seq_lt(self.high_rxt, self.recover):
                start, end = self._next_unsacked(self.high_rxt, self.recover)
                if not seq_lt(start, end):
                    self.high_rxt = self.recover
                    break
                # In flight now: what this pass retransmitted (less SACKed).
                pipe = max(0, seq_diff(start, self.snd_una) - self._sacked_below(start))
                room = cwnd - pipe
                if room < mss and pipe > 0:
                    break
                length = min(seq_diff(end, start), max(mss, room - room % mss), max_seg)
                self._emit_range(out, start, length, now, retransmit=True)
                self.high_rxt = seq_add(start, length)
            if seq_lt(self.high_rxt, self.recover):
                self._arm_rtx(now)
                return

        # 2. Fast retransmit (RFC 5681 §3.2 step 2, RFC 6675 §5 step 4.3) or
        #    the RFC 6582 partial-ACK retransmission: SND.UNA, regardless of pipe.
        if self._fast_rtx:
            self._fast_rtx = False
            start, end = self._next_unsacked(self.snd_una, self.recover)
            if seq_lt(start, end):
                length = min(seq_diff(end, start), mss)
                self._emit_range(out, start, length, now, retransmit=True)
                self.high_rxt = seq_max(self.high_rxt, seq_add(start, length))

        # 3. SACK recovery: RFC 6675 §5 step (C), NextSeg rules 1 and 3.
        if self.in_recovery and sb is not None:
            while True:
                room = cwnd - sb.pipe(self.snd_nxt, self.high_rxt)
                if room < mss:
                    break
                # Rule 4 (rescue retransmission) at most once per recovery:
                # allowed while HighACK > RescueRxt.
                rescue = self._rescue_rxt is None or seq_gt(self.snd_una, self._rescue_rxt)
                ns = sb.next_seg(
                    self.snd_nxt,
                    self.high_rxt,
                    new_data=self._unsent_in_window(),
                    max_len=min(max_seg, max(mss, room - room % mss)),
                    rescue=rescue,
                )
                if ns is None or not ns.retransmission:
                    break
                if ns.rule == 4 and not seq_gt(seq_add(ns.seq, ns.length), self.high_rxt):
                    break  # the highest unSACKed byte was retransmitted already
                self._emit_range(out, ns.seq, ns.length, now, retransmit=True)
                if ns.rule == 4:
                    self._rescue_rxt = self.recover
                    break
                self.high_rxt = seq_max(self.high_rxt, seq_add(ns.seq, ns.length))

        # 4. New data; PSH on the last segment of the burst (the peer's GRO
        #    delivers at once instead of waiting for more).
        first_new = len(out)
        self._send_new_data(now, out, mss, max_seg)
        if len(out) > first_new and out[-1].payload:
            out[-1].flags |= PSH
        if len(out) > sent_before:
            self._arm_rtx(now)
        self._update_persist(now)

    def _send_new_data(
        self: TcpConnection, now: float, out: list[TcpSegment], mss: int, max_seg: int
    ) -> None:
        cfg = self.config
        extra = 0
        if not self.in_recovery and 0 < self.dupacks < 3:
            extra = self.dupacks * mss  # RFC 3042 limited transmit
        while True:
            unsent = max(0, seq_diff(self.sndbuf.end, self.snd_nxt))
            fin_pending = self.fin_queued and seq_le(self.snd_nxt, self.fin_seq)
            if unsent == 0 and not fin_pending:
                return
            outstanding = seq_diff(self.snd_nxt, self.snd_una)
            if unsent == 0:
                # A bare FIN: one sequence number, no window needed to send it.
                self._emit_range(out, self.snd_nxt, 1, now, retransmit=False)
                self.snd_nxt = seq_add(self.snd_nxt, 1)
                return
            if outstanding == 0 and now - self._last_send > self.rtt.rto:
                self.cc.on_idle_restart(now)  # RFC 5681 §4.1
            wnd_left = self.snd_wnd - outstanding
            room = self.cc.cwnd + extra - self._pipe()
            n = min(unsent, wnd_left, room, max_seg)
            if n <= 0:
                return
            more = n < unsent
            nagle = not cfg.nodelay and not self.fin_queued and outstanding > 0
            if n >= mss:
                if more or nagle:
                    n -= n % mss  # full segments; a partial tail waits (Nagle)
            elif more:
                # RFC 9293 §3.8.6.2.1 sender SWS avoidance: a small segment
                # only when it fills at least half the largest window seen.
                if not (n == wnd_left and 2 * n >= self.max_snd_wnd):
                    return
            elif nagle:
                return  # RFC 9293 §3.7.4 Nagle: wait for the outstanding data's ACK
            fin = fin_pending and n == unsent
            self._emit_range(out, self.snd_nxt, n + (1 if fin else 0), now, retransmit=False)
            if self._rtt_seq is None and not self.ts_enabled:
                self._rtt_seq = seq_add(self.snd_nxt, n)
                self._rtt_time = now
            self.snd_nxt = seq_add(self.snd_nxt, n + (1 if fin else 0))
            self._last_send = now
            if fin:
                return

    def _unsent_in_window(self: TcpConnection) -> int:
        unsent = max(0, seq_diff(self.sndbuf.end, self.snd_nxt))
        wnd_left = self.snd_wnd - seq_diff(self.snd_nxt, self.snd_una)
        return max(0, min(unsent, wnd_left))

    def _sacked_below(self: TcpConnection, seq: int) -> int:
        """SACKed bytes between SND.UNA and ``seq``."""
        sb = self.scoreboard
        if sb is None:
            return 0
        total = 0
        for lo, hi in sb.ranges():
            if not seq_lt(lo, seq):
                break
            total += seq_diff(seq_min(hi, seq), lo)
        return total

    def _next_unsacked(self: TcpConnection, start: int, limit: int) -> tuple[int, int]:
        """The first un-SACKed range at or after ``start`` and below ``limit``."""
        sb = self.scoreboard
        if sb is None:
            return start, limit
        for lo, hi in sb.ranges():
            if seq_le(hi, start):
                continue
            if seq_le(lo, start):
                start = hi
                continue
            return start, seq_min(lo, limit)
        return start, limit

    def _emit_range(
        self: TcpConnection,
        out: list[TcpSegment],
        seq: int,
        length: int,
        now: float,
        *,
        retransmit: bool,
    ) -> None:
        """Send sequence range [seq, seq+length): data from the send buffer
        and our FIN if the range covers it. With an upper layer (MPTCP) the
        range is cut where ``upper.segment_limit(conn, seq)`` says, so that no
        segment straddles two DSS mappings (RFC 8684 §3.3.1)."""
        limit_of = getattr(self.upper, "segment_limit", None) if self.upper is not None else None
        if limit_of is not None:
            while True:
                data_left = max(0, seq_diff(self.sndbuf.end, seq))
                lim = limit_of(self, seq) if data_left else 0
                if lim <= 0 or lim >= min(length, data_left):
                    break
                self._emit_one(out, seq, lim, now, retransmit=retransmit)
                seq = seq_add(seq, lim)
                length -= lim
        self._emit_one(out, seq, length, now, retransmit=retransmit)

    def _emit_one(
        self: TcpConnection,
        out: list[TcpSegment],
        seq: int,
        length: int,
        now: float,
        *,
        retransmit: bool,
    ) -> None:
        data_end = self.sndbuf.end
        n = max(0, min(length, seq_diff(data_end, seq)))
        fin = self.fin_queued and seq_diff(seq_add(seq, length), self.fin_seq) > 0
        payload = self.sndbuf.view(seq, n) if n else b""
        flags = ACK
        if fin:
            flags |= FIN
        if n and seq_add(seq, n) == data_end:
            flags |= PSH  # the last of what the application queued (RFC 9293 §3.9.1)
        seg = self._make_segment(seq, flags, now, payload)
        mss = self.effective_mss
        if n > mss:
            seg.gso = mss
        out.append(seg)
        if retransmit:
            self._stats.retransmissions += 1
            self._stats.bytes_retransmitted += n
            self._rtt_seq = None  # Karn (RFC 6298 §3)
        else:
            self._stats.bytes_sent += n

    def _arm_rtx(self: TcpConnection, now: float) -> None:
        """RFC 6298 §5.1: start the timer on sending if it is not running."""
        if self._t_rtx is None and self.snd_una != self.snd_nxt:
            self._t_rtx = now + self.rtt.rto

    # ----------------------------------------------------------- probes
    def _persist_interval(self: TcpConnection) -> float:
        cfg = self.config
        base = max(self.rtt.rto, cfg.persist_min)
        return min(cfg.persist_max, base * (2 ** min(self._persist_backoff, 16)))

    def _update_persist(self: TcpConnection, now: float) -> None:
        """RFC 9293 §3.8.6.1: with data waiting, nothing in flight and no
        usable window, the persist timer makes sure we ask again."""
        waiting = seq_diff(self.sndbuf.end, self.snd_nxt) > 0
        if waiting and self.snd_una == self.snd_nxt:
            if self._t_persist is None:
                self._t_persist = now + self._persist_interval()
        else:
            self._t_persist = None
            if not waiting:
                self._persist_backoff = 0

    def _send_probe(self: TcpConnection, now: float, out: list[TcpSegment]) -> None:
        """The persist timer fired: a zero-window probe (an old sequence number
        that the peer must ACK with its current window, as Linux), or with a
        small non-zero window the SWS override: send what fits."""
        self._probe = False
        unsent = max(0, seq_diff(self.sndbuf.end, self.snd_nxt))
        wnd_left = self.snd_wnd - seq_diff(self.snd_nxt, self.snd_una)
        if unsent and wnd_left > 0 and self.state in _DATA_STATES:
            n = min(unsent, wnd_left, self.effective_mss)
            self._emit_range(out, self.snd_nxt, n, now, retransmit=False)
            self.snd_nxt = seq_add(self.snd_nxt, n)
            self._arm_rtx(now)
        elif unsent:
            self._stats.zero_window_probes += 1
            out.append(self._make_segment(seq_add(self.snd_una, -1), ACK, now))
        if unsent and self.snd_una == self.snd_nxt:
            self._t_persist = now + self._persist_interval()
