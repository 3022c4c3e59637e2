"""`mpstack run -- COMMAND`: unmodified Python programs on the userspace stack (issue 5).

The programs are the standard library's own (`python -m http.server`,
`urllib.request`, asyncio streams), started by `mpstack run` with the stack's
side of a TUN; their peers are kernel sockets in the topology's namespace.
The root namespace has no route to the kernel peer (its TUN lives in the
namespace), so a program whose socket stayed on the kernel could not reach
it; the kernel peer also sees the stack's address (10.1.0.2) as the client.
Whether the connections are MPTCP or TCP is the host's default; nothing here
assumes either.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tls_cert import self_signed_certificate

ROOT = Path(__file__).resolve().parents[1]

from tools.topology import Topology, can_run  # noqa: E402

PY = sys.executable
_ports = itertools.count(7500)
K4, S4 = "10.1.0.1", "10.1.0.2"
ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def mpstack_run(*args: str, timeout: float = 60, env: dict[str, str] | None = None,
                **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "stack.cli", "run", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env or ENV, **kw)  # type: ignore[call-overload]


# ------------------------------------------------------------ no root needed
def test_non_python_command_is_refused_with_one_line() -> None:
    proc = mpstack_run("--iface", "tunx,10.9.0.2/24", "--", "/bin/true")
    assert proc.returncode == 125
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpstack run: /bin/true is not a Python")


@pytest.mark.parametrize("opt", ["-I", "-E", "-S", "-uE"])
def test_python_options_that_skip_the_hook_are_refused(opt: str) -> None:
    proc = mpstack_run("--iface", "tunx,10.9.0.2/24", "--", PY, opt, "-c", "pass")
    assert proc.returncode == 125
    assert "would skip the stack's start-up hook" in proc.stderr


def test_usage_errors() -> None:
    proc = mpstack_run("--", PY, "-c", "pass")
    assert proc.returncode == 125 and "--iface" in proc.stderr
    proc = mpstack_run("--iface", "tunx", "--", PY, "-c", "pass")
    assert proc.returncode == 125 and proc.stderr.startswith("mpstack run: interface spec")
    proc = mpstack_run("--iface", "tunx,10.9.0.2/24", "--", "no-such-command-xyz")
    assert proc.returncode == 127 and "command not found" in proc.stderr
    proc = mpstack_run("--iface", "tunx,10.9.0.2/24", "--")
    assert proc.returncode == 125 and "no command" in proc.stderr


def test_shebang_scripts_are_recognised(tmp_path: Path) -> None:
    from stack.api.run import RunError, check_command

    script = tmp_path / "tool"
    script.write_text("#!/usr/bin/env python3\nprint('hi')\n")
    script.chmod(0o755)
    assert check_command([str(script)]) == str(script)
    isolated = tmp_path / "isolated"
    isolated.write_text("#!/usr/bin/python3 -I\n")
    isolated.chmod(0o755)
    with pytest.raises(RunError, match="isolated"):
        check_command([str(isolated)])
    shell = tmp_path / "shell"
    shell.write_text("#!/bin/sh\necho hi\n")
    shell.chmod(0o755)
    with pytest.raises(RunError, match="not a Python program"):
        check_command([str(shell)])


def test_stack_that_cannot_start_stops_the_program_before_its_first_line() -> None:
    """The program must never silently run on the kernel's TCP instead."""
    proc = mpstack_run("--iface", "tunx,10.9.0.2/24", "--netns", "mps-no-such-namespace",
                       "--", PY, "-c", "print('ran')")
    assert proc.returncode == 125
    assert "ran" not in proc.stdout
    assert proc.stderr.startswith("mpstack run: ") and len(proc.stderr.splitlines()) == 1


# ------------------------------------------------------------- with the kernel
@pytest.fixture(scope="module")
def topo():
    if can_run() is not None:
        pytest.skip(str(can_run()))
    with Topology(1) as t:
        yield t


def iface_args(topo: Topology) -> list[str]:
    """`mpstack run` options for every TUN path of ``topo`` and its namespace."""
    return [a for p in topo.paths for a in ("--iface", p.spec())] + ["--netns", topo.ns]


