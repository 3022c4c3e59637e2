# cython: language_level=3
"""Inline helpers shared by the fast-path modules (no runtime module of its own).

The one's-complement sum is independent of byte order (RFC 1071 section 2(B)):
we add native-order 32-bit halves of 64-bit loads into a 64-bit accumulator,
fold, and byte-swap once at the end on little-endian hosts.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef inline bint _host_is_little() noexcept nogil:
    cdef uint16_t one = 1
    return (<const unsigned char*>&one)[0] == 1


cdef inline uint64_t native_sum(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """Unfolded sum of native-order 16-bit words of p[0:n] (odd tail zero-padded)."""
    cdef uint64_t a0 = 0
    cdef uint64_t a1 = 0
    cdef uint64_t w0, w1
    cdef uint32_t w32
    cdef uint16_t w16 = 0
    cdef Py_ssize_t i = 0
    while i + 16 <= n:
        memcpy(&w0, p + i, 8)
        memcpy(&w1, p + i + 8, 8)
        a0 += (w0 & 0xffffffffu) + (w0 >> 32)
        a1 += (w1 & 0xffffffffu) + (w1 >> 32)
        i += 16
    a0 += a1
    while i + 4 <= n:
        memcpy(&w32, p + i, 4)
        a0 += w32
        i += 4
    if i + 2 <= n:
        memcpy(&w16, p + i, 2)
        a0 += w16
        i += 2
    if i < n:
        w16 = 0
        (<unsigned char*>&w16)[0] = p[i]
        a0 += w16
    return a0


cdef inline uint32_t fold(uint64_t s) noexcept nogil:
    """Fold a 64-bit one's-complement accumulator to 16 bits (not inverted)."""
    s = (s & 0xffffffffu) + (s >> 32)
    s = (s & 0xffffffffu) + (s >> 32)
    s = (s & 0xffffu) + (s >> 16)
    s = (s & 0xffffu) + (s >> 16)
    s = (s & 0xffffu) + (s >> 16)
    return <uint32_t>s


cdef inline uint32_t swap16(uint32_t v) noexcept nogil:
    return ((v & 0xffu) << 8) | ((v >> 8) & 0xffu)


cdef inline uint32_t be_sum(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """Folded 16-bit one's-complement sum of p[0:n] as big-endian words."""
    cdef uint32_t s = fold(native_sum(p, n))
    if _host_is_little():
        s = swap16(s)
    return s


cdef inline int acquire(object data, Py_buffer* view, const unsigned char** p,
                        Py_ssize_t* n) except -1:
    """Point p/n at the bytes of a bytes-like object.

    Returns 1 when `view` must be released with PyBuffer_Release, 0 otherwise
    (exact bytes: no buffer export needed).
    """
    if PyBytes_CheckExact(data):
        p[0] = <const unsigned char*>PyBytes_AS_STRING(data)
        n[0] = PyBytes_GET_SIZE(data)
        return 0
    PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    p[0] = <const unsigned char*>view.buf
    n[0] = view.len
    return 1
