# cython: language_level=3
"""Internet checksums for the data path.

- RFC 1071: 16-bit one's-complement sum over a bytes-like object.
- RFC 1624 (eqn. 3): incremental update when one 16-bit word changes.
- RFC 9293 section 3.1 / RFC 8200 section 8.1: IPv4 / IPv6 pseudo-header sums.
- RFC 8684 section 3.3.1: the MPTCP DSS checksum over a whole mapping.

"Sum" results are folded and NOT inverted; "checksum" results are inverted,
ready for the wire. Plain-Python twins live in fastpath.reference.
"""
from cpython.buffer cimport PyBuffer_Release
from libc.stdint cimport uint32_t, uint64_t

from fastpath._csum cimport acquire, be_sum, fold, swap16


cdef inline uint32_t _initial(object initial) except? 0xffffffff:
    cdef long long v
    try:
        v = initial
    except OverflowError:
        v = -1
    if v < 0 or v > 0xffffffff:
        raise ValueError("initial sum must be in 0..0xffffffff")
    return fold(<uint64_t>v)


cdef uint32_t _sum_obj(object data) except? 0xffffffff:
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef int rel = acquire(data, &view, &p, &n)
    cdef uint32_t s
    with nogil:
        s = be_sum(p, n)
    if rel:
        PyBuffer_Release(&view)
    return s


cdef uint32_t _sum_chain(object data, uint32_t start) except? 0xffffffff:
    """Sum of one bytes-like or of a list/tuple of them taken as one buffer.

    A piece that starts at an odd offset of the concatenation contributes its
    byte-swapped sum (RFC 1071 section 2(B): byte-order independence).
    """
    cdef uint64_t acc = start
    cdef uint32_t s
    cdef Py_ssize_t total = 0
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef int rel
    if isinstance(data, (list, tuple)):
        for piece in data:
            rel = acquire(piece, &view, &p, &n)
            s = be_sum(p, n)
            if rel:
                PyBuffer_Release(&view)
            if total & 1:
                s = swap16(s)
            acc += s
            total += n
        return fold(acc)
    return fold(acc + _sum_obj(data))


def ones_sum(data, initial=0):
    """Folded (non-inverted) 16-bit one's-complement sum of data, plus initial."""
    cdef uint32_t init = _initial(initial)
    return fold(<uint64_t>init + _sum_obj(data))


def internet_checksum(data, initial=0):
    """RFC 1071 checksum: ~ones_sum(data, initial) & 0xffff."""
    cdef uint32_t init = _initial(initial)
    return (~fold(<uint64_t>init + _sum_obj(data))) & 0xffff


def incremental_update(old_checksum, old_word, new_word):
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') for one changed 16-bit word."""
    if not (0 <= old_checksum <= 0xffff and 0 <= old_word <= 0xffff
            and 0 <= new_word <= 0xffff):
        raise ValueError("checksum and words must be 16-bit values")
    cdef uint64_t s = (<uint64_t>((~old_checksum) & 0xffff)
                       + <uint64_t>((~old_word) & 0xffff) + <uint64_t>(<uint32_t>new_word))
    return (~fold(s)) & 0xffff


cdef uint32_t _addr_sum(object addr, Py_ssize_t want) except? 0xffffffff:
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef int rel = acquire(addr, &view, &p, &n)
    cdef uint32_t s = be_sum(p, n)
    if rel:
        PyBuffer_Release(&view)
    if n != want:
        raise ValueError(f"address must be {want} bytes, got {n}")
    return s


def pseudo_sum_v4(src, dst, proto, length):
    """RFC 9293 section 3.1 pseudo-header: src, dst, zero, protocol, TCP length."""
    if not (0 <= proto <= 0xff and 0 <= length <= 0xffff):
        raise ValueError("proto must fit 8 bits and length 16 bits")
    cdef uint64_t s = _addr_sum(src, 4) + _addr_sum(dst, 4)
    s += <uint64_t>(<uint32_t>proto) + <uint64_t>(<uint32_t>length)
    return fold(s)


def pseudo_sum_v6(src, dst, proto, length):
    """RFC 8200 section 8.1 pseudo-header: src, dst, 32-bit length, next header."""
    if not (0 <= proto <= 0xff and 0 <= length <= 0xffffffff):
        raise ValueError("proto must fit 8 bits and length 32 bits")
    cdef uint32_t ln = length
    cdef uint64_t s = _addr_sum(src, 16) + _addr_sum(dst, 16)
    s += <uint64_t>(<uint32_t>proto) + (ln >> 16) + (ln & 0xffff)
    return fold(s)


def tcp_checksum(pseudo, segment):
    """Checksum for the TCP header+payload `segment` (checksum field zeroed)."""
    cdef uint32_t init = _initial(pseudo)
    return (~fold(<uint64_t>init + _sum_obj(segment))) & 0xffff


def dss_checksum(dsn, ssn, dll, payload):
    """RFC 8684 section 3.3.1 DSS checksum, the value to put on the wire.

    Pseudo-header DSN (64 bits, even when 32 bits go on the wire) || relative
    subflow sequence number (32) || data-level length (16) || zero checksum
    (16), followed by the whole mapping's payload: one bytes-like object or a
    list/tuple of them, concatenated.
    """
    if not (0 <= dsn <= 0xffffffffffffffff and 0 <= ssn <= 0xffffffff
            and 0 <= dll <= 0xffff):
        raise ValueError("dsn must fit 64 bits, ssn 32 bits, dll 16 bits")
    cdef uint64_t d = dsn
    cdef uint32_t sn = ssn
    cdef uint64_t s = ((d >> 48) + ((d >> 32) & 0xffff) + ((d >> 16) & 0xffff)
                       + (d & 0xffff) + (sn >> 16) + (sn & 0xffff) + <uint32_t>dll)
    # The pseudo-header is 16 bytes long, so the payload starts word-aligned.
    return (~_sum_chain(payload, fold(s))) & 0xffff
