"""Packet schedulers: which subflow carries the next chunk of data (RFC 8684
§3.3.8 leaves the policy to the implementation).

One small interface: ``select(subflows) -> list[SubflowState]`` returns the
subflows to send the next chunk on, best first; empty means "wait" (every
eligible subflow's congestion window is full). The default, ``MinRtt``,
follows Linux (net/mptcp/protocol.c ``mptcp_subflow_get_send``):

* only usable subflows count (established -- a join after its fourth ACK --,
  not closing); stale ones (``stale_loss_cnt`` RTOs in a row without progress,
  pm.c ``mptcp_pm_subflow_chk_stale``) are skipped unless all are stale;
* backup subflows (MP_JOIN/MP_PRIO B bit) are used only when no non-backup
  subflow is usable; if the best non-backup subflow has no window space we
  wait rather than spill onto a backup;
* among the candidates with window space, the lowest smoothed RTT wins
  (ties: lowest id; a subflow with no RTT sample yet comes last).

``RoundRobin`` rotates over the same candidates; ``Redundant`` sends every
chunk on all of them (``DataSender.redundant`` gives each subflow a copy);
``HotStandby`` keeps everything on the primary subflow; ``LowestRtt`` only
ever uses the lowest-RTT one. Register more in ``SCHEDULERS``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

__all__ = [
    "STALE_LOSS_CNT",
    "SCHEDULERS",
    "HotStandby",
    "LowestRtt",
    "MinRtt",
    "Redundant",
    "RoundRobin",
    "Scheduler",
    "StaleTracker",
    "SubflowState",
    "candidates",
    "is_stale",
    "make_scheduler",
]

STALE_LOSS_CNT = 4  # net.mptcp.stale_loss_cnt


def is_stale(consecutive_rtos: int, limit: int = STALE_LOSS_CNT) -> bool:
    """A subflow whose RTO fired ``limit`` times without progress is stale."""
    return consecutive_rtos >= limit


@dataclass(slots=True)
class StaleTracker:
    """Per-subflow stale detection (pm.c ``mptcp_pm_subflow_chk_stale``): a
    subflow whose retransmission timer fired ``limit`` times while nothing
    new arrived from the peer is stale -- not scheduled, its data re-injected
    elsewhere -- until it shows life again."""

    limit: int = STALE_LOSS_CNT
    rtos: int = 0

    def on_rto(self) -> bool:
        """The subflow's RTO fired; True when it just became stale."""
        self.rtos += 1
        return self.rtos == self.limit

    def on_progress(self) -> bool:
        """The peer acknowledged new data (or sent any); True when the
        subflow was stale and is usable again."""
        was = self.stale
        self.rtos = 0
        return was

    @property
    def stale(self) -> bool:
        return is_stale(self.rtos, self.limit)


@dataclass(frozen=True, slots=True)
class SubflowState:
    """What a scheduler knows about one subflow."""

    id: int
    srtt: float | None = None  # seconds; None before the first sample
    cwnd: int = 0  # bytes
    in_flight: int = 0  # bytes
    backup: bool = False
    usable: bool = True
    stale: bool = False

    @property
    def space(self) -> int:
        return max(0, self.cwnd - self.in_flight)


class Scheduler(Protocol):
    name: ClassVar[str]

    def select(self, subflows: Sequence[SubflowState]) -> list[SubflowState]: ...


def candidates(subflows: Sequence[SubflowState]) -> list[SubflowState]:
    """Usable subflows of the preferred class: non-backup if any is usable,
    else backup; stale ones only when every usable subflow is stale."""
    usable = [s for s in subflows if s.usable]
    fresh = [s for s in usable if not s.stale] or usable
    active = [s for s in fresh if not s.backup]
    return active if active else [s for s in fresh if s.backup]


def _rtt_key(s: SubflowState) -> tuple[float, int]:
    return (math.inf if s.srtt is None else s.srtt, s.id)


class MinRtt:
    """Lowest RTT among subflows with congestion-window space (the default)."""

    name: ClassVar[str] = "default"

    def select(self, subflows: Sequence[SubflowState]) -> list[SubflowState]:
        open_ = [s for s in candidates(subflows) if s.space > 0]
        return [min(open_, key=_rtt_key)] if open_ else []


class RoundRobin:
    """Each chunk on the next candidate with space, in id order."""

    name: ClassVar[str] = "roundrobin"

    def __init__(self) -> None:
        self.last: int | None = None

    def select(self, subflows: Sequence[SubflowState]) -> list[SubflowState]:
        open_ = sorted((s for s in candidates(subflows) if s.space > 0), key=lambda s: s.id)
        if not open_:
            return []
        after = [s for s in open_ if self.last is None or s.id > self.last]
        pick = after[0] if after else open_[0]
        self.last = pick.id
        return [pick]


class Redundant:
    """Every chunk on every candidate with space (lowest RTT first)."""

    name: ClassVar[str] = "redundant"

    def select(self, subflows: Sequence[SubflowState]) -> list[SubflowState]:
        return sorted((s for s in candidates(subflows) if s.space > 0), key=_rtt_key)


class HotStandby:
    """Hot standby (RFC 6897 A11 "backup"): all data on the primary -- the
    oldest usable subflow of the preferred class -- the others stay open and
    idle and take over when it fails (stale or closed)."""

    name: ClassVar[str] = "backup"

    def select(self, subflows: Sequence[SubflowState]) -> list[SubflowState]:
        cands = candidates(subflows)
        if not cands:
            return []
        primary = min(cands, key=lambda s: s.id)
        return [primary] if primary.space > 0 else []


class LowestRtt:
    """Only the lowest-RTT healthy subflow carries data; when its window is
    full we wait rather than spill onto a slower path (low latency and
    jitter: RFC 6897 A8 "interactive")."""

    name: ClassVar[str] = "lowrtt"

    def select(self, subflows: Sequence[SubflowState]) -> list[SubflowState]:
        cands = candidates(subflows)
        if not cands:
            return []
        best = min(cands, key=_rtt_key)
        return [best] if best.space > 0 else []


SCHEDULERS: dict[str, type] = {
    "default": MinRtt,
    "minrtt": MinRtt,
    "roundrobin": RoundRobin,
    "redundant": Redundant,
    "backup": HotStandby,
    "lowrtt": LowestRtt,
}


def make_scheduler(name: str = "default") -> Scheduler:
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r} (have {sorted(SCHEDULERS)})") from None
