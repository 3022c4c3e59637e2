"""Recompute every token, IDSN, HMAC and DSS checksum in the kernel captures.

The captures (../shared/pcaps/kernel/*.pcap, two Linux 6.18 kernels) hold
MP_CAPABLE handshakes (both keys on the wire), MP_JOINs, ADD_ADDRs and DSS
mappings with and without checksums. Everything the kernel derived from the
keys must equal what `stack.mptcp.crypto` derives (RFC 8684 §3.1-§3.4).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stack.mptcp.crypto import (
    add_addr_hmac,
    dss_checksum,
    join_ack_hmac,
    join_synack_hmac,
    key_idsn_v0,
    key_idsn_v1,
    key_token_v0,
    key_token_v1,
)
from stack.trace.pcap import ip_payload, open_capture
from stack.wire.ip import parse_ip
from stack.wire.mptcp import AddAddr, Dss, MpCapable, MpJoin
from stack.wire.tcp import SYN, TcpHeader

SHARED = Path(__file__).resolve().parents[2] / "shared" / "pcaps"
KERNEL = SHARED / "kernel"
PCAPS = sorted(KERNEL.glob("*.pcap")) if KERNEL.is_dir() else []
V0_TRACE = SHARED / "external" / "tcpdump_mptcp-v0.pcap"


def _read_ip_packets(path: Path) -> list[bytes]:
    """IP packets of a capture (stack.trace.pcap)."""
    out = []
    with open_capture(path) as cap:
        for pkt in cap:
            ip = ip_payload(pkt)
            if ip is not None:
                out.append(ip)
    return out


Flow = tuple[str, int, str, int]  # src, sport, dst, dport (one direction)


@dataclass
class Direction:
    isn: int | None = None
    segments: dict[int, bytes] = field(default_factory=dict)  # relative seq -> payload

    def stream(self, start: int, length: int) -> bytes:
        """Subflow bytes [start, start+length) (relative seq), from any segments."""
        buf = bytearray(length)
        have = bytearray(length)
        for rel, data in self.segments.items():
            lo, hi = max(start, rel), min(start + length, rel + len(data))
            if lo < hi:
                buf[lo - start : hi - start] = data[lo - rel : hi - rel]
                have[lo - start : hi - start] = b"\x01" * (hi - lo)
        assert all(have), f"mapping [{start}, +{length}) not fully captured"
        return bytes(buf)


@dataclass
class Counts:
    tokens: int = 0
    idsn: int = 0
    synack_hmac: int = 0
    ack_hmac: int = 0
    add_addr_hmac: int = 0
    dss_csum: int = 0
    mpc_csum: int = 0


def _rev(f: Flow) -> Flow:
    return (f[2], f[3], f[0], f[1])


def _expand(dsn: int, width: int, near: int) -> int:
    """A 32-bit DSN expanded to the 64-bit value closest to `near`."""
    if width == 8:
        return dsn
    cand = (near & ~0xFFFFFFFF) | dsn
    for alt in (cand - 2**32, cand + 2**32):
        if abs(alt - near) < abs(cand - near):
            cand = alt
    return cand % 2**64


def _verify(path: Path, version: int = 1, *, tamper: bool = False) -> Counts:
    """Check every derived value in one capture; return how many of each.

    `tamper` flips one payload byte of the first data segment (a negative
    control: the DSS checksum check must then fail)."""
    token_of = key_token_v1 if version == 1 else key_token_v0
    idsn_of = key_idsn_v1 if version == 1 else key_idsn_v0
    counts = Counts()
    dirs: dict[Flow, Direction] = defaultdict(Direction)
    packets: list[tuple[Flow, TcpHeader, bytes]] = []
    for raw in _read_ip_packets(path):
        ip, seg = parse_ip(raw, verify=False)
        if ip.proto != 6:
            continue
        hdr, hlen = TcpHeader.parse(seg)
        flow = (str(ip.src), hdr.sport, str(ip.dst), hdr.dport)
        d = dirs[flow]
        if hdr.flags & SYN:
            d.isn = hdr.seq
        if len(seg) > hlen and d.isn is not None:
            payload = seg[hlen:]
            if tamper:
                payload, tamper = bytes((payload[0] ^ 0x40,)) + payload[1:], False
            d.segments[(hdr.seq - d.isn) % 2**32] = payload
        packets.append((flow, hdr, seg[hlen:]))

    key_of: dict[Flow, int] = {}  # key of the host sending on this flow
    server_keys: dict[int, tuple[Flow, int]] = {}  # token -> (server-side flow, key)
    join_nonce: dict[Flow, int] = {}
    mpc_csum: list[tuple[Flow, MpCapable]] = []
    dss_maps: list[tuple[Flow, int, Dss]] = []  # flow, 64-bit DSN, option
    first_dsn: dict[int, int] = {}  # key -> lowest DSN mapped by a DSS
    mpc_data_len: dict[int, int] = {}  # key -> bytes mapped by MP_CAPABLE+data

    for flow, hdr, _payload in packets:
        for opt in hdr.mptcp:
            if isinstance(opt, MpCapable):
                if opt.sender_key is not None and opt.receiver_key is None:  # SYN/ACK
                    key_of[flow] = opt.sender_key
                    server_keys[token_of(opt.sender_key)] = (flow, opt.sender_key)
                elif opt.receiver_key is not None:  # third ACK / first data
                    key_of[flow] = opt.sender_key
                    assert key_of.get(_rev(flow), opt.receiver_key) == opt.receiver_key
                    key_of[_rev(flow)] = opt.receiver_key
                    if opt.data_len is not None:
                        mpc_data_len[opt.sender_key] = opt.data_len
                    if opt.checksum is not None:
                        mpc_csum.append((flow, opt))
            elif isinstance(opt, MpJoin):
                if opt.variant == "syn":
                    # RFC 8684 §3.2: the token names the receiver's connection.
                    assert opt.token in server_keys, f"token {opt.token:08x} of no key"
                    counts.tokens += 1
                    join_nonce[flow] = opt.nonce
                    srv_flow, srv_key = server_keys[opt.token]
                    key_of[_rev(flow)] = srv_key
                    key_of[flow] = key_of[_rev(srv_flow)]
                elif opt.variant == "synack":
                    key_b, key_a = key_of[flow], key_of[_rev(flow)]
                    join_nonce[flow] = opt.nonce
                    want = join_synack_hmac(
                        key_b, key_a, opt.nonce, join_nonce[_rev(flow)], version=version
                    )
                    assert opt.hmac == want
                    counts.synack_hmac += 1
                else:
                    key_a, key_b = key_of[flow], key_of[_rev(flow)]
                    want = join_ack_hmac(
                        key_a, key_b, join_nonce[flow], join_nonce[_rev(flow)], version=version
                    )
                    assert opt.hmac == want
                    counts.ack_hmac += 1
            elif isinstance(opt, AddAddr) and opt.hmac is not None:
                want = add_addr_hmac(
                    key_of[flow], key_of[_rev(flow)], opt.addr_id, opt.address, opt.port
                )
                assert opt.hmac == want
                counts.add_addr_hmac += 1
            elif isinstance(opt, Dss) and opt.dsn_len:
                key = key_of[flow]
                dsn = _expand(opt.dsn, opt.dsn_len, idsn_of(key))
                first_dsn[key] = min(first_dsn.get(key, dsn), dsn)
                if opt.checksum is not None:
                    dss_maps.append((flow, dsn, opt))

    # RFC 8684 §3.1: the first data byte of each direction has DSN = IDSN + 1;
    # when it went in an MP_CAPABLE with data (implicit mapping), the first
    # DSS mapping starts right after those bytes.
    for key, dsn in first_dsn.items():
        assert dsn == (idsn_of(key) + 1 + mpc_data_len.get(key, 0)) % 2**64
        counts.idsn += 1

    # RFC 8684 §3.3.1: checksum over the pseudo-header and the whole mapping.
    for flow, dsn, opt in dss_maps:
        n_data = opt.dll - (1 if opt.data_fin else 0)
        data = dirs[flow].stream(opt.ssn, n_data) if n_data else b""
        assert dss_checksum(dsn, opt.ssn, opt.dll, data) == opt.checksum
        counts.dss_csum += 1
    for flow, opt in mpc_csum:  # implicit mapping DSN = IDSN + 1, SSN = 1
        data = dirs[flow].stream(1, opt.data_len)
        dsn = (idsn_of(opt.sender_key) + 1) % 2**64
        assert dss_checksum(dsn, 1, opt.data_len, data) == opt.checksum
        counts.mpc_csum += 1
    return counts


def _on_the_wire(path: Path) -> Counts:
    """How many tokens, HMACs and checksums the capture carries (so that the
    check covers every one of them, not just some)."""
    n = Counts()
    for ip in _read_ip_packets(path):
        hdr, payload = parse_ip(ip, verify=False, allow_truncated=True)
        if hdr.proto != 6:
            continue
        tcp, _ = TcpHeader.parse(payload)
        for opt in tcp.mptcp:
            if isinstance(opt, MpJoin):
                n.tokens += opt.variant == "syn"
                n.synack_hmac += opt.variant == "synack"
                n.ack_hmac += opt.variant == "ack"
            elif isinstance(opt, AddAddr):
                n.add_addr_hmac += opt.hmac is not None
            elif isinstance(opt, Dss):
                n.dss_csum += opt.checksum is not None
            elif isinstance(opt, MpCapable):
                n.mpc_csum += opt.checksum is not None
    return n


@pytest.mark.skipif(not PCAPS, reason="../shared/pcaps/kernel not present")
@pytest.mark.parametrize("path", PCAPS, ids=lambda p: p.name)
def test_kernel_pcap_crypto_matches_wire(path: Path) -> None:
    counts = _verify(path)
    wire = _on_the_wire(path)
    wire.idsn = counts.idsn
    assert counts == wire  # every token, HMAC and checksum on the wire was recomputed
    assert counts.idsn == 2  # both directions sent data
    if "2subflows" in path.name:
        assert counts.tokens >= 1 and counts.synack_hmac >= 1 and counts.ack_hmac >= 1
        assert counts.add_addr_hmac >= 1
    if "csum" in path.name:
        assert counts.dss_csum >= 4
    else:
        assert counts.dss_csum == 0
    if "1subflow-csum" in path.name:
        assert counts.mpc_csum >= 1  # first data went as MP_CAPABLE+data with checksum


@pytest.mark.skipif(not PCAPS, reason="../shared/pcaps/kernel not present")
def test_a_flipped_payload_byte_breaks_the_checksum_check() -> None:
    path = next(p for p in PCAPS if "csum" in p.name)
    with pytest.raises(AssertionError):
        _verify(path, tamper=True)


@pytest.mark.skipif(not V0_TRACE.is_file(), reason="../shared/pcaps/external not present")
def test_v0_trace_sha1_tokens_hmacs_and_checksums() -> None:
    # RFC 6824: SHA-1 tokens/IDSNs, HMAC-SHA1 MP_JOIN, 32-bit DSNs, checksums on.
    counts = _verify(V0_TRACE, version=0)
    wire = _on_the_wire(V0_TRACE)
    wire.idsn = counts.idsn
    assert counts == wire
    assert counts.tokens >= 1 and counts.synack_hmac >= 1 and counts.ack_hmac >= 1
    assert counts.idsn == 2
    assert counts.dss_csum >= 100


def test_kernel_pcaps_present_or_skipped() -> None:
    if not KERNEL.is_dir():
        pytest.skip("../shared/pcaps/kernel not present")
    assert PCAPS, "the kernel capture directory holds no .pcap"
