"""BSD-style TCP sockets over a running `Host` (a thin layer over the sans-IO core).

A `Socket` mirrors the standard library's `socket.socket` for TCP. Every call
takes the host's lock, acts on the core's TcpConnection or Listener with the
current time, flushes the core's output and wakes the event loop
(`EventLoop.kick`); a blocking call waits on the host's condition variable,
which the loop notifies after every turn (DESIGN.md §1).

Readiness for `select`/`selectors`/`asyncio`: `fileno()` is an eventfd that
the host keeps readable exactly while `recv()`/`accept()` would not block
(data, EOF, a pending error, a connection to accept). An eventfd always polls
writable, so waiting for send space uses a second eventfd,
`writable_fileno()`, which is *readable* while `send()` would not block (and
once a non-blocking `connect()` has completed or failed).

`close()` never loses data: queued bytes keep going out in the background and
the FIN follows them, as with the kernel's default (no SO_LINGER); the host
keeps the connection until it is done, and `Host.close()` waits for it.
"""

from __future__ import annotations

import errno
import io
import ipaddress
import os
import socket as _std
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stack.tcp.config import TcpConfig
from stack.tcp.state import TcpState

if TYPE_CHECKING:
    from stack.api.host import Host

AF_INET, AF_INET6, SOCK_STREAM = _std.AF_INET, _std.AF_INET6, _std.SOCK_STREAM
IPPROTO_TCP, SOL_SOCKET = _std.IPPROTO_TCP, _std.SOL_SOCKET
# Linux's value (include/uapi/linux/in.h); Python < 3.10 lacks the constant.
IPPROTO_MPTCP: int = getattr(_std, "IPPROTO_MPTCP", 262)
SHUT_RD, SHUT_WR, SHUT_RDWR = _std.SHUT_RD, _std.SHUT_WR, _std.SHUT_RDWR

# Buffer sizes of a new socket: larger than the core's TcpConfig default so that
# one connection fills a fast local path (Linux autotunes up to 4 MB / 6 MB);
# SO_SNDBUF / SO_RCVBUF before connect()/listen() change them.
DEFAULT_SNDBUF = 1 << 20
DEFAULT_RCVBUF = 1 << 20

_HANDSHAKE = frozenset({TcpState.SYN_SENT, TcpState.SYN_RECEIVED})
# States in which the application may still queue data (RFC 9293 §3.10.2).
_CAN_SEND = frozenset({TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.ESTABLISHED,
                       TcpState.CLOSE_WAIT})

Address = tuple[Any, ...]


def _err(code: int, what: str = "") -> OSError:
    """OSError(code) — the constructor picks the subclass (ConnectionRefusedError...)."""
    msg = os.strerror(code)
    return OSError(code, f"{msg} ({what})" if what else msg)


class _Ready:
    """An eventfd kept readable while a condition holds (level-triggered)."""

    __slots__ = ("fd", "is_set")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.is_set = False

    def set(self, value: bool) -> None:
        if value == self.is_set or self.fd < 0:
            return
        self.is_set = value
        if value:
            os.eventfd_write(self.fd, 1)
        else:
            try:
                os.eventfd_read(self.fd)
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def socket_makefile(sock: Any, mode: str, buffering: int | None, encoding: str | None,
                    errors: str | None, newline: str | None) -> Any:
    """`socket.socket.makefile` for a socket-like ``sock`` (stdlib semantics,
    same io classes): the stdlib's `SocketIO` over ``sock``, which must count
    its open files in ``_io_refs`` and define ``_decref_socketios``, as the
    stdlib socket does. Shared by `Socket` and `stack.api.tls.TlsSocket`."""
    if not set(mode) <= {"r", "w", "b"}:
        raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
    writing = "w" in mode
    reading = "r" in mode or not writing
    binary = "b" in mode
    rawmode = ("r" if reading else "") + ("w" if writing else "")
    raw = _std.SocketIO(sock, rawmode)
    sock._io_refs += 1
    if buffering is None or buffering < 0:
        buffering = io.DEFAULT_BUFFER_SIZE
    if buffering == 0:
        if not binary:
            raise ValueError("unbuffered streams must be binary")
        return raw
    buffer: io.BufferedIOBase
    if reading and writing:
        buffer = io.BufferedRWPair(raw, raw, buffering)
    elif reading:
        buffer = io.BufferedReader(raw, buffering)
    else:
        buffer = io.BufferedWriter(raw, buffering)
    if binary:
        return buffer
    text = io.TextIOWrapper(buffer, encoding, errors, newline)
    text.mode = mode  # type: ignore[misc]
    return text


