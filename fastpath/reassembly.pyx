# cython: language_level=3
"""Out-of-order receive buffer for one byte stream (RFC 9293 section 3.10.7.4).

Offsets are relative to the next expected byte (offset 0 = RCV.NXT). The
bytes live in one ring of `capacity` bytes, allocated on first use; the held
ranges are a sorted, merged C array of (start, end) pairs, not one object per
segment. Memory is bounded: bytes at or beyond `capacity` are dropped, and at
most `max_ranges` disjoint ranges are kept -- when a new disjoint piece would
exceed that, the highest range is dropped if the piece lies below it (as Linux
prunes its out-of-order queue from the far end), otherwise the piece is.
Where a new piece overlaps bytes already held, the held bytes are kept.
"""
from cpython.buffer cimport PyBuffer_Release
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.string cimport memcpy, memmove

from fastpath._csum cimport acquire


cdef class Assembler:
    """Out-of-order bytes and their ranges, relative to RCV.NXT."""

    cdef Py_ssize_t _cap
    cdef unsigned char* _ring      # NULL until the first byte is stored
    cdef Py_ssize_t _ring_size     # >= _cap while _ring is allocated
    cdef Py_ssize_t _head          # ring index of offset 0
    cdef Py_ssize_t* _rs           # [start0, end0, start1, end1, ...]
    cdef Py_ssize_t _n             # number of ranges
    cdef Py_ssize_t _rs_alloc      # ranges the array can hold
    cdef Py_ssize_t _max_ranges
    cdef Py_ssize_t _buffered

    def __cinit__(self, capacity, max_ranges=1024):
        if capacity < 0 or max_ranges < 1:
            raise ValueError("capacity must be >= 0 and max_ranges >= 1")
        self._cap = capacity
        self._max_ranges = max_ranges
        self._ring = NULL
        self._rs = NULL

    def __dealloc__(self):
        PyMem_Free(self._ring)
        PyMem_Free(self._rs)

    @property
    def buffered(self):
        """Bytes held."""
        return self._buffered

    @property
    def max_ranges(self):
        return self._max_ranges

    @property
    def capacity(self):
        return self._cap

    @capacity.setter
    def capacity(self, value):
        """Resize; held bytes at or beyond the new capacity are dropped.

        Cheap when called often (e.g. with every advertised window): the ring
        is re-laid out only when it must grow, or when it is twice too big.
        """
        if value < 0:
            raise ValueError("capacity must be >= 0")
        cdef Py_ssize_t cap = value
        cdef Py_ssize_t k, s, e
        cdef unsigned char* ring
        if cap == self._cap:
            return
        # clip ranges to the new capacity
        k = 0
        while k < self._n and self._rs[2 * k] < cap:
            if self._rs[2 * k + 1] > cap:
                self._buffered -= self._rs[2 * k + 1] - cap
                self._rs[2 * k + 1] = cap
            k += 1
        while self._n > k:
            self._n -= 1
            self._buffered -= self._rs[2 * self._n + 1] - self._rs[2 * self._n]
        self._cap = cap
        if self._ring != NULL and (cap > self._ring_size or 2 * cap < self._ring_size):
            ring = NULL
            if cap > 0:
                ring = <unsigned char*>PyMem_Malloc(cap)
                if ring == NULL:
                    raise MemoryError()
                for k in range(self._n):
                    s = self._rs[2 * k]
                    e = self._rs[2 * k + 1]
                    self._copy_out(ring + s, s, e - s)
            PyMem_Free(self._ring)
            self._ring = ring
            self._ring_size = cap
            self._head = 0

    def clear(self):
        """Forget every held byte (RCV.NXT unchanged)."""
        self._n = 0
        self._buffered = 0
        self._head = 0

    def ranges(self):
        """Held (start, end) ranges, sorted, merged: the RFC 2018 SACK blocks."""
        return [(self._rs[2 * k], self._rs[2 * k + 1]) for k in range(self._n)]

    cdef void _copy_in(self, Py_ssize_t pos, const unsigned char* src,
                       Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t at = (self._head + pos) % self._ring_size
        cdef Py_ssize_t first = self._ring_size - at
        if first >= n:
            memcpy(self._ring + at, src, n)
        else:
            memcpy(self._ring + at, src, first)
            memcpy(self._ring, src + first, n - first)

    cdef void _copy_out(self, unsigned char* dst, Py_ssize_t pos,
                        Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t at = (self._head + pos) % self._ring_size
        cdef Py_ssize_t first = self._ring_size - at
        if first >= n:
            memcpy(dst, self._ring + at, n)
        else:
            memcpy(dst, self._ring + at, first)
            memcpy(dst + first, self._ring, n - first)

    cdef int _reserve(self, Py_ssize_t want) except -1:
        cdef Py_ssize_t size
        cdef Py_ssize_t* rs
        if want <= self._rs_alloc:
            return 0
        size = self._rs_alloc * 2 if self._rs_alloc else 8
        if size < want:
            size = want
        rs = <Py_ssize_t*>PyMem_Realloc(self._rs, 2 * size * sizeof(Py_ssize_t))
        if rs == NULL:
            raise MemoryError()
        self._rs = rs
        self._rs_alloc = size
        return 0

    def add(self, offset, data):
        """Store data at offset; returns how many bytes were new.

        Bytes before offset 0 (already received) and at or beyond capacity
        are dropped; bytes already held are kept as they were.
        """
        cdef Py_buffer view
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef int rel = acquire(data, &view, &p, &n)
        try:
            if n == 0 or offset >= self._cap or offset + n <= 0:
                return 0
            return self._add(offset, p, n)
        finally:
            if rel:
                PyBuffer_Release(&view)

    cdef Py_ssize_t _add(self, Py_ssize_t start, const unsigned char* p,
                         Py_ssize_t n) except -1:
        cdef Py_ssize_t lo = start if start > 0 else 0
        cdef Py_ssize_t hi = start + n
        cdef Py_ssize_t i, j, k, cur, s, e, new = 0
        if hi > self._cap:
            hi = self._cap
        if hi <= lo:
            return 0
        # i: first range that ends at or after lo (touching merges);
        # j: first range that starts after hi.
        i = 0
        j = self._n
        while i < j:                # binary search
            k = (i + j) >> 1
            if self._rs[2 * k + 1] < lo:
                i = k + 1
            else:
                j = k
        j = i
        while j < self._n and self._rs[2 * j] <= hi:
            j += 1
        if i == j and self._n >= self._max_ranges:
            if i == self._n:
                return 0            # above every held range: drop the piece
            self._n -= 1            # drop the highest range to make room
            self._buffered -= self._rs[2 * self._n + 1] - self._rs[2 * self._n]
        if self._ring == NULL:
            self._ring = <unsigned char*>PyMem_Malloc(self._cap)
            if self._ring == NULL:
                raise MemoryError()
            self._ring_size = self._cap
            self._head = 0
        # copy the bytes that fall into holes
        cur = lo
        for k in range(i, j):
            s = self._rs[2 * k]
            e = self._rs[2 * k + 1]
            if s > cur:
                self._copy_in(cur, p + (cur - start), s - cur)
                new += s - cur
            if e > cur:
                cur = e
        if cur < hi:
            self._copy_in(cur, p + (cur - start), hi - cur)
            new += hi - cur
        # merge [lo, hi) with ranges i..j-1
        if i < j:
            if self._rs[2 * i] < lo:
                lo = self._rs[2 * i]
            if self._rs[2 * (j - 1) + 1] > hi:
                hi = self._rs[2 * (j - 1) + 1]
            self._rs[2 * i] = lo
            self._rs[2 * i + 1] = hi
            if j - i > 1:
                memmove(self._rs + 2 * (i + 1), self._rs + 2 * j,
                        2 * (self._n - j) * sizeof(Py_ssize_t))
                self._n -= j - i - 1
        else:
            self._reserve(self._n + 1)
            memmove(self._rs + 2 * (i + 1), self._rs + 2 * i,
                    2 * (self._n - i) * sizeof(Py_ssize_t))
            self._rs[2 * i] = lo
            self._rs[2 * i + 1] = hi
            self._n += 1
        self._buffered += new
        return new

    def pop_contiguous(self):
        """Remove and return the bytes at offset 0.. (b"" if offset 0 is missing).

        Every remaining offset shifts down by the number of bytes returned.
        """
        cdef Py_ssize_t n, k
        if self._n == 0 or self._rs[0] != 0:
            return b""
        n = self._rs[1]
        out = PyBytes_FromStringAndSize(NULL, n)
        self._copy_out(<unsigned char*>PyBytes_AS_STRING(out), 0, n)
        self._head = (self._head + n) % self._ring_size
        self._n -= 1
        memmove(self._rs, self._rs + 2, 2 * self._n * sizeof(Py_ssize_t))
        for k in range(2 * self._n):
            self._rs[k] -= n
        self._buffered -= n
        return out

    def __repr__(self):
        return (f"Assembler(capacity={self._cap}, buffered={self._buffered}, "
                f"ranges={self.ranges()!r})")
