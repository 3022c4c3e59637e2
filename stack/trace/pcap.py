"""Streaming capture files: classic pcap and pcapng readers, pcap writer.

Classic pcap (draft-ietf-opsawg-pcap): a 24-byte file header whose magic
gives the byte order and the timestamp unit (0xa1b2c3d4 microseconds,
0xa1b23c4d nanoseconds; the Kuznetzov "modified pcap" magic 0xa1b2cd34 adds 8
bytes per record header), then records of 16-byte header + captured bytes.
pcapng is handled in :mod:`stack.trace.pcapng`. Files are read one record at
a time, never whole.

Usage::

    with open_capture("trace.pcapng") as cap:
        for pkt in cap:
            ip = ip_payload(pkt)      # None for ARP and other non-IP frames

A truncated or impossible record raises :class:`CaptureError` (with
``index`` = that record's number) from the iteration, after every complete
record before it was yielded; iteration cannot continue past it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from stack.trace.link import ip_payload, link_layer, strip_link
from stack.trace.pcapng import PcapngReader, PcapngWriter
from stack.trace.record import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    CapturedPacket,
    CaptureError,
    split_timestamp,
)

__all__ = [
    "LINKTYPE_ETHERNET", "LINKTYPE_IPV4", "LINKTYPE_IPV6", "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2", "LINKTYPE_LOOP", "LINKTYPE_NULL", "LINKTYPE_RAW",
    "CaptureError", "CapturedPacket", "CaptureReader", "PcapReader", "PcapWriter",
    "PcapngReader", "PcapngWriter", "ip_payload", "link_layer", "open_capture",
    "strip_link",
]

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
MAGIC_MODIFIED = 0xA1B2CD34  # Alexey Kuznetzov's patched libpcap
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
# A record larger than this is corrupt (the largest snap length in use is
# 256 KiB; a 64 KiB TSO super-segment fits easily).
MAX_RECORD = 16 * 1024 * 1024

Source = str | os.PathLike[str] | BinaryIO


class PcapReader:
    """Records of a classic pcap stream whose 4 magic bytes were consumed."""

    format = "pcap"

    def __init__(self, f: BinaryIO, magic: bytes) -> None:
        self._f = f
        if struct.unpack("<I", magic)[0] in (MAGIC_US, MAGIC_NS, MAGIC_MODIFIED):
            endian = "<"
        else:
            endian = ">"
        value = struct.unpack(endian + "I", magic)[0]
        self.nanosecond = value == MAGIC_NS
        self._extra = 8 if value == MAGIC_MODIFIED else 0
        rest = f.read(20)
        if len(rest) != 20:
            raise CaptureError(f"pcap: truncated file header ({4 + len(rest)} of 24 bytes)")
        (self.version_major, self.version_minor, _thiszone, _sigfigs,
         self.snaplen, network) = struct.unpack(endian + "HHiIII", rest)
        # Bits 16..31 of the link-type field carry FCS information
        # (draft-ietf-opsawg-pcap §4, "LinkType and additional information").
        self.linktype = network & 0xFFFF
        self._rec = struct.Struct(endian + "IIII")
        self._count = 0

    def __iter__(self) -> Iterator[CapturedPacket]:
        f, rec, extra, linktype = self._f, self._rec, self._extra, self.linktype
        hdr_len = 16 + extra
        scale = 1 if self.nanosecond else 1000
        while True:
            hdr = f.read(hdr_len)
            index = self._count + 1
            if not hdr:
                return
            if len(hdr) < hdr_len:
                raise CaptureError(
                    f"pcap: record {index}: truncated record header "
                    f"({len(hdr)} of {hdr_len} bytes)", index=index)
            sec, frac, caplen, orig_len = rec.unpack_from(hdr)
            if caplen > MAX_RECORD:
                raise CaptureError(f"pcap: record {index}: impossible captured length {caplen}",
                                   index=index)
            data = f.read(caplen)
            if len(data) < caplen:
                raise CaptureError(
                    f"pcap: record {index}: truncated record data "
                    f"({len(data)} of {caplen} bytes)", index=index)
            self._count = index
            ns = sec * 1_000_000_000 + frac * scale
            yield CapturedPacket(index, ns / 1e9, linktype, data, max(orig_len, caplen), 0, ns)


class CaptureReader:
    """Context manager and iterator over the packets of a capture file.

    ``format`` is "pcap" or "pcapng"; ``linktype`` and ``snaplen`` are those
    of the file header (pcap) or of the first interface seen (pcapng; None
    before the first interface block was read)."""

    def __init__(self, reader: PcapReader | PcapngReader, f: BinaryIO, own: bool) -> None:
        self._reader = reader
        self._f = f
        self._own = own

    @property
    def format(self) -> str:
        return self._reader.format

    @property
    def linktype(self) -> int | None:
        return self._reader.linktype

    @property
    def snaplen(self) -> int | None:
        return self._reader.snaplen

    def __iter__(self) -> Iterator[CapturedPacket]:
        return iter(self._reader)

    def close(self) -> None:
        if self._own:
            self._f.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open(source: Source) -> tuple[BinaryIO, bool]:
    if hasattr(source, "read"):
        return source, False  # type: ignore[return-value]
    try:
        return open(source, "rb"), True  # noqa: SIM115 - closed by CaptureReader
    except OSError as exc:
        raise CaptureError(f"cannot open {os.fspath(source)}: {exc.strerror or exc}") from exc


def open_capture(source: Source) -> CaptureReader:
    """Open a pcap or pcapng file (a path or a binary file object) by its magic
    number. Raises :class:`CaptureError` for a file that cannot be opened, is
    empty, or starts with neither format's header."""
    f, own = _open(source)
    try:
        magic = f.read(4)
        if len(magic) < 4:
            raise CaptureError("not a capture file: shorter than a file header"
                               if magic else "not a capture file: empty")
        if magic == PCAPNG_SHB:
            reader: PcapReader | PcapngReader = PcapngReader(f)
        elif (struct.unpack("<I", magic)[0] in (MAGIC_US, MAGIC_NS, MAGIC_MODIFIED)
              or struct.unpack(">I", magic)[0] in (MAGIC_US, MAGIC_NS, MAGIC_MODIFIED)):
            reader = PcapReader(f, magic)
        else:
            raise CaptureError(f"not a pcap or pcapng file (magic {magic.hex()})")
    except OSError as exc:
        if own:
            f.close()
        raise CaptureError(f"read error: {exc}") from exc
    except BaseException:
        if own:
            f.close()
        raise
    return CaptureReader(reader, f, own)


