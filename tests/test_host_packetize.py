"""IP packet <-> TcpSegment: emit, parse back, compare; offload frames and GSO."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from fastpath.checksum import internet_checksum
from fastpath.segment import parse_segment
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.host.packetize import build_frame, encode_options, gso_split, to_tcp_segment
from stack.tcp.segment import ACK, CWR, FIN, PSH, SYN, TcpSegment

V4 = (ipaddress.ip_address("10.1.0.2").packed, ipaddress.ip_address("10.1.0.1").packed)
V6 = (ipaddress.ip_address("fd00::2").packed, ipaddress.ip_address("fd00::1").packed)
MPC = bytes.fromhex("1e0c0181" + "0102030405060708")  # MP_CAPABLE, 12 bytes
DSS = bytes.fromhex("1e0a20010000000100020003")[:10]  # 10 bytes: needs 2 NOPs of padding

SYN_TEMPLATE = TcpSegment(40000, 80, 0xFFFFFFF0, 0, SYN, 65535, mss=1460, wscale=7,
                          sack_permitted=True, ts=(123456, 0))
DATA_TEMPLATE = TcpSegment(40000, 80, 1000, 2000, ACK | PSH, 501, ts=(5, 6), payload=b"x" * 100)


def roundtrip(seg: TcpSegment, addrs: tuple[bytes, bytes]) -> TcpSegment:
    frame = build_frame(seg, *addrs)
    p = parse_segment(frame.data)
    assert p.tcp_checksum_ok is True
    assert p.ip_checksum_ok
    assert (p.src, p.dst) == addrs
    assert p.options_error is None
    return to_tcp_segment(p, frame.data)


@pytest.mark.parametrize("addrs", [V4, V6], ids=["v4", "v6"])
@pytest.mark.parametrize(
    "seg",
    [
        SYN_TEMPLATE,
        dataclasses.replace(SYN_TEMPLATE, flags=SYN | ACK, ack=77, mptcp=(MPC,)),
        dataclasses.replace(SYN_TEMPLATE, ts=None),  # sackOK alone: NOP NOP sackOK
        dataclasses.replace(SYN_TEMPLATE, sack_permitted=False),  # NOP NOP TS
        DATA_TEMPLATE,
        dataclasses.replace(DATA_TEMPLATE, sack_blocks=((3000, 4000), (5000, 6000))),
        dataclasses.replace(DATA_TEMPLATE, ts=None,
                            sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8))),
        dataclasses.replace(DATA_TEMPLATE, mptcp=(DSS,), payload=b"odd"),
        dataclasses.replace(DATA_TEMPLATE, flags=ACK | FIN, payload=b""),
        TcpSegment(1, 2, 3, 4, ACK | CWR | 0x100, 0),  # NS bit (RFC 3540) survives
    ],
)
def test_roundtrip_every_option(seg: TcpSegment, addrs: tuple[bytes, bytes]) -> None:
    assert roundtrip(seg, addrs) == seg


def test_linux_option_layout() -> None:
    # SYN: mss, sackOK, TS, nop, wscale  (20 bytes)
    assert encode_options(SYN_TEMPLATE) == bytes.fromhex(
        "020405b4" "0402" "080a0001e24000000000" "01" "030307")
    # data: nop, nop, TS
    assert encode_options(DATA_TEMPLATE) == bytes.fromhex("0101080a0000000500000006")
    # with SACK: nop nop TS, nop nop SACK
    seg = dataclasses.replace(DATA_TEMPLATE, sack_blocks=((1, 2),))
    assert encode_options(seg)[12:] == bytes.fromhex("0101050a" "00000001" "00000002")
    # an MPTCP option of 10 bytes is padded to 12 with NOPs after it
    assert encode_options(dataclasses.replace(DATA_TEMPLATE, ts=None, mptcp=(DSS,))) == (
        DSS + b"\x01\x01")


def test_sack_blocks_trimmed_to_option_space() -> None:
    seg = dataclasses.replace(DATA_TEMPLATE, sack_blocks=tuple((i, i + 1) for i in range(0, 10, 2)))
    # with timestamps only 3 blocks fit (12 + 4 + 24 = 40), the first kept
    back = roundtrip(seg, V4)
    assert back.sack_blocks == seg.sack_blocks[:3]
    assert len(encode_options(seg)) == 40


def test_too_many_options_is_an_error() -> None:
    seg = dataclasses.replace(SYN_TEMPLATE, mptcp=(MPC, MPC, MPC))
    with pytest.raises(ValueError):
        build_frame(seg, *V4)


def test_ipv4_header_fields() -> None:
    frame = build_frame(DATA_TEMPLATE, *V4, ttl=17, ip_id=0x1234)
    d = frame.data
    assert d[0] == 0x45 and int.from_bytes(d[2:4], "big") == len(d)
    assert d[4:6] == b"\x12\x34" and d[6] & 0x40  # DF
    assert d[8] == 17 and d[9] == 6
    assert frame.gso_size == 0 and not frame.csum_partial
    assert (frame.ip_header_len, frame.tcp_header_len) == (20, 32)


def test_ipv6_header_fields() -> None:
    d = build_frame(DATA_TEMPLATE, *V6).data
    assert d[0] >> 4 == 6 and int.from_bytes(d[4:6], "big") == len(d) - 40
    assert d[6] == 6 and d[7] == 64


@pytest.mark.parametrize("addrs", [V4, V6], ids=["v4", "v6"])
def test_offload_frame_and_split(addrs: tuple[bytes, bytes]) -> None:
    payload = bytes(range(256)) * 250  # 64000 bytes
    seg = TcpSegment(5000, 443, 0xFFFFF000, 9, ACK | PSH | FIN | CWR, 1000, ts=(1, 2),
                     payload=payload)
    ip_len = 20 if len(addrs[0]) == 4 else 40
    mss = 1500 - ip_len - 20
    frame = build_frame(seg, *addrs, wire_mss=mss, ip_id=65534)
    assert frame.gso_size == mss - 12 and frame.csum_partial  # less 12 bytes of TS
    # NEEDS_CSUM: the checksum field holds the non-inverted pseudo-header
    # sum; the device finishes it by checksumming from csum_start (the TCP
    # header) and storing the result at csum_offset 16.
    assert parse_segment(frame.data).tcp_checksum_ok is False
    done = bytearray(frame.data)
    done[ip_len + 16 : ip_len + 18] = internet_checksum(done[ip_len:]).to_bytes(2, "big")
    assert parse_segment(bytes(done)).tcp_checksum_ok is True
    back = to_tcp_segment(parse_segment(frame.data, False), frame.data)
    assert back == seg
    pieces = gso_split(frame)
    assert len(pieces) == -(-len(payload) // frame.gso_size)
    data = b""
    seq = seg.seq
    for i, pkt in enumerate(pieces):
        q = parse_segment(pkt)
        assert q.tcp_checksum_ok is True and q.ip_checksum_ok
        last = i == len(pieces) - 1
        assert q.seq == seq and q.ip_header_len == ip_len
        assert len(pkt) <= 1500 and (last or len(pkt) == 1500)
        assert bool(q.flags & FIN) == last and bool(q.flags & PSH) == last
        assert bool(q.flags & CWR) == (i == 0)
        assert (q.ts_val, q.ts_ecr) == (1, 2)
        if ip_len == 20:
            assert int.from_bytes(pkt[4:6], "big") == (65534 + i) & 0xFFFF
        data += bytes(q.payload)
        seq = (seq + q.payload_len) & 0xFFFFFFFF
    assert data == payload
    assert seq == (seg.seq + len(payload)) & 0xFFFFFFFF  # across the wrap


def test_small_segment_on_offload_path_is_a_plain_packet() -> None:
    frame = build_frame(DATA_TEMPLATE, *V4, wire_mss=1460)
    assert frame.gso_size == 0 and not frame.csum_partial
    assert parse_segment(frame.data).tcp_checksum_ok is True
    assert gso_split(dataclasses.replace(frame, gso_size=0)) == [frame.data]


_u32 = st.integers(0, 2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(
    sport=st.integers(1, 65535), seq=_u32, ack=_u32, flags=st.integers(0, 0x1FF),
    window=st.integers(0, 65535), mss=st.none() | st.integers(0, 65535),
    wscale=st.none() | st.integers(0, 14), sack_ok=st.booleans(),
    ts=st.none() | st.tuples(_u32, _u32),
    blocks=st.lists(st.tuples(_u32, _u32), max_size=2).map(tuple),
    payload=st.binary(max_size=300), v6=st.booleans(),
)
def test_roundtrip_property(sport, seq, ack, flags, window, mss, wscale, sack_ok, ts, blocks,
                            payload, v6) -> None:
    seg = TcpSegment(sport, 80, seq, ack, flags, window, mss, wscale, sack_ok, ts, blocks, (),
                     payload)
    back = roundtrip(seg, V6 if v6 else V4)
    assert back == seg


def test_gso_size_capped_so_every_packet_fits_the_mtu() -> None:
    # The engine asks for 1448-byte pieces (MSS less timestamps), but this
    # segment also carries two SACK blocks: 20 more option bytes.
    seg = TcpSegment(1, 2, 3, 4, ACK, 100, ts=(1, 2), sack_blocks=((10, 20), (30, 40)),
                     payload=bytes(10_000), gso=1448)
    frame = build_frame(seg, *V4, gso_size=seg.gso, wire_mss=1460)
    assert frame.gso_size == 1460 - 32
    assert all(len(p) <= 1500 for p in gso_split(frame))
    # without a path limit the engine's size is taken as it is
    assert build_frame(seg, *V4, gso_size=1000).gso_size == 1000


def test_tshark_decodes_what_we_emit(tmp_path) -> None:
    """Cross-check against an independent decoder: tshark reads our packets
    with checksum validation on and finds the options where we put them."""
    import shutil
    import subprocess

    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    from stack.trace.pcap import PcapWriter

    segs = [
        (SYN_TEMPLATE, V4),
        (dataclasses.replace(SYN_TEMPLATE, flags=SYN | ACK, ack=5, mptcp=(MPC,)), V6),
        (dataclasses.replace(DATA_TEMPLATE, sack_blocks=((3000, 4000), (5000, 6000))), V4),
        (dataclasses.replace(DATA_TEMPLATE, flags=ACK | FIN, payload=b""), V6),
    ]
    path = tmp_path / "emit.pcap"
    w = PcapWriter(str(path))
    for i, (seg, addrs) in enumerate(segs):
        w.write(build_frame(seg, *addrs, ip_id=i).data, float(i))
    w.close()
    fields = ["tcp.checksum.status", "tcp.seq_raw", "tcp.ack_raw", "tcp.flags", "tcp.len",
              "tcp.options.mss_val", "tcp.options.wscale.shift", "tcp.options.sack_perm",
              "tcp.options.timestamp.tsval", "tcp.options.sack_le", "tcp.options.mptcp.subtype"]
    cmd = ["tshark", "-r", str(path), "-n", "-o", "tcp.check_checksum:TRUE",
           "-o", "tcp.relative_sequence_numbers:FALSE", "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in res.stdout.splitlines()]
    assert len(rows) == len(segs)
    for row, (seg, _) in zip(rows, segs, strict=True):
        assert row["tcp.checksum.status"] == "1"  # good
        assert int(row["tcp.seq_raw"]) == seg.seq and int(row["tcp.flags"], 16) == seg.flags
        assert int(row["tcp.len"]) == len(seg.payload)
        assert row["tcp.options.mss_val"] == (str(seg.mss) if seg.mss is not None else "")
        if seg.wscale is not None:
            assert row["tcp.options.wscale.shift"] == str(seg.wscale)
        assert bool(row["tcp.options.sack_perm"]) == seg.sack_permitted
        assert row["tcp.options.timestamp.tsval"] == str(seg.ts[0])
    assert rows[2]["tcp.options.sack_le"] == "3000,5000"  # both left edges, absolute
    assert rows[1]["tcp.options.mptcp.subtype"] == "0"  # MP_CAPABLE


def test_plain_python_fallback_gives_the_same_bytes() -> None:
    """Without the compiled fast path, packetize uses fastpath.reference and
    emits and parses exactly the same packets."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
sys.modules["fastpath.checksum"] = None   # import fails: not built
sys.modules["fastpath.segment"] = None
from stack.host import packetize
from stack.tcp.segment import TcpSegment, ACK
import fastpath.reference as ref
assert packetize.parse_segment is ref.parse_segment
seg = TcpSegment(1, 2, 3, 4, ACK, 5, ts=(6, 7), sack_blocks=((8, 9),), payload=b"abc" * 999)
f = packetize.build_frame(seg, bytes(4), bytes([1, 2, 3, 4]), wire_mss=1460)
assert packetize.to_tcp_segment(packetize.parse_segment(f.data, False), f.data) == seg
print(f.data.hex(), f.gso_size)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parent)
    assert res.returncode == 0, res.stderr
    seg = TcpSegment(1, 2, 3, 4, ACK, 5, ts=(6, 7), sack_blocks=((8, 9),), payload=b"abc" * 999)
    f = build_frame(seg, bytes(4), bytes([1, 2, 3, 4]), wire_mss=1460)
    assert res.stdout.split() == [f.data.hex(), str(f.gso_size)]
