"""`mpstack nc`: netcat over the userspace stack.

    mpstack nc [--iface NAME,ADDR/PLEN[,gw=GW]]... [--no-mptcp] [--stats FILE]
               [--pcap FILE] HOST PORT
    mpstack nc -l [--keep] [--iface ...] PORT

Connects (or accepts one connection; `--keep` for several in turn), copies
standard input to the connection and half-closes it at EOF, and copies what
arrives to standard output. The two directions are independent: receiving
goes on after our half-close and sending after the peer's. The exit status is
0 only once everything we sent is acknowledged and the peer's FIN has
arrived; otherwise a one-line error goes to standard error and the status is
1 (2 for bad arguments).

MPTCP (RFC 8684) is the default: the socket is an `IPPROTO_MPTCP` one, so
the connection falls back to plain TCP when the peer does not do MPTCP, and
several `--iface` give the connection several paths (the client opens a
subflow from each other local address and to each address the peer
announces; the listener announces its other addresses). `--no-mptcp` makes
plain TCP sockets.

`--stats FILE` writes a JSON summary at exit (with MPTCP: `mptcp`,
`fallback_reason`, `token` and every subflow ever established, with its
bytes and when and why it closed); `--pcap FILE` records every
packet the stack sends or receives (raw IP link type; TCP super-segments are
recorded whole, as the stack emits them or the kernel hands them over with
offloads, and their TCP checksum field then holds only the pseudo-header sum).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
import threading
import time
from typing import Any

SHUT_WR = 1  # socket.SHUT_WR
_SOCK_STREAM = 1  # socket.SOCK_STREAM
CHUNK = 256 * 1024
DEFAULT_IFACE_HINT = "NAME,ADDR/PLEN[,ADDR/PLEN][,gw=GW]"


class NcError(Exception):
    """A failure reported as one line on standard error."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = ("%(prog)s [--iface NAME,ADDR/PLEN[,gw=GW]]... [--no-mptcp] [--stats FILE] "
                    "[--pcap FILE] [options] HOST PORT\n"
                    "       %(prog)s -l [--keep] [--iface ...] [options] [ADDR] PORT")
    parser.add_argument("--iface", action="append", default=[], metavar=DEFAULT_IFACE_HINT,
                        help="a TUN interface and the stack's own address(es) on it "
                             "(repeatable; the device is created if it does not exist)")
    parser.add_argument("--no-mptcp", action="store_true",
                        help="plain TCP sockets (default: MPTCP, falling back to TCP "
                             "when the peer does not do MPTCP)")
    parser.add_argument("--stats", metavar="FILE", help="write a JSON summary at exit")
    parser.add_argument("--pcap", metavar="FILE",
                        help="record every packet sent or received (pcap, raw IP)")
    parser.add_argument("-l", "--listen", action="store_true",
                        help="accept a connection on PORT instead of connecting")
    parser.add_argument("--keep", action="store_true",
                        help="with -l: accept further connections, one at a time")
    off = parser.add_mutually_exclusive_group()
    off.add_argument("--offload", dest="offload", action="store_true", default=True,
                     help="use TUN offloads (vnet header, TSO, checksum; default)")
    off.add_argument("--no-offload", dest="offload", action="store_false",
                     help="plain TUN packets, no offloads")
    parser.add_argument("--netns", metavar="NAME",
                        help="open the TUN devices inside this network namespace")
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="give up connecting after this long (default 10)")
    parser.add_argument("--linger", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait at the end for our data to be "
                             "acknowledged and the peer's FIN (default 30)")
    parser.add_argument("args", nargs="+", metavar="ARG",
                        help="HOST PORT to connect to, or [ADDR] PORT to listen on with -l")


def _parse_target(args: argparse.Namespace) -> tuple[str | None, int]:
    rest = args.args
    if args.listen:
        if len(rest) == 1:
            host, port = None, rest[0]
        elif len(rest) == 2:
            host, port = rest
        else:
            raise NcError("-l takes [ADDR] PORT")
    else:
        if len(rest) != 2:
            raise NcError("expected HOST PORT")
        host, port = rest
        if args.keep:
            raise NcError("--keep needs -l")
    try:
        p = int(port)
    except ValueError:
        raise NcError(f"bad port {port!r}") from None
    if not 0 < p < 65536:
        raise NcError(f"bad port {port!r}")
    return host, p


