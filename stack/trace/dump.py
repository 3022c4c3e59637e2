"""`mpstack trace dump FILE [--json]`: one line per captured packet.

Each frame is decoded into one record (a dict) by :func:`decode_packet`:

TCP segments (IPv4 or IPv6)::

    n, ts, proto="tcp", ip (4|6), src, dst, sport, dport, flags, seq, ack,
    win, len, mptcp [, truncated] [, options_error] [, error]

- ``n`` is the frame number from 1 (tshark's ``frame.number``), ``ts`` the
  capture time stamp (seconds since the epoch).
- ``flags`` is the tcpdump flag string (``"S"``, ``"S."``, ``"P."``, ``"F."``,
  ``"R"``, ``"none"``; "." is ACK), ``seq``/``ack`` the raw 32-bit numbers,
  ``win`` the raw (unscaled) window.
- ``len`` is the TCP payload length the IP header declares (what was sent,
  also when the snap length cut the capture; ``truncated`` is then true).
- ``mptcp`` lists every kind-30 option in wire order as
  :func:`stack.wire.mptcp.to_fields` gives it (``subtype`` name and every
  field of that variant, ``null`` where the variant has no such field). An
  option that does not parse appears as ``{"subtype", "raw", "error"}``.
- Checksums are not verified: offloaded senders capture bad ones, and the
  options of such segments are still decoded.

Other frames get a line too, so every line of ``--json`` output is one JSON
object and ``n`` counts every frame:

- other IP protocols: ``n, ts, proto`` (``"udp"``, ``"icmp"``,
  ``"icmpv6"``, ... or ``"ip-proto-N"``), ``ip, src, dst, len`` (the IP
  payload length) and ``fragment: true`` for a fragment;
- non-IP frames: ``n, ts, proto`` (``"arp"``, ``"lldp"``, ...,
  ``"ethertype-0xNNNN"`` or ``"link-N"`` for an unsupported link type).

A frame that cannot be decoded has an ``error`` string (whatever could be
decoded before the fault is kept, e.g. the TCP header when the options are
cut by the snap length or have bad lengths). A damaged last record of the
file ends the dump with an ``error`` line for that frame. Exit status: 0
(also when some packets had errors), 1 when the file ended in a damaged
record, 2 when the file could not be read at all (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from collections.abc import Iterator
from ipaddress import ip_address
from typing import Any, TextIO

from fastpath.segment import ParseError, parse_segment

from stack.trace.link import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ETHERTYPE_NAMES,
    SUPPORTED_LINKTYPES,
    link_layer,
)
from stack.trace.pcap import LINKTYPE_ETHERNET, CapturedPacket, CaptureError, open_capture
from stack.wire.errors import WireError
from stack.wire.ip import IPV6_EXT_HEADERS, IPv4Header, parse_ip
from stack.wire.mptcp import SUBTYPE_NAMES, parse_mptcp, to_fields
from stack.wire.tcp import ACK, SYN, flags_str

IP_PROTO_NAMES = {1: "icmp", 2: "igmp", 4: "ipip", 6: "tcp", 17: "udp", 41: "ipv6",
                  47: "gre", 50: "esp", 51: "ah", 58: "icmpv6", 89: "ospf", 132: "sctp"}
_TCP_FIXED = struct.Struct("!HHIIBBHHH")
KIND_MPTCP = 30


def _addr(raw: bytes) -> str:
    return str(ip_address(raw))


def _mptcp_entry(raw: bytes, syn: bool, ack: bool) -> dict[str, Any]:
    """One kind-30 option as its JSON fields, or an error entry."""
    try:
        return to_fields(parse_mptcp(raw, syn=syn, ack=ack))
    except WireError as exc:
        name = SUBTYPE_NAMES.get(raw[2] >> 4, "UNKNOWN") if len(raw) > 2 else "UNKNOWN"
        return {"subtype": name, "raw": raw.hex(), "error": f"{type(exc).__name__}: {exc}"}


def _add_mptcp(rec: dict[str, Any], ip: bytes, spans: Iterator[tuple[int, int]] | tuple,
               flags: int) -> None:
    opts = [_mptcp_entry(ip[off:off + n], bool(flags & SYN), bool(flags & ACK))
            for off, n in spans]
    rec["mptcp"] = opts
    bad = [o for o in opts if "error" in o]
    if bad:
        rec.setdefault("error", f"MPTCP {bad[0]['subtype']} option: {bad[0]['error']}")


def _lengths(rec: dict[str, Any], pkt: CapturedPacket, link_len: int, version: int,
             ip_total: int, payload_offset: int) -> None:
    """``len``, ``truncated`` and the short-frame error of a TCP record.

    The snap length may have cut the capture (``len`` still counts the
    payload that was sent), but a frame can also be shorter on the wire than
    its IP header says (crafted or damaged): then only what was sent counts.
    """
    on_wire = pkt.orig_len - link_len
    rec["len"] = max(0, min(ip_total, on_wire) - payload_offset)
    if pkt.truncated:
        rec["truncated"] = True
    if on_wire < ip_total:
        rec["error"] = (f"IPv{version} total length {ip_total} exceeds "
                        f"packet length ({on_wire} bytes)")


def _decode_tcp(rec: dict[str, Any], ip: bytes, pkt: CapturedPacket, link_len: int) -> None:
    seg = parse_segment(ip, verify_checksum=False)
    rec.update(ip=seg.version, src=_addr(seg.src), dst=_addr(seg.dst),
               sport=seg.sport, dport=seg.dport, flags=flags_str(seg.flags),
               seq=seg.seq, ack=seg.ack, win=seg.window)
    _lengths(rec, pkt, link_len, seg.version, seg.ip_total_len, seg.payload_offset)
    if seg.options_error is not None:
        rec["options_error"] = seg.options_error
        rec["error"] = f"TCP options: {seg.options_error}"
    _add_mptcp(rec, ip, seg.mptcp_spans, seg.flags)


def _decode_cut_tcp(rec: dict[str, Any], ip: bytes, pkt: CapturedPacket,
                    link_len: int) -> None:
    """Salvage a TCP segment whose options the capture cut: the fixed header
    and every option that was captured whole (RFC 9293 §3.1-3.2). ``rec``
    already holds the error."""
    hdr, tcp = parse_ip(ip, verify=False, allow_truncated=True)
    if hdr.proto != 6 or len(tcp) < 20:
        return
    sport, dport, seq, ack, off, fl, win, _csum, _urg = _TCP_FIXED.unpack_from(tcp, 0)
    flags = ((off & 1) << 8) | fl
    doff = (off >> 4) * 4
    base = hdr.header_len  # offset of the TCP header in the packet
    ip_total = hdr.total_length if isinstance(hdr, IPv4Header) else 40 + hdr.payload_length
    error = rec["error"]
    rec.update(ip=hdr.src.version, src=str(hdr.src), dst=str(hdr.dst), sport=sport,
               dport=dport, flags=flags_str(flags), seq=seq, ack=ack, win=win)
    _lengths(rec, pkt, link_len, hdr.src.version, ip_total, base + doff)
    rec["error"] = error  # the cut options are the first fault
    spans = []
    i, end = 20, min(doff, len(tcp))
    while i < end:
        kind = tcp[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end or tcp[i + 1] < 2 or i + tcp[i + 1] > end:
            break  # this option is the one the capture cut
        if kind == KIND_MPTCP:
            spans.append((base + i, tcp[i + 1]))
        i += tcp[i + 1]
    _add_mptcp(rec, ip, spans, flags)


def _decode_other_ip(rec: dict[str, Any], ip: bytes) -> None:
    """A non-TCP IP packet (or a TCP fragment): protocol, addresses, length."""
    hdr, _payload = parse_ip(ip, verify=False, allow_truncated=True)
    rec["proto"] = IP_PROTO_NAMES.get(hdr.proto, f"ip-proto-{hdr.proto}")
    rec.update(ip=hdr.src.version, src=str(hdr.src), dst=str(hdr.dst), len=hdr.payload_len)
    if isinstance(hdr, IPv4Header):
        fragment = hdr.more_fragments or hdr.frag_offset != 0
    else:
        fragment = 44 in _ext_chain_types(hdr.next_header, hdr.ext_headers)
    if fragment:
        rec["fragment"] = True


def _ext_chain_types(nh: int, chain: bytes) -> list[int]:
    """The extension header types of an IPv6 chain (RFC 8200 §4)."""
    seen, off = [], 0
    while nh in IPV6_EXT_HEADERS and off + 2 <= len(chain):
        seen.append(nh)
        step = 8 if nh == 44 else ((chain[off + 1] + 2) * 4 if nh == 51
                                   else (chain[off + 1] + 1) * 8)
        nh, off = chain[off], off + step
    return seen


def _ts(pkt: CapturedPacket) -> float:
    """Time stamp rounded to the file's resolution (no float noise digits)."""
    ns = pkt.timestamp_ns
    return round(ns / 1e9, 6 if ns % 1000 == 0 else 9)


