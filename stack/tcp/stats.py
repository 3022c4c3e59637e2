"""Per-connection counters (bytes and segments each way, retransmissions,
drops) and a snapshot of the congestion and RTT state."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["TcpStats"]


@dataclass(slots=True)
class TcpStats:
    bytes_sent: int = 0  # new payload bytes sent (retransmissions excluded)
    bytes_received: int = 0  # payload bytes delivered in order
    bytes_retransmitted: int = 0
    segments_sent: int = 0
    segments_received: int = 0
    retransmissions: int = 0  # retransmitted segments (any cause)
    fast_retransmits: int = 0  # recovery episodes started by dupacks / SACK
    timeouts: int = 0  # RTO expirations
    dupacks: int = 0
    challenge_acks: int = 0  # RFC 5961 challenge ACKs sent
    challenge_acks_suppressed: int = 0  # ... not sent because of the rate limit
    paws_drops: int = 0  # RFC 7323 §5 rejections
    out_of_window: int = 0  # unacceptable segments (RFC 9293 §3.10.7.4 first check)
    bad_acks: int = 0  # ACKs outside [SND.UNA - MAX.SND.WND, SND.NXT]
    dropped: int = 0  # other drops (no ACK bit, wrong state, ...)
    ooo_segments: int = 0  # out-of-order segments stored
    zero_window_probes: int = 0
    keepalive_probes: int = 0
    # Snapshot (refreshed by TcpConnection.stats).
    srtt: float | None = None
    rttvar: float | None = None
    rto: float = 0.0
    cwnd: int = 0
    ssthresh: int = 0
    state: str = "CLOSED"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
