"""Loaded by Python at start-up in a program run by `mpstack run`.

Puts the program's TCP sockets on the userspace stack (stack.api.run_child),
then runs the `sitecustomize` this one shadows, if there is one. Any failure
ends the program before its first line with one line on stderr and exit
status 125: it must never run on the kernel's TCP by mistake.
"""

from __future__ import annotations


def _run() -> None:
    import importlib
    import json
    import os
    import sys

    raw = os.environ.get("MPSTACK_RUN_CONFIG")
    if raw is None:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        root = json.loads(raw).get("package_root")
        added = bool(root) and root not in sys.path
        if added:
            sys.path.insert(0, root)
        try:
            from stack.api.run_child import bootstrap
        finally:
            if added:
                sys.path.remove(root)
    except BaseException as exc:  # noqa: BLE001
        print(f"mpstack run: cannot load the userspace stack in {sys.executable}: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(125)
    bootstrap()
    # Chain to the sitecustomize this one hides (a distribution's, a venv's).
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    this = sys.modules.pop("sitecustomize", None)
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if this is not None:
            sys.modules["sitecustomize"] = this


_run()
