# cython: language_level=3
"""One call per IP packet: IPv4/IPv6 + TCP headers, options and checksums.

`parse_segment(packet)` walks the IP header (IPv6 extension headers skipped,
RFC 8200 section 4), the TCP header (RFC 9293 section 3.1) and its options
(MSS, RFC 7323 window scale and timestamps, RFC 2018 SACK, and the byte spans
of every RFC 8684 kind-30 option), and verifies the IPv4 header checksum and
the TCP checksum. The result is a `Segment` whose fields are C values; the few
Python objects (addresses, tuples, payload view) are built only when read.

Any input gives a Segment or a ParseError, never another exception.
"""
cimport cython
from cpython.buffer cimport PyBuffer_Release
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_FromStringAndSize
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

from fastpath._csum cimport acquire, be_sum, fold


class ParseError(ValueError):
    """The packet cannot be parsed at all.

    `kind` is one of "truncated" (fewer captured bytes than the headers
    need), "not_tcp" (another protocol, or an IP fragment), "bad_header"
    (inconsistent lengths, or not a bytes-like object), "bad_version".
    """

    def __init__(self, kind, msg):
        super().__init__(msg)
        self.kind = kind


# Option-walk error texts (identical in fastpath.reference).
cdef str E_OPT_TRUNC = "option kind without length byte"
cdef str E_OPT_LEN = "bad option length"
cdef str E_MSS = "bad MSS option length"
cdef str E_WS = "bad window scale option length"
cdef str E_SACKP = "bad SACK-permitted option length"
cdef str E_SACK = "bad SACK option length"
cdef str E_TS = "bad timestamps option length"

DEF MAX_SPANS = 20   # 40 option bytes / 2 bytes per option at least


cdef inline uint32_t be16(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline uint32_t be32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16)
            | (<uint32_t>p[2] << 8) | p[3])


@cython.final
@cython.freelist(64)
cdef class Segment:
    """Parsed IP+TCP headers of one packet (read-only)."""

    cdef readonly int version
    cdef readonly int ttl
    cdef readonly int ip_header_len
    cdef readonly int ip_total_len
    cdef readonly bint ip_checksum_ok
    cdef readonly bint truncated
    cdef readonly int tcp_offset
    cdef readonly int sport
    cdef readonly int dport
    cdef readonly uint32_t seq
    cdef readonly uint32_t ack
    cdef readonly int flags
    cdef readonly int window
    cdef readonly int urgent
    cdef readonly int tcp_checksum
    cdef readonly int payload_offset
    cdef readonly int payload_len
    cdef readonly int options_offset
    cdef readonly int options_len
    cdef readonly int mss
    cdef readonly int wscale
    cdef readonly bint sack_permitted
    cdef readonly bint ts_present
    cdef readonly uint32_t ts_val
    cdef readonly uint32_t ts_ecr
    cdef readonly object options_error
    cdef signed char _tcp_ok          # -1: not verified
    cdef int _addr_len
    cdef int _n_sack
    cdef int _n_spans
    cdef unsigned char _src[16]
    cdef unsigned char _dst[16]
    cdef uint32_t _sack[8]
    cdef int _spans[2 * MAX_SPANS]
    cdef object _packet               # bytes, or a byte memoryview pinning the buffer

    @property
    def src(self):
        return PyBytes_FromStringAndSize(<char*>self._src, self._addr_len)

    @property
    def dst(self):
        return PyBytes_FromStringAndSize(<char*>self._dst, self._addr_len)

    @property
    def tcp_checksum_ok(self):
        if self._tcp_ok < 0:
            return None
        return self._tcp_ok == 1

    @property
    def sack_blocks(self):
        if self._n_sack == 0:
            return ()
        return tuple([(self._sack[2 * k], self._sack[2 * k + 1])
                      for k in range(self._n_sack)])

    @property
    def mptcp_spans(self):
        if self._n_spans == 0:
            return ()
        return tuple([(self._spans[2 * k], self._spans[2 * k + 1])
                      for k in range(self._n_spans)])

    @property
    def payload(self):
        start = self.payload_offset
        return memoryview(self._packet)[start:start + self.payload_len]

    def __repr__(self):
        return (f"Segment(v{self.version} {self.src.hex()}:{self.sport} > "
                f"{self.dst.hex()}:{self.dport} flags=0x{self.flags:03x} "
                f"seq={self.seq} ack={self.ack} len={self.payload_len})")


