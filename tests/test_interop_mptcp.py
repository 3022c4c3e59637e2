"""The stack's MPTCP against Linux MPTCP over two TUN paths (issue 4, interop).

The kernel peer uses `socket.IPPROTO_MPTCP` in the topology's namespace
(blackhole_timeout=0, syn_retrans_before_tcp_fallback=100 are set there by
`tools.topology.Netns`); its in-kernel path manager announces its second
address (`ip mptcp endpoint ... signal`). The stack is the MPTCP client and
joins the announced address from its second TUN address: 20 MB each way at
once, verified by SHA-256, each subflow carrying at least 1 MB.

The app side drives the core directly under the host's lock (the socket
facade's MPTCP support is another issue's work).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tools/, after the package

from tools.topology import Topology, can_run  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.interop,
              pytest.mark.skipif(can_run() is not None, reason=str(can_run()))]

import stack  # noqa: E402
from stack.mptcp.connection import MptcpConfig  # noqa: E402
from stack.mptcp.pm import PmLimits  # noqa: E402
from stack.tcp.state import TcpState  # noqa: E402

MB = 1_000_000
PORT = 5301
IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)


def _kernel_mptcp(topo: Topology, signal_addr: str, dev: str) -> None:
    topo.exec("ip", "mptcp", "endpoint", "flush")
    topo.exec("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2")
    topo.exec("ip", "mptcp", "endpoint", "add", signal_addr, "dev", dev, "signal")


def _kernel_server(topo: Topology, payload: bytes, result: dict[str, Any],
                   timeout: float) -> tuple[socket.socket, threading.Thread]:
    with topo.enter():
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", PORT))
    srv.listen(4)
    srv.settimeout(timeout)

    def run() -> None:
        try:
            conn, _ = srv.accept()
        except OSError as exc:
            result["kernel"] = (0, "", [exc])
            return
        conn.settimeout(timeout)
        errors: list[BaseException] = []

        def sender() -> None:
            try:
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
            except BaseException as exc:  # noqa: BLE001 - reported
                errors.append(exc)

        t = threading.Thread(target=sender)
        t.start()
        h, n = hashlib.sha256(), 0
        try:
            while chunk := conn.recv(1 << 20):
                h.update(chunk)
                n += len(chunk)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        t.join(timeout)
        result["kernel"] = (n, h.hexdigest(), errors)
        conn.close()

    th = threading.Thread(target=run)
    th.start()
    return srv, th


def _stack_client(host: Any, dst: str, payload: bytes, timeout: float,
                  cfg: MptcpConfig) -> tuple[Any, tuple[int, str]]:
    core, lock, cond = host.core, host.lock, host.cond
    with lock:
        conn = core.connect(dst, PORT, host.clock(), mptcp=True, mptcp_config=cfg)
        host.loop.kick()
    h, n, sent, shut = hashlib.sha256(), 0, 0, False
    view = memoryview(payload)
    end = time.monotonic() + timeout
    with lock:
        while time.monotonic() < end:
            now = host.clock()
            if conn.error is not None:
                raise OSError(conn.error, "MPTCP connection failed")
            if conn.state is not TcpState.SYN_SENT:
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
    return conn, (n, h.hexdigest())


def test_stack_client_two_paths_kernel_server_20mb_each_way() -> None:
    size = 20 * MB
    to_stack, to_kernel = os.urandom(size), os.urandom(size)
    with Topology(2) as topo:
        p1, p2 = topo.paths
        _kernel_mptcp(topo, str(p2.kernel_v4.ip), p2.tun)
        result: dict[str, Any] = {}
        srv, th = _kernel_server(topo, to_stack, result, 60)
        try:
            with stack.Host.tun(*topo.stack_specs(), netns=topo.ns) as host:
                cfg = MptcpConfig(limits=PmLimits(join_from_local_addrs=False))
                conn, got = _stack_client(host, str(p1.kernel_v4.ip), to_kernel, 60, cfg)
                th.join(60)
                with host.lock:
                    info = conn.mptcp_info()
        finally:
            srv.close()
    assert result["kernel"][2] == [], result
    assert result["kernel"][:2] == (size, hashlib.sha256(to_kernel).hexdigest())
    assert got == (size, hashlib.sha256(to_stack).hexdigest())
    assert info["mptcp"] is True, info
    subs = [s for s in info["subflows"] if s["established"]]
    assert len(subs) == 2, info["subflows"]
    assert {s["remote"].split(":")[0] for s in subs} == {"10.1.0.1", "10.2.0.1"}
    for s in subs:
        assert s["bytes_sent"] >= MB and s["bytes_received"] >= MB, subs
