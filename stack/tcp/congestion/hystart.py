"""HyStart++ (RFC 9406): leave slow start when the RTT starts to grow, before
the queue overflows. Optional, off by default (``hystart=True`` on a
controller turns it on). Used only in the initial slow start (RFC 9406 §4.2:
"only for the initial slow start ... standard slow start for the remainder").

A round (RFC 9406 §4.2: windowEnd = SND.NXT when it starts) is measured in
bytes: it ends once the bytes that were in flight when it began are
acknowledged.
"""

from __future__ import annotations

import math

__all__ = ["HyStartPP"]

# RFC 9406 §4.3 constants.
MIN_RTT_THRESH = 0.004
MAX_RTT_THRESH = 0.016
MIN_RTT_DIVISOR = 8
N_RTT_SAMPLE = 8
CSS_GROWTH_DIVISOR = 4
CSS_ROUNDS = 5

INF = math.inf


class HyStartPP:
    __slots__ = (
        "in_css",
        "last_round_min_rtt",
        "current_round_min_rtt",
        "rtt_sample_count",
        "css_baseline_min_rtt",
        "css_rounds",
        "exits",
        "_round_left",
        "_sample",
    )

    def __init__(self) -> None:
        self.in_css = False
        self.last_round_min_rtt = INF
        self.current_round_min_rtt = INF
        self.rtt_sample_count = 0
        self.css_baseline_min_rtt = INF
        self.css_rounds = 0
        self.exits = 0  # slow start exits caused by HyStart++ (to CSS)
        self._round_left = 0
        self._sample: float | None = None

    def on_rtt_sample(self, rtt: float) -> None:
        self._sample = rtt

    def on_ack(
        self, acked: int, increase: int, rtt: float | None, round_bytes: int
    ) -> tuple[int, bool]:
        """One ACK during the initial slow start. ``increase`` is standard slow
        start's cwnd increase for it; ``round_bytes`` the bytes in flight
        before it. Returns (the increase to apply, True when congestion
        avoidance must start now with ssthresh = cwnd)."""
        enter_ca = False
        if self._round_left <= 0:
            # RFC 9406 §4.2: at the start of each round.
            self.last_round_min_rtt = self.current_round_min_rtt
            self.current_round_min_rtt = INF
            self.rtt_sample_count = 0
            self._round_left = max(1, round_bytes)
            if self.in_css:
                if self.css_rounds >= CSS_ROUNDS:
                    enter_ca = True  # CSS_ROUNDS rounds done: to CA
                self.css_rounds += 1
        self._round_left -= acked
        sample = self._sample if self._sample is not None else rtt
        self._sample = None
        if sample is not None:
            self.current_round_min_rtt = min(self.current_round_min_rtt, sample)
            self.rtt_sample_count += 1
        if enter_ca:
            self.in_css = False
            return 0, True
        enough = (
            self.rtt_sample_count >= N_RTT_SAMPLE
            and self.current_round_min_rtt != INF
            and self.last_round_min_rtt != INF
        )
        if not self.in_css:
            if enough:
                thresh = max(
                    MIN_RTT_THRESH,
                    min(self.last_round_min_rtt / MIN_RTT_DIVISOR, MAX_RTT_THRESH),
                )
                if self.current_round_min_rtt >= self.last_round_min_rtt + thresh:
                    # Delay increase: leave slow start for Conservative Slow Start.
                    self.css_baseline_min_rtt = self.current_round_min_rtt
                    self.in_css = True
                    self.css_rounds = 1  # the partial round counts (§4.2)
                    self.exits += 1
            return increase, False
        # In CSS: growth divided by CSS_GROWTH_DIVISOR.
        if self.rtt_sample_count >= N_RTT_SAMPLE and (
            self.current_round_min_rtt < self.css_baseline_min_rtt
        ):
            # The exit was spurious: resume slow start.
            self.css_baseline_min_rtt = INF
            self.in_css = False
            return increase, False
        return increase // CSS_GROWTH_DIVISOR, False
