"""Round-trip time estimation and the retransmission timeout (RFC 6298).

Pure logic: no clock is read here, every time is passed in by the caller (the
TCP connection), in seconds as a float.

What the connection does with this module:

* when an ACK acknowledges new data, it asks :meth:`RttEstimator.may_sample`
  (Karn's rule, RFC 6298 §3 / RFC 7323 §4) whether that ACK may give an RTT
  sample and, if so, feeds it with :meth:`RttEstimator.on_sample`;
* when the retransmission timer expires it calls :meth:`RttEstimator.on_timeout`
  (exponential back-off, RFC 6298 §5.5) and arms the timer with
  :attr:`RttEstimator.rto`.
"""

from __future__ import annotations

import math

__all__ = ["RttEstimator", "MinRttFilter"]

# RFC 6298 §2: smoothing gains and the variance multiplier.
ALPHA = 1.0 / 8.0
BETA = 1.0 / 4.0
K = 4

INITIAL_RTO = 1.0  # RFC 6298 §2.1
SYN_FALLBACK_RTO = 3.0  # RFC 6298 §5.7
DEFAULT_MIN_RTO = 0.2  # RFC 6298 §2.4 says 1 s; Linux (TCP_RTO_MIN) uses 200 ms
DEFAULT_MAX_RTO = 120.0  # RFC 6298 §2.5 allows a maximum of at least 60 s; Linux: 120 s
DEFAULT_GRANULARITY = 0.001  # G: clock granularity of the caller's clock (1 ms)
MIN_RTT_WINDOW = 300.0  # Linux tcp_min_rtt_wlen: 5 minutes


class MinRttFilter:
    """Windowed minimum of RTT samples (Kathleen Nichols' algorithm, as Linux's
    ``lib/win_minmax.c``): the best, 2nd best and 3rd best samples of the last
    ``window`` seconds, so that the minimum ages out when a path gets longer.
    """

    __slots__ = ("window", "_s")

    def __init__(self, window: float = MIN_RTT_WINDOW) -> None:
        self.window = window
        self._s: list[tuple[float, float]] = []  # [(rtt, time)] x3, best first

    @property
    def value(self) -> float | None:
        return self._s[0][0] if self._s else None

    def reset(self, rtt: float, now: float) -> None:
        self._s = [(rtt, now)] * 3

    def update(self, rtt: float, now: float) -> float:
        s = self._s
        if not s or rtt <= s[0][0] or now - s[2][1] > self.window:
            # A new minimum, or nothing left in the window: restart.
            self.reset(rtt, now)
            return rtt
        if rtt <= s[1][0]:
            s[1] = s[2] = (rtt, now)
        elif rtt <= s[2][0]:
            s[2] = (rtt, now)
        # Age the estimates out of the window (win_minmax.c minmax_subwin_update).
        dt = now - s[0][1]
        if dt > self.window:
            s[0], s[1], s[2] = s[1], s[2], (rtt, now)
            if now - s[0][1] > self.window:
                s[0], s[1] = s[1], s[2]
                s[2] = (rtt, now)
        elif s[1][1] == s[0][1] and dt > self.window / 4:
            s[1] = s[2] = (rtt, now)
        elif s[2][1] == s[1][1] and dt > self.window / 2:
            s[2] = (rtt, now)
        return s[0][0]


