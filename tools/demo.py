"""The README demo: the userspace stack as an MPTCP client over two TUN paths.

    sudo python3 tools/demo.py [--bytes 50M] [--direction up|down|both] [--no-mptcp]

One command: it builds a network namespace with two TUN devices (the kernel's
side has 10.1.0.1/24 and 10.2.0.1/24; the stack owns 10.1.0.2 and 10.2.0.2 on
the far side), starts a kernel server there on a `socket.IPPROTO_MPTCP`
socket (in-kernel path manager: `ip mptcp limits set subflows 2
add_addr_accepted 2` and a `signal` endpoint for 10.2.0.1, so it announces
its second address; `net.mptcp.blackhole_timeout=0` and
`net.mptcp.syn_retrans_before_tcp_fallback=100` so that it never gives up on
MPTCP because the stack was slow to answer), runs the stack as the client on
both TUNs (`stack.Host.tun(...)`), moves `--bytes` (default 50 MB), checks
SHA-256 on both ends, prints the connection's and each subflow's bytes and
goodput, and removes everything it made - also after Ctrl-C, SIGTERM or a
failure.

When the stack cannot make MPTCP sockets (or with `--no-mptcp`), or the
connection falls back to TCP, the transfer runs as plain TCP over one path
and the summary says so. Exit status: 0 when the data arrived intact, 1 on
a failure (one line on stderr), 2 when it cannot run here (not root, no
TUN), 130 after an interrupt.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stack  # noqa: E402
import stack.socket as stack_socket  # noqa: E402
from tools.topology import Topology, can_run  # noqa: E402

IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)
CHUNK = 1 << 20


class Interrupted(Exception):
    """A signal asked us to stop (SIGINT, SIGTERM, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def parse_size(text: str) -> int:
    """`50M`, `2.5G`, `100k` or a plain number of bytes (decimal units)."""
    units = {"k": 10**3, "m": 10**6, "g": 10**9}
    t = text.strip().lower().rstrip("b")
    mult = units.get(t[-1:], 1)
    if mult != 1:
        t = t[:-1]
    try:
        value = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("size must be >= 0")
    return value


def payload(size: int) -> bytes:
    """Incompressible test data (both ends live in this process)."""
    return os.urandom(size)


def exchange(sock: Any, data: bytes, deadline: float) -> tuple[int, str, float]:
    """Send `data` then half-close, while reading to EOF; (received, sha256, end)."""
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            view = memoryview(data)
            for off in range(0, len(view), CHUNK):
                sock.sendall(view[off:off + CHUNK])
            sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    h, n = hashlib.sha256(), 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while k := sock.recv_into(buf):
        h.update(view[:k])
        n += k
    t.join(max(0.0, deadline - time.monotonic()))
    if t.is_alive():
        raise TimeoutError("sending did not finish")
    if errors:
        raise errors[0]
    return n, h.hexdigest(), time.monotonic()


class KernelServer:
    """A kernel MPTCP (or TCP) server in the namespace, one connection."""

    def __init__(self, topo: Topology, port: int, *, mptcp: bool, to_stack: bytes,
                 timeout: float) -> None:
        proto = IPPROTO_MPTCP if mptcp else 0
        with topo.enter():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(1)
        self.sock.settimeout(timeout)
        self.to_stack = to_stack
        self.timeout = timeout
        self.result: tuple[int, str] | None = None
        self.error: BaseException | None = None
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="kernel-server")
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.sock.accept()
            self.conn = conn
            conn.settimeout(self.timeout)
            n, digest, _ = exchange(conn, self.to_stack, time.monotonic() + self.timeout)
            self.result = (n, digest)
        except BaseException as exc:  # noqa: BLE001 - reported by main()
            self.error = exc

    def close(self) -> None:
        for s in (self.conn, self.sock):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


def kernel_mptcp_setup(topo: Topology) -> list[str]:
    """The kernel side's MPTCP settings; returns what was done (for the log)."""
    done = []
    topo.sysctl("net.mptcp.enabled", "1")
    for key, value in (("net.mptcp.blackhole_timeout", "0"),
                       ("net.mptcp.syn_retrans_before_tcp_fallback", "100")):
        topo.sysctl(key, value, check=False)
        done.append(f"{key}={value}")
    topo.exec("ip", "mptcp", "endpoint", "flush")
    topo.exec("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2")
    done.append("limits subflows 2 add_addr_accepted 2")
    for p in topo.paths[1:]:
        topo.exec("ip", "mptcp", "endpoint", "add", str(p.kernel_v4.ip), "dev", p.tun,
                  "signal")
        done.append(f"endpoint {p.kernel_v4.ip} dev {p.tun} signal")
    return done


def mbit(nbytes: int, seconds: float) -> float:
    return nbytes * 8 / seconds / 1e6 if seconds > 0 else 0.0


