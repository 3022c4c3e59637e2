"""CUBIC congestion control (RFC 9438).

The window is computed in segments, as in the RFC, and kept in bytes for the
connection (``cwnd = segments * SMSS``). Slow start is standard (RFC 5681 with
ABC, in the base class); HyStart++ (RFC 9406, RFC 9438 §4.10) is optional
and off by default (``hystart=True``).
"""

from __future__ import annotations

from stack.tcp.congestion import CongestionBase

__all__ = ["Cubic", "C", "BETA", "w_cubic", "cubic_k"]

C = 0.4  # RFC 9438 §5.1
BETA = 0.7  # RFC 9438 §4.6 beta_cubic


def cubic_k(w_max: float, cwnd_epoch: float, c: float = C) -> float:
    """RFC 9438 §4.2 eq. (2): K = cubic_root((W_max - cwnd_epoch) / C), in s."""
    x = (w_max - cwnd_epoch) / c
    return x ** (1 / 3) if x >= 0 else -((-x) ** (1 / 3))


def w_cubic(t: float, w_max: float, k: float, c: float = C) -> float:
    """RFC 9438 §4.2 eq. (1): W_cubic(t) = C * (t - K)^3 + W_max (segments)."""
    return c * (t - k) ** 3 + w_max


class Cubic(CongestionBase):
    name = "cubic"

    def __init__(
        self,
        mss: int,
        *,
        iw_segments: int = 10,
        abc_l: int | None = 2,
        hystart: bool = False,
        c: float = C,
        beta: float = BETA,
        fast_convergence: bool = True,
    ) -> None:
        super().__init__(mss, iw_segments=iw_segments, abc_l=abc_l, hystart=hystart)
        self.c = c
        self.beta = beta
        self.fast_convergence = fast_convergence
        # RFC 9438 §4.3: alpha_cubic = 3 * (1 - beta) / (1 + beta).
        self.alpha_reno = 3 * (1 - beta) / (1 + beta)
        self.w_max: float | None = None  # segments, before the last reduction
        self.cwnd_prior: float | None = None  # segments, at the last reduction
        self.k = 0.0
        self.t_epoch: float | None = None  # start of the current CA stage
        self.cwnd_epoch = 0.0
        self.w_est = 0.0
        self._alpha = self.alpha_reno
        self._after_timeout = False
        self._carry = 0.0  # fractional bytes of increase not yet in cwnd

    # ------------------------------------------------------------ decrease
    def _ssthresh_after_loss(self, now: float, in_flight: int) -> int:
        cwnd = self.cwnd / self.mss
        # RFC 9438 §4.7 fast convergence: release bandwidth when the window
        # stopped short of the previous W_max.
        if self.fast_convergence and self.w_max is not None and cwnd < self.w_max:
            self.w_max = cwnd * (1 + self.beta) / 2
        else:
            self.w_max = cwnd
        self.cwnd_prior = cwnd
        self.t_epoch = None
        self._after_timeout = False
        self._carry = 0.0
        # RFC 9438 §4.6: ssthresh = cwnd * beta_cubic, at least 2 segments.
        return max(int(cwnd * self.beta * self.mss), 2 * self.mss)

    def _after_rto(self, now: float) -> None:
        # RFC 9438 §4.8: in the first CA stage after a timeout K = 0 and W_max
        # is the window at the start of that stage.
        self.t_epoch = None
        self._after_timeout = True

    def _after_recovery(self, now: float) -> None:
        self.t_epoch = None

    def on_idle_restart(self, now: float) -> None:
        # RFC 5681 §4.1 restart window; RFC 9438 §5.8: the cubic curve must not
        # run on while the sender was idle, so a new CA stage starts.
        super().on_idle_restart(now)
        self.t_epoch = None

    def on_mss_change(self, mss: int) -> None:
        super().on_mss_change(mss)
        self.t_epoch = None  # segments changed size: restart the epoch

    # ------------------------------------------------------------ increase
    def _start_epoch(self, now: float) -> None:
        """RFC 9438 §4.2: a congestion avoidance stage begins."""
        cwnd = self.cwnd / self.mss
        self.t_epoch = now
        self.cwnd_epoch = cwnd
        if self._after_timeout or self.w_max is None or cwnd >= self.w_max:
            # §4.8 (after an RTO) or no reduction to recover from: K = 0 and
            # the plateau is where we are.
            self.w_max = cwnd
            self.k = 0.0
        else:
            self.k = cubic_k(self.w_max, cwnd, self.c)
        self._after_timeout = False
        # §4.3: W_est starts at cwnd_epoch, grows with alpha_cubic until it
        # reaches cwnd_prior, then like Reno (alpha 1).
        self.w_est = cwnd
        self._alpha = self.alpha_reno
        if self.cwnd_prior is None or self.w_est >= self.cwnd_prior:
            self._alpha = 1.0

    def _avoid(self, acked_bytes: int, rtt: float | None, now: float) -> None:
        if self.t_epoch is None:
            self._start_epoch(now)
        assert self.w_max is not None
        mss = self.mss
        cwnd = self.cwnd / mss
        segs = acked_bytes / mss
        t = now - self.t_epoch  # type: ignore[operator]
        # §4.3 Reno-friendly estimate.
        self.w_est += self._alpha * segs / cwnd
        if self.cwnd_prior is not None and self.w_est >= self.cwnd_prior:
            self._alpha = 1.0
        if w_cubic(t, self.w_max, self.k, self.c) < self.w_est:
            # §4.3 Reno-friendly region: cwnd = W_est.
            new = max(cwnd, self.w_est)
            inc = (new - cwnd) * mss
        else:
            # §4.4 concave / §4.5 convex: grow toward W_cubic(t + RTT),
            # clamped to [cwnd, 1.5 * cwnd] (§4.2), by (target - cwnd) / cwnd
            # per acknowledged segment.
            target = w_cubic(t + (rtt or 0.0), self.w_max, self.k, self.c)
            target = min(max(target, cwnd), 1.5 * cwnd)
            inc = (target - cwnd) / cwnd * segs * mss
        self._carry += inc
        whole = int(self._carry)
        if whole > 0:
            self.cwnd += whole
            self._carry -= whole
