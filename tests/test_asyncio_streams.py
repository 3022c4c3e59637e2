"""`stack.asyncio`: standard asyncio streams over facade sockets (issue 5, "asyncio").

Stack-to-stack over in-memory links first (no root), then against kernel TCP
in a network namespace through a TUN: an asyncio client of a kernel echo
server and an asyncio server for a kernel client, 5 MB each way, intact. The
connections are whatever the host makes by default (plain TCP until MPTCP is
the default, MPTCP after): nothing here assumes either.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import socket
import threading
import time
from typing import Any

import pytest
from tls_cert import self_signed_certificate

import stack  # noqa: E402
import stack.asyncio as sasyncio  # noqa: E402
from tools.topology import Topology, can_run  # noqa: E402

_ports = itertools.count(7300)
K4, S4, K6, S6 = "10.1.0.1", "10.1.0.2", "fd00:1::1", "fd00:1::2"
BIG = 5 * 1024 * 1024


def run(coro: Any, timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then half-close (write_eof) and close."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def send_and_collect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           payload: bytes) -> bytes:
    """Write everything (with drain: flow control), half-close, read to EOF."""
    async def pump() -> None:
        view = memoryview(payload)
        for i in range(0, len(view), 100_000):
            writer.write(view[i:i + 100_000])
            await writer.drain()
        writer.write_eof()

    task = asyncio.create_task(pump())
    chunks = []
    while data := await reader.read(1 << 20):
        chunks.append(data)
    await task
    writer.close()
    await writer.wait_closed()
    return b"".join(chunks)


# ---------------------------------------------------------- in-memory links
@pytest.fixture(scope="module")
def vhosts():
    a, b = stack.Host.virtual(delay=0.0005)
    yield a, b
    a.close(timeout=1)
    b.close(timeout=1)


def test_virtual_echo_stack_client_and_stack_server(vhosts: tuple[Any, Any]) -> None:
    """start_server on B, open_connection from A: 1 MB echoed intact; the
    reader/writer are the standard asyncio classes; peer/sock names right."""
    a, b = vhosts
    payload = os.urandom(1 << 20)

    async def main() -> None:
        port = next(_ports)
        server = await sasyncio.start_server(echo_handler, S4, port, stack_host=b)
        assert server.is_serving() and server.sockets[0].getsockname() == (S4, port)
        reader, writer = await sasyncio.open_connection(S4, port, stack_host=a)
        assert type(reader) is asyncio.StreamReader and type(writer) is asyncio.StreamWriter
        assert writer.get_extra_info("peername") == (S4, port)
        assert writer.get_extra_info("sockname")[0] == "10.1.0.1"
        got = await send_and_collect(reader, writer, payload)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        server.close()
        await server.wait_closed()
        assert not server.is_serving()

    run(main())


def test_virtual_lines_ipv6_and_many_clients(vhosts: tuple[Any, Any]) -> None:
    """readline() over IPv6, a dual-stack server (host None), 20 concurrent clients."""
    a, b = vhosts

    async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line.upper())
        writer.close()

    async def client(port: int, i: int, addr: str) -> bytes:
        reader, writer = await sasyncio.open_connection(addr, port, stack_host=a)
        writer.write(f"hello {i}\nbye {i}\n".encode())
        await writer.drain()
        lines = [await reader.readline(), await reader.readline()]
        writer.close()
        await writer.wait_closed()
        return b"".join(lines)

    async def main() -> None:
        port = next(_ports)
        server = await sasyncio.start_server(upper, None, port, stack_host=b)
        results = await asyncio.gather(*(client(port, i, S6 if i % 2 else S4)
                                         for i in range(20)))
        assert results == [f"HELLO {i}\nBYE {i}\n".encode() for i in range(20)]
        server.close()
        await server.wait_closed()

    run(main())


def test_virtual_refused_and_errors(vhosts: tuple[Any, Any]) -> None:
    a, _ = vhosts

    async def main() -> None:
        with pytest.raises(ConnectionRefusedError):
            await sasyncio.open_connection(S4, next(_ports), stack_host=a)
        with pytest.raises(OSError):  # not an address of host A
            await sasyncio.start_server(echo_handler, "10.1.0.2", 1, stack_host=a)
        with pytest.raises(ValueError):
            await sasyncio.open_connection(stack_host=a)
        with pytest.raises(TypeError, match="stack_host"):  # no default outside mpstack run
            await sasyncio.open_connection(S4, 80)

    run(main())


def test_virtual_drain_waits_for_a_slow_reader(vhosts: tuple[Any, Any]) -> None:
    """Flow control: while the server does not read, the stack's windows and
    buffers fill, the transport buffers the rest and drain() waits; once the
    server reads, drain() returns and everything arrives intact."""
    a, b = vhosts
    payload = os.urandom(6 * 1024 * 1024)

    async def main() -> None:
        port = next(_ports)
        go = asyncio.Event()
        received = bytearray()

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await go.wait()
            while data := await reader.read(1 << 20):
                received.extend(data)
            writer.close()

        server = await sasyncio.start_server(slow, S4, port, stack_host=b)
        reader, writer = await sasyncio.open_connection(S4, port, stack_host=a)
        writer.write(payload)
        transport = writer.transport
        assert transport.get_write_buffer_size() > 0
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(writer.drain(), 0.5)  # nobody reads: drain waits
        assert transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]
        go.set()
        await asyncio.wait_for(writer.drain(), 20)
        writer.write_eof()
        assert await reader.read() == b""  # the server closes after our EOF
        writer.close()
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        server.close()

    run(main())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for the test addresses (openssl)."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"), K4, S4)


def test_virtual_tls_server_and_client(vhosts: tuple[Any, Any],
                                       certificate: tuple[str, str]) -> None:
    """start_server(ssl=ctx) and open_connection(ssl=ctx) on the stack: the
    certificate is checked, 1 MB echoed intact over TLS."""
    import ssl

    a, b = vhosts
    cert, key = certificate
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    cctx = ssl.create_default_context(cafile=cert)
    payload = os.urandom(1 << 20)

    async def main() -> None:
        port = next(_ports)
        server = await sasyncio.start_server(echo_handler, S4, port, stack_host=b, ssl=sctx)
        reader, writer = await sasyncio.open_connection(S4, port, stack_host=a, ssl=cctx)
        assert writer.get_extra_info("ssl_object").version().startswith("TLS")
        assert writer.get_extra_info("peercert")["subject"] == ((("commonName", "mpstack"),),)
        writer.write(payload)
        await writer.drain()
        got = await reader.readexactly(len(payload))
        assert got == payload
        writer.close()
        await writer.wait_closed()
        with pytest.raises(ssl.SSLCertVerificationError):  # wrong CA: refused
            await sasyncio.open_connection(S4, port, stack_host=a, ssl=True)
        server.close()

    run(main())


def test_virtual_happy_eyeballs_blackholed_first(vhosts: tuple[Any, Any]) -> None:
    """A name with a blackholed IPv6 record and a working IPv4 one (A5, C2):
    the asyncio race connects to the IPv4 address after ~one attempt delay."""
    a, b = vhosts

    async def main() -> None:
        loop = asyncio.get_running_loop()
        port = next(_ports)
        server = await sasyncio.start_server(echo_handler, S4, port, stack_host=b)

        async def fake_getaddrinfo(host: str, port: int, **kw: Any) -> list[Any]:
            assert host == "two.example"
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00:1::77", port, 0, 0)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", (S4, port))]

        loop.getaddrinfo = fake_getaddrinfo  # type: ignore[method-assign]
        started = time.monotonic()
        reader, writer = await sasyncio.open_connection("two.example", port, stack_host=a)
        assert 0.2 < time.monotonic() - started < 1.5
        assert writer.get_extra_info("peername") == (S4, port)
        assert await send_and_collect(reader, writer, b"x" * 1000) == b"x" * 1000
        with a.lock:
            assert not any(str(c.remote[0]) == "fd00:1::77" for c in a.core.connections)
        server.close()
        await server.wait_closed()

    run(main())


def test_virtual_server_serve_forever_cancel(vhosts: tuple[Any, Any]) -> None:
    a, b = vhosts

    async def main() -> None:
        port = next(_ports)
        server = await sasyncio.start_server(echo_handler, S4, port, stack_host=b,
                                             start_serving=False)
        assert not server.is_serving()
        task = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0.01)
        reader, writer = await sasyncio.open_connection(S4, port, stack_host=a)
        assert await send_and_collect(reader, writer, b"ping") == b"ping"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving() and server.sockets == ()
        with pytest.raises(ConnectionRefusedError):
            await sasyncio.open_connection(S4, port, stack_host=a)

    run(main())


# ---------------------------------------------------------- kernel peer (TUN)
@pytest.fixture(scope="module")
def topo():
    if can_run() is not None:
        pytest.skip(str(can_run()))
    with Topology(1) as t:
        yield t


@pytest.fixture(scope="module")
def host(topo: Topology):
    with stack.Host.tun(topo.path.spec(), netns=topo.ns) as h:
        yield h


def kernel_echo_server(topo: Topology, addr: str, family: int) -> tuple[socket.socket, int,
                                                                      threading.Thread]:
    port = next(_ports)
    with topo.enter():
        srv = socket.create_server((addr, port), family=family)
    srv.settimeout(10)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(20)
            while data := conn.recv(1 << 16):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, port, t


@pytest.mark.root
@pytest.mark.interop
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_kernel_server_asyncio_client_5mb(topo: Topology, host: Any, family: int) -> None:
    """asyncio client on the stack, kernel echo server: 5 MB out and back intact."""
    addr = K4 if family == socket.AF_INET else K6
    srv, port, t = kernel_echo_server(topo, addr, family)
    payload = os.urandom(BIG)

    async def main() -> bytes:
        reader, writer = await sasyncio.open_connection(addr, port, stack_host=host)
        return await send_and_collect(reader, writer, payload)

    got = run(main(), timeout=60)
    assert len(got) == BIG and hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    t.join(10)
    srv.close()


@pytest.mark.root
@pytest.mark.interop
def test_kernel_client_asyncio_server_5mb(topo: Topology, host: Any) -> None:
    """asyncio echo server on the stack, a kernel client: 5 MB intact both ways,
    the kernel sees our FIN after its own (half-close kept)."""
    payload = os.urandom(BIG)
    port = next(_ports)
    received: list[bytes] = []

    def kernel_client() -> None:
        with topo.enter():
            c = socket.create_connection((S4, port), timeout=20)
        with c:
            def pump() -> None:
                c.sendall(payload)
                c.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=pump, daemon=True)
            sender.start()
            while data := c.recv(1 << 20):
                received.append(data)
            sender.join(20)

    async def main() -> None:
        server = await sasyncio.start_server(echo_handler, S4, port, stack_host=host)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, kernel_client)
        server.close()
        await server.wait_closed()

    run(main(), timeout=60)
    got = b"".join(received)
    assert len(got) == BIG and hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


@pytest.mark.root
@pytest.mark.interop
def test_kernel_reset_reaches_the_reader(topo: Topology, host: Any) -> None:
    """The kernel peer resets (SO_LINGER 0): the asyncio reader gets
    ConnectionResetError (or EOF), never hangs."""
    port = next(_ports)
    with topo.enter():
        srv = socket.create_server((K4, port))
    srv.settimeout(10)

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    async def main() -> None:
        reader, writer = await sasyncio.open_connection(K4, port, stack_host=host)
        writer.write(b"0123456789")
        await writer.drain()
        with pytest.raises(ConnectionResetError):
            while await reader.read(100):
                pass
            # EOF without an error is not what a reset gives: check the transport
            raise AssertionError("EOF instead of a reset")
        writer.close()

    run(main(), timeout=20)
    t.join(5)
    srv.close()


@pytest.mark.root
@pytest.mark.interop
def test_kernel_tls_server_asyncio_tls_client(topo: Topology, host: Any,
                                             certificate: tuple[str, str]) -> None:
    """open_connection(ssl=...) on the stack against a kernel TLS echo server
    (OpenSSL on a kernel socket): 2 MB intact, host name checked."""
    import ssl

    cert, key = certificate
    port = next(_ports)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    with topo.enter():
        srv = socket.create_server((K4, port))
    srv.settimeout(10)

    def serve() -> None:
        conn, _ = srv.accept()
        with sctx.wrap_socket(conn, server_side=True) as tls:
            while data := tls.recv(65536):
                tls.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    payload = os.urandom(2 * 1024 * 1024)

    async def main() -> bytes:
        cctx = ssl.create_default_context(cafile=cert)
        reader, writer = await sasyncio.open_connection(K4, port, stack_host=host, ssl=cctx)
        writer.write(payload)
        await writer.drain()
        got = await reader.readexactly(len(payload))
        writer.close()
        return got

    assert run(main(), timeout=60) == payload
    t.join(10)
    srv.close()