def connection_summary(sock: Any, host: Any) -> dict[str, Any]:
    """What the stack's connection says about itself (MPTCP or TCP)."""
    conn = sock.connection
    out: dict[str, Any] = {"kind": type(conn).__name__}
    with host.lock:
        if hasattr(conn, "mptcp_info"):
            info = conn.mptcp_info()
            out.update(mptcp=bool(info.get("mptcp")), fallback_reason=info.get("fallback_reason"),
                       token=info.get("token"), subflows=[
                           {k: sf.get(k) for k in ("id", "local", "remote", "join", "backup",
                                                   "established", "bytes_sent",
                                                   "bytes_received", "close_reason")}
                           for sf in info.get("subflows", ())])
        else:
            out.update(mptcp=False, fallback_reason="stack socket is plain TCP", subflows=[])
    return out


def report(args: argparse.Namespace, summary: dict[str, Any],
           paths: dict[str, str] | None = None) -> None:
    """Print the summary; `paths` maps the stack's addresses to their TUN."""
    paths = paths or {}
    conn = summary["connection"]
    dur = summary["duration"]
    print(f"demo: connection {summary['local']} -> {summary['remote']}: "
          + ("MPTCP" if conn["mptcp"] else f"TCP (MPTCP fallback: {conn['fallback_reason']})"))
    print(f"demo:   sent {summary['sent']} B, received {summary['received']} B in {dur:.3f} s: "
          f"goodput {mbit(summary['sent'] + summary['received'], dur):.1f} Mbit/s "
          f"(up {mbit(summary['sent'], dur):.1f}, down {mbit(summary['received'], dur):.1f})")
    subs = conn["subflows"]
    tot_tx = sum(s["bytes_sent"] or 0 for s in subs) or 1
    tot_rx = sum(s["bytes_received"] or 0 for s in subs) or 1
    for s in subs:
        tx, rx = s["bytes_sent"] or 0, s["bytes_received"] or 0
        tun = paths.get(str(s["local"]).rpartition(":")[0].strip("[]"))
        print(f"demo:   subflow {s['id']} {s['local']} -> {s['remote']}"
              f"{' (join)' if s['join'] else ''}{f' via {tun}' if tun else ''}: "
              f"sent {tx} B ({100 * tx / tot_tx:.0f} %), "
              f"received {rx} B ({100 * rx / tot_rx:.0f} %), "
              f"{mbit(tx + rx, dur):.1f} Mbit/s"
              + ("" if s["established"] else ", never established"))
    busy = [s for s in subs if (s["bytes_sent"] or 0) + (s["bytes_received"] or 0) > 0]
    if conn["mptcp"]:
        tuns = {paths.get(str(s["local"]).rpartition(":")[0].strip("[]")) for s in busy}
        print(f"demo:   {len(busy)} of {len(subs)} subflows carried data, over "
              f"{len(tuns - {None})} TUN path(s)")
    k = summary.get("kernel_counters", {})
    if k:
        print("demo:   kernel: " + ", ".join(f"{n} {v}" for n, v in sorted(k.items())))


