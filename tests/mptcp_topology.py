"""Virtual-time MPTCP topologies and a two-way transfer app for the MPTCP
tests (not a test module itself).

``two_hosts(paths=n)``: client ``c`` and server ``s`` (``MptcpHostCore``)
joined by ``n`` disjoint paths; path p: 10.p.0.1 <-> 10.p.0.2 (and
fd00:p::1/2 with ``v6=True``). ``Exchange``: the client connects, both ends
send their bytes, half-close, read everything and close; ``done()`` when
both sides have everything and both DATA_FINs are acknowledged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from stack.host import MptcpHostCore
from stack.mptcp.connection import MptcpConfig
from stack.netsim.link import Link
from stack.netsim.network import Network
from stack.tcp.state import TcpState


@dataclass
class Topo:
    net: Network
    c: MptcpHostCore
    s: MptcpHostCore
    links: list[tuple[Link, Link]] = field(default_factory=list)

    def cut(self, path: int) -> None:
        """Every packet on path ``path`` (1-based) dropped, both ways."""
        for link in self.links[path - 1]:
            link.loss = 1.0


def two_hosts(paths: int = 1, *, seed: int = 1, rate: float | None = 100e6, delay: float = 0.005,
              loss: float = 0.0, queue: int | None = 250_000, c_cfg: MptcpConfig | None = None,
              s_cfg: MptcpConfig | None = None, c_mptcp: bool = True, s_mptcp: bool = True,
              v6: bool = False, rates: list[float] | None = None,
              strip_ab: Any = None, strip_ba: Any = None) -> Topo:
    net = Network(random.Random(seed))
    c = MptcpHostCore(random.Random(seed + 1), name="c", mptcp=c_mptcp, mptcp_config=c_cfg)
    s = MptcpHostCore(random.Random(seed + 2), name="s", mptcp=s_mptcp, mptcp_config=s_cfg)
    net.add_host(c)
    net.add_host(s)
    topo = Topo(net, c, s)
    for p in range(1, paths + 1):
        ca = [f"10.{p}.0.1/24"] + ([f"fd00:{p}::1/64"] if v6 else [])
        sa = [f"10.{p}.0.2/24"] + ([f"fd00:{p}::2/64"] if v6 else [])
        c.add_interface(f"v{p}", 1500, ca)
        s.add_interface(f"v{p}", 1500, sa)
        r = rates[p - 1] if rates else rate
        kw_ab = dict(rate_bps=r, delay=delay, loss=loss, queue_limit_bytes=queue,
                     rng=random.Random(seed * 100 + p))
        kw_ba = dict(kw_ab, rng=random.Random(seed * 100 + 50 + p))
        # path 1 may hold a middlebox stripping MPTCP options (client->server
        # packets chosen by strip_ab, server->client by strip_ba)
        ab = Middlebox(strip_ab, **kw_ab) if p == 1 and strip_ab else Link(**kw_ab)
        ba = Middlebox(strip_ba, **kw_ba) if p == 1 and strip_ba else Link(**kw_ba)
        topo.links.append(net.connect(c, f"v{p}", s, f"v{p}", ab=ab, ba=ba))
    return topo


class Exchange:
    """Client and server each send their bytes, half-close and read all."""

    def __init__(self, topo: Topo, up: bytes, down: bytes = b"", *, server_addr: str = "10.1.0.2",
                 port: int = 5001, mptcp: bool | None = None) -> None:
        self.topo = topo
        net = topo.net
        self.listener = topo.s.listen(None, port)
        self.conn: Any = topo.c.connect(server_addr, port, net.now, mptcp=mptcp)
        self.peer: Any = None
        self.up, self.down = memoryview(up), memoryview(down)
        self.sent_up = self.sent_down = 0
        self.rx_up: list[bytes] = []
        self.rx_down: list[bytes] = []
        self.n_up = self.n_down = 0
        self.shut_c = self.shut_s = False
        self.closed_c = self.closed_s = False
        self.finished_at: float | None = None

    @staticmethod
    def _push(host: Any, conn: Any, data: memoryview, sent: int, now: float) -> int:
        if sent < len(data) and conn.send_space > 0:
            n = conn.send(data[sent:sent + conn.send_space], now)
            sent += n
        return sent

    @staticmethod
    def _pull(conn: Any, out: list[bytes]) -> int:
        n = 0
        while conn.readable:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            out.append(chunk)
            n += len(chunk)
        return n

    def step(self, now: float) -> None:
        c, s = self.conn, self.peer
        if c.state not in (TcpState.SYN_SENT,) and c.error is None:
            self.sent_up = self._push(self.topo.c, c, self.up, self.sent_up, now)
            if self.sent_up == len(self.up) and not self.shut_c:
                c.shutdown_write(now)
                self.shut_c = True
            self.n_down += self._pull(c, self.rx_down)
            if c.eof_received and self.shut_c and not self.closed_c and not c.readable:
                c.close(now)
                self.closed_c = True
            self.topo.c.wake(c, now)
        if s is None:
            s = self.peer = self.listener.accept()
            if s is None:
                return
        if s.error is None:
            self.sent_down = self._push(self.topo.s, s, self.down, self.sent_down, now)
            if self.sent_down == len(self.down) and not self.shut_s:
                s.shutdown_write(now)
                self.shut_s = True
            self.n_up += self._pull(s, self.rx_up)
            if s.eof_received and self.shut_s and not self.closed_s and not s.readable:
                s.close(now)
                self.closed_s = True
            self.topo.s.wake(s, now)
        if self.finished_at is None and self.done():
            self.finished_at = now

    def done(self) -> bool:
        s = self.peer
        return (s is not None and self.n_up == len(self.up) and self.n_down == len(self.down)
                and self.conn.eof_received and s.eof_received
                and self.conn.all_acked and s.all_acked)

    def failed(self) -> int | None:
        return self.conn.error or (self.peer.error if self.peer is not None else None)

    def run(self, timeout: float = 120.0) -> bool:
        return self.topo.net.run_until(lambda: self.done() or self.failed() is not None,
                                       timeout=timeout, on_step=self.step)

    @property
    def received_up(self) -> bytes:
        return b"".join(self.rx_up)

    @property
    def received_down(self) -> bytes:
        return b"".join(self.rx_down)


def payload(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def strip_mptcp(pkt: bytes) -> bytes:
    """A middlebox removing every MPTCP option (kind 30) from a packet: each
    becomes NOPs (the header keeps its length) and the TCP checksum is
    recomputed (as nftables ``reset tcp option mptcp`` does)."""
    from stack.wire.checksum import pseudo_sum_v4, pseudo_sum_v6, tcp_checksum

    b = bytearray(pkt)
    if b[0] >> 4 == 4:
        ihl = (b[0] & 0x0F) * 4
        src, dst = bytes(b[12:16]), bytes(b[16:20])
        total = int.from_bytes(b[2:4], "big")
        pseudo = pseudo_sum_v4(src, dst, 6, total - ihl)
    else:
        ihl = 40
        src, dst = bytes(b[8:24]), bytes(b[24:40])
        pseudo = pseudo_sum_v6(src, dst, 6, int.from_bytes(b[4:6], "big"))
    doff = (b[ihl + 12] >> 4) * 4
    i, end = ihl + 20, ihl + doff
    changed = False
    while i < end:
        kind = b[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        ln = b[i + 1] if i + 1 < end else 0
        if ln < 2:
            break
        if kind == 30:
            b[i:i + ln] = b"\x01" * ln
            changed = True
        i += ln
    if not changed:
        return pkt
    b[ihl + 16:ihl + 18] = b"\x00\x00"
    csum = tcp_checksum(pseudo, bytes(b[ihl:]))
    b[ihl + 16:ihl + 18] = csum.to_bytes(2, "big")
    return bytes(b)


class Middlebox(Link):
    """A link that rewrites the packets ``when(pkt)`` selects with ``strip_mptcp``."""

    def __init__(self, when: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.when = when
        self.stripped = 0

    def send(self, frame: Any, now: float) -> list[tuple[float, bytes, bool]]:
        out = []
        for t, pkt, verified in super().send(frame, now):
            if self.when(pkt):
                new = strip_mptcp(pkt)
                if new is not pkt:
                    self.stripped += 1
                    pkt, verified = new, False
            out.append((t, pkt, verified))
        return out


def tcp_flags(pkt: bytes) -> int:
    ihl = (pkt[0] & 0x0F) * 4 if pkt[0] >> 4 == 4 else 40
    return pkt[ihl + 13]


TSHARK_OPTS = ["-o", "mptcp.analyze_mptcp:TRUE", "-o", "mptcp.analyze_mappings:TRUE",
               "-o", "tcp.analyze_sequence_numbers:TRUE"]
EXPERT_ERROR = 0x800000  # _ws.expert.severity of PI_ERROR (PI_WARN is 0x600000)


def _payload_as_data(pcap: Any) -> list[str]:
    """tshark options that show TCP payload as plain data: our payloads are
    random bytes, which heuristic dissectors (Thrift, ...) or a dissector
    registered for the port would otherwise "decode" into errors that say
    nothing about MPTCP."""
    import subprocess

    heur = subprocess.run(["tshark", "-G", "heuristic-decodes"], capture_output=True,
                          text=True, timeout=60).stdout
    opts: list[str] = []
    for line in heur.splitlines():
        cols = line.split("\t")
        if len(cols) >= 2 and cols[0] == "tcp":
            opts += ["--disable-protocol", cols[1]]
    ports = subprocess.run(["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e",
                            "tcp.srcport", "-e", "tcp.dstport", "-Y", "tcp.flags.syn == 1"],
                           capture_output=True, text=True, timeout=600).stdout.split()
    for port in sorted(set(ports)):
        if port.isdigit():
            opts += ["-d", f"tcp.port=={port},data"]
    return opts


def tshark_problems(pcap: Any) -> tuple[str, int, dict[str, int]]:
    """Decode ``pcap`` once with tshark's MPTCP analysis and mapping analysis
    on: the packets that are malformed or carry error-level expert info (one
    line each, empty when clean), the number of MPTCP packets, and the set of
    ``mptcp.stream`` numbers (one per MPTCP connection tshark recognised).
    Raises ``FileNotFoundError`` when tshark is missing."""
    import shutil
    import subprocess

    if shutil.which("tshark") is None:
        raise FileNotFoundError("tshark")
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), *TSHARK_OPTS,
                          *_payload_as_data(pcap), "-Y",
                          "mptcp or _ws.malformed or _ws.expert", "-T", "fields",
                          "-E", "occurrence=a", "-E", "aggregator=,",
                          "-e", "frame.number", "-e", "mptcp.stream",
                          "-e", "_ws.expert.severity", "-e", "_ws.malformed",
                          "-e", "_ws.expert.message"],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return f"tshark failed: {out.stderr[:500]}", 0, {}
    bad: list[str] = []
    streams: dict[str, int] = {}
    n = 0
    for line in out.stdout.splitlines():
        cols = (line.split("\t") + [""] * 5)[:5]
        frame, stream, sev, malformed, msg = cols
        if stream:
            n += 1
            for one in set(stream.split(",")):
                streams[one] = streams.get(one, 0) + 1
        if malformed or any(int(v) >= EXPERT_ERROR for v in sev.split(",") if v.isdigit()):
            bad.append(f"frame {frame}: {msg or 'malformed'}")
    return "\n".join(bad), n, streams
