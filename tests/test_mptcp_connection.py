"""The MPTCP connection on the wire (RFC 8684 §3.1, §3.3; what a Linux peer
insists on, linux-mptcp-v1.md §2.1-§2.4), and the TCP engine hooks it uses.

Frames are captured at the hosts' output with a netsim tap and decoded with
the wire codecs, so each assertion reads like a line of a trace."""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass
from ipaddress import ip_address

from mptcp_topology import Exchange, payload, two_hosts

from stack.host.packetize import gso_split, parse_segment, to_tcp_segment
from stack.mptcp.connection import MptcpConfig
from stack.mptcp.crypto import key_idsn_v1, key_token_v1
from stack.mptcp.handshake import parse_options
from stack.tcp import TcpConfig, TcpConnection
from stack.tcp.segment import ACK, FIN, RST, SYN
from stack.wire.mptcp import AddAddr, Dss, MpCapable, MpFastclose, MpJoin, MpTcpRst


@dataclass
class Pkt:
    t: float
    host: str
    src: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    plen: int
    opts: list


def capture(topo) -> list[Pkt]:
    out: list[Pkt] = []

    def tap(now, host, iface, frame) -> None:
        datas = gso_split(frame) if frame.gso_size else [frame.data]
        for d in datas:
            p = parse_segment(d, False)
            seg = to_tcp_segment(p, d)
            out.append(Pkt(now, host.name, str(ip_address(p.src)), seg.sport, seg.dport, seg.seq,
                           seg.ack, seg.flags, len(seg.payload), parse_options(seg.mptcp)))

    topo.net.taps.append(tap)
    return out


def test_handshake_and_data_as_the_kernel_expects() -> None:
    t = two_hosts(1)
    wire = capture(t)
    x = Exchange(t, payload(100_000), payload(50_000, 3))
    assert x.run(30)
    c_syn = next(p for p in wire if p.flags == SYN)
    s_synack = next(p for p in wire if p.flags == SYN | ACK)
    assert [o.emit() for o in c_syn.opts] == [bytes.fromhex("1e040101")]  # MPC v1, H
    (mpc,) = s_synack.opts
    assert isinstance(mpc, MpCapable) and mpc.length == 12 and mpc.flags == 0x01
    server_key = mpc.sender_key
    assert key_token_v1(server_key) == x.peer.token
    # third ACK: MP_CAPABLE 20 bytes, both keys, client's first
    third = next(p for p in wire if p.host == "c" and not p.flags & SYN)
    (mpc3,) = third.opts
    assert mpc3.length == 20 and mpc3.receiver_key == server_key
    client_key = mpc3.sender_key
    assert key_token_v1(client_key) == x.conn.token
    # first client data: MP_CAPABLE with data (22 bytes) or DSS once it saw
    # the server's DATA_ACK; the MPC mapping is DSN = IDSN+1, SSN 1
    first_data = next(p for p in wire if p.host == "c" and p.plen)
    o = first_data.opts[0]
    if isinstance(o, MpCapable):
        assert o.length == 22 and o.data_len >= first_data.plen
    else:
        assert o.dsn == (key_idsn_v1(client_key) + 1) % 2**64 and o.ssn == 1
    # every server segment after the SYN/ACK carries a DSS DATA_ACK (a kernel
    # client falls back otherwise), except ADD_ADDR pure ACKs (none here)
    srv = [p for p in wire if p.host == "s" and not p.flags & SYN]
    assert srv and all(isinstance(p.opts[0], Dss) and p.opts[0].data_ack_len for p in srv)
    # the server's first DSN is its IDSN + 1
    s_first = next(p for p in srv if p.plen)
    assert s_first.opts[0].dsn == (key_idsn_v1(server_key) + 1) % 2**64


def test_no_segment_straddles_two_mappings() -> None:
    t = two_hosts(1, loss=0.02, seed=11)
    wire = capture(t)
    x = Exchange(t, payload(400_000, 12))
    assert x.run(60)
    iss = next(p for p in wire if p.flags == SYN).seq
    checked = 0
    for p in wire:
        if p.host != "c" or not p.plen:
            continue
        o = p.opts[0]
        rel = (p.seq - iss) & 0xFFFFFFFF
        if isinstance(o, MpCapable):
            start, length = 1, o.data_len
        else:
            assert o.dsn_len == 8, "the kernel sends 64-bit DSNs; so do we"
            start, length = o.ssn, o.dll - (1 if o.data_fin else 0)
        assert start <= rel and rel + p.plen <= start + length
        checked += 1
    assert checked > 250


