"""Cross-check `mpstack trace dump` against an independent decoder (tshark).

For every trace in ../shared/pcaps/{external,kernel} and for the project's
own pcaps/mptcp-all-options.pcap, every TCP header field and every MPTCP
option field that mpstack decodes must equal what tshark decodes. tshark's
view is read from its PDML output (one <proto name="mptcp"> element per
option, in wire order), so packets with several MPTCP options line up.

Representation notes (tshark 4.0): keys, tokens, nonces and truncated HMACs
are decimal integers, the 20-byte MP_JOIN HMAC is colon-separated hex,
`flags` fields are hex; MP_PRIO and MP_TCPRST "flags" are the whole third
byte (subtype nibble included); ADD_ADDR v0 shows `ipver` where v1 shows
`echo`; the DSS checksum is not shown, so its presence is checked from the
option length (RFC 8684 §3.3: 4 + DATA_ACK + mapping (+2 with checksum)).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stack.trace.dump import decode_packet
from stack.trace.pcap import open_capture
from stack.wire.mptcp import SUBTYPE_NAMES, parse_mptcp, to_fields
from stack.wire.tcp import flags_str

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "pcaps"
OWN_PCAP = REPO / "pcaps" / "mptcp-all-options.pcap"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")

SUBTYPE_IDS = {name: num for num, name in SUBTYPE_NAMES.items()}
P = "tcp.options.mptcp."


BIG = {"brenns10-thesis_sym_lossy.vpn.mptcp.pcap", "dpi-mptcp_flood-join-syn-flood.pcap"}


def shared_traces() -> list:
    """Every shared trace; the two with 10,000+ packets are marked slow."""
    files = []
    for sub in ("external", "kernel"):
        d = SHARED / sub
        if d.is_dir():
            files += sorted(p for p in d.iterdir() if p.suffix in (".pcap", ".pcapng"))
    return [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in BIG else [])
            for p in files]


def load_generator():
    """tools/make_option_pcap.py as a module (tools/ is not a package)."""
    if "make_option_pcap" in sys.modules:
        return sys.modules["make_option_pcap"]
    spec = importlib.util.spec_from_file_location("make_option_pcap",
                                                  REPO / "tools" / "make_option_pcap.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_option_pcap"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------- tshark's view

def _flatten(tree: dict[str, Any], out: dict[str, list[str]] | None = None
             ) -> dict[str, list[str]]:
    """A tshark JSON subtree as field name -> values (subtrees merged in)."""
    out = {} if out is None else out
    for key, value in tree.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                _flatten(item, out)
            else:
                out.setdefault(key, []).append(item)
    return out


def tshark_packets(path: Path) -> dict[int, dict[str, Any]]:
    """frame number -> {"ip": fields, "tcp": fields, "mptcp": [fields per option],
    "malformed": bool}, from `tshark -T json` restricted to the IP/TCP layers.
    Sequence and MPTCP analysis are off: they add no option field, and cost
    minutes on the 10,000-SYN trace."""
    out = subprocess.run(
        [TSHARK, "-r", str(path), "-o", "tcp.analyze_sequence_numbers:FALSE",
         "-o", "mptcp.analyze_mptcp:FALSE", "-T", "json", "--no-duplicate-keys",
         "-J", "ip ipv6 tcp"], capture_output=True, check=True).stdout
    packets: dict[int, dict[str, Any]] = {}
    for num, pkt in enumerate(json.loads(out), start=1):
        layers = pkt["_source"]["layers"]
        ip = layers.get("ip") or layers.get("ipv6") or {}
        tcp = layers.get("tcp") or {}
        if isinstance(ip, list):  # tunnels: the outer header comes first
            ip = ip[0]
        if isinstance(tcp, list):
            tcp = tcp[0]
        options = tcp.get("tcp.options_tree", {}).get("mptcp", [])
        options = options if isinstance(options, list) else [options]
        packets[num] = {
            "ip": _flatten(ip),
            "tcp": _flatten({k: v for k, v in tcp.items() if k != "tcp.options_tree"}),
            "mptcp": [_flatten(o) for o in options],
            "malformed": "_ws.malformed" in layers,
        }
    return packets


def _one(t: dict[str, list[str]], name: str) -> str | None:
    values = t.get(P + name)
    return values[0] if values else None


def _int(t: dict[str, list[str]], name: str, base: int = 10) -> int | None:
    v = _one(t, name)
    return None if v is None else int(v, base)


def _hex_int(v: str | None) -> int | None:
    return None if v is None else int(v, 16)


def tshark_view(t: dict[str, list[str]], length: int) -> dict[str, Any]:
    """tshark's fields of one option, renamed to mpstack's JSON names."""
    subtype = int(_one(t, "subtype"))
    name = SUBTYPE_NAMES.get(subtype, "UNKNOWN")
    v: dict[str, Any] = {"subtype": name}
    if name == "MP_CAPABLE":
        v.update(version=_int(t, "version"), flags=_int(t, "flags", 16),
                 sender_key=_int(t, "sendkey"), receiver_key=_int(t, "recvkey"),
                 data_len=_int(t, "datalvllen"), checksum=_int(t, "checksum", 16))
    elif name == "MP_JOIN":
        hmac = None
        if _one(t, "sendtrunchmac") is not None:
            hmac = f"{_int(t, 'sendtrunchmac'):016x}"
        elif _one(t, "sendhmac") is not None:
            hmac = _one(t, "sendhmac").replace(":", "")
        backup = _int(t, "backup.flag")
        v.update(backup=None if backup is None else bool(backup), addr_id=_int(t, "addrid"),
                 token=_int(t, "recvtok"), nonce=_int(t, "sendrand"), hmac=hmac)
    elif name == "DSS":
        v.update(flags=_int(t, "flags", 16), data_ack=_int(t, "rawdataack"),
                 dsn=_int(t, "rawdataseqno"), ssn=_int(t, "subflowseqno"),
                 dll=_int(t, "datalvllen"), data_fin=bool(_int(t, "datafin.flag")))
        flags = v["flags"]
        expected = 4 + ((8 if flags & 2 else 4) if flags & 1 else 0)
        if flags & 4:
            expected += (8 if flags & 8 else 4) + 6
        # tshark 4.0 does not show the checksum: it is there iff the option
        # is 2 bytes longer than its flags require.
        v["checksum_present"] = length == expected + 2
    elif name == "ADD_ADDR":
        address = _one(t, "ipv4") or _one(t, "ipv6")
        ipver = _int(t, "ipver")
        echo = _int(t, "echo")
        trunc = _int(t, "addaddrtrunchmac")
        v.update(version=0 if ipver is not None else 1,
                 echo=False if echo is None else bool(echo), addr_id=_int(t, "addrid"),
                 address=address, port=_int(t, "port"),
                 hmac=None if trunc is None else f"{trunc:016x}")
    elif name == "REMOVE_ADDR":
        v["addr_ids"] = [int(x) for x in t.get(P + "addrid", [])]
    elif name == "MP_PRIO":
        v.update(backup=bool(_int(t, "backup.flag")), addr_id=_int(t, "addrid"))
    elif name == "MP_FAIL":
        v["dsn"] = _int(t, "rawdataseqno")
    elif name == "MP_FASTCLOSE":
        v["receiver_key"] = _int(t, "recvkey")
    elif name == "MP_TCPRST":
        bits = [int(_one(t, f"flag_{b}.flag") in ("1", "True")) for b in "UVWT"]
        v.update(flags=bits[0] << 3 | bits[1] << 2 | bits[2] << 1 | bits[3],
                 flags_nibble=_hex_int(_one(t, "flags")) & 0x0F,
                 reason=_hex_int(_one(t, "rst_reason")))
    return v


def hexint(x: str | None) -> int | None:
    return None if x is None else int(x, 16)


def mpstack_view(o: dict[str, Any], length: int) -> dict[str, Any]:
    """mpstack's JSON option in the same shape as :func:`tshark_view`."""
    name = o["subtype"]
    v = dict(o)
    if name == "MP_CAPABLE":
        v["sender_key"] = hexint(o["sender_key"])
        v["receiver_key"] = hexint(o["receiver_key"])
    elif name == "MP_JOIN":
        v["nonce"] = hexint(o["nonce"])
    elif name == "DSS":
        v["checksum_present"] = v.pop("checksum") is not None
    elif name == "MP_FASTCLOSE":
        v["receiver_key"] = hexint(o["receiver_key"])
    elif name == "MP_TCPRST":
        v["flags_nibble"] = o["flags"]
    return v


