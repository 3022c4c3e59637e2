"""A self-signed certificate for the TLS tests (not a test module itself)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def self_signed_certificate(directory: Path, *ips: str, cn: str = "mpstack") -> tuple[str, str]:
    """``(cert, key)`` PEM paths in ``directory``: RSA 2048, two days, named
    ``cn`` with the IP addresses ``ips`` as subjectAltNames (openssl; the test
    is skipped when openssl cannot make one)."""
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    san = ",".join(f"IP:{ip}" for ip in ips)
    proc = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                           "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={cn}",
                           "-addext", f"subjectAltName={san}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate: {proc.stderr.strip()[:200]}")
    return cert, key