def wait_for_port(topo: Topology, addr: str, port: int, proc: subprocess.Popen[str],
                  timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stderr.read()}")
        with topo.enter():
            s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
        s.settimeout(1)
        try:
            s.connect((addr, port))
            return
        except OSError:
            time.sleep(0.1)
        finally:
            s.close()
    raise AssertionError(f"nothing listening on {addr} port {port}")


@contextlib.contextmanager
def stack_server(*args: str) -> Iterator[subprocess.Popen[str]]:
    """`mpstack run ARGS` in the background (output piped), killed on the way
    out of the ``with`` if it is still running (a failed test)."""
    proc = subprocess.Popen([PY, "-m", "stack.cli", "run", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_kernel(proc: subprocess.Popen[str]) -> str:
    """SIGINT a kernel-side server (killed after 10 s); its stderr (the log)."""
    proc.send_signal(signal.SIGINT)
    try:
        _, log = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, log = proc.communicate()
    return log


@pytest.mark.root
@pytest.mark.interop
def test_http_server_on_the_stack_serves_a_kernel_client(topo: Topology, tmp_path: Path) -> None:
    """`mpstack run -- python -m http.server --bind ::` (dual stack): a kernel
    urllib client downloads 3 MB intact over IPv4 and IPv6; SIGINT ends the
    server with its own status (0)."""
    data = os.urandom(3 * 1024 * 1024)
    (tmp_path / "blob").write_bytes(data)
    port = next(_ports)
    with stack_server(*iface_args(topo), "--", PY, "-m", "http.server",
                      "--bind", "::", str(port), "--directory", str(tmp_path)) as server:
        wait_for_port(topo, S4, port, server)
        for url in (f"http://{S4}:{port}/blob", f"http://[fd00:1::2]:{port}/blob"):
            with topo.enter():
                with urllib.request.urlopen(url, timeout=20) as resp:
                    got = resp.read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), url
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert f'{K4} - - ' in err and '"GET /blob HTTP/1.1" 200' in err  # the kernel client
    assert "fd00:1::1" in err


@pytest.mark.root
@pytest.mark.interop
def test_urllib_download_from_a_kernel_server_and_exit_status(topo: Topology,
                                                              tmp_path: Path) -> None:
    """A `urllib.request.urlopen` program under mpstack run downloads 4 MB from
    `python -m http.server` in the kernel's namespace: intact, the kernel
    saw the stack's address, the program's exit status (3) comes back, and
    --pcap recorded the connection."""
    data = os.urandom(4 * 1024 * 1024)
    (tmp_path / "blob").write_bytes(data)
    port = next(_ports)
    kernel = topo.popen([PY, "-m", "http.server", "--bind", K4, str(port), "--directory",
                         str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True)
    try:
        wait_for_port(topo, K4, port, kernel)
        program = textwrap.dedent(f"""
            import hashlib, os, socket, sys, urllib.request
            assert "MPSTACK_RUN_CONFIG" not in os.environ
            with urllib.request.urlopen("http://{K4}:{port}/blob", timeout=20) as resp:
                body = resp.read()
            print(len(body), hashlib.sha256(body).hexdigest())
            sys.exit(3)
        """)
        proc = mpstack_run(*iface_args(topo), "--pcap", str(tmp_path / "run.pcap"), "--",
                           PY, "-c", program)
    finally:
        kernel_log = stop_kernel(kernel)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.split() == [str(len(data)), hashlib.sha256(data).hexdigest()]
    assert f'{S4} - - ' in kernel_log and '"GET /blob HTTP/1.1" 200' in kernel_log
    # --pcap recorded the connection, from the SYN to the FINs
    from fastpath.segment import ParseError, parse_segment

    from stack.trace.pcap import open_capture
    from stack.wire.tcp import FIN, SYN

    flags = packets = 0
    with open_capture(tmp_path / "run.pcap") as cap:
        for pkt in cap:
            try:
                seg = parse_segment(pkt.data, verify_checksum=False)
            except ParseError:  # not TCP (e.g. ICMPv6 from the kernel's side)
                continue
            if port in (seg.sport, seg.dport):
                flags |= seg.flags
                packets += 1
    assert flags & SYN and flags & FIN and packets > 10


@pytest.mark.root
@pytest.mark.interop
def test_asyncio_and_selectors_program_on_the_stack(topo: Topology) -> None:
    """An unmodified asyncio program (the standard loop: selectors, add_writer
    for connect and for a full send buffer) echoes 2 MB through a kernel
    echo server; `stack.asyncio` needs no stack_host there; a plain
    `selectors` EVENT_WRITE wait works too."""
    port = next(_ports)
    echo = subprocess.Popen(  # a kernel echo server, in the namespace
        ["ip", "netns", "exec", topo.ns, PY, "-c", textwrap.dedent(f"""
            import socket
            s = socket.create_server(("{K4}", {port}))
            for _ in range(3):
                c, _ = s.accept()
                while d := c.recv(65536):
                    c.sendall(d)
                c.close()
        """)])
    program = textwrap.dedent(f"""
        import asyncio, hashlib, os, selectors, socket, time
        for _ in range(100):
            try:
                socket.create_connection(("{K4}", {port}), timeout=5).close()
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        async def main():
            r, w = await asyncio.open_connection("{K4}", {port})
            data = os.urandom(2 * 1024 * 1024)
            async def pump():
                w.write(data)
                await w.drain()
                w.write_eof()
            t = asyncio.create_task(pump())
            got = await r.read(-1)
            await t
            w.close()
            return hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        ok = asyncio.run(asyncio.wait_for(main(), 30))
        async def default_host():  # stack.asyncio finds the stack it runs on
            import stack.asyncio
            r, w = await stack.asyncio.open_connection("{K4}", {port})
            w.write(b"ping")
            w.write_eof()
            return await r.read() == b"ping"
        ok = ok and asyncio.run(asyncio.wait_for(default_host(), 30))
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("{K4}", {port + 100}))  # nobody there: refused
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_WRITE)
        ready = sel.select(5)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        print(ok, len(ready), err == 111)
    """)
    try:
        proc = mpstack_run(*iface_args(topo), "--", PY, "-c", program, timeout=60)
    finally:
        echo.kill()
        echo.wait()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "1", "True"]


def test_run_as_a_function_returns_the_status() -> None:
    """`run(args, exec_=False)`: the program as a child, its status returned
    (here the stack cannot start: 125 from the child, before the program)."""
    import argparse

    from stack.api import run as run_mod

    parser = argparse.ArgumentParser()
    run_mod.add_arguments(parser)
    args = parser.parse_args(["--iface", "tunx,10.9.0.2/24", "--netns", "mps-no-such-ns",
                              "--", PY, "-c", "print('ran')"])
    assert run_mod.run(args, exec_=False) == 125


@pytest.mark.root
def test_signal_and_exit_statuses(topo: Topology) -> None:
    """A program killed by SIGTERM: -15 to a parent (exec), 143 from run(exec_=False)."""
    import argparse

    from stack.api import run as run_mod

    program = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    proc = mpstack_run(*iface_args(topo), "--", PY, "-c", program)
    assert proc.returncode == -signal.SIGTERM
    parser = argparse.ArgumentParser()
    run_mod.add_arguments(parser)
    args = parser.parse_args([*iface_args(topo), "--", PY, "-c", program])
    assert run_mod.run(args, exec_=False) == 128 + signal.SIGTERM
    args = parser.parse_args([*iface_args(topo), "--", PY, "-c", "raise SystemExit(42)"])
    assert run_mod.run(args, exec_=False) == 42


@pytest.mark.root
def test_unsupported_uses_fail_with_one_line(topo: Topology) -> None:
    """Handing a stack socket's descriptor to code that wants a kernel socket."""
    cases = {
        "socket.fromfd": "socket.fromfd(s.fileno(), socket.AF_INET, socket.SOCK_STREAM)",
        "os.sendfile": "os.sendfile(s.fileno(), 0, 0, 1)",
        "os.dup2": "os.dup2(s.fileno(), 0)",
        "a TCP socket in a child made by os.fork()": textwrap.dedent("""
            if os.fork() == 0:
                socket.socket()
            _, status = os.wait()
            raise SystemExit(os.waitstatus_to_exitcode(status))"""),
        "a TCP socket of a socket.socket subclass": textwrap.dedent("""
            class Mine(socket.socket):
                pass
            Mine()"""),
    }
    for what, line in cases.items():
        program = f"import os, socket\ns = socket.socket()\n{line}\nprint('went on')"
        proc = mpstack_run(*iface_args(topo), "--", PY, "-c", program)
        assert proc.returncode == 1, (what, proc.stderr)
        assert "went on" not in proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mpstack run: unsupported: " + what), \
            (what, proc.stderr)
    # UDP and AF_UNIX stay on the kernel and work as usual
    program = textwrap.dedent("""
        import socket
        a, b = socket.socketpair()
        a.sendall(b"x"); assert b.recv(1) == b"x"
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0)); u.sendto(b"y", u.getsockname()); assert u.recv(1) == b"y"
        t = socket.socket()
        print(type(u).__module__, type(t).__module__, isinstance(t, socket.socket))
    """)
    proc = mpstack_run(*iface_args(topo), "--", PY, "-c", program)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["stack.api.run_child", "stack.api.socket", "True"]


# ------------------------------------------------ two paths, MPTCP-capable peers
IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)
MPTCP_COUNTERS = ("MPTcpExtMPCapableSYNRX", "MPTcpExtMPCapableSYNACKRX",
                  "MPTcpExtMPJoinSynRx", "MPTcpExtMPJoinSynAckRx")


