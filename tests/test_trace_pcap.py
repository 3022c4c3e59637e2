"""Capture files: the streaming pcap/pcapng reader, the writers, link layers."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.trace.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    CapturedPacket,
    CaptureError,
    PcapWriter,
    ip_payload,
    open_capture,
    open_pcapng_writer,
)
from stack.wire.errors import WireError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "pcaps"
TSHARK = shutil.which("tshark")

# A minimal IPv4/TCP packet and an IPv6 one (the reader does not look inside).
IP4 = bytes.fromhex("450000280001000040060000c0000201c6336401") + bytes(20)
IP6 = bytes.fromhex("6000000000140640") + bytes(15) + b"\x01" + bytes(15) + b"\x02" + bytes(20)


def shared_traces() -> list:
    """Every shared trace; the one with 10,000 packets is marked slow."""
    files = []
    for sub in ("external", "kernel"):
        d = SHARED / sub
        if d.is_dir():
            files += sorted(p for p in d.iterdir() if p.suffix in (".pcap", ".pcapng"))
    return [pytest.param(p, id=p.name,
                         marks=[pytest.mark.slow] if "flood" in p.name else [])
            for p in files]


def read_all(source) -> list[CapturedPacket]:
    with open_capture(source) as cap:
        return list(cap)


def pcap_bytes(records: list[tuple[int, int, bytes, int]], *, endian: str = "<",
               magic: int = 0xA1B2C3D4, linktype: int = LINKTYPE_RAW,
               snaplen: int = 65535) -> bytes:
    """A classic pcap file built by hand: records are (sec, frac, data, orig)."""
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
    for sec, frac, data, orig in records:
        out += struct.pack(endian + "IIII", sec, frac, len(data), orig) + data
    return out


def ng_block(btype: int, body: bytes, endian: str = "<") -> bytes:
    body += b"\0" * ((-len(body)) % 4)
    total = len(body) + 12
    return struct.pack(endian + "II", btype, total) + body + struct.pack(endian + "I", total)


def ng_shb(endian: str = "<") -> bytes:
    return ng_block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)


def ng_idb(linktype: int, snaplen: int = 0, tsresol: int | None = None,
           tsoffset: int | None = None, endian: str = "<") -> bytes:
    body = struct.pack(endian + "HHI", linktype, 0, snaplen)
    if tsresol is not None:
        body += struct.pack(endian + "HHB3x", 9, 1, tsresol)
    if tsoffset is not None:
        body += struct.pack(endian + "HHq", 14, 8, tsoffset)
    body += struct.pack(endian + "HH", 0, 0)
    return ng_block(1, body, endian)


def ng_epb(if_id: int, ticks: int, data: bytes, orig: int | None = None,
           endian: str = "<") -> bytes:
    orig = len(data) if orig is None else orig
    body = struct.pack(endian + "5I", if_id, ticks >> 32, ticks & 0xFFFFFFFF, len(data), orig)
    return ng_block(6, body + data, endian)


# ---------------------------------------------------------------- real traces

@pytest.mark.parametrize("path", shared_traces())
def test_shared_trace_matches_tshark(path: Path) -> None:
    """Every frame tshark sees, with the same time stamp and lengths."""
    packets = read_all(path)
    assert packets, path
    assert [p.index for p in packets] == list(range(1, len(packets) + 1))
    if TSHARK is None:
        pytest.skip("tshark not installed: only the reader was exercised")
    out = subprocess.run(
        [TSHARK, "-r", str(path), "-o", "tcp.analyze_sequence_numbers:FALSE",
         "-o", "mptcp.analyze_mptcp:FALSE", "-T", "fields", "-e", "frame.number",
         "-e", "frame.time_epoch", "-e", "frame.cap_len", "-e", "frame.len"],
        capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == len(packets)
    for line, pkt in zip(out, packets, strict=True):
        number, epoch, cap_len, length = line.split("\t")
        sec, _, frac = epoch.partition(".")
        assert int(number) == pkt.index
        assert int(sec) * 10**9 + int(frac.ljust(9, "0")) == pkt.timestamp_ns
        assert int(cap_len) == len(pkt.data)
        assert int(length) == pkt.orig_len


@pytest.mark.parametrize("path", shared_traces())
def test_shared_trace_frames_carry_ip(path: Path) -> None:
    """Every frame of the MPTCP traces is IPv4/IPv6, except the two ARP frames
    at the start of the fast-close trace."""
    non_ip = [p.index for p in read_all(path) if ip_payload(p) is None]
    assert non_ip == ([1, 2] if path.name == "tcpdump_mptcp-fclose.pcap" else [])
    for pkt in read_all(path)[:50]:
        ip = ip_payload(pkt)
        if ip is not None:
            assert ip[0] >> 4 in (4, 6)


# -------------------------------------------------------------- classic pcap

@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("magic,scale", [(0xA1B2C3D4, 1000), (0xA1B23C4D, 1)])
def test_pcap_byte_orders_and_resolutions(endian: str, magic: int, scale: int) -> None:
    frac = 123456 if scale == 1000 else 123456789
    raw = pcap_bytes([(1700000000, frac, IP4, len(IP4)), (1700000001, 0, IP6[:30], len(IP6))],
                     endian=endian, magic=magic)
    with open_capture(io.BytesIO(raw)) as cap:
        assert cap.format == "pcap" and cap.linktype == LINKTYPE_RAW and cap.snaplen == 65535
        first, second = list(cap)
    assert first.timestamp_ns == 1700000000 * 10**9 + frac * scale
    assert first.timestamp == pytest.approx(1700000000.123456, abs=1e-6)
    assert (first.data, first.orig_len, first.truncated) == (IP4, len(IP4), False)
    assert (second.index, second.data, second.orig_len) == (2, IP6[:30], len(IP6))
    assert second.truncated


def test_pcap_modified_magic_has_longer_record_headers() -> None:
    hdr = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
    rec = struct.pack("<IIII", 5, 6, len(IP4), len(IP4)) + struct.pack("<IHBx", 3, 0x800, 0)
    (pkt,) = read_all(io.BytesIO(hdr + rec + IP4))
    assert pkt.data == IP4 and pkt.timestamp_ns == 5 * 10**9 + 6000


def test_pcap_linktype_field_fcs_bits_are_masked() -> None:
    raw = pcap_bytes([(0, 0, IP4, len(IP4))], linktype=(1 << 28) | (1 << 26) | LINKTYPE_RAW)
    (pkt,) = read_all(io.BytesIO(raw))
    assert pkt.linktype == LINKTYPE_RAW


@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_writer_round_trip(tmp_path: Path, nanosecond: bool) -> None:
    path = tmp_path / "rt.pcap"
    with PcapWriter(path, linktype=LINKTYPE_RAW, snaplen=40, nanosecond=nanosecond) as w:
        w.write(IP4, 1700000000.25)
        w.write(IP6, timestamp_ns=1700000000_123456789)
        w.write(b"", 3.0)
    pkts = read_all(path)
    assert [p.index for p in pkts] == [1, 2, 3]
    assert (pkts[0].data, pkts[0].orig_len) == (IP4, 40)
    assert pkts[0].timestamp_ns == 1700000000_250000000
    assert (pkts[1].data, pkts[1].orig_len) == (IP6[:40], len(IP6))  # cut at snaplen
    assert pkts[1].timestamp_ns == (1700000000_123456789 if nanosecond
                                    else 1700000000_123456000)
    assert (pkts[2].data, pkts[2].orig_len, pkts[2].timestamp) == (b"", 0, 3.0)


def test_pcap_writer_to_open_file_leaves_it_open() -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf, linktype=LINKTYPE_ETHERNET)
    w.write(b"\xff" * 14, 1.0)
    w.close()
    assert not buf.closed
    buf.seek(0)
    (pkt,) = read_all(buf)
    assert pkt.linktype == LINKTYPE_ETHERNET and pkt.data == b"\xff" * 14


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
@pytest.mark.parametrize("fmt", ["pcap", "pcap-ns", "pcapng"])
def test_written_files_read_back_in_tshark(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"w.{fmt}"
    if fmt == "pcapng":
        with open_pcapng_writer(path) as w:
            w.add_interface(LINKTYPE_RAW)
            w.write(IP4, 10.5)
            w.write(IP6, 11.000000007)
    else:
        with PcapWriter(path, nanosecond=fmt == "pcap-ns") as w:
            w.write(IP4, 10.5)
            w.write(IP6, 11.000000007)
    out = subprocess.run([TSHARK, "-r", str(path), "-T", "fields", "-e", "frame.len",
                          "-e", "ip.src", "-e", "ipv6.dst", "-e", "frame.time_epoch"],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].split("\t")[:3] == [str(len(IP4)), "192.0.2.1", ""]
    assert out[0].split("\t")[3].startswith("10.500000")
    assert out[1].split("\t")[:3] == [str(len(IP6)), "", "::2"]
    assert out[1].split("\t")[3].startswith("11.0000000" if fmt != "pcap" else "11.000000")


# ----------------------------------------------------------------------- pcapng

@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_several_interfaces(endian: str) -> None:
    eth = b"\x02" * 12 + b"\x08\x00" + IP4
    sll2 = b"\x86\xdd" + bytes(18) + IP6
    raw = (ng_shb(endian)
           + ng_idb(LINKTYPE_ETHERNET, 0, endian=endian)  # default: microseconds
           + ng_idb(LINKTYPE_LINUX_SLL2, 64, tsresol=9, endian=endian)
           + ng_idb(LINKTYPE_RAW, 0, tsresol=0x80 | 10, tsoffset=100, endian=endian)
           + ng_block(4, b"\0\0\0\0", endian)  # name resolution block: skipped
           + ng_epb(0, 1_500_000, eth, endian=endian)
           + ng_epb(1, 2_000_000_001, sll2[:64], len(sll2), endian=endian)
           + ng_block(5, bytes(12), endian)  # interface statistics: skipped
           + ng_epb(2, 3 * 1024 + 512, IP4, endian=endian))
    with open_capture(io.BytesIO(raw)) as cap:
        pkts = list(cap)
        assert cap.format == "pcapng" and cap.linktype == LINKTYPE_ETHERNET
    assert [(p.index, p.interface, p.linktype) for p in pkts] == [
        (1, 0, LINKTYPE_ETHERNET), (2, 1, LINKTYPE_LINUX_SLL2), (3, 2, LINKTYPE_RAW)]
    assert pkts[0].timestamp_ns == 1_500_000_000
    assert pkts[1].timestamp_ns == 2_000_000_001
    assert pkts[1].orig_len == len(sll2) and pkts[1].truncated
    assert pkts[2].timestamp_ns == 103_500_000_000  # 3.5 s in 1/1024 ticks + offset
    assert ip_payload(pkts[0]) == IP4
    assert ip_payload(pkts[1]) == IP6[:44]
    assert ip_payload(pkts[2]) == IP4


def test_pcapng_simple_and_obsolete_packet_blocks_and_new_section() -> None:
    spb = ng_block(3, struct.pack("<I", len(IP4)) + IP4)
    opb = ng_block(2, struct.pack("<HH4I", 0, 0, 0, 7, len(IP6), len(IP6)) + IP6)
    # A second section, big-endian, redefines interface 0 as Ethernet.
    eth = b"\x02" * 12 + b"\x86\xdd" + IP6
    raw = (ng_shb() + ng_idb(LINKTYPE_RAW, 30) + spb + opb
           + ng_shb(">") + ng_idb(LINKTYPE_ETHERNET, 0, endian=">") + ng_epb(0, 9, eth, endian=">"))
    pkts = read_all(io.BytesIO(raw))
    assert [(p.index, p.linktype) for p in pkts] == [
        (1, LINKTYPE_RAW), (2, LINKTYPE_RAW), (3, LINKTYPE_ETHERNET)]
    assert (pkts[0].data, pkts[0].orig_len) == (IP4[:30], len(IP4))  # SPB cut at snaplen
    assert (pkts[1].data, pkts[1].timestamp_ns) == (IP6, 7000)
    assert ip_payload(pkts[2]) == IP6 and pkts[2].timestamp_ns == 9000


def test_pcapng_writer_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "w.pcapng"
    with open_pcapng_writer(path) as w:
        a = w.add_interface(LINKTYPE_RAW)
        b = w.add_interface(LINKTYPE_LINUX_SLL, snaplen=20, nanosecond=False)
        w.write(IP4, 1.5, a)
        w.write(bytes(16) + IP4, 2.25, b)
    pkts = read_all(path)
    assert [(p.interface, p.linktype, p.timestamp_ns) for p in pkts] == [
        (0, LINKTYPE_RAW, 1_500_000_000), (1, LINKTYPE_LINUX_SLL, 2_250_000_000)]
    assert pkts[0].data == IP4
    assert len(pkts[1].data) == 20 and pkts[1].orig_len == 16 + len(IP4)


# ----------------------------------------------------------------- link layers

def _null_header(family: int, order: str) -> bytes:
    return struct.pack(order + "I", family)


@pytest.mark.parametrize("linktype,frame,expected", [
    (LINKTYPE_ETHERNET, b"\x01" * 12 + b"\x08\x00" + IP4, IP4),
    (LINKTYPE_ETHERNET, b"\x01" * 12 + b"\x86\xdd" + IP6, IP6),
    (LINKTYPE_ETHERNET, b"\x01" * 12 + b"\x81\x00\x00\x05\x08\x00" + IP4, IP4),  # 802.1Q
    (LINKTYPE_ETHERNET, b"\x01" * 12 + b"\x88\xa8\x00\x05\x81\x00\x00\x07\x86\xdd" + IP6,
     IP6),  # QinQ
    (LINKTYPE_ETHERNET, b"\x01" * 12 + b"\x08\x06" + bytes(28), None),  # ARP
    (LINKTYPE_ETHERNET, b"\x01" * 12 + b"\x00\x40" + bytes(64), None),  # 802.3 length
    (LINKTYPE_ETHERNET, b"\x01" * 12 + b"\x81\x00\x00", None),  # VLAN tag cut short
    (LINKTYPE_ETHERNET, b"\x01" * 10, None),
    (LINKTYPE_RAW, IP4, IP4),
    (LINKTYPE_RAW, IP6, IP6),
    (LINKTYPE_RAW, b"\x10" + IP4[1:], None),  # neither version 4 nor 6
    (12, IP4, IP4),
    (14, IP6, IP6),
    (LINKTYPE_IPV4, IP4, IP4),
    (LINKTYPE_IPV6, IP6, IP6),
    (LINKTYPE_LINUX_SLL, b"\x00\x00\x03\x04\x00\x06" + bytes(8) + b"\x08\x00" + IP4, IP4),
    (LINKTYPE_LINUX_SLL, b"\x00\x00\x03\x04\x00\x06" + bytes(8) + b"\x86\xdd" + IP6, IP6),
    (LINKTYPE_LINUX_SLL, b"\x00\x00\x03\x04\x00\x06" + bytes(8) + b"\x08\x06" + bytes(28), None),
    (LINKTYPE_LINUX_SLL2, b"\x08\x00" + bytes(18) + IP4, IP4),
    (LINKTYPE_LINUX_SLL2, b"\x86\xdd\x00\x00\x00\x00\x00\x01\x03\x04\x00\x06" + bytes(8) + IP6,
     IP6),
    (LINKTYPE_LINUX_SLL2, b"\x86\xdd" + bytes(10), None),
    (LINKTYPE_NULL, _null_header(2, "<") + IP4, IP4),
    (LINKTYPE_NULL, _null_header(2, ">") + IP4, IP4),
    (LINKTYPE_NULL, _null_header(24, "<") + IP6, IP6),
    (LINKTYPE_NULL, _null_header(28, ">") + IP6, IP6),
    (LINKTYPE_NULL, _null_header(30, "<") + IP6, IP6),
    (LINKTYPE_NULL, _null_header(10, "<") + IP6, IP6),
    (LINKTYPE_LOOP, _null_header(2, ">") + IP4, IP4),
    (LINKTYPE_LOOP, _null_header(24, ">") + IP6, IP6),
    (LINKTYPE_NULL, b"\x02\x00", None),
    (147, IP4, None),  # a user link type: not decoded
])
def test_ip_payload_per_link_type(linktype: int, frame: bytes, expected: bytes | None) -> None:
    raw = pcap_bytes([(0, 0, frame, len(frame))], linktype=linktype)
    (pkt,) = read_all(io.BytesIO(raw))
    assert pkt.linktype == linktype
    assert ip_payload(pkt) == expected


# -------------------------------------------------------------- broken files

VALID = pcap_bytes([(1, 0, IP4, len(IP4)), (2, 0, IP6, len(IP6))])
VALID_NG = ng_shb() + ng_idb(LINKTYPE_RAW) + ng_epb(0, 1, IP4) + ng_epb(0, 2, IP6)


@pytest.mark.parametrize("raw,what", [
    (b"", "empty"),
    (b"\xd4\xc3", "shorter than a file header"),
    (b"GIF89a" + bytes(40), "magic"),
    (VALID[:10], "truncated file header"),
    (VALID_NG[:6], "truncated section header"),
    (VALID_NG[:8] + b"\x11\x22\x33\x44" + VALID_NG[12:], "byte-order magic"),
])
def test_unreadable_files_fail_at_open(raw: bytes, what: str) -> None:
    with pytest.raises(CaptureError, match=what) as info:
        open_capture(io.BytesIO(raw))
    assert isinstance(info.value, WireError) and info.value.index is None


def test_missing_file_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot open"):
        open_capture(tmp_path / "nope.pcap")


@pytest.mark.parametrize("raw,cut", [
    (VALID, len(VALID) - 5),  # second record's data cut
    (VALID, 24 + 16 + len(IP4) + 7),  # second record's header cut
    (VALID_NG, len(VALID_NG) - 5),  # second EPB's trailer cut
    (VALID_NG, len(VALID_NG) - ng_epb(0, 2, IP6).__len__() + 6),  # second EPB's header cut
])
def test_truncated_last_record_reported_after_good_ones(raw: bytes, cut: int) -> None:
    got = []
    with pytest.raises(CaptureError, match="truncated") as info:
        with open_capture(io.BytesIO(raw[:cut])) as cap:
            for pkt in cap:
                got.append(pkt.data)
    assert got == [IP4]
    assert info.value.index == 2


def test_impossible_lengths_are_errors() -> None:
    rec = struct.pack("<IIII", 0, 0, 0x7FFFFFFF, 0x7FFFFFFF)
    with pytest.raises(CaptureError, match="impossible captured length"):
        read_all(io.BytesIO(VALID[:24] + rec))
    bad_block = struct.pack("<II", 6, 13)  # block length not a multiple of 4
    with pytest.raises(CaptureError, match="bad block length"):
        read_all(io.BytesIO(ng_shb() + bad_block + bytes(8)))
    epb_wrong_if = ng_shb() + ng_idb(LINKTYPE_RAW) + ng_epb(3, 0, IP4)
    with pytest.raises(CaptureError, match="undeclared interface 3"):
        read_all(io.BytesIO(epb_wrong_if))
    caplen_past_block = ng_shb() + ng_idb(LINKTYPE_RAW) + ng_block(
        6, struct.pack("<5I", 0, 0, 0, 500, 500) + IP4)
    with pytest.raises(CaptureError, match="exceeds its block"):
        read_all(io.BytesIO(caplen_past_block))


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from([b"", VALID[:24], VALID_NG[:28], VALID_NG[:48]]),
       tail=st.binary(max_size=300))
def test_random_bytes_give_typed_errors_only(prefix: bytes, tail: bytes) -> None:
    try:
        for pkt in read_all(io.BytesIO(prefix + tail)):
            ip_payload(pkt)
    except CaptureError:
        pass


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(VALID_NG)), flip=st.integers(0, 255),
       pos=st.integers(min_value=0, max_value=len(VALID_NG) - 1), ng=st.booleans())
def test_cut_or_corrupted_valid_files_give_typed_errors_only(cut: int, flip: int, pos: int,
                                                             ng: bool) -> None:
    raw = bytearray(VALID_NG if ng else VALID)
    pos %= len(raw)
    raw[pos] ^= flip
    try:
        for pkt in read_all(io.BytesIO(bytes(raw[:cut]))):
            ip_payload(pkt)
    except CaptureError:
        pass
