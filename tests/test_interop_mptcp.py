"""The stack's MPTCP against Linux MPTCP over two TUN paths (issue 4, interop).

The kernel peer uses `socket.IPPROTO_MPTCP` in the topology's namespace
(`tools.topology.Netns` sets blackhole_timeout=0 and
syn_retrans_before_tcp_fallback=100 there). As server its in-kernel path
manager announces its second address (`ip mptcp endpoint ... signal`) and the
stack joins it; as client it accepts the stack's ADD_ADDR
(`add_addr_accepted 1`) and joins. 20 MB each way at once, verified by
SHA-256, each subflow carrying at least 1 MB; DSS checksums off and on, IPv4
and IPv6; a path cut mid-transfer; plain-TCP kernel peers (fallback).

The stack side drives the core directly under the host's lock (the socket
facade's MPTCP support is exercised by tests/test_nc_mptcp.py). The host
records every packet it sends or receives (its `tap`) into a pcap; for the
two-path runs in both roles (checksums off and on) and the fallback runs
that trace must decode in tshark with `mptcp.analyze_mptcp` and
`mptcp.analyze_mappings` on without malformed packets or error-level expert
info, and tshark must tie the MPTCP packets to one MPTCP connection.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mptcp_topology import tshark_problems

from tools.topology import Topology, can_run, run  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.interop,
              pytest.mark.skipif(can_run() is not None, reason=str(can_run()))]

import stack  # noqa: E402
from stack.mptcp.connection import MptcpConfig  # noqa: E402
from stack.mptcp.pm import PmLimits  # noqa: E402
from stack.tcp.state import TcpState  # noqa: E402

MB = 1_000_000
PORT = 5301
IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)


class Recorder:
    """The host's tap: every packet it sends or receives, into a pcap (raw IP;
    super-segments whole, as the stack emits or the kernel hands them over)."""

    def __init__(self, path: Path) -> None:
        from stack.trace.pcap import PcapWriter

        self.path = path
        self.writer = PcapWriter(path)

    def __call__(self, _direction: str, _iface: str, packet: Any, _gso: int) -> None:
        self.writer.write(bytes(packet), time.time())

    def close(self) -> None:
        self.writer.close()

    def check(self, *, mptcp: bool) -> None:
        """tshark decodes the trace cleanly (skipped without tshark)."""
        self.close()
        try:
            bad, n, streams = tshark_problems(self.path)
        except FileNotFoundError:
            return
        assert bad == "", bad[:3000]
        assert self.writer.count > 0
        if mptcp:
            assert n > 0 and set(streams) == {"0"}, (n, streams)


def _addr(path: Any, family: int, kernel: bool) -> str:
    if family == socket.AF_INET6:
        return str((path.kernel_v6 if kernel else path.stack_v6).ip)
    return str((path.kernel_v4 if kernel else path.stack_v4).ip)


def _kernel_pm(topo: Topology, *, server: bool, family: int, csum: bool) -> None:
    topo.exec("ip", "mptcp", "endpoint", "flush")
    if csum:
        topo.sysctl("net.mptcp.checksum_enabled", "1")
    if server:
        topo.exec("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "0")
        p2 = topo.paths[1]
        topo.exec("ip", "mptcp", "endpoint", "add", _addr(p2, family, True), "dev", p2.tun,
                  "signal")
    else:
        topo.exec("ip", "mptcp", "limits", "set", "subflows", "1", "add_addr_accepted", "1")


def _kernel_exchange(sock: socket.socket, payload: bytes, result: dict[str, Any]) -> None:
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:  # noqa: BLE001 - reported
            errors.append(exc)

    t = threading.Thread(target=sender)
    t.start()
    h, n = hashlib.sha256(), 0
    try:
        while chunk := sock.recv(1 << 20):
            h.update(chunk)
            n += len(chunk)
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)
    t.join(120)
    result["kernel"] = (n, h.hexdigest(), errors)
    try:
        result["kernel_mptcp"] = bool(sock.getsockopt(socket.SOL_TCP, 43))  # TCP_IS_MPTCP
    except OSError:
        result["kernel_mptcp"] = None
    sock.close()


def _stack_exchange(host: Any, conn_or_listener: Any, payload: bytes, timeout: float,
                    on_tick: Any = None) -> tuple[Any, tuple[int, str]]:
    """Send and receive on the stack side until both directions are done."""
    core, lock, cond = host.core, host.lock, host.cond
    h, n, sent, shut = hashlib.sha256(), 0, 0, False
    view = memoryview(payload)
    end = time.monotonic() + timeout
    conn = None if hasattr(conn_or_listener, "accept") else conn_or_listener
    t0 = time.monotonic()
    with lock:
        while time.monotonic() < end:
            now = host.clock()
            if conn is None:
                conn = conn_or_listener.accept()
            if on_tick is not None:
                on_tick(time.monotonic() - t0, n)
            if conn is not None:
                if conn.error is not None:
                    raise OSError(conn.error, f"stack connection failed after {n} bytes")
                if conn.state not in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
                    if sent < len(view) and conn.send_space:
                        sent += conn.send(view[sent:sent + conn.send_space], now)
                    if sent == len(view) and not shut:
                        conn.shutdown_write(now)
                        shut = True
                    while data := conn.recv(1 << 20):
                        h.update(data)
                        n += len(data)
                    core.wake(conn, now)
                    host.loop.kick()
                    if shut and conn.eof_received and not conn.readable and conn.all_acked:
                        conn.close(now)
                        core.wake(conn, now)
                        host.loop.kick()
                        break
            cond.wait(0.02)
    assert conn is not None, "nothing accepted"
    return conn, (n, h.hexdigest())


def run_pair(topo: Topology, host: Any, *, family: int, kernel_is_server: bool, size: int,
             kernel_mptcp: bool = True, cfg: MptcpConfig | None = None, timeout: float = 60,
             on_tick: Any = None) -> dict[str, Any]:
    p1 = topo.paths[0]
    to_stack, to_kernel = os.urandom(size), os.urandom(size)
    proto = IPPROTO_MPTCP if kernel_mptcp else 0
    result: dict[str, Any] = {}
    cfg = cfg or MptcpConfig(limits=PmLimits(join_from_local_addrs=False))
    if kernel_is_server:
        with topo.enter():
            srv = socket.socket(family, socket.SOCK_STREAM, proto)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # the wildcard address: joins arrive at the announced second address
        srv.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", PORT))
        srv.listen(4)
        srv.settimeout(timeout)

        def kernel_side() -> None:
            try:
                c, _ = srv.accept()
            except OSError as exc:
                result["kernel"] = (0, "", [exc])
                return
            c.settimeout(timeout)
            _kernel_exchange(c, to_stack, result)

        th = threading.Thread(target=kernel_side)
        th.start()
        try:
            with host.lock:
                conn = host.core.connect(_addr(p1, family, True), PORT, host.clock(),
                                         mptcp=True, mptcp_config=cfg)
                host.loop.kick()
            conn, got = _stack_exchange(host, conn, to_kernel, timeout, on_tick)
            th.join(timeout)
        finally:
            srv.close()
    else:
        with host.lock:
            host.core.mptcp_config = cfg
            ls = host.core.listen(None, PORT, mptcp=True)

        def kernel_side() -> None:
            with topo.enter():
                c = socket.socket(family, socket.SOCK_STREAM, proto)
            c.settimeout(timeout)
            try:
                c.connect((_addr(p1, family, False), PORT))
            except OSError as exc:
                result["kernel"] = (0, "", [exc])
                return
            _kernel_exchange(c, to_stack, result)

        th = threading.Thread(target=kernel_side)
        th.start()
        conn, got = _stack_exchange(host, ls, to_kernel, timeout, on_tick)
        th.join(timeout)
    with host.lock:
        diag = _diagnose(conn)
    mib = {k: v for k, v in topo.nstat().items() if k.startswith("MPTcp") and v}
    assert result["kernel"][2] == [], f"{result} {mib} {diag}"
    assert result["kernel"][:2] == (size, hashlib.sha256(to_kernel).hexdigest()), diag
    assert got == (size, hashlib.sha256(to_stack).hexdigest())
    with host.lock:
        result["info"] = conn.mptcp_info() if hasattr(conn, "mptcp_info") else None
    return result


def _diagnose(conn: Any) -> Any:
    """The stack side's state, for assertion messages."""
    if not hasattr(conn, "subflows"):
        return repr(conn)
    out: dict[str, Any] = {"conn": repr(conn), "info": conn.mptcp_info(),
                           "ds": (conn.ds.pending, conn.ds.window_room, conn.ds.fin_sent,
                                  conn.ds.fin_acked)}
    out["subflows"] = [(repr(sf.conn), sf.conn.cc.cwnd if sf.conn.cc else None,
                        sf.conn.in_flight, sf.conn.unsent, sf.rx.failed, sf.rx.pos,
                        sf.conn.stats.timeouts, sf.conn.stats.retransmissions)
                       for sf in conn.subflows]
    return out