def _family_of(host_addr: str) -> int:
    import socket as std

    try:
        ip = ipaddress.ip_address(host_addr)
    except ValueError:
        infos = std.getaddrinfo(host_addr, None, 0, std.SOCK_STREAM)
        if not infos:
            raise NcError(f"cannot resolve {host_addr}") from None
        return infos[0][0]
    return std.AF_INET if ip.version == 4 else std.AF_INET6


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _endpoint(addr: tuple[Any, ...]) -> str:
    ip = _ip(addr[0])
    return f"[{ip}]:{addr[1]}" if ip.version == 6 else f"{ip}:{addr[1]}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


class Session:
    """One connection: two copying threads and the final accounting."""

    def __init__(self, sock: Any, stdin_fd: int | None, stdout_fd: int,
                 mptcp_wanted: bool = False, host: Any = None) -> None:
        self.sock = sock
        self.host = host
        self.mptcp_wanted = mptcp_wanted
        self.mptcp: dict[str, Any] = {}
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.bytes_sent = 0
        self.bytes_received = 0
        self.errors: list[str] = []
        self.finished = False
        self.started = time.monotonic()
        self.ended = self.started
        self.local = sock.getsockname()
        self.remote = sock.getpeername()

    def _send_loop(self) -> None:
        sock = self.sock
        try:
            if self.stdin_fd is not None:
                while True:
                    try:
                        data = os.read(self.stdin_fd, CHUNK)
                    except InterruptedError:
                        continue
                    if not data:
                        break
                    sock.sendall(data)
                    self.bytes_sent += len(data)
            sock.shutdown(SHUT_WR)  # half-close at EOF
        except OSError as exc:
            self.errors.append(f"send: {_describe(exc)}")

    def _recv_loop(self) -> None:
        sock, out = self.sock, self.stdout_fd
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while True:
                n = sock.recv_into(buf)
                if not n:
                    break
                self.bytes_received += n
                done = 0
                while done < n:
                    done += os.write(out, view[done:n])
        except OSError as exc:
            self.errors.append(f"receive: {_describe(exc)}")

    def run(self, linger: float) -> bool:
        sock = self.sock
        sock.settimeout(None)
        threads = [threading.Thread(target=self._send_loop, name="nc-send", daemon=True),
                   threading.Thread(target=self._recv_loop, name="nc-recv", daemon=True)]
        for t in threads:
            t.start()
        # The receiver ends at the peer's FIN (or an error); the sender at stdin EOF.
        threads[1].join()
        if self.errors:
            # The connection failed: stop sending; a sender blocked reading
            # stdin (a terminal, an idle pipe) is left behind (daemon thread).
            sock.close()
            threads[0].join(0.5)
        else:
            threads[0].join()  # keep sending after the peer's FIN
        ok = not self.errors and sock.wait_closed(linger)
        if not self.errors and not ok:
            conn = sock.connection
            if conn is not None and conn.error:
                self.errors.append(_describe(OSError(conn.error, "")))
            elif conn is not None and not conn.all_acked:
                self.errors.append("data not acknowledged by the peer")
            else:
                self.errors.append("no FIN from the peer")
        self.ended = time.monotonic()
        self.info = sock.tcp_info()
        self.mptcp = mptcp_summary(sock, self.mptcp_wanted, self.host)
        sock.close()
        self.finished = True
        return not self.errors

    def summary(self) -> dict[str, Any]:
        info = getattr(self, "info", {})
        return {
            "local": _endpoint(self.local),
            "remote": _endpoint(self.remote),
            "local_address": str(_ip(self.local[0])),
            "local_port": self.local[1],
            "remote_address": str(_ip(self.remote[0])),
            "remote_port": self.remote[1],
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "duration": round((self.ended if self.finished else time.monotonic())
                              - self.started, 6),
            "ok": not self.errors,
            "error": self.errors[0] if self.errors else None,
            "errors": list(self.errors),
            "tcp": {k: v for k, v in info.items()
                    if isinstance(v, int | float | str | bool) or v is None},
            **(self.mptcp or mptcp_summary(self.sock, self.mptcp_wanted, self.host)),
        }


_SUBFLOW_KEYS = ("id", "local", "remote", "join", "local_id", "remote_id", "backup",
                 "bytes_sent", "bytes_received", "stale", "close_reason", "peer_reset_reason")


