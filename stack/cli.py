"""The ``mpstack`` command: argparse front end with lazily imported subcommands.

Every subcommand lives in its own module exposing ``add_arguments(parser)``
and ``run(args) -> int``; the table below maps command names to modules.
Only the module of the command being run is imported (and the top-level
``--help`` imports none of them), so a command whose module is broken or not
written yet never stops the others, and start-up stays fast. A command whose
module does not exist is left out of ``--help`` and reported as unavailable.

To add a command, add a row: ``"name": ("package.module", "one-line help")``
at the top level, or under a group such as ``trace``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import PathFinder
from types import ModuleType

PROG = "mpstack"

# name -> (module, help) for leaf commands; name -> (help, {sub: (module, help)})
# for groups.
COMMANDS: dict[str, tuple[str, str]] = {
    "nc": ("stack.api.nc", "netcat over the userspace (MP)TCP stack on TUN devices"),
    "run": ("stack.api.run", "run an unmodified Python program with its TCP on the stack"),
}
GROUPS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "trace": ("decode, inspect, replay and compare packet traces", {
        "dump": ("stack.trace.dump", "one line (or JSON object) per packet, MPTCP decoded"),
        "inspect": ("stack.trace.inspect", "MPTCP connections and subflows of a trace"),
        "replay": ("stack.trace.replay", "replay a trace against the stack"),
        "diff": ("stack.trace.diff", "compare two traces at the decoded level"),
    }),
}


def _available(module: str) -> bool:
    """Whether ``module`` exists, found on the file system without importing
    it or its parent packages (``stack.api`` imports the whole socket layer)."""
    parts = module.split(".")
    top = sys.modules.get(parts[0])
    path = getattr(top, "__path__", None)
    if path is None:  # not an imported package: ask the import system
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False
    for k in range(1, len(parts)):
        spec = PathFinder.find_spec(".".join(parts[:k + 1]), path)
        if spec is None:
            return False
        path = spec.submodule_search_locations
        if path is None and k < len(parts) - 1:
            return False  # a module where a package was expected
    return True


def _selected(argv: Sequence[str]) -> list[str]:
    """The command path named by argv (first positional words), e.g.
    ``["trace", "dump"]``; options before the command are not allowed."""
    path: list[str] = []
    words = list(argv[:2])
    if words and words[0] in COMMANDS:
        return [words[0]]
    if words and words[0] in GROUPS:
        path.append(words[0])
        if len(words) > 1 and words[1] in GROUPS[words[0]][1]:
            path.append(words[1])
    return path


def _missing_command(argv: Sequence[str]) -> str | None:
    """The command path named by argv when its module does not exist."""
    path = _selected(argv)
    if not path:
        return None
    if path[0] in COMMANDS:
        module = COMMANDS[path[0]][0]
    elif len(path) == 2:
        module = GROUPS[path[0]][1][path[1]][0]
    else:
        return None
    return None if _available(module) else " ".join(path)


def _load(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            return None  # the command itself is not there (yet)
        raise


def build_parser(argv: Sequence[str] = ()) -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The parser, with the arguments of the command selected by ``argv``
    filled in; also the map from command path ("trace dump") to module."""
    selected = _selected(argv)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="mpstack: a userspace TCP and Multipath TCP (RFC 8684) stack, "
                    "and tools for MPTCP packet traces.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, str] = {}

    def leaf(subparsers: argparse._SubParsersAction, path: list[str], module: str,
             help_text: str) -> None:
        if not _available(module):
            return
        p = subparsers.add_parser(path[-1], help=help_text, description=help_text)
        p.set_defaults(_command=" ".join(path))
        modules[" ".join(path)] = module
        if path == selected:
            mod = _load(module)
            if mod is not None:
                mod.add_arguments(p)

    for name, (module, help_text) in COMMANDS.items():
        leaf(sub, [name], module, help_text)
    for group, (help_text, children) in GROUPS.items():
        gp = sub.add_parser(group, help=help_text, description=help_text)
        gsub = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        gp.set_defaults(_group_parser=gp)
        for name, (module, child_help) in children.items():
            leaf(gsub, [group, name], module, child_help)
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mpstack`` console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    missing = _missing_command(args_list)
    if missing is not None:
        print(f"{PROG}: {missing}: not available in this build", file=sys.stderr)
        return 2
    parser, modules = build_parser(args_list)
    args = parser.parse_args(args_list)
    command = getattr(args, "_command", None)
    if command is None:
        # no command, or a group without its subcommand: show the right help
        (getattr(args, "_group_parser", None) or parser).print_help(sys.stderr)
        return 2
    mod = _load(modules[command])
    if mod is None:
        print(f"{PROG}: {command}: not available in this build", file=sys.stderr)
        return 2
    try:
        return int(mod.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. "| head"): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
