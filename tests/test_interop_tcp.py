"""The stack's TCP against Linux TCP, over a TUN device, in a namespace per test.

Kernel server with stack client and kernel client with stack server, IPv4 and
IPv6, offloads on and off: 20 MB each way at once, verified by SHA-256. Also
a `tbf`-shaped path, a refused connection, and the kernel's own count of
retransmissions (nstat `TcpRetransSegs`) on a loss-free path.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from typing import Any

import pytest

from tools.topology import Topology, can_run  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.interop,
              pytest.mark.skipif(can_run() is not None, reason=str(can_run()))]

import stack  # noqa: E402

MB = 1_000_000
ADDRS = {socket.AF_INET: ("10.1.0.1", "10.1.0.2"), socket.AF_INET6: ("fd00:1::1", "fd00:1::2")}
PORT = 5201


def exchange(sock: Any, payload: bytes, result: dict[str, Any], key: str) -> None:
    """Send `payload` and read until EOF at the same time (works on kernel and
    stack sockets alike); record (bytes received, SHA-256) under `key`."""
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=sender)
    t.start()
    h, n = hashlib.sha256(), 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    try:
        while k := sock.recv_into(buf):
            h.update(view[:k])
            n += k
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)
    t.join(60)
    result[key] = (n, h.hexdigest(), errors)


def run_pair(topo: Topology, host: stack.Host, family: int, kernel_is_server: bool,
             size: int, timeout: float = 60) -> dict[str, Any]:
    kaddr, saddr = ADDRS[family]
    to_stack, to_kernel = os.urandom(size), os.urandom(size)
    result: dict[str, Any] = {}
    threads = []
    if kernel_is_server:
        with topo.enter():
            srv = socket.create_server((kaddr, PORT), family=family)
        srv.settimeout(timeout)

        def kernel_side() -> None:
            conn, _ = srv.accept()
            conn.settimeout(timeout)
            exchange(conn, to_stack, result, "kernel")
            conn.close()

        threads.append(threading.Thread(target=kernel_side))
        threads[-1].start()
        s = host.socket(family)
        s.settimeout(timeout)
        s.connect((kaddr, PORT))
        exchange(s, to_kernel, result, "stack")
        s.close()
        srv.close()
    else:
        ls = host.socket(family)
        ls.bind((saddr, PORT))
        ls.listen(1)

        def kernel_side() -> None:
            with topo.enter():
                c = socket.socket(family, socket.SOCK_STREAM)
            c.settimeout(timeout)
            c.connect((saddr, PORT))
            exchange(c, to_stack, result, "kernel")
            c.close()

        threads.append(threading.Thread(target=kernel_side))
        threads[-1].start()
        ls.settimeout(timeout)
        s, _ = ls.accept()
        s.settimeout(timeout)
        exchange(s, to_kernel, result, "stack")
        s.close()
        ls.close()
    for t in threads:
        t.join(timeout)
    assert result["stack"][2] == [] and result["kernel"][2] == [], result
    assert result["stack"][:2] == (size, hashlib.sha256(to_stack).hexdigest())
    assert result["kernel"][:2] == (size, hashlib.sha256(to_kernel).hexdigest())
    return result


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
@pytest.mark.parametrize("kernel_is_server", [True, False],
                         ids=["kernel-server", "kernel-client"])
def test_20mb_each_way(kernel_is_server: bool, family: int, offload: bool) -> None:
    with Topology(1) as topo, stack.Host.tun(topo.path.spec(), netns=topo.ns,
                                             offload=offload) as host:
        assert host.offload is offload
        before = topo.nstat()
        run_pair(topo, host, family, kernel_is_server, 20 * MB)
        after = topo.nstat()
        # A loss-free path: the kernel retransmits (almost) nothing.
        out = after.get("TcpOutSegs", 0) - before.get("TcpOutSegs", 0)
        retrans = after.get("TcpRetransSegs", 0) - before.get("TcpRetransSegs", 0)
        assert out > 1000
        assert retrans < 0.01 * out, (retrans, out)
        stats = host.stats()
        assert stats["loop"]["errors"] == 0
        if offload:
            dev = stats["devices"][topo.path.tun]
            assert dev["tx_gso"] > 0 and dev["rx_gso"] > 0  # super-segments both ways


def test_rate_limited_path() -> None:
    """tbf at 300 Mbit/s on the kernel's side of the TUN: transfers complete intact."""
    with Topology(1) as topo, stack.Host.tun(topo.path.spec(), netns=topo.ns) as host:
        topo.rate_limit(topo.path.tun, rate="300mbit", burst="128kb", latency="20ms")
        t0 = time.monotonic()
        run_pair(topo, host, socket.AF_INET, True, 10 * MB)
        assert time.monotonic() - t0 > 10 * MB * 8 / 300e6 * 0.9  # the shaper did shape
        run_pair(topo, host, socket.AF_INET6, False, 10 * MB)
        assert topo.qdisc_bytes(topo.path.tun) > 20 * MB