def mptcp_summary(sock: Any, wanted: bool, host: Any) -> dict[str, Any]:
    """The `--stats` MPTCP fields of one connection (issue 4): `mptcp` (in use
    after set-up), `fallback_reason`, `token`, `subflows` (every subflow ever
    established: endpoints, backup, bytes, and when (Unix time) and why it
    closed), from the connection's `mptcp_info()`."""
    conn = sock.connection
    info_of = getattr(conn, "mptcp_info", None)
    if not wanted and info_of is None:
        return {"mptcp": False, "fallback_reason": "disabled", "token": None, "subflows": []}
    if conn is None or info_of is None or host is None:
        # An MPTCP listener hands over a plain SYN (no MP_CAPABLE) as a plain
        # TCP connection (RFC 8684 §3.1: the peer does not do MPTCP).
        reason = "syn_without_mpc" if conn is not None else "no_connection"
        return {"mptcp": False, "fallback_reason": reason, "token": None, "subflows": []}
    with host.lock:
        info = info_of()
        # host clock (monotonic) -> Unix time for the subflow records
        offset = time.time() - host.clock()
    subflows = []
    for rec in info.get("subflows", ()):
        if not rec.get("established"):
            continue  # never established (a refused join): not a subflow
        sf = {k: rec.get(k) for k in _SUBFLOW_KEYS}
        sf["backup"] = bool(sf["backup"])
        for key in ("opened_at", "closed_at"):
            t = rec.get(key)
            sf[key] = None if t is None else round(t + offset, 6)
        subflows.append(sf)
    return {
        "mptcp": bool(info.get("mptcp")),
        "fallback_reason": info.get("fallback_reason"),
        "token": info.get("token"),
        "checksum": info.get("checksum"),
        "reinjected": info.get("reinjected", 0),
        "subflows": subflows,
    }


def _open_pcap(path: str) -> tuple[Any, Any]:
    from stack.trace.pcap import PcapWriter

    writer = PcapWriter(path)

    def tap(_direction: str, _iface: str, packet: bytes, _gso: int) -> None:
        writer.write(bytes(packet), time.time())

    return writer, tap


def run(args: argparse.Namespace) -> int:
    started = time.time()
    stats: dict[str, Any] = {"mode": "listen" if args.listen else "connect",
                             "mptcp": False, "mptcp_requested": not args.no_mptcp,
                             "started": started}
    sessions: list[Session] = []
    status = 1
    host = writer = None
    try:
        target, port = _parse_target(args)
        if not args.iface:
            raise NcError("at least one --iface NAME,ADDR/PLEN is needed")
        from stack.api.host import Host

        tap = None
        if args.pcap:
            writer, tap = _open_pcap(args.pcap)
        try:
            host = Host.tun(*args.iface, offload=args.offload, netns=args.netns, tap=tap)
        except ValueError as exc:
            raise NcError(str(exc)) from None
        except OSError as exc:
            raise NcError(f"cannot open TUN device: {_describe(exc)}") from None
        stats["offload"] = host.offload
        stdin_fd: int | None = sys.stdin.fileno() if sys.stdin is not None else None
        stdout_fd = sys.stdout.fileno()
        if args.listen:
            status = _serve(host, target, port, args, stdin_fd, stdout_fd, sessions)
        else:
            status = _connect(host, target or "", port, args, stdin_fd, stdout_fd, sessions)
    except NcError as exc:
        print(f"mpstack nc: {exc}", file=sys.stderr)
        stats["error"] = str(exc)
        status = 2 if "expected" in str(exc) or "bad port" in str(exc) else 1
    except KeyboardInterrupt:
        # With --keep, SIGTERM/SIGINT between connections is the normal end;
        # a connection cut short by it counts as failed.
        for session in sessions:
            if not session.finished:
                session.errors.append("interrupted")
        if not (args.keep and sessions):
            stats["error"] = "interrupted"
        status = 1 if not (args.keep and sessions) else _keep_status(sessions)
    finally:
        if host is not None:
            host.close(timeout=2.0)
        if writer is not None:
            writer.close()
        if args.stats:
            _write_stats(args.stats, stats, sessions, status, started)
    return status


