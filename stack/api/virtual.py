"""Facade hosts over in-memory links, in real time (no TUN, no root).

`VirtualLoop` plays the part of `tun.loop.EventLoop` for hosts joined by a
`stack.netsim.Network`: one thread advances the network's clock with the real
clock (`net.run(until=now)`), sleeps until the next packet arrival or host
deadline, and is woken by application threads. Links keep their rate, delay,
loss and queue models, now in wall-clock time.

    a, b = stack.Host.virtual(delay=0.005, rate_bps=100e6)
    srv = b.create_server(("", 80)); c = a.create_connection(("10.1.0.2", 80))

Path p (from 1) joins interface `v<p>` of both hosts: host A has 10.<p>.0.1/24
and fd00:<p>::1/64, host B 10.<p>.0.2/24 and fd00:<p>::2/64.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from stack.host import HostCore
from stack.netsim import Link, Network

log = logging.getLogger(__name__)


class VirtualLoop:
    """One thread driving a Network in real time (the EventLoop interface)."""

    def __init__(self, net: Network, *, clock: Callable[[], float] = time.monotonic,
                 name: str = "mpstack-virtual") -> None:
        self.net = net
        offset = clock() - net.now
        self.clock: Callable[[], float] = lambda: clock() - offset
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.hooks: list[Callable[[], None]] = []  # each host's on_turn
        self.errors = 0
        self.turns = 0
        self.failure: BaseException | None = None
        self.users = 0  # hosts still open on this loop
        self._sleep_until = math.inf
        self._event = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> VirtualLoop:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        self._event.set()

    def kick(self) -> None:
        """After an application call (lock held): put the output on the links."""
        net = self.net
        net.now = max(net.now, self.clock())
        net.flush_all()
        nxt = net.next_event_time()
        if nxt is not None and nxt < self._sleep_until:
            self._event.set()
        self._turn_done()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop = True
        self._event.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _turn_done(self) -> None:
        for hook in self.hooks:
            try:
                hook()
            except Exception:  # noqa: BLE001 - a facade bug must not stop the loop
                self.errors += 1
                log.exception("on_turn hook failed")
        self.cond.notify_all()

    def _run(self) -> None:
        try:
            while not self._stop:
                with self.lock:
                    self.turns += 1
                    try:
                        self.net.run(until=self.clock())
                    except Exception:  # noqa: BLE001 - counted, the loop goes on
                        self.errors += 1
                        if self.errors <= 10:
                            log.exception("core raised in the virtual network")
                    self._turn_done()
                    nxt = self.net.next_event_time()
                    self._sleep_until = math.inf if nxt is None else nxt
                    self._event.clear()
                timeout = None if nxt is None else max(0.0, nxt - self.clock())
                self._event.wait(timeout)
        except BaseException as exc:  # noqa: BLE001 - reported to waiters
            self.failure = exc
            log.exception("virtual loop died")
            with self.lock:
                self.cond.notify_all()


def virtual_cores(paths: int = 1, *, rng: random.Random | None = None, mtu: int = 1500,
                  offload: bool = False, links: list[dict[str, Any]] | None = None,
                  **link_kw: Any) -> tuple[Network, HostCore, HostCore]:
    """Two HostCores joined by `paths` link pairs (keyword arguments of `Link`,
    the same for every path and direction, or one dict per path in `links`)."""
    if paths < 1:
        raise ValueError("at least one path")
    rng = rng if rng is not None else random.Random()
    net = Network(random.Random(rng.getrandbits(64)))
    a = HostCore(random.Random(rng.getrandbits(64)), name="A")
    b = HostCore(random.Random(rng.getrandbits(64)), name="B")
    for p in range(1, paths + 1):
        iface = f"v{p}"
        a.add_interface(iface, mtu, [f"10.{p}.0.1/24", f"fd00:{p}::1/64"], offload=offload)
        b.add_interface(iface, mtu, [f"10.{p}.0.2/24", f"fd00:{p}::2/64"], offload=offload)
        kw = dict(link_kw if links is None else links[p - 1])
        ab = Link(rng=random.Random(rng.getrandbits(64)), **kw)
        ba = Link(rng=random.Random(rng.getrandbits(64)), **kw)
        net.connect(a, iface, b, iface, ab, ba)
    return net, a, b