@pytest.fixture(scope="module")
def topo2():
    if can_run() is not None:
        pytest.skip(str(can_run()))
    with Topology(2) as t:
        t.exec("ip", "mptcp", "endpoint", "flush")
        t.exec("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2")
        yield t


def kernel_endpoint(topo: Topology, kind: str) -> None:
    """The kernel's only MPTCP endpoint: its path-2 address, ``kind``
    "subflow" (a client joins from it) or "signal" (a server announces it)."""
    topo.exec("ip", "mptcp", "endpoint", "flush")
    topo.exec("ip", "mptcp", "endpoint", "add", str(topo.paths[1].kernel_v4.ip), "dev",
              topo.paths[1].tun, kind)


def tun_bytes(topo: Topology) -> list[int]:
    """Bytes through each TUN, both directions (the kernel's counters)."""
    import json

    out = []
    for p in topo.paths:
        info = json.loads(topo.ip("-s", "-j", "link", "show", p.tun).stdout)[0]
        stats = info.get("stats64", info.get("stats", {}))
        out.append(int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"]))
    return out


def check_paths(topo: Topology, before: dict[str, int], bytes_before: list[int],
                size: int) -> str:
    """When the kernel negotiated MPTCP with the stack (the stack's default
    once its MPTCP is wired), both paths must have joined and carried data;
    over plain TCP only the integrity checks of the caller apply."""
    after = topo.nstat()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in MPTCP_COUNTERS}
    carried = [b - a for a, b in zip(bytes_before, tun_bytes(topo), strict=True)]
    if delta["MPTcpExtMPCapableSYNRX"] + delta["MPTcpExtMPCapableSYNACKRX"] == 0:
        assert sum(carried) >= size  # plain TCP (fallback or not yet the default)
        return "tcp"
    assert delta["MPTcpExtMPJoinSynRx"] + delta["MPTcpExtMPJoinSynAckRx"] >= 1, delta
    assert min(carried) >= size // 20, carried  # both subflows carried data
    return "mptcp"