def _keep_status(sessions: list[Session]) -> int:
    return 0 if all(not s.errors for s in sessions) else 1


def _proto(host: Any, args: argparse.Namespace) -> int:
    """IPPROTO_MPTCP unless --no-mptcp (or the core cannot do MPTCP)."""
    from stack.api.socket import IPPROTO_MPTCP

    if args.no_mptcp or not host.mptcp_capable:
        return 0
    return IPPROTO_MPTCP


def _socket(host: Any, family: int, proto: int) -> Any:
    """A stream socket; a plain one (proto 0) also gets TCP_MULTIPATH_ENABLE
    0, since the host's RFC 6897 policy may otherwise pick MPTCP for it
    (§5.3.2 B1: 0 means the connection MUST NOT use MPTCP)."""
    sock = host.socket(family, _SOCK_STREAM, proto)
    if proto == 0:
        try:
            from stack.api.multipath import TCP_MULTIPATH_ENABLE
        except ImportError:
            return sock  # no RFC 6897 API: proto 0 is plain TCP
        try:
            sock.setsockopt(6, TCP_MULTIPATH_ENABLE, 0)  # IPPROTO_TCP
        except OSError:
            pass  # this socket has no multipath option: it is plain TCP
    return sock


def _connect(host: Any, target: str, port: int, args: argparse.Namespace,
             stdin_fd: int | None, stdout_fd: int, sessions: list[Session]) -> int:
    family = _family_of(target)
    proto = _proto(host, args)
    sock = _socket(host, family, proto)
    sock.settimeout(args.connect_timeout)
    try:
        sock.connect((target, port))
    except OSError as exc:
        sock.close()
        raise NcError(f"connect to {target} port {port}: {_describe(exc)}") from None
    session = Session(sock, stdin_fd, stdout_fd, mptcp_wanted=proto != 0, host=host)
    sessions.append(session)
    if not session.run(args.linger):
        raise NcError(f"{session.summary()['remote']}: {session.summary()['error']}")
    return 0


def _serve(host: Any, target: str | None, port: int, args: argparse.Namespace,
           stdin_fd: int | None, stdout_fd: int, sessions: list[Session]) -> int:
    import socket as std

    family = _family_of(target) if target else std.AF_INET6
    proto = _proto(host, args)
    lsock = _socket(host, family, proto)
    try:
        lsock.bind((target or "", port))
        lsock.listen(1 if not args.keep else 16)
    except OSError as exc:
        raise NcError(f"listen on port {port}: {_describe(exc)}") from None
    if args.keep and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    while True:
        conn, _peer = lsock.accept()
        session = Session(conn, stdin_fd, stdout_fd, mptcp_wanted=proto != 0, host=host)
        sessions.append(session)
        ok = session.run(args.linger)
        stdin_fd = None  # stdin belongs to the first connection only
        if not args.keep:
            lsock.close()
            if not ok:
                raise NcError(f"{session.summary()['remote']}: {session.summary()['error']}")
            return 0
        if not ok:
            print(f"mpstack nc: {session.summary()['remote']}: {session.summary()['error']}",
                  file=sys.stderr)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _write_stats(path: str, stats: dict[str, Any], sessions: list[Session], status: int,
                 started: float) -> None:
    conns = [s.summary() for s in sessions]
    stats.update({
        "exit_status": status,
        "duration": round(time.time() - started, 6),
        "bytes_sent": sum(c["bytes_sent"] for c in conns),
        "bytes_received": sum(c["bytes_received"] for c in conns),
        "connections": conns,
    })
    if conns:
        first = conns[0]
        for key in ("local", "remote", "local_address", "local_port", "remote_address",
                    "remote_port", "mptcp", "fallback_reason", "token", "subflows"):
            stats[key] = first[key]
        stats["duration"] = round(sum(c["duration"] for c in conns), 6)
        stats.setdefault("error", first["error"])
    stats.setdefault("error", None)
    stats.setdefault("offload", None)
    stats.setdefault("fallback_reason", None)
    stats.setdefault("token", None)
    stats.setdefault("subflows", [])
    try:
        with open(path, "w") as fh:
            json.dump(stats, fh, indent=2)
            fh.write("\n")
    except OSError as exc:
        print(f"mpstack nc: cannot write stats {path}: {_describe(exc)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mpstack nc", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["add_arguments", "run", "main"]
