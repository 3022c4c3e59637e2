"""Inside a program started by `mpstack run`: its TCP sockets on the userspace stack.

`mpstack run` (stack/api/run.py) starts the program with the directory of
`stack/api/runsite/sitecustomize.py` first on PYTHONPATH and its settings in
MPSTACK_RUN_CONFIG; Python imports `sitecustomize` at start-up, which calls
`bootstrap()` here before the program's first line. It

1. starts a `stack.Host` on the TUN interfaces (in this process: the stack is
   a library, its event loop a daemon thread) and closes it at exit, after
   the program's own atexit handlers, letting queued data and FINs go out;
2. replaces `socket.socket` so that AF_INET/AF_INET6 SOCK_STREAM sockets are
   the stack's (`stack.socket.Socket`); UDP, AF_UNIX, raw sockets, sockets
   made from an inherited kernel descriptor and name resolution stay on the
   kernel. `socket.create_connection` and `socket.create_server` use it;
   `isinstance(s, socket.socket)` is true for the stack's sockets;
3. makes `selectors.DefaultSelector` (what asyncio's loop uses) map write
   interest in a stack socket to its `writable_fileno()` (its `fileno()` is an
   eventfd, which always polls writable);
4. makes `ssl.SSLContext.wrap_socket` of a stack socket a `stack.api.tls.TlsSocket`
   (TLS records through memory BIOs), so `https` clients and servers work;
5. refuses with one clear line what cannot work: handing a stack socket's
   descriptor to code that expects a kernel socket (`socket.fromfd`,
   `socket.socket(fileno=...)`, `os.sendfile`, `os.dup`, `os.dup2`), and new
   TCP sockets in a child made by `os.fork()` (the stack's thread and device
   stay in the parent). Such a use raises `Unsupported` (an OSError,
   EOPNOTSUPP); uncaught, its one line is all the user sees (no traceback).

Whether a connection is MPTCP is the host's default policy (RFC 6897 §4.5:
an unmodified program gets the host's default; B12: it keeps working).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import selectors
import socket as _socket_module
import sys
import threading
import weakref
from collections.abc import Mapping
from typing import Any

CONFIG_ENV = "MPSTACK_RUN_CONFIG"
PREFIX = "mpstack run"
EXIT_SETUP_FAILED = 125  # as env(1): the runner itself failed

_RealSocket = _socket_module.socket
_real_fromfd = _socket_module.fromfd
_real_sendfile = os.sendfile
_real_dup = os.dup
_real_dup2 = os.dup2
_RealDefaultSelector = selectors.DefaultSelector

_host: Any = None
_owner_pid = 0
_forked = False
_created: weakref.WeakSet[Any] = weakref.WeakSet()  # stack sockets made by the program


class Unsupported(OSError):
    """A use of a stack socket the userspace stack cannot support."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.EOPNOTSUPP, f"{PREFIX}: unsupported: {what}")
        self.what = what

    def __str__(self) -> str:
        return self.args[1]


def _unsupported(what: str) -> Unsupported:
    """The error to raise; if nothing catches it, the excepthooks below print
    its one line (no traceback). A program that catches it (e.g. asyncio's
    sendfile falling back to send) goes on silently."""
    return Unsupported(what)


# ----------------------------------------------------------- which fds are ours
def _stack_socket_for_fd(fd: int) -> Any:
    """The stack socket whose readiness eventfd is `fd`, or None.

    Only eventfds are looked up (one readlink), then the host's sockets are
    searched. (The facade has no public fd -> socket map yet; see
    /work/helper/notes-to-facade.md.)"""
    if _host is None or not isinstance(fd, int) or fd < 0:
        return None
    try:
        if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventfd]":
            return None
    except OSError:
        return None
    with _host.lock:
        socks = (list(_created) + list(_host._owners.values())
                 + list(_host._bound.values()))
    for sock in socks:
        for ready in (getattr(sock, "_read_ready", None), getattr(sock, "_write_ready", None)):
            if ready is not None and ready.fd == fd:
                return sock
    return None


def _is_stack_socket(obj: Any) -> bool:
    from stack.api.socket import Socket

    return isinstance(obj, Socket)


def _fd_of(obj: Any) -> int | None:
    if isinstance(obj, int):
        return obj
    fileno = getattr(obj, "fileno", None)
    if fileno is None:
        return None
    try:
        return int(fileno())
    except (OSError, ValueError, TypeError):
        return None