@pytest.mark.root
@pytest.mark.interop
def test_two_paths_http_server_kernel_mptcp_client(topo2: Topology, tmp_path: Path) -> None:
    """`python -m http.server` under mpstack run on two TUN paths; a kernel
    MPTCP client (IPPROTO_MPTCP, a `subflow` endpoint on path 2) downloads
    8 MB intact; with MPTCP negotiated, both paths carry data."""
    import http.client

    topo = topo2
    kernel_endpoint(topo, "subflow")
    size = 8 * 1024 * 1024
    data = os.urandom(size)
    (tmp_path / "blob").write_bytes(data)
    port = next(_ports)

    class MptcpConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            with topo.enter():
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
            self.sock.settimeout(self.timeout)
            self.sock.connect((self.host, self.port))

    with stack_server(*iface_args(topo), "--", PY, "-m", "http.server",
                      "--bind", "::", str(port), "--directory", str(tmp_path)) as server:
        wait_for_port(topo, S4, port, server)
        before, bytes_before = topo.nstat(), tun_bytes(topo)
        conn = MptcpConnection(S4, port, timeout=30)
        conn.request("GET", "/blob")
        got = conn.getresponse().read()
        conn.close()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        # issue 5: MPTCP is the default for wildcard-bound sockets, so both
        # paths must carry data (plain TCP here would be a regression)
        assert check_paths(topo, before, bytes_before, size) == "mptcp"
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err