cdef int _fail(str kind, str msg) except -1:
    raise ParseError(kind, msg)


cdef Segment _parse(const unsigned char* p, Py_ssize_t n, bint verify):
    cdef Segment s
    cdef Py_ssize_t ihl, doff, hl, i, oend, end
    cdef Py_ssize_t total = 0, t = 0  # set on every path that does not raise
    cdef Py_ssize_t fdst = 24         # IPv6: offset of the pseudo-header destination
    cdef int nh, kind, ol, k, nb
    cdef uint64_t acc = 0
    cdef uint32_t tcp_len
    cdef str err = None

    if n < 1:
        _fail("truncated", "empty packet")
    s = Segment.__new__(Segment)
    s.version = p[0] >> 4
    if s.version == 4:
        # RFC 791 section 3.1
        if n < 20:
            _fail("truncated", "shorter than an IPv4 header")
        ihl = (p[0] & 15) * 4
        if ihl < 20:
            _fail("bad_header", "IPv4 IHL below 5")
        total = be16(p + 2)
        if total < ihl:
            _fail("bad_header", "IPv4 total length below header length")
        if n < ihl:
            _fail("truncated", "IPv4 options cut short")
        if p[9] != 6:
            _fail("not_tcp", "IPv4 protocol is not TCP")
        if be16(p + 6) & 0x3FFF:
            _fail("not_tcp", "IPv4 fragment")
        s.ttl = p[8]
        s._addr_len = 4
        memcpy(s._src, p + 12, 4)
        memcpy(s._dst, p + 16, 4)
        s.ip_checksum_ok = be_sum(p, ihl) == 0xFFFF
        t = ihl
    elif s.version == 6:
        # RFC 8200 sections 3 and 4
        if n < 40:
            _fail("truncated", "shorter than an IPv6 header")
        total = 40 + be16(p + 4)
        nh = p[6]
        t = 40
        fdst = 24
        while nh != 6:
            # Hop-by-hop 0, routing 43, destination options 60 and the
            # RFC 6564 uniform-format headers (mobility 135, HIP 139, shim6
            # 140) count 8-octet units beyond the first; fragment 44 is 8
            # octets; AH 51 counts 4-octet units minus 2 (RFC 4302 section 2.2).
            if (nh == 0 or nh == 43 or nh == 60 or nh == 44 or nh == 51
                    or nh == 135 or nh == 139 or nh == 140):
                if t + 8 > total:
                    _fail("bad_header", "IPv6 extension header beyond payload length")
                if t + 8 > n:
                    _fail("truncated", "IPv6 extension header cut short")
                if nh == 44:
                    hl = 8
                elif nh == 51:
                    hl = (p[t + 1] + 2) * 4
                else:
                    hl = (p[t + 1] + 1) * 8
                if t + hl > total:
                    _fail("bad_header", "IPv6 extension header beyond payload length")
                if t + hl > n:
                    _fail("truncated", "IPv6 extension header cut short")
                if nh == 44 and (be16(p + t + 2) & 0xFFF9):
                    _fail("not_tcp", "IPv6 fragment")
                if nh == 43 and p[t + 3] != 0 and hl >= 24:
                    # RFC 8200 section 8.1: with segments left, the pseudo-header
                    # holds the final destination: the last address of a type 0
                    # or 2 routing header, Segment List[0] of an SRH (RFC 8754).
                    if p[t + 2] == 0 or p[t + 2] == 2:
                        fdst = t + 8 + 16 * ((hl - 8) // 16 - 1)
                    elif p[t + 2] == 4:
                        fdst = t + 8
                nh = p[t]
                t += hl
            else:
                _fail("not_tcp", "IPv6 next header is not TCP")
        s.ttl = p[7]
        s._addr_len = 16
        memcpy(s._src, p + 8, 16)
        memcpy(s._dst, p + 24, 16)
        s.ip_checksum_ok = True
    else:
        _fail("bad_version", "IP version is neither 4 nor 6")

    # RFC 9293 section 3.1: the TCP header
    if t + 20 > total:
        _fail("bad_header", "TCP header beyond IP length")
    if t + 20 > n:
        _fail("truncated", "TCP header cut short")
    doff = (p[t + 12] >> 4) * 4
    if doff < 20:
        _fail("bad_header", "TCP data offset below 5")
    if t + doff > total:
        _fail("bad_header", "TCP options beyond IP length")
    if t + doff > n:
        _fail("truncated", "TCP options cut short")

    s.ip_header_len = t
    s.ip_total_len = total
    s.truncated = n < total
    end = n if n < total else total
    s.tcp_offset = t
    s.sport = be16(p + t)
    s.dport = be16(p + t + 2)
    s.seq = be32(p + t + 4)
    s.ack = be32(p + t + 8)
    s.flags = ((p[t + 12] & 1) << 8) | p[t + 13]
    s.window = be16(p + t + 14)
    s.tcp_checksum = be16(p + t + 16)
    s.urgent = be16(p + t + 18)
    s.options_offset = t + 20
    s.options_len = doff - 20
    s.payload_offset = t + doff
    s.payload_len = end - t - doff

    if verify and not s.truncated:
        tcp_len = <uint32_t>(total - t)
        if s.version == 4:
            acc = be_sum(p + 12, 8)
        else:
            acc = be_sum(p + 8, 16) + be_sum(p + fdst, 16)
        acc += 6 + (tcp_len >> 16) + (tcp_len & 0xFFFF)
        acc += be_sum(p + t, tcp_len)
        s._tcp_ok = fold(acc) == 0xFFFF
    else:
        s._tcp_ok = -1

    # Options (RFC 9293 section 3.2): EOL ends, NOP is one byte, others TLV.
    s.mss = -1
    s.wscale = -1
    i = t + 20
    oend = t + doff
    while i < oend:
        kind = p[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= oend:
            err = E_OPT_TRUNC
            break
        ol = p[i + 1]
        if ol < 2 or i + ol > oend:
            err = E_OPT_LEN
            break
        if kind == 8:                       # RFC 7323 section 3
            if ol != 10:
                err = E_TS
                break
            s.ts_present = True
            s.ts_val = be32(p + i + 2)
            s.ts_ecr = be32(p + i + 6)
        elif kind == 30:                    # RFC 8684 section 2
            s._spans[2 * s._n_spans] = <int>i
            s._spans[2 * s._n_spans + 1] = ol
            s._n_spans += 1
        elif kind == 5:                     # RFC 2018 section 3
            if ol < 10 or (ol - 2) & 7:
                err = E_SACK
                break
            nb = (ol - 2) >> 3
            for k in range(nb):
                s._sack[2 * k] = be32(p + i + 2 + 8 * k)
                s._sack[2 * k + 1] = be32(p + i + 6 + 8 * k)
            s._n_sack = nb
        elif kind == 2:                     # RFC 9293 section 3.2
            if ol != 4:
                err = E_MSS
                break
            s.mss = be16(p + i + 2)
        elif kind == 3:                     # RFC 7323 section 2
            if ol != 3:
                err = E_WS
                break
            s.wscale = p[i + 2]
        elif kind == 4:                     # RFC 2018 section 2
            if ol != 2:
                err = E_SACKP
                break
            s.sack_permitted = True
        i += ol
    s.options_error = err
    return s


def parse_segment(packet, bint verify_checksum=True):
    """Parse one whole IPv4 or IPv6 packet carrying TCP; see Segment."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef Segment s
    if PyBytes_CheckExact(packet):
        acquire(packet, &view, &p, &n)       # no buffer export for bytes
        s = _parse(p, n, verify_checksum)
        s._packet = packet
        return s
    try:
        acquire(packet, &view, &p, &n)
    except (TypeError, BufferError, ValueError):
        raise ParseError("bad_header", "not a contiguous bytes-like object") from None
    try:
        s = _parse(p, n, verify_checksum)
    finally:
        PyBuffer_Release(&view)
    try:
        s._packet = memoryview(packet).cast("B")
    except (TypeError, ValueError):
        s._packet = bytes(packet)
    return s