def test_data_fin_on_every_subflow_then_tcp_fin() -> None:
    t = two_hosts(2)
    wire = capture(t)
    x = Exchange(t, payload(200_000), payload(1000, 2))
    assert x.run(30)
    fins = [p for p in wire if p.host == "c" and p.opts and isinstance(p.opts[0], Dss)
            and p.opts[0].data_fin]
    assert {(p.src, p.sport) for p in fins} == {
        (p.src, p.sport) for p in wire if p.host == "c" and p.flags == SYN}
    bare = [p for p in fins if not p.plen]
    # a DATA_FIN without data: SSN 0, DLL 1 (§3.3.3, options.c)
    assert all(p.opts[0].ssn == 0 and p.opts[0].dll == 1 for p in bare)
    fin_dsn = fins[0].opts[0].dsn + fins[0].opts[0].dll - 1
    acked = [p for p in wire if p.host == "s" and p.opts and isinstance(p.opts[0], Dss)
             and p.opts[0].data_ack_len and p.opts[0].data_ack == (fin_dsn + 1) % 2**64]
    tcp_fins = [p for p in wire if p.flags & FIN]
    assert acked and tcp_fins
    # TCP FIN only once both DATA_FINs are acknowledged (reference §2.4)
    assert min(p.t for p in tcp_fins) >= min(p.t for p in acked)
    assert {p.sport for p in tcp_fins if p.host == "c"} == {
        p.sport for p in wire if p.host == "c" and p.flags == SYN}


def test_checksums_negotiated_and_carried() -> None:
    t = two_hosts(1, c_cfg=MptcpConfig(checksum=True))
    wire = capture(t)
    x = Exchange(t, payload(50_000), payload(20_000, 2))
    assert x.run(30)
    syn = next(p for p in wire if p.flags == SYN)
    assert syn.opts[0].flags == 0x81  # A|H
    maps = [p.opts[0] for p in wire if p.opts and isinstance(p.opts[0], Dss)
            and p.opts[0].dsn_len]
    assert maps and all(m.checksum is not None for m in maps)


def test_close_with_unread_data_sends_fastclose() -> None:
    t = two_hosts(1)
    wire = capture(t)
    net = t.net
    lst = t.s.listen(None, 7000)
    c = t.c.connect("10.1.0.2", 7000, net.now)
    c.send(b"hello", net.now)
    t.c.wake(c, net.now)
    net.run(until=0.1)
    srv = lst.accept()
    assert srv is not None and srv.recv(100) == b"hello"
    srv.send(b"unread" * 100, net.now)  # the client app never reads this
    t.s.wake(srv, net.now)
    net.run(until=0.2)
    assert c.readable == 600
    c.close(net.now)
    t.c.wake(c, net.now)
    net.run(until=0.3)
    rsts = [p for p in wire if p.host == "c" and p.flags & RST]
    assert len(rsts) == 1
    fc = [o for o in rsts[0].opts if isinstance(o, MpFastclose)]
    assert fc and fc[0].receiver_key == srv.km.key  # the peer's key (§3.5)
    assert any(isinstance(o, MpTcpRst) for o in rsts[0].opts)
    assert srv.error == errno.ECONNRESET
    assert srv.mptcp_info()["stats"]["fastclose_rx"] == 1


def test_add_addr_on_its_own_pure_ack_and_echoed() -> None:
    t = two_hosts(2)
    wire = capture(t)
    x = Exchange(t, payload(100_000), b"")
    assert x.run(30)
    adds = [p for p in wire if p.opts and isinstance(p.opts[0], AddAddr)]
    ann = [p for p in adds if p.host == "s"]
    echo = [p for p in adds if p.host == "c"]
    assert ann and echo
    assert all(len(p.opts) == 1 and p.plen == 0 for p in adds)
    a = ann[0].opts[0]
    assert not a.echo and a.addr_id == 1 and str(a.address) == "10.2.0.2" and a.hmac
    assert echo[0].opts[0].echo and echo[0].opts[0].hmac is None
    joins = [p for p in wire if p.flags == SYN and p.opts and isinstance(p.opts[0], MpJoin)]
    assert len(joins) == 2
    assert all(p.opts[0].token == x.peer.token for p in joins)
    # no data on a join subflow before its fourth ACK
    for j in joins:
        sub = [p for p in wire if p.sport == j.sport and p.host == "c"]
        first_data = next((i for i, p in enumerate(sub) if p.plen), None)
        fourth = next(i for i, p in enumerate(wire) if p.host == "s" and p.dport == j.sport
                      and not p.flags & SYN)
        if first_data is not None:
            assert wire.index(sub[first_data]) > fourth


# --------------------------------------------------------------- engine hooks


