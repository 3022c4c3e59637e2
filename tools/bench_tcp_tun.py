#!/usr/bin/env python3
"""Bulk TCP goodput: the userspace stack over TUN against kernel TCP, and
kernel-to-kernel TCP over a veth pair as the reference, in the same run.

    sudo python tools/bench_tcp_tun.py [--size-mb 1000] [--plain-size-mb 300] [--runs 3]
                                       [--stack-cpu 1] [--kernel-cpu 0] [--markdown]

Cases (each run `--runs` times, median reported):
  kernel->stack, stack->kernel  over TUN with offloads (vnet header, TSO/GSO)
  kernel->stack, stack->kernel  over TUN in plain mode (MTU-sized packets)
  kernel->kernel                over a veth pair between two namespaces

The stack (this process: its event loop and the application thread) is pinned
to `--stack-cpu`; every kernel peer is a separate process pinned to
`--kernel-cpu` (unpinned runs on 2 vCPUs reorder packets badly). Goodput is
measured by the receiver, from the accepted/connected socket to EOF.
`--markdown` prints a section for BENCHMARKS.md.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK = 1 << 20
PORT = 5301


# ----------------------------------------------------------------- kernel peer
def peer_main(args: argparse.Namespace) -> int:
    """A kernel TCP sink or source (run as a separate, pinned process)."""
    host, _, port = args.addr.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    size = args.size
    if args.listen:
        srv = socket.create_server((host.strip("[]"), int(port)), family=family)
        print("ready", flush=True)
        sock, _ = srv.accept()
        srv.close()
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
        end = time.monotonic() + 10
        while True:
            try:
                sock.connect((host.strip("[]"), int(port)))
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                sock.close()
                sock = socket.socket(family, socket.SOCK_STREAM)
                time.sleep(0.02)
    t0 = time.perf_counter()
    moved = 0
    if args.role == "sink":
        buf = bytearray(CHUNK)
        while n := sock.recv_into(buf):
            moved += n
    else:
        block = memoryview(os.urandom(CHUNK))
        while moved < size:
            n = min(CHUNK, size - moved)
            sock.sendall(block[:n])
            moved += n
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
    elapsed = time.perf_counter() - t0
    sock.close()
    print(json.dumps({"bytes": moved, "seconds": elapsed}), flush=True)
    return 0


def start_peer(ns: str, cpu: int, role: str, addr: str, size: int,
               listen: bool) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", ns, "taskset", "-c", str(cpu), sys.executable,
            str(Path(__file__).resolve()), "--peer", role, "--addr", addr, "--size", str(size)]
    if listen:
        argv.append("--listen")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    if listen:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"kernel peer did not start: {line!r}")
    return proc


def peer_result(proc: subprocess.Popen[str], timeout: float = 300) -> dict[str, float]:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"kernel peer failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------- the cases
BUFFER = 4 << 20  # SO_SNDBUF / SO_RCVBUF of the stack's sockets (--buffer-kb)


def _buffers(sock) -> None:
    if BUFFER:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)


def stack_case(direction: str, size: int, offload: bool, kernel_cpu: int,
               soft: bool = True) -> dict[str, float]:
    """One transfer between the stack (this process) and a pinned kernel peer;
    `soft`: the driver's software GSO/GRO in plain mode."""
    import stack
    from tools.topology import Topology

    with Topology(1) as topo, stack.Host.tun(topo.path.spec(v6=False), netns=topo.ns,
                                             offload=offload, soft_gso=soft,
                                             gro=soft) as host:
        before = topo.nstat()
        if direction == "kernel->stack":
            ls = host.socket()
            _buffers(ls)
            ls.bind(("10.1.0.2", PORT))
            ls.listen(1)
            peer = start_peer(topo.ns, kernel_cpu, "source", f"10.1.0.2:{PORT}", size, False)
            sock, _ = ls.accept()
            t0, cpu0 = time.perf_counter(), _cpu()
            buf = bytearray(CHUNK)
            moved = 0
            while n := sock.recv_into(buf):
                moved += n
            elapsed = time.perf_counter() - t0
            cpu = _cpu() - cpu0
            sock.close()
            ls.close()
            peer_result(peer)
        else:
            peer = start_peer(topo.ns, kernel_cpu, "sink", f"10.1.0.1:{PORT}", size, True)
            sock = host.socket()
            _buffers(sock)
            sock.connect(("10.1.0.1", PORT))
            cpu0 = _cpu()
            block = memoryview(os.urandom(CHUNK))
            sent = 0
            while sent < size:
                n = min(CHUNK, size - sent)
                sock.sendall(block[:n])
                sent += n
            sock.shutdown(socket.SHUT_WR)
            res = peer_result(peer)
            cpu = _cpu() - cpu0
            moved, elapsed = int(res["bytes"]), res["seconds"]
            sock.close()
        after = topo.nstat()
        st = host.stats()
    if moved != size:
        raise RuntimeError(f"{direction}: moved {moved} of {size} bytes")
    dev = next(iter(st["devices"].values()))
    return {
        "gbps": moved * 8 / elapsed / 1e9, "seconds": elapsed, "bytes": moved,
        "kernel_retrans": after.get("TcpRetransSegs", 0) - before.get("TcpRetransSegs", 0),
        "kernel_out_segs": after.get("TcpOutSegs", 0) - before.get("TcpOutSegs", 0),
        "tun_reads": dev["rx_packets"], "tun_writes": dev["tx_packets"],
        "stack_cpu": cpu / elapsed,
    }


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def kernel_case(size: int, stack_cpu: int, kernel_cpu: int) -> dict[str, float]:
    from tools.topology import VethPair

    with VethPair() as veth:
        sink = start_peer(veth.b.name, kernel_cpu, "sink", f"{veth.b_addr}:{PORT}", size, True)
        source = start_peer(veth.a.name, stack_cpu, "source", f"{veth.b_addr}:{PORT}", size,
                            False)
        res = peer_result(sink)
        peer_result(source)
    return {"gbps": res["bytes"] * 8 / res["seconds"] / 1e9, "seconds": res["seconds"],
            "bytes": res["bytes"]}


