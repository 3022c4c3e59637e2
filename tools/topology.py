"""Network namespaces, TUN devices and veth pairs for tests, benchmarks and demos.

The usual picture (`Topology`): one namespace holds the kernel peer and one
persistent TUN device per path. The kernel side of each TUN has the `.1`
address (10.<i>.0.1/24, fd00:<i>::1/64); the stack attaches to the TUN (from
any namespace: `TunDevice(..., netns=topo.ns)` opens it inside) and owns the
`.2` address on the far side. A kernel socket in that namespace talks to the
stack through the TUN::

    with Topology(paths=2) as topo:
        with topo.enter():               # this thread only
            srv = socket.create_server(("10.1.0.1", 5001))
        host = stack.Host.tun(*topo.stack_specs(), netns=topo.ns)

Every name is unique (`mps<pid>x<n>`), everything is deleted on exit, at
interpreter exit and on SIGTERM/SIGINT, and a failure half-way through the
set-up removes what was already made.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tun.netns import in_netns  # noqa: E402

_counter = itertools.count(1)
_live: list[Cleanup] = []
_handlers_installed = False


def unique_name(tag: str = "") -> str:
    """A name no other run uses, short enough for an interface (< 16 bytes)."""
    name = f"mps{os.getpid() % 1000000}{tag}{next(_counter)}"
    assert len(name) < 16, name
    return name


def run(cmd: Sequence[str] | str, *, check: bool = True, ns: str | None = None,
        capture: bool = True) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    proc = subprocess.run(argv, text=True, capture_output=capture)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({proc.returncode}): "
                           f"{(proc.stderr or '').strip()}")
    return proc


def can_run() -> str | None:
    """Why the namespace set-up cannot work here, or None if it can
    (MPSTACK_SKIP_ROOT=1 in the environment says "do not try")."""
    if os.environ.get("MPSTACK_SKIP_ROOT"):
        return "MPSTACK_SKIP_ROOT is set"
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    if subprocess.run(["ip", "-V"], capture_output=True).returncode != 0:
        return "no iproute2"
    return None


class Cleanup(AbstractContextManager["Cleanup"]):
    """Something to undo: registered for atexit and signals while alive."""

    def __init__(self) -> None:
        self._undo: list[list[str]] = []
        self.closed = False
        _install_handlers()
        _live.append(self)

    def _later(self, *argv: str) -> None:
        self._undo.append(list(argv))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        while self._undo:
            subprocess.run(self._undo.pop(), capture_output=True)
        if self in _live:
            _live.remove(self)

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cleanup_all() -> None:
    for item in list(_live):
        item.close()


def _on_signal(signum: int, _frame: object) -> None:
    _cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_cleanup_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread
            pass


class Netns(Cleanup):
    """A fresh network namespace with loopback up and rp_filter off."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        self.name = name or unique_name("n")
        run(["ip", "netns", "add", self.name])
        self._later("ip", "netns", "del", self.name)
        try:
            self.ip("link", "set", "lo", "up")
            for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
                self.sysctl(key, "0")
            self.sysctl("net.ipv4.ip_forward", "1", check=False)
            self.sysctl("net.ipv6.conf.all.forwarding", "1", check=False)
            # For the MPTCP issue: never fall back to TCP because of lost SYNs.
            self.sysctl("net.mptcp.blackhole_timeout", "0", check=False)
            self.sysctl("net.mptcp.syn_retrans_before_tcp_fallback", "100", check=False)
        except BaseException:
            self.close()
            raise

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], check=check)

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(list(argv), ns=self.name, check=check)

    def sysctl(self, key: str, value: str, *, check: bool = True) -> None:
        run(["sysctl", "-qw", f"{key}={value}"], ns=self.name, check=check)

    def enter(self) -> AbstractContextManager[None]:
        """Switch this thread into the namespace (sockets made inside stay there)."""
        return in_netns(self.name)

    def popen(self, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kw)  # type: ignore[call-overload]

    def nstat(self) -> dict[str, int]:
        """Absolute kernel SNMP counters of this namespace (`nstat -az`)."""
        out = self.exec("nstat", "-asz", "--json").stdout
        data = json.loads(out)
        table = data.get("kernel", data)
        return {k: int(v) for k, v in table.items()}

    def link(self, name: str) -> dict[str, object]:
        return json.loads(self.ip("-d", "-j", "link", "show", name).stdout)[0]

    def addresses(self, name: str) -> list[str]:
        info = json.loads(self.ip("-j", "addr", "show", "dev", name).stdout)[0]
        return sorted(f"{a['local']}/{a['prefixlen']}" for a in info.get("addr_info", ()))


