"""Receive side of the data level: mapping validation per subflow, reassembly
across subflows, DATA_ACK, DATA_FIN and the connection-level window.

``SubflowReceiver`` (one per subflow) turns the in-order byte stream TCP
delivers on a subflow into data-level chunks ``(dsn, bytes)``, enforcing the
mapping discipline exactly as Linux does (net/mptcp/subflow.c
``get_mapping_status``, ``validate_mapping``, ``validate_data_csum``):

* the bytes at the current position must be covered by a mapping carried by
  the segment holding them, or by the mapping in use (RFC 8684 §3.3.1);
* a new mapping must start at or before the first unconsumed byte of its
  segment and cover it (``validate_mapping``; a mapping for later data is
  "currently unsupported" → invalid);
* a *different* mapping may only arrive on a segment that the mapping in use
  does not fully cover (no mapping caching); identical repeats are fine;
* with checksums negotiated every mapping carries one and nothing of a mapping
  is delivered before all of it arrived and its checksum verified over the
  whole mapping (§3.3.1); a checksum present without negotiation is invalid;
* a DLL of 0 is the infinite mapping (§3.7): reported, never delivered.

A mapping that passed these checks goes into the subflow's ``DssMap`` (the
compiled SSN→DSN table, ``fastpath.dssmap``), from the first unconsumed byte
to its end; every in-order piece is translated to its DSN through it and
consumed bytes are discarded from it.

Errors are returned (``RxResult.error``), never raised; what to do about them
(fall back, MP_FAIL, reset) is ``fallback.decide``'s job.

``DataReceiver`` (one per connection) places chunks by DSN in an
``Assembler`` whose offsets are relative to the data-level ``rcv_nxt``, drops
data-level duplicates (re-injections, §3.3.6), limits what it holds to the
connection-level receive buffer (§3.3.4: the window is shared by all subflows
and relative to the DATA_ACK), and marks the DATA_FIN received only when it is
in order (§3.3.3; kernel ``mptcp_check_data_fin``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from stack.mptcp.dsn import MASK32, MASK64, dsn_add, dsn_diff, dsn_gt, dsn_lt, expand, expand32
from stack.mptcp.mapping import DssMap, Mapping, RxMappingTable, RxRecord
from stack.wire.mptcp import Dss

try:  # the compiled fast path, else its plain-Python twin (docs/INTERFACES.md)
    from fastpath.reassembly import Assembler  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the build
    from fastpath.reference import Assembler  # type: ignore[attr-defined,no-redef]

try:
    from fastpath.checksum import dss_checksum  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the build
    from fastpath.reference import dss_checksum

__all__ = [
    "MapError",
    "RxResult",
    "SubflowReceiver",
    "DataReceiver",
    "checksum_ok",
]


class MapError(enum.Enum):
    """Why a subflow's data could not be mapped (kernel MIB counter in brackets)."""

    NO_DSS = "no_dss"  # data with no mapping at all                   [DSSNoMatch/NODSS]
    BAD_MAPPING = "bad_mapping"  # mapping does not cover its segment   [DSSTcpMismatch]
    MAP_CHANGED = "map_changed"  # new mapping on a fully covered seg  [DSSNoMatch]
    INFINITE = "infinite"  # DLL 0                                      [InfiniteMapRx]
    CSUM_MISMATCH = "csum_mismatch"  # checksum presence != negotiation
    BAD_CSUM = "bad_csum"  # checksum verification failed              [DataCsumErr]


@dataclass(slots=True)
class RxResult:
    """What one ``consume`` call produced."""

    chunks: list[tuple[int, bytes]] = field(default_factory=list)
    data_fins: list[tuple[int, bool]] = field(default_factory=list)  # (dsn, dsn64) seen
    error: MapError | None = None
    error_dsn: int | None = None  # DSN of the failing mapping (MP_FAIL carries it)
    withheld: tuple[int, bytes] | None = None  # data of a mapping with a bad checksum
    dsn64: bool | None = None  # width of the last mapping installed


def checksum_ok(m: Mapping, payload: bytes | bytearray | memoryview) -> bool:
    """Verify a mapping's checksum over its whole payload (§3.3.1). The
    pseudo-header uses the 64-bit DSN and the DLL including the DATA_FIN."""
    if m.checksum is None:
        return False
    want = dss_checksum(m.dsn, m.ssn & MASK32, m.dll, payload)
    # one's complement has two zeros: 0x0000 and 0xffff verify the same sum
    return want == m.checksum or {want, m.checksum} == {0, 0xFFFF}


