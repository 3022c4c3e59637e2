# cython: language_level=3
"""The MPTCP DSS mapping table of one subflow (RFC 8684 section 3.3.1).

Maps subflow-relative 32-bit sequence numbers (SSN) to 64-bit data sequence
numbers (DSN). SSNs are compared modulo 2**32 against a base (the first SSN
added, moved forward by discard_before), so live mappings must lie within
2**31 of it; DSNs wrap modulo 2**64. Entries are disjoint and sorted, kept in
one C array; a mapping that overlaps held ones must agree with them byte for
byte (then only its new bytes are stored), otherwise it is refused.
"""
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memmove


class MappingConflict(ValueError):
    """A mapping gives another DSN to subflow bytes already mapped."""


class MappingTableFull(ValueError):
    """Storing the mapping would exceed max_entries."""


cdef struct Entry:
    int64_t start      # SSN relative to the base
    int64_t length
    uint64_t dsn


cdef int64_t HALF = 1 << 31


cdef inline int64_t _rel(uint32_t ssn, uint32_t base) noexcept nogil:
    """Signed 32-bit distance ssn - base (RFC 9293 sequence arithmetic)."""
    cdef int64_t d = <int64_t>(<uint32_t>(ssn - base))
    if d >= HALF:
        d -= 2 * HALF
    return d


