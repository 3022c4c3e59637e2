"""`mpstack trace dump`: the JSON contract, text lines, bad packets, bad files."""

from __future__ import annotations

import io
import json
import random
import struct
import subprocess
import sys
from ipaddress import ip_address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.cli import main
from stack.trace.dump import decode_packet, dump, format_text
from stack.trace.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    CapturedPacket,
    PcapWriter,
    open_capture,
)
from stack.wire.ip import IPv4Header, IPv6Header
from stack.wire.mptcp import AddAddr, Dss, MpCapable, MpJoin, MpPrio, MptcpSuboption, RemoveAddr
from stack.wire.tcp import ACK, PSH, SYN, MptcpOption, TcpHeader, emit_segment, pad_options

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "pcaps"
OWN_PCAP = REPO / "pcaps" / "mptcp-all-options.pcap"

C4, S4 = ip_address("192.0.2.1"), ip_address("198.51.100.2")
C6, S6 = ip_address("2001:db8::1"), ip_address("2001:db8::2")
ETH_V4 = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"


def segment(opts: list[MptcpSuboption], *, flags: int = ACK, payload: bytes = b"",
            src=C4, dst=S4, seq: int = 1000, ack: int = 2000, sport: int = 40000,
            dport: int = 80) -> bytes:
    """A whole IP packet (valid checksums) carrying the given MPTCP options."""
    hdr = TcpHeader(sport, dport, seq, ack if flags & ACK else 0, flags, window=512,
                    options=pad_options([MptcpOption(o) for o in opts]))
    tcp = emit_segment(hdr, payload, src, dst)
    ip = (IPv4Header(src, dst).emit(len(tcp)) if src.version == 4
          else IPv6Header(src, dst).emit(len(tcp)))
    return ip + tcp


def pkt(data: bytes, *, index: int = 1, linktype: int = LINKTYPE_RAW,
        orig_len: int | None = None) -> CapturedPacket:
    orig = len(data) if orig_len is None else orig_len
    return CapturedPacket(index, 1.5, linktype, data, orig, 0, 1_500_000_000)


def write_pcap(path: Path, frames: list[bytes], linktype: int = LINKTYPE_RAW,
               snaplen: int = 65535) -> Path:
    with PcapWriter(path, linktype=linktype, snaplen=snaplen) as w:
        for k, f in enumerate(frames):
            w.write(f, 100.0 + k)
    return path


def run_json(path: Path, capsys) -> tuple[int, list[dict], str]:
    status = main(["trace", "dump", str(path), "--json"])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


# ------------------------------------------------------------ JSON contract

def test_tcp_fields() -> None:
    rec = decode_packet(pkt(segment([Dss(5, 4)], flags=ACK | PSH, payload=b"x" * 33,
                                    seq=0xFFFFFFF0, ack=7)))
    assert rec == {"n": 1, "ts": 1.5, "proto": "tcp", "ip": 4, "src": "192.0.2.1",
                   "dst": "198.51.100.2", "sport": 40000, "dport": 80, "flags": "P.",
                   "seq": 0xFFFFFFF0, "ack": 7, "win": 512, "len": 33,
                   "mptcp": [{"subtype": "DSS", "flags": 0x01, "data_ack": 5, "dsn": None,
                              "ssn": None, "dll": None, "checksum": None,
                              "data_fin": False}]}


def test_ipv6_and_syn_flags() -> None:
    rec = decode_packet(pkt(segment([MpCapable(1, 0x81)], flags=SYN, src=C6, dst=S6)))
    assert (rec["ip"], rec["src"], rec["dst"], rec["flags"], rec["ack"]) == (
        6, "2001:db8::1", "2001:db8::2", "S", 0)
    assert rec["mptcp"] == [{"subtype": "MP_CAPABLE", "version": 1, "flags": 0x81,
                             "sender_key": None, "receiver_key": None, "data_len": None,
                             "checksum": None}]


