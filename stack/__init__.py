"""mpstack: a userspace TCP and MPTCP v1 stack (sans-IO core, TUN driver, facade).

`stack.Host` (the running host on TUN devices) and `stack.socket` (the
BSD-style socket module) are loaded on first use, so importing `stack` or any
part of the core stays cheap and never pulls in the facade or the driver.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Host", "socket"]


def __getattr__(name: str) -> Any:
    if name == "Host":
        return importlib.import_module("stack.api.host").Host
    if name == "socket":
        return importlib.import_module("stack.socket")
    raise AttributeError(f"module 'stack' has no attribute {name!r}")
