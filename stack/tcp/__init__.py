"""The TCP engine: one connection (one MPTCP subflow), sans-IO.

Public API (docs/INTERFACES.md "stack/tcp"): :class:`TcpConnection`,
:class:`TcpConfig`, :class:`TcpState`, :class:`TcpSegment` and the flag
constants, the modular sequence helpers in :mod:`stack.tcp.seq`.
"""

from __future__ import annotations

from .config import TcpConfig
from .connection import TcpConnection
from .segment import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, TcpSegment
from .state import TcpState
from .stats import TcpStats

__all__ = [
    "TcpConfig",
    "TcpConnection",
    "TcpSegment",
    "TcpState",
    "TcpStats",
    "FIN",
    "SYN",
    "RST",
    "PSH",
    "ACK",
    "URG",
    "ECE",
    "CWR",
]