KERNEL_MPTCP_HTTP = textwrap.dedent("""
    import functools, http.server, socket, sys
    class Server(http.server.ThreadingHTTPServer):
        def __init__(self, addr, handler):
            super().__init__(addr, handler, bind_and_activate=False)
            self.socket.close()
            self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM,
                                        getattr(socket, "IPPROTO_MPTCP", 262))
            self.server_bind()
            self.server_activate()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
    try:
        Server(("0.0.0.0", int(sys.argv[1])), handler).serve_forever()
    except KeyboardInterrupt:
        pass
""")


@pytest.mark.root
@pytest.mark.interop
def test_two_paths_urllib_download_from_kernel_mptcp_server(topo2: Topology,
                                                            tmp_path: Path) -> None:
    """A urllib download under mpstack run on two TUN paths from a kernel MPTCP
    HTTP server that announces its second address (`signal` endpoint): 8 MB
    intact, exit status kept; with MPTCP negotiated, both paths carry data."""
    topo = topo2
    kernel_endpoint(topo, "signal")
    size = 8 * 1024 * 1024
    data = os.urandom(size)
    (tmp_path / "blob").write_bytes(data)
    port = next(_ports)
    kernel = topo.popen([PY, "-c", KERNEL_MPTCP_HTTP, str(port), str(tmp_path)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    program = textwrap.dedent(f"""
        import hashlib, sys, urllib.request
        body = urllib.request.urlopen("http://{K4}:{port}/blob", timeout=30).read()
        print(hashlib.sha256(body).hexdigest())
        sys.exit(5)
    """)
    try:
        wait_for_port(topo, K4, port, kernel)
        before, bytes_before = topo.nstat(), tun_bytes(topo)
        proc = mpstack_run(*iface_args(topo), "--", PY, "-c", program)
        assert proc.returncode == 5, proc.stderr
        assert proc.stdout.strip() == hashlib.sha256(data).hexdigest()
        assert check_paths(topo, before, bytes_before, size) == "mptcp"  # both paths
    finally:
        stop_kernel(kernel)


# ------------------------------------------------------------------------ TLS
HTTPS_SERVER = textwrap.dedent("""
    import functools, http.server, ssl, sys
    bind, port, directory, cert, key = sys.argv[1:6]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    httpd = http.server.ThreadingHTTPServer((bind, int(port)), handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
""")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for the kernel's and the stack's addresses."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"), K4, S4)