def _check_two_subflows(info: dict[str, Any], family: int) -> None:
    assert info["mptcp"] is True, info
    subs = [s for s in info["subflows"] if s["established"]]
    assert len(subs) == 2, info["subflows"]
    for s in subs:
        assert s["bytes_sent"] >= MB and s["bytes_received"] >= MB, subs
        assert (":" in s["remote"].rsplit(":", 1)[0]) is (family == socket.AF_INET6)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
@pytest.mark.parametrize("kernel_is_server", [True, False], ids=["kernel-server", "kernel-client"])
def test_two_paths_20mb_each_way(kernel_is_server: bool, family: int, tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "stack.pcap")
    with Topology(2) as topo:
        _kernel_pm(topo, server=kernel_is_server, family=family, csum=False)
        with stack.Host.tun(*topo.stack_specs(), netns=topo.ns, tap=rec) as host:
            res = run_pair(topo, host, family=family, kernel_is_server=kernel_is_server,
                           size=20 * MB)
        nstat = topo.nstat()
    _check_two_subflows(res["info"], family)
    rec.check(mptcp=True)
    assert res["kernel_mptcp"] is not False
    # the kernel saw a clean MPTCP connection: a join, no fallback, no resets
    assert nstat.get("MPTcpExtMPJoinAckRx", 0) + nstat.get("MPTcpExtMPJoinSynAckRx", 0) >= 1
    for bad in ("MPTcpExtMPCapableFallbackACK", "MPTcpExtMPCapableFallbackSYNACK",
                "MPTcpExtDSSNoMatchTCP", "MPTcpExtDataCsumErr", "MPTcpExtMPRstTx"):
        assert nstat.get(bad, 0) == 0, (bad, nstat.get(bad))


