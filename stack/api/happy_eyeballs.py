"""Connect by name: resolve every address and race them (RFC 8305 Happy Eyeballs v2).

RFC 6897 Appendix A ("connectbyname", checklist row A5) asks for a call that
connects to a name without the application handling addresses; §6.4 (row C2)
warns that several A/AAAA records of one name need not be one host. So:

- every address of the name is resolved (`getaddrinfo`, both families;
  RFC 6724 ordering is the resolver's), then the families are interleaved
  (RFC 8305 §4, "First Address Family Count" = 1);
- attempts start one by one, a Connection Attempt Delay apart (250 ms, RFC
  8305 §5 and §8), and at once when an earlier attempt fails;
- the first attempt to complete the handshake wins; every other attempt is
  closed (§5: "all other connection attempts are canceled");
- the winning connection is the connection: the other addresses are never
  used as extra MPTCP paths of it (they may be other hosts, RFC 6897 §6.4).

The racing logic is the sans-IO `Race` (time and outcomes are passed in), the
same for the blocking driver here (`race`, `create_connection`) and the
asyncio one (`stack.asyncio`). A `Connector` starts and watches attempts;
`FacadeConnector` does it with non-blocking facade sockets, whose
`writable_fileno()` becomes readable once a connect has completed or failed.

    sock = create_connection(host, ("example.net", 80), timeout=10)
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import select
import socket as _std
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# RFC 8305 §8: Connection Attempt Delay 250 ms recommended; §5: at least
# 100 ms recommended (10 ms absolute minimum), at most 2 s.
ATTEMPT_DELAY = 0.25
MIN_ATTEMPT_DELAY = 0.01
MAX_ATTEMPT_DELAY = 2.0

Address = tuple[Any, ...]  # a sockaddr: (host, port) or (host, port, flow, scope)
_DEFAULT = object()


def interleave(addresses: Sequence[tuple[int, Address]],
               first_family_count: int = 1) -> list[tuple[int, Address]]:
    """RFC 8305 §4: keep the resolver's order within each family, start with
    the family of the first address, then alternate families (after
    `first_family_count` addresses of the first one). Duplicates are dropped."""
    seen: set[tuple[int, Any, Any]] = set()
    unique: list[tuple[int, Address]] = []
    for family, sockaddr in addresses:
        key = (family, sockaddr[0], sockaddr[1])
        if key not in seen:
            seen.add(key)
            unique.append((family, sockaddr))
    if not unique:
        return []
    first = unique[0][0]
    primary = [a for a in unique if a[0] == first]
    other = [a for a in unique if a[0] != first]
    out = primary[:first_family_count]
    primary = primary[first_family_count:]
    while primary or other:
        if other:
            out.append(other.pop(0))
        if primary:
            out.append(primary.pop(0))
    return out


@dataclass
class Race:
    """The racing logic of RFC 8305 §5, sans-IO: what to start and when.

    Drive it with `start_due(now)` (indices of the attempts to start now),
    `on_failed(i, error, now)`, `on_connected(i, now)` and
    `next_deadline()`; it is over when `done` (a `winner`, or every address
    tried and failed, or the overall `deadline` passed)."""

    count: int
    now: float
    attempt_delay: float = ATTEMPT_DELAY
    deadline: float | None = None
    started: int = 0  # attempts started so far (they start in index order)
    active: set[int] = field(default_factory=set)
    winner: int | None = None
    errors: dict[int, BaseException] = field(default_factory=dict)
    timed_out: bool = False
    _next_start: float | None = None

    def __post_init__(self) -> None:
        if not MIN_ATTEMPT_DELAY <= self.attempt_delay <= MAX_ATTEMPT_DELAY:
            raise ValueError(f"attempt delay {self.attempt_delay} s outside "
                             f"{MIN_ATTEMPT_DELAY}..{MAX_ATTEMPT_DELAY} (RFC 8305 §5)")
        self._next_start = self.now if self.count else None

    @property
    def done(self) -> bool:
        return (self.winner is not None or self.timed_out
                or (self.started == self.count and not self.active))

    def start_due(self, now: float) -> list[int]:
        """Indices to start now (at most one per call unless failures made
        several due); marks them active."""
        if self.done:
            return []
        if self.deadline is not None and now >= self.deadline:
            self.timed_out = True
            return []
        out: list[int] = []
        if (self._next_start is not None and now >= self._next_start
                and self.started < self.count):
            i = self.started
            self.started += 1
            self.active.add(i)
            out.append(i)
            self._next_start = now + self.attempt_delay if self.started < self.count else None
        return out

    def on_failed(self, index: int, error: BaseException, now: float) -> None:
        """An attempt failed (refused, unreachable, timed out...): the next
        one starts at once (no point waiting for the delay)."""
        self.active.discard(index)
        self.errors[index] = error
        if self.winner is None and self.started < self.count:
            self._next_start = now

    def on_connected(self, index: int, now: float) -> None:
        """The handshake of attempt `index` completed: it wins if it is first."""
        self.active.discard(index)
        if self.winner is None:
            self.winner = index

    def next_deadline(self) -> float | None:
        """When `start_due` (or the overall timeout) next needs calling."""
        if self.done:
            return None
        times = [t for t in (self._next_start if self.started < self.count else None,
                             self.deadline) if t is not None]
        return min(times) if times else None


class Connector(Protocol):
    """Starts and watches connection attempts for the blocking driver."""

    def start(self, family: int, address: Address) -> Any:
        """Begin a non-blocking connect; raise OSError if it fails at once."""

    def wait(self, attempts: Sequence[Any], timeout: float | None
             ) -> list[tuple[Any, BaseException | None]]:
        """Attempts that completed (None) or failed (the error) within
        `timeout` seconds; [] when none did."""

    def cancel(self, attempt: Any) -> None:
        """Give up an attempt (close it; a completed loser is closed too)."""


def race(addresses: Sequence[tuple[int, Address]], connector: Connector, *,
         attempt_delay: float = ATTEMPT_DELAY, timeout: float | None = None,
         clock: Callable[[], float] = time.monotonic, all_errors: bool = False
         ) -> tuple[int, Any, list[BaseException]]:
    """Race `addresses` (already interleaved); return (index, attempt, errors
    of the attempts that failed). Raises TimeoutError when `timeout` passes,
    or the errors (see `create_connection`) when every attempt failed."""
    now = clock()
    r = Race(len(addresses), now, attempt_delay=attempt_delay,
             deadline=None if timeout is None else now + timeout)
    attempts: dict[int, Any] = {}
    try:
        while not r.done:
            for i in r.start_due(now):
                family, sockaddr = addresses[i]
                try:
                    attempts[i] = connector.start(family, sockaddr)
                except OSError as exc:
                    r.on_failed(i, exc, now)
            if r.done:
                break
            if not r.active:
                now = clock()
                continue  # a failure at once: the next address is due now
            deadline = r.next_deadline()
            live = [attempts[i] for i in sorted(r.active)]
            wait = None if deadline is None else max(0.0, deadline - now)
            results = connector.wait(live, wait)
            now = clock()
            index_of = {id(a): i for i, a in attempts.items()}
            for attempt, error in results:
                i = index_of[id(attempt)]
                if error is None:
                    r.on_connected(i, now)
                else:
                    r.on_failed(i, error, now)
                    connector.cancel(attempt)
                    del attempts[i]
            if r.deadline is not None and now >= r.deadline and r.winner is None:
                r.timed_out = True
    finally:
        # RFC 8305 §5: once one attempt succeeds, all others are canceled
        # (and on any failure or exception here, all of them are).
        for i, attempt in list(attempts.items()):
            if i != r.winner:
                connector.cancel(attempt)
    errors = [r.errors[i] for i in sorted(r.errors)]
    if r.winner is not None:
        return r.winner, attempts[r.winner], errors
    if r.timed_out:
        raise TimeoutError("timed out")
    raise _failure(errors, all_errors)


def _failure(errors: list[BaseException], all_errors: bool = False) -> BaseException:
    if not errors:
        return OSError(errno.EADDRNOTAVAIL, "getaddrinfo returned an empty list")
    if all_errors:
        return ExceptionGroup("create_connection failed",
                              [e for e in errors if isinstance(e, Exception)])
    return errors[0]  # as socket.create_connection: the first address's error


class FacadeConnector:
    """Attempts as non-blocking sockets of a facade host (`stack.Host`)."""

    def __init__(self, host: Any, source_address: Address | None = None) -> None:
        self.host = host
        self.source_address = source_address

    def start(self, family: int, address: Address) -> Any:
        sock = self.host.socket(family, _std.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if self.source_address is not None:
                sock.bind(self.source_address)
            code = sock.connect_ex(address)
            if code not in (0, errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN):
                raise OSError(code, os.strerror(code))
        except BaseException:
            sock.close()
            raise
        return sock

    def wait(self, attempts: Sequence[Any], timeout: float | None
             ) -> list[tuple[Any, BaseException | None]]:
        by_fd = {s.writable_fileno(): s for s in attempts}
        poller = select.poll()  # not select(): descriptors may be above 1023
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        ready = poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
        out: list[tuple[Any, BaseException | None]] = []
        for fd, _events in ready:
            sock = by_fd[fd]
            code = sock.getsockopt(_std.SOL_SOCKET, _std.SO_ERROR)
            out.append((sock, OSError(code, os.strerror(code)) if code else None))
        return out

    def cancel(self, attempt: Any) -> None:
        attempt.close()


def resolve(name: str, port: int, *, family: int = _std.AF_UNSPEC,
            resolver: Callable[..., list[Any]] = _std.getaddrinfo
            ) -> list[tuple[int, Address]]:
    """Every TCP address of `name` (an IP literal gives itself), in the
    resolver's order: [(family, sockaddr), ...]."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        fam = _std.AF_INET if ip.version == 4 else _std.AF_INET6
        if family not in (_std.AF_UNSPEC, fam):
            raise _std.gaierror(_std.EAI_FAMILY, "address family for hostname not supported")
        return [(fam, (str(ip), port))]
    infos = resolver(name, port, family, _std.SOCK_STREAM)
    return [(int(info[0]), tuple(info[4])) for info in infos
            if info[0] in (_std.AF_INET, _std.AF_INET6)]


