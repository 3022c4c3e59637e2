"""virtio_net_hdr codec: decode what the kernel writes, build what it must read;
and the plain-mode receive coalescing (tun/gro.py) that joins MTU packets."""

from __future__ import annotations

import struct

import pytest
from fastpath.checksum import internet_checksum, ones_sum, pseudo_sum_v4, pseudo_sum_v6

from tun.gro import coalesce
from tun.vnet import (
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    PLAIN_HEADER,
    PLAIN_INFO,
    VNET_HDR_LEN,
    VnetError,
    VnetInfo,
    decode_vnet,
    header_for,
    tcp_header_offset,
)


def ipv4_tcp(payload_len: int, *, ihl: int = 5, tcp_words: int = 8, proto: int = 6) -> bytes:
    total = ihl * 4 + tcp_words * 4 + payload_len
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total & 0xFFFF, 1, 0x4000, 64, proto, 0,
                     bytes([10, 1, 0, 2]), bytes([10, 1, 0, 1]))
    ip += bytes(ihl * 4 - 20)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5001, 1, 2, tcp_words << 4, 0x10, 512, 0, 0)
    if tcp_words >= 8:  # NOP NOP timestamps
        tcp += b"\x01\x01\x08\x0a" + bytes(8)
    tcp += bytes(tcp_words * 4 - len(tcp))
    return ip + tcp + bytes(payload_len)


def ipv6_tcp(payload_len: int, *, ext: bool = False) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5001, 1, 2, 5 << 4, 0x10, 512, 0, 0)
    body = tcp + bytes(payload_len)
    nxt = 6
    if ext:  # one 8-byte destination-options header in front of TCP
        body = bytes([6, 0]) + bytes(6) + body
        nxt = 60
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(body), nxt, 64,
                     bytes.fromhex("fd00000000000000" "0000000000000002"),
                     bytes.fromhex("fd00000000000000" "0000000000000001"))
    return ip + body


def test_decode_kernel_gso_read() -> None:
    # What the kernel writes in front of a 64 KB TCP super-segment (tun-offload.md §4a).
    raw = struct.pack("=BBHHHH", F_NEEDS_CSUM, GSO_TCPV4, 52, 1448, 20, 16) + b"payload"
    info = decode_vnet(raw)
    assert info == VnetInfo(F_NEEDS_CSUM, GSO_TCPV4, 52, 1448, 20, 16)
    assert info.needs_csum and info.is_gso and info.checksum_verified
    assert not info.data_valid


def test_decode_plain_and_data_valid() -> None:
    assert decode_vnet(bytes(10)) is PLAIN_INFO
    assert not PLAIN_INFO.checksum_verified and not PLAIN_INFO.is_gso
    info = decode_vnet(struct.pack("=BBHHHH", F_DATA_VALID, GSO_NONE, 0, 0, 0, 0))
    assert info.data_valid and info.checksum_verified and not info.needs_csum


def test_decode_truncated() -> None:
    with pytest.raises(VnetError):
        decode_vnet(b"\x01\x01\x00")


def test_encode_decode_round_trip() -> None:
    info = VnetInfo(F_NEEDS_CSUM, GSO_TCPV6, 72, 1428, 40, 16)
    assert len(info.encode()) == VNET_HDR_LEN
    assert decode_vnet(info.encode()) == info


def test_complete_packet_gets_zero_header() -> None:
    assert header_for(ipv4_tcp(100), 0, False) == PLAIN_HEADER


def test_ipv4_super_segment_header() -> None:
    pkt = ipv4_tcp(1448 * 40)  # 20 B IP + 32 B TCP (timestamps)
    hdr = decode_vnet(header_for(pkt, 1448, True))
    assert hdr == VnetInfo(F_NEEDS_CSUM, GSO_TCPV4, 52, 1448, 20, 16)


def test_ipv4_with_ip_options() -> None:
    hdr = decode_vnet(header_for(ipv4_tcp(3000, ihl=6, tcp_words=5), 1460, True))
    assert (hdr.csum_start, hdr.hdr_len, hdr.gso_type) == (24, 44, GSO_TCPV4)


def test_ipv6_super_segment_header() -> None:
    hdr = decode_vnet(header_for(ipv6_tcp(1440 * 3), 1440, True))
    assert hdr == VnetInfo(F_NEEDS_CSUM, GSO_TCPV6, 60, 1440, 40, 16)


def test_ipv6_extension_header_walked() -> None:
    hdr = decode_vnet(header_for(ipv6_tcp(10, ext=True), 0, True))
    assert hdr == VnetInfo(F_NEEDS_CSUM, GSO_NONE, 68, 0, 48, 16)


def test_partial_checksum_without_gso() -> None:
    hdr = decode_vnet(header_for(ipv4_tcp(10), 0, True))
    assert hdr == VnetInfo(F_NEEDS_CSUM, GSO_NONE, 52, 0, 20, 16)


def test_known_header_lengths_skip_parsing() -> None:
    pkt = ipv4_tcp(2000)
    assert header_for(pkt, 1000, True, 20, 32) == header_for(pkt, 1000, True)


@pytest.mark.parametrize("bad", [
    b"",  # nothing
    bytes(19),  # shorter than an IPv4 header
    ipv4_tcp(10, proto=17),  # UDP
    b"\x50" + bytes(40),  # IP version 5
    ipv6_tcp(0)[:30],  # truncated IPv6 header
    ipv4_tcp(0)[:30],  # truncated TCP header
])
def test_bad_packets_raise_typed_error(bad: bytes) -> None:
    with pytest.raises(VnetError):
        header_for(bad, 1448, True)