def test_random_loss_path() -> None:
    """1 % random loss (nftables numgen) on the kernel's packets into the TUN
    (plain mode: with offloads one drop would take a whole 64 KB super-segment)."""
    with Topology(1) as topo, stack.Host.tun(topo.path.spec(), netns=topo.ns,
                                             offload=False) as host:
        topo.random_loss(topo.path.tun, 1)
        run_pair(topo, host, socket.AF_INET, True, 5 * MB)
        assert topo.loss_dropped() > 0


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def test_closed_port_refused_both_ways(family: int) -> None:
    kaddr, saddr = ADDRS[family]
    with Topology(1) as topo, stack.Host.tun(topo.path.spec(), netns=topo.ns) as host:
        s = host.socket(family)
        s.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            s.connect((kaddr, 1))  # the kernel answers RST
        s.close()
        with topo.enter():
            c = socket.socket(family, socket.SOCK_STREAM)
        c.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            c.connect((saddr, 1))  # the stack answers RST (RFC 9293 §3.10.7.1)
        c.close()
        assert host.core.stats["no_listener_rst"] >= 1


def test_two_tun_interfaces_egress_by_source() -> None:
    """Two TUNs: a connection leaves through the interface owning its source
    address (the kernel sees it arrive on that TUN)."""
    with Topology(2) as topo, stack.Host.tun(*topo.stack_specs(), netns=topo.ns) as host:
        with topo.enter():
            srv = socket.create_server(("0.0.0.0", PORT))
        srv.settimeout(5)
        seen = []
        for src, dst in (("10.2.0.2", "10.2.0.1"), ("10.1.0.2", "10.2.0.1")):
            before = {p.tun: host.devices[p.tun].stats.tx_packets for p in topo.paths}
            s = host.socket()
            s.settimeout(5)
            s.bind((src, 0))
            s.connect((dst, PORT))
            conn, peer = srv.accept()
            assert peer[0] == src
            s.sendall(b"x" * 100_000)
            s.close()
            got = 0
            while chunk := conn.recv(65536):
                got += len(chunk)
            conn.close()
            assert got == 100_000
            sent = {p.tun: host.devices[p.tun].stats.tx_packets - before[p.tun]
                    for p in topo.paths}
            seen.append(max(sent, key=sent.get))
        assert seen == [topo.paths[1].tun, topo.paths[0].tun]
        srv.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def test_default_gateway_reaches_a_remote_network(family: int) -> None:
    """`Host.tun("A,10.1.0.2/24", "B,10.2.0.2/24,gw=10.2.0.1")` (and the IPv6
    form): an address on no TUN's subnet goes to the gateway's interface."""
    with Topology(2) as topo:
        p1, p2 = topo.paths
        far, gw = (("192.0.2.1", str(p2.kernel_v4.ip)) if family == socket.AF_INET
                   else ("2001:db8::1", str(p2.kernel_v6.ip)))
        topo.ip("addr", "add", far + ("/32" if family == socket.AF_INET else "/128"), "dev",
                "lo")
        specs = [p1.spec(), f"{p2.spec()},gw={gw}"]
        with stack.Host.tun(*specs, netns=topo.ns) as host:
            with topo.enter():
                srv = socket.create_server((far, PORT), family=family)
            srv.settimeout(5)
            with host.create_connection((far, PORT), timeout=5) as s:
                conn, peer = srv.accept()
                own = str(p2.stack_v4.ip if family == socket.AF_INET else p2.stack_v6.ip)
                assert peer[0] == own and s.getsockname()[0] == own
                s.sendall(b"via the gateway")
                assert conn.recv(100) == b"via the gateway"
                conn.close()
            assert host.devices[p1.tun].stats.tx_packets == 0  # all through path 2
            srv.close()