# ----------------------------------------------------------------------- main
def median_case(runs: int, fn, *a) -> dict[str, object]:
    results = [fn(*a) for _ in range(runs)]
    gbps = [r["gbps"] for r in results]
    best = sorted(results, key=lambda r: r["gbps"])[len(results) // 2]
    return {"median_gbps": statistics.median(gbps), "all_gbps": gbps, "median_run": best,
            "load_before": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1000, help="bytes per offload run (MB)")
    ap.add_argument("--plain-size-mb", type=int, default=300, help="bytes per plain run (MB)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kernel-runs", type=int, default=5,
                    help="runs of the kernel-to-kernel reference (it varies more)")
    ap.add_argument("--buffer-kb", type=int, default=4096,
                    help="SO_SNDBUF/SO_RCVBUF of the stack's sockets (0: the facade default; "
                         "Linux autotunes its own up to 4 MB / 6 MB)")
    ap.add_argument("--stack-cpu", type=int, default=1)
    ap.add_argument("--kernel-cpu", type=int, default=0)
    ap.add_argument("--markdown", action="store_true", help="print a BENCHMARKS.md section")
    ap.add_argument("--json", metavar="FILE", help="write all results as JSON")
    ap.add_argument("--peer", choices=["sink", "source"], help=argparse.SUPPRESS)
    ap.add_argument("--addr", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--listen", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer:
        args.role = args.peer
        return peer_main(args)
    from tools.topology import can_run

    why = can_run()
    if why:
        print(f"bench_tcp_tun: {why}", file=sys.stderr)
        return 2
    global BUFFER
    BUFFER = args.buffer_kb * 1024
    os.sched_setaffinity(0, {args.stack_cpu})  # before any thread: the loop inherits it
    mb = 1_000_000
    results: dict[str, dict[str, object]] = {}
    cases = [
        ("kernel->kernel (veth)", kernel_case, args.size_mb * mb, args.stack_cpu,
         args.kernel_cpu),
        ("kernel->stack, offload", stack_case, "kernel->stack", args.size_mb * mb, True,
         args.kernel_cpu),
        ("stack->kernel, offload", stack_case, "stack->kernel", args.size_mb * mb, True,
         args.kernel_cpu),
        ("kernel->stack, plain", stack_case, "kernel->stack", args.plain_size_mb * mb, False,
         args.kernel_cpu),
        ("stack->kernel, plain", stack_case, "stack->kernel", args.plain_size_mb * mb, False,
         args.kernel_cpu),
        ("kernel->stack, plain, no GRO", stack_case, "kernel->stack", args.plain_size_mb * mb,
         False, args.kernel_cpu, False),
        ("stack->kernel, plain, no soft GSO", stack_case, "stack->kernel",
         args.plain_size_mb * mb, False, args.kernel_cpu, False),
    ]
    for name, fn, *a in cases:
        results[name] = median_case(args.kernel_runs if fn is kernel_case else args.runs,
                                    fn, *a)
        r = results[name]
        print(f"{name:34s} {r['median_gbps']:7.2f} Gbit/s  runs: "
              + " ".join(f"{g:.2f}" for g in r["all_gbps"]), flush=True)
    ref = results["kernel->kernel (veth)"]["median_gbps"]
    for name in list(results)[1:]:
        results[name]["ratio_to_kernel"] = results[name]["median_gbps"] / ref
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.markdown:
        print(markdown(results, args, argv))
    return 0


def markdown(results: dict[str, dict[str, object]], args: argparse.Namespace,
             argv: list[str] | None) -> str:
    cmd = " ".join(["python", "tools/bench_tcp_tun.py", *(argv if argv is not None
                                                          else sys.argv[1:])])
    ref = results["kernel->kernel (veth)"]["median_gbps"]
    lines = [
        "## TCP bulk transfer over TUN (`tools/bench_tcp_tun.py`)",
        "",
        f"Command (as root, {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"{platform.machine()}, {os.cpu_count()} vCPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}):",
        "",
        f"    {cmd}",
        "",
        f"Stack process (event loop + application thread) pinned to CPU {args.stack_cpu}, "
        f"kernel peers to CPU {args.kernel_cpu} (`taskset`); median of {args.runs} runs "
        f"({args.kernel_runs} for the kernel-to-kernel reference); "
        f"{args.size_mb} MB per offload run, {args.plain_size_mb} MB per plain run; the stack's "
        f"sockets with SO_SNDBUF = SO_RCVBUF = {args.buffer_kb} KB; goodput "
        "measured by the receiver. The reference is kernel-to-kernel TCP over a veth pair "
        "between two namespaces, same pinning. \"offload\": TUN with IFF_VNET_HDR and "
        "TUNSETOFFLOAD(CSUM|TSO4|TSO6), 64 KB super-segments both ways. \"plain\": no vnet "
        "header, MTU-sized packets on the TUN; the driver cuts the core's super-segments "
        "(software GSO) and joins received in-order segments (GRO, `tun/gro.py`); the last "
        "two rows switch that off (one core call per packet).",
        "",
        "| Case | Goodput (Gbit/s, median) | Runs | Ratio to kernel-to-kernel "
        "| Stack CPU | Kernel retransmits |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        ratio = r["median_gbps"] / ref
        runs = " / ".join(f"{g:.2f}" for g in r["all_gbps"])  # type: ignore[union-attr]
        med = r["median_run"]
        cpu = f"{med['stack_cpu'] * 100:.0f} %" if "stack_cpu" in med else "-"
        rtx = f"{med['kernel_retrans']} of {med['kernel_out_segs']}" if "kernel_retrans" in med \
            else "-"
        lines.append(f"| {name} | {r['median_gbps']:.2f} | {runs} | {ratio:.2f} | {cpu} | {rtx} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