def create_connection(host: Any, address: tuple[str, int], timeout: Any = _DEFAULT,
                      source_address: Address | None = None, *,
                      attempt_delay: float = ATTEMPT_DELAY, all_errors: bool = False,
                      resolver: Callable[..., list[Any]] = _std.getaddrinfo,
                      clock: Callable[[], float] = time.monotonic) -> Any:
    """Connect a socket of the facade `host` to `address` = (name, port),
    racing every address of the name (RFC 8305). As `socket.create_connection`:
    `timeout` (default: `socket.getdefaulttimeout()`) bounds the whole race and
    stays the socket's timeout; `source_address` binds each attempt (only
    addresses of its family are tried); when all fail, the first address's
    error is raised (an ExceptionGroup with `all_errors=True`)."""
    name, port = address[0], address[1]
    if timeout is _DEFAULT:
        timeout = _std.getdefaulttimeout()
    family = _std.AF_UNSPEC
    if source_address is not None and source_address[0]:
        family = (_std.AF_INET if ipaddress.ip_address(source_address[0]).version == 4
                  else _std.AF_INET6)
    addresses = interleave(resolve(name, port, family=family, resolver=resolver))
    if not addresses:
        raise _failure([], all_errors)
    connector = FacadeConnector(host, source_address)
    _index, sock, _errors = race(addresses, connector, attempt_delay=attempt_delay,
                                 timeout=timeout, clock=clock, all_errors=all_errors)
    sock.settimeout(timeout)
    return sock


__all__ = ["ATTEMPT_DELAY", "Connector", "FacadeConnector", "Race", "create_connection",
           "interleave", "race", "resolve"]