class _Limit:
    """An upper that cuts segments every 1000 bytes, advertises 5000."""

    def on_options(self, conn, seg) -> None:
        pass

    def write_options(self, conn, seg):
        return ()

    def segment_limit(self, conn, seq) -> int:
        rel = (seq - conn.iss - 1) & 0xFFFFFFFF
        return 1000 - rel % 1000

    def receive_window(self, conn) -> int:
        return 5000


def _pair(upper):
    cfg = TcpConfig(mss=1460, nodelay=True, max_segment=64000, timestamps=False)
    c = TcpConnection.connect(cfg, (ip_address("10.0.0.1"), 1000), (ip_address("10.0.0.2"), 80),
                              100, 0.0, upper=upper)
    (syn,) = c.poll_transmit(0.0)
    s = TcpConnection.accept_syn(cfg, (ip_address("10.0.0.2"), 80), (ip_address("10.0.0.1"), 1000),
                                 syn, 900, 0.0, upper=upper)
    (synack,) = s.poll_transmit(0.0)
    c.on_segment(synack, 0.0)
    for seg in c.poll_transmit(0.0):
        s.on_segment(seg, 0.0)
    return c, s


def test_engine_cuts_segments_at_the_upper_limit_and_uses_its_window() -> None:
    c, s = _pair(_Limit())
    c.send(bytes(3500), 0.0)
    segs = c.poll_transmit(0.0)
    assert [len(x.payload) for x in segs] == [1000, 1000, 1000, 500]
    for seg in segs:
        s.on_segment(seg, 0.0)
    ack = s.poll_transmit(1.0)[-1]
    # the edge announced in the SYN-ACK never moves back (RFC 7323 §2.4),
    # and without the upper's 5000 it would have grown to the free buffer
    assert (ack.window << s.rcv_wscale) < 65536 < s.rcvbuf.free


def test_request_ack_and_rst_options() -> None:
    c, s = _pair(None)
    assert s.poll_transmit(0.0) == []
    s.request_ack()
    (ack,) = s.poll_transmit(0.0)
    assert ack.flags == ACK and not ack.payload
    s.abort(0.0, (MpTcpRst(0, 3).emit(),))
    (rst,) = s.poll_transmit(0.0)
    assert rst.flags & RST and rst.mptcp == (bytes.fromhex("1e048003"),)


_ = random


def test_recorded_trace_decodes_in_tshark_without_errors(tmp_path) -> None:
    import shutil
    import subprocess

    import pytest

    from stack.netsim.capture import PcapTap

    if shutil.which("tshark") is None:
        pytest.skip("no tshark")
    t = two_hosts(2, loss=0.01, seed=5, c_cfg=MptcpConfig(checksum=True))
    path = tmp_path / "mptcp.pcap"
    tap = PcapTap(path)
    t.net.taps.append(tap)
    x = Exchange(t, payload(300_000), payload(200_000, 3))
    assert x.run(60)
    tap.close()
    opts = ["-o", "mptcp.analyze_mptcp:TRUE", "-o", "mptcp.analyze_mappings:TRUE",
            "-o", "mptcp.intersubflows_retransmission:TRUE"]
    bad = subprocess.run(["tshark", "-r", str(path), *opts, "-Y",
                          "_ws.malformed or _ws.expert.severity >= 8388608"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 0 and bad.stdout.strip() == "", bad.stdout[:2000]
    streams = subprocess.run(["tshark", "-r", str(path), *opts, "-T", "fields", "-e",
                              "mptcp.stream", "-Y", "mptcp"], capture_output=True, text=True,
                             timeout=120)
    # tshark ties all subflows to one MPTCP connection (keys, tokens verified)
    assert set(streams.stdout.split()) == {"0"}


def test_data_dropped_at_the_data_level_is_sent_again() -> None:
    """A peer may acknowledge a segment at the subflow level and still drop
    its data at the connection level (Linux: data beyond its window,
    MPTcpExtNoDSSInWindow). The DATA_ACK then stops; after an RTO with
    every subflow acknowledged, the oldest chunk goes out again (kernel
    __mptcp_retrans) and the transfer completes."""
    t = two_hosts(1)
    up = payload(300_000, 21)
    x = Exchange(t, up, b"")
    dropped: list[int] = []

    def arm(now: float) -> None:
        dr = x.peer.dr
        orig = dr.on_data

        def on_data(dsn, data):
            if not dropped and len(data) > 1000:
                dropped.append(dsn)
                return 0
            return orig(dsn, data)

        dr.on_data = on_data

    assert t.net.run_until(lambda: x.peer is not None and x.peer.dr is not None, timeout=5,
                           on_step=x.step)
    arm(t.net.now)
    assert x.run(30)
    assert dropped and x.received_up == up
    assert x.conn.stats["data_rtx"] >= 1
