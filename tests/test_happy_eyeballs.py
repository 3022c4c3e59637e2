"""Happy Eyeballs connect-by-name (RFC 6897 A5, C2; RFC 8305 §4, §5).

The racing logic runs against a fake connector in fake time: each address has
a scripted outcome (connects after d seconds, fails after d seconds, never
answers, or fails at once), and the test reads back when each attempt started
and which were cancelled. Then real races: over in-memory links (no root) and
through a TUN against the kernel in a namespace, where the first address is
blackholed and the second wins after one attempt delay.
"""

from __future__ import annotations

import errno
import itertools
import math
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

import stack  # noqa: E402
from stack.api.happy_eyeballs import (  # noqa: E402
    Race,
    create_connection,
    interleave,
    race,
)
from tools.topology import Topology, can_run  # noqa: E402

V4, V6 = socket.AF_INET, socket.AF_INET6
NEVER = math.inf


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Attempt:
    address: str
    started: float
    done_at: float
    error: BaseException | None


class FakeConnector:
    """Scripted outcomes per address: (seconds until the handshake ends, error
    or None); an exception instead of a tuple is raised by start() itself."""

    def __init__(self, clock: FakeClock, script: dict[str, Any]) -> None:
        self.clock = clock
        self.script = script
        self.started: list[tuple[str, float]] = []
        self.cancelled: list[str] = []

    def start(self, family: int, address: tuple[Any, ...]) -> Attempt:
        outcome = self.script[address[0]]
        self.started.append((address[0], self.clock.t))
        if isinstance(outcome, BaseException):
            raise outcome
        delay, error = outcome
        return Attempt(address[0], self.clock.t, self.clock.t + delay, error)

    def wait(self, attempts: list[Attempt], timeout: float | None
             ) -> list[tuple[Attempt, BaseException | None]]:
        first = min(a.done_at for a in attempts)
        limit = NEVER if timeout is None else self.clock.t + timeout
        assert first < NEVER or limit < NEVER, "the driver would wait forever"
        if first <= limit:
            self.clock.t = first
            return [(a, a.error) for a in attempts if a.done_at == first]
        self.clock.t = limit
        return []

    def cancel(self, attempt: Attempt) -> None:
        self.cancelled.append(attempt.address)


def addrs(*hosts: str, port: int = 80) -> list[tuple[int, tuple[Any, ...]]]:
    return [(V6 if ":" in h else V4, (h, port)) for h in hosts]


def run_race(script: dict[str, Any], order: list[str], **kw: Any
             ) -> tuple[FakeConnector, FakeClock, Any]:
    clock = FakeClock()
    conn = FakeConnector(clock, script)
    result = race(addrs(*order), conn, clock=clock, **kw)
    return conn, clock, result


REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


# ------------------------------------------------------------- RFC 8305 §4
def test_interleave_alternates_families_starting_with_the_first() -> None:
    """RFC 8305 §4: v6, v6, v6, v4, v4 -> v6, v4, v6, v4, v6 (order kept per family)."""
    got = interleave(addrs("2001:db8::1", "2001:db8::2", "2001:db8::3", "192.0.2.1",
                           "192.0.2.2"))
    assert [a[1][0] for a in got] == ["2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2",
                                      "2001:db8::3"]
    got = interleave(addrs("192.0.2.1", "192.0.2.2", "2001:db8::1"))
    assert [a[1][0] for a in got] == ["192.0.2.1", "2001:db8::1", "192.0.2.2"]


def test_interleave_first_family_count_and_duplicates() -> None:
    got = interleave(addrs("2001:db8::1", "2001:db8::1", "2001:db8::2", "192.0.2.1"),
                     first_family_count=2)
    assert [a[1][0] for a in got] == ["2001:db8::1", "2001:db8::2", "192.0.2.1"]
    assert interleave([]) == []


# ------------------------------------------------------------- RFC 8305 §5
def test_first_address_fast_no_second_attempt() -> None:
    """A5: the first address answers within the attempt delay: one attempt only."""
    conn, clock, (index, attempt, errors) = run_race(
        {"2001:db8::1": (0.05, None), "192.0.2.1": (0.01, None)}, ["2001:db8::1", "192.0.2.1"])
    assert (index, attempt.address, errors) == (0, "2001:db8::1", [])
    assert conn.started == [("2001:db8::1", 0.0)]
    assert clock.t == pytest.approx(0.05)


def test_blackholed_first_address_second_starts_after_the_delay_and_wins() -> None:
    """RFC 8305 §5: the next attempt starts 250 ms later; the first one to
    connect wins and the pending loser is cancelled (A5, C2)."""
    conn, clock, (index, attempt, _) = run_race(
        {"2001:db8::1": (NEVER, None), "192.0.2.1": (0.02, None)}, ["2001:db8::1", "192.0.2.1"])
    assert index == 1 and attempt.address == "192.0.2.1"
    assert conn.started == [("2001:db8::1", 0.0), ("192.0.2.1", 0.25)]
    assert clock.t == pytest.approx(0.27)
    assert conn.cancelled == ["2001:db8::1"]


