"""`tools/demo.py`, the README demo: one command, a two-path namespace
topology, a kernel MPTCP server, the stack as client on both TUNs; it prints
its summary and removes everything, also when interrupted mid-transfer."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

from tools.topology import can_run  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.interop,
              pytest.mark.skipif(can_run() is not None, reason=str(can_run()))]

DEMO = [sys.executable, str(ROOT / "tools" / "demo.py")]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def made_by(output: str) -> tuple[str, list[str]]:
    """The namespace and TUN names the demo announced in its first line."""
    m = re.search(r"demo: namespace (\S+), TUN paths (\S+) \(.*?\), (\S+) \(", output)
    assert m, output
    return m.group(1), [m.group(2), m.group(3)]


def assert_gone(ns: str, tuns: list[str]) -> None:
    assert ns not in namespaces()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for tun in tuns:
        assert f" {tun}:" not in links


def test_demo_mptcp_small_transfer(tmp_path: Path) -> None:
    out_json = tmp_path / "summary.json"
    proc = subprocess.run([*DEMO, "--bytes", "3M", "--json", str(out_json)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    ns, tuns = made_by(out)
    assert "kernel MPTCP: net.mptcp.blackhole_timeout=0; " \
           "net.mptcp.syn_retrans_before_tcp_fallback=100" in out
    assert re.search(r"connection 10\.1\.0\.2:\d+ -> 10\.1\.0\.1:5555: ", out)
    assert re.search(r"sent 3000000 B, received 3000000 B in [\d.]+ s: goodput [\d.]+ Mbit/s",
                     out)
    assert "verified: SHA-256 matches on both ends (3000000 B up, 3000000 B down)" in out
    assert f"removed namespace {ns}" in out
    summary = json.loads(out_json.read_text())
    assert summary["ok"] is True and summary["sent"] == summary["received"] == 3_000_000
    conn = summary["connection"]
    if conn["kind"] == "MptcpConnection" and conn["mptcp"]:
        # MPTCP in use: one line per subflow, and they add up to the connection.
        subs = conn["subflows"]
        assert subs and subs[0]["join"] is False
        assert sum(s["bytes_sent"] for s in subs) >= 3_000_000
        for s in subs:
            assert f"subflow {s['id']} {s['local']} -> {s['remote']}" in out
        assert summary["kernel_counters"].get("MPTcpExtMPCapableSYNRX") == 1
        assert re.search(r"\d of \d subflows carried data, over [12] TUN path", out)
    else:
        assert "MPTCP fallback" in out
    assert_gone(ns, tuns)


def test_demo_plain_tcp() -> None:
    proc = subprocess.run([*DEMO, "--bytes", "2M", "--no-mptcp", "--direction", "up",
                           "--no-offload"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(MPTCP fallback: stack socket is plain TCP)" in proc.stdout
    assert "offload off" in proc.stdout
    assert "sent 2000000 B, received 0 B" in proc.stdout
    assert_gone(*made_by(proc.stdout))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_interrupted_mid_transfer_cleans_up(sig: signal.Signals) -> None:
    # 1 Gbyte through a 20 Mbit/s shaper: still running when the signal comes.
    proc = subprocess.Popen([*DEMO, "--bytes", "1G", "--direction", "down", "--rate", "20mbit"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    end = time.monotonic() + 60
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "transferring" in line:
            break
    assert any("transferring" in x for x in lines), "".join(lines) + proc.stderr.read()
    ns, tuns = made_by("".join(lines))
    assert ns in namespaces()
    time.sleep(0.5)  # mid-transfer
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and f"removed namespace {ns}" in out
    assert_gone(ns, tuns)
