#!/usr/bin/env python3
"""MPTCP goodput over two paths: the userspace stack against kernel MPTCP
(stack->kernel, kernel->stack) and kernel-to-kernel MPTCP on the same
two-path topology, unshaped and shaped (tbf 50 + 100 Mbit/s).

    sudo python tools/bench_mptcp.py [--size-mb 400] [--shaped-size-mb 60] [--runs 3]
                                     [--stack-cpu 1] [--kernel-cpu 0] [--markdown]

Topology (tools/topology.py): two paths, 10.1.0.0/24 and 10.2.0.0/24.
  stack cases: one namespace with two TUN devices; the kernel has .1 on each,
      the stack (this process) .2. The kernel is the server (IPPROTO_MPTCP,
      `ip mptcp limits set subflows 2`, no endpoints); the stack connects to
      10.1.0.1 over path 1 and opens its second subflow from 10.2.0.2 (its
      default path manager), so each path carries one subflow.
  kernel->kernel: two namespaces joined by two veth pairs with the same
      addresses; the client side (.2) has a `subflow` endpoint for 10.2.0.2,
      so it too opens one subflow per path.
Shaping: tbf (burst 64 kB, latency 30 ms) at the sender's egress, 50 Mbit/s
on path 1 and 100 Mbit/s on path 2. The stack's sends enter the kernel
through the TUN (no egress qdisc there), so stack->kernel is shaped on the
TUN's ingress, redirected to an ifb device carrying the tbf.

The stack runs in this process, pinned to `--stack-cpu`
(`os.sched_setaffinity`; the loop thread inherits it); every kernel peer is
its own process under `taskset -c --kernel-cpu` (the kernel->kernel client
under `taskset -c --stack-cpu`, mirroring the stack). Goodput is measured by
the receiver, from the connection's first byte to EOF; shaped runs skip the
first 5 MB (slow start, the join). `--markdown` prints a section for
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK = 1 << 20
PORT = 5401
IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)
TCP_IS_MPTCP = 43
SOL_MPTCP, MPTCP_INFO = 284, 1
WARM = 5_000_000  # shaped runs: goodput from this many bytes on
RATES = ("50mbit", "100mbit")


# ----------------------------------------------------------------- kernel peer
def peer_main(args: argparse.Namespace) -> int:
    """A kernel MPTCP sink or source (run as a separate, pinned process)."""
    host, _, port = args.addr.rpartition(":")
    if args.listen:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", int(port)))
        srv.listen(4)
        print("ready", flush=True)
        sock, _ = srv.accept()  # the listener stays: MP_JOIN SYNs arrive through it
    else:
        srv = None
        end = time.monotonic() + 10
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
            try:
                sock.connect((host, int(port)))
                break
            except OSError:
                sock.close()
                if time.monotonic() > end:
                    raise
                time.sleep(0.02)
    moved, t0, t_warm, b_warm = _transfer(sock, args.role, args.size, args.warm)
    elapsed = time.perf_counter() - t0
    info = {"bytes": moved, "seconds": elapsed,
            "warm_bytes": moved - b_warm, "warm_seconds": time.perf_counter() - t_warm,
            "mptcp": bool(sock.getsockopt(socket.SOL_TCP, TCP_IS_MPTCP)),
            "extra_subflows": sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)[0]}
    sock.close()
    if srv is not None:
        srv.close()
    print(json.dumps(info), flush=True)
    return 0


def _transfer(sock: Any, role: str, size: int, warm: int) -> tuple[int, float, float, int]:
    """Sink to EOF or send `size` bytes then half-close; returns (bytes,
    start time, time and bytes when `warm` bytes had moved)."""
    moved = 0
    t0 = time.perf_counter()
    t_warm, b_warm = t0, 0
    if role == "sink":
        buf = bytearray(CHUNK)
        while n := sock.recv_into(buf):
            if moved == 0:
                t0 = t_warm = time.perf_counter()
            moved += n
            if b_warm == 0 and moved >= warm:
                t_warm, b_warm = time.perf_counter(), moved
    else:
        block = memoryview(os.urandom(CHUNK))
        while moved < size:
            n = min(CHUNK, size - moved)
            sock.sendall(block[:n])
            moved += n
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
    return moved, t0, t_warm, b_warm


def start_peer(ns: str, cpu: int, role: str, addr: str, size: int, listen: bool,
               warm: int) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", ns, "taskset", "-c", str(cpu), sys.executable,
            str(Path(__file__).resolve()), "--peer", role, "--addr", addr, "--size", str(size),
            "--warm", str(warm)]
    if listen:
        argv.append("--listen")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    if listen:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"kernel peer did not start: {line!r}")
    return proc


def peer_result(proc: subprocess.Popen[str], timeout: float = 600) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"kernel peer failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------- shaping
def shape_egress(ns: str, dev: str, rate: str) -> None:
    _run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
          "burst", "64kb", "latency", "30ms"])


def shape_ingress(ns: str, dev: str, rate: str, ifb: str) -> None:
    """tbf on what enters `dev`: ingress redirected to an ifb device."""
    _run(["ip", "-n", ns, "link", "add", ifb, "type", "ifb"])
    _run(["ip", "-n", ns, "link", "set", ifb, "up"])
    _run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "handle", "ffff:", "ingress"])
    _run(["tc", "-n", ns, "filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all",
          "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb])
    shape_egress(ns, ifb, rate)


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")


# ------------------------------------------------------------------- the cases
def _mptcp_server_pm(ns: Any) -> None:
    ns.exec("ip", "mptcp", "endpoint", "flush")
    ns.exec("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "0")


def stack_case(direction: str, size: int, shaped: bool, kernel_cpu: int) -> dict[str, Any]:
    """One transfer between the stack (this process, client) and a pinned
    kernel MPTCP server over two TUN paths."""
    import stack
    from tools.topology import Topology, unique_name

    warm = WARM if shaped else 0
    with Topology(2) as topo:
        _mptcp_server_pm(topo)
        if shaped:
            for p, rate in zip(topo.paths, RATES, strict=True):
                if direction == "kernel->stack":
                    shape_egress(topo.ns, p.tun, rate)
                else:
                    shape_ingress(topo.ns, p.tun, rate, unique_name("i"))
        role = "source" if direction == "kernel->stack" else "sink"
        peer = start_peer(topo.ns, kernel_cpu, role, f"10.1.0.1:{PORT}", size, True, warm)
        try:
            with stack.Host.tun(*topo.stack_specs(v6=False), netns=topo.ns) as host:
                sock = host.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.settimeout(600)
                sock.connect(("10.1.0.1", PORT))
                cpu0 = _cpu()
                moved, t0, t_warm, b_warm = _transfer(
                    sock, "sink" if direction == "kernel->stack" else "source", size, warm)
                t1 = time.perf_counter()
                cpu = _cpu() - cpu0
                with host.lock:
                    info = sock.connection.mptcp_info()
                sock.close()
            kernel = peer_result(peer)
        finally:
            if peer.poll() is None:
                peer.kill()
    subs = [s for s in info["subflows"] if s["established"]]
    if direction == "kernel->stack":
        result = _goodput(moved, t1 - t0, moved - b_warm, t1 - t_warm, shaped)
        per = [s["bytes_received"] for s in subs]
    else:
        result = _goodput(kernel["bytes"], kernel["seconds"], kernel["warm_bytes"],
                          kernel["warm_seconds"], shaped)
        per = [s["bytes_sent"] for s in subs]
    result.update(mptcp=info["mptcp"] and kernel["mptcp"], subflows=len(subs),
                  per_subflow=per, cpu=cpu / max(t1 - t0, 1e-9))
    return result


def kernel_case(size: int, shaped: bool, kernel_cpu: int, client_cpu: int) -> dict[str, Any]:
    """Kernel MPTCP server (.1 side) -> kernel MPTCP client (.2 side) over two
    veth pairs: the same addresses and direction as kernel->stack."""
    from tools.topology import Netns, unique_name

    warm = WARM if shaped else 0
    with Netns() as srv, Netns() as cli:
        for i in (1, 2):
            a, b = unique_name("k"), unique_name("c")
            _run(["ip", "link", "add", a, "netns", srv.name, "type", "veth", "peer", "name", b,
                  "netns", cli.name])
            srv.ip("addr", "add", f"10.{i}.0.1/24", "dev", a)
            cli.ip("addr", "add", f"10.{i}.0.2/24", "dev", b)
            srv.ip("link", "set", a, "up")
            cli.ip("link", "set", b, "up")
            if shaped:
                shape_egress(srv.name, a, RATES[i - 1])
            if i == 2:
                # as with the stack: 10.2.0.2 -> 10.1.0.1 goes over path 2
                cli.ip("rule", "add", "from", "10.2.0.2", "table", "102")
                cli.ip("route", "add", "10.1.0.0/24", "dev", b, "table", "102")
                cli.exec("ip", "mptcp", "endpoint", "flush")
                cli.exec("ip", "mptcp", "endpoint", "add", "10.2.0.2", "dev", b, "subflow")
                cli.exec("ip", "mptcp", "limits", "set", "subflows", "2")
        _mptcp_server_pm(srv)
        server = start_peer(srv.name, kernel_cpu, "source", f"10.1.0.1:{PORT}", size, True,
                            warm)
        client = start_peer(cli.name, client_cpu, "sink", f"10.1.0.1:{PORT}", size, False,
                            warm)
        try:
            got = peer_result(client)
            sent = peer_result(server)
        finally:
            for p in (server, client):
                if p.poll() is None:
                    p.kill()
    result = _goodput(got["bytes"], got["seconds"], got["warm_bytes"], got["warm_seconds"],
                      shaped)
    result.update(mptcp=got["mptcp"] and sent["mptcp"], subflows=1 + got["extra_subflows"],
                  per_subflow=[], cpu=None)
    return result


def _goodput(n: int, secs: float, warm_n: int, warm_secs: float,
             shaped: bool) -> dict[str, Any]:
    if shaped:
        return {"bytes": n, "mbit": warm_n * 8 / warm_secs / 1e6}
    return {"bytes": n, "mbit": n * 8 / secs / 1e6}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


# ------------------------------------------------------------------- report
def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for shaped in (False, True):
        size = (args.shaped_size_mb if shaped else args.size_mb) * 1_000_000
        label = "shaped 50+100 Mbit/s" if shaped else "unshaped"
        cases = [("kernel->kernel", lambda sz=size, sh=shaped: kernel_case(
                      sz, sh, args.kernel_cpu, args.stack_cpu)),
                 ("kernel->stack", lambda sz=size, sh=shaped: stack_case(
                     "kernel->stack", sz, sh, args.kernel_cpu)),
                 ("stack->kernel", lambda sz=size, sh=shaped: stack_case(
                     "stack->kernel", sz, sh, args.kernel_cpu))]
        for name, fn in cases:
            runs = []
            for _ in range(args.runs):
                r = fn()
                if not r["mptcp"] or r["bytes"] != size or r["subflows"] != 2:
                    raise RuntimeError(f"{name} {label}: not a clean MPTCP transfer: {r}")
                runs.append(r)
                print(f"{name:15s} {label:22s} {r['mbit']:9.1f} Mbit/s  subflows "
                      f"{r['subflows']} {r['per_subflow']}", file=sys.stderr, flush=True)
            rows.append({"case": name, "shaping": label, "runs": runs,
                         "median": statistics.median(r["mbit"] for r in runs)})
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> str:
    ref = {r["shaping"]: r["median"] for r in rows if r["case"] == "kernel->kernel"}
    cmd = "python tools/bench_mptcp.py " + " ".join(argv)
    out = ["## MPTCP over TUN (`tools/bench_mptcp.py`)", "",
           f"Command (as root, {time.strftime('%Y-%m-%d', time.gmtime())}, "
           f"{platform.machine()}, {os.cpu_count()} vCPUs, Linux {platform.release()}, "
           f"Python {platform.python_version()}):", "", f"    {cmd.strip()}", "",
           "| Case | Paths | Goodput (Mbit/s, median) | Runs | Ratio to kernel-to-kernel "
           "| Subflows | Bytes per subflow (last run) | Stack CPU |",
           "|---|---|---:|---|---:|---:|---|---:|"]
    for r in rows:
        last = r["runs"][-1]
        per = " / ".join(f"{b / 1e6:.0f} MB" for b in last["per_subflow"]) or "-"
        cpu = "-" if last["cpu"] is None else f"{100 * last['cpu']:.0f} %"
        out.append(f"| {r['case']} | {r['shaping']} | {r['median']:.0f} | "
                   + " / ".join(f"{x['mbit']:.0f}" for x in r["runs"])
                   + f" | {r['median'] / ref[r['shaping']]:.2f} | {last['subflows']} | {per} "
                   f"| {cpu} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=400)
    ap.add_argument("--shaped-size-mb", type=int, default=60)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--stack-cpu", type=int, default=1)
    ap.add_argument("--kernel-cpu", type=int, default=0)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    # the kernel peer (internal)
    ap.add_argument("--peer", choices=["sink", "source"], help=argparse.SUPPRESS)
    ap.add_argument("--addr", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--warm", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--listen", action="store_true", help=argparse.SUPPRESS)
    raw = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(raw)
    if args.peer:
        args.role = args.peer
        return peer_main(args)
    from tools.topology import can_run

    why = can_run()
    if why:
        print(f"bench_mptcp: cannot run: {why}", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {args.stack_cpu})
    rows = run_all(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.markdown:
        print(markdown(rows, args, raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
