"""TLS over a socket of the userspace stack, with `ssl.SSLObject` and memory BIOs.

OpenSSL's own socket I/O (`ssl.SSLSocket`) needs a kernel socket under its
file descriptor; a stack socket's `fileno()` is only a readiness eventfd. So
the TLS records go through two `ssl.MemoryBIO`s and the stack socket's
`send`/`recv`, as asyncio's sslproto does:

    tls = wrap_socket(ssl.create_default_context(), host.create_connection(addr),
                      server_hostname="example.net")
    tls.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); tls.recv(4096)

`TlsSocket` offers what `ssl.SSLSocket` users call (send/recv/sendall/
recv_into/makefile/close/shutdown/unwrap, getpeercert, cipher, version,
selected_alpn_protocol, timeouts, blocking and non-blocking modes: in
non-blocking mode `SSLWantReadError`/`SSLWantWriteError` as with the kernel);
`mpstack run` makes `SSLContext.wrap_socket` return one for a stack socket.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from stack.api.socket import socket_makefile

_CHUNK = 256 * 1024
T = TypeVar("T")


class TlsSocket:
    """A TLS connection over a connected stack socket (see the module docstring)."""

    def __init__(self, context: ssl.SSLContext, sock: Any, *, server_side: bool = False,
                 server_hostname: str | None = None, session: ssl.SSLSession | None = None,
                 do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True
                 ) -> None:
        if server_side and server_hostname:
            raise ValueError("server_hostname can only be specified in client mode")
        if context.check_hostname and not server_side and not server_hostname:
            raise ValueError("check_hostname requires server_hostname")
        self._sock = sock
        self.context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.suppress_ragged_eofs = suppress_ragged_eofs
        self.family, self.type, self.proto = sock.family, sock.type, sock.proto
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=server_side,
                                     server_hostname=server_hostname, session=session)
        self._lock = threading.Lock()  # see "the pump" below
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._fed = 0
        self._io_refs = 0
        self._closed = False  # close() was called
        self._released = False  # the stack socket is closed
        self._handshaken = False
        self._do_handshake_on_connect = do_handshake_on_connect
        if do_handshake_on_connect and _connected(sock):
            self.do_handshake()

    # ------------------------------------------------------------ the pump
    # Three locks, so that one thread may wait for incoming data while another
    # sends (full duplex, as with ssl.SSLSocket): `_lock` guards the SSLObject
    # and the BIOs and is never held while blocking; `_write_lock` keeps TLS
    # records in order on the wire; `_read_lock` lets one thread at a time
    # receive from the socket. `_fed` counts BIO feeds: a thread that needs
    # more data receives only if nobody fed the BIO since its attempt.
    def _flush(self) -> None:
        """Hand every pending TLS record to the stack socket, in order."""
        with self._write_lock:
            while True:
                with self._lock:
                    data = self._out.read()
                if not data:
                    return
                view = memoryview(data)
                while view:
                    try:
                        n = self._sock.send(view)
                    except BlockingIOError:
                        # Non-blocking: wait for space rather than lose records
                        # (they are already out of OpenSSL's hands).
                        self._wait_writable()
                        continue
                    view = view[n:]

    def _wait_writable(self) -> None:
        import select

        poller = select.poll()
        poller.register(self._sock.writable_fileno(), select.POLLIN)
        timeout = self._sock.gettimeout()
        poller.poll(int(timeout * 1000) if timeout else None)

    def _fill(self, fed_before: int) -> None:
        """Feed what the stack socket has to OpenSSL (EOF included)."""
        with self._read_lock:
            if self._fed != fed_before:
                return  # another thread brought data meanwhile: try again first
            try:
                data = self._sock.recv(_CHUNK)  # timeouts: as the socket's
            except BlockingIOError:
                raise ssl.SSLWantReadError("The operation did not complete (read)") from None
            with self._lock:
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
                self._fed += 1

    def _pump(self, op: Callable[[], T]) -> T:
        """Run an SSLObject call until it completes, moving records both ways."""
        while True:
            with self._lock:
                fed = self._fed
                try:
                    return_value = (op(),)
                except ssl.SSLWantReadError:
                    return_value = None
                except ssl.SSLWantWriteError:  # the out BIO is full: flush, retry
                    return_value = ()
            self._flush()
            if return_value:
                return return_value[0]
            if return_value is None:
                self._fill(fed)

    # ------------------------------------------------------------ TLS calls
    def do_handshake(self, block: bool = False) -> None:
        self._pump(self._obj.do_handshake)
        self._handshaken = True

    def _check(self) -> None:
        # As a kernel socket: close() with a makefile() still open keeps the
        # connection usable through that file until it is closed too.
        if self._released:
            raise OSError(9, "Bad file descriptor")

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv() on TlsSocket")
        self._check()
        if buflen == 0:
            return b""
        try:
            return self._pump(lambda: self._obj.read(buflen))
        except ssl.SSLZeroReturnError:
            return b""  # close_notify
        except ssl.SSLEOFError:
            if self.suppress_ragged_eofs:
                return b""
            raise

    read = recv

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        n = nbytes or view.nbytes
        data = self.recv(n, flags)
        view[:len(data)] = data
        return len(data)

    def send(self, data: Any, flags: int = 0) -> int:
        if flags:
            raise ValueError("non-zero flags not allowed in calls to send() on TlsSocket")
        self._check()
        return self._pump(lambda: self._obj.write(data))

    write = send

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = self.send(view[:_CHUNK], flags)
            view = view[n:]

    def pending(self) -> int:
        return self._obj.pending()

    def unwrap(self) -> Any:
        """Send close_notify (and wait for the peer's); return the plain socket."""
        try:
            self._pump(self._obj.unwrap)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            pass
        sock, self._closed, self._released = self._sock, True, True
        return sock

    # ---------------------------------------- not yet connected: as SSLSocket
    def connect(self, address: Any) -> None:
        self._sock.connect(address)
        if self._do_handshake_on_connect:
            self.do_handshake()

    def connect_ex(self, address: Any) -> int:
        code = self._sock.connect_ex(address)
        if code == 0 and self._do_handshake_on_connect:
            self.do_handshake()
        return code

    def bind(self, address: Any) -> None:
        self._sock.bind(address)

    def listen(self, backlog: int = 128) -> None:
        self._sock.listen(backlog)

    def accept(self) -> tuple[TlsSocket, Any]:
        """A wrapped listening socket gives TLS server connections (handshake
        here when do_handshake_on_connect, as `SSLSocket.accept`)."""
        conn, addr = self._sock.accept()
        try:
            return TlsSocket(self.context, conn, server_side=True,
                             do_handshake_on_connect=self._do_handshake_on_connect,
                             suppress_ragged_eofs=self.suppress_ragged_eofs), addr
        except BaseException:
            conn.close()
            raise

    # -------------------------------------------------------------- details
    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._obj.getpeercert(binary_form)

    def cipher(self) -> tuple[str, str, int] | None:
        return self._obj.cipher()

    def shared_ciphers(self) -> list[tuple[str, str, int]] | None:
        return self._obj.shared_ciphers()

    def version(self) -> str | None:
        return self._obj.version()

    def selected_alpn_protocol(self) -> str | None:
        return self._obj.selected_alpn_protocol()

    def compression(self) -> str | None:
        return self._obj.compression()

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        return self._obj.get_channel_binding(cb_type)

    @property
    def session(self) -> ssl.SSLSession | None:
        return self._obj.session

    @property
    def session_reused(self) -> bool:
        return self._obj.session_reused

    # ------------------------------------------------ the socket underneath
    def fileno(self) -> int:
        return self._sock.fileno()

    def writable_fileno(self) -> int:
        return self._sock.writable_fileno()

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def getblocking(self) -> bool:
        return self._sock.getblocking()

    @property
    def timeout(self) -> float | None:
        return self._sock.gettimeout()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """As `socket.socket.makefile` (the stdlib's SocketIO over this object)."""
        return socket_makefile(self, mode, buffering, encoding, errors, newline)

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs == 0:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._sock.close()

    def close(self) -> None:
        """Close the TCP connection (no close_notify, as `SSLSocket.close`);
        with makefile() objects open, when the last of them is closed."""
        self._closed = True
        if self._io_refs == 0:
            self._release()

    def __enter__(self) -> TlsSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<stack.api.tls.TlsSocket {self.version()} over {self._sock!r}>"


def _connected(sock: Any) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def wrap_socket(context: ssl.SSLContext, sock: Any, server_side: bool = False,
                do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
                server_hostname: str | None = None,
                session: ssl.SSLSession | None = None) -> TlsSocket:
    """`context.wrap_socket(sock, ...)` for a stack socket."""
    return TlsSocket(context, sock, server_side=server_side, server_hostname=server_hostname,
                     session=session, do_handshake_on_connect=do_handshake_on_connect,
                     suppress_ragged_eofs=suppress_ragged_eofs)


__all__ = ["TlsSocket", "wrap_socket"]