def test_keys_hmacs_nonces_are_lowercase_hex_and_integers_are_integers() -> None:
    opts = [MpCapable(1, 0x01, 0xABCDEF0123456789, 0x0000000000000001, 1460, 0xBEEF)]
    (mpc,) = decode_packet(pkt(segment(opts)))["mptcp"]
    assert mpc["sender_key"] == "abcdef0123456789"
    assert mpc["receiver_key"] == "0000000000000001"  # leading zeros kept
    assert (mpc["data_len"], mpc["checksum"]) == (1460, 0xBEEF)
    (join,) = decode_packet(pkt(segment([MpJoin("synack", True, 3, None, 0xA, b"\xAB" * 8)],
                                        flags=SYN | ACK)))["mptcp"]
    assert join == {"subtype": "MP_JOIN", "backup": True, "addr_id": 3, "token": None,
                    "nonce": "0000000a", "hmac": "ab" * 8}


def test_zero_and_false_fields_are_present() -> None:
    rec = decode_packet(pkt(segment([MpJoin("syn", False, 0, 0, 0), MpPrio(False)],
                                    flags=SYN)))
    join, prio = rec["mptcp"]
    assert join["backup"] is False and join["addr_id"] == 0 and join["token"] == 0
    assert prio == {"subtype": "MP_PRIO", "backup": False, "addr_id": None}
    (aa,) = decode_packet(pkt(segment([AddAddr(1, False, 0, C4, None, bytes(8))])))["mptcp"]
    assert aa == {"subtype": "ADD_ADDR", "version": 1, "echo": False, "addr_id": 0,
                  "address": "192.0.2.1", "port": None, "hmac": "00" * 8}


def test_dsn_and_data_ack_are_raw_wire_values() -> None:
    dss = Dss(0xFFFFFFFF, 4, 0x1_0000_0002, 8, 9, 100, None, True)
    (o,) = decode_packet(pkt(segment([dss], payload=b"p" * 99)))["mptcp"]
    assert (o["data_ack"], o["dsn"], o["ssn"], o["dll"], o["data_fin"]) == (
        0xFFFFFFFF, 0x1_0000_0002, 9, 100, True)
    assert o["flags"] == 0x1D and o["checksum"] is None


def test_several_options_in_wire_order() -> None:
    rec = decode_packet(pkt(segment([Dss(1, 8), RemoveAddr((4, 5, 6))])))
    assert [o["subtype"] for o in rec["mptcp"]] == ["DSS", "REMOVE_ADDR"]
    assert rec["mptcp"][1]["addr_ids"] == [4, 5, 6]


def test_plain_tcp_has_an_empty_option_list() -> None:
    rec = decode_packet(pkt(segment([])))
    assert rec["mptcp"] == [] and "error" not in rec


def test_every_line_of_own_pcap_is_one_object_with_every_field(capsys) -> None:
    status, recs, err = run_json(OWN_PCAP, capsys)
    assert status == 0 and err == ""
    assert [r["n"] for r in recs] == list(range(1, len(recs) + 1))
    keys = {
        "MP_CAPABLE": {"version", "flags", "sender_key", "receiver_key", "data_len", "checksum"},
        "MP_JOIN": {"backup", "addr_id", "token", "nonce", "hmac"},
        "DSS": {"flags", "data_ack", "dsn", "ssn", "dll", "checksum", "data_fin"},
        "ADD_ADDR": {"version", "echo", "addr_id", "address", "port", "hmac"},
        "REMOVE_ADDR": {"addr_ids"}, "MP_PRIO": {"backup", "addr_id"}, "MP_FAIL": {"dsn"},
        "MP_FASTCLOSE": {"receiver_key"}, "MP_TCPRST": {"flags", "reason"},
    }
    seen = set()
    for r in recs:
        assert {"n", "src", "dst", "sport", "dport", "flags", "seq", "ack", "len",
                "mptcp"} <= set(r)
        assert "error" not in r
        for o in r["mptcp"]:
            assert set(o) == {"subtype"} | keys[o["subtype"]]
            seen.add(o["subtype"])
    assert seen == set(keys)