def test_tcp_header_offset() -> None:
    assert tcp_header_offset(ipv4_tcp(0)) == (4, 20)
    assert tcp_header_offset(ipv6_tcp(0)) == (6, 40)
    assert tcp_header_offset(ipv6_tcp(0, ext=True)) == (6, 48)


# ---------------------------------------------------------------- GRO (plain mode)

A4, B4 = bytes([10, 1, 0, 1]), bytes([10, 1, 0, 2])
A6, B6 = bytes.fromhex("fd000001" + "00" * 11 + "01"), bytes.fromhex("fd000001" + "00" * 11 + "02")


def wire(seq: int, payload: bytes, *, flags: int = 0x10, ack: int = 7, sport: int = 5001,
         v6: bool = False, window: int = 512, bad_csum: bool = False) -> bytes:
    """A complete IPv4/IPv6 TCP packet with timestamps and valid checksums."""
    tcp = struct.pack("!HHIIBBHHH", sport, 40000, seq & 0xFFFFFFFF, ack, 8 << 4, flags,
                      window, 0, 0) + b"\x01\x01\x08\x0a" + struct.pack("!II", 100, 200)
    seg_len = len(tcp) + len(payload)
    src, dst = (A6, B6) if v6 else (A4, B4)
    pseudo = (pseudo_sum_v6 if v6 else pseudo_sum_v4)(src, dst, 6, seg_len)
    csum = internet_checksum(tcp + payload, pseudo) ^ (0xFFFF if bad_csum else 0)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    if v6:
        ip = struct.pack("!IHBB16s16s", 6 << 28, seg_len, 6, 64, src, dst)
    else:
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + seg_len, 9, 0x4000, 64, 6, 0,
                                   src, dst))
        ip[10:12] = struct.pack("!H", internet_checksum(bytes(ip)))
        ip = bytes(ip)
    return ip + tcp + payload


def valid(pkt: bytes) -> bool:
    v6 = pkt[0] >> 4 == 6
    ihl = 40 if v6 else 20
    if not v6 and internet_checksum(pkt[:20]) != 0:
        return False
    src, dst = (pkt[8:24], pkt[24:40]) if v6 else (pkt[12:16], pkt[16:20])
    tcp = pkt[ihl:]
    pseudo = (pseudo_sum_v6 if v6 else pseudo_sum_v4)(src, dst, 6, len(tcp))
    return ones_sum(tcp, pseudo) == 0xFFFF


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_gro_joins_in_order_segments(v6: bool) -> None:
    parts = [bytes([i]) * 1448 for i in range(3)]
    pkts = [wire(1000 + i * 1448, p, v6=v6, flags=0x18 if i == 2 else 0x10)
            for i, p in enumerate(parts)]
    [(merged, verified)] = coalesce(pkts)
    assert verified
    hl = (40 if v6 else 20) + 32
    assert merged[hl:] == b"".join(parts)
    assert merged[:hl][(40 if v6 else 20) + 4:][:4] == struct.pack("!I", 1000)  # first seq
    if v6:
        assert struct.unpack_from("!H", merged, 4)[0] == len(merged) - 40
    else:
        assert struct.unpack_from("!H", merged, 2)[0] == len(merged)
        assert internet_checksum(merged[:20]) == 0  # IPv4 header checksum redone
    assert merged[hl - 32 + 13] == 0x18  # PSH of the last segment kept


def test_gro_single_packet_passes_verified() -> None:
    pkt = wire(1, b"abc")
    assert coalesce([pkt]) == [(pkt, True)]


def test_gro_keeps_what_must_not_be_joined() -> None:
    a = wire(1000, b"a" * 100)
    gap = wire(1200, b"b" * 100)  # 100 bytes missing in between
    fin = wire(1300, b"c" * 100, flags=0x11)
    other_ack = wire(1400, b"d" * 100, ack=8)
    bad = wire(1500, b"e" * 100, bad_csum=True)
    empty = wire(1500, b"")
    out = coalesce([a, gap, fin, other_ack, bad, empty])
    assert [p for p, _ in out] == [a, gap, fin, other_ack, bad, empty]
    assert [v for _, v in out] == [True, True, False, True, False, False]
    assert all(valid(p) for p, _ in out if p is not bad)


def test_gro_after_psh_starts_a_new_run() -> None:
    a, b = wire(1, b"x" * 10, flags=0x18), wire(11, b"y" * 10)
    assert [p for p, _ in coalesce([a, b])] == [a, b]


def test_gro_interleaved_flows_each_joined_in_order() -> None:
    f1 = [wire(100 + i * 10, bytes([65 + i]) * 10, sport=1) for i in range(3)]
    f2 = [wire(900 + i * 10, bytes([97 + i]) * 10, sport=2) for i in range(3)]
    out = coalesce([f1[0], f2[0], f1[1], f2[1], f1[2], f2[2]])
    assert len(out) == 2 and all(v for _, v in out)
    payloads = sorted(p[52:] for p, _ in out)
    assert payloads == [b"A" * 10 + b"B" * 10 + b"C" * 10, b"a" * 10 + b"b" * 10 + b"c" * 10]


def test_gro_stops_at_64k() -> None:
    pkts = [wire(i * 1448, b"z" * 1448) for i in range(60)]
    out = coalesce(pkts)
    assert len(out) == 2 and all(len(p) <= 65535 for p, _ in out)
    assert sum(len(p) - 52 for p, _ in out) == 60 * 1448


def test_gro_passes_non_tcp_through() -> None:
    icmp = bytes.fromhex("6000000000083aff") + A6 + B6 + bytes(8)
    assert coalesce([icmp]) == [(icmp, False)]