def run_demo(args: argparse.Namespace) -> int:
    to_kernel = payload(args.bytes if args.direction in ("up", "both") else 0)
    to_stack = payload(args.bytes if args.direction in ("down", "both") else 0)
    topo = host = server = sock = None
    try:
        topo = Topology(2, mtu=args.mtu)
        print(f"demo: namespace {topo.ns}, TUN paths "
              + ", ".join(f"{p.tun} ({p.kernel_v4.ip} <-> {p.stack_v4.ip})" for p in topo.paths),
              flush=True)
        if args.rate:
            for p in topo.paths:
                topo.rate_limit(p.tun, rate=args.rate)
        kernel_mptcp = not args.no_mptcp
        if kernel_mptcp:
            print("demo: kernel MPTCP: " + "; ".join(kernel_mptcp_setup(topo)), flush=True)
        server = KernelServer(topo, args.port, mptcp=kernel_mptcp, to_stack=to_stack,
                              timeout=args.timeout)
        print(f"demo: kernel {'MPTCP' if kernel_mptcp else 'TCP'} server on "
              f"{topo.path.kernel_v4.ip}:{args.port}", flush=True)
        before = topo.nstat()
        host = stack.Host.tun(*topo.stack_specs(), netns=topo.ns, offload=not args.no_offload)
        proto = 0
        if not args.no_mptcp:
            proto = IPPROTO_MPTCP
        try:
            sock = host.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
        except OSError as exc:
            if exc.errno != errno.EPROTONOSUPPORT:
                raise
            print(f"demo: the stack has no MPTCP sockets yet ({exc.strerror}): "
                  "MPTCP fallback to TCP", flush=True)
            sock = host.socket(socket.AF_INET, socket.SOCK_STREAM)
        if args.no_mptcp:
            # RFC 6897 §5.3.1: the stack's local policy uses MPTCP for unbound
            # sockets; an application turns it off before connect().
            sock.setsockopt(socket.IPPROTO_TCP, stack_socket.TCP_MULTIPATH_ENABLE, 0)
        sock.settimeout(args.timeout)
        t0 = time.monotonic()
        deadline = t0 + args.timeout
        sock.connect((str(topo.path.kernel_v4.ip), args.port))
        local, remote = sock.getsockname(), sock.getpeername()
        print(f"demo: stack client {local[0]}:{local[1]} connected "
              f"({'IPPROTO_MPTCP' if proto else 'TCP'} socket, offload "
              f"{'on' if host.offload else 'off'}); transferring {args.bytes} B "
              f"{args.direction}", flush=True)
        received, digest, t_end = exchange(sock, to_kernel, deadline)
        server.thread.join(max(0.0, deadline - time.monotonic()))
        if server.thread.is_alive():
            raise TimeoutError("the kernel server did not finish")
        if server.error is not None:
            raise RuntimeError(f"kernel server: {server.error!r}")
        assert server.result is not None
        sock.wait_closed(max(0.0, deadline - time.monotonic()))
        bad = []
        if (received, digest) != (len(to_stack), hashlib.sha256(to_stack).hexdigest()):
            bad.append(f"stack received {received} B, sha256 {digest[:16]}")
        if server.result != (len(to_kernel), hashlib.sha256(to_kernel).hexdigest()):
            bad.append(f"kernel received {server.result[0]} B, sha256 {server.result[1][:16]}")
        after = topo.nstat()
        counters = {k: after.get(k, 0) - before.get(k, 0) for k in
                    ("MPTcpExtMPCapableSYNRX", "MPTcpExtMPJoinSynAckRx", "MPTcpExtMPJoinAckRx",
                     "MPTcpExtMPJoinSynRx", "MPTcpExtAddAddrTx", "TcpRetransSegs")}
        summary = {
            "ok": not bad, "bytes": args.bytes, "direction": args.direction,
            "sent": len(to_kernel), "received": received, "duration": t_end - t0,
            "local": f"{local[0]}:{local[1]}", "remote": f"{remote[0]}:{remote[1]}",
            "offload": host.offload, "connection": connection_summary(sock, host),
            "kernel_counters": {k: v for k, v in counters.items() if v},
        }
        report(args, summary, {str(p.stack_v4.ip): p.tun for p in topo.paths})
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        if bad:
            print("demo: FAILED: " + "; ".join(bad), file=sys.stderr)
            return 1
        print(f"demo: verified: SHA-256 matches on both ends ({len(to_kernel)} B up, "
              f"{received} B down)", flush=True)
        return 0
    finally:
        # Undo in reverse order, whatever happened (signals are held off so that
        # a second Ctrl-C cannot cut the clean-up short). After a failure or an
        # interrupt the stack's connections are reset rather than drained.
        failing = sys.exc_info()[0] is not None
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM,
                                                              signal.SIGHUP)}
        try:
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
            if host is not None:
                host.close(timeout=0.2 if failing else 2.0)
            if server is not None:
                server.close()
            if topo is not None:
                topo.close()
                print(f"demo: removed namespace {topo.ns} and its TUN devices", flush=True)
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", type=parse_size, default=50_000_000,
                    help="bytes to move in each chosen direction (e.g. 50M; default 50M)")
    ap.add_argument("--direction", choices=("up", "down", "both"), default="both",
                    help="up: stack -> kernel, down: kernel -> stack, both: at once (default)")
    ap.add_argument("--no-mptcp", action="store_true",
                    help="plain TCP on both ends (kernel server and stack socket)")
    ap.add_argument("--no-offload", action="store_true", help="TUN without offloads")
    ap.add_argument("--rate", help="tbf rate on each path, kernel -> stack (e.g. 100mbit)")
    ap.add_argument("--mtu", type=int, default=1500)
    ap.add_argument("--port", type=int, default=5555)
    ap.add_argument("--timeout", type=float, default=120.0, help="give up after this long")
    ap.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    args = ap.parse_args(argv)
    why = can_run()
    if why:
        print(f"demo: cannot run here: {why} (run as root: sudo python3 tools/demo.py)",
              file=sys.stderr)
        return 2
    # Signals become an exception in the main thread, so that the finally
    # clause of run_demo removes the namespace and TUN devices.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    try:
        return run_demo(args)
    except (Interrupted, KeyboardInterrupt) as exc:
        print(f"demo: interrupted ({exc}), cleaned up", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, as a command-line tool
        print(f"demo: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
