"""NewReno congestion control: RFC 5681 with RFC 3465 byte counting.

Slow start (ABC, L = 2) and the recovery helpers live in
:class:`~stack.tcp.congestion.CongestionBase`; this module adds the Reno
multiplicative decrease and the additive increase of congestion avoidance.
The NewReno partial-ACK logic of RFC 6582 (which segment to retransmit, when
recovery ends) is the connection's; the window side of it is
``on_dupack`` / ``on_partial_ack`` / ``on_recovery_end`` in the base class.
"""

from __future__ import annotations

from typing import Any

from stack.tcp.congestion import CongestionBase

__all__ = ["NewReno"]


class NewReno(CongestionBase):
    name = "newreno"

    def __init__(self, mss: int, **kwargs: Any) -> None:
        super().__init__(mss, **kwargs)
        self.bytes_acked = 0  # RFC 3465 §2.1 counter for congestion avoidance

    def _ssthresh_after_loss(self, now: float, in_flight: int) -> int:
        # RFC 5681 §3.1 eq. (4): ssthresh = max(FlightSize / 2, 2*SMSS).
        self.bytes_acked = 0
        return max(in_flight // 2, 2 * self.mss)

    def _avoid(self, acked_bytes: int, rtt: float | None, now: float) -> None:
        # RFC 3465 §2.1 / RFC 5681 §3.1: cwnd grows by one SMSS once a whole
        # window of bytes has been acknowledged, i.e. about +1 SMSS per RTT.
        self.bytes_acked += acked_bytes
        if self.bytes_acked >= self.cwnd:
            self.bytes_acked -= self.cwnd
            self.cwnd += self.mss

    def _after_rto(self, now: float) -> None:
        self.bytes_acked = 0
