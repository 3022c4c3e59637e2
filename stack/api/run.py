"""`mpstack run`: run an unmodified Python program with its TCP on the userspace stack.

    mpstack run --iface NAME,ADDR/PLEN[,gw=GW] [--iface ...] [--netns NS] -- COMMAND [ARG...]

The userspace counterpart of Linux's `mptcpize run`: mptcpize preloads a C
library that turns the program's TCP sockets into kernel MPTCP sockets; here
the program's Python interpreter loads the stack itself. COMMAND is executed
(exec: same process, signals and terminal untouched) with the directory of
`stack/api/runsite/sitecustomize.py` first on PYTHONPATH and its settings in
the environment; at start-up that hook starts a `stack.Host` on the TUN
interfaces in the program's own process and replaces `socket.socket` for
AF_INET/AF_INET6 SOCK_STREAM sockets (stack/api/run_child.py). UDP, AF_UNIX
and name resolution stay on the kernel, and so does every program this one
starts (the settings are removed from the environment after use).

Exit status: COMMAND's own (a command exiting 3 gives 3; killed by a signal,
the shell's 128+N). mpstack run itself fails with one line on stderr and:
125 for bad arguments, a command that is not a Python program (only Python
programs can be moved: the kernel's sockets of other programs cannot be
intercepted from userspace without LD_PRELOAD of a C shim), Python options
that skip the hook (-I, -E, -S), or a stack that cannot start (no TUN device,
no permission); 126 when COMMAND cannot be executed; 127 when it is not found.
Inside the program, TLS works (`SSLContext.wrap_socket` of a stack socket is
a `stack.api.tls.TlsSocket`), and so do `selectors`/asyncio. What cannot work
on a userspace socket (its descriptor given to code that wants a kernel
socket: `socket.fromfd`, `socket.socket(fileno=...)`, `os.sendfile`,
`os.dup`/`os.dup2`; new TCP
sockets in an `os.fork()` child) raises an OSError(EOPNOTSUPP) whose message
starts with "mpstack run: unsupported:"; uncaught, that one line is printed
instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import stack
from stack.api.run_child import CONFIG_ENV

PREFIX = "mpstack run"
EXIT_USAGE = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
IFACE_HINT = "NAME,ADDR/PLEN[,ADDR/PLEN][,gw=GW][,mtu=N]"

SITE_DIR = Path(__file__).resolve().parent / "runsite"
PACKAGE_ROOT = Path(stack.__file__).resolve().parents[1]

_PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)*)?([dmu]|-dbg)?$")
# Python options (3.11) that take a value; a value may be glued: -Wignore.
_PY_OPTS_WITH_VALUE = set("WX")
# Options that stop PYTHONPATH or site (hence sitecustomize) from being used.
_PY_OPTS_SKIP_HOOK = {"I": "-I (isolated mode)", "E": "-E (ignores PYTHON* variables)",
                      "S": "-S (no site module)"}


class RunError(Exception):
    """A failure of mpstack run itself: one line, exit status `code`."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = (f"%(prog)s --iface {IFACE_HINT} [--iface ...] [--netns NS] "
                    "[--no-offload] [--pcap FILE] -- COMMAND [ARG...]")
    parser.description = ("Run an unmodified Python program with its TCP sockets "
                          "(AF_INET/AF_INET6, SOCK_STREAM) on the userspace stack "
                          "(the counterpart of Linux's mptcpize). Exits with the "
                          "program's status.")
    parser.add_argument("--iface", action="append", default=[], metavar=IFACE_HINT,
                        help="a TUN interface and the stack's own address(es) on it "
                             "(repeatable; one per path)")
    parser.add_argument("--netns", metavar="NAME",
                        help="open the TUN devices inside this network namespace")
    off = parser.add_mutually_exclusive_group()
    off.add_argument("--offload", dest="offload", action="store_true", default=True,
                     help="use TUN offloads (vnet header, TSO, checksum; default)")
    off.add_argument("--no-offload", dest="offload", action="store_false",
                     help="plain TUN packets, no offloads")
    parser.add_argument("--pcap", metavar="FILE",
                        help="record every packet the stack sends or receives "
                             "(pcap, raw IP; TCP super-segments recorded whole)")
    parser.add_argument("--linger", type=float, default=10.0, metavar="SECONDS",
                        help="at exit, how long queued data may take to be delivered "
                             "before connections are reset (default 10)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                        help="the Python program and its arguments")


# ------------------------------------------------------------ command checks
def _shebang(path: str) -> list[str] | None:
    """The interpreter line of a script, split (None: not a script)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return line.split()


def _is_python_binary(path: str) -> bool:
    for candidate in (path, os.path.realpath(path)):
        if _PYTHON_NAME.match(os.path.basename(candidate)):
            return True
    return os.path.realpath(path) == os.path.realpath(sys.executable)


def _check_python_options(argv: list[str], where: str) -> None:
    """Refuse the interpreter options under which sitecustomize never runs."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return
        if arg.startswith("--"):
            if arg in ("--check-hash-based-pycs",):
                i += 1
            i += 1
            continue
        letters = arg[1:]
        for k, letter in enumerate(letters):
            if letter in _PY_OPTS_SKIP_HOOK:
                raise RunError(f"{where}: python {_PY_OPTS_SKIP_HOOK[letter]} would skip the "
                               f"stack's start-up hook; run it without that option")
            if letter in ("c", "m"):
                return  # the rest is the program
            if letter in _PY_OPTS_WITH_VALUE:
                if k == len(letters) - 1:
                    i += 1  # the value is the next word
                break
        i += 1


def check_command(command: list[str]) -> str:
    """The executable path of a Python `command`, or RunError saying why not."""
    if not command:
        raise RunError("no command given (usage: mpstack run --iface ... -- COMMAND ...)")
    name = command[0]
    path = shutil.which(name) if os.sep not in name else name
    if path is None or not os.path.exists(path):
        raise RunError(f"{name}: command not found", EXIT_NOT_FOUND)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise RunError(f"{name}: cannot execute (not an executable file)", EXIT_CANNOT_EXECUTE)
    if _is_python_binary(path):
        _check_python_options(command[1:], name)
        return path
    line = _shebang(path)
    if line:
        words = line
        if os.path.basename(line[0]) == "env":
            words = line[1:]
            while words and words[0].startswith("-"):  # env's own options (-S)
                words = words[1:]
        if words and _PYTHON_NAME.match(os.path.basename(words[0])):
            _check_python_options(words[1:], name)
            return path
    raise RunError(f"{name} is not a Python program: only a Python program's sockets can be "
                   f"moved to the userspace stack (its interpreter loads the stack); "
                   f"other programs use the kernel's TCP")


# ------------------------------------------------------------------- running
def child_environment(args: argparse.Namespace, base: dict[str, str] | None = None
                      ) -> dict[str, str]:
    """The environment COMMAND runs with: the start-up hook first on PYTHONPATH
    and the stack's settings (removed by the hook once read)."""
    env = dict(os.environ if base is None else base)
    old = env.get("PYTHONPATH")
    config = {
        "ifaces": list(args.iface),
        "netns": args.netns,
        "offload": bool(args.offload),
        "linger": float(args.linger),
        "pcap": os.path.abspath(args.pcap) if getattr(args, "pcap", None) else None,
        "package_root": str(PACKAGE_ROOT),
        "pythonpath": old,
    }
    env[CONFIG_ENV] = json.dumps(config)
    env["PYTHONPATH"] = str(SITE_DIR) + (os.pathsep + old if old else "")
    return env


def _validate(args: argparse.Namespace) -> list[str]:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not args.iface:
        raise RunError(f"at least one --iface {IFACE_HINT} is needed")
    from stack.api.host import IfaceSpec

    for spec in args.iface:
        try:
            IfaceSpec.parse(spec)
        except ValueError as exc:
            raise RunError(str(exc)) from None
    if args.linger < 0:
        raise RunError("--linger must be >= 0")
    check_command(command)
    return command


def run(args: argparse.Namespace, *, exec_: bool = True) -> int:
    """Check, then execute COMMAND in this process (`exec_`, what the CLI does)
    or as a child whose exit status is returned."""
    try:
        command = _validate(args)
    except RunError as exc:
        print(f"{PREFIX}: {exc}", file=sys.stderr)
        return exc.code
    env = child_environment(args)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if exec_:
            os.execvpe(command[0], command, env)
        proc = subprocess.run(command, env=env)
    except FileNotFoundError:
        print(f"{PREFIX}: {command[0]}: command not found", file=sys.stderr)
        return EXIT_NOT_FOUND
    except OSError as exc:
        print(f"{PREFIX}: {command[0]}: cannot execute: {exc.strerror}", file=sys.stderr)
        return EXIT_CANNOT_EXECUTE
    code = proc.returncode
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mpstack run")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["RunError", "add_arguments", "check_command", "child_environment", "main", "run"]