# ------------------------------------------------------------ damaged packets

def test_snaplen_cut_packet_still_has_its_options(tmp_path: Path, capsys) -> None:
    full = segment([Dss(1, 4, 77, 4, 1, 1000, 0x1234)], payload=b"d" * 1000)
    path = write_pcap(tmp_path / "cut.pcap", [full], snaplen=80)
    status, (rec,), _ = run_json(path, capsys)
    assert status == 0
    assert rec["truncated"] is True and rec["len"] == 1000 and "error" not in rec
    assert rec["mptcp"][0]["dsn"] == 77 and rec["mptcp"][0]["checksum"] == 0x1234


def test_bad_tcp_checksum_still_decodes() -> None:
    raw = bytearray(segment([MpCapable(1, 1, 5)], flags=SYN | ACK))
    raw[36] ^= 0xFF  # TCP checksum (offloaded senders capture garbage here)
    rec = decode_packet(pkt(bytes(raw)))
    assert rec["mptcp"][0]["sender_key"] == "0000000000000005" and "error" not in rec


def test_options_cut_inside_by_the_snap_length() -> None:
    full = segment([Dss(1, 4), MpCapable(1, 1, 5, 6)])  # DSS (8) then MP_CAPABLE (20)
    cut = full[:20 + 20 + 8 + 6]  # the second option is cut
    rec = decode_packet(pkt(cut, orig_len=len(full)))
    assert rec["error"].startswith("truncated")
    assert rec["truncated"] is True and rec["sport"] == 40000 and rec["seq"] == 1000
    assert [o["subtype"] for o in rec["mptcp"]] == ["DSS"]


def test_option_with_bad_length_is_reported_and_earlier_options_kept() -> None:
    raw = bytearray(segment([Dss(1, 4), MpPrio(False), RemoveAddr((1,))]))
    opt = 40 + 8 + 3  # REMOVE_ADDR: make its length byte run past the header
    assert raw[opt] == 30
    raw[opt + 1] = 30
    rec = decode_packet(pkt(bytes(raw)))
    assert [o["subtype"] for o in rec["mptcp"]] == ["DSS", "MP_PRIO"]
    assert rec["options_error"] and rec["error"].startswith("TCP options")


def test_mptcp_option_that_fits_no_variant() -> None:
    raw = bytearray(segment([MpJoin("syn", False, 1, 2, 3)], flags=SYN))
    raw[40 + 1] = 11  # MP_JOIN of 11 bytes: no such variant (the 12th byte becomes a NOP)
    raw[40 + 11] = 1
    rec = decode_packet(pkt(bytes(raw)))
    (o,) = rec["mptcp"]
    assert o["subtype"] == "MP_JOIN" and o["raw"].startswith("1e0b10") and "IntegrityError" in o[
        "error"]
    assert "MP_JOIN" in rec["error"]


@pytest.mark.parametrize("data,kind", [
    (b"\x45" + bytes(10), "truncated"),  # IPv4 header cut
    (b"\x46\x00\x00\x14" + bytes(16), "bad_header"),  # IHL 6 > total length 20
    (b"\x75" + bytes(40), None),  # version 7: not IP at all
    (b"", None),
])
def test_undecodable_ip_gives_an_error_record(data: bytes, kind: str | None) -> None:
    rec = decode_packet(pkt(data))
    assert "error" in rec and rec["n"] == 1
    if kind:
        assert rec["error"].startswith(kind)


def test_ip_length_beyond_the_frame_is_an_error() -> None:
    raw = segment([MpPrio(True)], payload=b"abcd")[:-4]  # frame lost its payload
    rec = decode_packet(pkt(raw))
    assert rec["len"] == 0 and "exceeds packet length" in rec["error"]
    assert rec["mptcp"][0]["backup"] is True