def _describe_non_ip(rec: dict[str, Any], pkt: CapturedPacket, ethertype: int | None,
                     offset: int) -> None:
    if ethertype is not None:
        if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):  # an empty IP packet
            rec.update(proto="ip", error="link layer: no IP header after it")
        else:
            rec["proto"] = ETHERTYPE_NAMES.get(ethertype, f"ethertype-0x{ethertype:04x}")
    elif pkt.linktype not in SUPPORTED_LINKTYPES:
        rec["proto"] = f"link-{pkt.linktype}"
    elif offset >= len(pkt.data):
        rec.update(proto="unknown", error="link layer: frame shorter than its header")
    elif pkt.linktype == LINKTYPE_ETHERNET:
        rec["proto"] = "llc"  # IEEE 802.3 length field instead of a type
    else:
        rec.update(proto="unknown", error="neither IPv4 nor IPv6")


def decode_packet(pkt: CapturedPacket) -> dict[str, Any]:
    """The dump record of one captured frame (see the module docstring)."""
    rec: dict[str, Any] = {"n": pkt.index, "ts": _ts(pkt)}
    ethertype, offset = link_layer(pkt.linktype, pkt.data)
    if ethertype not in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) or offset >= len(pkt.data):
        _describe_non_ip(rec, pkt, ethertype, offset)
        return rec
    ip = pkt.data[offset:] if offset else pkt.data
    rec["proto"] = "tcp"
    try:
        _decode_tcp(rec, ip, pkt, offset)
    except ParseError as exc:
        if exc.kind == "not_tcp":
            try:
                _decode_other_ip(rec, ip)
            except WireError as exc2:
                rec["error"] = f"IP: {exc2}"
            return rec
        rec["error"] = f"{exc.kind}: {exc}"
        if exc.kind == "truncated":
            try:
                _decode_cut_tcp(rec, ip, pkt, offset)
            except WireError:
                pass
    return rec