class RttEstimator:
    """RFC 6298 SRTT / RTTVAR / RTO state for one connection.

    ``rto`` is the value to arm the retransmission timer with: the base RTO of
    RFC 6298 §2 multiplied by ``2 ** backoff`` (RFC 6298 §5.5), clamped to
    ``[min_rto, max_rto]``.
    """

    __slots__ = (
        "min_rto",
        "max_rto",
        "granularity",
        "srtt",
        "rttvar",
        "latest_rtt",
        "backoff",
        "samples",
        "_base_rto",
        "_min_rtt",
    )

    def __init__(
        self,
        *,
        initial_rto: float = INITIAL_RTO,
        min_rto: float = DEFAULT_MIN_RTO,
        max_rto: float = DEFAULT_MAX_RTO,
        granularity: float = DEFAULT_GRANULARITY,
        min_rtt_window: float = MIN_RTT_WINDOW,
    ) -> None:
        if not 0 < min_rto <= max_rto:
            raise ValueError(f"need 0 < min_rto <= max_rto, got {min_rto}, {max_rto}")
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.granularity = granularity
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.latest_rtt: float | None = None
        self.backoff = 0
        self.samples = 0
        # RFC 6298 §2.1: until a sample is taken, RTO = 1 s. The minimum is not
        # applied to this initial value (a test or a config may ask for less).
        self._base_rto = min(initial_rto, max_rto)
        self._min_rtt = MinRttFilter(min_rtt_window)

    # ----------------------------------------------------------- Karn's rule
    @staticmethod
    def may_sample(*, retransmitted: bool, timestamps: bool = False) -> bool:
        """Karn's algorithm (RFC 6298 §3): an ACK for a segment that was
        retransmitted is ambiguous and MUST NOT give an RTT sample, unless the
        RTT is measured with the timestamps option (RFC 7323 §4: TSecr names
        the transmission that is being acknowledged, so there is no ambiguity).
        """
        return timestamps or not retransmitted

    @staticmethod
    def timestamp_sample(now: float, echoed_send_time: float) -> float:
        """RFC 7323 §4.1: the RTT measured with timestamps is the current time
        minus the time at which the segment whose TSval is echoed in TSecr was
        sent. The connection maps TSecr back to its own clock."""
        return max(0.0, now - echoed_send_time)

    # ------------------------------------------------------------- samples
    def on_sample(self, rtt: float, now: float, *, expected_samples: int = 1) -> None:
        """Feed one RTT measurement R (seconds), RFC 6298 §2.2 / §2.3.

        ``expected_samples``: RFC 7323 Appendix G: with timestamps a sender
        may take one sample per ACK, many per RTT; it may then divide the gains
        by ExpectedSamples = ceil(FlightSize / (SMSS * 2)) so that SRTT keeps
        the memory of RFC 6298's one-sample-per-RTT. 1 = plain RFC 6298.
        """
        if rtt < 0 or math.isnan(rtt) or math.isinf(rtt):
            raise ValueError(f"invalid RTT sample {rtt!r}")
        n = max(1, expected_samples)
        alpha, beta = ALPHA / n, BETA / n
        if self.srtt is None or self.rttvar is None:
            # §2.2: the first measurement.
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            # §2.3: RTTVAR first, using the SRTT before this update.
            self.rttvar = (1 - beta) * self.rttvar + beta * abs(self.srtt - rtt)
            self.srtt = (1 - alpha) * self.srtt + alpha * rtt
        self._base_rto = self.srtt + max(self.granularity, K * self.rttvar)
        # §5.7 note / Karn: a new valid sample ends the back-off.
        self.backoff = 0
        self.latest_rtt = rtt
        self.samples += 1
        self._min_rtt.update(rtt, now)

    # ------------------------------------------------------------- timeouts
    def on_timeout(self) -> None:
        """RFC 6298 §5.5: the timer expired; back off RTO <- RTO * 2 (the
        maximum of §2.5 still applies). Kept until the next valid sample."""
        if self._base_rto * (2**self.backoff) < self.max_rto:
            self.backoff += 1

    def reset_backoff(self) -> None:
        self.backoff = 0

    def on_handshake_timeout_recovered(self) -> None:
        """RFC 6298 §5.7: if the timer expired during the handshake and no RTT
        sample was taken, RTO MUST be re-initialised to 3 s when data
        transmission begins."""
        if self.srtt is None:
            self._base_rto = min(max(self._base_rto, SYN_FALLBACK_RTO), self.max_rto)
            self.backoff = 0

    # ------------------------------------------------------------- values
    @property
    def rto(self) -> float:
        """RTO in seconds including back-off, within [min_rto, max_rto]
        (RFC 6298 §2.4, §2.5). Before the first sample: the initial RTO."""
        base = self._base_rto
        if self.srtt is not None:
            base = max(base, self.min_rto)  # §2.4
        return min(base * (2**self.backoff), self.max_rto)

    @property
    def min_rtt(self) -> float | None:
        """Smallest RTT sample of the last ``min_rtt_window`` seconds."""
        return self._min_rtt.value

    def __repr__(self) -> str:
        return (
            f"RttEstimator(srtt={self.srtt}, rttvar={self.rttvar}, rto={self.rto:.3f}, "
            f"backoff={self.backoff}, min_rtt={self.min_rtt})"
        )
