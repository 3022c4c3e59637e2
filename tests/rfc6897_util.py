"""Helpers for the RFC 6897 API tests (not a test module itself).

`hosts(paths)`: two facade hosts over in-memory links (`stack.Host.virtual`,
real time; A = 10.p.0.1, B = 10.p.0.2 on path p). `sock(host)`: a socket with
the RFC 6897 API. `Wire(a)`: every packet either host sends, decoded (host
name, addresses, ports, flags, payload length, MPTCP suboptions).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import stack
from stack.api.multipath import multipath_socket
from stack.api.socket import Socket
from stack.host.packetize import gso_split, parse_segment, to_tcp_segment
from stack.mptcp.handshake import parse_options
from stack.mptcp.pm import PmLimits


@contextlib.contextmanager
def hosts(paths: int = 2, seed: int = 1, **kw: Any) -> Iterator[tuple[Any, Any]]:
    kw.setdefault("rate_bps", 100e6)
    kw.setdefault("delay", 0.002)
    a, b = stack.Host.virtual(paths=paths, rng=random.Random(seed), **kw)
    for h in (a, b):  # room for the joins the tests ask for (Linux: ip mptcp limits)
        h.core.mptcp_config.limits = PmLimits(subflows=8, add_addr_accepted=8)
    try:
        yield a, b
    finally:
        for h in (a, b):  # both ends close before either host waits for quiet
            with h.lock:
                for s in list(h._owners.values()) + list(h._bound.values()):
                    s.close()
        a.close(timeout=2)
        b.close(timeout=2)


def sock(host: Any, family: int = 2, proto: int = 0) -> Any:
    """host.socket() once the facade Socket has the API, else the mixin class."""
    if hasattr(Socket, "multipath_add"):
        return host.socket(family, 1, proto)
    return multipath_socket(host, family, 1, proto)


def server(host: Any, port: int, addr: str = "", setup: Callable[[Any], None] | None = None,
           family: int = 2) -> Any:
    ls = sock(host, family)
    if setup is not None:
        setup(ls)
    ls.bind((addr, port))
    ls.listen()
    ls.settimeout(10)
    return ls


def connect(a: Any, ls: Any, dst: str, port: int,
            setup: Callable[[Any], None] | None = None, family: int = 2) -> tuple[Any, Any]:
    c = sock(a, family)
    c.settimeout(10)
    if setup is not None:
        setup(c)
    c.connect((dst, port))
    s, _ = ls.accept()
    s.settimeout(10)
    return c, s


def pump(c: Any, s: Any, n: int, seed: int = 3) -> bytes:
    """Send n bytes c -> s (a thread sends, we read); returns what s got."""
    data = random.Random(seed).randbytes(n)
    err: list[BaseException] = []

    def send() -> None:
        try:
            c.sendall(data)
        except BaseException as exc:  # noqa: BLE001 - reported below
            err.append(exc)

    t = threading.Thread(target=send)
    t.start()
    got = bytearray()
    while len(got) < n:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    t.join(10)
    assert not err, err
    assert bytes(got) == data
    return data


def wait(pred: Callable[[], Any], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


def subflow_locals(s: Any) -> set[str]:
    return {loc[0] for loc, _ in s.multipath_subflows()}


@dataclass
class Pkt:
    t: float
    host: str
    src: str
    dst: str
    sport: int
    dport: int
    flags: int
    urgent: int
    plen: int
    opts: list


class Wire:
    """Every packet the hosts of a virtual pair transmit, decoded."""

    def __init__(self, host: Any) -> None:
        self.pkts: list[Pkt] = []
        self._lock = threading.Lock()
        host.loop.net.taps.append(self._tap)

    def _tap(self, now: float, host: Any, iface: str, frame: Any) -> None:
        datas = gso_split(frame) if frame.gso_size else [frame.data]
        for d in datas:
            p = parse_segment(d, False)
            seg = to_tcp_segment(p, d)
            with self._lock:
                self.pkts.append(Pkt(now, host.name, str(ip_address(p.src)),
                                     str(ip_address(p.dst)), seg.sport, seg.dport, seg.flags,
                                     p.urgent, len(seg.payload), parse_options(seg.mptcp)))

    def where(self, pred: Callable[[Pkt], bool]) -> list[Pkt]:
        with self._lock:
            return [p for p in self.pkts if pred(p)]

    def options(self, cls: type, host: str | None = None) -> list[tuple[Pkt, Any]]:
        with self._lock:
            return [(p, o) for p in self.pkts for o in p.opts
                    if isinstance(o, cls) and (host is None or p.host == host)]
