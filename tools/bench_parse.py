#!/usr/bin/env python3
"""Segment-parser benchmark: fastpath.parse_segment vs dpkt vs scapy.

Loads every frame of a pcap into memory (classic pcap; raw IP or Ethernet),
then times, pinned to one CPU, a loop that parses each packet's IP and TCP
headers and TCP options:

- fastpath:  fastpath.segment.parse_segment(pkt) (checksums verified), and
             again with verify_checksum=False
- dpkt:      dpkt.ip.IP(pkt) + dpkt.tcp.parse_opts(ip.data.opts)
- scapy:     scapy.layers.inet.IP(pkt), on a subset (it is ~1000x slower)

Each figure is the median of --runs runs; prints packets per second by wall
clock and per second of the process's own CPU time.

    python tools/make_bench_pcap.py /tmp/bench.pcap
    taskset -c 1 python tools/bench_parse.py /tmp/bench.pcap
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path


def load_frames(path: Path) -> list[bytes]:
    """IP packets of a classic pcap file (LINKTYPE_RAW 101 / 228 or Ethernet 1)."""
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise SystemExit(f"{path}: not a classic pcap file")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype not in (1, 101, 228):
        raise SystemExit(f"{path}: unsupported link type {linktype}")
    rec = struct.Struct(endian + "IIII")
    frames, off = [], 24
    while off + 16 <= len(data):
        caplen = rec.unpack_from(data, off)[2]
        frame = data[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        if linktype == 1:
            if frame[12:14] not in (b"\x08\x00", b"\x86\xdd"):
                continue
            frame = frame[14:]
        frames.append(frame)
    return frames


def time_loop(
    fn: Callable[[list[bytes]], None], frames: list[bytes], runs: int
) -> tuple[float, float]:
    """Median packets/s over `runs` timed passes (after one warm-up pass), by
    wall clock and by the CPU time of this thread (robust to a busy machine)."""
    fn(frames)
    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn(frames)
        t1, c1 = time.perf_counter(), time.thread_time()
        wall.append(len(frames) / (t1 - t0))
        cpu.append(len(frames) / max(c1 - c0, 1e-9))
    return statistics.median(wall), statistics.median(cpu)


def bench_fastpath(verify: bool) -> Callable[[list[bytes]], None]:
    from fastpath.segment import parse_segment

    def run(frames: list[bytes]) -> None:
        for f in frames:
            parse_segment(f, verify)

    return run


def bench_dpkt(frames: list[bytes]) -> None:
    import dpkt

    IP, parse_opts = dpkt.ip.IP, dpkt.tcp.parse_opts
    for f in frames:
        ip = IP(f)
        parse_opts(ip.data.opts)


def bench_scapy(frames: list[bytes]) -> None:
    from scapy.layers.inet import IP

    for f in frames:
        IP(f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pcap", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--cpu", type=int, default=None, help="CPU to pin to (default: the first one allowed)"
    )
    ap.add_argument("--scapy-packets", type=int, default=20_000)
    ap.add_argument("--skip-scapy", action="store_true")
    args = ap.parse_args(argv)

    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    frames = load_frames(args.pcap)
    if not frames:
        raise SystemExit("no packets")
    # Sanity: every frame parses, and the parsers agree on what they see.
    from fastpath.segment import parse_segment

    segs = [parse_segment(f) for f in frames]
    bad = sum(1 for s in segs if not s.tcp_checksum_ok)
    with_opts = sum(1 for s in segs if s.options_len)
    mptcp = sum(1 for s in segs if s.mptcp_spans)
    sack = sum(1 for s in segs if s.sack_blocks)
    avg = sum(len(f) for f in frames) / len(frames)
    print(
        f"{args.pcap}: {len(frames)} packets, mean {avg:.0f} bytes, {with_opts} with options, "
        f"{sack} with SACK, {mptcp} with MPTCP, {bad} bad TCP checksums; pinned to CPU {cpu}"
    )
    del segs

    results = [
        (
            "fastpath.parse_segment (checksums verified)",
            time_loop(bench_fastpath(True), frames, args.runs),
            len(frames),
        ),
        (
            "fastpath.parse_segment (verify_checksum=False)",
            time_loop(bench_fastpath(False), frames, args.runs),
            len(frames),
        ),
        ("dpkt IP + tcp.parse_opts", time_loop(bench_dpkt, frames, args.runs), len(frames)),
    ]
    if not args.skip_scapy:
        subset = frames[: args.scapy_packets]
        results.append(("scapy IP()", time_loop(bench_scapy, subset, args.runs), len(subset)))
    print(
        f"| parser | packets | packets/s wall clock | packets/s CPU time |  (median of {args.runs})"
    )
    print("| --- | ---: | ---: | ---: |")
    for name, (wall, cpu_rate), n in results:
        print(f"| {name} | {n} | {wall:,.0f} | {cpu_rate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
