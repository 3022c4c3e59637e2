"""The sans-IO host: interfaces, routes, demultiplexing, listeners, timers
(see core.py and docs/INTERFACES.md "stack/host")."""

from __future__ import annotations

from .core import HostCore
from .frame import Frame
from .interfaces import Interface
from .listener import Listener
from .routes import NoRoute, Route, RouteTable

__all__ = ["HostCore", "Frame", "Interface", "Listener", "NoRoute", "Route", "RouteTable"]