def compare_option(mine: dict[str, Any], theirs: dict[str, list[str]], where: str) -> None:
    length = int(theirs["tcp.option_len"][0])
    if "error" in mine:  # mpstack could not decode it: same subtype and length
        assert SUBTYPE_IDS[mine["subtype"]] == int(_one(theirs, "subtype")), where
        assert len(mine["raw"]) == 2 * length, where
        return
    tv = tshark_view(theirs, length)
    mv = mpstack_view(mine, length)
    if tv["subtype"] == "MP_CAPABLE" and tv["checksum"] is None and length == 24:
        tv["checksum"] = mv["checksum"]  # shown by tshark only in some versions
    assert mv == tv, where


def compare_trace(path: Path, records: list[dict[str, Any]]) -> int:
    """Compare every record with tshark; returns how many options were compared."""
    packets = tshark_packets(path)
    assert sorted(packets) == [r["n"] for r in records]
    compared = 0
    for rec in records:
        t = packets[rec["n"]]
        where = f"{path.name} frame {rec['n']}"
        if rec.get("proto") != "tcp" or "sport" not in rec:
            # a frame mpstack does not decode as TCP must not be one where
            # tshark finds MPTCP options
            assert not t["mptcp"], f"{where}: tshark decodes MPTCP options, mpstack does not"
            continue
        tcp, ip = t["tcp"], t["ip"]
        fam = "ip" if rec["ip"] == 4 else "ipv6"
        assert (rec["src"], rec["dst"]) == (ip[f"{fam}.src"][0], ip[f"{fam}.dst"][0]), where
        assert (rec["sport"], rec["dport"]) == (int(tcp["tcp.srcport"][0]),
                                                int(tcp["tcp.dstport"][0])), where
        assert rec["seq"] == int(tcp["tcp.seq_raw"][0]), where
        if "tcp.ack_raw" in tcp:
            assert rec["ack"] == int(tcp["tcp.ack_raw"][0]), where
        assert rec["flags"] == flags_str(int(tcp["tcp.flags"][0], 16) & 0x1FF), where
        assert rec["win"] == int(tcp["tcp.window_size_value"][0]), where
        assert rec["len"] == int(tcp["tcp.len"][0]), where
        assert len(rec["mptcp"]) == len(t["mptcp"]), where
        for k, (mine, theirs) in enumerate(zip(rec["mptcp"], t["mptcp"], strict=True)):
            compare_option(mine, theirs, f"{where} option {k}")
            compared += 1
    return compared


