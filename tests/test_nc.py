"""`mpstack nc` against kernel TCP peers, in a namespace per test.

nc runs as its own process (`ip netns exec NS mpstack nc ...` or `--netns`),
with files for standard input and output; the kernel peer is a socket of the
test in the same namespace.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tools.topology import Topology, can_run  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.interop,
              pytest.mark.skipif(can_run() is not None, reason=str(can_run()))]

NC = [sys.executable, "-m", "stack.cli", "nc"]
ROOT = Path(__file__).resolve().parents[1]
K4, S4 = "10.1.0.1", "10.1.0.2"


@pytest.fixture
def topo():
    with Topology(1) as t:
        yield t


def start_nc(topo: Topology, tmp: Path, args: list[str], stdin: bytes, *,
             in_netns: bool = True, mptcp: bool = False) -> tuple[subprocess.Popen[bytes], Path,
                                                                  Path]:
    """nc with plain TCP (`--no-mptcp`) unless `mptcp` (then nc's default)."""
    (tmp / "in").write_bytes(stdin)
    out, stats = tmp / "out", tmp / "stats.json"
    argv = [*NC, "--iface", topo.path.spec(v6=True), *([] if mptcp else ["--no-mptcp"]),
            "--stats", str(stats), *args]
    if in_netns:
        argv = ["ip", "netns", "exec", topo.ns, *argv]
    else:
        argv[len(NC):len(NC)] = ["--netns", topo.ns]
    with open(tmp / "in", "rb") as fin, open(out, "wb") as fout:
        proc = subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=subprocess.PIPE,
                                cwd=ROOT)
    return proc, out, stats