@pytest.mark.parametrize("kernel_is_server", [True, False], ids=["kernel-server", "kernel-client"])
@pytest.mark.parametrize("who", ["kernel", "stack"], ids=["kernel-asks", "stack-asks"])
def test_dss_checksums(kernel_is_server: bool, who: str, tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "stack.pcap")
    with Topology(2) as topo:
        _kernel_pm(topo, server=kernel_is_server, family=socket.AF_INET, csum=who == "kernel")
        cfg = MptcpConfig(checksum=who == "stack", limits=PmLimits(join_from_local_addrs=False))
        with stack.Host.tun(*topo.stack_specs(), netns=topo.ns, tap=rec) as host:
            res = run_pair(topo, host, family=socket.AF_INET, kernel_is_server=kernel_is_server,
                           size=20 * MB, cfg=cfg)
        nstat = topo.nstat()
    _check_two_subflows(res["info"], socket.AF_INET)
    assert res["info"]["checksum"] is True
    rec.check(mptcp=True)
    assert nstat.get("MPTcpExtDataCsumErr", 0) == 0


def test_path_cut_mid_transfer() -> None:
    """Both paths shaped to 40 Mbit/s kernel->stack; path 2 dropped (both ways,
    nftables) half a second in: the transfer completes on path 1."""
    with Topology(2) as topo:
        _kernel_pm(topo, server=True, family=socket.AF_INET, csum=False)
        for p in topo.paths:
            topo.rate_limit(p.tun, rate="40mbit", burst="64kb", latency="50ms")
        tun2 = topo.paths[1].tun
        cut = {}

        def on_tick(elapsed: float, got: int) -> None:
            if not cut and elapsed > 0.5:
                cut["at"] = got
                cmds = ["add table inet mpscut",
                        "add chain inet mpscut o { type filter hook output priority 0 ; }",
                        "add chain inet mpscut i { type filter hook input priority 0 ; }",
                        f"add rule inet mpscut o oifname {tun2} drop",
                        f"add rule inet mpscut i iifname {tun2} drop"]
                for c in cmds:
                    run(["nft", c], ns=topo.ns)

        with stack.Host.tun(*topo.stack_specs(), netns=topo.ns) as host:
            res = run_pair(topo, host, family=socket.AF_INET, kernel_is_server=True,
                           size=10 * MB, on_tick=on_tick, timeout=90)
    assert cut and cut["at"] < 10 * MB
    info = res["info"]
    assert info["mptcp"] is True
    path2 = [s for s in info["subflows"] if s["local"].startswith("10.2.")]
    assert path2 and path2[0]["bytes_received"] > 0


@pytest.mark.parametrize("kernel_is_server", [True, False], ids=["kernel-server", "kernel-client"])
def test_plain_tcp_kernel_peer_falls_back(kernel_is_server: bool, tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "stack.pcap")
    with Topology(2) as topo:
        with stack.Host.tun(*topo.stack_specs(), netns=topo.ns, tap=rec) as host:
            res = run_pair(topo, host, family=socket.AF_INET, kernel_is_server=kernel_is_server,
                           size=20 * MB, kernel_mptcp=False)
    rec.check(mptcp=False)
    assert res["kernel_mptcp"] is not True
    if kernel_is_server:
        assert res["info"]["mptcp"] is False
        assert res["info"]["fallback_reason"] == "synack_without_mpc"
    else:
        assert res["info"] is None  # a plain SYN is accepted as a plain TcpConnection


