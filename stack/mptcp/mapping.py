"""DSS mappings and the two mapping tables (RFC 8684 §3.3).

A mapping says: the ``dll`` octets of the subflow stream starting at relative
subflow sequence ``ssn`` (first data byte of a subflow = 1) carry data sequence
numbers ``dsn``...; when ``data_fin`` is set the last of the ``dll`` octets is
the DATA_FIN, which takes data sequence space but no subflow space (§3.3.3).
``dll == 0`` is the infinite mapping (§3.7).

Subflow positions inside this module are *unwrapped* integers (the relative
sequence counted from the ISN without the 32-bit wrap); the wire carries the
low 32 bits (``Mapping.to_dss`` masks them, the receive side unwraps with
``dsn.expand32``).

``TxMappingTable`` (one per subflow, send side) remembers the mappings we sent
so that every (re)transmitted segment carries the mapping covering its first
byte, and tells the TCP engine where a segment must end so it never straddles
two mappings. ``RxMappingTable`` (one per subflow, receive side) remembers the
mapping each received segment carried, keyed by that segment's subflow range,
so mappings of out-of-order segments are found once TCP delivers their bytes
in order -- the kernel keeps the same information in each skb's extension.
``fastpath.dssmap.DssMap`` (``DssMap`` here: the compiled table, else its
plain-Python twin ``fastpath.reference.DssMap``) is the SSN→DSN translation
table of the hot path: ``TxMappingTable`` keeps the ranges it sent in one
and answers the TCP engine's per-segment ``room`` question from it;
``SubflowReceiver`` (datarecv) keeps the mapping it validated in one and
translates every in-order byte range to DSNs through it. The Python records
keep what the kernel's rules need on top of it: each mapping's identity
(checksum, DATA_FIN, exact bounds) and the segment that carried it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from stack.mptcp.dsn import MASK32, MASK64, dsn_add, expand, expand32
from stack.wire.mptcp import Dss, MpCapable

try:  # the compiled fast path, else its plain-Python twin (docs/INTERFACES.md)
    from fastpath.dssmap import (  # type: ignore[import-not-found]
        DssMap,
        MappingConflict,
        MappingTableFull,
    )
except ImportError:  # pragma: no cover - depends on the build
    from fastpath.reference import (  # type: ignore[attr-defined,no-redef]
        DssMap,
        MappingConflict,
        MappingTableFull,
    )

__all__ = [
    "DssMap",
    "MappingConflict",
    "MappingTableFull",
    "Mapping",
    "RxMappingTable",
    "RxRecord",
    "TxMappingTable",
    "DSS_MAX_DLL",
]

DSS_MAX_DLL = 0xFFFF  # the data-level length field is 16 bits (§3.3)
# No TCP (super-)segment is longer than this (64 KiB GSO plus slack).
MAX_SEGMENT_SPAN = 1 << 17
# Mappings a send table may hold: only a cap (the table grows with use); the
# subflow's send buffer bounds what is outstanding long before it.
TX_MAX_MAPPINGS = 1 << 22


@dataclass(frozen=True, slots=True)
class Mapping:
    """One DSS mapping. ``dsn`` is the full 64-bit value unless ``dsn64`` is
    False (a 32-bit wire value not yet expanded); ``ssn`` is unwrapped."""

    dsn: int
    ssn: int
    dll: int
    data_fin: bool = False
    checksum: int | None = None
    dsn64: bool = True

    @property
    def infinite(self) -> bool:
        return self.dll == 0

    @property
    def length(self) -> int:
        """Payload octets (the DLL without the DATA_FIN octet)."""
        return max(0, self.dll - (1 if self.data_fin else 0))

    @property
    def end_ssn(self) -> int:
        return self.ssn + self.length

    @property
    def end_dsn(self) -> int:
        """DSN after the last payload octet (the DATA_FIN's DSN when set)."""
        return dsn_add(self.dsn, self.length)

    @property
    def fin_only(self) -> bool:
        """A DATA_FIN without data (§3.3.3: SSN 0, DLL 1)."""
        return self.data_fin and self.dll == 1

    def contains_ssn(self, pos: int) -> bool:
        return self.ssn <= pos < self.end_ssn

    def expanded(self, ref: int) -> Mapping:
        """This mapping with a 64-bit DSN, a 32-bit one expanded against
        ``ref`` (the data-level rcv_nxt, as the kernel ``mptcp_expand_seq``)."""
        if self.dsn64:
            return self
        return Mapping(expand(ref, self.dsn, False), self.ssn, self.dll, self.data_fin,
                       self.checksum, True)

    def same_as(self, other: Mapping) -> bool:
        """The kernel's "identical map" test (subflow.c get_mapping_status)."""
        return (self.dsn == other.dsn and self.ssn == other.ssn and self.length == other.length
                and (self.checksum is None) == (other.checksum is None))

    def to_dss(self, data_ack: int | None = None, ack64: bool = True) -> Dss:
        """The DSS option: 64-bit DSN always (as the kernel), optional DATA_ACK."""
        ssn = 0 if self.fin_only else self.ssn & MASK32
        return Dss(
            data_ack=None if data_ack is None else (data_ack & (MASK64 if ack64 else MASK32)),
            data_ack_len=0 if data_ack is None else (8 if ack64 else 4),
            dsn=self.dsn & MASK64, dsn_len=8, ssn=ssn, dll=self.dll,
            checksum=self.checksum, data_fin=self.data_fin,
        )

    @classmethod
    def from_dss(cls, dss: Dss, seg_ssn: int = 0) -> Mapping | None:
        """The mapping a received DSS carries (None without one). The wire SSN
        is unwrapped against ``seg_ssn``, the unwrapped position of the
        segment that carried it; a DATA_FIN-only mapping keeps SSN 0."""
        if not dss.dsn_len or dss.dsn is None or dss.ssn is None or dss.dll is None:
            return None
        if dss.data_fin and dss.dll == 1:
            ssn = 0
        else:
            ssn = expand32(seg_ssn, dss.ssn)
        return cls(dss.dsn, ssn, dss.dll, dss.data_fin, dss.checksum, dss.dsn_len == 8)

    @classmethod
    def from_mpc(cls, mpc: MpCapable, peer_idsn: int) -> Mapping | None:
        """The implicit mapping of MP_CAPABLE with data (§3.1): DSN = IDSN+1,
        SSN 1, DLL = the data-level length (kernel options.c "mpc_map")."""
        if mpc.data_len is None:
            return None
        return cls(dsn_add(peer_idsn, 1), 1, mpc.data_len, False, mpc.checksum, True)


class TxMappingTable:
    """Mappings sent on one subflow, in subflow order (send side).

    The SSN→DSN ranges live in a ``DssMap`` (the fast path: ``room`` runs
    for every segment the TCP engine emits); the ``Mapping`` records beside
    it carry what a DSS option needs (checksum, DATA_FIN)."""

    def __init__(self, max_entries: int = TX_MAX_MAPPINGS) -> None:
        self._starts: list[int] = []
        self._maps: list[Mapping] = []
        self._dss = DssMap(max_entries)

    def __len__(self) -> int:
        return len(self._maps)

    def __iter__(self) -> Iterator[Mapping]:
        return iter(list(self._maps))

    def add(self, m: Mapping) -> None:
        """Append a mapping; it must start where the previous one ended."""
        if self._maps and m.ssn != self._maps[-1].end_ssn:
            raise ValueError(f"mapping at ssn {m.ssn} does not follow {self._maps[-1].end_ssn}")
        if m.length:
            # MappingTableFull / ValueError (a typed error) leave the table as it was
            self._dss.add(m.ssn & MASK32, m.dsn & MASK64, m.length)
        self._starts.append(m.ssn)
        self._maps.append(m)

    def find(self, pos: int) -> Mapping | None:
        """The mapping covering subflow position ``pos``."""
        i = bisect.bisect_right(self._starts, pos) - 1
        if i >= 0 and self._maps[i].contains_ssn(pos):
            return self._maps[i]
        return None

    def room(self, pos: int) -> int:
        """Octets from ``pos`` to the end of its mapping: a segment starting
        at ``pos`` must not be longer (one mapping per segment, §3.3.1)."""
        if not self._maps or not self._maps[0].ssn <= pos < self._maps[-1].end_ssn:
            return 0  # also keeps the 32-bit lookup within the table's span
        hit = self._dss.lookup(pos & MASK32)
        return 0 if hit is None else hit[1]

    def dsn_of(self, pos: int) -> int | None:
        """The DSN we mapped subflow position ``pos`` to (None: unmapped)."""
        if not self._maps or not self._maps[0].ssn <= pos < self._maps[-1].end_ssn:
            return None
        hit = self._dss.lookup(pos & MASK32)
        return None if hit is None else hit[0]

    def release(self, una: int) -> int:
        """Forget mappings the subflow has fully acknowledged (end <= una)."""
        n = 0
        while self._maps and self._maps[0].end_ssn <= una:
            self._maps.pop(0)
            self._starts.pop(0)
            n += 1
        if n:
            if self._maps:
                self._dss.discard_before(self._maps[0].ssn & MASK32)
            else:
                self._dss.clear()
        return n

    def replace_last(self, m: Mapping) -> None:
        """Swap the last mapping (e.g. to fold a DATA_FIN into it)."""
        if (not self._maps or self._maps[-1].ssn != m.ssn or self._maps[-1].length != m.length
                or self._maps[-1].dsn != m.dsn):
            raise ValueError("replace_last must keep the mapping's range")
        self._maps[-1] = m


@dataclass(frozen=True, slots=True)
class RxRecord:
    """A received segment's subflow range and the mapping it carried."""

    start: int
    end: int
    mapping: Mapping


class RxMappingTable:
    """Mappings carried by received segments, by segment range (receive side).

    Bounded: at most ``max_records`` records; more are refused (``note``
    returns False, the caller counts the drop). The first record for a given
    segment start wins, as TCP keeps the first copy of out-of-order data.
    """

    def __init__(self, max_records: int = 4096) -> None:
        self.max_records = max_records
        self._starts: list[int] = []
        self._recs: list[RxRecord] = []

    def __len__(self) -> int:
        return len(self._recs)

    def note(self, start: int, end: int, m: Mapping) -> bool:
        i = bisect.bisect_left(self._starts, start)
        if i < len(self._starts) and self._starts[i] == start:
            return True  # a retransmission of a segment we already hold
        if len(self._recs) >= self.max_records:
            return False
        self._starts.insert(i, start)
        self._recs.insert(i, RxRecord(start, end, m))
        return True

    def covering(self, pos: int) -> RxRecord | None:
        """The record of the closest segment starting at or before ``pos``
        that still contains ``pos``."""
        i = bisect.bisect_right(self._starts, pos) - 1
        while i >= 0 and self._starts[i] > pos - MAX_SEGMENT_SPAN:
            rec = self._recs[i]
            if rec.end > pos:
                return rec
            i -= 1
        return None

    def next_start(self, pos: int) -> int | None:
        """Start of the first recorded segment after ``pos``."""
        i = bisect.bisect_right(self._starts, pos)
        return self._starts[i] if i < len(self._starts) else None

    def remove(self, rec: RxRecord) -> None:
        i = bisect.bisect_left(self._starts, rec.start)
        if i < len(self._recs) and self._recs[i] is rec:
            del self._starts[i]
            del self._recs[i]

    def discard_before(self, pos: int) -> None:
        """Drop records of segments entirely before ``pos`` (already consumed)."""
        keep = [(s, r) for s, r in zip(self._starts, self._recs, strict=True) if r.end > pos]
        self._starts = [s for s, _ in keep]
        self._recs = [r for _, r in keep]