def finish(proc: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise
    return proc.returncode, err.decode()


def kernel_connect(topo: Topology, addr: str, port: int, family: int = socket.AF_INET,
                   timeout: float = 10) -> socket.socket:
    """Connect once nc's listener is up (refusals and unanswered SYNs retried)."""
    end = time.monotonic() + timeout
    while True:
        with topo.enter():
            c = socket.socket(family, socket.SOCK_STREAM)
        c.settimeout(0.5)
        try:
            c.connect((addr, port))
            c.settimeout(timeout)
            return c
        except OSError:
            c.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def drain(sock: socket.socket) -> bytes:
    buf = bytearray()
    while chunk := sock.recv(1 << 20):
        buf += chunk
    return bytes(buf)


def check_stats(path: Path, *, sent: int, received: int, local: str, remote: str) -> dict[str, Any]:
    stats = json.loads(path.read_text())
    assert stats["bytes_sent"] == sent
    assert stats["bytes_received"] == received
    assert stats["duration"] > 0
    assert stats["local_address"] == local and stats["remote_address"] == remote
    assert stats["local"].startswith(local) or stats["local"].startswith(f"[{local}]")
    assert stats["mptcp"] is False
    assert stats["exit_status"] == 0 and stats["error"] is None
    return stats


def test_default_is_mptcp_falling_back_to_tcp(topo: Topology, tmp_path: Path) -> None:
    """Without --no-mptcp nc offers MPTCP; a plain TCP kernel server answers
    without MP_CAPABLE, so the connection falls back and says why."""
    with topo.enter():
        srv = socket.create_server((K4, 7001))
    srv.settimeout(20)
    to_kernel, to_nc = os.urandom(500_000), os.urandom(400_000)
    got: dict[str, bytes] = {}

    def kernel() -> None:
        conn, _ = srv.accept()
        t = threading.Thread(target=lambda: got.setdefault("k", drain(conn)))
        t.start()
        conn.sendall(to_nc)
        conn.shutdown(socket.SHUT_WR)
        t.join(20)
        conn.close()

    t = threading.Thread(target=kernel)
    t.start()
    proc, out, stats = start_nc(topo, tmp_path, [K4, "7001"], to_kernel, mptcp=True)
    code, err = finish(proc)
    t.join(20)
    assert code == 0, err
    assert got["k"] == to_kernel and out.read_bytes() == to_nc
    s = check_stats(stats, sent=len(to_kernel), received=len(to_nc), local=S4, remote=K4)
    assert s["mptcp_requested"] is True
    assert s["fallback_reason"] == "synack_without_mpc"


def test_connect_mode_both_directions(topo: Topology, tmp_path: Path) -> None:
    with topo.enter():
        srv = socket.create_server((K4, 7001))
    srv.settimeout(20)
    to_kernel, to_nc = os.urandom(3_000_000), os.urandom(2_000_000)
    got: dict[str, bytes] = {}

    def kernel() -> None:
        conn, _ = srv.accept()
        t = threading.Thread(target=lambda: got.setdefault("k", drain(conn)))
        t.start()
        conn.sendall(to_nc)
        conn.shutdown(socket.SHUT_WR)
        t.join(20)
        conn.close()

    t = threading.Thread(target=kernel)
    t.start()
    proc, out, stats = start_nc(topo, tmp_path, [K4, "7001"], to_kernel)
    code, err = finish(proc)
    t.join(20)
    assert code == 0, err
    assert err == ""
    assert got["k"] == to_kernel
    assert out.read_bytes() == to_nc
    s = check_stats(stats, sent=len(to_kernel), received=len(to_nc), local=S4, remote=K4)
    assert s["remote_port"] == 7001 and s["mode"] == "connect"


def test_listen_mode_ipv6_and_pcap(topo: Topology, tmp_path: Path) -> None:
    from stack.trace.pcap import open_capture

    pcap = tmp_path / "nc.pcap"
    to_kernel, to_nc = os.urandom(500_000), os.urandom(700_000)
    proc, out, stats = start_nc(topo, tmp_path, ["--pcap", str(pcap), "-l", "7002"], to_kernel,
                                in_netns=False)
    c = kernel_connect(topo, "fd00:1::2", 7002, socket.AF_INET6)
    t = threading.Thread(target=lambda: (c.sendall(to_nc), c.shutdown(socket.SHUT_WR)))
    t.start()
    received = drain(c)
    t.join(10)
    c.close()
    code, err = finish(proc)
    assert code == 0, err
    assert received == to_kernel and out.read_bytes() == to_nc
    s = check_stats(stats, sent=len(to_kernel), received=len(to_nc), local="fd00:1::2",
                    remote="fd00:1::1")
    assert s["mode"] == "listen" and s["local_port"] == 7002
    with open_capture(pcap) as cap:
        packets = list(cap)
    assert len(packets) > 10
    tcp = [p.data for p in packets if p.data[0] >> 4 == 6 and p.data[6] == 6]
    assert tcp[0][40 + 13] == 0x02  # the kernel's SYN comes first
    assert tcp[1][40 + 13] == 0x12  # then our SYN/ACK
    assert any(len(p) > 1500 for p in tcp)  # super-segments are recorded whole
    # The capture decodes with the project's own dumper and with tshark.
    dump = subprocess.run([sys.executable, "-m", "stack.cli", "trace", "dump", str(pcap)],
                          capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert len(dump.stdout.splitlines()) == len(packets)
    if shutil.which("tshark"):
        ts = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "tcp.srcport",
                             "-e", "_ws.malformed", "-e", "_ws.expert.severity"],
                            capture_output=True, text=True, timeout=60)
        assert ts.returncode == 0, ts.stderr
        rows = [r.split("\t") for r in ts.stdout.splitlines()]
        assert len(rows) == len(packets)
        assert sum(1 for r in rows if r[0]) == len(tcp)  # every TCP packet decoded as TCP
        assert not any(r[1] for r in rows), "malformed packets"


def test_independent_directions(topo: Topology, tmp_path: Path) -> None:
    """The kernel reads nc's data to EOF and only then answers: nc keeps
    receiving after its own half-close."""
    with topo.enter():
        srv = socket.create_server((K4, 7003))
    srv.settimeout(20)
    to_kernel = os.urandom(100_000)
    answer = os.urandom(1_500_000)
    seen: dict[str, bytes] = {}

    def kernel() -> None:
        conn, _ = srv.accept()
        seen["k"] = drain(conn)  # nc's FIN arrives first
        conn.sendall(answer)
        conn.close()

    t = threading.Thread(target=kernel)
    t.start()
    proc, out, _stats = start_nc(topo, tmp_path, [K4, "7003"], to_kernel)
    code, err = finish(proc)
    t.join(10)
    assert code == 0, err
    assert seen["k"] == to_kernel and out.read_bytes() == answer