@pytest.mark.root
@pytest.mark.interop
def test_https_download_from_kernel_server(topo: Topology, tmp_path: Path,
                                           certificate: tuple[str, str]) -> None:
    """urllib over TLS (certificate and host name checked) under mpstack run,
    from a kernel HTTPS server: 2 MB intact; TLS runs over the stack socket."""
    cert, key = certificate
    data = os.urandom(2 * 1024 * 1024)
    (tmp_path / "blob").write_bytes(data)
    port = next(_ports)
    kernel = topo.popen([PY, "-c", HTTPS_SERVER, K4, str(port), str(tmp_path), cert, key],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    program = textwrap.dedent(f"""
        import hashlib, ssl, urllib.request
        ctx = ssl.create_default_context(cafile={cert!r})
        with urllib.request.urlopen("https://{K4}:{port}/blob", context=ctx, timeout=20) as r:
            body = r.read()
        print(hashlib.sha256(body).hexdigest())
    """)
    try:
        wait_for_port(topo, K4, port, kernel)
        proc = mpstack_run(*iface_args(topo), "--", PY, "-c", program)
    finally:
        log = stop_kernel(kernel)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == hashlib.sha256(data).hexdigest()
    assert f'{S4} - - ' in log and '"GET /blob HTTP/1.1" 200' in log


@pytest.mark.root
@pytest.mark.interop
def test_https_server_on_the_stack(topo: Topology, tmp_path: Path,
                                   certificate: tuple[str, str]) -> None:
    """An HTTPS server (http.server + SSLContext.wrap_socket of the listening
    socket) under mpstack run; a kernel urllib client checks the certificate
    and downloads 2 MB intact."""
    import ssl

    cert, key = certificate
    data = os.urandom(2 * 1024 * 1024)
    (tmp_path / "blob").write_bytes(data)
    port = next(_ports)
    with stack_server(*iface_args(topo), "--", PY, "-c", HTTPS_SERVER,
                      S4, str(port), str(tmp_path), cert, key) as server:
        wait_for_port(topo, S4, port, server)
        ctx = ssl.create_default_context(cafile=cert)
        with topo.enter():
            with urllib.request.urlopen(f"https://{S4}:{port}/blob", context=ctx,
                                        timeout=20) as resp:
                got = resp.read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err


def test_tls_socket_over_virtual_links(certificate: tuple[str, str]) -> None:
    """stack.api.tls (what mpstack run gives for wrap_socket): a TLS server and
    client on two stack hosts over in-memory links (no root): 1 MB each way,
    makefile() lines, peer certificate, close with a file still open, and
    SSLWantReadError in non-blocking mode."""
    import ssl
    import threading

    import stack
    from stack.api.tls import TlsSocket, wrap_socket

    cert, key = certificate
    a, b = stack.Host.virtual(delay=0.0005)
    try:
        port = next(_ports)
        listener = b.create_server((S4, port))
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(cert, key)
        tls_listener = wrap_socket(sctx, listener, server_side=True)
        payload = os.urandom(1 << 20)
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                conn, _ = tls_listener.accept()
                with conn:
                    f = conn.makefile("rb")
                    line = f.readline()
                    body = f.read(len(payload))
                    conn.sendall(line.upper() + hashlib.sha256(body).digest() + payload)
                    f.close()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        cctx = ssl.create_default_context(cafile=cert)
        tls = wrap_socket(cctx, a.create_connection((S4, port), timeout=10),
                          server_hostname=S4)
        assert isinstance(tls, TlsSocket) and tls.version().startswith("TLS")
        assert tls.getpeercert()["subject"] == ((("commonName", "mpstack"),),)
        tls.sendall(b"hello tls\n" + payload)
        f = tls.makefile("rb")
        tls.close()  # the file keeps the connection, as with a kernel socket
        assert f.readline() == b"HELLO TLS\n"
        assert f.read(32) == hashlib.sha256(payload).digest()
        assert f.read(len(payload)) == payload
        f.close()
        t.join(10)
        assert not errors, errors
        # full duplex from two threads: one sends 2 MB while the other reads
        # the echo (a single lock held across a blocking recv would deadlock)
        port3 = next(_ports)
        tls_listener3 = wrap_socket(sctx, b.create_server((S4, port3)), server_side=True)

        def echo() -> None:
            conn, _ = tls_listener3.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

        t3 = threading.Thread(target=echo, daemon=True)
        t3.start()
        big = os.urandom(2 * 1024 * 1024)
        duplex = wrap_socket(cctx, a.create_connection((S4, port3), timeout=10),
                             server_hostname=S4)
        sender = threading.Thread(target=duplex.sendall, args=(big,), daemon=True)
        sender.start()
        got = bytearray()
        while len(got) < len(big):
            got += duplex.recv(1 << 20)
        sender.join(10)
        assert bytes(got) == big
        duplex.close()
        t3.join(10)
        # non-blocking: nothing to read yet -> SSLWantReadError, as ssl.SSLSocket
        port2 = next(_ports)
        listener2 = b.create_server((S4, port2))
        tls_listener2 = wrap_socket(sctx, listener2, server_side=True)
        t2 = threading.Thread(target=lambda: errors.append(tls_listener2.accept()), daemon=True)
        t2.start()
        tls2 = wrap_socket(cctx, a.create_connection((S4, port2), timeout=10),
                           server_hostname=S4)
        tls2.setblocking(False)
        with pytest.raises(ssl.SSLWantReadError):
            tls2.recv(10)
        tls2.close()
        t2.join(10)
    finally:
        a.close(timeout=1)
        b.close(timeout=1)


def test_stack_selector_maps_write_interest(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_child.StackSelector (DefaultSelector under mpstack run): EVENT_WRITE
    on a stack socket waits for the connect to complete (its fileno() alone
    would always poll writable), EVENT_READ for data; kernel fds pass through."""
    import selectors

    import stack
    from stack.api import run_child

    a, b = stack.Host.virtual(delay=0.01)
    try:
        monkeypatch.setattr(run_child, "_host", a)
        port = next(_ports)
        srv = b.create_server((S4, port))
        s = a.socket(socket.AF_INET)
        s.setblocking(False)
        assert s.connect_ex((S4, port)) == 115  # EINPROGRESS
        r_pipe, w_pipe = os.pipe()
        sel = run_child.StackSelector()
        key = sel.register(s.fileno(), selectors.EVENT_WRITE, "sock")
        sel.register(r_pipe, selectors.EVENT_READ, "pipe")
        assert sel.get_map()[s.fileno()] is key and len(sel.get_map()) == 2
        assert sel.select(0) == []  # handshake in flight: not writable yet
        ready = sel.select(5)
        assert [(k.data, m) for k, m in ready] == [("sock", selectors.EVENT_WRITE)]
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        conn, _ = srv.accept()
        sel.modify(s.fileno(), selectors.EVENT_READ, "sock-r")
        assert sel.select(0) == []
        conn.sendall(b"data")
        os.write(w_pipe, b"x")
        deadline = time.monotonic() + 5
        seen: set[str] = set()
        while seen != {"sock-r", "pipe"} and time.monotonic() < deadline:
            seen |= {k.data for k, m in sel.select(1) if m == selectors.EVENT_READ}
        assert seen == {"sock-r", "pipe"}
        assert s.recv(10) == b"data"
        sel.unregister(s.fileno())
        sel.unregister(r_pipe)
        assert len(sel.get_map()) == 0
        sel.close()
        for fd in (r_pipe, w_pipe):
            os.close(fd)
        s.close()
        conn.close()
        srv.close()
    finally:
        a.close(timeout=1)
        b.close(timeout=1)


@pytest.mark.root
def test_the_program_own_sitecustomize_and_pythonpath_still_work(topo: Topology,
                                                                  tmp_path: Path) -> None:
    """The hook shadows a `sitecustomize` on the user's PYTHONPATH: it runs it
    afterwards, and the program (and its children) see the user's PYTHONPATH."""
    (tmp_path / "sitecustomize.py").write_text("import builtins\nbuiltins.CHAINED = True\n")
    env = dict(ENV, PYTHONPATH=str(tmp_path))
    program = textwrap.dedent("""
        import builtins, os, socket, subprocess, sys
        child = subprocess.run([sys.executable, "-c",
                                "import socket; print(type(socket.socket()).__module__)"],
                               capture_output=True, text=True).stdout.strip()
        print(getattr(builtins, "CHAINED", False), os.environ["PYTHONPATH"],
              type(socket.socket()).__module__, child)
    """)
    proc = mpstack_run(*iface_args(topo), "--", PY, "-c", program, env=env)
    assert proc.returncode == 0, proc.stderr
    # the child Python runs on the kernel: its socket is the standard one
    assert proc.stdout.split() == ["True", str(tmp_path), "stack.api.socket", "socket"]
