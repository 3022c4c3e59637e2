"""Send side of the data level: DSN assignment, one DSS mapping per chunk,
DATA_ACK processing, DATA_FIN, and re-injection (RFC 8684 §3.3).

``DataSender`` (one per connection) owns the application's bytes from the
data-level ``snd_una`` to ``write_seq``. The scheduler picks a subflow, then
``next_mapping(sf, max_len)`` hands that subflow the next chunk: re-injected
ranges first, then new data, within the connection-level send window
(``wnd_end`` = DATA_ACK + the peer's window, the largest over subflows; §3.3.4,
kernel ``ack_update_msk``). Each chunk becomes exactly one mapping (at most
64 KiB - 1, the DLL being 16 bits), recorded in the subflow's
``TxMappingTable``; the chunk's bytes go to the subflow's TCP send buffer.

When the TCP engine emits a segment, ``dss_for`` gives the DSS option for it:
the mapping covering the segment's first byte (the same on every segment cut
from it and on every retransmission, as the kernel repeats it), a DATA_ACK,
and the DATA_FIN as the kernel writes it (options.c ``mptcp_write_data_fin``):
once every byte is sent, a segment carrying the last mapping gets it folded in
(DLL + 1), any other segment gets a bare DATA_FIN mapping (SSN 0, DLL 1).

Data stays buffered until DATA_ACKed, never merely subflow-ACKed, so
``reinject(sf)`` can send a failed subflow's unacknowledged ranges again on
another subflow (§3.3.6).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from stack.mptcp.dsn import MASK32, dsn_add, dsn_diff, dsn_ge, dsn_gt, dsn_le, dsn_lt, expand
from stack.mptcp.dsn import expand32 as _expand32
from stack.mptcp.mapping import DSS_MAX_DLL, Mapping, TxMappingTable
from stack.wire.mptcp import Dss

try:
    from fastpath.checksum import dss_checksum, incremental_update  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the build
    from fastpath.reference import dss_checksum, incremental_update

__all__ = ["DATA_FIN_RTO_MIN", "DataSender", "SubflowSender", "with_data_fin"]

DATA_FIN_RTO_MIN = 0.2  # s; DATA_FIN retransmission: TCP_RTO_MIN << retries


def with_data_fin(m: Mapping) -> Mapping:
    """``m`` with the DATA_FIN folded in: DLL + 1 (§3.3.3). The checksum's
    pseudo-header DLL word changes, so it is updated incrementally (RFC 1624)."""
    if m.data_fin:
        return m
    csum = None if m.checksum is None else incremental_update(m.checksum, m.dll, m.dll + 1)
    return Mapping(m.dsn, m.ssn, m.dll + 1, True, csum, True)


@dataclass(slots=True)
class SubflowSender:
    """Send-side mapping state of one subflow. ``next_ssn`` is unwrapped
    (relative sequence, first data byte 1)."""

    id: int
    next_ssn: int = 1
    table: TxMappingTable = field(default_factory=TxMappingTable)
    sent: list[list[int]] = field(default_factory=list)  # [start, end) DSN ranges

    def _unwrap(self, seg_ssn: int) -> int:
        return _expand32(self.next_ssn, seg_ssn)

    def mapping_at(self, seg_ssn: int) -> Mapping | None:
        """The mapping covering the segment starting at wire SSN ``seg_ssn``."""
        return self.table.find(self._unwrap(seg_ssn))

    def room(self, seg_ssn: int) -> int:
        """Longest segment that may start at ``seg_ssn`` (never straddle two
        mappings: the receiver would see unmapped bytes)."""
        return self.table.room(self._unwrap(seg_ssn))

    def on_subflow_ack(self, ssn_una: int) -> None:
        """Forget mappings the subflow has acknowledged (wire relative SSN)."""
        self.table.release(self._unwrap(ssn_una))


class DataSender:
    """Connection-level send state (kernel msk ``snd_una``/``snd_nxt``/``write_seq``)."""

    def __init__(self, idsn: int, *, sndbuf: int = 1 << 20, csum: bool = False,
                 initial_window: int = 65535, max_mapping: int = DSS_MAX_DLL - 1) -> None:
        first = dsn_add(idsn, 1)  # first data byte: IDSN + 1 (§3.1)
        self.snd_una = first
        self.snd_nxt = first
        self.write_seq = first
        self.sndbuf = sndbuf
        self.csum = csum
        # keep one DLL value free for folding a DATA_FIN into the last mapping
        self.max_mapping = min(max_mapping, DSS_MAX_DLL - 1)
        self.wnd_end = dsn_add(first, initial_window)
        self._buf = bytearray()  # bytes [snd_una, write_seq)
        self.fin_dsn: int | None = None  # DSN of our DATA_FIN after shutdown()
        self.fin_sent = False
        self.fin_acked = False
        self.fin_retries = 0
        self.fin_deadline: float | None = None
        self._reinject: deque[list[int]] = deque()
        self._subflows: dict[int, SubflowSender] = {}
        self.bytes_acked = 0
        self.bytes_reinjected = 0
        self.retransmitted = False  # any data-level re-send (no fallback after it)
        self.ignored_acks = 0  # DATA_ACKs beyond snd_nxt (ignored, as the kernel)
        # Redundant sending (RFC 6897 A12): each chunk of new data mapped on
        # one subflow is queued for every other one, which sends it (same
        # DSNs) when its window allows; acknowledged copies are skipped.
        self.redundant = False
        self._copies: dict[int, deque[list[int]]] = {}

    # -- application ---------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue application bytes; returns how many fit in the send buffer."""
        if self.fin_dsn is not None:
            raise ValueError("write after shutdown")
        n = min(len(data), self.send_space)
        self._buf += data[:n]
        self.write_seq = dsn_add(self.write_seq, n)
        return n

    @property
    def send_space(self) -> int:
        return max(0, self.sndbuf - len(self._buf))

    def shutdown(self) -> None:
        """No more data: the DATA_FIN takes the DSN after the last byte (§3.3.3)."""
        if self.fin_dsn is None:
            self.fin_dsn = self.write_seq

    @property
    def pending(self) -> int:
        """Bytes written but never sent on any subflow."""
        return dsn_diff(self.write_seq, self.snd_nxt) if not self.fin_sent else 0

    @property
    def data_fin_enabled(self) -> bool:
        """Every byte sent and shutdown requested (kernel ``mptcp_data_fin_enabled``)."""
        return self.fin_dsn is not None and not self.fin_acked and (
            self.fin_sent or self.snd_nxt == self.fin_dsn)

    @property
    def all_acked(self) -> bool:
        if self.fin_dsn is not None:
            return self.fin_acked
        return self.snd_una == self.write_seq

    @property
    def window_room(self) -> int:
        return max(0, dsn_diff(self.wnd_end, self.snd_nxt))

    # -- subflows and mappings -----------------------------------------

    def subflow(self, sf_id: int) -> SubflowSender:
        """The send state of subflow ``sf_id`` (created on first use)."""
        sf = self._subflows.get(sf_id)
        if sf is None:
            sf = self._subflows[sf_id] = SubflowSender(sf_id)
        return sf

    def remove_subflow(self, sf_id: int) -> None:
        self._subflows.pop(sf_id, None)
        self._copies.pop(sf_id, None)

    def set_redundant(self, on: bool) -> None:
        self.redundant = on
        if not on:
            self._copies.clear()

    def _trim_copies(self, q: deque[list[int]]) -> None:
        while q and dsn_le(q[0][1], self.snd_una):
            q.popleft()

    def has_work(self) -> bool:
        if bool(self._reinject) or (self.pending > 0 and self.window_room > 0):
            return True
        for sid, q in self._copies.items():
            self._trim_copies(q)
            if q and sid in self._subflows:
                return True
        return False

    def next_mapping(self, sf: SubflowSender, max_len: int) -> tuple[Mapping, bytes] | None:
        """The next chunk for subflow ``sf``: its redundant copies, then
        re-injections, then new data."""
        max_len = min(max_len, self.max_mapping)
        if max_len <= 0:
            return None
        q = self._copies.get(sf.id)
        if q:
            self._trim_copies(q)
            if q:
                start, end = q[0]
                if dsn_lt(start, self.snd_una):
                    start = self.snd_una
                n = min(max_len, dsn_diff(end, start))
                if n == dsn_diff(end, start):
                    q.popleft()
                else:
                    q[0] = [dsn_add(start, n), end]
                return self._map(sf, start, n)
        got = self._next_mapping(sf, max_len)
        if got is not None and self.redundant:
            m = got[0]
            for sid in self._subflows:
                if sid != sf.id:
                    self._copies.setdefault(sid, deque()).append([m.dsn, dsn_add(m.dsn, m.dll)])
        return got

    def _next_mapping(self, sf: SubflowSender, max_len: int) -> tuple[Mapping, bytes] | None:
        while self._reinject:
            start, end = self._reinject[0]
            if dsn_le(end, self.snd_una):
                self._reinject.popleft()  # acknowledged meanwhile
                continue
            if dsn_lt(start, self.snd_una):
                start = self.snd_una
            n = min(max_len, dsn_diff(end, start))
            if n == dsn_diff(end, start):
                self._reinject.popleft()
            else:
                self._reinject[0][0] = dsn_add(start, n)
            self.bytes_reinjected += n
            return self._map(sf, start, n)
        n = min(max_len, self.pending, self.window_room)
        if n <= 0:
            return None
        start = self.snd_nxt
        self.snd_nxt = dsn_add(start, n)
        return self._map(sf, start, n)

    def _map(self, sf: SubflowSender, dsn: int, n: int) -> tuple[Mapping, bytes]:
        off = dsn_diff(dsn, self.snd_una)
        payload = bytes(self._buf[off:off + n])
        csum = dss_checksum(dsn, sf.next_ssn & MASK32, n, payload) if self.csum else None
        m = Mapping(dsn, sf.next_ssn, n, False, csum, True)
        sf.table.add(m)
        sf.next_ssn += n
        end = dsn_add(dsn, n)
        if sf.sent and sf.sent[-1][1] == dsn:
            sf.sent[-1][1] = end
        else:
            sf.sent.append([dsn, end])
        return m, payload

    def fin_mapping(self) -> Mapping:
        """A DATA_FIN without data (SSN 0, DLL 1; §3.3.3), checksummed when
        negotiated (pseudo-header only)."""
        assert self.fin_dsn is not None
        csum = dss_checksum(self.fin_dsn, 0, 1, b"") if self.csum else None
        return Mapping(self.fin_dsn, 0, 1, True, csum, True)

    def dss_for(self, sf: SubflowSender, seg_ssn: int, seg_len: int,
                data_ack: int | None = None, ack64: bool = True) -> Dss | None:
        """The DSS for a segment of subflow ``sf`` starting at wire relative
        SSN ``seg_ssn`` with ``seg_len`` payload bytes (None: nothing to say)."""
        m = sf.mapping_at(seg_ssn) if seg_len > 0 else None
        if self.data_fin_enabled:
            if m is None:
                m = self.fin_mapping()
            elif m.end_dsn == self.fin_dsn:
                m = with_data_fin(m)
            if m.data_fin and not self.fin_sent:
                self.fin_sent = True
                self.snd_nxt = dsn_add(self.fin_dsn, 1)  # type: ignore[arg-type]
        if m is None:
            if data_ack is None:
                return None
            return Dss(data_ack=data_ack & (0xFFFFFFFFFFFFFFFF if ack64 else MASK32),
                       data_ack_len=8 if ack64 else 4)
        return m.to_dss(data_ack, ack64)

    def fin_timer(self, now: float) -> bool:
        """Arm or check the DATA_FIN retransmission timer (protocol.c
        ``mptcp_check_data_fin_ack``: ``TCP_RTO_MIN << retries``). Call after
        sending the DATA_FIN and on timer events; True means: send it again
        now (a pure ACK with the DATA_FIN on every subflow)."""
        if not self.fin_sent or self.fin_acked:
            self.fin_deadline = None
            return False
        if self.fin_deadline is None:
            self.fin_deadline = now + DATA_FIN_RTO_MIN
            return False
        if now < self.fin_deadline:
            return False
        self.fin_retries += 1
        self.fin_deadline = now + DATA_FIN_RTO_MIN * (1 << min(self.fin_retries, 10))
        return True

    # -- acknowledgements ----------------------------------------------

    def on_data_ack(self, value: int, ack64: bool, snd_wnd: int | None = None) -> int:
        """Process a DATA_ACK (kernel ``ack_update_msk``); returns bytes released.

        A 32-bit value is expanded against ``snd_una``; an ACK beyond
        ``snd_nxt`` is ignored; ``snd_wnd`` (the subflow's scaled TCP window)
        moves the connection-level right edge forward, never back.
        """
        new = expand(self.snd_una, value, ack64)
        if dsn_gt(new, self.snd_nxt):
            self.ignored_acks += 1
            new = self.snd_una
        if snd_wnd is not None:
            edge = dsn_add(new, snd_wnd)
            if dsn_gt(edge, self.wnd_end):
                self.wnd_end = edge
        if not dsn_gt(new, self.snd_una):
            return 0
        n = dsn_diff(new, self.snd_una)
        if self.fin_dsn is not None and dsn_gt(new, self.fin_dsn):
            self.fin_acked = True
            self.fin_deadline = None
            n -= 1  # the DATA_FIN's sequence number carries no byte
        del self._buf[:n]
        self.bytes_acked += n
        self.snd_una = new
        for sf in self._subflows.values():
            while sf.sent and dsn_le(sf.sent[0][1], self.snd_una):
                sf.sent.pop(0)
        return n

    # -- re-injection ------------------------------------------------------

    def unacked_ranges(self, sf: SubflowSender) -> list[tuple[int, int]]:
        """DSN ranges sent on ``sf`` and not yet DATA_ACKed."""
        out = []
        for start, end in sf.sent:
            if dsn_le(end, self.snd_una):
                continue
            out.append((start if dsn_ge(start, self.snd_una) else self.snd_una, end))
        return out

    def reinject(self, sf: SubflowSender) -> list[tuple[int, int]]:
        """Queue ``sf``'s unacknowledged ranges for sending on other subflows
        (§3.3.6; the kernel re-injects when a subflow fails or closes).
        Returns the ranges queued."""
        ranges = self.unacked_ranges(sf)
        for start, end in ranges:
            self.requeue(start, end)
        return ranges

    def requeue(self, start: int, end: int) -> None:
        """Queue the DSN range [start, end) for sending again (also the
        kernel's data-level retransmission timer, protocol.c
        ``__mptcp_retrans``, which re-sends the oldest unacknowledged chunk).
        After this the connection may no longer fall back (§3.7)."""
        if dsn_lt(start, self.snd_una):
            start = self.snd_una
        if dsn_gt(end, self.snd_nxt if not self.fin_sent else self.write_seq):
            end = self.write_seq if self.fin_sent else self.snd_nxt
        if dsn_lt(start, end):
            self._reinject.append([start, end])
            self.retransmitted = True

    def on_fallback_ack(self) -> int:
        """After fallback to TCP there are no DATA_ACKs: whatever was handed
        to the (single) subflow counts as acknowledged at the data level
        (options.c ``mptcp_incoming_options``: snd_una = snd_nxt)."""
        return self.on_data_ack(self.snd_nxt, True)
