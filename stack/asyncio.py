"""asyncio streams over the userspace stack: `open_connection`, `start_server`.

The same calls as `asyncio.open_connection` / `asyncio.start_server`, plus the
running facade host to use (`stack_host=`; in a program started by `mpstack
run`, the stack it runs on by default); they return the standard
`asyncio.StreamReader` / `asyncio.StreamWriter` and `asyncio.AbstractServer`,
and work with the standard event loop (any loop with `add_reader`)::

    reader, writer = await stack.asyncio.open_connection("10.1.0.1", 80, stack_host=host)
    server = await stack.asyncio.start_server(handle, "", 8080, stack_host=host)

How it works: a facade socket is non-blocking here; its `fileno()` (an
eventfd) is readable while `recv()`/`accept()` would not block and its
`writable_fileno()` is readable while `send()` would not block or once a
connect has completed. `StackTransport` watches both with `loop.add_reader`
(never `add_writer`: an eventfd always polls writable) and drives an
`asyncio.Protocol` exactly as asyncio's own socket transport does, so
`StreamReaderProtocol`, `BufferedProtocol`s, flow control (`drain()`),
`write_eof()`, `start_tls()` and TLS servers (asyncio's SSLProtocol) all
work. Names are resolved with `loop.getaddrinfo` and every address is raced
(RFC 8305, `stack.api.happy_eyeballs`).

Whether a connection is MPTCP or plain TCP is the host's and the socket's
policy (RFC 6897 §4.5), not this module's.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket as _std
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from stack.api.happy_eyeballs import ATTEMPT_DELAY, FacadeConnector, Race, _failure, interleave

log = logging.getLogger(__name__)

_DEFAULT_LIMIT = 2 ** 16  # as asyncio.streams
_READ_SIZE = 256 * 1024
_HIGH_WATER = 64 * 1024  # write buffer flow control, as asyncio's transports
_DEFAULT_BACKLOG = 100

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]


class StackTransport(asyncio.Transport):
    """An asyncio transport over a connected facade socket."""

    # loop.start_tls() accepts transports that allow a protocol swap.
    _start_tls_compatible = True

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: Any, protocol: asyncio.BaseProtocol,
                 waiter: asyncio.Future[None] | None = None, server: StackServer | None = None
                 ) -> None:
        super().__init__({"socket": sock})
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._server = server
        sock.setblocking(False)
        self._rfd = sock.fileno()
        self._wfd = sock.writable_fileno()
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        try:
            self._extra["peername"] = sock.getpeername()
        except OSError:
            self._extra["peername"] = None
        self._buffer = bytearray()
        self._reading = False
        self._writing = False
        self._closing = False
        self._eof_written = False
        self._conn_lost = 0
        self._protocol_paused = False
        self._high = _HIGH_WATER
        self._low = _HIGH_WATER // 4
        if server is not None:
            server._attach(self)
        loop.call_soon(self._protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter)

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else ("closing" if self._closing else "open")
        return f"<StackTransport {state} {self._extra.get('peername')}>"

    # ------------------------------------------------------------- reading
    def _start_reading(self) -> None:
        if not self._closing and not self._reading and self._conn_lost == 0:
            self._reading = True
            self._loop.add_reader(self._rfd, self._read_ready)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._rfd)

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        self._stop_reading()

    def resume_reading(self) -> None:
        self._start_reading()

    def _read_ready(self) -> None:
        if self._conn_lost:
            return
        if isinstance(self._protocol, asyncio.BufferedProtocol):
            self._read_ready_buffered(self._protocol)
            return
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the protocol
            self._fatal_error(exc)
            return
        if not data:
            self._read_eof()
            return
        try:
            self._protocol.data_received(data)  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001
            self._fatal_error(exc, "protocol.data_received() call failed")

    def _read_ready_buffered(self, protocol: asyncio.BufferedProtocol) -> None:
        """The same for a BufferedProtocol (asyncio's SSLProtocol is one)."""
        try:
            buf = protocol.get_buffer(-1)
            if not len(buf):
                raise RuntimeError("get_buffer() returned an empty buffer")
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001
            self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
            return
        try:
            n = self._sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001
            self._fatal_error(exc)
            return
        if not n:
            self._read_eof()
            return
        try:
            protocol.buffer_updated(n)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001
            self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")

    def _read_eof(self) -> None:
        self._stop_reading()  # the eventfd stays readable at EOF
        try:
            keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001
            self._fatal_error(exc, "protocol.eof_received() call failed")
            return
        if not keep_open:
            self.close()

    # ------------------------------------------------------------- writing
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data argument must be a bytes-like object, not "
                            f"{type(data).__name__!r}")
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._conn_lost:
            self._conn_lost += 1
            if self._conn_lost >= 5:
                log.warning("socket.send() raised exception.")
            return
        view = memoryview(data).cast("B")
        if not self._buffer:
            try:
                sent = self._sock.send(view)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # noqa: BLE001
                self._fatal_error(exc, "Fatal write error on stack socket transport")
                return
            view = view[sent:]
            if not view:
                return
        self._buffer.extend(view)
        self._start_writing()
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def _start_writing(self) -> None:
        if not self._writing:
            self._writing = True
            self._loop.add_reader(self._wfd, self._write_ready)

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_reader(self._wfd)

    def _write_ready(self) -> None:
        if self._conn_lost or self._sock is None:
            self._stop_writing()
            return
        try:
            sent = self._sock.send(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001
            self._stop_writing()
            self._buffer.clear()
            self._fatal_error(exc, "Fatal write error on stack socket transport")
            return
        if sent:
            del self._buffer[:sent]
        self._maybe_resume_protocol()
        if self._buffer:
            return
        self._stop_writing()
        if self._closing:
            self._call_connection_lost(None)
        elif self._eof_written:
            self._shutdown_write()

    def write_eof(self) -> None:
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        if not self._buffer:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(_std.SHUT_WR)
        except OSError as exc:
            self._fatal_error(exc, "shutdown(SHUT_WR) failed")

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if len(self._buffer) > self._high and not self._protocol_paused:
            self._protocol_paused = True
            try:
                self._protocol.pause_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # noqa: BLE001
                self._loop.call_exception_handler({
                    "message": "protocol.pause_writing() failed", "exception": exc,
                    "transport": self, "protocol": self._protocol})

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and len(self._buffer) <= self._low:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # noqa: BLE001
                self._loop.call_exception_handler({
                    "message": "protocol.resume_writing() failed", "exception": exc,
                    "transport": self, "protocol": self._protocol})

    # ------------------------------------------------------------- closing
    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close after the buffered data is handed to the stack (which then
        delivers it and sends the FIN in the background)."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._buffer:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport"
                     ) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler({
                "message": message, "exception": exc, "transport": self,
                "protocol": self._protocol})
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        self._buffer.clear()
        self._stop_writing()
        self._stop_reading()
        self._closing = True
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        if self._sock is None:
            return
        try:
            self._protocol.connection_lost(exc)
        finally:
            # Unregister before closing: the eventfd numbers get reused.
            self._stop_reading()
            self._stop_writing()
            self._sock.close()
            self._sock = None
            server, self._server = self._server, None
            if server is not None:
                server._detach(self)

    # ------------------------------------------------------------ protocol
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol


