"""Hosts joined by in-memory links, run in virtual time.

`Network.run()` advances a virtual clock from event to event: packet
arrivals (from the links) and host deadlines (`HostCore.next_deadline()`),
never sleeping. After each event it collects what the host transmitted and
hands it to the link of that interface. Arrivals at the same instant come
before timers, and ties keep the order they were scheduled in, so a run is a
pure function of the hosts' and links' seeds and of the application's
actions.

Applications act between events through `on_step(now)` (called after every
event) or at a chosen instant through `call_at(when, callback)`, and stop the
run with `condition()`; after either every host is flushed, so an app that
calls `host.wake(conn, now)` gets its segments onto the wire at that instant.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

from stack.host.core import HostCore
from stack.host.frame import Frame

from .link import Link

__all__ = ["Network", "SimulationLimit"]

Tap = Callable[[float, HostCore, str, Frame], None]


class SimulationLimit(RuntimeError):
    """`run()` processed `max_events` events without finishing."""


class Network:
    def __init__(self, rng: random.Random | None = None, *, start: float = 0.0) -> None:
        self.now = start
        self.rng = rng if rng is not None else random.Random(0)
        self.hosts: list[HostCore] = []
        # (id(host), iface) -> (link, far host, far iface)
        self._ports: dict[tuple[int, str], tuple[Link, HostCore, str]] = {}
        # (time, seq, host, iface, packet, checksum_verified); host None: a
        # call_at() callback in the packet slot
        self._events: list[tuple[float, int, Any, Any, Any, bool]] = []
        self._seq = itertools.count()
        self.taps: list[Tap] = []  # see every frame a host transmits
        self.events_run = 0
        self.unattached = 0  # frames sent on an interface with no link

    def add_host(self, host: HostCore) -> HostCore:
        if all(h is not host for h in self.hosts):
            self.hosts.append(host)
        return host

    def connect(self, a: HostCore, a_iface: str, b: HostCore, b_iface: str,
                ab: Link | None = None, ba: Link | None = None) -> tuple[Link, Link]:
        """Join interface `a_iface` of `a` and `b_iface` of `b` with a link
        pair (`ab` carries a -> b). Links without their own rng get one
        derived from the network's."""
        for host, name in ((a, a_iface), (b, b_iface)):
            if name not in host.interfaces:
                raise ValueError(f"{host.name or host!r} has no interface {name}")
            if (id(host), name) in self._ports:
                raise ValueError(f"{name} of {host.name or host!r} is already attached")
        ab = ab if ab is not None else Link(rng=random.Random(self.rng.getrandbits(64)))
        ba = ba if ba is not None else Link(rng=random.Random(self.rng.getrandbits(64)))
        self.add_host(a)
        self.add_host(b)
        self._ports[(id(a), a_iface)] = (ab, b, b_iface)
        self._ports[(id(b), b_iface)] = (ba, a, a_iface)
        return ab, ba

    def link(self, host: HostCore, iface: str) -> Link:
        """The link that carries what `host` sends on `iface`."""
        return self._ports[(id(host), iface)][0]

    # ------------------------------------------------------------------ running

    def flush(self, host: HostCore) -> None:
        """Put what `host` transmitted on its links."""
        frames = host.transmit()
        if not frames:
            return
        now = self.now
        for iface, frame in frames:
            for tap in self.taps:
                tap(now, host, iface, frame)
            port = self._ports.get((id(host), iface))
            if port is None:
                self.unattached += 1
                continue
            link, far, far_iface = port
            for t, pkt, verified in link.send(frame, now):
                heapq.heappush(self._events, (t, next(self._seq), far, far_iface, pkt, verified))

    def call_at(self, when: float, callback: Callable[[float], Any]) -> None:
        """Run `callback(now)` at virtual time `when` (an application action
        that no packet or timer would otherwise trigger, e.g. a reader that
        resumes); every host is flushed after it."""
        heapq.heappush(self._events, (max(when, self.now), next(self._seq), None, None,
                                      callback, False))

    def flush_all(self) -> None:
        for h in self.hosts:
            self.flush(h)

    def next_event_time(self) -> float | None:
        t = self._events[0][0] if self._events else None
        for h in self.hosts:
            d = h.next_deadline()
            if d is not None and (t is None or d < t):
                t = d
        return t

    def run(self, until: float | None = None, condition: Callable[[], Any] | None = None, *,
            on_step: Callable[[float], Any] | None = None,
            max_events: int = 5_000_000) -> bool:
        """Run events until `condition()` is true (returns True), virtual time
        would pass `until` (the clock stops at `until`, returns False) or
        nothing is left to do (returns False). Raises SimulationLimit after
        `max_events` events."""
        self.flush_all()
        if condition is not None and condition():
            return True
        events = self._events
        hosts = self.hosts
        n = 0
        while True:
            t_ev = events[0][0] if events else None
            t_host = None
            due: HostCore | None = None
            for h in hosts:
                d = h.next_deadline()
                if d is not None and (t_host is None or d < t_host):
                    t_host, due = d, h
            if t_ev is None and t_host is None:
                return False
            take_packet = t_host is None or (t_ev is not None and t_ev <= t_host)
            t = t_ev if take_packet else t_host
            if until is not None and t > until:  # type: ignore[operator]
                self.now = max(self.now, until)
                return False
            n += 1
            if n > max_events:
                raise SimulationLimit(f"{max_events} events without finishing at t={self.now}")
            if t > self.now:  # type: ignore[operator]
                self.now = t  # type: ignore[assignment]
            if take_packet:
                _, _, host, iface, pkt, verified = heapq.heappop(events)
                if host is None:  # call_at
                    pkt(self.now)
                else:
                    host.receive(pkt, iface, self.now, checksum_verified=verified)
            else:
                host = due  # type: ignore[assignment]
                host.on_timer(self.now)
            self.events_run += 1
            if host is None:
                self.flush_all()
            else:
                self.flush(host)
            if on_step is not None:
                on_step(self.now)
                self.flush_all()
            if condition is not None and condition():
                return True

    def run_until(self, predicate: Callable[[], Any], timeout: float = 600.0, *,
                  on_step: Callable[[float], Any] | None = None,
                  max_events: int = 5_000_000) -> bool:
        """Run until `predicate()` holds or `timeout` seconds of virtual time pass."""
        return self.run(until=self.now + timeout, condition=predicate, on_step=on_step,
                        max_events=max_events)