class SubflowReceiver:
    """Per-subflow receive mapping state (the kernel's ``map_*`` fields).

    Positions are unwrapped relative subflow sequence numbers; the first data
    byte is 1. Call ``note`` for every received segment (any order) with the
    mapping it carried, then ``consume`` with the bytes TCP delivers in order.
    """

    def __init__(self, csum: bool = False, *, max_records: int = 4096,
                 max_pending: int = 4 << 20) -> None:
        self.csum = csum
        self.max_pending = max_pending
        self.dropped_bytes = 0
        self.pos = 1  # next subflow byte to consume
        self.table = RxMappingTable(max_records)
        # SSN->DSN of the validated mapping in use, from the first unconsumed
        # byte to its end (the fast-path translation table)
        self.dssmap = DssMap(4)
        self.cur: Mapping | None = None  # the mapping in use (64-bit DSN)
        self.valid_csum_seen = False
        self.failed: MapError | None = None
        self.fallen_back = False
        self.dropped_records = 0
        self._pending = bytearray()  # delivered by TCP, not consumed yet
        self._csum_buf = bytearray()  # bytes of `cur` held for its checksum

    # -- arrival ---------------------------------------------------------

    def note(self, seg_ssn: int, seg_len: int, m: Mapping | Dss | None) -> Mapping | None:
        """Remember the mapping a received segment carried.

        ``seg_ssn`` is the segment's relative sequence number (32-bit wire
        value, first data byte 1). Returns a DATA_FIN-only mapping carried by
        a segment without payload: the kernel handles those at once
        (options.c ``mptcp_incoming_options``), the caller passes them to
        ``DataReceiver.on_data_fin``.
        """
        start = expand32(self.pos, seg_ssn)
        if isinstance(m, Dss):
            m = Mapping.from_dss(m, start)
        if m is None:
            return None
        if seg_len == 0:
            return m if m.fin_only else None
        if start + seg_len <= self.pos:
            return None  # entirely old data
        if not self.table.note(start, start + seg_len, m):
            self.dropped_records += 1
        return None

    # -- in-order consumption ------------------------------------------

    def consume(self, data: bytes | bytearray | memoryview, rcv_nxt: int) -> RxResult:
        """Map in-order subflow bytes to data-level chunks.

        ``rcv_nxt`` is the data-level next expected DSN, against which 32-bit
        DSNs are expanded (kernel ``mptcp_expand_seq(msk->ack_seq, ...)``).
        """
        res = RxResult()
        if self.failed is not None and len(self._pending) + len(data) > self.max_pending:
            # a failed subflow is about to be reset or to fall back: keep a
            # bounded backlog for the fallback case, count the rest
            room = max(0, self.max_pending - len(self._pending))
            self.dropped_bytes += len(data) - room
            data = data[:room]
        self._pending += data
        if self.fallen_back:
            # after fallback the subflow is plain TCP: its bytes continue the
            # data stream where it stands (kernel: map_seq = msk->ack_seq)
            if self._pending:
                res.chunks.append((rcv_nxt, bytes(self._pending)))
                self.pos += len(self._pending)
                self._pending.clear()
            return res
        if self.failed is not None:
            res.error = self.failed
            return res
        while self._pending:
            if not self._step(res, rcv_nxt):
                break
        self.table.discard_before(self.pos)
        self.dssmap.discard_before(self.pos & MASK32)
        return res

    def _fail(self, res: RxResult, err: MapError, dsn: int | None) -> bool:
        self.failed = err
        res.error = err
        res.error_dsn = dsn
        return False

    def _step(self, res: RxResult, rcv_nxt: int) -> bool:
        """Consume from ``_pending`` with one mapping, up to the next segment
        that carried a mapping (the kernel looks at every skb's mapping);
        False to stop."""
        rec = self.table.covering(self.pos)
        new: Mapping | None = None
        if rec is not None:
            new = rec.mapping.expanded(rcv_nxt)
            if new.data_fin:
                # get_mapping_status records a DATA_FIN before anything else,
                # also on a repeated (identical) mapping
                res.data_fins.append((new.end_dsn, True))
            if new.fin_only:
                # DATA_FIN-only mapping on a segment with data: go on with the
                # mapping in use
                self.table.remove(rec)
                rec = new = None
        if new is not None and new.infinite:
            # DLL 0: the infinite mapping, whatever is in use (§3.7)
            self.cur = None
            return self._fail(res, MapError.INFINITE, new.dsn)
        if self.cur is None:
            if rec is None or new is None:
                return self._fail(res, MapError.NO_DSS, None)
            if not self._install(res, rec, new):
                return False
        elif rec is not None and new is not None:
            if new.same_as(self.cur):
                self.table.remove(rec)
            elif rec.end - self.pos <= self.cur.end_ssn - self.pos:
                # the segment is fully covered by the current mapping: a
                # different mapping here would need caching (DSSNOMATCH)
                return self._fail(res, MapError.MAP_CHANGED, self.cur.dsn)
            # else: it maps the tail of its segment; installed once cur ends
        cur = self.cur
        assert cur is not None
        n = min(len(self._pending), cur.end_ssn - self.pos)
        nxt = self.table.next_start(self.pos)
        if nxt is not None:
            n = min(n, nxt - self.pos)
        piece = bytes(self._pending[:n])
        del self._pending[:n]
        if self.csum:
            self._csum_buf += piece
        elif n:
            ranges = self.dssmap.translate(self.pos & MASK32, n)
            # one validated mapping covers the piece: one DSN range
            if len(ranges) != 1 or ranges[0][1] != n:  # pragma: no cover - invariant
                return self._fail(res, MapError.BAD_MAPPING, cur.dsn)
            res.chunks.append((ranges[0][0], piece))
        self.pos += n
        if self.pos == cur.end_ssn:
            self.cur = None
            if self.csum:
                payload = bytes(self._csum_buf)
                self._csum_buf.clear()
                if checksum_ok(cur, payload):
                    self.valid_csum_seen = True
                    res.chunks.append((cur.dsn, payload))
                else:
                    # kernel: MAPPING_BAD_CSUM; the caller decides (MP_FAIL and
                    # deliver, or reset); we move on past this mapping
                    res.error = MapError.BAD_CSUM
                    res.error_dsn = cur.dsn
                    res.withheld = (cur.dsn, payload)
                    return False
        return True

    def _install(self, res: RxResult, rec: RxRecord, m: Mapping) -> bool:
        if (m.checksum is not None) != self.csum:
            return self._fail(res, MapError.CSUM_MISMATCH, m.dsn)  # RFC 8684 §3.3
        if not m.contains_ssn(self.pos):
            # mapping starts after the first unconsumed byte, or ends before it
            return self._fail(res, MapError.BAD_MAPPING, m.dsn)
        self.cur = m
        self.table.remove(rec)
        res.dsn64 = rec.mapping.dsn64
        # the translation of [pos, end): bytes before pos are consumed already
        self.dssmap.clear()
        self.dssmap.add(self.pos & MASK32, dsn_add(m.dsn, self.pos - m.ssn) & MASK64,
                        m.end_ssn - self.pos)
        return True

    # -- after an error ------------------------------------------------

    def fall_back(self) -> None:
        """Switch to plain TCP (after the infinite mapping or a fallback
        decision): every later byte continues the data stream in order."""
        self.fallen_back = True
        self.failed = None
        self.cur = None
        self._csum_buf.clear()
        self.table = RxMappingTable(self.table.max_records)
        self.dssmap.clear()