def _set_result_unless_cancelled(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _host_or_default(stack_host: Any) -> Any:
    """`stack_host`, or in a program run by `mpstack run` the stack it runs on."""
    if stack_host is not None:
        return stack_host
    run_child = sys.modules.get("stack.api.run_child")
    host = getattr(run_child, "_host", None)
    if host is None:
        raise TypeError("stack_host= is needed (a running stack.Host), except in a "
                        "program started by mpstack run")
    return host


# --------------------------------------------------------------- connecting
async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int, family: int,
                   flags: int = 0) -> list[tuple[int, tuple[Any, ...]]]:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:  # an IP literal: no lookup
        fam = _std.AF_INET if ip.version == 4 else _std.AF_INET6
        if family not in (0, fam):
            raise _std.gaierror(_std.EAI_FAMILY, "address family for hostname not supported")
        return [(fam, (str(ip), port))]
    infos = await loop.getaddrinfo(host, port, family=family, type=_std.SOCK_STREAM,
                                   flags=flags)
    return [(int(i[0]), tuple(i[4])) for i in infos if i[0] in (_std.AF_INET, _std.AF_INET6)]


async def connect(host: str, port: int, *, stack_host: Any = None, family: int = 0,
                  local_addr: tuple[str, int] | None = None,
                  happy_eyeballs_delay: float = ATTEMPT_DELAY,
                  interleave_count: int = 1) -> Any:
    """A connected (non-blocking) facade socket to (host, port): every address
    of the name raced as in RFC 8305 (see `stack.api.happy_eyeballs`)."""
    loop = asyncio.get_running_loop()
    stack_host = _host_or_default(stack_host)
    if local_addr is not None and local_addr[0] and not family:
        family = _std.AF_INET6 if ":" in local_addr[0] else _std.AF_INET
    addresses = interleave(await _resolve(loop, host, port, family), interleave_count)
    if not addresses:
        raise OSError(errno.EADDRNOTAVAIL, f"getaddrinfo({host!r}) returned no address")
    connector = FacadeConnector(stack_host, local_addr)
    race = Race(len(addresses), loop.time(), attempt_delay=happy_eyeballs_delay)
    pending: dict[int, tuple[Any, asyncio.Future[None]]] = {}
    try:
        while not race.done:
            for i in race.start_due(loop.time()):
                try:
                    sock = connector.start(*addresses[i])
                except OSError as exc:
                    race.on_failed(i, exc, loop.time())
                    continue
                fut: asyncio.Future[None] = loop.create_future()
                fd = sock.writable_fileno()
                loop.add_reader(fd, _connect_ready, loop, fd, fut)
                pending[i] = (sock, fut)
            if race.done or not race.active:
                continue
            deadline = race.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait([pending[i][1] for i in race.active], timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            now = loop.time()
            for i in sorted(race.active):
                sock, fut = pending[i]
                if not fut.done():
                    continue
                code = sock.getsockopt(_std.SOL_SOCKET, _std.SO_ERROR)
                if code:
                    race.on_failed(i, OSError(code, os.strerror(code)), now)
                    del pending[i]
                    sock.close()
                else:
                    race.on_connected(i, now)
    finally:
        for i, (sock, fut) in pending.items():
            if not fut.done():
                loop.remove_reader(sock.writable_fileno())
                fut.cancel()
            if i != race.winner:
                sock.close()  # RFC 8305 §5: the losers are cancelled
    if race.winner is not None:
        return pending[race.winner][0]
    raise _failure([race.errors[i] for i in sorted(race.errors)])


def _connect_ready(loop: asyncio.AbstractEventLoop, fd: int, fut: asyncio.Future[None]) -> None:
    loop.remove_reader(fd)
    if not fut.done():
        fut.set_result(None)


async def create_connection(protocol_factory: Callable[[], asyncio.BaseProtocol],
                            host: str | None = None, port: int | None = None, *,
                            stack_host: Any = None, sock: Any = None, family: int = 0,
                            local_addr: tuple[str, int] | None = None,
                            happy_eyeballs_delay: float = ATTEMPT_DELAY
                            ) -> tuple[StackTransport, asyncio.BaseProtocol]:
    """As `loop.create_connection` (without ssl: use `StreamWriter.start_tls`)."""
    loop = asyncio.get_running_loop()
    if sock is None:
        if host is None or port is None:
            raise ValueError("host and port (or sock) are needed")
        sock = await connect(host, port, stack_host=stack_host, family=family,
                             local_addr=local_addr, happy_eyeballs_delay=happy_eyeballs_delay)
    protocol = protocol_factory()
    waiter: asyncio.Future[None] = loop.create_future()
    try:
        transport = StackTransport(loop, sock, protocol, waiter)
        await waiter
    except BaseException:
        sock.close()
        raise
    return transport, protocol


async def open_connection(host: str | None = None, port: int | None = None, *,
                          stack_host: Any = None, limit: int = _DEFAULT_LIMIT, ssl: Any = None,
                          server_hostname: str | None = None,
                          ssl_handshake_timeout: float | None = None,
                          **kw: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """As `asyncio.open_connection`, on `stack_host` (a running `stack.Host`).
    `ssl` (True or an SSLContext) runs TLS over the stack connection."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(lambda: protocol, host, port,
                                           stack_host=stack_host, **kw)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    if ssl:
        import ssl as _ssl

        context = _ssl.create_default_context() if ssl is True else ssl
        try:
            await writer.start_tls(context, server_hostname=server_hostname or host,
                                   ssl_handshake_timeout=ssl_handshake_timeout)
        except BaseException:
            transport.abort()
            raise
    return reader, writer


# ----------------------------------------------------------------- serving
class StackServer(asyncio.AbstractServer):
    """Listening facade sockets served on an asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sockets: list[Any],
                 protocol_factory: Callable[[], asyncio.BaseProtocol], backlog: int,
                 ssl: Any = None, ssl_handshake_timeout: float | None = None) -> None:
        self._loop = loop
        self._sockets: list[Any] | None = sockets
        self._factory = protocol_factory
        self._backlog = backlog
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._serving = False
        self._transports: set[StackTransport] = set()
        self._closed = loop.create_future()
        self._serving_forever: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<StackServer sockets={self.sockets!r}>"

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self._sockets or ())

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._start()
        await asyncio.sleep(0)

    def _start(self) -> None:
        if self._serving or self._sockets is None:
            return
        self._serving = True
        for sock in self._sockets:
            sock.setblocking(False)
            self._loop.add_reader(sock.fileno(), self._accept_ready, sock)

    def _accept_ready(self, listener: Any) -> None:
        for _ in range(self._backlog):
            try:
                conn, _addr = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                self._loop.call_exception_handler({
                    "message": "stack socket accept failed", "exception": exc,
                    "socket": listener})
                return
            try:
                protocol = self._factory()
                if self._ssl is not None:
                    # TLS between the transport and the application protocol,
                    # as asyncio's own servers do (sslproto.SSLProtocol).
                    from asyncio.sslproto import SSLProtocol

                    protocol = SSLProtocol(
                        self._loop, protocol, self._ssl, None, server_side=True,
                        ssl_handshake_timeout=self._ssl_handshake_timeout)
                StackTransport(self._loop, conn, protocol, server=self)
            except BaseException:
                conn.close()
                raise

    def _attach(self, transport: StackTransport) -> None:
        self._transports.add(transport)

    def _detach(self, transport: StackTransport) -> None:
        self._transports.discard(transport)
        self._wakeup()

    def _wakeup(self) -> None:
        if self._sockets is None and not self._transports and not self._closed.done():
            self._closed.set_result(None)

    def close(self) -> None:
        """Stop listening (connections already accepted go on)."""
        sockets, self._sockets = self._sockets, None
        if sockets is None:
            return
        for sock in sockets:
            if self._serving:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._serving = False
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
            self._serving_forever = None
        self._wakeup()

    async def wait_closed(self) -> None:
        """Until closed and every connection it accepted is gone."""
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None


