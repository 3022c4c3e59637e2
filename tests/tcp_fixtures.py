"""Fixtures for the TCP state-machine tests (smoltcp style).

A fixture puts a :class:`TcpConnection` in a state; tests feed it segments
built from the ``IN`` template with ``dataclasses.replace`` and assert the
segments ``poll_transmit`` returns, exactly, against the ``OUT`` template.
``Pipe`` joins two connections back to back in virtual time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from stack.tcp.config import TcpConfig
from stack.tcp.connection import TcpConnection
from stack.tcp.segment import ACK, SYN, TcpSegment, options_length
from stack.tcp.seq import seq_add
from stack.tcp.state import TcpState

LOCAL = (IPv4Address("192.0.2.1"), 49152)
REMOTE = (IPv4Address("192.0.2.2"), 80)
LPORT, RPORT = LOCAL[1], REMOTE[1]

# What the peer sends us / what we send the peer.
IN = TcpSegment(sport=RPORT, dport=LPORT, flags=ACK, window=64000)
OUT = TcpSegment(sport=LPORT, dport=RPORT, flags=ACK)

ISS = 1000
IRS = 5000


def cfg(**kw: object) -> TcpConfig:
    """A plain configuration: no options unless asked, 64000-byte buffers."""
    base: dict[str, object] = dict(
        mss=1460,
        rcvbuf=64000,
        sndbuf=64000,
        timestamps=False,
        sack=False,
        window_scaling=False,
        min_rto=0.2,
        initial_rto=1.0,
        time_wait=60.0,
    )
    base.update(kw)
    return TcpConfig(**base)  # type: ignore[arg-type]


def syn_sent(config: TcpConfig | None = None, iss: int = ISS, now: float = 0.0) -> TcpConnection:
    conn = TcpConnection.connect(config or cfg(), LOCAL, REMOTE, iss, now, ts_offset=0)
    out = conn.poll_transmit(now)
    assert len(out) == 1 and out[0].flags == SYN
    return conn


def established(
    config: TcpConfig | None = None,
    iss: int = ISS,
    irs: int = IRS,
    now: float = 0.0,
    *,
    window: int = 64000,
    mss: int | None = 1460,
    wscale: int | None = None,
    sack: bool = False,
    ts: tuple[int, int] | None = None,
    rtt: float = 0.0,
) -> TcpConnection:
    """An active-open connection in ESTABLISHED; the handshake's ACK is
    already polled. ``rtt``: when the SYN-ACK arrives after the SYN."""
    config = config or cfg()
    conn = syn_sent(config, iss, now)
    synack = replace(
        IN,
        seq=irs,
        ack=seq_add(iss, 1),
        flags=SYN | ACK,
        window=window,
        mss=mss,
        wscale=wscale,
        sack_permitted=sack,
        ts=ts,
    )
    conn.on_segment(synack, now + rtt)
    assert conn.state is TcpState.ESTABLISHED, conn
    out = conn.poll_transmit(now + rtt)
    assert [s.flags for s in out] == [ACK]
    return conn


def feed(conn: TcpConnection, now: float, **fields: object) -> list[TcpSegment]:
    """Feed ``replace(IN, **fields)`` and return what the connection sends."""
    conn.on_segment(replace(IN, **fields), now)  # type: ignore[arg-type]
    return conn.poll_transmit(now)


def out(**fields: object) -> TcpSegment:
    return replace(OUT, **fields)  # type: ignore[arg-type]


def fire(conn: TcpConnection, now: float) -> list[TcpSegment]:
    conn.on_timer(now)
    return conn.poll_transmit(now)


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@dataclass
class Pipe:
    """Two connections back to back in virtual time: a fixed one-way delay,
    an optional drop predicate ``drop(direction, seg) -> bool`` (direction 0:
    a->b, 1: b->a) and a log of every segment."""

    delay: float = 0.01
    drop: Callable[[int, TcpSegment], bool] | None = None
    # Optional chaos: with probability `reorder` a segment is delayed by up
    # to `jitter` more; with probability `duplicate` it is delivered twice.
    rng: random.Random | None = None
    reorder: float = 0.0
    jitter: float = 0.02
    duplicate: float = 0.0
    now: float = 0.0
    log: list[tuple[float, int, TcpSegment]] = field(default_factory=list)
    queue: list[tuple[float, int, int, TcpSegment]] = field(default_factory=list)
    _n: int = 0

    def pump(self, a: TcpConnection, b: TcpConnection) -> None:
        for d, conn in ((0, a), (1, b)):
            for seg in conn.poll_transmit(self.now):
                # Every packet fits: options <= 40 bytes, payload + options
                # <= MSS per wire packet (super-segments cut at seg.gso).
                opt = options_length(seg)
                assert opt <= 40, seg
                per_packet = seg.gso if seg.gso else len(seg.payload)
                assert per_packet + opt <= conn.send_mss, (seg, conn.send_mss)
                # Copy the payload: the wire would have serialised it by now.
                seg = replace(seg, payload=bytes(seg.payload))
                self.log.append((self.now, d, seg))
                if self.drop is not None and self.drop(d, seg):
                    continue
                copies, delay = 1, self.delay
                if self.rng is not None:
                    if self.rng.random() < self.duplicate:
                        copies = 2
                    if self.rng.random() < self.reorder:
                        delay += self.rng.random() * self.jitter
                for _ in range(copies):
                    self._n += 1
                    self.queue.append((self.now + delay, self._n, d, seg))

    def step(self, a: TcpConnection, b: TcpConnection) -> bool:
        """Advance to the next event; False when nothing is left to do."""
        self.pump(a, b)
        times = [t for t in (a.next_deadline(), b.next_deadline()) if t is not None]
        if self.queue:
            times.append(min(q[0] for q in self.queue))
        if not times:
            return False
        self.now = max(self.now, min(times))
        self.queue.sort(key=lambda q: (q[0], q[1]))
        while self.queue and self.queue[0][0] <= self.now:
            _, _, d, seg = self.queue.pop(0)
            (b if d == 0 else a).on_segment(seg, self.now)
            self.pump(a, b)  # each arrival may clock out segments (ACK clock)
        for conn in (a, b):
            dl = conn.next_deadline()
            if dl is not None and dl <= self.now:
                conn.on_timer(self.now)
        return True

    def run(
        self,
        a: TcpConnection,
        b: TcpConnection,
        until: Callable[[], bool],
        limit: float = 600.0,
        max_steps: int = 2_000_000,
    ) -> None:
        steps = 0
        while not until():
            if self.now > limit or steps > max_steps or not self.step(a, b):
                raise AssertionError(f"stuck at t={self.now}: {a!r} / {b!r}")
            steps += 1


def pair(
    config_a: TcpConfig | None = None,
    config_b: TcpConfig | None = None,
    iss_a: int = ISS,
    iss_b: int = IRS,
) -> tuple[TcpConnection, TcpConnection, Pipe]:
    """A connecting ``a`` and a ``b`` created from a's SYN (passive open),
    both ESTABLISHED after the handshake through a Pipe."""
    pipe = Pipe()
    a = TcpConnection.connect(config_a or cfg(), LOCAL, REMOTE, iss_a, 0.0)
    syn = a.poll_transmit(0.0)[0]
    b = TcpConnection.accept_syn(config_b or cfg(), REMOTE, LOCAL, syn, iss_b, 0.0)
    pipe.run(
        a,
        b,
        lambda: a.state is TcpState.ESTABLISHED and b.state is TcpState.ESTABLISHED,
    )
    return a, b, pipe


def transfer(
    a: TcpConnection,
    b: TcpConnection,
    pipe: Pipe,
    data: bytes,
    *,
    close: bool = True,
    limit: float = 600.0,
) -> bytes:
    """Send ``data`` from a to b (then a's FIN), reading at b; return what b read."""
    got = bytearray()
    sent = 0

    def done() -> bool:
        nonlocal sent
        if sent < len(data):
            sent += a.send(memoryview(data)[sent:], pipe.now)
            if sent == len(data) and close:
                a.shutdown_write(pipe.now)
        while b.readable:
            got.extend(b.recv(1 << 20))
        if close:
            return b.eof_received and a.all_acked
        return len(got) >= len(data) and a.all_acked

    pipe.run(a, b, done, limit=limit)
    return bytes(got)