def test_non_tcp_frames_get_a_proto_line() -> None:
    arp = ETH_V4[:12] + b"\x08\x06" + bytes(28)
    udp = IPv4Header(C4, S4, proto=17).emit(12) + bytes(12)
    icmp6 = IPv6Header(C6, S6, next_header=58).emit(8) + bytes(8)
    frag = IPv4Header(C4, S4, flags=0b001).emit(20) + bytes(20)  # first TCP fragment
    assert decode_packet(pkt(arp, linktype=LINKTYPE_ETHERNET)) == {"n": 1, "ts": 1.5,
                                                                   "proto": "arp"}
    assert decode_packet(pkt(udp)) == {"n": 1, "ts": 1.5, "proto": "udp", "ip": 4,
                                       "src": "192.0.2.1", "dst": "198.51.100.2", "len": 12}
    assert decode_packet(pkt(icmp6))["proto"] == "icmpv6"
    rec = decode_packet(pkt(frag))
    assert rec["proto"] == "tcp" and rec["fragment"] is True and "sport" not in rec
    assert decode_packet(pkt(IPv4Header(C4, S4).emit(0), linktype=147))["proto"] == "link-147"


def test_bad_packets_do_not_stop_the_dump(tmp_path: Path, capsys) -> None:
    good = segment([MpPrio(True)])
    path = write_pcap(tmp_path / "mixed.pcap", [good, b"\x45\x00", b"garbage!", good])
    status, recs, err = run_json(path, capsys)
    assert status == 0 and err == ""
    assert [r["n"] for r in recs] == [1, 2, 3, 4]
    assert ["error" in r for r in recs] == [False, True, True, False]


def test_dss_oobr_regression_input(capsys) -> None:
    path = SHARED / "external" / "tcpdump_mptcp-dss-oobr.pcap"
    if not path.exists():
        pytest.skip("shared traces missing")
    status, (rec,), err = run_json(path, capsys)
    assert status == 0 and err == ""
    assert rec["mptcp"] == [{"subtype": "DSS", "raw": "1e0320",
                             "error": "IntegrityError: DSS length 3 < 4"}]
    assert "error" in rec and rec["sport"] == 57370


# ---------------------------------------------------------------- bad files

@pytest.mark.parametrize("content", [None, b"", b"not a capture file at all",
                                     b"\xd4\xc3\xb2\xa1\x02\x00"])