async def _listen_addresses(loop: asyncio.AbstractEventLoop, host: Any, port: int, family: int
                            ) -> list[tuple[int, str]]:
    if host in (None, ""):
        if family == _std.AF_INET:
            return [(_std.AF_INET, "0.0.0.0")]
        return [(_std.AF_INET6, "")]  # dual stack: every address of both families
    hosts = [host] if isinstance(host, str) else list(host)
    out: list[tuple[int, str]] = []
    for name in hosts:
        for fam, sockaddr in await _resolve(loop, name, port, family, _std.AI_PASSIVE):
            if (fam, sockaddr[0]) not in out:
                out.append((fam, sockaddr[0]))
    if not out:
        raise OSError(errno.EADDRNOTAVAIL, f"no address to listen on for {host!r}")
    return out


async def create_server(protocol_factory: Callable[[], asyncio.BaseProtocol],
                        host: Any = None, port: int = 0, *, stack_host: Any = None,
                        family: int = 0, backlog: int = _DEFAULT_BACKLOG,
                        reuse_address: bool | None = None, sock: Any = None,
                        ssl: Any = None, ssl_handshake_timeout: float | None = None,
                        start_serving: bool = True) -> StackServer:
    """As `loop.create_server`: host None/"" listens on every address (one
    dual-stack socket), a name or a list on each of its addresses; `ssl` (an
    SSLContext) makes every accepted connection TLS."""
    loop = asyncio.get_running_loop()
    sockets: list[Any] = []
    if sock is None:
        stack_host = _host_or_default(stack_host)
    if sock is not None:
        sockets.append(sock)
    else:
        try:
            for fam, addr in await _listen_addresses(loop, host, port, family):
                s = stack_host.socket(fam, _std.SOCK_STREAM)
                sockets.append(s)
                if reuse_address is not False:
                    s.setsockopt(_std.SOL_SOCKET, _std.SO_REUSEADDR, 1)
                if fam == _std.AF_INET6:
                    s.setsockopt(_std.IPPROTO_IPV6, _std.IPV6_V6ONLY, 0 if addr == "" else 1)
                s.bind((addr, port))
                s.listen(backlog)
        except BaseException:
            for s in sockets:
                s.close()
            raise
    server = StackServer(loop, sockets, protocol_factory, backlog, ssl, ssl_handshake_timeout)
    if start_serving:
        await server.start_serving()
    return server


async def start_server(client_connected_cb: ClientConnected, host: Any = None,
                       port: int = 0, *, stack_host: Any = None, limit: int = _DEFAULT_LIMIT,
                       **kw: Any) -> StackServer:
    """As `asyncio.start_server`, on `stack_host`: `client_connected_cb(reader,
    writer)` (a function or a coroutine function) for every connection; `ssl=`
    an SSLContext for TLS."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(factory, host, port, stack_host=stack_host, **kw)


__all__ = ["StackServer", "StackTransport", "connect", "create_connection", "create_server",
           "open_connection", "start_server"]