class DataReceiver:
    """Connection-level receive state: reassembly by DSN, DATA_ACK, DATA_FIN."""

    def __init__(self, rcv_nxt: int, rcvbuf: int = 1 << 20, slack: int = 0) -> None:
        self.rcv_nxt = rcv_nxt  # peer's IDSN + 1 (§3.1)
        self.rcvbuf = rcvbuf
        # Bytes accepted beyond the announced window: a Linux sender takes
        # its window edge as DATA_ACK + the subflow's TCP snd_wnd, and Linux
        # TCP ignores a window that shrinks on an ACK that moves nothing
        # (tcp_may_update_window), so it may send a little past our edge.
        self.slack = slack
        self._asm = Assembler(rcvbuf + slack)
        self._ready = bytearray()
        self.fin_dsn: int | None = None  # DSN of the peer's DATA_FIN once known
        self.fin_received = False  # DATA_FIN received in order (§3.3.3)
        self.use_64bit_ack = False  # kernel msk->use_64bit_ack
        self.wnd_end = dsn_add(rcv_nxt, rcvbuf)  # right edge announced so far
        self.bytes_received = 0
        self.dup_bytes = 0  # data-level duplicates dropped (re-injections)
        self.beyond_window_bytes = 0

    # -- input -----------------------------------------------------------

    def on_data(self, dsn: int, data: bytes | bytearray | memoryview) -> int:
        """Place data-level bytes; returns how many were new."""
        n = len(data)
        off = dsn_diff(dsn, self.rcv_nxt)
        if off < 0:
            skip = min(n, -off)
            self.dup_bytes += skip
            data = data[skip:]
            off = 0
        if not data:
            return 0
        room = self._asm.capacity - off
        if room < len(data):
            self.beyond_window_bytes += len(data) - max(room, 0)
        new = self._asm.add(off, data)
        self.dup_bytes += min(len(data), max(room, 0)) - new
        self._advance()
        return new

    def on_result(self, res: RxResult) -> int:
        """Apply a ``SubflowReceiver.consume`` result; returns new bytes."""
        if res.dsn64 is not None:
            self.note_mapping_width(res.dsn64)
        new = 0
        for dsn, chunk in res.chunks:
            new += self.on_data(dsn, chunk)
        for dsn, is64 in res.data_fins:
            self.on_data_fin(dsn, is64)
        return new

    def note_mapping_width(self, dsn64: bool) -> None:
        """DATA_ACK width follows the peer's last mapping (subflow.c
        get_mapping_status: ``use_64bit_ack = !!mpext->dsn64``)."""
        self.use_64bit_ack = dsn64

    def on_data_fin(self, dsn: int, dsn64: bool = True) -> bool:
        """Record the peer's DATA_FIN DSN (kernel ``mptcp_update_rcv_data_fin``:
        the first one wins). Returns True when it was new."""
        if self.fin_dsn is not None or self.fin_received:
            return False
        self.fin_dsn = expand(self.rcv_nxt, dsn, dsn64)
        self._advance()
        return True

    def _advance(self) -> None:
        got = self._asm.pop_contiguous()
        if got:
            self._ready += got
            self.rcv_nxt = dsn_add(self.rcv_nxt, len(got))
            self.bytes_received += len(got)
            self._asm.capacity = max(0, self.rcvbuf + self.slack - len(self._ready))
        if self.fin_dsn is not None and not self.fin_received and self.fin_dsn == self.rcv_nxt:
            self.fin_received = True  # the DATA_FIN takes one DSN (§3.3.3)
            self.rcv_nxt = dsn_add(self.rcv_nxt, 1)

    # -- application ---------------------------------------------------

    @property
    def readable(self) -> int:
        return len(self._ready)

    @property
    def eof(self) -> bool:
        """DATA_FIN received and everything before it read."""
        return self.fin_received and not self._ready

    def read(self, max_bytes: int = -1) -> bytes:
        n = len(self._ready) if max_bytes < 0 else min(max_bytes, len(self._ready))
        out = bytes(self._ready[:n])
        del self._ready[:n]
        self._asm.capacity = max(0, self.rcvbuf + self.slack - len(self._ready))
        return out

    # -- acknowledgement and window ------------------------------------

    @property
    def data_ack(self) -> int:
        return self.rcv_nxt

    @property
    def ooo_empty(self) -> bool:
        return self._asm.buffered == 0

    def window(self) -> int:
        """Receive window to advertise on every subflow, relative to the
        DATA_ACK (§3.3.4). The right edge never moves left (kernel
        ``mptcp_set_rwin`` keeps ``rcv_wnd_sent`` monotonic)."""
        edge = dsn_add(self.rcv_nxt, max(0, self.rcvbuf - len(self._ready)))
        if dsn_gt(edge, self.wnd_end):
            self.wnd_end = edge
        return max(0, dsn_diff(self.wnd_end, self.rcv_nxt))

    def ack_dss(self) -> Dss:
        """A DSS carrying only the DATA_ACK, 4 or 8 bytes as the kernel."""
        if self.use_64bit_ack:
            return Dss(data_ack=self.rcv_nxt, data_ack_len=8)
        return Dss(data_ack=self.rcv_nxt & MASK32, data_ack_len=4)

    def in_window(self, dsn: int) -> bool:
        return not dsn_lt(dsn, self.rcv_nxt) and dsn_lt(dsn, self.wnd_end)
