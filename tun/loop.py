"""One event-loop thread around a sans-IO host core and its TUN devices.

The loop waits (epoll via `selectors`) on every device fd and on an eventfd
that application threads write to, until I/O arrives or the core's next
deadline passes. Each turn it feeds the packets read to
`host.receive(packet, iface, now, checksum_verified=...)`, calls
`host.on_timer(now)` when `host.next_deadline()` has passed, writes what
`host.transmit()` returns to the device of that interface, and then tells the
facade (`on_turn`) and every thread waiting on `cond`.

One lock guards the core: the loop holds it while it works, and application
threads take it for their calls (`with loop.lock:` ... then `loop.kick()`,
which flushes output at once and wakes the loop only when its sleep must
become shorter).
"""

from __future__ import annotations

import logging
import math
import os
import selectors
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from tun.device import TunDevice
from tun.gro import coalesce

log = logging.getLogger(__name__)

BATCH = 64  # packets read from one device before the core's output is flushed


class HostLike(Protocol):
    def receive(self, packet: bytes, iface: str, now: float, *,
                checksum_verified: bool = False) -> Any: ...
    def on_timer(self, now: float) -> Any: ...
    def next_deadline(self) -> float | None: ...
    def transmit(self) -> list[tuple[str, Any]]: ...


# tap(direction "in"|"out", iface, ip_packet, gso_size)
Tap = Callable[[str, str, bytes, int], None]


class EventLoop:
    def __init__(self, host: HostLike, devices: Mapping[str, TunDevice], *,
                 clock: Callable[[], float] = time.monotonic,
                 on_turn: Callable[[], None] | None = None,
                 tap: Tap | None = None, gro: bool = True,
                 name: str = "mpstack-loop") -> None:
        self.host = host
        self.devices = dict(devices)
        self.clock = clock
        self.on_turn = on_turn
        self.tap = tap
        self.gro = gro  # coalesce plain-mode reads (tun/gro.py)
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.errors = 0  # exceptions raised by the core and survived
        self.turns = 0
        self.failed_devices: dict[str, OSError] = {}
        self.failure: BaseException | None = None  # set if the loop thread died
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_fd, selectors.EVENT_READ, None)
        for iface, dev in self.devices.items():
            self._sel.register(dev.fileno(), selectors.EVENT_READ, (iface, dev))
        self._sleep_until = math.inf
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- control ----------------------------------------------------------------
    def start(self) -> EventLoop:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        """Make the loop re-evaluate the core now (any thread)."""
        fd = self._wake_fd
        if fd < 0:
            return
        try:
            os.eventfd_write(fd, 1)
        except OSError:
            pass

    def kick(self) -> None:
        """After an application call on the core (lock held): send its output
        now and wake the loop if the core's next deadline moved earlier."""
        self._flush()
        deadline = self.host.next_deadline()
        if deadline is not None and deadline < self._sleep_until:
            self._sleep_until = deadline
            self.wake()
        if self.on_turn is not None:
            self.on_turn()
        self.cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop = True
        self.wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._thread.is_alive():
            return  # did not stop in time: leave its descriptors alone
        self._sel.close()
        fd, self._wake_fd = self._wake_fd, -1
        if fd >= 0:
            os.close(fd)

    # -- the loop -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported to waiters
            self.failure = exc
            log.exception("event loop died")
            with self.lock:
                self.cond.notify_all()
                if self.on_turn is not None:
                    try:
                        self.on_turn()
                    except Exception:  # noqa: BLE001
                        pass

    def _loop(self) -> None:
        sel, host, clock, lock = self._sel, self.host, self.clock, self.lock
        while not self._stop:
            with lock:
                deadline = host.next_deadline()
                self._sleep_until = math.inf if deadline is None else deadline
            timeout = None if deadline is None else max(0.0, deadline - clock())
            events = sel.select(timeout)
            if self._stop:
                return
            with lock:
                self.turns += 1
                for key, _mask in events:
                    if key.data is None:
                        try:
                            os.eventfd_read(self._wake_fd)
                        except BlockingIOError:
                            pass
                        continue
                    iface, dev = key.data
                    self._read_device(iface, dev)
                now = clock()
                deadline = host.next_deadline()
                if deadline is not None and deadline <= now:
                    self._guard(host.on_timer, now)
                self._flush()
                if self.on_turn is not None:
                    self._guard(self.on_turn)
                self.cond.notify_all()

    def _read_device(self, iface: str, dev: TunDevice) -> None:
        host, tap = self.host, self.tap
        try:
            batch = dev.read_batch(BATCH)
        except OSError as exc:
            # The device went away (deleted, namespace gone): stop polling it
            # instead of spinning; the other devices keep working.
            log.warning("TUN %s failed (%s); no longer reading it", iface, exc)
            self.failed_devices[iface] = exc
            try:
                self._sel.unregister(dev.fileno())
            except (KeyError, ValueError, OSError):
                pass
            return
        if not batch:
            return
        now = self.clock()
        if tap is not None:
            for packet, info in batch:
                self._tap("in", iface, packet, info.gso_size)
        if self.gro and not dev.vnet and len(batch) > 1:
            # Plain mode: join in-order segments as the kernel would (tun/gro.py).
            for packet, verified in coalesce([p for p, _ in batch]):
                self._guard(host.receive, packet, iface, now, checksum_verified=verified)
        else:
            for packet, info in batch:
                self._guard(host.receive, packet, iface, now,
                            checksum_verified=info.checksum_verified)
        # Answer (ACKs, data the new window allows) before reading more.
        self._flush()

    def _flush(self) -> None:
        devices, tap = self.devices, self.tap
        for _ in range(64):
            out = self._guard(self.host.transmit)
            if not out:
                return
            for iface, frame in out:
                dev = devices.get(iface)
                if dev is None:
                    continue
                if tap is not None:
                    if isinstance(frame, bytes | bytearray | memoryview):
                        self._tap("out", iface, frame, 0)
                    else:
                        self._tap("out", iface, frame.data, frame.gso_size)
                dev.write(frame)

    def _tap(self, direction: str, iface: str, packet: bytes, gso: int) -> None:
        tap = self.tap
        if tap is None:
            return
        try:
            tap(direction, iface, packet, gso)
        except Exception:  # noqa: BLE001 - e.g. the capture file's disk is full
            log.exception("packet tap failed; recording stopped")
            self.tap = None

    def _guard(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """A bug in the core must not stop the loop: count it and go on."""
        try:
            return fn(*args, **kw)
        except Exception:  # noqa: BLE001
            self.errors += 1
            if self.errors <= 10:
                log.exception("core raised in %s", getattr(fn, "__name__", fn))
            return None
