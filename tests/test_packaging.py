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


@pytest.mark.slow
def test_non_editable_wheel_builds_and_runs_on_its_own(tmp_path) -> None:
    """`pip install .` (non-editable): the wheel built from a copy of the source
    holds the packages `stack`, `fastpath` (with its compiled extensions) and
    `tun` and the `mpstack` script, and runs with nothing but itself on the path."""
    import zipfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard"],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git work tree: cannot list the source files")
    src = tmp_path / "src"
    for name in listed.stdout.splitlines():
        if (repo / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation",
                            "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mpstack-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(zf.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
        zf.extractall(tmp_path / "site")
    assert {"stack/__init__.py", "tun/__init__.py", "fastpath/__init__.py"} <= set(names)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in COMPILED:
        assert name.replace(".", "/") + suffix in names, name
    assert "mpstack = stack.cli:main" in entry_points
    # -S: no site-packages (so not the editable install); only the wheel's files
    pcap = repo / "pcaps" / "mptcp-all-options.pcap"
    code = ("import sys, fastpath.segment\n"
            "assert fastpath.segment.__file__.startswith(sys.argv[1])\n"
            "from stack.cli import main\n"
            "sys.exit(main(['trace', 'dump', '-c', '1', sys.argv[2]]))")
    run = subprocess.run([sys.executable, "-S", "-c", code, str(tmp_path / "site"), str(pcap)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path / "site")})
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("1 ") and "MP_CAPABLE" in run.stdout
