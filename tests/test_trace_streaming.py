"""The capture readers and `trace dump` stream: memory stays flat on a large file (issue 2).

A 50 MB capture of 16 KB TCP super-segments (each with an MPTCP DSS option)
is written to a temporary directory, then read with tracemalloc on; the peak
of Python allocations must stay a small multiple of one record, far below the
file size. A reader that loaded the whole file (or a dump that kept every
record) would peak above 50 MB.
"""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from stack.trace.dump import dump
from stack.trace.pcap import LINKTYPE_RAW, PcapWriter, open_capture, open_pcapng_writer
from stack.wire.ip import IPv4Header
from stack.wire.mptcp import Dss
from stack.wire.tcp import ACK, MptcpOption, TcpHeader, emit_segment, pad_options

FILE_SIZE = 50 * 1024 * 1024
PAYLOAD = 16 * 1024
PEAK_LIMIT = 1024 * 1024  # bytes of Python allocations at the peak (one record: 16 KB)


def _packet(i: int) -> bytes:
    src, dst = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    dss = Dss(data_ack=7, data_ack_len=4, dsn=1000 + i * PAYLOAD, dsn_len=4, ssn=1 + i * PAYLOAD,
              dll=PAYLOAD)
    hdr = TcpHeader(40000, 80, seq=(1 + i * PAYLOAD) & 0xFFFFFFFF, ack=1, flags=ACK,
                    window=502, options=pad_options([MptcpOption(dss)]))
    seg = emit_segment(hdr, bytes(PAYLOAD), src, dst)
    return IPv4Header(src, dst, total_length=20 + len(seg)).emit() + seg


@pytest.fixture(scope="module", params=["pcap", "pcapng"])
def big_capture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("big") / f"big.{request.param}"
    template = [_packet(i) for i in range(4)]
    n = FILE_SIZE // len(template[0]) + 1
    if request.param == "pcap":
        w: PcapWriter = PcapWriter(path, linktype=LINKTYPE_RAW)
    else:
        w = open_pcapng_writer(path)
        w.add_interface(LINKTYPE_RAW)
    with w:
        for i in range(n):
            w.write(template[i % 4], i * 0.001)
    assert path.stat().st_size >= FILE_SIZE
    return path, n


def _peak(fn: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_reader_memory_stays_flat(big_capture: tuple[Path, int]) -> None:
    path, n = big_capture

    def read() -> tuple[int, int]:
        count = total = 0
        with open_capture(path) as cap:
            for pkt in cap:
                count += 1
                total += len(pkt.data)
        return count, total

    (count, total), peak = _peak(read)
    assert count == n and total >= FILE_SIZE
    assert peak < PEAK_LIMIT, f"peak {peak} bytes while reading a {FILE_SIZE}-byte file"


class _CountingSink(io.TextIOBase):
    """A text stream that only counts lines (keeps nothing)."""

    def __init__(self) -> None:
        self.lines = 0
        self.last = ""

    def write(self, s: str) -> int:
        self.lines += s.count("\n")
        self.last = s
        return len(s)


def test_trace_dump_memory_stays_flat(big_capture: tuple[Path, int]) -> None:
    path, n = big_capture
    out, err = _CountingSink(), io.StringIO()
    status, peak = _peak(lambda: dump(str(path), out, err, as_json=True))
    assert status == 0 and err.getvalue() == ""
    assert out.lines == n and '"subtype": "DSS"' in out.last
    assert peak < PEAK_LIMIT, f"peak {peak} bytes while dumping a {FILE_SIZE}-byte file"