# ----------------------------------------------------------------- text form

def _fmt_value(key: str, v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if key == "flags" and isinstance(v, int):
        return f"0x{v:02x}"
    if key == "checksum" and isinstance(v, int):
        return f"0x{v:04x}"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def format_option(opt: dict[str, Any]) -> str:
    """``SUBTYPE key=value ...`` (fields the variant lacks are left out)."""
    parts = [opt["subtype"]]
    for key, value in opt.items():
        if key == "subtype" or value is None:
            continue
        if key == "error":
            parts.append(f"[{value}]")
        else:
            parts.append(f"{key}={_fmt_value(key, value)}")
    return " ".join(parts)


def format_text(rec: dict[str, Any]) -> str:
    """tcpdump-like one-line form of a dump record."""
    head = f"{rec['n']} {rec['ts']:.6f}"
    proto = rec.get("proto")
    if "src" not in rec:
        line = f"{head} {proto.upper() if proto else '?'}"
    elif proto == "tcp" and "sport" in rec:
        fam = "IP6" if rec["ip"] == 6 else "IP"
        line = (f"{head} {fam} {rec['src']}.{rec['sport']} > {rec['dst']}.{rec['dport']}: "
                f"Flags [{rec['flags']}], seq {rec['seq']}")
        if "." in rec["flags"]:
            line += f", ack {rec['ack']}"
        line += f", win {rec['win']}, length {rec['len']}"
        if rec.get("truncated"):
            line += " [|tcp]"
        if rec.get("mptcp"):
            line += ", mptcp " + "; ".join(format_option(o) for o in rec["mptcp"])
    else:
        fam = "IP6" if rec.get("ip") == 6 else "IP"
        line = f"{head} {fam} {rec['src']} > {rec['dst']}: {proto}, length {rec.get('len')}"
        if rec.get("fragment"):
            line += " (fragment)"
    if "error" in rec:
        line += f" !! error: {rec['error']}"
    return line


# ---------------------------------------------------------------- the command

def dump(path: str, out: TextIO, err: TextIO, *, as_json: bool = False,
         count: int | None = None) -> int:
    """Write one line per packet of the capture at ``path`` ("-": standard
    input); return the exit status."""
    emit = ((lambda r: json.dumps(r, separators=(", ", ": "))) if as_json else format_text)
    try:
        cap = open_capture(sys.stdin.buffer if path == "-" else path)
    except CaptureError as exc:
        err.write(f"mpstack trace dump: {path}: {exc}\n")
        return 2
    status = 0
    with cap:
        try:
            for pkt in cap if count is None or count > 0 else ():
                try:
                    line = emit(decode_packet(pkt))
                except Exception as exc:  # noqa: BLE001 - a decoder bug: report, go on
                    line = emit({"n": pkt.index, "ts": _ts(pkt),
                                 "error": f"internal error: {type(exc).__name__}: {exc}"})
                    status = 1
                out.write(line + "\n")
                if count is not None and pkt.index >= count:
                    break  # without reading the next record
        except CaptureError as exc:
            index = exc.index if exc.index is not None else 0
            out.write(emit({"n": index, "ts": 0.0, "error": f"capture: {exc}"}) + "\n")
            err.write(f"mpstack trace dump: {path}: {exc}\n")
            return 1
        except BrokenPipeError:
            raise
        except OSError as exc:  # the file became unreadable mid-way
            err.write(f"mpstack trace dump: {path}: read error: {exc}\n")
            return 2
    return status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a pcap or pcapng capture ('-' reads standard input)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line instead of text")
    parser.add_argument("-c", "--count", type=int, default=None, metavar="N",
                        help="stop after N packets")


def run(args: argparse.Namespace) -> int:
    return dump(args.file, sys.stdout, sys.stderr, as_json=args.json, count=args.count)
