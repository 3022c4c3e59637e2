"""Coupled congestion control for MPTCP subflows: LIA (RFC 6356), OLIA and
BALIA (see ``../shared/reference/coupled-cc.md``).

Each subflow gets its own controller object that implements the TCP
:class:`~stack.tcp.congestion.CongestionControl` interface, so the subflow's
TCP connection calls it exactly as it calls NewReno. The controllers of one
MPTCP connection belong to one :class:`CoupledGroup`, through which each sees
the others' windows and RTTs. Slow start, fast recovery and the RTO behaviour
are standard TCP (RFC 6356 §3: "only the congestion avoidance increase
changes"); OLIA and BALIA also change the decrease as their papers say.

Windows are bytes, as everywhere in the stack; the per-ACK increases are the
packet-unit formulas scaled by ``bytes_acked / MSS`` (byte counting), and
fractions of a byte are carried to the next ACK.

    group = CoupledGroup("lia")
    cc1 = group.subflow(mss=1460)      # or make_congestion("lia", 1460, group=group)
    cc2 = group.subflow(mss=1460)
    ...
    cc2.close()                        # the subflow is gone: leave the group
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stack.tcp.congestion import CongestionBase, register_congestion

__all__ = ["CoupledGroup", "CoupledCongestion", "Lia", "Olia", "Balia", "COUPLED_ALGORITHMS"]


class CoupledGroup:
    """The subflow controllers of one MPTCP connection."""

    __slots__ = ("algorithm", "members")

    def __init__(self, algorithm: str = "lia") -> None:
        algorithm = algorithm.lower()
        if algorithm not in COUPLED_ALGORITHMS:
            raise ValueError(f"unknown coupled congestion control {algorithm!r}")
        self.algorithm = algorithm
        self.members: list[CoupledCongestion] = []

    def subflow(self, mss: int, **kwargs: Any) -> CoupledCongestion:
        """A new controller of this group's algorithm for a new subflow."""
        return COUPLED_ALGORITHMS[self.algorithm](mss, group=self, **kwargs)

    def join(self, cc: CoupledCongestion) -> None:
        if cc not in self.members:
            self.members.append(cc)

    def leave(self, cc: CoupledCongestion) -> None:
        if cc in self.members:
            self.members.remove(cc)

    def active(self) -> list[CoupledCongestion]:
        """Subflows that take part in the coupling: not closed, not marked
        inactive (e.g. backup subflows not in use), with an RTT estimate."""
        return [m for m in self.members if m.active and m.rtt]

    def total_cwnd(self) -> int:
        return sum(m.cwnd for m in self.active())

    def lia_alpha(self) -> float:
        """RFC 6356 §3 eq. (2):
        alpha = cwnd_total * max_i(cwnd_i / rtt_i^2) / (sum_i cwnd_i / rtt_i)^2.
        1.0 (plain TCP) with a single subflow or none."""
        subs = self.active()
        if len(subs) < 2:
            return 1.0
        total = sum(m.cwnd for m in subs)
        best = max(m.cwnd / (m.rtt * m.rtt) for m in subs)  # type: ignore[operator]
        denom = sum(m.cwnd / m.rtt for m in subs)  # type: ignore[operator]
        return total * best / (denom * denom)