def test_unreadable_file_exits_2_with_one_stderr_line(tmp_path: Path, capsys,
                                                      content: bytes | None) -> None:
    path = tmp_path / "x.pcap"
    if content is not None:
        path.write_bytes(content)
    assert main(["trace", "dump", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and str(path) in err


def test_truncated_last_record(tmp_path: Path, capsys) -> None:
    path = write_pcap(tmp_path / "t.pcap", [segment([MpPrio(True)])] * 3)
    path.write_bytes(path.read_bytes()[:-10])
    status, recs, err = run_json(path, capsys)
    assert status == 1 and len(err.splitlines()) == 1
    assert [r["n"] for r in recs] == [1, 2, 3]
    assert "error" not in recs[1] and "truncated record" in recs[2]["error"]


def test_count_option_and_text_lines(tmp_path: Path) -> None:
    frames = [segment([MpCapable(1, 0x81)], flags=SYN),
              segment([AddAddr(1, True, 2, S6, 443, None)], src=C6, dst=S6)]
    path = write_pcap(tmp_path / "t.pcap", frames)
    out, err = io.StringIO(), io.StringIO()
    assert dump(str(path), out, err) == 0
    lines = out.getvalue().splitlines()
    assert lines == [
        "1 100.000000 IP 192.0.2.1.40000 > 198.51.100.2.80: Flags [S], seq 1000, win 512, "
        "length 0, mptcp MP_CAPABLE version=1 flags=0x81",
        "2 101.000000 IP6 2001:db8::1.40000 > 2001:db8::2.80: Flags [.], seq 1000, ack 2000, "
        "win 512, length 0, mptcp ADD_ADDR version=1 echo=1 addr_id=2 address=2001:db8::2 "
        "port=443",
    ]
    out = io.StringIO()
    assert dump(str(path), out, err, as_json=True, count=1) == 0
    assert len(out.getvalue().splitlines()) == 1
    out = io.StringIO()
    assert dump(str(path), out, err, as_json=True, count=0) == 0
    assert out.getvalue() == ""
    # -c N stops without reading record N+1 (here a damaged one)
    damaged = tmp_path / "d.pcap"
    damaged.write_bytes(path.read_bytes() + b"\x00" * 7)
    out = io.StringIO()
    assert dump(str(damaged), out, err, as_json=True, count=2) == 0
    assert len(out.getvalue().splitlines()) == 2 and err.getvalue() == ""


@pytest.mark.parametrize("as_json", [True, False])
def test_a_decoder_bug_is_one_error_line_and_the_dump_goes_on(tmp_path: Path, monkeypatch,
                                                              as_json: bool) -> None:
    import stack.trace.dump as dump_module

    real = dump_module.decode_packet

    def buggy(p: CapturedPacket) -> dict:
        if p.index == 2:
            raise KeyError("boom")
        return real(p)

    monkeypatch.setattr(dump_module, "decode_packet", buggy)
    path = write_pcap(tmp_path / "t.pcap", [segment([MpPrio(True)])] * 3)
    out, err = io.StringIO(), io.StringIO()
    assert dump(str(path), out, err, as_json=as_json) == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "internal error: KeyError" in lines[1]
    assert "MP_PRIO" in lines[0] and "MP_PRIO" in lines[2]
    if as_json:
        assert json.loads(lines[1])["n"] == 2


def test_reads_standard_input() -> None:
    proc = subprocess.run([sys.executable, "-m", "stack.cli", "trace", "dump", "-", "--json"],
                          input=OWN_PCAP.read_bytes(), capture_output=True)
    assert proc.returncode == 0 and proc.stderr == b""
    with open_capture(OWN_PCAP) as cap:
        frames = sum(1 for _ in cap)
    assert frames > 150 and len(proc.stdout.splitlines()) == frames


def test_shared_traces_dump_without_internal_errors(capsys) -> None:
    files = sorted(p for d in ("external", "kernel") for p in (SHARED / d).glob("*.pcap*"))
    if not files:
        pytest.skip("shared traces missing")
    for path in files:
        status, recs, err = run_json(path, capsys)
        assert status == 0 and err == "", path
        assert all("internal error" not in r.get("error", "") for r in recs), path


def test_command_line_no_traceback_on_malformed_input(tmp_path: Path) -> None:
    """The real process: random bytes after a valid header never crash it."""
    path = tmp_path / "junk.pcap"
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
    recs = b"".join(struct.pack("<IIII", 0, 0, n, n) + bytes((0x45 + k) % 256 for k in range(n))
                    for n in (0, 1, 20, 40, 60))
    path.write_bytes(hdr + recs + b"\x01\x02")
    proc = subprocess.run([sys.executable, "-m", "stack.cli", "trace", "dump", str(path),
                           "--json"], capture_output=True, text=True)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1  # the last record is cut
    assert all(isinstance(json.loads(line), dict) for line in proc.stdout.splitlines())
    assert len(proc.stdout.splitlines()) == 6


def _adversarial(tmp_path: Path, case: str) -> tuple[str, int, int | None]:
    """(path, expected exit status, expected stdout lines or None for any)."""
    pcap_hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
    path = tmp_path / f"{case}.cap"
    if case == "missing":
        return str(path), 2, 0
    if case == "directory":
        path.mkdir()
        return str(path), 2, 0
    if case == "dev-null":
        return "/dev/null", 2, 0
    if case == "empty":
        path.write_bytes(b"")
        return str(path), 2, 0
    if case == "header-cut":
        path.write_bytes(pcap_hdr[:13])
        return str(path), 2, 0
    if case == "huge-record":  # a 4 GB record declared: refused, not allocated
        path.write_bytes(pcap_hdr + struct.pack("<IIII", 0, 0, 0xFFFFFFF0, 0xFFFFFFF0) + b"x" * 64)
        return str(path), 1, 1
    if case == "random-after-header":
        rng = random.Random(7)
        path.write_bytes(pcap_hdr + bytes(rng.getrandbits(8) for _ in range(50_000)))
        return str(path), 1, None
    if case == "pcapng-unknown-linktype":
        def block(btype: int, body: bytes) -> bytes:
            body += b"\0" * (-len(body) % 4)
            return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack(
                "<I", 12 + len(body))
        epb = block(6, struct.pack("<5I", 0, 0, 0, 60, 60) + bytes(range(60)))
        path.write_bytes(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
                         + block(1, struct.pack("<HHI", 4242, 0, 0)) + epb + epb)
        return str(path), 0, 2
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "directory", "dev-null", "empty", "header-cut",
                                  "huge-record", "random-after-header",
                                  "pcapng-unknown-linktype"])
