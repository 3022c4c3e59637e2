#!/usr/bin/env python3
"""Write pcaps/mptcp-all-options.pcap: every MPTCP v1 option variant on the wire.

A raw-IP pcap (LINKTYPE_RAW) of TCP segments with valid checksums, built
with the `stack.wire` emitters, that carries every RFC 8684 option variant:

- MP_CAPABLE: 4 (SYN; versions 1 and 2; flags H, A|H, B|H, all of A..H), 12 (SYN/ACK;
  A, C, H), 20 (ACK), 22 (ACK + data, no checksum), 24 (ACK + data +
  checksum) (§3.1);
- MP_JOIN: SYN (12), SYN/ACK (16), ACK (24), each with backup off and on
  (the ACK form has no backup bit) (§3.2), with real tokens and HMACs;
- DSS: every combination of DATA_ACK (none, 4, 8 bytes) x mapping (none,
  DSN 4 or 8 bytes, each with and without checksum) x DATA_FIN (§3.3), with
  real DSS checksums over the segment payload;
- ADD_ADDR: IPv4 and IPv6, with and without port, with HMAC and as echo
  (§3.4.1), real HMACs;
- REMOVE_ADDR with 1, 2 and 5 ids (§3.4.2); MP_PRIO backup on/off (§3.3.8);
  MP_FAIL (§3.7); MP_FASTCLOSE (§3.5); MP_TCPRST with every flag bit and
  reasons 0..6 (§3.6);
- two segments with two MPTCP options each.

Everything is sent once over IPv4 and once over IPv6 (same keys, other
ports). The output is deterministic (fixed keys, nonces, time stamps), so
the committed file can be compared with a fresh run. `build_frames()` also
returns, per packet, the option objects that were meant, for the
cross-checks in tests/test_tshark_crosscheck.py.

Usage: python tools/make_option_pcap.py [-o pcaps/mptcp-all-options.pcap]
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from stack.mptcp.crypto import (
    add_addr_hmac,
    dss_checksum,
    join_ack_hmac,
    join_synack_hmac,
    key_idsn_v1,
    key_token_v1,
)
from stack.trace.pcap import LINKTYPE_RAW, PcapWriter
from stack.wire.ip import IPv4Header, IPv6Header
from stack.wire.mptcp import (
    CAP_A,
    CAP_B,
    CAP_C,
    CAP_H,
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoin,
    MpPrio,
    MpTcpRst,
    MptcpSuboption,
    RemoveAddr,
)
from stack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    MptcpOption,
    TcpHeader,
    emit_segment,
    pad_options,
)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "pcaps" / "mptcp-all-options.pcap"
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC

KEY_A = 0x0123456789ABCDEF  # client key
KEY_B = 0xFEDCBA9876543210  # server key
NONCE_A = 0x11223344
NONCE_B = 0x55667788


@dataclass(slots=True)
class Frame:
    """One packet of the trace and the MPTCP options it was built from."""

    timestamp: float
    packet: bytes
    options: list[MptcpSuboption]


@dataclass(slots=True)
class Subflow:
    """One TCP connection; tracks both directions' next sequence numbers."""

    client: IPv4Address | IPv6Address
    server: IPv4Address | IPv6Address
    cport: int
    sport: int
    isn_c: int
    isn_s: int
    nxt: dict[bool, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.nxt = {True: self.isn_c, False: self.isn_s}

    def segment(self, from_client: bool, flags: int, options: list[MptcpSuboption],
                payload: bytes = b"") -> bytes:
        """A whole IP packet; sequence space advances by payload, SYN and FIN."""
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        sp, dp = (self.cport, self.sport) if from_client else (self.sport, self.cport)
        seq = self.nxt[from_client]
        ack = self.nxt[not from_client] if flags & ACK else 0
        opts = pad_options([MptcpOption(o) for o in options])
        hdr = TcpHeader(sp, dp, seq, ack, flags, window=502, urgent=0, options=opts,
                        reserved=0)
        tcp = emit_segment(hdr, payload, src, dst)
        self.nxt[from_client] = (seq + len(payload) + (1 if flags & (SYN | FIN) else 0)) \
            & 0xFFFFFFFF
        # Every header field spelled out, so the file does not change when
        # an emitter's defaults do.
        if src.version == 4:
            ip = IPv4Header(src, dst, proto=6, ttl=64, tos=0, ident=len(tcp) & 0xFFFF,
                            flags=0b010, frag_offset=0).emit(len(tcp))
        else:
            ip = IPv6Header(src, dst, next_header=6, hop_limit=64, traffic_class=0,
                            flow_label=0).emit(len(tcp))
        return ip + tcp

    def ssn(self, from_client: bool) -> int:
        """Relative subflow sequence number of the next byte (RFC 8684 §3.3.1)."""
        isn = self.isn_c if from_client else self.isn_s
        return (self.nxt[from_client] - isn) & 0xFFFFFFFF


class Trace:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def add(self, flow: Subflow, from_client: bool, flags: int,
            options: list[MptcpSuboption], payload: bytes = b"") -> None:
        pkt = flow.segment(from_client, flags, options, payload)
        self.frames.append(Frame(T0 + len(self.frames) * 0.001, pkt, list(options)))


def _payload(n: int, seed: int) -> bytes:
    return bytes((seed + 7 * i) & 0xFF for i in range(n))


def _handshake(trace: Trace, flow: Subflow, flags: int, version: int = 1) -> None:
    """MP_CAPABLE SYN (4) / SYN-ACK (12) / ACK (20) (RFC 8684 §3.1)."""
    trace.add(flow, True, SYN, [MpCapable(version, flags)])
    trace.add(flow, False, SYN | ACK, [MpCapable(1, flags, KEY_B)])
    trace.add(flow, True, ACK, [MpCapable(1, flags, KEY_A, KEY_B)])


def _dss_variants(trace: Trace, flow: Subflow, with_csum: bool) -> None:
    """Every DATA_ACK x mapping x DATA_FIN combination (RFC 8684 §3.3)."""
    idsn_c = key_idsn_v1(KEY_A)
    dsn64 = (idsn_c + 1) & 0xFFFFFFFFFFFFFFFF
    data_ack = (key_idsn_v1(KEY_B) + 1) & 0xFFFFFFFFFFFFFFFF
    for k, (ack_len, dsn_len, fin) in enumerate(
            itertools.product((0, 4, 8), (0, 4, 8), (False, True))):
        opt = Dss(data_fin=fin)
        if ack_len:
            opt.data_ack_len = ack_len
            opt.data_ack = data_ack & ((1 << (8 * ack_len)) - 1)
        payload = b""
        if dsn_len:
            payload = _payload(0 if fin and k % 4 == 1 else 40 + k, k)
            opt.dsn_len = dsn_len
            opt.dsn = dsn64 & ((1 << (8 * dsn_len)) - 1)
            opt.ssn = flow.ssn(True)
            opt.dll = len(payload) + (1 if fin else 0)
            if with_csum:
                opt.checksum = dss_checksum(dsn64, opt.ssn, opt.dll, payload)
            dsn64 = (dsn64 + opt.dll) & 0xFFFFFFFFFFFFFFFF
        trace.add(flow, True, ACK | (PSH if payload else 0), [opt], payload)


def _join(trace: Trace, flow: Subflow, backup: bool, addr_id: int) -> None:
    """MP_JOIN SYN (12) / SYN-ACK (16) / ACK (24) with real token and HMACs (§3.2)."""
    trace.add(flow, True, SYN, [MpJoin("syn", backup, addr_id, key_token_v1(KEY_B), NONCE_A)])
    trace.add(flow, False, SYN | ACK, [MpJoin(
        "synack", backup, 0, None, NONCE_B,
        join_synack_hmac(KEY_B, KEY_A, NONCE_B, NONCE_A))])
    trace.add(flow, True, ACK, [MpJoin("ack", hmac=join_ack_hmac(KEY_A, KEY_B, NONCE_A,
                                                                 NONCE_B))])


def _add_addrs(trace: Trace, flow: Subflow) -> None:
    """ADD_ADDR IPv4/IPv6 x port x (HMAC | echo) (RFC 8684 §3.4.1)."""
    addresses = (ip_address("192.0.2.33"), ip_address("2001:db8::33"))
    for addr_id, (address, port) in enumerate(itertools.product(addresses, (None, 8080)),
                                              start=2):
        hmac = add_addr_hmac(KEY_B, KEY_A, addr_id, address, port)
        trace.add(flow, False, ACK, [AddAddr(1, False, addr_id, address, port, hmac)])
        trace.add(flow, True, ACK, [AddAddr(1, True, addr_id, address, port, None)])


def build_round(trace: Trace, client: str, client2: str, server: str, base_port: int) -> None:
    """All variants over one address family."""
    c, c2, s = ip_address(client), ip_address(client2), ip_address(server)
    isn = 0x10000000 + base_port * 1000

    # Connection without checksums: handshake, MP_CAPABLE with data (22).
    f1 = Subflow(c, s, base_port + 1, 80, isn + 1, isn + 2)
    _handshake(trace, f1, CAP_H)
    first = _payload(30, 1)
    trace.add(f1, True, ACK | PSH, [MpCapable(1, CAP_H, KEY_A, KEY_B, len(first))], first)
    _dss_variants(trace, f1, with_csum=False)

    # Connection with checksums (A): MP_CAPABLE with data + checksum (24).
    f2 = Subflow(c, s, base_port + 2, 80, isn + 3, isn + 4)
    _handshake(trace, f2, CAP_A | CAP_H)
    first = _payload(25, 2)
    csum = dss_checksum((key_idsn_v1(KEY_A) + 1) & 0xFFFFFFFFFFFFFFFF, 1, len(first), first)
    trace.add(f2, True, ACK | PSH, [MpCapable(1, CAP_A | CAP_H, KEY_A, KEY_B, len(first), csum)],
              first)
    _dss_variants(trace, f2, with_csum=True)
    trace.add(f2, False, ACK, [MpFail(key_idsn_v1(KEY_A) + 1001)])

    # MP_CAPABLE flag and version variants on SYN and SYN/ACK.
    f3 = Subflow(c, s, base_port + 3, 80, isn + 5, isn + 6)
    trace.add(f3, True, SYN, [MpCapable(1, CAP_B | CAP_H)])
    trace.add(f3, False, SYN | ACK, [MpCapable(1, CAP_A | CAP_C | CAP_H, KEY_B)])
    f4 = Subflow(c, s, base_port + 4, 80, isn + 7, isn + 8)
    trace.add(f4, True, SYN, [MpCapable(2, CAP_H)])  # offers a later version (§3.1)

    # Address signalling on the first connection.
    _add_addrs(trace, f1)
    for ids in ((2,), (3, 4), (5, 6, 7, 8, 9)):
        trace.add(f1, False, ACK, [RemoveAddr(ids)])

    # Two joins, backup off and on, then MP_PRIO both ways.
    j1 = Subflow(c2, s, base_port + 5, 80, isn + 9, isn + 10)
    _join(trace, j1, False, 1)
    j2 = Subflow(c2, s, base_port + 6, 80, isn + 11, isn + 12)
    _join(trace, j2, True, 2)
    trace.add(j1, True, ACK, [MpPrio(True)])
    trace.add(j2, True, ACK, [MpPrio(False)])
    # Two options in one segment: DATA_ACK with MP_PRIO, and with REMOVE_ADDR.
    dack = (key_idsn_v1(KEY_B) + 1) & 0xFFFFFFFFFFFFFFFF
    trace.add(j1, True, ACK, [Dss(dack, 8), MpPrio(False)])
    trace.add(j2, False, ACK, [Dss(dack & 0xFFFFFFFF, 4), RemoveAddr((1, 2))])

    # Fast close on the first connection, then resets with MP_TCPRST (§3.5, §3.6).
    trace.add(f1, True, ACK, [MpFastclose(KEY_B)])
    trace.add(f1, True, RST | ACK, [MpFastclose(KEY_B)])
    for flow, (flags, reason) in zip(
            (j1, j2, f2, f3, f3, f3, f3),
            ((0x0, 0), (0x1, 1), (0x2, 2), (0x4, 3), (0x8, 4), (0xF, 5), (0x0, 6)),
            strict=True):
        trace.add(flow, False, RST | ACK, [MpTcpRst(flags, reason)])

    # Every MP_CAPABLE flag bit, A to H, on one SYN (D..G are the unassigned
    # crypto-algorithm bits of RFC 8684 §3.1; H is set, so the offer is valid).
    f5 = Subflow(c, s, base_port + 7, 80, isn + 13, isn + 14)
    trace.add(f5, True, SYN, [MpCapable(1, 0xFF)])


def build_frames() -> list[Frame]:
    """The packets of pcaps/mptcp-all-options.pcap, in order."""
    trace = Trace()
    build_round(trace, "10.0.0.1", "10.0.1.1", "10.0.0.2", 40000)
    build_round(trace, "fd00::1", "fd00:1::1", "fd00::2", 50000)
    return trace.frames


def write(path: Path) -> int:
    frames = build_frames()
    path.parent.mkdir(parents=True, exist_ok=True)
    with PcapWriter(path, linktype=LINKTYPE_RAW, snaplen=65535) as w:
        for f in frames:
            w.write(f.packet, f.timestamp)
    return len(frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    n = write(args.output)
    print(f"wrote {n} packets to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