@dataclass
class TunPath:
    """One TUN device: the kernel's side and the stack's side of a path."""

    tun: str
    kernel_v4: ipaddress.IPv4Interface
    stack_v4: ipaddress.IPv4Interface
    kernel_v6: ipaddress.IPv6Interface
    stack_v6: ipaddress.IPv6Interface
    extra: dict[str, str] = field(default_factory=dict)

    def spec(self, *, v4: bool = True, v6: bool = True, gw: bool = False) -> str:
        """The `Host.tun` / `mpstack nc --iface` string for the stack's side."""
        parts = [self.tun]
        if v4:
            parts.append(str(self.stack_v4))
        if v6:
            parts.append(str(self.stack_v6))
        if gw:
            parts.append(f"gw={self.kernel_v4.ip}")
        return ",".join(parts)


class Topology(Netns):
    """A namespace with `paths` persistent TUN devices, kernel sides configured."""

    def __init__(self, paths: int = 1, *, mtu: int = 1500, txqueuelen: int = 1000,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.ns = self.name
        self.paths: list[TunPath] = []
        try:
            for i in range(1, paths + 1):
                self.paths.append(self._add_tun(i, mtu, txqueuelen))
        except BaseException:
            self.close()
            raise

    def _add_tun(self, i: int, mtu: int, txqueuelen: int) -> TunPath:
        tun = unique_name("t")
        self.ip("tuntap", "add", "dev", tun, "mode", "tun")
        path = TunPath(
            tun=tun,
            kernel_v4=ipaddress.IPv4Interface(f"10.{i}.0.1/24"),
            stack_v4=ipaddress.IPv4Interface(f"10.{i}.0.2/24"),
            kernel_v6=ipaddress.IPv6Interface(f"fd00:{i}::1/64"),
            stack_v6=ipaddress.IPv6Interface(f"fd00:{i}::2/64"),
        )
        # The TUN's queue is the only buffer between the kernel's sender and the
        # stack: 1000 packets as on an Ethernet NIC (a TUN's default, 500,
        # overflows under a kernel BBR sender probing against the userspace reader).
        self.ip("link", "set", "dev", tun, "mtu", str(mtu), "txqueuelen", str(txqueuelen))
        # No kernel-made IPv6 link-local when the stack brings the carrier up:
        # the device's addresses stay exactly the ones configured here.
        self.ip("link", "set", "dev", tun, "addrgenmode", "none")
        self.ip("addr", "add", str(path.kernel_v4), "dev", tun)
        self.ip("addr", "add", str(path.kernel_v6), "dev", tun, "nodad")
        self.sysctl(f"net.ipv4.conf.{tun}.rp_filter", "0", check=False)
        self.sysctl(f"net.ipv6.conf.{tun}.accept_ra", "0", check=False)
        self.sysctl(f"net.ipv6.conf.{tun}.router_solicitations", "0", check=False)
        self.ip("link", "set", "dev", tun, "up")
        return path

    @property
    def path(self) -> TunPath:
        return self.paths[0]

    def stack_specs(self, **kw: bool) -> list[str]:
        return [p.spec(**kw) for p in self.paths]

    def rate_limit(self, tun: str, rate: str = "200mbit", burst: str = "64kb",
                   latency: str = "20ms") -> None:
        """tbf on the kernel's egress into the TUN (kernel -> stack direction)."""
        self.ip("link", "show", tun)
        run(["tc", "-n", self.name, "qdisc", "replace", "dev", tun, "root", "tbf",
             "rate", rate, "burst", burst, "latency", latency])

    def random_loss(self, tun: str, percent: int) -> None:
        """nftables `numgen random` drop of `percent` % of the packets into the TUN."""
        run(["nft", "add table inet mpsloss"], ns=self.name)
        run(["nft", "add chain inet mpsloss out { type filter hook output priority 0 ; }"],
            ns=self.name)
        run(["nft", "add", "rule", "inet", "mpsloss", "out", "oifname", tun, "numgen", "random",
             "mod", "100", "lt", str(percent), "counter", "drop"], ns=self.name)

    def loss_dropped(self) -> int:
        """Packets the `random_loss` rule dropped so far."""
        out = run(["nft", "-j", "list", "table", "inet", "mpsloss"], ns=self.name).stdout
        total = 0
        for item in json.loads(out).get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"]["packets"])
        return total

    def qdisc_bytes(self, tun: str) -> int:
        """Bytes the root qdisc of `tun` has sent (tc -s)."""
        out = run(["tc", "-n", self.name, "-s", "-j", "qdisc", "show", "dev", tun]).stdout
        return sum(int(q.get("bytes", 0)) for q in json.loads(out) if q.get("root"))


class VethPair(Cleanup):
    """Two namespaces joined by a veth pair: a kernel-to-kernel TCP reference path."""

    def __init__(self, *, mtu: int = 1500) -> None:
        super().__init__()
        try:
            self.a = Netns()
            self.b = Netns()
            self.a_if, self.b_if = unique_name("a"), unique_name("b")
            run(["ip", "link", "add", self.a_if, "netns", self.a.name, "type", "veth",
                 "peer", "name", self.b_if, "netns", self.b.name])
            self.a_addr, self.b_addr = "10.99.0.1", "10.99.0.2"
            for ns, dev, addr in ((self.a, self.a_if, self.a_addr), (self.b, self.b_if,
                                                                      self.b_addr)):
                ns.ip("link", "set", "dev", dev, "mtu", str(mtu))
                ns.ip("addr", "add", f"{addr}/24", "dev", dev)
                ns.ip("link", "set", "dev", dev, "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for ns in (getattr(self, "b", None), getattr(self, "a", None)):
            if ns is not None:
                ns.close()
        super().close()


@contextmanager
def topology(paths: int = 1, **kw: int) -> Iterator[Topology]:
    topo = Topology(paths, **kw)
    try:
        yield topo
    finally:
        topo.close()


def main(argv: list[str] | None = None) -> int:
    """`python tools/topology.py [--paths N] [--rate R] [--loss P] -- COMMAND...`:
    make a topology, run COMMAND (in the root namespace) with its names in the
    environment, and remove everything afterwards."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--paths", type=int, default=1)
    ap.add_argument("--mtu", type=int, default=1500)
    ap.add_argument("--rate", help="tbf rate on every path, kernel -> stack (e.g. 100mbit)")
    ap.add_argument("--loss", type=int, default=0, help="random loss %% kernel -> stack")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    why = can_run()
    if why:
        print(f"topology: {why}", file=sys.stderr)
        return 2
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    with Topology(args.paths, mtu=args.mtu) as topo:
        env = dict(os.environ, MPS_NS=topo.ns)
        for i, p in enumerate(topo.paths, 1):
            if args.rate:
                topo.rate_limit(p.tun, rate=args.rate)
            if args.loss:
                topo.random_loss(p.tun, args.loss)
            env[f"MPS_TUN{i}"] = p.tun
            env[f"MPS_IFACE{i}"] = p.spec()
            env[f"MPS_KERNEL{i}"] = str(p.kernel_v4.ip)
            env[f"MPS_KERNEL{i}_V6"] = str(p.kernel_v6.ip)
        lines = [f"{k}={v}" for k, v in sorted(env.items()) if k.startswith("MPS_")]
        if not cmd:
            print("\n".join(lines))
            return 0
        print("topology: " + " ".join(lines), file=sys.stderr)
        return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
