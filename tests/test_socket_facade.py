"""The socket facade (`stack.Host.tun`, `stack.socket`) against kernel TCP sockets.

One namespace with a TUN device per module; the kernel's sockets live in that
namespace (10.1.0.1, fd00:1::1) and the stack owns 10.1.0.2 / fd00:1::2 on the
far side of the TUN.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import random
import selectors
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

import stack  # noqa: E402
from stack import socket as ssock  # noqa: E402
from stack.tcp.state import TcpState  # noqa: E402
from tools.topology import Topology, can_run  # noqa: E402

_ports = itertools.count(6000)
K4, S4, K6, S6 = "10.1.0.1", "10.1.0.2", "fd00:1::1", "fd00:1::2"


@pytest.fixture(scope="module")
def topo():
    """TUN tests skip without root here; the virtual-link tests at the end run anywhere."""
    if can_run() is not None:
        pytest.skip(str(can_run()))
    with Topology(1) as t:
        yield t


@pytest.fixture(scope="module")
def host(topo: Topology):
    with stack.Host.tun(topo.path.spec(), netns=topo.ns) as h:
        yield h


def kernel_server(topo: Topology, family: int = socket.AF_INET) -> tuple[socket.socket, int]:
    port = next(_ports)
    addr = K4 if family == socket.AF_INET else K6
    with topo.enter():
        srv = socket.create_server((addr, port), family=family)
    srv.settimeout(5)
    return srv, port


def kernel_socket(topo: Topology, family: int = socket.AF_INET) -> socket.socket:
    with topo.enter():
        s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    return s


def echo_until_eof(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def test_host_tun_offload_and_repr(host: stack.Host) -> None:
    assert host.running and host.offload
    assert "TunDevice" in repr(host)


def test_interface_spec_errors() -> None:
    from stack.api.host import IfaceSpec

    spec = IfaceSpec.parse("tun9,10.9.0.2/24,fd00:9::2/64,gw=10.9.0.1,mtu=1400")
    assert spec.name == "tun9" and len(spec.addresses) == 2 and spec.mtu == 1400
    assert str(spec.gateways[0]) == "10.9.0.1"
    for bad in ("", "tun9", "tun9,10.9.0.2", "tun9,10.9.0.2/24,gw=fd00::1",
                "tun9,10.9.0.2/24,color=blue", "10.9.0.2/24"):
        with pytest.raises(ValueError):
            IfaceSpec.parse(bad)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_stack_client_echo(topo: Topology, host: stack.Host, family: int) -> None:
    srv, port = kernel_server(topo, family)
    t = threading.Thread(target=lambda: echo_until_eof(srv.accept()[0]))
    t.start()
    with host.socket(family, ssock.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect((K4 if family == socket.AF_INET else K6, port))
        local, peer = s.getsockname(), s.getpeername()
        assert local[0] == (S4 if family == socket.AF_INET else S6) and local[1] > 1023
        assert peer[:2] == ((K4 if family == socket.AF_INET else K6), port)
        msg = os.urandom(300_000)
        s.sendall(msg)
        s.shutdown(ssock.SHUT_WR)
        got = bytearray()
        while chunk := s.recv(65536):
            got += chunk
        assert bytes(got) == msg
    t.join(5)
    srv.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_stack_server_echo(topo: Topology, host: stack.Host, family: int) -> None:
    port = next(_ports)
    with host.socket(family) as ls:
        ls.bind(("", port))
        ls.listen(4)
        assert ls.getsockname()[1] == port
        msg = os.urandom(200_000)
        result: dict[str, bytes] = {}

        def client() -> None:
            c = kernel_socket(topo, family)
            c.connect((S4 if family == socket.AF_INET else S6, port))
            c.sendall(msg)
            c.shutdown(socket.SHUT_WR)
            buf = bytearray()
            while chunk := c.recv(65536):
                buf += chunk
            result["echo"] = bytes(buf)
            c.close()

        t = threading.Thread(target=client)
        t.start()
        ls.settimeout(5)
        conn, peer = ls.accept()
        assert peer[0] in (K4, K6, f"::ffff:{K4}")
        conn.settimeout(5)
        echo_until_eof(conn)  # the same code runs on stack and kernel sockets
        t.join(5)
        assert result["echo"] == msg


def test_connection_refused(host: stack.Host) -> None:
    s = host.socket()
    s.settimeout(5)
    with pytest.raises(ConnectionRefusedError) as info:
        s.connect((K4, next(_ports)))  # nothing listens: the kernel answers RST
    assert info.value.errno == errno.ECONNREFUSED
    s.close()
    s2 = host.socket()
    assert s2.connect_ex((K4, next(_ports))) == errno.ECONNREFUSED
    s2.close()


def test_connect_timeout(host: stack.Host) -> None:
    s = host.socket()
    s.settimeout(0.3)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        s.connect(("10.1.0.77", 80))  # nobody there; the kernel drops the SYN
    assert 0.25 < time.monotonic() - t0 < 2
    s.close()


def test_nonblocking_connect_and_selectors(topo: Topology, host: stack.Host) -> None:
    srv, port = kernel_server(topo)
    s = host.socket()
    s.setblocking(False)
    assert s.connect_ex((K4, port)) == errno.EINPROGRESS
    sel = selectors.DefaultSelector()
    sel.register(s.writable_fileno(), selectors.EVENT_READ, "w")
    assert sel.select(5), "connect did not complete"
    assert s.getsockopt(ssock.SOL_SOCKET, ssock.SO_ERROR) == 0
    sel.unregister(s.writable_fileno())
    kconn, _ = srv.accept()
    sel.register(s, selectors.EVENT_READ, "r")  # fileno(): readable when recv won't block
    assert sel.select(0.05) == []
    with pytest.raises(BlockingIOError):
        s.recv(10)
    kconn.sendall(b"ping")
    assert [key.data for key, _ in sel.select(5)] == ["r"]
    assert s.recv(10) == b"ping"
    assert sel.select(0.05) == []  # drained: no longer readable
    kconn.close()  # EOF makes it readable again
    assert sel.select(5)
    assert s.recv(10) == b""
    sel.close()
    s.close()
    srv.close()


def test_makefile_lines(topo: Topology, host: stack.Host) -> None:
    srv, port = kernel_server(topo)
    with host.create_connection((K4, port), timeout=5) as s:
        kconn, _ = srv.accept()
        kconn.sendall(b"hello\nworld\n")
        with s.makefile("r") as f:
            assert f.readline() == "hello\n"
            assert f.readline() == "world\n"
        with s.makefile("wb") as w:
            w.write(b"from stack\n")
        assert kconn.recv(100) == b"from stack\n"
        kconn.close()
    srv.close()


def test_socket_options(host: stack.Host) -> None:
    with host.socket() as s:
        assert s.getsockopt(ssock.IPPROTO_TCP, ssock.TCP_NODELAY) == 0
        s.setsockopt(ssock.IPPROTO_TCP, ssock.TCP_NODELAY, 1)
        s.setsockopt(ssock.SOL_SOCKET, ssock.SO_KEEPALIVE, 1)
        s.setsockopt(ssock.SOL_SOCKET, ssock.SO_SNDBUF, 1 << 20)
        s.setsockopt(ssock.SOL_SOCKET, ssock.SO_RCVBUF, 1 << 20)
        s.setsockopt(ssock.SOL_SOCKET, ssock.SO_REUSEADDR, 1)
        assert s.getsockopt(ssock.IPPROTO_TCP, ssock.TCP_NODELAY) == 1
        assert s.getsockopt(ssock.SOL_SOCKET, ssock.SO_SNDBUF) == 1 << 20
        assert s.getsockopt(ssock.SOL_SOCKET, ssock.SO_TYPE) == ssock.SOCK_STREAM
        cfg = s._config()
        assert cfg.nodelay and cfg.keepalive and cfg.sndbuf == 1 << 20
        with pytest.raises(OSError) as info:
            s.setsockopt(ssock.SOL_SOCKET, socket.SO_BROADCAST, 1)
        assert info.value.errno == errno.ENOPROTOOPT
        s.settimeout(2.5)
        assert s.gettimeout() == 2.5 and s.getblocking()
        s.setblocking(False)
        assert s.gettimeout() == 0.0


def test_errors(topo: Topology, host: stack.Host) -> None:
    s = host.socket()
    with pytest.raises(OSError) as info:
        s.recv(1)
    assert info.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as info:
        s.getpeername()
    assert info.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as info:
        s.bind(("10.9.9.9", 0))  # not ours
    assert info.value.errno == errno.EADDRNOTAVAIL
    port = next(_ports)
    s.bind(("", port))
    s.listen()
    with host.socket() as other:
        with pytest.raises(OSError) as info:
            other.bind(("", port))
        assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as info:
        s.connect((K4, 1))
    assert info.value.errno == errno.EINVAL
    s.close()
    with pytest.raises(OSError) as info:
        s.accept()
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError):
        host.socket(socket.AF_UNIX)


def test_send_after_shutdown_is_epipe_and_reset_is_econnreset(topo: Topology,
                                                              host: stack.Host) -> None:
    srv, port = kernel_server(topo)
    with host.create_connection((K4, port), timeout=5) as s:
        kconn, _ = srv.accept()
        s.shutdown(ssock.SHUT_WR)
        assert kconn.recv(10) == b""  # our FIN arrived
        with pytest.raises(BrokenPipeError):
            s.send(b"x")
        # An abortive close on the kernel side (SO_LINGER 0) sends RST.
        kconn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        kconn.close()
        with pytest.raises(ConnectionResetError):
            s.recv(10)
    srv.close()


def test_close_with_unsent_data_delivers_everything(topo: Topology, host: stack.Host) -> None:
    """sendall() then close() at once: every byte still reaches the peer, then FIN."""
    srv, port = kernel_server(topo)
    payload = os.urandom(3_000_000)
    got: list[tuple[int, bytes]] = []

    def kernel_reader() -> None:
        kconn, _ = srv.accept()
        kconn.settimeout(10)
        h, n = hashlib.sha256(), 0
        while chunk := kconn.recv(1 << 20):
            h.update(chunk)
            n += len(chunk)
        got.append((n, h.digest()))
        kconn.close()

    t = threading.Thread(target=kernel_reader)
    t.start()
    s = host.create_connection((K4, port), timeout=5)
    s.sendall(payload)
    conn = s.connection
    s.close()  # returns at once; up to a send buffer of data is still queued
    assert conn.state is not TcpState.CLOSED
    t.join(10)
    assert got == [(len(payload), hashlib.sha256(payload).digest())]
    srv.close()


def test_threads_share_a_host(topo: Topology, host: stack.Host) -> None:
    """Several application threads, each with its own connection, at once."""
    srv, port = kernel_server(topo)
    srv.listen(8)
    results: list[bool] = []

    def kernel_side() -> None:
        for _ in range(4):
            threading.Thread(target=echo_until_eof, args=(srv.accept()[0],)).start()

    def app(i: int) -> None:
        msg = bytes([i]) * 150_000
        with host.create_connection((K4, port), timeout=10) as s:
            s.sendall(msg)
            s.shutdown(ssock.SHUT_WR)
            got = bytearray()
            while chunk := s.recv(65536):
                got += chunk
            results.append(bytes(got) == msg)

    threading.Thread(target=kernel_side).start()
    apps = [threading.Thread(target=app, args=(i,)) for i in range(4)]
    for t in apps:
        t.start()
    for t in apps:
        t.join(15)
    assert results == [True] * 4
    srv.close()


def test_recv_timeout(topo: Topology, host: stack.Host) -> None:
    srv, port = kernel_server(topo)
    with host.create_connection((K4, port), timeout=5) as s:
        kconn, _ = srv.accept()
        s.settimeout(0.2)
        with pytest.raises(TimeoutError):
            s.recv(10)
        kconn.close()
    srv.close()


def test_host_close_stops_everything() -> None:
    if can_run() is not None:
        pytest.skip(str(can_run()))
    with Topology(1) as topo:
        h = stack.Host.tun(topo.path.spec(), netns=topo.ns)
        with pytest.raises(OSError) as info:  # single queue: a second host cannot attach
            stack.Host.tun(topo.path.spec(), netns=topo.ns)
        assert info.value.errno == errno.EBUSY
        s = h.socket()
        h.close()
        assert not h.running
        with pytest.raises(OSError):
            h.socket()
        with pytest.raises(OSError):
            s.connect((K4, 80))
        # the TUN is back as it was: nothing attached, no vnet header flag
        assert topo.link(topo.path.tun)["linkinfo"]["info_data"]["vnet_hdr"] is False


def test_socket_dropped_without_close_is_closed_by_gc(topo: Topology, host: stack.Host) -> None:
    import gc

    srv, port = kernel_server(topo)
    s = host.create_connection((K4, port), timeout=5)
    s.sendall(b"x" * 100_000)
    kconn, _ = srv.accept()
    del s
    gc.collect()
    got = 0
    while chunk := kconn.recv(65536):  # all the data, then EOF (our FIN)
        got += len(chunk)
    assert got == 100_000
    kconn.close()
    srv.close()


# ------------------------------------------------------- virtual links (no root)
def test_virtual_hosts_transfer_over_a_shaped_link() -> None:
    """Host.virtual: the same facade over in-memory links in real time."""
    a, b = stack.Host.virtual(rate_bps=200e6, delay=0.002, rng=random.Random(7))
    try:
        assert a.running and not a.offload
        srv = b.create_server(("", 80))
        data = os.urandom(2_000_000)
        digest: list[bytes] = []

        def server() -> None:
            conn, peer = srv.accept()
            assert peer[0] == "10.1.0.1"
            h = hashlib.sha256()
            while chunk := conn.recv(1 << 20):
                h.update(chunk)
            conn.sendall(h.digest())
            conn.close()
            digest.append(h.digest())

        t = threading.Thread(target=server)
        t.start()
        t0 = time.monotonic()
        c = a.create_connection(("10.1.0.2", 80), timeout=10)
        c.sendall(data)
        c.shutdown(ssock.SHUT_WR)
        assert c.recv(100) == hashlib.sha256(data).digest()
        assert c.wait_closed(5)
        elapsed = time.monotonic() - t0
        assert elapsed > len(data) * 8 / 200e6  # the link's rate holds in real time
        c.close()
        t.join(5)
    finally:
        a.close()
        b.close()
    assert not a.loop.running


def test_virtual_refused_and_ipv6() -> None:
    a, b = stack.Host.virtual(paths=2)
    try:
        with a.socket(ssock.AF_INET6) as s:
            s.settimeout(5)
            with pytest.raises(ConnectionRefusedError):
                s.connect(("fd00:2::2", 9))
        with b.socket(ssock.AF_INET6) as ls:
            ls.bind(("fd00:2::2", 9))
            ls.listen()
            with a.create_connection(("fd00:2::2", 9), timeout=5) as c:
                conn, _ = ls.accept()
                assert c.getsockname()[0] == "fd00:2::1"  # the path-2 address
                c.sendall(b"over path 2")
                assert conn.recv(100) == b"over path 2"
                conn.close()
    finally:
        a.close()
        b.close()


def test_layering_import_stack_stays_cheap() -> None:
    """`import stack` and the core load neither the facade nor the TUN driver."""
    import subprocess

    code = ("import sys, stack, stack.host, stack.tcp.connection\n"
            "bad = [m for m in sys.modules if m.startswith(('stack.api', 'tun'))]\n"
            "assert not bad, bad\n"
            "stack.Host; assert 'stack.api.host' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_virtual_mptcp_sockets_use_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """IPPROTO_MPTCP on both ends: an MPTCP connection whose subflows carry the
    data over both paths; a plain TCP client of the MPTCP listener gets TCP."""
    a, b = stack.Host.virtual(paths=2, rng=random.Random(7), rate_bps=200e6, delay=0.002)
    data = random.Random(8).randbytes(4_000_000)
    try:
        assert a.mptcp_capable
        with pytest.raises(OSError) as exc:
            a.socket(ssock.AF_INET, ssock.SOCK_STREAM, socket.IPPROTO_UDP)
        assert exc.value.errno == errno.EPROTONOSUPPORT
        with b.socket(ssock.AF_INET, ssock.SOCK_STREAM, ssock.IPPROTO_MPTCP) as ls:
            ls.bind(("0.0.0.0", 7000))
            ls.listen()
            with a.socket(ssock.AF_INET, ssock.SOCK_STREAM, ssock.IPPROTO_MPTCP) as c:
                assert c.proto == ssock.IPPROTO_MPTCP
                c.settimeout(20)
                c.connect(("10.1.0.2", 7000))
                conn, _ = ls.accept()
                assert conn.proto == ssock.IPPROTO_MPTCP
                t = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(ssock.SHUT_WR)))
                t.start()
                got = bytearray()
                conn.settimeout(20)
                while chunk := conn.recv(1 << 20):
                    got += chunk
                t.join(20)
                assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
                with a.lock:
                    info = c.connection.mptcp_info()
                assert info["mptcp"] is True, info
                busy = [s for s in info["subflows"] if s["bytes_sent"] > 100_000]
                assert len({s["local"].split(":")[0] for s in busy}) == 2, info["subflows"]
                conn.close()
            # A plain TCP client of the same MPTCP listener: TCP, as with Linux.
            plain = a.socket(ssock.AF_INET, ssock.SOCK_STREAM)
            plain.setsockopt(ssock.IPPROTO_TCP, ssock.TCP_MULTIPATH_ENABLE, 0)  # RFC 6897 §5.3.1
            plain.settimeout(5)
            plain.connect(("10.1.0.2", 7000))
            with plain:
                conn, _ = ls.accept()
                assert not hasattr(plain.connection, "mptcp_info")
                plain.sendall(b"tcp")
                assert conn.recv(10) == b"tcp"
                conn.close()
        # A core without MPTCP refuses the protocol, as Linux with MPTCP off.
        monkeypatch.setattr(type(a), "mptcp_capable", property(lambda self: False))
        with pytest.raises(OSError) as exc:
            a.socket(ssock.AF_INET, ssock.SOCK_STREAM, ssock.IPPROTO_MPTCP)
        assert exc.value.errno == errno.EPROTONOSUPPORT
    finally:
        a.close()
        b.close()