def test_rate_limited_paths_aggregate() -> None:
    """tbf 50 and 100 Mbit/s on the kernel's egress into the two TUNs: the
    stack receives at >= 90 % of the 150 Mbit/s sum (kernel to kernel: 92 %),
    measured from the 5th MB on (slow start and the join are behind us)."""
    size, warm = 60 * MB, 5 * MB
    with Topology(2) as topo:
        _kernel_pm(topo, server=True, family=socket.AF_INET, csum=False)
        for p, rate in zip(topo.paths, ("50mbit", "100mbit"), strict=True):
            topo.rate_limit(p.tun, rate=rate, burst="64kb", latency="30ms")
        marks: dict[str, tuple[float, int]] = {}

        def on_tick(elapsed: float, got: int) -> None:
            if got >= warm and "first" not in marks:
                marks["first"] = (time.monotonic(), got)
            marks["last"] = (time.monotonic(), got)

        with stack.Host.tun(*topo.stack_specs(), netns=topo.ns) as host:
            res = run_pair(topo, host, family=socket.AF_INET, kernel_is_server=True,
                           size=size, on_tick=on_tick, timeout=90)
    (t0, b0), (t1, b1) = marks["first"], marks["last"]
    goodput = (b1 - b0) * 8 / (t1 - t0)
    _check_two_subflows(res["info"], socket.AF_INET)
    print(f"goodput {goodput / 1e6:.1f} Mbit/s")
    assert goodput >= 0.9 * 150e6, goodput / 1e6


@pytest.mark.parametrize("where", ["kernel-synack", "stack-after-syn"])
def test_middlebox_strips_mptcp_options(where: str, tmp_path: Path) -> None:
    """nftables `reset tcp option mptcp`: on the kernel server's SYN/ACK, or on
    everything the stack client sends after its SYN; both ends fall back to
    TCP and the transfer is intact."""
    with Topology(2) as topo:
        _kernel_pm(topo, server=True, family=socket.AF_INET, csum=False)
        tun1 = topo.paths[0].tun
        if where == "kernel-synack":
            hook, rule = "output", f"oifname {tun1} tcp flags & (syn|ack) == syn|ack"
        else:
            hook, rule = "prerouting", f"iifname {tun1} tcp flags & syn == 0"
        for c in ("add table inet mpsmb",
                  f"add chain inet mpsmb c {{ type filter hook {hook} priority -150 ; }}",
                  f"add rule inet mpsmb c {rule} reset tcp option mptcp"):
            run(["nft", c], ns=topo.ns)
        before = topo.nstat()
        rec = Recorder(tmp_path / "stack.pcap")
        with stack.Host.tun(*topo.stack_specs(), netns=topo.ns, tap=rec) as host:
            res = run_pair(topo, host, family=socket.AF_INET, kernel_is_server=True,
                           size=20 * MB)
        after = topo.nstat()
    rec.check(mptcp=False)
    info = res["info"]
    assert info["mptcp"] is False
    want = "synack_without_mpc" if where == "kernel-synack" else "first_segment_without_dss"
    assert info["fallback_reason"] == want
    # the kernel server fell back too: the third ACK had no MP_CAPABLE
    fb = after.get("MPTcpExtMPCapableFallbackACK", 0) - before.get(
        "MPTcpExtMPCapableFallbackACK", 0)
    assert fb == 1
    assert res["kernel_mptcp"] is not True


def test_trace_check_catches_a_malformed_packet(tmp_path: Path) -> None:
    """The tshark check above can fail: a DSS option of impossible length."""
    import struct

    rec = Recorder(tmp_path / "bad.pcap")
    opt = bytes([30, 5, 0x20, 0x01, 0x00]) + b"\x01\x01\x01"
    tcp = struct.pack("!HHIIBBHHH", 1000, 2000, 1, 1, (20 + len(opt)) // 4 << 4, 0x10,
                      1000, 0, 0) + opt
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0,
                     bytes([10, 1, 0, 1]), bytes([10, 1, 0, 2]))
    rec("out", "tun0", ip + tcp, 0)
    rec.close()
    try:
        bad, _, _ = tshark_problems(rec.path)
    except FileNotFoundError:
        pytest.skip("no tshark")
    assert "frame 1" in bad and "Malformed" in bad