class _TcpSocket:
    """The BSD-style TCP socket; `Socket` adds the RFC 6897 API to it."""

    def __init__(self, host: Host, family: int = AF_INET, type: int = SOCK_STREAM,
                 proto: int = 0, *, _conn: Any = None) -> None:
        if family not in (AF_INET, AF_INET6):
            raise _err(errno.EAFNOSUPPORT, "only AF_INET and AF_INET6")
        base_type = type & ~(getattr(_std, "SOCK_NONBLOCK", 0) | getattr(_std, "SOCK_CLOEXEC", 0))
        if base_type != SOCK_STREAM or proto not in (0, IPPROTO_TCP, IPPROTO_MPTCP):
            raise _err(errno.EPROTONOSUPPORT, "only TCP and MPTCP (SOCK_STREAM)")
        if proto == IPPROTO_MPTCP and not host.mptcp_capable:
            raise _err(errno.EPROTONOSUPPORT, "this stack's core has no MPTCP")
        self._host = host
        self._lock = host.lock
        self.family = _std.AddressFamily(family)
        self.type = _std.SocketKind(SOCK_STREAM)
        # IPPROTO_MPTCP asks the core for an MPTCP connection or listener
        # (RFC 8684; it falls back to TCP when the peer does not do MPTCP).
        self.proto = proto
        self._timeout: float | None = _std.getdefaulttimeout()
        if type & getattr(_std, "SOCK_NONBLOCK", 0):
            self._timeout = 0.0
        self._conn: Any = _conn
        self._listener: Any = None
        self._bound: tuple[str, int] | None = None
        self._closed = False
        self._shut_rd = False
        self._shut_wr = False
        self._io_refs = 0
        self._pending_error = 0  # SO_ERROR of a failed non-blocking connect
        self._read_ready: _Ready | None = None
        self._write_ready: _Ready | None = None
        self.options: dict[tuple[int, int], int] = {
            (IPPROTO_TCP, _std.TCP_NODELAY): 0,
            (SOL_SOCKET, _std.SO_KEEPALIVE): 0,
            (SOL_SOCKET, _std.SO_REUSEADDR): 0,
            (SOL_SOCKET, _std.SO_SNDBUF): DEFAULT_SNDBUF,
            (SOL_SOCKET, _std.SO_RCVBUF): DEFAULT_RCVBUF,
            (_std.IPPROTO_IPV6, _std.IPV6_V6ONLY): 0,
        }
        if _conn is not None:
            host._adopt(self, _conn)

    # ---------------------------------------------------------------- helpers
    def __repr__(self) -> str:
        state = "closed" if self._closed else (
            f"listening {self._bound}" if self._listener is not None else
            f"{self._conn.state}" if self._conn is not None else "new")
        return f"<stack.socket.Socket fd={self.fileno() if not self._closed else -1} {state}>"

    def _now(self) -> float:
        return self._host.clock()

    def _check_open(self) -> None:
        if self._closed:
            raise _err(errno.EBADF)
        self._host._check_running()

    def _wait(self, ready: Callable[[], bool], timeout: float | None) -> None:
        """Wait (lock held) until ready(); TimeoutError / BlockingIOError otherwise."""
        if ready():
            return
        if timeout == 0.0:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        cond = self._host.cond
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_open()
            if end is None:
                cond.wait(1.0)
            else:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                cond.wait(left)
            if ready():
                return

    def _config(self) -> TcpConfig:
        opt = self.options
        return TcpConfig(
            nodelay=bool(opt[(IPPROTO_TCP, _std.TCP_NODELAY)]),
            keepalive=bool(opt[(SOL_SOCKET, _std.SO_KEEPALIVE)]),
            sndbuf=max(4096, opt[(SOL_SOCKET, _std.SO_SNDBUF)]),
            rcvbuf=max(4096, opt[(SOL_SOCKET, _std.SO_RCVBUF)]),
        )

    def _mptcp_kw(self) -> dict[str, bool]:
        """The core's `mptcp=` argument: asked for by IPPROTO_MPTCP sockets only
        (a plain TCP socket leaves the core's default alone)."""
        return {"mptcp": True} if self.proto == IPPROTO_MPTCP else {}

    def _resolve(self, address: Address) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address,
                                                   int]:
        if not isinstance(address, tuple) or len(address) < 2:
            raise TypeError(f"{self.family.name} address must be a tuple (host, port)")
        host, port = address[0], address[1]
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise OverflowError("port must be 0-65535.")
        if host in ("", None):
            return ipaddress.ip_address("0.0.0.0" if self.family == AF_INET else "::"), port
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            infos = _std.getaddrinfo(host, port, self.family, SOCK_STREAM)
            ip = ipaddress.ip_address(infos[0][4][0])
        if ip.version == 6 and ip.ipv4_mapped is not None and self.family == AF_INET6:
            ip = ip.ipv4_mapped  # a v4-mapped address on a dual-stack socket
        elif (ip.version == 4) != (self.family == AF_INET):
            raise _err(errno.EAFNOSUPPORT, f"{ip} is not an {self.family.name} address")
        return ip, port

    def _sockaddr(self, ip: Any, port: int) -> Address:
        if self.family == AF_INET6:
            text = str(ip)
            if "." in text:  # IPv4 on a dual-stack socket: v4-mapped, as Linux shows it
                text = f"::ffff:{text}"
            return (text, port, 0, 0)
        return (str(ip), port)

    def _conn_error(self, conn: Any) -> int:
        return conn.error or 0

    # -------------------------------------------------------------- readiness
    def fileno(self) -> int:
        """An eventfd, readable while recv()/accept() would not block."""
        with self._lock:
            if self._closed:
                return -1
            if self._read_ready is None:
                self._read_ready = _Ready()
                self._refresh()
            return self._read_ready.fd

    def writable_fileno(self) -> int:
        """An eventfd, readable while send() would not block."""
        with self._lock:
            if self._closed:
                return -1
            if self._write_ready is None:
                self._write_ready = _Ready()
                self._refresh()
            return self._write_ready.fd

    def _readable(self) -> bool:
        if self._closed or self._pending_error:
            return True
        if self._listener is not None:
            return self._listener.pending > 0 or self._listener.closed
        conn = self._conn
        if conn is None:
            return False
        return (self._shut_rd or conn.readable > 0 or conn.eof_received
                or bool(conn.error) or conn.state is TcpState.CLOSED)

    def _writable(self) -> bool:
        if self._closed or self._pending_error:
            return True
        conn = self._conn
        if conn is None:
            return False
        if conn.error or self._shut_wr or conn.state not in _CAN_SEND:
            return True
        return conn.state not in _HANDSHAKE and conn.send_space > 0

    def _refresh(self) -> None:
        """Called by the host (lock held) when the core touched this socket."""
        if self._read_ready is not None:
            self._read_ready.set(self._readable())
        if self._write_ready is not None:
            self._write_ready.set(self._writable())

    # ------------------------------------------------------------ addressing
    def bind(self, address: Address) -> None:
        with self._lock:
            self._check_open()
            if self._bound is not None or self._conn is not None:
                raise _err(errno.EINVAL, "already bound")
            ip, port = self._resolve(address)
            if not ip.is_unspecified and self._host.core.owner(ip) is None:
                raise _err(errno.EADDRNOTAVAIL, str(ip))
            if port and self._host._port_in_use(ip, port, self):
                raise _err(errno.EADDRINUSE, f"port {port}")
            self._bound = (str(ip), port)
            self._host._bind(self)

    def getsockname(self) -> Address:
        with self._lock:
            self._check_open()
            if self._conn is not None:
                return self._sockaddr(*self._conn.local)
            if self._listener is not None:
                bound = self._bound[0] if self._bound else "::"
                return self._sockaddr(bound, self._listener.port)
            if self._bound is not None:
                return self._sockaddr(*self._bound)
            return self._sockaddr("0.0.0.0" if self.family == AF_INET else "::", 0)

    def getpeername(self) -> Address:
        with self._lock:
            self._check_open()
            conn = self._conn
            if conn is None or conn.state is TcpState.SYN_SENT:
                raise _err(errno.ENOTCONN)
            return self._sockaddr(*conn.remote)

    # ------------------------------------------------------------ connecting
    def connect(self, address: Address) -> None:
        code = self._connect(address, raise_errors=True)
        if code:
            raise _err(code)

    def connect_ex(self, address: Address) -> int:
        try:
            return self._connect(address, raise_errors=False)
        except OSError as exc:
            return exc.errno or errno.EIO

    def _connect(self, address: Address, *, raise_errors: bool) -> int:
        with self._lock:
            self._check_open()
            if self._listener is not None:
                raise _err(errno.EINVAL, "listening socket")
            if self._conn is not None:
                if self._conn.state in _HANDSHAKE:
                    return errno.EALREADY
                if self._pending_error or self._conn.error:
                    code = self._pending_error or self._conn.error
                    self._pending_error = 0
                    return code
                return errno.EISCONN
            ip, port = self._resolve(address)
            if port == 0:
                raise _err(errno.EINVAL, "port 0")
            local_addr, local_port = None, 0
            if self._bound is not None:
                b_ip = ipaddress.ip_address(self._bound[0])
                local_addr = None if b_ip.is_unspecified else b_ip
                local_port = self._bound[1]
            now = self._now()
            conn = self._host.core.connect(ip, port, now, local_addr=local_addr,
                                           local_port=local_port, config=self._config(),
                                           **self._mptcp_kw())
            self._conn = conn
            self._host._adopt(self, conn)
            self._host.loop.kick()
            try:
                self._wait(lambda: conn.state not in _HANDSHAKE or bool(conn.error),
                           self._timeout)
            except BlockingIOError:
                return errno.EINPROGRESS
            except TimeoutError:
                # Like the kernel: the attempt goes on; a later connect() reports it.
                if raise_errors:
                    raise
                return errno.EAGAIN
            if conn.error:
                self._pending_error = 0
                return conn.error
            return 0

    def listen(self, backlog: int = 128) -> None:
        with self._lock:
            self._check_open()
            if self._conn is not None:
                raise _err(errno.EINVAL, "connected socket")
            if self._listener is not None:
                self._listener.backlog = max(1, backlog)
                return
            addr, port = self._bound or ("", 0)
            ip = ipaddress.ip_address(addr) if addr else None
            listen_addr: str | None
            if ip is not None and not ip.is_unspecified:
                listen_addr = str(ip)
            elif self.family == AF_INET:
                listen_addr = "0.0.0.0"
            elif self.options[(_std.IPPROTO_IPV6, _std.IPV6_V6ONLY)]:
                listen_addr = "::"
            else:
                listen_addr = None  # dual stack: every address of both families
            self._listener = self._host.core.listen(listen_addr, port, max(1, backlog),
                                                    self._config(), **self._mptcp_kw())
            if self._bound is None:
                self._bound = (listen_addr or "::", self._listener.port)
            self._host._adopt(self, self._listener)

    def accept(self) -> tuple[_TcpSocket, Address]:
        with self._lock:
            self._check_open()
            lst = self._listener
            if lst is None:
                raise _err(errno.EINVAL, "not listening")
            while True:
                self._wait(lambda: lst.pending > 0 or self._closed, self._timeout)
                self._check_open()
                conn = lst.accept()
                if conn is None:
                    continue
                if conn.state is TcpState.CLOSED:
                    continue  # reset before we took it
                sock = type(self)(self._host, self.family, SOCK_STREAM, self.proto, _conn=conn)
                sock._timeout = _std.getdefaulttimeout()
                sock.options = dict(self.options)
                self._refresh()
                return sock, sock._sockaddr(*conn.remote)

    # ------------------------------------------------------------- data path
    def _connected(self) -> Any:
        self._check_open()
        conn = self._conn
        if conn is None:
            raise _err(errno.ENOTCONN)
        return conn

    def send(self, data: Any, flags: int = 0) -> int:
        return self._send(memoryview(data).cast("B"), self._timeout)

    def _send(self, view: memoryview, timeout: float | None) -> int:
        with self._lock:
            conn = self._connected()
            if not view.nbytes:
                self._send_check(conn)
                return 0
            self._wait(lambda: self._send_ready(conn), timeout)
            self._send_check(conn)
            now = self._now()
            n = conn.send(view, now)
            self._host.core.wake(conn, now)
            self._host.loop.kick()
            return n

    def _send_ready(self, conn: Any) -> bool:
        if self._closed or self._shut_wr or conn.error or conn.state not in _CAN_SEND:
            return True
        return conn.state not in _HANDSHAKE and conn.send_space > 0

    def _send_check(self, conn: Any) -> None:
        if conn.error:
            raise _err(conn.error)
        if self._shut_wr or conn.state not in _CAN_SEND:
            raise _err(errno.EPIPE)
        if conn.state is TcpState.SYN_SENT:
            raise _err(errno.ENOTCONN)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Queue every byte (the timeout, if any, applies to the whole call)."""
        view = memoryview(data).cast("B")
        total = view.nbytes
        sent = 0
        timeout = self._timeout
        deadline = None if not timeout else time.monotonic() + timeout
        while sent < total:
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise TimeoutError("timed out")
            sent += self._send(view[sent:], timeout)

    def sendfile(self, file: io.BufferedReader, offset: int = 0, count: int | None = None) -> int:
        file.seek(offset)
        total = 0
        while count is None or total < count:
            chunk = file.read(65536 if count is None else min(65536, count - total))
            if not chunk:
                break
            self.sendall(chunk)
            total += len(chunk)
        return total

    def _recv_ready(self, conn: Any) -> bool:
        return (self._closed or self._shut_rd or conn.readable > 0 or conn.eof_received
                or bool(conn.error) or conn.state is TcpState.CLOSED)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        with self._lock:
            conn = self._connected()
            if conn.state is TcpState.SYN_SENT and self._timeout == 0.0:
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            self._wait(lambda: self._recv_ready(conn), self._timeout)
            self._check_open()
            if self._shut_rd or bufsize == 0:
                return b""
            if conn.readable > 0:
                data = conn.recv(bufsize)
                self._after_read(conn)
                return data
            if conn.error and not conn.eof_received:
                raise _err(conn.error)
            return b""

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        with self._lock:
            conn = self._connected()
            self._wait(lambda: self._recv_ready(conn), self._timeout)
            self._check_open()
            if self._shut_rd or not view.nbytes:
                return 0
            if conn.readable > 0:
                n = conn.recv_into(view)
                self._after_read(conn)
                return n
            if conn.error and not conn.eof_received:
                raise _err(conn.error)
            return 0

    def _after_read(self, conn: Any) -> None:
        """The receive window may have opened: let the core send a window update."""
        self._host.core.wake(conn, self._now())
        self._host.loop.kick()

    # ---------------------------------------------------------------- closing
    def shutdown(self, how: int) -> None:
        with self._lock:
            self._check_open()
            if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
                raise _err(errno.EINVAL)
            if self._listener is not None:
                return
            conn = self._conn
            if conn is None:
                raise _err(errno.ENOTCONN)
            if how in (SHUT_RD, SHUT_RDWR):
                self._shut_rd = True
            if how in (SHUT_WR, SHUT_RDWR) and not self._shut_wr:
                self._shut_wr = True
                if conn.state in _CAN_SEND:
                    now = self._now()
                    conn.shutdown_write(now)
                    self._host.core.wake(conn, now)
            self._refresh()
            self._host.loop.kick()

    def close(self) -> None:
        """Release the socket; a connection finishes sending in the background."""
        with self._lock:
            if self._closed:
                return
            if self._io_refs > 0:
                self._closing = True
                return
            self._real_close()

    _closing = False

    def _real_close(self) -> None:
        self._closed = True
        host = self._host
        now = self._now()
        if self._listener is not None:
            host.core.close_listener(self._listener, now)
        elif self._conn is not None and self._conn.state is not TcpState.CLOSED:
            self._conn.close(now)  # FIN after the queued data; RST if unread data
            host.core.wake(self._conn, now)
        host._release(self)
        for ready in (self._read_ready, self._write_ready):
            if ready is not None:
                ready.close()
        if host.running:
            host.loop.kick()
        else:
            host.cond.notify_all()

    def detach(self) -> int:
        raise _err(errno.EOPNOTSUPP, "a userspace socket has no kernel descriptor")

    def dup(self) -> _TcpSocket:
        raise _err(errno.EOPNOTSUPP, "dup() of a userspace socket (no kernel descriptor)")

    def get_inheritable(self) -> bool:
        return False  # nothing a child process could inherit

    def set_inheritable(self, inheritable: bool) -> None:
        if inheritable:
            raise _err(errno.EOPNOTSUPP, "a userspace socket cannot pass to a child process")

    # A connected TCP socket: the address is the peer's / ignored, as the stdlib.
    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Address]:
        data = self.recv(bufsize, flags)
        return data, self.getpeername()

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Address]:
        n = self.recv_into(buffer, nbytes, flags)
        return n, self.getpeername()

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        flags = 0 if address is None else flags_or_address
        return self.send(data, flags)

    def __enter__(self) -> _TcpSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A socket dropped without close(): close it like the kernel closes the
        # descriptor of an exiting process. The garbage collector may run us
        # inside a core call, so the host does it at its next clean point.
        try:
            if not self._closed:
                self._host._defer_close(self)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ------------------------------------------------------------ options
    def setsockopt(self, level: int, optname: int, value: int | bytes,
                   optlen: int | None = None) -> None:
        if isinstance(value, bytes | bytearray):
            value = int.from_bytes(bytes(value)[:4].ljust(4, b"\0"), "little", signed=True)
        with self._lock:
            self._check_open()
            key = (level, optname)
            if key not in self.options:
                raise _err(errno.ENOPROTOOPT)
            self.options[key] = int(value)
            conn = self._conn
            if conn is None:
                return
            cfg = getattr(conn, "config", None)
            if cfg is None:
                return
            if key == (IPPROTO_TCP, _std.TCP_NODELAY):
                cfg.nodelay = bool(value)  # RFC 9293 §3.7.4: may send a held segment now
            elif key == (SOL_SOCKET, _std.SO_KEEPALIVE):
                cfg.keepalive = bool(value)
            else:
                return  # buffer sizes apply to new connections only
            now = self._now()
            self._host.core.wake(conn, now)
            self._host.loop.kick()

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        with self._lock:
            self._check_open()
            if (level, optname) == (SOL_SOCKET, _std.SO_ERROR):
                code = self._pending_error or (self._conn.error if self._conn else 0) or 0
                self._pending_error = 0
                value = code
            elif (level, optname) == (SOL_SOCKET, _std.SO_TYPE):
                value = SOCK_STREAM
            elif (level, optname) == (SOL_SOCKET, _std.SO_ACCEPTCONN):
                value = int(self._listener is not None)
            elif (level, optname) in self.options:
                value = self.options[(level, optname)]
            else:
                raise _err(errno.ENOPROTOOPT)
        if buflen:
            return int(value).to_bytes(4, "little", signed=True)[:buflen]
        return value

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    @property
    def timeout(self) -> float | None:
        return self._timeout

    # -------------------------------------------------------------- extras
    @property
    def connection(self) -> Any:
        """The core's TcpConnection (read-only use: state, stats)."""
        return self._conn

    def tcp_info(self) -> dict[str, Any]:
        """Connection state and counters (a small TCP_INFO)."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return {}
            stats = getattr(conn, "stats", None)
            info = dict(vars(stats)) if hasattr(stats, "__dict__") else {}
            if not info and stats is not None and hasattr(stats, "__slots__"):
                info = {k: getattr(stats, k) for k in stats.__slots__}
            info.update(state=str(conn.state), all_acked=conn.all_acked,
                        eof_received=conn.eof_received, error=conn.error)
            return info

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until everything sent is acknowledged and the peer's FIN arrived
        (or the connection failed); True when both happened without an error."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return False
            try:
                self._wait(lambda: (conn.all_acked and conn.eof_received) or bool(conn.error)
                           or conn.state is TcpState.CLOSED, timeout)
            except (TimeoutError, BlockingIOError):
                return False
            return bool(conn.all_acked and conn.eof_received and not conn.error)

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """As `socket.socket.makefile` (stdlib semantics, same io classes)."""
        return socket_makefile(self, mode, buffering, encoding, errors, newline)

    def _decref_socketios(self) -> None:
        with self._lock:
            if self._io_refs > 0:
                self._io_refs -= 1
            if self._closing and self._io_refs == 0 and not self._closed:
                self._real_close()


# The RFC 6897 API (stack/api/multipath.py) comes first in the bases so that its
# hooks (_mptcp_kw, _refresh, setsockopt, ...) wrap the TCP socket's.
from stack.api.multipath import MultipathSocketMixin  # noqa: E402


class Socket(MultipathSocketMixin, _TcpSocket):
    """A TCP socket of the userspace stack (create it with `host.socket()`),
    with the RFC 6897 multipath API (`multipath_*`, TCP_MULTIPATH_* options)."""
