"""The facade layer: the running host (`Host`) and its BSD-style sockets.

This is where the sans-IO core meets a driver (`tun/`); nothing in the core
imports it (DESIGN.md §2).
"""

from __future__ import annotations

from stack.api.host import Host, IfaceSpec
from stack.api.socket import Socket

__all__ = ["Host", "IfaceSpec", "Socket"]