def test_adversarial_files_give_clean_lines(tmp_path: Path, case: str) -> None:
    """The real command on hostile files: JSON lines only, at most one stderr
    line, never a traceback; exit 2 when the file cannot be read at all."""
    path, status, n_lines = _adversarial(tmp_path, case)
    proc = subprocess.run([sys.executable, "-m", "stack.cli", "trace", "dump", path, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr and proc.returncode == status, proc.stderr
    assert len(proc.stderr.splitlines()) == (0 if status == 0 else 1)
    lines = proc.stdout.splitlines()
    if n_lines is not None:
        assert len(lines) == n_lines
    recs = [json.loads(line) for line in lines]
    assert all(isinstance(r["n"], int) and "internal error" not in r.get("error", "")
               for r in recs)
    if case == "pcapng-unknown-linktype":
        assert [r["proto"] for r in recs] == ["link-4242", "link-4242"]
    if status == 1:
        assert "error" in recs[-1]


# ------------------------------------------------------------------ fuzzing

def _own_packets() -> list[bytes]:
    from stack.trace.pcap import open_capture
    with open_capture(OWN_PCAP) as cap:
        return [p.data for p in cap]


OWN_PACKETS = _own_packets()


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=120),
       linktype=st.sampled_from([0, 1, 101, 108, 113, 228, 229, 276, 147]))
def test_random_frames_decode_to_a_record(data: bytes, linktype: int) -> None:
    rec = decode_packet(pkt(data, linktype=linktype))
    assert rec["n"] == 1 and "internal error" not in rec.get("error", "")
    json.dumps(rec)
    assert format_text(rec).startswith("1 ")  # the text form of any record, too


@settings(max_examples=600, deadline=None)
@given(k=st.integers(0, len(OWN_PACKETS) - 1), pos=st.integers(0, 200),
       value=st.integers(0, 255), cut=st.integers(0, 200))
def test_damaged_mptcp_segments_decode_to_a_record(k: int, pos: int, value: int,
                                                   cut: int) -> None:
    """Flip one byte (often an option length or flag) and cut the packet."""
    raw = bytearray(OWN_PACKETS[k])
    raw[pos % len(raw)] = value
    data = bytes(raw[:max(cut, 1)] if cut < len(raw) else raw)
    rec = decode_packet(pkt(data, orig_len=len(raw)))
    assert "internal error" not in rec.get("error", "")
    json.dumps(rec)
    assert format_text(rec).startswith("1 ")
