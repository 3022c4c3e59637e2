"""fastpath.segment.parse_segment against its plain-Python twin and the wire.

Packets are built with struct (IPv4/IPv6, extension headers, random option
lists, random payloads); the compiled parser and fastpath.reference must give
the same fields, or both the same ParseError kind, on every input.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from fastpath.segment import ParseError, Segment, parse_segment
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath import checksum as ck
from fastpath import reference as ref

PCAPS = Path(__file__).resolve().parents[2] / "shared" / "pcaps"
SYN, ACK = 0x02, 0x10

# --- packet builders (the wire, by hand) ----------------------------------


def tcp_header(
    sport=1234, dport=80, seq=1, ack=0, flags=ACK, window=65535, urgent=0, options=b""
) -> bytes:
    assert len(options) % 4 == 0
    doff = (20 + len(options)) // 4
    return (
        struct.pack(
            "!HHIIBBHHH",
            sport,
            dport,
            seq,
            ack,
            (doff << 4) | (flags >> 8),
            flags & 0xFF,
            window,
            0,
            urgent,
        )
        + options
    )


def with_tcp_checksum(tcp: bytes, payload: bytes, pseudo: int) -> bytes:
    seg = tcp + payload
    csum = ck.tcp_checksum(pseudo, seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def ipv4(
    tcp: bytes,
    payload: bytes = b"",
    src=b"\x0a\x00\x00\x01",
    dst=b"\x0a\x00\x00\x02",
    ttl=64,
    ip_options=b"",
) -> bytes:
    ihl = 20 + len(ip_options)
    total = ihl + len(tcp) + len(payload)
    hdr = (
        struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, total, 7, 0x4000, ttl, 6, 0, src, dst)
        + ip_options
    )
    hdr = hdr[:10] + struct.pack("!H", ck.internet_checksum(hdr)) + hdr[12:]
    pseudo = ck.pseudo_sum_v4(src, dst, 6, len(tcp) + len(payload))
    return hdr + with_tcp_checksum(tcp, payload, pseudo)


def ipv6(
    tcp: bytes,
    payload: bytes = b"",
    src=b"\xfd" + b"\x00" * 14 + b"\x01",
    dst=b"\xfd" + b"\x00" * 14 + b"\x02",
    hlim=63,
    ext: list[tuple[int, bytes]] = (),
) -> bytes:
    """ext: (header type, body) pairs; bodies are padded to 8-byte multiples."""
    chain = b""
    types = [t for t, _ in ext] + [6]
    for (t, body), nxt in zip(ext, types[1:], strict=True):
        if t == 44:
            chain += struct.pack("!BBHI", nxt, 0, 0, 0x1234)
        elif t == 51:  # AH (RFC 4302 section 2.2): length in 4-octet units minus 2
            body = body + b"\x00" * (-(len(body) + 2) % 4)
            body += b"\x00" * max(0, 6 - len(body))
            chain += struct.pack("!BB", nxt, (len(body) + 2) // 4 - 2) + body
        else:
            body = body + b"\x00" * (-(len(body) + 2) % 8)
            chain += struct.pack("!BB", nxt, (len(body) + 2) // 8 - 1) + body
    upper = len(tcp) + len(payload)
    hdr = struct.pack("!IHBB16s16s", 0x60000000, len(chain) + upper, types[0], hlim, src, dst)
    pseudo = ck.pseudo_sum_v6(src, dst, 6, upper)
    return hdr + chain + with_tcp_checksum(tcp, payload, pseudo)


def same(fast: Segment, slow: ref.Segment) -> None:
    for name in ref.SEGMENT_FIELDS:
        a, b = getattr(fast, name), getattr(slow, name)
        if name == "payload":
            a, b = bytes(a), bytes(b)
        assert a == b, name
        assert type(a) is type(b) or {type(a), type(b)} <= {int, bool}, name


def both(packet, verify: bool = True) -> Segment | str:
    """Parse with both; return the fast Segment or the common error kind."""
    try:
        fast = parse_segment(packet, verify)
    except ParseError as e:
        with pytest.raises(ref.ParseError) as info:
            ref.parse_segment(packet, verify)
        assert info.value.kind == e.kind
        return e.kind
    same(fast, ref.parse_segment(packet, verify))
    return fast


# --- wire examples --------------------------------------------------------


def test_syn_with_every_option() -> None:
    opts = (
        b"\x02\x04\x05\xb4"
        b"\x04\x02"
        b"\x08\x0a\x00\x00\x00\x07\x00\x00\x00\x00"
        b"\x01"
        b"\x03\x03\x07"
        b"\x1e\x04\x01\x81"
    )
    pkt = ipv4(tcp_header(seq=0xFFFFFFF0, flags=SYN, options=opts))
    s = both(pkt)
    assert (s.version, s.src, s.dst, s.ttl) == (4, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 64)
    assert (s.sport, s.dport, s.seq, s.flags) == (1234, 80, 0xFFFFFFF0, SYN)
    assert (s.mss, s.wscale, s.sack_permitted) == (1460, 7, True)
    assert (s.ts_present, s.ts_val, s.ts_ecr) == (True, 7, 0)
    assert s.mptcp_spans == ((20 + 20 + 20, 4),)
    assert pkt[60:64] == b"\x1e\x04\x01\x81"
    assert s.ip_checksum_ok and s.tcp_checksum_ok and s.options_error is None
    assert s.payload_len == 0 and bytes(s.payload) == b"" and not s.truncated


def test_segment_is_read_only_and_pins_its_buffer() -> None:
    pkt = bytearray(ipv4(tcp_header(), b"payload"))
    s = parse_segment(pkt)
    with pytest.raises(AttributeError):
        s.seq = 5  # type: ignore[misc]
    with pytest.raises(BufferError):  # payload is a view: the buffer cannot move
        pkt.extend(b"more")
    assert bytes(s.payload) == b"payload"
    del s
    pkt.extend(b"more")


def test_data_with_sack_and_payload_view() -> None:
    opts = b"\x01\x01\x05\x12" + struct.pack("!IIII", 100, 200, 300, 400)
    pkt = bytearray(ipv4(tcp_header(options=opts), b"hello, world!"))
    s = both(pkt)
    assert s.sack_blocks == ((100, 200), (300, 400))
    assert s.mss == -1 and s.wscale == -1 and not s.ts_present
    assert isinstance(s.payload, memoryview) and bytes(s.payload) == b"hello, world!"
    assert (s.payload_offset, s.payload_len) == (20 + 20 + 20, 13)


def test_bad_checksums_are_reported_not_raised() -> None:
    pkt = bytearray(ipv4(tcp_header(), b"abc"))
    pkt[-1] ^= 0xFF
    assert both(bytes(pkt)).tcp_checksum_ok is False
    assert both(bytes(pkt), verify=False).tcp_checksum_ok is None
    pkt[8] ^= 1  # TTL: IPv4 header checksum now wrong too
    s = both(bytes(pkt))
    assert s.ip_checksum_ok is False and s.tcp_checksum_ok is False


def test_bad_option_length_keeps_header_and_earlier_options() -> None:
    opts = b"\x02\x04\x05\xb4" + b"\x1e\x09\x02\x00" + b"\x01" * 4
    s = both(ipv4(tcp_header(flags=SYN, options=opts)))
    assert s.mss == 1460 and s.mptcp_spans == ()
    assert s.options_error == "bad option length" and s.tcp_checksum_ok


def test_truncated_capture_still_parses_options() -> None:
    opts = b"\x01\x01\x08\x0a" + struct.pack("!II", 5, 6) + b"\x1e\x08\x20\x01" + b"\x00" * 4
    pkt = ipv4(tcp_header(options=opts), b"x" * 1000)
    s = both(pkt[:100])
    assert s.truncated and s.tcp_checksum_ok is None
    assert s.ip_total_len == len(pkt) and s.payload_len == 100 - s.payload_offset
    assert (s.ts_val, s.ts_ecr) == (5, 6) and s.mptcp_spans == ((20 + 20 + 12, 8),)
    assert both(pkt[:45]) == "truncated"  # options cut


def test_ipv6_extension_headers_skipped() -> None:
    ext = [(0, b"\x01\x04\x00\x00\x00\x00"), (60, b"\x01\x0c" + b"\x00" * 12), (44, b"")]
    pkt = ipv6(tcp_header(options=b"\x1e\x04\x01\x81"), b"data", ext=ext)
    s = both(pkt)
    assert s.version == 6 and s.ip_header_len == 40 + 8 + 16 + 8
    assert s.ttl == 63 and s.ip_checksum_ok and s.tcp_checksum_ok
    assert s.mptcp_spans == ((s.ip_header_len + 20, 4),) and bytes(s.payload) == b"data"


def test_unparsable_inputs() -> None:
    assert both(b"") == "truncated"
    assert both(b"\x45" + b"\x00" * 10) == "truncated"
    assert both(b"\x55" + b"\x00" * 40) == "bad_version"
    udp = bytearray(ipv4(tcp_header()))
    udp[9] = 17
    assert both(bytes(udp)) == "not_tcp"
    frag = bytearray(ipv4(tcp_header()))
    frag[6:8] = b"\x00\x10"
    assert both(bytes(frag)) == "not_tcp"
    bad_doff = bytearray(ipv4(tcp_header()))
    bad_doff[32] = 0x40
    assert both(bytes(bad_doff)) == "bad_header"
    with pytest.raises(ParseError) as info:
        parse_segment("not bytes")  # type: ignore[arg-type]
    assert info.value.kind == "bad_header" and isinstance(info.value, ValueError)
    with pytest.raises(ParseError):
        parse_segment(memoryview(b"\x45" * 80)[::2])  # not contiguous


# --- random packets: fast and reference agree ----------------------------

u32 = st.integers(0, 2**32 - 1)


def test_ipv6_ah_and_rfc6564_headers_skipped() -> None:
    # AH counts 4-octet units minus 2 (12-byte ICV: length 4 = 24 bytes);
    # mobility (135) uses the RFC 6564 8-octet format.
    ext = [(51, b"\x00\x00" + b"\x11" * 4 + b"\x22" * 4 + b"\x33" * 12), (135, b"\x00" * 6)]
    pkt = ipv6(tcp_header(options=b"\x1e\x04\x01\x81"), b"xyz", ext=ext)
    assert pkt[40 + 1] == 4
    s = both(pkt)
    assert s.ip_header_len == 40 + 24 + 8 and s.tcp_checksum_ok
    assert s.mptcp_spans == ((s.ip_header_len + 20, 4),) and bytes(s.payload) == b"xyz"
    assert both(pkt[:40 + 20]) == "truncated"  # cut inside the AH
    esp = bytearray(pkt)
    esp[6] = 50  # ESP cannot be skipped: the rest is encrypted
    assert both(bytes(esp)) == "not_tcp"


@pytest.mark.parametrize("kind,segments_left", [("rh0", 1), ("rh0", 0), ("rh2", 1),
                                                 ("srh", 2), ("srh", 0)])
def test_routing_header_final_destination(kind: str, segments_left: int) -> None:
    """RFC 8200 section 8.1: while segments are left, the TCP pseudo-header
    holds the final destination (the last address of a type 0/2 routing
    header, Segment List[0] of an SRH, RFC 8754); scapy computes the checksum."""
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrRouting, IPv6ExtHdrSegmentRouting

    final, hop = "fd00::99", "fd00::55"
    if kind == "srh":
        rh = IPv6ExtHdrSegmentRouting(addresses=[final, hop, "fd00::2"],
                                      segleft=segments_left, lastentry=2)
    else:
        rh = IPv6ExtHdrRouting(addresses=[hop] * (kind == "rh0") + [final],
                               segleft=segments_left, type=0 if kind == "rh0" else 2)
    pkt = bytes(IPv6(src="fd00::1", dst="fd00::2", hlim=63) / rh
                / TCP(sport=1234, dport=80, flags="A", options=[("MSS", 1400)]) / b"abc")
    s = both(pkt)
    assert s.tcp_checksum_ok and s.mss == 1400 and bytes(s.payload) == b"abc"
    assert s.dst == bytes.fromhex("fd000000000000000000000000000002")  # the header field
    wrong = bytearray(pkt)  # the other destination would not verify
    wrong[40 + 3] = 0 if segments_left else 1
    assert both(bytes(wrong)).tcp_checksum_ok is False


@st.composite
def option_bytes(draw: st.DrawFn) -> bytes:
    """A random (mostly valid) option list, padded to a multiple of 4, <= 40."""
    out = b""
    for _ in range(draw(st.integers(0, 8))):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            o = b"\x01"
        elif choice == 1:
            o = struct.pack("!BBH", 2, 4, draw(st.integers(0, 0xFFFF)))
        elif choice == 2:
            o = bytes([3, 3, draw(st.integers(0, 255))])
        elif choice == 3:
            o = b"\x04\x02"
        elif choice == 4:
            n = draw(st.integers(1, 4))
            o = bytes([5, 2 + 8 * n]) + b"".join(
                struct.pack("!II", draw(u32), draw(u32)) for _ in range(n)
            )
        elif choice == 5:
            o = struct.pack("!BBII", 8, 10, draw(u32), draw(u32))
        elif choice == 6:
            body = draw(st.binary(min_size=1, max_size=26))
            o = bytes([30, 2 + len(body)]) + body
        elif choice == 7:  # unknown kind
            body = draw(st.binary(max_size=6))
            o = bytes([draw(st.integers(9, 29)), 2 + len(body)]) + body
        elif choice == 8:  # corrupt: random bytes
            o = draw(st.binary(min_size=1, max_size=6))
        else:
            o = b"\x00"
        if len(out) + len(o) > 40:
            break
        out += o
    return out + b"\x00" * (-len(out) % 4)


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    tcp = tcp_header(
        sport=draw(st.integers(0, 0xFFFF)),
        dport=draw(st.integers(0, 0xFFFF)),
        seq=draw(u32),
        ack=draw(u32),
        flags=draw(st.integers(0, 0x1FF)),
        window=draw(st.integers(0, 0xFFFF)),
        urgent=draw(st.integers(0, 0xFFFF)),
        options=draw(option_bytes()),
    )
    payload = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        ip_opts = draw(st.sampled_from([b"", b"\x01\x01\x01\x00", b"\x94\x04\x00\x00"]))
        return ipv4(
            tcp,
            payload,
            src=draw(st.binary(min_size=4, max_size=4)),
            dst=draw(st.binary(min_size=4, max_size=4)),
            ip_options=ip_opts,
        )
    ext = draw(
        st.lists(
            st.tuples(st.sampled_from([0, 43, 60, 44, 51, 135, 139, 140]), st.binary(max_size=20)),
            max_size=3,
        )
    )
    # routing headers with no segments left: the pseudo-header keeps the IPv6
    # destination (test_routing_header_final_destination covers the others)
    ext = [(t, b[:1] + b"\x00" + b[2:] if t == 43 else b) for t, b in ext]
    return ipv6(
        tcp,
        payload,
        src=draw(st.binary(min_size=16, max_size=16)),
        dst=draw(st.binary(min_size=16, max_size=16)),
        ext=ext,
    )


@settings(max_examples=400)
@given(packets(), st.booleans())
def test_random_valid_packets_agree(pkt: bytes, verify: bool) -> None:
    s = both(pkt, verify)
    assert isinstance(s, Segment)
    assert s.ip_checksum_ok and s.tcp_checksum_ok is (True if verify else None)
    assert s.payload_offset + s.payload_len == len(pkt)


@settings(max_examples=400)
@given(packets(), st.data())
def test_truncations_and_corruptions_agree(pkt: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(pkt)))
    both(pkt[:cut])
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(pkt) - 1), st.integers(1, 255)), min_size=1, max_size=4
        )
    )
    bad = bytearray(pkt)
    for at, x in flips:
        bad[at] ^= x
    both(bytes(bad))
    both(memoryview(bad)[: data.draw(st.integers(0, len(bad)))])
    both(bytes(bad) + data.draw(st.binary(max_size=8)))  # trailing link padding


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_random_garbage_agrees(junk: bytes) -> None:
    both(junk)
    both(b"\x45" + junk)
    both(b"\x60" + junk)


# --- captured traffic ------------------------------------------------------


def test_kernel_trace_packets() -> None:
    path = PCAPS / "kernel" / "kernel-2subflows-csum.pcap"
    if not path.exists():
        pytest.skip("kernel traces not available")
    data = path.read_bytes()
    off, seen = 24, 0
    while off + 16 <= len(data):
        caplen = struct.unpack("<I", data[off + 8 : off + 12])[0]
        ip = data[off + 16 + 20 : off + 16 + caplen]  # SLL2 header is 20 bytes
        off += 16 + caplen
        s = both(ip)
        if isinstance(s, str):
            continue
        seen += 1
        assert s.ip_checksum_ok and s.options_error is None and s.ts_present
        for start, length in s.mptcp_spans:
            assert ip[start] == 30 and ip[start + 1] == length
    assert seen > 20


def test_every_trace_packet_agrees_and_never_crashes() -> None:
    """All packets of ../shared/pcaps (including tcpdump_mptcp-dss-oobr.pcap)."""
    if not PCAPS.exists():
        pytest.skip("traces not available")
    trace = pytest.importorskip("stack.trace.pcap")
    parsed = spans = 0
    for path in sorted(PCAPS.glob("*/*.pcap*")):
        with trace.open_capture(path) as cap:
            for pkt in cap:
                ip = trace.ip_payload(pkt)
                if ip is None:
                    continue
                s = both(ip)
                if isinstance(s, Segment):
                    parsed += 1
                    spans += len(s.mptcp_spans)
                    for start, length in s.mptcp_spans:
                        assert ip[start] == 30 and ip[start + 1] == length
    assert parsed > 20_000 and spans > 10_000


def test_benchmark_capture_parses(tmp_path: Path) -> None:
    """tools/make_bench_pcap.py writes what it promises (checked by the fast path)."""
    import importlib.util

    tools = Path(__file__).resolve().parents[1] / "tools"
    specs = {}
    for name in ("make_bench_pcap", "bench_parse"):
        spec = importlib.util.spec_from_file_location(name, tools / f"{name}.py")
        assert spec is not None and spec.loader is not None
        specs[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(specs[name])
    out = tmp_path / "bench.pcap"
    assert specs["make_bench_pcap"].main([str(out), "--packets", "600", "--payload", "101"]) == 0
    frames = specs["bench_parse"].load_frames(out)
    assert len(frames) == 600
    segs = [parse_segment(f) for f in frames]
    assert all(s.ip_checksum_ok and s.tcp_checksum_ok and s.ts_present for s in segs)
    assert all(s.options_error is None for s in segs)
    syns = [s for s in segs if s.flags & SYN]
    assert len(syns) == 16 and all(s.mss == 1460 and s.wscale == 7 for s in syns)
    assert sum(1 for s in segs if s.mptcp_spans) > 200
    assert {s.payload_len for s in segs} == {0, 101}