# ------------------------------------------------------------ socket.socket
class _SocketMeta(type):
    """`isinstance(stack_socket, socket.socket)` holds, as for a kernel socket."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return type.__instancecheck__(cls, obj) or (cls is StackAwareSocket
                                                    and _is_stack_socket(obj))


class StackAwareSocket(_RealSocket, metaclass=_SocketMeta):
    """Stands in for `socket.socket`: TCP over IPv4/IPv6 goes to the stack."""

    __slots__ = ()

    def __new__(cls, family: int = -1, type: int = -1, proto: int = -1,
                fileno: int | None = None) -> Any:
        if fileno is not None:
            if _stack_socket_for_fd(fileno) is not None:
                raise _unsupported("a kernel socket object made from a stack socket's "
                                   "descriptor (socket.socket(fileno=...), socket.fromfd): "
                                   "it is a readiness eventfd, not a kernel socket")
            return _RealSocket.__new__(cls)
        fam = _socket_module.AF_INET if family == -1 else family
        kind = _socket_module.SOCK_STREAM if type == -1 else type
        base = kind & ~(getattr(_socket_module, "SOCK_NONBLOCK", 0)
                        | getattr(_socket_module, "SOCK_CLOEXEC", 0))
        if (fam in (_socket_module.AF_INET, _socket_module.AF_INET6)
                and base == _socket_module.SOCK_STREAM
                and proto in (-1, 0, _socket_module.IPPROTO_TCP)):
            if cls is not StackAwareSocket:
                raise _unsupported(f"a TCP socket of a socket.socket subclass "
                                   f"({cls.__qualname__}): its methods need a kernel socket")
            if _forked:
                raise _unsupported("a TCP socket in a child made by os.fork(): the "
                                   "userspace stack runs in the parent process only")
            with _host.lock:
                sock = _host.socket(fam, kind, 0 if proto == -1 else proto)
                _created.add(sock)
            return sock
        return _RealSocket.__new__(cls)


def _fromfd(fd: int, family: int, type: int, proto: int = 0) -> Any:
    if _stack_socket_for_fd(fd) is not None:
        raise _unsupported("socket.fromfd() on a stack socket's descriptor (it is a "
                           "readiness eventfd, not a kernel socket)")
    return _real_fromfd(fd, family, type, proto)


def _sendfile(out_fd: int, in_fd: int, *args: Any, **kw: Any) -> int:
    if _stack_socket_for_fd(out_fd) is not None or _stack_socket_for_fd(in_fd) is not None:
        raise _unsupported("os.sendfile() on a stack socket's descriptor (use "
                           "socket.sendfile() or send())")
    return _real_sendfile(out_fd, in_fd, *args, **kw)


def _dup(fd: int) -> int:
    if _stack_socket_for_fd(fd) is not None:
        raise _unsupported("os.dup() of a stack socket's descriptor (it is a readiness "
                           "eventfd, not a kernel socket)")
    return _real_dup(fd)


def _dup2(fd: int, fd2: int, inheritable: bool = True) -> int:
    if _stack_socket_for_fd(fd) is not None:
        raise _unsupported("os.dup2() of a stack socket's descriptor (e.g. a CGI child's "
                           "stdin: it would be a readiness eventfd, not the connection)")
    return _real_dup2(fd, fd2, inheritable)


def _patch_ssl() -> None:
    """`SSLContext.wrap_socket` of a stack socket gives a `stack.api.tls.TlsSocket`
    (OpenSSL over memory BIOs: `ssl.SSLSocket` needs a kernel socket under its fd)."""
    try:
        import ssl
    except ImportError:
        return
    from stack.api.tls import TlsSocket
    from stack.api.tls import wrap_socket as tls_wrap

    real_wrap = ssl.SSLContext.wrap_socket

    def wrap_socket(self: Any, sock: Any, *args: Any, **kw: Any) -> Any:
        if _is_stack_socket(sock):
            return tls_wrap(self, sock, *args, **kw)
        if isinstance(sock, TlsSocket):
            raise _unsupported("TLS inside TLS on a stack socket")
        return real_wrap(self, sock, *args, **kw)

    ssl.SSLContext.wrap_socket = wrap_socket  # type: ignore[method-assign]


# --------------------------------------------------------------- selectors
class StackSelector(selectors.BaseSelector):
    """The platform's default selector, except that EVENT_WRITE on a stack
    socket waits for its `writable_fileno()` to become readable."""

    def __init__(self) -> None:
        self._inner = _RealDefaultSelector()
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._wfd: dict[int, int] = {}  # stack socket fd -> its writable eventfd
        self._socks: dict[int, Any] = {}  # fd -> the stack socket (None: not ours)

    def _inner_set(self, fd: int, events: int, stack_sock: Any) -> None:
        """Register what the inner selector must watch for our key on fd."""
        read_fd_events = events & selectors.EVENT_READ if stack_sock is not None else events
        self._unset(fd)
        if read_fd_events:
            self._inner.register(fd, read_fd_events, fd)
        if stack_sock is not None and events & selectors.EVENT_WRITE:
            wfd = stack_sock.writable_fileno()
            self._inner.register(wfd, selectors.EVENT_READ, ("w", fd))
            self._wfd[fd] = wfd

    def _unset(self, fd: int) -> None:
        for inner_fd in (fd, self._wfd.pop(fd, None)):
            if inner_fd is None:
                continue
            try:
                self._inner.unregister(inner_fd)
            except (KeyError, ValueError, OSError):
                pass

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = selectors._fileobj_to_fd(fileobj)  # type: ignore[attr-defined]
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        sock = fileobj if _is_stack_socket(fileobj) else _stack_socket_for_fd(fd)
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._inner_set(fd, events, sock)
        self._keys[fd] = key
        self._socks[fd] = sock
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = self._fd(fileobj)
        key = self._keys.pop(fd)
        self._socks.pop(fd, None)
        self._unset(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = self._fd(fileobj)
        old = self._keys[fd]
        if events != old.events:
            self._inner_set(fd, events, self._socks.get(fd))
        key = old._replace(events=events, data=data)
        self._keys[fd] = key
        return key

    def _fd(self, fileobj: Any) -> int:
        try:
            return selectors._fileobj_to_fd(fileobj)  # type: ignore[attr-defined]
        except ValueError:
            for fd, key in self._keys.items():  # a closed file object
                if key.fileobj is fileobj:
                    return fd
            raise

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: dict[int, int] = {}
        for inner_key, mask in self._inner.select(timeout):
            tag = inner_key.data
            if isinstance(tag, tuple):
                ready[tag[1]] = ready.get(tag[1], 0) | selectors.EVENT_WRITE
            else:
                ready[tag] = ready.get(tag, 0) | mask
        out = []
        for fd, mask in ready.items():
            key = self._keys.get(fd)
            if key is not None and mask & key.events:
                out.append((key, mask & key.events))
        return out

    def close(self) -> None:
        self._inner.close()
        self._keys.clear()
        self._wfd.clear()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return _KeyMap(self)


class _KeyMap(Mapping[Any, selectors.SelectorKey]):
    def __init__(self, selector: StackSelector) -> None:
        self._selector = selector

    def __len__(self) -> int:
        return len(self._selector._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            fd = self._selector._fd(fileobj)
        except ValueError:
            raise KeyError(fileobj) from None
        return self._selector._keys[fd]

    def __iter__(self) -> Any:
        return iter(self._selector._keys)


# ------------------------------------------------------------ process life
def _after_fork_in_child() -> None:
    global _forked
    _forked = True


def _close_host() -> None:
    if _host is None or os.getpid() != _owner_pid:
        return  # a forked child must not touch the parent's stack
    try:
        _host.close(timeout=float(_config.get("linger", 10.0)))
    except Exception as exc:  # noqa: BLE001 - at exit: report, never hang
        print(f"{PREFIX}: closing the stack: {exc}", file=sys.stderr)
    for close in _closers:
        close()


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    if isinstance(exc, Unsupported):
        print(str(exc), file=sys.stderr, flush=True)  # one line, no traceback
        return
    _real_excepthook(exc_type, exc, tb)


def _thread_excepthook(args: Any) -> None:
    if isinstance(args.exc_value, Unsupported):
        print(str(args.exc_value), file=sys.stderr, flush=True)
        return
    _real_thread_excepthook(args)


_real_excepthook = sys.excepthook
_real_thread_excepthook = threading.excepthook
_config: dict[str, Any] = {}
_closers: list[Any] = []  # run after the host is closed (the pcap writer)


def _fail(message: str) -> None:
    print(f"{PREFIX}: {message}", file=sys.stderr, flush=True)
    os._exit(EXIT_SETUP_FAILED)


def _pcap_tap(path: str) -> Any:
    import time

    from stack.trace.pcap import PcapWriter

    try:
        writer = PcapWriter(path)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror or exc}")
    _closers.append(writer.close)

    def tap(_direction: str, _iface: str, packet: bytes, _gso: int) -> None:
        writer.write(bytes(packet), time.time())

    return tap


def start_host(config: Mapping[str, Any]) -> Any:
    from stack.api.host import Host

    tap = _pcap_tap(config["pcap"]) if config.get("pcap") else None
    try:
        return Host.tun(*config["ifaces"], netns=config.get("netns"),
                        offload=bool(config.get("offload", True)), tap=tap)
    except ValueError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot open the TUN devices: {exc.strerror or exc}")
    return None


def install(host: Any) -> None:
    """Route this interpreter's TCP sockets to `host` (see the module docstring)."""
    global _host, _owner_pid
    _host = host
    _owner_pid = os.getpid()
    _patch_ssl()  # imports ssl before socket.socket changes: SSLSocket stays a kernel class
    _socket_module.socket = StackAwareSocket  # type: ignore[misc]
    _socket_module.fromfd = _fromfd
    os.sendfile = _sendfile
    os.dup = _dup
    os.dup2 = _dup2
    selectors.DefaultSelector = StackSelector  # type: ignore[misc]
    os.register_at_fork(after_in_child=_after_fork_in_child)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    atexit.register(_close_host)


def bootstrap() -> None:
    """Called by runsite/sitecustomize.py at interpreter start-up."""
    raw = os.environ.pop(CONFIG_ENV, None)
    if raw is None:
        return
    try:
        config = json.loads(raw)
        # Programs this one starts run on the kernel (one stack per TUN).
        if config.get("pythonpath") is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = config["pythonpath"]
        _config.update(config)
        install(start_host(config))
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - never run the program on the kernel
        _fail(f"cannot start the userspace stack: {type(exc).__name__}: {exc}")


__all__ = ["StackAwareSocket", "StackSelector", "Unsupported", "bootstrap", "install"]