def test_attempt_delay_is_configurable() -> None:
    conn, _, _ = run_race({"a::1": (NEVER, None), "b::1": (NEVER, None), "192.0.2.9": (0.0, None)},
                          ["a::1", "b::1", "192.0.2.9"], attempt_delay=0.1)
    assert conn.started == [("a::1", 0.0), ("b::1", 0.1), ("192.0.2.9", 0.2)]
    with pytest.raises(ValueError):
        run_race({"a::1": (0.0, None)}, ["a::1"], attempt_delay=0.001)


def test_failure_starts_the_next_attempt_at_once() -> None:
    """A refusal after 100 ms starts the next attempt then, not at 250 ms."""
    conn, clock, (index, _, errors) = run_race(
        {"2001:db8::1": (0.1, REFUSED), "192.0.2.1": (0.05, None)},
        ["2001:db8::1", "192.0.2.1"])
    assert index == 1
    assert conn.started == [("2001:db8::1", 0.0), ("192.0.2.1", 0.1)]
    assert clock.t == pytest.approx(0.15)
    assert errors == [REFUSED]


def test_immediate_start_failure_moves_on_without_waiting() -> None:
    """No route for IPv6 (the host has no v6 address): the v4 attempt starts at t=0."""
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    conn, _, (index, attempt, errors) = run_race(
        {"2001:db8::1": unreachable, "192.0.2.1": (0.03, None)}, ["2001:db8::1", "192.0.2.1"])
    assert (index, attempt.address) == (1, "192.0.2.1")
    assert conn.started == [("2001:db8::1", 0.0), ("192.0.2.1", 0.0)]
    assert errors == [unreachable]


def test_later_attempt_wins_while_the_first_is_still_pending() -> None:
    """Each record may be another host (RFC 6897 §6.4): the winner alone is
    kept; the slower first attempt, still in its handshake, is cancelled."""
    conn, _, (index, _, _) = run_race(
        {"2001:db8::1": (0.4, None), "192.0.2.1": (0.05, None)}, ["2001:db8::1", "192.0.2.1"])
    assert index == 1
    assert conn.cancelled == ["2001:db8::1"]


def test_simultaneous_completion_first_listed_wins_other_closed() -> None:
    conn, clock, (index, _, _) = run_race(
        {"2001:db8::1": (0.5, None), "192.0.2.1": (0.25, None)}, ["2001:db8::1", "192.0.2.1"])
    assert clock.t == 0.5  # both done at once; the first one reported wins
    assert index == 0
    assert conn.cancelled == ["192.0.2.1"]


def test_all_fail_raises_the_first_error_or_all_of_them() -> None:
    script = {"2001:db8::1": (0.1, REFUSED),
              "192.0.2.1": (0.2, TimeoutError(errno.ETIMEDOUT, "timed out"))}
    with pytest.raises(ConnectionRefusedError):
        run_race(script, ["2001:db8::1", "192.0.2.1"])
    with pytest.raises(ExceptionGroup) as info:
        run_race(script, ["2001:db8::1", "192.0.2.1"], all_errors=True)
    assert [type(e) for e in info.value.exceptions] == [ConnectionRefusedError, TimeoutError]


def test_overall_timeout_cancels_everything() -> None:
    clock = FakeClock()
    conn = FakeConnector(clock, {h: (NEVER, None) for h in ("a::1", "192.0.2.1", "b::1")})
    with pytest.raises(TimeoutError):
        race(addrs("a::1", "192.0.2.1", "b::1"), conn, clock=clock, timeout=0.6)
    assert conn.started == [("a::1", 0.0), ("192.0.2.1", 0.25), ("b::1", 0.5)]
    assert sorted(conn.cancelled) == ["192.0.2.1", "a::1", "b::1"]
    assert clock.t == pytest.approx(0.6)


def test_race_state_machine_deadlines() -> None:
    r = Race(2, 10.0, deadline=11.0)
    assert r.next_deadline() == 10.0
    assert r.start_due(10.0) == [0]
    assert r.next_deadline() == pytest.approx(10.25)
    assert r.start_due(10.1) == []
    assert r.start_due(10.25) == [1]
    assert r.next_deadline() == 11.0  # only the overall timeout is left
    r.on_connected(1, 10.3)
    assert r.done and r.winner == 1 and r.next_deadline() is None
    r.on_connected(0, 10.4)  # a late second success does not change the winner
    assert r.winner == 1
    assert Race(0, 0.0).done


# ------------------------------------------------------------ real sockets
_ports = itertools.count(7100)


