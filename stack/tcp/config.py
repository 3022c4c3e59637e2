"""Per-connection TCP settings (the host fills them from its interfaces and the
application's socket options)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TcpConfig"]


@dataclass
class TcpConfig:
    # Maximum segment size we advertise and may send (MTU - IP - TCP headers);
    # the connection sends with min(mss, peer's MSS option) (RFC 9293 §3.7.1).
    mss: int = 1460
    # Largest payload one emitted TcpSegment may carry; > mss with TSO/GSO.
    # None means mss (no super-segments).
    max_segment: int | None = None
    rcvbuf: int = 256 * 1024
    sndbuf: int = 256 * 1024
    nodelay: bool = False  # TCP_NODELAY: no Nagle (RFC 9293 §3.7.4)
    keepalive: bool = False  # RFC 9293 §3.8.4
    keepalive_idle: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_count: int = 9
    congestion: str = "newreno"
    # Extra keyword arguments for make_congestion (e.g. {"abc_l": None} when
    # the peer's ACKs are GRO stretch ACKs, {"hystart": True}, {"group": g}).
    congestion_options: dict[str, Any] = field(default_factory=dict)
    sack: bool = True  # RFC 2018
    timestamps: bool = True  # RFC 7323 §3
    window_scaling: bool = True  # RFC 7323 §2
    delayed_ack: float = 0.04  # RFC 9293 §3.8.6.3 / RFC 5681 §4.2; 0 = off
    time_wait: float = 60.0  # 2*MSL
    initial_rto: float = 1.0  # RFC 6298 §2.1
    min_rto: float = 0.2
    max_rto: float = 120.0
    syn_retries: int = 6  # Linux tcp_syn_retries
    max_retries: int = 15  # Linux tcp_retries2: RTOs before ETIMEDOUT
    # RFC 5961 §7: challenge ACKs sent per second by this connection.
    challenge_ack_limit: int = 10
    # Persist timer bounds (RFC 9293 §3.8.6.1).
    persist_min: float = 0.2
    persist_max: float = 60.0