class CoupledCongestion(CongestionBase):
    """Common part of the coupled controllers: group membership, the last RTT
    seen on this subflow, Reno decrease, fractional byte carry."""

    name = "coupled"

    def __init__(self, mss: int, *, group: CoupledGroup | None = None, **kwargs: Any) -> None:
        super().__init__(mss, **kwargs)
        self.group = group if group is not None else CoupledGroup(self.name)
        self.rtt: float | None = None  # the subflow's SRTT, from on_ack
        self.active = True
        self._carry = 0.0
        self.group.join(self)

    def close(self) -> None:
        """The subflow is closed: stop counting it in the group."""
        self.active = False
        self.group.leave(self)

    def on_ack(
        self, acked_bytes: int, rtt: float | None, now: float, in_flight: int | None = None
    ) -> None:
        if rtt is not None and rtt > 0:
            self.rtt = rtt
        super().on_ack(acked_bytes, rtt, now, in_flight)

    def _ssthresh_after_loss(self, now: float, in_flight: int) -> int:
        # RFC 6356 §3: the decrease is standard TCP's, RFC 5681 eq. (4).
        self._carry = 0.0
        return max(in_flight // 2, 2 * self.mss)

    def _grow(self, inc_bytes: float) -> None:
        """Add a (possibly fractional or negative) increase to cwnd."""
        self._carry += inc_bytes
        whole = int(self._carry)  # truncates toward zero
        if whole:
            self._carry -= whole
            self.cwnd = max(self.mss, self.cwnd + whole)


class Lia(CoupledCongestion):
    """RFC 6356 Linked Increases."""

    name = "lia"

    def _avoid(self, acked_bytes: int, rtt: float | None, now: float) -> None:
        # RFC 6356 §3 eq. (1), byte counting:
        # cwnd_i += min(alpha * bytes_acked * MSS_i / cwnd_total,
        #               bytes_acked * MSS_i / cwnd_i)
        group = self.group
        subs = group.active()
        if self not in subs:
            subs = [*subs, self]
        total = sum(m.cwnd for m in subs)
        alpha = group.lia_alpha() if len(subs) > 1 else 1.0
        mss = self.mss
        coupled = alpha * acked_bytes * mss / total
        uncoupled = acked_bytes * mss / self.cwnd
        self._grow(min(coupled, uncoupled))


class Olia(CoupledCongestion):
    """OLIA (Khalili et al., IEEE/ACM ToN 2013; draft-khalili-mptcp-
    congestion-control §3). The inter-loss distance l_r is
    max(bytes acked between the last two losses, bytes acked since the last)."""

    name = "olia"

    def __init__(self, mss: int, **kwargs: Any) -> None:
        super().__init__(mss, **kwargs)
        self.loss_gap_prev = 0  # l_r^(1): bytes between the last two losses
        self.loss_gap_now = 0  # l_r^(2): bytes since the last loss

    @property
    def inter_loss(self) -> int:
        return max(self.loss_gap_prev, self.loss_gap_now)

    def on_ack(
        self, acked_bytes: int, rtt: float | None, now: float, in_flight: int | None = None
    ) -> None:
        if acked_bytes > 0:
            self.loss_gap_now += acked_bytes
        super().on_ack(acked_bytes, rtt, now, in_flight)

    def _note_loss(self) -> None:
        self.loss_gap_prev = self.loss_gap_now
        self.loss_gap_now = 0

    def _ssthresh_after_loss(self, now: float, in_flight: int) -> int:
        # OLIA's decrease is Reno's (w_r <- w_r / 2); remember the distance.
        self._note_loss()
        return super()._ssthresh_after_loss(now, in_flight)

    def olia_alpha(self) -> float:
        """alpha_r: +1/(|R|*|B\\M|) for r in B\\M, -1/(|R|*|M|) for r in M
        when B\\M is not empty, else 0. B: paths with the largest
        l_r / rtt_r^2; M: paths with the largest window."""
        subs = self.group.active()
        if self not in subs or len(subs) < 2:
            return 0.0
        quality = {id(m): m.inter_loss / (m.rtt * m.rtt) for m in subs}  # type: ignore[operator]
        best_q = max(quality.values())
        best = {id(m) for m in subs if quality[id(m)] >= best_q}
        max_w = max(m.cwnd for m in subs)
        largest = {id(m) for m in subs if m.cwnd >= max_w}
        collected = best - largest  # B \ M
        if not collected:
            return 0.0
        n = len(subs)
        if id(self) in collected:
            return 1.0 / (n * len(collected))
        if id(self) in largest:
            return -1.0 / (n * len(largest))
        return 0.0

    def _avoid(self, acked_bytes: int, rtt: float | None, now: float) -> None:
        # Per ACK, packets: w_r += (w_r/rtt_r^2) / (sum_p w_p/rtt_p)^2 + alpha_r/w_r
        subs = self.group.active()
        if self not in subs:
            subs = [*subs, self]
        mss = self.mss
        segs = acked_bytes / mss
        w = self.cwnd / mss
        if len(subs) < 2 or self.rtt is None:
            self._grow(segs / w * mss)  # alone: Reno
            return
        denom = sum((m.cwnd / mss) / m.rtt for m in subs)  # type: ignore[operator]
        first = (w / (self.rtt * self.rtt)) / (denom * denom)
        self._grow((first + self.olia_alpha() / w) * segs * mss)


class Balia(CoupledCongestion):
    """BALIA (Peng, Walid, Hwang, Low, IEEE/ACM ToN 2016;
    draft-walid-mptcp-congestion-control §3)."""

    name = "balia"

    def _rates(self) -> tuple[float, float, float] | None:
        """(x_r, x_max, sum x) in packets per second, or None when alone."""
        subs = self.group.active()
        if self not in subs:
            subs = [*subs, self]
        if len(subs) < 2 or self.rtt is None:
            return None
        mss = self.mss
        xs = [(m.cwnd / mss) / m.rtt for m in subs if m.rtt]
        return (self.cwnd / mss) / self.rtt, max(xs), sum(xs)

    def _avoid(self, acked_bytes: int, rtt: float | None, now: float) -> None:
        mss = self.mss
        segs = acked_bytes / mss
        w = self.cwnd / mss
        rates = self._rates()
        if rates is None:
            self._grow(segs / w * mss)  # alone: Reno
            return
        x, x_max, x_sum = rates
        a = x_max / x
        # w_r += x_r / (tau_r (sum x)^2) * ((1 + a)/2) * ((4 + a)/5) per ACK
        inc = x / (self.rtt * x_sum * x_sum) * ((1 + a) / 2) * ((4 + a) / 5)  # type: ignore[operator]
        self._grow(inc * segs * mss)

    def _ssthresh_after_loss(self, now: float, in_flight: int) -> int:
        # w_r -= (w_r / 2) * min(alpha_r, 1.5)
        self._carry = 0.0
        rates = self._rates()
        a = 1.0 if rates is None else rates[1] / rates[0]
        md = self.cwnd / 2 * min(a, 1.5)
        return max(int(self.cwnd - md), 2 * self.mss)


COUPLED_ALGORITHMS: dict[str, Callable[..., CoupledCongestion]] = {
    "lia": Lia,
    "olia": Olia,
    "balia": Balia,
}

for _name, _cls in COUPLED_ALGORITHMS.items():
    register_congestion(_name, _cls)