class PcapWriter:
    """Write a classic little-endian pcap file.

    ``PcapWriter(path_or_file, linktype=LINKTYPE_RAW, snaplen=262144,
    nanosecond=False)``; ``write(data, timestamp)`` appends one record (data
    longer than the snap length is cut, ``orig_len`` keeps the real length).
    A path is opened (and closed by :meth:`close`); a file object is left open.
    """

    def __init__(self, target: Source, linktype: int = LINKTYPE_RAW, snaplen: int = 262144,
                 *, nanosecond: bool = False) -> None:
        if hasattr(target, "write"):
            self._f, self._own = target, False  # type: ignore[assignment]
        else:
            self._f, self._own = open(target, "wb"), True  # noqa: SIM115
        self.linktype = linktype
        self.snaplen = snaplen
        self.nanosecond = nanosecond
        magic = MAGIC_NS if nanosecond else MAGIC_US
        self._f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        self.count = 0

    def write(self, data: bytes, timestamp: float = 0.0, *, orig_len: int | None = None,
              timestamp_ns: int | None = None) -> None:
        data = bytes(data)
        orig = len(data) if orig_len is None else orig_len
        if len(data) > self.snaplen:
            data = data[:self.snaplen]
        if timestamp_ns is None:
            sec, frac = split_timestamp(timestamp, 10**9 if self.nanosecond else 10**6)
        else:
            sec, frac = divmod(timestamp_ns, 1_000_000_000)
            if not self.nanosecond:
                frac //= 1000
        self._f.write(struct.pack("<IIII", sec, frac, len(data), orig) + data)
        self.count += 1

    def close(self) -> None:
        if self._f.closed:
            return
        self._f.flush()
        if self._own:
            self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_pcapng_writer(target: Source) -> PcapngWriter:
    """A :class:`PcapngWriter` on a path (closed with the writer) or file."""
    if hasattr(target, "write"):
        return PcapngWriter(target)  # type: ignore[arg-type]
    return PcapngWriter(open(target, "wb"), own=True)  # noqa: SIM115
