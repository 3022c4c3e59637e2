"""RFC 6897 §6 (other compatibility points): checklist rows C1-C3."""

from __future__ import annotations

import socket as std
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from rfc6897_util import connect, hosts, pump, server, wait

import stack.api.multipath as multipath
from stack.api.happy_eyeballs import create_connection
from stack.api.tls import TlsSocket
from stack.mptcp.pm import PmLimits

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.fixture(scope="module")
def cert_for_first_address(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A certificate naming only the server's first address, 10.1.0.2."""
    d = tmp_path_factory.mktemp("tls6897")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    proc = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                           "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=first",
                           "-addext", "subjectAltName=IP:10.1.0.2"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate: {proc.stderr.strip()[:200]}")
    return cert, key


def test_C1_tls_sees_only_the_initial_subflow_address(cert_for_first_address) -> None:
    """C1: TLS over a two-path MPTCP connection: the certificate names only
    10.1.0.2; the name the application checks (getpeername) stays 10.1.0.2
    after data flowed over 10.2.0.2 and after the initial subflow closed."""
    cert, key = cert_for_first_address
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    cctx = ssl.create_default_context(cafile=cert)
    with hosts(2) as (a, b):
        ls = server(b, 7201)
        c, s = connect(a, ls, "10.1.0.2", 7201)
        box: dict = {}

        def serve() -> None:
            tls = TlsSocket(sctx, s, server_side=True)
            data = bytearray()
            while chunk := tls.recv(65536):
                data += chunk
            box["got"] = bytes(data)

        t = threading.Thread(target=serve)
        t.start()
        tc = TlsSocket(cctx, c, server_hostname="10.1.0.2")  # checks the certificate
        tc.sendall(b"a" * 300_000)
        assert wait(lambda: any(r[0] == "10.2.0.2" for _, r in c.multipath_subflows()))
        first = (c.getsockname(), c.getpeername())
        c.multipath_close_subflow(1)
        assert wait(lambda: first not in c.multipath_subflows())
        tc.sendall(b"b" * 300_000)
        assert tc.getpeername() == ("10.1.0.2", 7201)
        # the identity check an application repeats uses that name: it still holds
        peer_ip = tc.getpeername()[0]
        sans = [v for k, v in tc.getpeercert()["subjectAltName"] if k == "IP Address"]
        assert peer_ip in sans
        c.shutdown(std.SHUT_WR)
        t.join(10)
        assert box["got"] == b"a" * 300_000 + b"b" * 300_000


def test_C2_other_records_of_a_name_are_not_taken_for_the_same_host() -> None:
    """C2 (§6.4): a name with two A records: one wins the race, and no
    subflow ever goes to the other record's address (it may be another host)."""
    with hosts(2) as (a, b):
        b.core.mptcp_config.limits = PmLimits(subflows=8, announce=False)
        ls = server(b, 7202)

        def resolver(name, port, family, type_):
            assert name == "svc.example"
            return [(std.AF_INET, std.SOCK_STREAM, 6, "", ("10.1.0.2", port)),
                    (std.AF_INET, std.SOCK_STREAM, 6, "", ("10.2.0.2", port))]

        c = create_connection(a, ("svc.example", 7202), timeout=5, resolver=resolver)
        s, _ = ls.accept()
        s.settimeout(10)
        pump(c, s, 1_000_000)
        assert wait(lambda: len(c.multipath_subflows()) >= 2)  # MPTCP did add a path...
        remotes = {sf["remote"][0] for sf in c.multipath_info()["subflows"]}
        assert remotes == {"10.1.0.2"}  # ...but never to the other record


def test_C3_no_shim6_hip_or_mobile_ipv6_combination_is_documented() -> None:
    """C3 (§6.3): the documentation says multiaddressed MPTCP is not combined
    with SHIM6, HIP or Mobile IPv6 (none of them is implemented)."""
    for text in (DOCS.read_text(), multipath.__doc__ or ""):
        assert "SHIM6" in text and "HIP" in text and "Mobile IPv6" in text
    assert not any(n for n in dir(multipath) if "shim6" in n.lower() or "hip_" in n.lower())


def test_docs_examples_run() -> None:
    """docs/api.md: every python block runs, in order, in one namespace (the
    runnable example for each requirement)."""
    import re

    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 6
    ns: dict = {}
    try:
        for code in blocks:
            exec(compile(code, str(DOCS), "exec"), ns)  # noqa: S102 - our own docs
    finally:
        for name in ("a", "b"):
            if name in ns:
                ns[name].close(timeout=1)
