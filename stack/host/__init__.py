"""The sans-IO host: interfaces, routes, demultiplexing, listeners, timers
(see core.py and docs/INTERFACES.md "stack/host")."""

from __future__ import annotations

from .frame import Frame
from .interfaces import Interface
from .listener import Listener
from .mptcp import MptcpHostCore
from .routes import NoRoute, Route, RouteTable

# The host applications use: the TCP host of core.py with MPTCP support
# (off unless asked for; docs/INTERFACES.md "stack/host", "stack/mptcp").
HostCore = MptcpHostCore

__all__ = ["HostCore", "MptcpHostCore", "Frame", "Interface", "Listener", "NoRoute", "Route",
           "RouteTable"]
