"""The installed package: compiled fast path, console script, top-level packages (issue 2)."""

from __future__ import annotations

import importlib
import importlib.machinery
import shutil
import subprocess
import sys

import pytest

COMPILED = ["fastpath.checksum", "fastpath.segment", "fastpath.reassembly", "fastpath.dssmap"]


@pytest.mark.parametrize("name", COMPILED)
def test_fastpath_modules_are_compiled_extensions(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), module.__file__


@pytest.mark.parametrize("name", ["stack", "fastpath", "tun"])
def test_top_level_packages_import(name: str) -> None:
    assert importlib.import_module(name).__file__


def test_console_script_help_exits_zero() -> None:
    exe = shutil.which("mpstack")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "stack.cli", "--help"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "trace" in result.stdout


def test_console_script_rejects_unknown_command() -> None:
    exe = shutil.which("mpstack")
    if exe is None:
        pytest.skip("mpstack console script not on PATH")
    result = subprocess.run([exe, "no-such-command"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
