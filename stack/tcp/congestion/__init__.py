"""Pluggable congestion control for one TCP connection (one MPTCP subflow).

The connection owns loss detection and recovery (RFC 6675 SACK recovery,
RFC 6582 NewReno without SACK); a congestion controller only sets the windows.
The interface, in bytes and seconds, all times passed in (no clocks):

* ``cwnd``, ``ssthresh``: bytes (``ssthresh`` is :data:`INFINITE_SSTHRESH`
  until the first congestion event, RFC 5681 §3.1 "arbitrarily high").
* ``on_ack(acked_bytes, rtt, now, in_flight)``: an ACK advanced SND.UNA by
  ``acked_bytes``. ``rtt`` is the connection's smoothed RTT (None before the
  first sample), ``in_flight`` the bytes that were outstanding *before* this
  ACK (None: treat the connection as cwnd-limited). No growth during recovery.
* ``on_congestion_event(now, in_flight)``: fast retransmit / SACK loss
  detection: enter recovery, reduce ``ssthresh`` and ``cwnd`` (= new
  ssthresh, RFC 6675 §5 step 4.2). Called once per recovery episode.
  ``on_loss`` is an alias.
* ``on_recovery_end(now)``: the ACK covering RecoveryPoint arrived
  (RFC 6582 §3.2 step 3 option 2, RFC 6675 §5 "terminate recovery").
* ``on_rto(now, in_flight=None)``: retransmission timeout (RFC 5681 §3.1
  eq. 4; None: FlightSize taken as cwnd).
* ``on_idle_restart(now)``: the connection was idle longer than an RTO
  (RFC 5681 §4.1 restart window).
* ``on_mss_change(mss)``: SMSS changed (MSS option, PMTU).
* ``on_rtt_sample(rtt, now)`` (optional): each RTT sample, before the
  ``on_ack`` of the same ACK; only HyStart++ (RFC 9406, ``hystart=True``,
  off by default) uses it.
* Non-SACK fast recovery helpers (RFC 6582 §3.2): ``on_dupack(count)``
  (window inflation) and ``on_partial_ack(acked_bytes)`` (deflation).

Algorithms: :class:`~stack.tcp.congestion.newreno.NewReno` ("newreno",
alias "reno") and :class:`~stack.tcp.congestion.cubic.Cubic` ("cubic"). Others
(MPTCP's coupled ones) register themselves with :func:`register_congestion`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from stack.tcp.congestion.hystart import HyStartPP

__all__ = [
    "CongestionControl",
    "CongestionBase",
    "INFINITE_SSTHRESH",
    "initial_window",
    "make_congestion",
    "register_congestion",
    "available_congestion",
]

INFINITE_SSTHRESH = 0x7FFFFFFF
DEFAULT_IW_SEGMENTS = 10  # RFC 6928


def initial_window(mss: int, segments: int = DEFAULT_IW_SEGMENTS) -> int:
    """RFC 6928 §2: IW = min(10*MSS, max(2*MSS, 14600)), with the 10 (and
    the 14600 = 10 * 1460 it stands for) taken from ``segments``."""
    return min(segments * mss, max(2 * mss, segments * 1460))


@runtime_checkable
class CongestionControl(Protocol):
    """What the TCP connection calls. See the module docstring."""

    name: str
    mss: int
    cwnd: int
    ssthresh: int
    in_recovery: bool

    def on_ack(
        self, acked_bytes: int, rtt: float | None, now: float, in_flight: int | None
    ) -> None: ...

    def on_rtt_sample(self, rtt: float, now: float) -> None: ...

    def on_congestion_event(self, now: float, in_flight: int) -> None: ...

    def on_recovery_end(self, now: float) -> None: ...

    def on_rto(self, now: float, in_flight: int | None = None) -> None: ...

    def on_idle_restart(self, now: float) -> None: ...

    def on_mss_change(self, mss: int) -> None: ...

    def on_dupack(self, count: int = 1) -> None: ...

    def on_partial_ack(self, acked_bytes: int) -> None: ...


class CongestionBase:
    """Shared RFC 5681 machinery: slow start with Appropriate Byte Counting
    (RFC 3465, L = 2), the restart window, recovery bookkeeping and the
    RFC 6582 window inflation helpers. Subclasses decide the multiplicative
    decrease (:meth:`_ssthresh_after_loss`) and the congestion avoidance
    increase (:meth:`_avoid`)."""

    name = "base"

    def __init__(
        self,
        mss: int,
        *,
        iw_segments: int = DEFAULT_IW_SEGMENTS,
        abc_l: int | None = 2,
        hystart: bool = False,
    ) -> None:
        if mss <= 0:
            raise ValueError("mss must be positive")
        self.mss = mss
        self.iw_segments = iw_segments
        # RFC 3465 §2.2: at most L * SMSS of growth per ACK in slow start
        # (L = 2). None: no limit (Linux since 3.8; for a receiver whose
        # GRO/LRO stretch ACKs cover many segments).
        self.abc_l = abc_l
        self.hystart: HyStartPP | None = HyStartPP() if hystart else None
        self.cwnd = initial_window(mss, iw_segments)  # RFC 5681 §3.1, RFC 6928
        self.ssthresh = INFINITE_SSTHRESH
        self.in_recovery = False
        self.congestion_events = 0
        self.rto_events = 0

    # ----------------------------------------------------------------- events
    def on_ack(
        self, acked_bytes: int, rtt: float | None, now: float, in_flight: int | None = None
    ) -> None:
        if acked_bytes <= 0 or self.in_recovery:
            return
        if not self._cwnd_limited(in_flight):
            # RFC 7661: do not grow a window the sender is not using.
            return
        if self.cwnd < self.ssthresh:
            # RFC 5681 §3.1 slow start with RFC 3465 §2.2 byte counting:
            # cwnd += min(N, L * SMSS).
            inc = acked_bytes if self.abc_l is None else min(acked_bytes, self.abc_l * self.mss)
            if self.hystart is not None and self.ssthresh == INFINITE_SSTHRESH:
                # RFC 9406 HyStart++, initial slow start only.
                flight = self.cwnd if in_flight is None else in_flight
                inc, enter_ca = self.hystart.on_ack(acked_bytes, inc, rtt, flight)
                if enter_ca:
                    self.ssthresh = self.cwnd
                    return
            room = self.ssthresh - self.cwnd
            if inc <= room:
                self.cwnd += inc
                self._after_slow_start(now)
                return
            # Crossing ssthresh: the rest of this ACK counts toward avoidance.
            self.cwnd = self.ssthresh
            acked_bytes = inc - room
        self._avoid(acked_bytes, rtt, now)

    def on_rtt_sample(self, rtt: float, now: float) -> None:
        """Optional: the connection took an RTT sample (before ``on_ack`` for
        the same ACK). Only HyStart++ uses it; without it, the ``rtt`` passed
        to ``on_ack`` stands in."""
        if self.hystart is not None:
            self.hystart.on_rtt_sample(rtt)

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        """Fast retransmit / loss detected by SACK: RFC 5681 §3.2 step 2/3,
        RFC 6675 §5 step 4.2 (cwnd = ssthresh)."""
        self.congestion_events += 1
        self.in_recovery = True
        self.ssthresh = self._ssthresh_after_loss(now, in_flight)
        self.cwnd = self.ssthresh

    def on_recovery_end(self, now: float) -> None:
        """RFC 6582 §3.2 step 3 (full ACK), option (2): cwnd = ssthresh."""
        if self.in_recovery:
            self.in_recovery = False
            self.cwnd = self.ssthresh
            self._after_recovery(now)

    def on_loss(self, now: float, in_flight: int) -> None:
        """Alias of :meth:`on_congestion_event` (the name in early drafts)."""
        self.on_congestion_event(now, in_flight)

    def on_rto(self, now: float, in_flight: int | None = None) -> None:
        """RFC 5681 §3.1: ssthresh = max(FlightSize / 2, 2*SMSS) (eq. 4; the
        algorithm may choose its own factor) and cwnd = LW = 1 SMSS.
        ``in_flight`` None: use cwnd as FlightSize."""
        self.rto_events += 1
        self.in_recovery = False
        flight = self.cwnd if in_flight is None else in_flight
        self.ssthresh = self._ssthresh_after_rto(now, flight)
        self.cwnd = self.mss
        self._after_rto(now)

    def on_idle_restart(self, now: float) -> None:
        """RFC 5681 §4.1: after an idle period longer than RTO, cwnd =
        min(RW, cwnd) with RW = min(IW, cwnd)."""
        self.cwnd = min(self.cwnd, initial_window(self.mss, self.iw_segments))

    def on_mss_change(self, mss: int) -> None:
        """Keep the window's size in segments (as Linux, whose cwnd counts
        packets): scale cwnd and a finite ssthresh by the MSS ratio."""
        if mss <= 0 or mss == self.mss:
            return
        old = self.mss
        self.mss = mss
        self.cwnd = max(mss, self.cwnd * mss // old)
        if self.ssthresh != INFINITE_SSTHRESH:
            self.ssthresh = max(2 * mss, self.ssthresh * mss // old)

    # RFC 6582 / RFC 5681 §3.2 fast recovery without SACK.
    def on_dupack(self, count: int = 1) -> None:
        """RFC 5681 §3.2 step 4 (and step 3's ``+ 3*SMSS`` with count=3):
        inflate cwnd by SMSS per duplicate ACK during recovery."""
        if self.in_recovery and count > 0:
            self.cwnd += count * self.mss

    def on_partial_ack(self, acked_bytes: int) -> None:
        """RFC 6582 §3.2 step 5: deflate cwnd by the newly acknowledged bytes;
        if at least one SMSS was acknowledged, add SMSS back."""
        if not self.in_recovery or acked_bytes <= 0:
            return
        self.cwnd = max(self.mss, self.cwnd - acked_bytes)
        if acked_bytes >= self.mss:
            self.cwnd += self.mss

    # ------------------------------------------------------------ for subclasses
    def _cwnd_limited(self, in_flight: int | None) -> bool:
        """RFC 7661 §4.1: the window is "validated" (in use, so it may grow)
        while at least half of it is in flight. The same half-window slack lets
        the flight lag a window that grew during the last RTT (Linux
        tcp_is_cwnd_limited uses 2 * packets_out in slow start likewise)."""
        if in_flight is None:
            return True
        return 2 * in_flight >= self.cwnd

    def _ssthresh_after_loss(self, now: float, in_flight: int) -> int:
        raise NotImplementedError

    def _ssthresh_after_rto(self, now: float, in_flight: int) -> int:
        return self._ssthresh_after_loss(now, in_flight)

    def _avoid(self, acked_bytes: int, rtt: float | None, now: float) -> None:
        raise NotImplementedError

    def _after_slow_start(self, now: float) -> None:
        pass

    def _after_recovery(self, now: float) -> None:
        pass

    def _after_rto(self, now: float) -> None:
        pass

    def __repr__(self) -> str:
        ss = "inf" if self.ssthresh == INFINITE_SSTHRESH else self.ssthresh
        return f"{type(self).__name__}(cwnd={self.cwnd}, ssthresh={ss}, mss={self.mss})"


# ----------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., CongestionControl]] = {}


def register_congestion(name: str, factory: Callable[..., CongestionControl]) -> None:
    """Make ``make_congestion(name, mss, **kwargs)`` call ``factory(mss, **kwargs)``."""
    _REGISTRY[name.lower()] = factory


def available_congestion() -> list[str]:
    return sorted(_REGISTRY)


def make_congestion(
    name: str | Callable[..., CongestionControl], mss: int, **kwargs: Any
) -> CongestionControl:
    """A new controller by name ("newreno"/"reno", "cubic", and whatever was
    registered, e.g. MPTCP's "lia" once ``stack.mptcp.coupled`` is imported).
    ``name`` may also be a factory called as ``name(mss, **kwargs)``: MPTCP
    puts ``group.subflow`` in a subflow's config so that the connection,
    which only calls this function, joins the coupled group.
    Unknown names raise ``ValueError``."""
    if callable(name):
        return name(mss, **kwargs)
    try:
        factory = _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown congestion control {name!r} (have: {', '.join(available_congestion())})"
        ) from None
    return factory(mss, **kwargs)


def _register_builtins() -> None:
    from stack.tcp.congestion.cubic import Cubic
    from stack.tcp.congestion.newreno import NewReno

    register_congestion("newreno", NewReno)
    register_congestion("reno", NewReno)
    register_congestion("cubic", Cubic)


_register_builtins()