def test_peer_half_closes_first(topo: Topology, tmp_path: Path) -> None:
    """The kernel sends nothing and half-closes at once: nc keeps sending."""
    with topo.enter():
        srv = socket.create_server((K4, 7004))
    srv.settimeout(20)
    to_kernel = os.urandom(4_000_000)
    seen: dict[str, bytes] = {}

    def kernel() -> None:
        conn, _ = srv.accept()
        conn.shutdown(socket.SHUT_WR)
        time.sleep(0.2)
        seen["k"] = drain(conn)
        conn.close()

    t = threading.Thread(target=kernel)
    t.start()
    proc, out, stats = start_nc(topo, tmp_path, ["--no-offload", K4, "7004"], to_kernel)
    code, err = finish(proc)
    t.join(10)
    assert code == 0, err
    assert hashlib.sha256(seen["k"]).digest() == hashlib.sha256(to_kernel).digest()
    assert out.read_bytes() == b""
    assert json.loads(stats.read_text())["offload"] is False


def test_refused_is_one_line_error(topo: Topology, tmp_path: Path) -> None:
    proc, _out, stats = start_nc(topo, tmp_path, [K4, "7999"], b"data")
    code, err = finish(proc)
    assert code != 0
    assert err.count("\n") == 1 and "refused" in err and err.startswith("mpstack nc:")
    assert json.loads(stats.read_text())["exit_status"] == code


def test_reset_by_peer_fails(topo: Topology, tmp_path: Path) -> None:
    with topo.enter():
        srv = socket.create_server((K4, 7005))
    srv.settimeout(20)

    def kernel() -> None:
        conn, _ = srv.accept()
        conn.recv(1000)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        conn.close()  # RST

    t = threading.Thread(target=kernel)
    t.start()
    proc, _out, _stats = start_nc(topo, tmp_path, [K4, "7005"], os.urandom(2_000_000))
    code, err = finish(proc)
    t.join(10)
    assert code == 1 and "reset" in err and err.count("\n") == 1


def test_keep_accepts_in_turn(topo: Topology, tmp_path: Path) -> None:
    proc, out, stats = start_nc(topo, tmp_path, ["-l", "--keep", "7006"], b"first only")
    replies = []
    for i in range(2):
        c = kernel_connect(topo, S4, 7006)
        c.sendall(f"client {i}\n".encode())
        c.shutdown(socket.SHUT_WR)
        replies.append(drain(c))
        c.close()
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 0, err
    assert replies == [b"first only", b""]
    assert out.read_bytes() == b"client 0\nclient 1\n"
    data = json.loads(stats.read_text())
    assert [c["bytes_received"] for c in data["connections"]] == [9, 9]
    assert data["bytes_sent"] == len(b"first only")


def test_bad_arguments(tmp_path: Path) -> None:
    proc = subprocess.run([*NC, "--iface", "x,10.0.0.1/24", "10.0.0.2"], capture_output=True,
                          cwd=ROOT, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    proc = subprocess.run([*NC, "--iface", "bad", "10.0.0.2", "80"], capture_output=True,
                          cwd=ROOT, text=True)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1


def test_reset_while_stdin_idle_exits(topo: Topology) -> None:
    """The peer resets while nc waits on an idle stdin: nc still exits (non-zero)."""
    with topo.enter():
        srv = socket.create_server((K4, 7007))
    srv.settimeout(20)

    def kernel() -> None:
        conn, _ = srv.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        conn.close()  # RST

    t = threading.Thread(target=kernel)
    t.start()
    proc = subprocess.Popen(["ip", "netns", "exec", topo.ns, *NC, "--iface", topo.path.spec(),
                             K4, "7007"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=ROOT)
    try:
        code = proc.wait(timeout=15)  # stdin stays open (never written, never closed)
        err = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        proc.kill()
        if proc.stdin:
            proc.stdin.close()
        if proc.stderr:
            proc.stderr.close()
    t.join(5)
    assert code == 1 and "reset" in err
