#!/usr/bin/env python3
"""Write a synthetic bulk-transfer pcap for tools/bench_parse.py.

Classic pcap, LINKTYPE_RAW (101): every record is one IPv4 packet carrying
TCP, with correct IPv4 and TCP checksums. Traffic shape: several connections,
each a handshake (MSS, SACK-permitted, timestamps, window scale; MP_CAPABLE
on MPTCP connections), then full-sized data segments answered by an ACK
every second segment. Every packet carries timestamps (RFC 7323); a few ACKs
carry SACK blocks (RFC 2018); MPTCP connections carry DSS options
(RFC 8684 section 3.3) on data and ACKs.

    python tools/make_bench_pcap.py /tmp/bench.pcap --packets 120000
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
from pathlib import Path

LINKTYPE_RAW = 101
SYN, ACK, PSH = 0x02, 0x10, 0x08


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_tcp(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes,
    payload: bytes,
    ip_id: int,
) -> bytes:
    options += b"\x01" * (-len(options) % 4)
    doff = (20 + len(options)) // 4
    tcp = (
        struct.pack(
            "!HHIIBBHHH",
            sport,
            dport,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            doff << 4,
            flags,
            window,
            0,
            0,
        )
        + options
    )
    seg = tcp + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(seg))
    seg = seg[:16] + struct.pack("!H", _csum(pseudo + seg)) + seg[18:]
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), ip_id & 0xFFFF, 0x4000, 64, 6, 0, src, dst
    )
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + seg


def ts(val: int, ecr: int) -> bytes:
    return b"\x01\x01" + struct.pack("!BBII", 8, 10, val & 0xFFFFFFFF, ecr & 0xFFFFFFFF)


def dss(data_ack: int, dsn: int | None = None, ssn: int = 0, dll: int = 0) -> bytes:
    """DSS with a 64-bit DATA_ACK and, when dsn is given, a 64-bit mapping."""
    if dsn is None:
        return struct.pack("!BBBBQ", 30, 12, 0x20, 0x03, data_ack)
    return struct.pack("!BBBBQQIH", 30, 26, 0x20, 0x0F, data_ack, dsn, ssn, dll) + b"\x01\x01"


def connection(
    rng: random.Random, n_packets: int, mptcp: bool, payload_size: int, noise: bytes, conn_id: int
) -> list[bytes]:
    """Packets of one transfer, client (10.0.x.1) sends data to server."""
    c, s = bytes([10, 0, conn_id & 0xFF, 1]), bytes([10, 1, conn_id & 0xFF, 1])
    cp, sp = 40000 + conn_id, 5201
    ciss, siss = rng.getrandbits(32), rng.getrandbits(32)
    t0 = rng.getrandbits(31)
    dsn0, dack0 = rng.getrandbits(63), rng.getrandbits(63)
    mpc = struct.pack("!BBBB", 30, 4, 0x01, 0x81) if mptcp else b""
    syn_opts = b"\x02\x04\x05\xb4\x04\x02" + ts(t0, 0)[2:] + b"\x01\x03\x03\x07"
    out = [
        ipv4_tcp(c, s, cp, sp, ciss, 0, SYN, 64240, syn_opts + mpc, b"", 1),
        ipv4_tcp(
            s,
            c,
            sp,
            cp,
            siss,
            ciss + 1,
            SYN | ACK,
            65160,
            syn_opts[:6] + ts(t0 + 7, t0)[2:] + b"\x01\x03\x03\x07" + mpc,
            b"",
            1,
        ),
        ipv4_tcp(c, s, cp, sp, ciss + 1, siss + 1, ACK, 502, ts(t0 + 1, t0 + 7), b"", 2),
    ]
    sent = 0
    ip_c = ip_s = 3
    while len(out) < n_packets:
        for _ in range(2):
            off = rng.randrange(0, len(noise) - payload_size)
            opts = ts(t0 + 2 + sent // 16, t0 + 7 + sent // 32)
            if mptcp:
                opts += dss(
                    dack0, dsn0 + sent * payload_size, 1 + sent * payload_size, payload_size
                )
            out.append(
                ipv4_tcp(
                    c,
                    s,
                    cp,
                    sp,
                    ciss + 1 + sent * payload_size,
                    siss + 1,
                    ACK | PSH,
                    502,
                    opts,
                    noise[off : off + payload_size],
                    ip_c,
                )
            )
            sent += 1
            ip_c += 1
        opts = ts(t0 + 8 + sent // 32, t0 + 2 + sent // 16)
        if rng.random() < 0.05:  # a hole: SACK one or two blocks above it
            left = ciss + 1 + (sent + 2) * payload_size
            blocks = [(left, left + payload_size)]
            if rng.random() < 0.5:
                blocks.append((left + 3 * payload_size, left + 5 * payload_size))
            opts += struct.pack("!BB", 5, 2 + 8 * len(blocks)) + b"".join(
                struct.pack("!II", a & 0xFFFFFFFF, b & 0xFFFFFFFF) for a, b in blocks
            )
        elif mptcp:
            opts += dss(dsn0 + sent * payload_size)
        out.append(
            ipv4_tcp(
                s, c, sp, cp, siss + 1, ciss + 1 + sent * payload_size, ACK, 2048, opts, b"", ip_s
            )
        )
        ip_s += 1
    return out[:n_packets]


def write_pcap(path: Path, packets: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        for i, p in enumerate(packets):
            f.write(
                struct.pack("<IIII", 1_700_000_000 + i // 100_000, i % 100_000 * 10, len(p), len(p))
            )
            f.write(p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path, help="pcap to write (use a temp path)")
    ap.add_argument("--packets", type=int, default=120_000)
    ap.add_argument("--connections", type=int, default=8, help="every other one is MPTCP")
    ap.add_argument("--payload", type=int, default=1448, help="data segment payload bytes")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    noise = os.urandom(1 << 20) if args.seed < 0 else rng.randbytes(1 << 20)
    per = -(-args.packets // args.connections)
    conns = [
        connection(rng, per, k % 2 == 1, args.payload, noise, k) for k in range(args.connections)
    ]
    # Interleave connections the way a capture of parallel transfers would.
    packets = [conns[k][i] for i in range(per) for k in range(args.connections)]
    write_pcap(args.output, packets[: args.packets])
    print(f"wrote {min(len(packets), args.packets)} packets to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