def dump_records(path: Path) -> list[dict[str, Any]]:
    with open_capture(path) as cap:
        return [decode_packet(p) for p in cap]


# -------------------------------------------------------------------- tests

@needs_tshark
@pytest.mark.parametrize("path", shared_traces())
def test_shared_trace_options_equal_tshark(path: Path) -> None:
    records = dump_records(path)
    compared = compare_trace(path, records)
    assert compared > 0
    for rec in records:
        assert "internal error" not in rec.get("error", ""), rec


@needs_tshark
def test_malformed_dss_is_an_error_in_both_decoders() -> None:
    path = SHARED / "external" / "tcpdump_mptcp-dss-oobr.pcap"
    if not path.exists():
        pytest.skip("shared traces missing")
    (rec,) = dump_records(path)
    assert rec["mptcp"][0]["subtype"] == "DSS" and "error" in rec["mptcp"][0]
    assert tshark_packets(path)[1]["malformed"]


@needs_tshark
def test_own_pcap_equals_tshark() -> None:
    compared = compare_trace(OWN_PCAP, dump_records(OWN_PCAP))
    assert compared == sum(len(f.options) for f in load_generator().build_frames())


@needs_tshark
def test_tshark_decodes_what_the_generator_meant() -> None:
    """Independent of mpstack's parser: tshark's decode of each option equals
    the JSON view of the option object the generator emitted."""
    frames = load_generator().build_frames()
    packets = tshark_packets(OWN_PCAP)
    assert len(packets) == len(frames)
    for n, frame in enumerate(frames, start=1):
        assert len(packets[n]["mptcp"]) == len(frame.options)
        for opt, theirs in zip(frame.options, packets[n]["mptcp"], strict=True):
            compare_option(to_fields(opt), theirs, f"frame {n}")
            assert int(theirs["tcp.option_len"][0]) == len(opt.emit())


