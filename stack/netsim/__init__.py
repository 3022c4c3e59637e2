"""In-memory links and a virtual-time driver for hosts (DESIGN.md §1, §4.3)."""

from __future__ import annotations

from .link import Link, LinkStats
from .network import Network, SimulationLimit
from .router import Router

__all__ = ["Link", "LinkStats", "Network", "Router", "SimulationLimit"]