def _serve_once(server: Any, payload: bytes) -> threading.Thread:
    def run() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(payload)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_virtual_blackholed_v6_then_v4_wins() -> None:
    """Over in-memory links (no root): the name resolves to an IPv6 address
    nobody answers and to the server's IPv4 address; the v4 attempt starts
    ~250 ms later and wins; no connection to the blackholed address remains."""
    a, b = stack.Host.virtual(delay=0.001)
    try:
        port = next(_ports)
        srv = b.create_server(("10.1.0.2", port))
        t = _serve_once(srv, b"hello")

        def resolver(name: str, port: int, family: int, type: int) -> list[Any]:
            assert name == "multi.example"
            return [(V6, socket.SOCK_STREAM, 6, "", ("fd00:1::99", port, 0, 0)),
                    (V4, socket.SOCK_STREAM, 6, "", ("10.1.0.2", port))]

        started = time.monotonic()
        sock = create_connection(a, ("multi.example", port), timeout=5, resolver=resolver)
        elapsed = time.monotonic() - started
        with sock:
            assert sock.getpeername() == ("10.1.0.2", port)
            assert sock.recv(5) == b"hello"
        assert 0.2 < elapsed < 1.5
        t.join(5)
        with a.lock:
            remotes = {str(c.remote[0]) for c in a.core.connections}
        assert "fd00:1::99" not in remotes
        srv.close()
    finally:
        a.close(timeout=1)
        b.close(timeout=1)


def test_virtual_ip_literal_and_refused() -> None:
    a, b = stack.Host.virtual()
    try:
        with pytest.raises(ConnectionRefusedError):
            create_connection(a, ("10.1.0.2", next(_ports)), timeout=5)
        port = next(_ports)
        srv = b.create_server(("fd00:1::2", port), family=V6)
        t = _serve_once(srv, b"six")
        with create_connection(a, ("fd00:1::2", port), timeout=5) as sock:
            assert sock.family == V6 and sock.recv(3) == b"six"
            assert sock.gettimeout() == 5
        t.join(5)
    finally:
        a.close(timeout=1)
        b.close(timeout=1)


def test_virtual_source_address_limits_the_family() -> None:
    """source_address binds every attempt; only addresses of its family are
    tried (a v4 source cannot reach a v6 record)."""
    a, b = stack.Host.virtual()
    try:
        port = next(_ports)
        srv = b.create_server(("10.1.0.2", port))
        t = _serve_once(srv, b"src")
        seen: list[int] = []

        def resolver(name: str, port: int, family: int, type: int) -> list[Any]:
            seen.append(family)
            infos = [(V6, socket.SOCK_STREAM, 6, "", ("fd00:1::2", port, 0, 0)),
                     (V4, socket.SOCK_STREAM, 6, "", ("10.1.0.2", port))]
            return [i for i in infos if family in (0, i[0])]

        with create_connection(a, ("both.example", port), timeout=5, resolver=resolver,
                               source_address=("10.1.0.1", 0)) as sock:
            assert sock.getsockname()[0] == "10.1.0.1"
            assert sock.recv(3) == b"src"
        assert seen == [V4]
        t.join(5)
        srv.close()
    finally:
        a.close(timeout=1)
        b.close(timeout=1)


@pytest.mark.root
@pytest.mark.interop
def test_tun_blackholed_first_address_second_wins_quickly() -> None:
    """Against the kernel through a TUN: the first record is blackholed by a
    kernel route (SYNs vanish), the second is a kernel listener. The stack
    connects to the second in about one attempt delay (not a SYN timeout)."""
    if can_run() is not None:
        pytest.skip(str(can_run()))
    with Topology(1) as topo:
        topo.ip("-6", "route", "add", "blackhole", "fd00:1::dead/128")
        port = next(_ports)
        with topo.enter():
            srv = socket.create_server(("10.1.0.1", port))
        srv.settimeout(5)
        t = _serve_once(srv, b"kernel")

        def resolver(name: str, port: int, family: int, type: int) -> list[Any]:
            return [(V6, socket.SOCK_STREAM, 6, "", ("fd00:1::dead", port, 0, 0)),
                    (V4, socket.SOCK_STREAM, 6, "", ("10.1.0.1", port))]

        with stack.Host.tun(topo.path.spec(), netns=topo.ns) as host:
            started = time.monotonic()
            sock = create_connection(host, ("dual.example", port), timeout=5, resolver=resolver)
            elapsed = time.monotonic() - started
            with sock:
                assert sock.getpeername() == ("10.1.0.1", port)
                buf = b""
                while len(buf) < 6 and (chunk := sock.recv(6)):
                    buf += chunk
                assert buf == b"kernel"
            assert 0.2 < elapsed < 1.5
            with host.lock:
                assert not any(str(c.remote[0]) == "fd00:1::dead" for c in host.core.connections)
        t.join(5)
        srv.close()
