"""The `mpstack` command line: help, subcommand dispatch, lazy imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stack import cli

REPO = Path(__file__).resolve().parents[1]
OWN_PCAP = REPO / "pcaps" / "mptcp-all-options.pcap"


def mpstack_cmd() -> list[str]:
    """The installed console script, or the module when not installed."""
    exe = shutil.which("mpstack")
    return [exe] if exe else [sys.executable, "-m", "stack.cli"]


def test_help_exits_0_and_lists_trace(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert "trace" in capsys.readouterr().out


def test_console_script_help() -> None:
    proc = subprocess.run([*mpstack_cmd(), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: mpstack" in proc.stdout


def test_trace_dump_help(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["trace", "dump", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out and "file" in out


def test_no_command_or_incomplete_group_prints_usage_and_exits_2(capsys) -> None:
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().err
    assert cli.main(["trace"]) == 2
    assert "SUBCOMMAND" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2


def test_main_job_of_the_readme_runs() -> None:
    """README: `mpstack trace dump pcaps/mptcp-all-options.pcap`."""
    proc = subprocess.run([*mpstack_cmd(), "trace", "dump", str(OWN_PCAP)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) > 100 and "MP_CAPABLE" in lines[0]


@pytest.fixture
def fake_command(tmp_path: Path, monkeypatch):
    """A command module `fakecmd_mod` on sys.path, registered as `mpstack fake`."""
    (tmp_path / "fakecmd_mod.py").write_text(textwrap.dedent("""
        RAN = []
        def add_arguments(parser):
            parser.add_argument("word")
            parser.add_argument("--loud", action="store_true")
        def run(args):
            RAN.append((args.word, args.loud))
            return 7
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fakecmd_mod", "a test command"))
    monkeypatch.delitem(sys.modules, "fakecmd_mod", raising=False)
    yield
    sys.modules.pop("fakecmd_mod", None)


def test_subcommand_module_is_dispatched_and_its_status_returned(fake_command) -> None:
    assert cli.main(["fake", "hello", "--loud"]) == 7
    assert sys.modules["fakecmd_mod"].RAN == [("hello", True)]


def test_other_commands_are_not_imported(fake_command, capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "fake" in capsys.readouterr().out  # listed ...
    assert "fakecmd_mod" not in sys.modules  # ... but not imported
    with pytest.raises(SystemExit):
        cli.main(["trace", "dump", "--help"])
    assert "fakecmd_mod" not in sys.modules


def test_missing_command_module_is_reported(monkeypatch, capsys) -> None:
    monkeypatch.setitem(cli.COMMANDS, "ghost", ("no_such_pkg_xyz.ghost", "not written yet"))
    assert cli.main(["ghost", "--help"]) == 2
    assert "not available" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "ghost" not in capsys.readouterr().out


def test_nc_help_when_its_module_exists() -> None:
    if not cli._available("stack.api.nc"):
        assert cli.main(["nc", "--help"]) == 2
        pytest.skip("stack.api.nc not written yet: reported as unavailable")
    proc = subprocess.run([*mpstack_cmd(), "nc", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: mpstack nc" in proc.stdout


def test_trace_dump_does_not_import_the_socket_layer() -> None:
    code = ("import sys; from stack.cli import main; "
            f"main(['trace', 'dump', '-c', '1', {str(OWN_PCAP)!r}]); "
            "print(sorted(m for m in sys.modules if m.startswith(('stack.api', 'tun'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
