"""pcapng (draft-ietf-opsawg-pcapng) block reader and a small writer.

Blocks: Section Header (SHB, sets the byte order of its section), Interface
Description (IDB: link type, snap length, ``if_tsresol``, ``if_tsoffset``),
Enhanced Packet (EPB), Simple Packet (SPB) and the obsolete Packet Block; all
other block types (name resolution, statistics, decryption secrets, custom)
are skipped. Streaming: one block is read at a time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from stack.trace.record import CapturedPacket, CaptureError, split_timestamp

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_OPB = 0x00000002  # obsolete Packet Block
BT_SPB = 0x00000003
BT_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D

OPT_ENDOFOPT = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14

# A block larger than this is treated as corrupt rather than read into memory.
MAX_BLOCK = 64 * 1024 * 1024


@dataclass(slots=True)
class Interface:
    """One IDB: link type, snap length and timestamp scale."""

    linktype: int
    snaplen: int
    # if_tsresol: one tick is 1/ts_den seconds (a power of ten; default
    # microseconds), or 2**-ts_pow2 seconds when ts_pow2 >= 0.
    ts_den: int = 1_000_000
    ts_pow2: int = -1
    ts_offset: int = 0  # if_tsoffset: seconds added to every time stamp

    def to_ns(self, ticks: int) -> int:
        """A time stamp in ticks as integer nanoseconds since the epoch."""
        if self.ts_pow2 >= 0:
            ns = (ticks * 1_000_000_000) >> self.ts_pow2
        elif self.ts_den <= 1_000_000_000:
            ns = ticks * (1_000_000_000 // self.ts_den)
        else:
            ns = ticks // (self.ts_den // 1_000_000_000)
        return ns + self.ts_offset * 1_000_000_000


def _parse_options(body: bytes, offset: int, endian: str) -> Iterator[tuple[int, bytes]]:
    """(code, value) pairs of a block's option list, stopping at opt_endofopt
    or at the first malformed option."""
    hdr = struct.Struct(endian + "HH")
    while offset + 4 <= len(body):
        code, length = hdr.unpack_from(body, offset)
        offset += 4
        if code == OPT_ENDOFOPT or offset + length > len(body):
            return
        yield code, body[offset:offset + length]
        offset += (length + 3) & ~3


def _parse_idb(body: bytes, endian: str, index: int) -> Interface:
    if len(body) < 8:
        raise CaptureError("pcapng: interface description block too short", index=index)
    linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", body, 0)
    iface = Interface(linktype, snaplen)
    for code, value in _parse_options(body, 8, endian):
        if code == OPT_IF_TSRESOL and len(value) >= 1:
            # MSB clear: 10**-v seconds; MSB set: 2**-(v & 0x7f) seconds.
            v = value[0]
            if v & 0x80:
                iface.ts_pow2 = v & 0x7F
            else:
                iface.ts_den = 10 ** v
        elif code == OPT_IF_TSOFFSET and len(value) >= 8:
            iface.ts_offset = struct.unpack_from(endian + "q", value, 0)[0]
    return iface


class PcapngReader:
    """Iterate the packets of a pcapng stream whose first 4 bytes (the SHB
    block type) have already been consumed."""

    format = "pcapng"

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._endian = "<"
        self.interfaces: list[Interface] = []
        self._count = 0
        self._started = False  # errors before the first block have no index
        # The first block must be a section header: read it now so that a
        # file with a bad header fails at open time.
        self._section(self._read_exact(4, "section header"))
        self._started = True

    @property
    def linktype(self) -> int | None:
        return self.interfaces[0].linktype if self.interfaces else None

    @property
    def snaplen(self) -> int | None:
        return self.interfaces[0].snaplen if self.interfaces else None

    def _index(self) -> int | None:
        return self._count + 1 if self._started else None

    def _read_exact(self, n: int, what: str) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise CaptureError(f"pcapng: truncated {what} ({len(data)} of {n} bytes)",
                               index=self._index())
        return data

    def __iter__(self) -> Iterator[CapturedPacket]:
        endian = self._endian
        while True:
            head = self._f.read(8)
            if not head:
                return
            if len(head) < 8:
                raise CaptureError("pcapng: truncated block header", index=self._count + 1)
            btype = struct.unpack_from(endian + "I", head, 0)[0]
            if btype == BT_SHB:
                # The length cannot be decoded before the byte-order magic.
                self._section(head[4:])
                endian = self._endian
                continue
            total = struct.unpack_from(endian + "I", head, 4)[0]
            if total < 12 or total % 4 or total > MAX_BLOCK:
                raise CaptureError(f"pcapng: bad block length {total}", index=self._count + 1)
            body = self._read_exact(total - 12, "block")
            self._read_exact(4, "block trailer")
            if btype == BT_IDB:
                self.interfaces.append(_parse_idb(body, endian, self._count + 1))
            elif btype in (BT_EPB, BT_OPB, BT_SPB):
                yield self._packet(btype, body, endian)
            # every other block type is skipped

    def _section(self, length_bytes: bytes) -> None:
        """Read the rest of a section header block (type and length already
        read): byte-order magic, version, section length, options."""
        magic = self._read_exact(4, "section header")
        if struct.unpack(">I", magic)[0] == BYTE_ORDER_MAGIC:
            self._endian = ">"
        elif struct.unpack("<I", magic)[0] == BYTE_ORDER_MAGIC:
            self._endian = "<"
        else:
            raise CaptureError("pcapng: bad byte-order magic in section header",
                               index=self._index())
        total = struct.unpack(self._endian + "I", length_bytes)[0]
        if total < 28 or total % 4 or total > MAX_BLOCK:
            raise CaptureError(f"pcapng: bad section header length {total}",
                               index=self._index())
        self._read_exact(total - 12, "section header")
        # A new section has its own interfaces (draft-ietf-opsawg-pcapng §4.1).
        self.interfaces = []

    def _interface(self, if_id: int) -> Interface:
        if if_id >= len(self.interfaces):
            raise CaptureError(f"pcapng: packet on undeclared interface {if_id}",
                               index=self._count + 1)
        return self.interfaces[if_id]

    def _packet(self, btype: int, body: bytes, endian: str) -> CapturedPacket:
        index = self._count + 1
        if btype == BT_SPB:
            # Simple Packet Block: original length, then data; interface 0,
            # no timestamp; captured length = min(orig, snaplen, block room).
            if len(body) < 4:
                raise CaptureError("pcapng: simple packet block too short", index=index)
            iface = self._interface(0)
            orig_len = struct.unpack_from(endian + "I", body, 0)[0]
            caplen = min(orig_len, len(body) - 4)
            if iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            if_id, data_off, ns = 0, 4, 0
        else:
            if btype == BT_EPB:
                if len(body) < 20:
                    raise CaptureError("pcapng: enhanced packet block too short", index=index)
                if_id, hi, lo, caplen, orig_len = struct.unpack_from(endian + "5I", body, 0)
            else:  # obsolete Packet Block: 16-bit interface id and drop count
                if len(body) < 20:
                    raise CaptureError("pcapng: packet block too short", index=index)
                if_id, _drops, hi, lo, caplen, orig_len = struct.unpack_from(
                    endian + "HH4I", body, 0)
            data_off = 20
            if caplen > len(body) - 20:
                raise CaptureError(
                    f"pcapng: captured length {caplen} exceeds its block", index=index)
            iface = self._interface(if_id)
            ns = iface.to_ns((hi << 32) | lo)
        self._count = index
        data = body[data_off:data_off + caplen]
        return CapturedPacket(index, ns / 1e9, iface.linktype, data, max(orig_len, caplen),
                              if_id, ns)


class PcapngWriter:
    """Write a one-section pcapng file (little-endian) with Enhanced Packet
    Blocks. Interfaces are declared with :meth:`add_interface`; nanosecond
    timestamps (``if_tsresol`` = 9) unless ``nanosecond=False``."""

    def __init__(self, f: BinaryIO, *, own: bool = False) -> None:
        self._f = f
        self._own = own
        self._ifaces: list[tuple[int, int, bool]] = []
        # SHB: byte-order magic, version 1.0, section length unknown (-1).
        body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
        self._block(BT_SHB, body)

    def _block(self, btype: int, body: bytes) -> None:
        pad = (-len(body)) % 4
        total = 12 + len(body) + pad
        self._f.write(struct.pack("<II", btype, total) + body + b"\0" * pad
                      + struct.pack("<I", total))

    def add_interface(self, linktype: int, snaplen: int = 262144, *,
                      nanosecond: bool = True) -> int:
        """Declare an interface; returns its id for :meth:`write`."""
        opts = b""
        if nanosecond:
            opts = struct.pack("<HHB3x", OPT_IF_TSRESOL, 1, 9) + struct.pack("<HH", 0, 0)
        self._block(BT_IDB, struct.pack("<HHI", linktype, 0, snaplen) + opts)
        self._ifaces.append((linktype, snaplen, nanosecond))
        return len(self._ifaces) - 1

    def write(self, data: bytes, timestamp: float = 0.0, interface: int = 0, *,
              orig_len: int | None = None, timestamp_ns: int | None = None) -> None:
        """Append one packet on ``interface`` (cut to its snap length)."""
        _linktype, snaplen, nano = self._ifaces[interface]
        data = bytes(data)
        orig = len(data) if orig_len is None else orig_len
        if snaplen and len(data) > snaplen:
            data = data[:snaplen]
        if timestamp_ns is None:
            units = 10**9 if nano else 10**6
            sec, frac = split_timestamp(timestamp, units)
            ticks = sec * units + frac
        else:
            ticks = timestamp_ns if nano else timestamp_ns // 1000
        body = struct.pack("<5I", interface, ticks >> 32, ticks & 0xFFFFFFFF,
                           len(data), orig) + data
        self._block(BT_EPB, body)

    def close(self) -> None:
        self._f.flush()
        if self._own:
            self._f.close()

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
