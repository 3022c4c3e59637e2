"""The TCP engine: one connection (one MPTCP subflow), sans-IO.

Public API (docs/INTERFACES.md "stack/tcp"): :class:`TcpConnection`,
:class:`TcpConfig`, :class:`TcpState`, :class:`TcpSegment` and the flag
constants, the modular sequence helpers in :mod:`stack.tcp.seq`.

Modules, one job each: ``seq`` (32/64-bit modular arithmetic), ``segment``
(TcpSegment, flags), ``state`` (the eleven states), ``config``, ``stats``,
``sendbuf`` (ring keyed by sequence number), ``recvbuf`` (in-order bytes plus
the fast-path Assembler), ``options`` (timestamps clock, window scale, SACK
block choice), ``connection`` (TCB, opens, application calls, timers),
``receive`` (segment arrival, RFC 9293 §3.10.7 + RFC 5961/7323/6675/6582),
``transmit`` (what to send: windows, Nagle, recovery, probes). ``rtt``,
``sack`` and ``congestion`` are the RFC 6298 estimator, the RFC 6675
scoreboard and the pluggable congestion controllers.
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
    "FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR",
]