cdef class DssMap:
    """Subflow sequence ranges -> data sequence ranges."""

    cdef Entry* _e
    cdef Py_ssize_t _n
    cdef Py_ssize_t _alloc
    cdef Py_ssize_t _max
    cdef uint32_t _base

    def __cinit__(self, max_entries=1024):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max = max_entries
        self._e = NULL

    def __dealloc__(self):
        PyMem_Free(self._e)

    def __len__(self):
        return self._n

    @property
    def max_entries(self):
        return self._max

    def clear(self):
        self._n = 0

    def entries(self):
        """Held mappings as (ssn, dsn, length), in subflow order."""
        return [(<uint32_t>(self._base + <uint32_t>self._e[k].start), self._e[k].dsn,
                 self._e[k].length) for k in range(self._n)]

    cdef Py_ssize_t _find(self, int64_t rel) noexcept nogil:
        """Index of the first entry whose end is beyond rel (binary search)."""
        cdef Py_ssize_t lo = 0, hi = self._n, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._e[mid].start + self._e[mid].length <= rel:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef int _insert(self, Py_ssize_t at, int64_t start, int64_t length,
                     uint64_t dsn) except -1:
        cdef Entry* e
        cdef Py_ssize_t size
        if self._n == self._alloc:
            size = self._alloc * 2 if self._alloc else 8
            e = <Entry*>PyMem_Realloc(self._e, size * sizeof(Entry))
            if e == NULL:
                raise MemoryError()
            self._e = e
            self._alloc = size
        memmove(self._e + at + 1, self._e + at, (self._n - at) * sizeof(Entry))
        self._e[at].start = start
        self._e[at].length = length
        self._e[at].dsn = dsn
        self._n += 1
        return 0

    def add(self, ssn_start, dsn_start, length):
        """Map `length` subflow bytes from ssn_start to DSNs from dsn_start."""
        if not (0 <= ssn_start <= 0xFFFFFFFF and 0 <= dsn_start <= 0xFFFFFFFFFFFFFFFF
                and 0 < length < HALF):
            raise ValueError("ssn must fit 32 bits, dsn 64 bits, 0 < length < 2**31")
        cdef uint32_t ssn = ssn_start
        cdef uint64_t dsn = dsn_start
        cdef int64_t ln = length
        cdef int64_t rel, end, cur, s, e
        cdef Py_ssize_t i, j, k, gaps = 0
        if self._n == 0:
            self._base = ssn
        rel = _rel(ssn, self._base)
        end = rel + ln
        if end > HALF:
            raise ValueError("mapping reaches beyond 2**31 of the table's base SSN")
        # every overlapped entry must translate identically (mod 2**64)
        i = self._find(rel)
        j = i
        cur = rel
        while j < self._n and self._e[j].start < end:
            if <uint64_t>(self._e[j].dsn - <uint64_t>self._e[j].start) != \
                    <uint64_t>(dsn - <uint64_t>rel):
                raise MappingConflict(
                    f"mapping ssn={ssn_start} dsn={dsn_start} len={length} conflicts "
                    f"with a held mapping")
            if self._e[j].start > cur:
                gaps += 1
            cur = self._e[j].start + self._e[j].length
            j += 1
        if cur < end:
            gaps += 1
        if self._n + gaps > self._max:
            raise MappingTableFull("mapping table full")
        # store the uncovered parts
        cur = rel
        k = i
        while cur < end:
            if k < self._n and self._e[k].start <= cur:
                cur = self._e[k].start + self._e[k].length
                k += 1
                continue
            e = end
            if k < self._n and self._e[k].start < end:
                e = self._e[k].start
            self._insert(k, cur, e - cur, dsn + <uint64_t>(cur - rel))
            k += 1
            cur = e

    def lookup(self, ssn):
        """(dsn, bytes left in that mapping) for the subflow byte ssn, or None."""
        if not 0 <= ssn <= 0xFFFFFFFF:
            raise ValueError("ssn must fit 32 bits")
        if self._n == 0:
            return None
        cdef int64_t rel = _rel(<uint32_t>ssn, self._base)
        cdef Py_ssize_t i = self._find(rel)
        if i == self._n or self._e[i].start > rel:
            return None
        return (<uint64_t>(self._e[i].dsn + <uint64_t>(rel - self._e[i].start)),
                self._e[i].start + self._e[i].length - rel)

    def translate(self, ssn, length):
        """DSN ranges [(dsn, length), ...] of the mapped prefix of [ssn, ssn+length).

        Stops at the first unmapped byte; DSN-contiguous pieces are joined.
        """
        if not (0 <= ssn <= 0xFFFFFFFF and 0 <= length < HALF):
            raise ValueError("ssn must fit 32 bits and 0 <= length < 2**31")
        out = []
        if self._n == 0 or length == 0:
            return out
        cdef int64_t rel = _rel(<uint32_t>ssn, self._base)
        cdef int64_t end = rel + <int64_t>length
        cdef int64_t cur = rel, e
        cdef uint64_t d, last_end = 0
        cdef bint have = False
        cdef Py_ssize_t i = self._find(rel)
        while cur < end and i < self._n and self._e[i].start <= cur:
            e = self._e[i].start + self._e[i].length
            if e > end:
                e = end
            d = self._e[i].dsn + <uint64_t>(cur - self._e[i].start)
            if have and d == last_end:
                prev = out[len(out) - 1]
                out[len(out) - 1] = (prev[0], prev[1] + (e - cur))
            else:
                out.append((d, e - cur))
            have = True
            last_end = d + <uint64_t>(e - cur)
            cur = e
            i += 1
        return out

    def discard_before(self, ssn):
        """Forget subflow bytes before ssn (consumed); ssn becomes the base."""
        if not 0 <= ssn <= 0xFFFFFFFF:
            raise ValueError("ssn must fit 32 bits")
        cdef int64_t rel = _rel(<uint32_t>ssn, self._base)
        cdef Py_ssize_t i = self._find(rel) if self._n else 0
        cdef Py_ssize_t k
        cdef int64_t cut
        if i:
            memmove(self._e, self._e + i, (self._n - i) * sizeof(Entry))
            self._n -= i
        if self._n and self._e[0].start < rel:
            cut = rel - self._e[0].start
            self._e[0].start = rel
            self._e[0].length -= cut
            self._e[0].dsn += <uint64_t>cut
        for k in range(self._n):
            self._e[k].start -= rel
        self._base = <uint32_t>ssn

    def __repr__(self):
        return f"DssMap({self.entries()!r})"