@needs_tshark
def test_own_pcap_has_no_malformed_packets() -> None:
    packets = tshark_packets(OWN_PCAP)
    assert not [n for n, p in packets.items() if p["malformed"]]
    malformed = subprocess.run([TSHARK, "-r", str(OWN_PCAP), "-Y", "_ws.malformed",
                                "-T", "fields", "-e", "frame.number"],
                               capture_output=True, text=True, check=True).stdout
    assert malformed.strip() == ""
    expert = subprocess.run([TSHARK, "-r", str(OWN_PCAP), "-q", "-z", "expert,error"],
                            capture_output=True, text=True, check=True).stdout
    assert "Malformed" not in expert and "Errors" not in expert


def test_own_pcap_is_what_the_generator_writes(tmp_path: Path) -> None:
    gen = load_generator()
    fresh = tmp_path / "fresh.pcap"
    gen.write(fresh)
    assert fresh.read_bytes() == OWN_PCAP.read_bytes(), \
        "pcaps/mptcp-all-options.pcap is stale: run tools/make_option_pcap.py"


def test_own_pcap_covers_every_variant() -> None:
    """The variant list of issue 2 ("Wire codecs"), over IPv4 and over IPv6."""
    seen: dict[int, set[tuple]] = {4: set(), 6: set()}
    for rec in dump_records(OWN_PCAP):
        for o in rec["mptcp"]:
            raw_len = None
            name = o["subtype"]
            if name == "MP_CAPABLE":
                raw_len = 4 + 8 * (o["sender_key"] is not None) + 8 * (
                    o["receiver_key"] is not None) + 2 * (o["data_len"] is not None) + 2 * (
                    o["checksum"] is not None)
                seen[rec["ip"]].add((name, raw_len))
                seen[rec["ip"]].add((name, "flags", o["flags"]))
                seen[rec["ip"]].add((name, "version", o["version"]))
            elif name == "MP_JOIN":
                form = "syn" if o["token"] is not None else (
                    "synack" if o["nonce"] is not None else "ack")
                seen[rec["ip"]].add((name, form, o["backup"]))
            elif name == "DSS":
                f = o["flags"]
                seen[rec["ip"]].add((name, (8 if f & 2 else 4) if f & 1 else 0,
                                     (8 if f & 8 else 4) if f & 4 else 0,
                                     o["checksum"] is not None, o["data_fin"]))
            elif name == "ADD_ADDR":
                seen[rec["ip"]].add((name, ":" in o["address"], o["port"] is not None,
                                     o["echo"], o["hmac"] is not None))
            elif name == "REMOVE_ADDR":
                seen[rec["ip"]].add((name, len(o["addr_ids"])))
            elif name == "MP_PRIO":
                seen[rec["ip"]].add((name, o["backup"]))
            elif name == "MP_TCPRST":
                seen[rec["ip"]].add((name, "reason", o["reason"]))
                for bit in range(4):
                    if o["flags"] >> bit & 1:
                        seen[rec["ip"]].add((name, "flag", bit))
            else:
                seen[rec["ip"]].add((name,))
    want = {("MP_CAPABLE", n) for n in (4, 12, 20, 22, 24)}
    want |= {("MP_CAPABLE", "flags", f) for f in (0x01, 0x81, 0x41, 0xA1, 0xFF)}  # A..H
    want |= {("MP_CAPABLE", "version", v) for v in (1, 2)}
    want |= {("MP_JOIN", form, b) for form in ("syn", "synack") for b in (False, True)}
    want |= {("MP_JOIN", "ack", None)}
    want |= {("DSS", a, d, c, f) for a in (0, 4, 8) for d in (0, 4, 8)
             for c in ((False, True) if d else (False,)) for f in (False, True)}
    want |= {("ADD_ADDR", v6, port, echo, not echo) for v6 in (False, True)
             for port in (False, True) for echo in (False, True)}
    want |= {("REMOVE_ADDR", n) for n in (1, 2, 5)} | {("MP_PRIO", b) for b in (False, True)}
    want |= {("MP_FAIL",), ("MP_FASTCLOSE",)}
    want |= {("MP_TCPRST", "reason", r) for r in range(7)}
    want |= {("MP_TCPRST", "flag", b) for b in range(4)}
    for version in (4, 6):
        assert want <= seen[version], sorted(want - seen[version], key=str)


def test_own_pcap_round_trips_through_the_parser() -> None:
    """Each option's bytes in the pcap parse back to the object that was emitted."""
    for frame in load_generator().build_frames():
        for opt in frame.options:
            assert parse_mptcp(opt.emit()) == opt
