"""TUN device against the Linux kernel: attach/create, offloads, raw TCP through it.

Each test makes its own namespace with a persistent TUN device (tools/topology.py);
the kernel side is 10.1.0.1, and the test plays the far end, 10.1.0.2, by
hand-building TCP segments, so the device is tested without the stack's core.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import socket
import struct
import time

import pytest

from tools.topology import Netns, Topology, can_run, unique_name  # noqa: E402
from tun.device import IFF_NO_PI, IFF_PERSIST, IFF_TUN, IFF_VNET_HDR, TunDevice  # noqa: E402
from tun.vnet import F_NEEDS_CSUM, GSO_TCPV4  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.skipif(can_run() is not None,
                                                     reason=str(can_run()))]

US, KERNEL = bytes([10, 1, 0, 2]), bytes([10, 1, 0, 1])
SYN, ACK, PSH, RST = 0x02, 0x10, 0x08, 0x04


def ones_sum(data: bytes, initial: int = 0) -> int:
    if len(data) % 2:
        data += b"\0"
    s = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def segment(seq: int, ack: int, flags: int, payload: bytes = b"", *, mss: int | None = None,
            partial: bool = False, sport: int = 40000, dport: int = 5001) -> bytes:
    """IPv4+TCP 10.1.0.2:40000 -> 10.1.0.1:5001; `partial`: pseudo-header sum only."""
    opts = struct.pack("!BBH", 2, 4, mss) if mss else b""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (5 + len(opts) // 4) << 4, flags,
                      65535, 0, 0) + opts
    tcplen = len(tcp) + len(payload)
    pseudo = ones_sum(US + KERNEL + struct.pack("!HH", 6, tcplen))
    csum = pseudo if partial else ~ones_sum(tcp + payload, pseudo) & 0xFFFF
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcplen, 0, 0x4000, 64, 6, 0, US, KERNEL)
    ip = ip[:10] + struct.pack("!H", ~ones_sum(ip) & 0xFFFF) + ip[12:]
    return ip + tcp + payload


class Frame:
    def __init__(self, data: bytes, gso_size: int) -> None:
        self.data, self.gso_size, self.csum_partial = data, gso_size, True


def read_tcp(dev: TunDevice, timeout: float = 2.0):
    """Next IPv4/TCP packet from the kernel (IPv6 router chatter is skipped)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        select.select([dev], [], [], max(0.0, end - time.monotonic()))
        item = dev.read()
        if item is not None and item[0][0] >> 4 == 4 and item[0][9] == 6:
            return item
    raise AssertionError("no TCP packet from the kernel")


def handshake(topo: Topology, dev: TunDevice):
    with topo.enter():
        srv = socket.create_server(("10.1.0.1", 5001))
    srv.settimeout(3)
    dev.write(segment(1000, 0, SYN, mss=1460))
    pkt, _info = read_tcp(dev)
    kseq = struct.unpack_from("!I", pkt, 24)[0]
    assert pkt[33] == SYN | ACK
    dev.write(segment(1001, kseq + 1, ACK))
    conn, _ = srv.accept()
    srv.close()
    return conn, kseq + 1


@pytest.fixture
def topo():
    with Topology(1) as t:
        yield t


def link_state(topo: Topology, name: str):
    link = topo.link(name)
    return (link["linkinfo"], link["flags"], link["mtu"], topo.addresses(name),
            active_features(topo, name))


def active_features(topo: Topology, name: str) -> tuple[int, ...]:
    """The device's active netdev feature words (ETHTOOL_GFEATURES, as `ethtool -k`)."""
    siocethtool, ethtool_gfeatures, words = 0x8946, 0x3A, 4
    with topo.enter():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    buf = ctypes.create_string_buffer(struct.pack("=II", ethtool_gfeatures, words)
                                      + bytes(16 * words))
    ifr = struct.pack("16sP", name.encode(), ctypes.addressof(buf)).ljust(40, b"\0")
    with s:
        fcntl.ioctl(s.fileno(), siocethtool, ifr)
    n = min(words, struct.unpack_from("=I", buf.raw, 4)[0])
    return tuple(struct.unpack_from("=IIII", buf.raw, 8 + 16 * i)[2] for i in range(n))


def test_attach_leaves_existing_device_as_found(topo: Topology) -> None:
    name = topo.path.tun
    before = link_state(topo, name)
    assert before[0]["info_data"]["persist"] and not before[0]["info_data"]["vnet_hdr"]
    dev = TunDevice(name, netns=topo.ns, offload=True)
    try:
        assert not dev.created and dev.persistent and dev.offload
        assert dev.flags & IFF_VNET_HDR and dev.flags & IFF_PERSIST
        assert topo.link(name)["linkinfo"]["info_data"]["vnet_hdr"]
        assert dev.mtu == 1500
        assert active_features(topo, name) != before[4]  # TSO/checksum offloads now on
    finally:
        dev.close()
    assert link_state(topo, name) == before
    dev.close()  # idempotent


def test_attach_plain_mode(topo: Topology) -> None:
    before = link_state(topo, topo.path.tun)
    dev = TunDevice(topo.path.tun, netns=topo.ns, offload=False)
    with dev:
        assert not dev.offload and not dev.vnet and not dev.flags & IFF_VNET_HDR
        assert dev.tso  # super-segments are still taken: cut in software
    assert link_state(topo, topo.path.tun) == before


def test_attach_to_vnet_device_restores_its_flags(topo: Topology) -> None:
    """A device that had vnet_hdr on, left down: plain attach and back."""
    name = topo.path.tun
    topo.ip("link", "set", "dev", name, "down")
    os.close(_open_queue_in(topo, name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR))
    before = link_state(topo, name)
    assert before[0]["info_data"]["vnet_hdr"] and "UP" not in before[1]
    with TunDevice(name, netns=topo.ns, offload=False) as dev:
        assert not dev.vnet
        assert topo.link(name)["linkinfo"]["info_data"]["vnet_hdr"] is False
    assert link_state(topo, name) == before


def test_attach_up_device_with_default_addrgenmode_leaves_no_link_local() -> None:
    """A device made with `ip tuntap add` and left at the kernel's default
    addrgenmode: our open brings its carrier up and the kernel adds an IPv6
    link-local address; close() removes it, keeping the user's own (here
    fe80::1 and 10.9.0.1/24) and the link state."""
    with Netns() as ns:
        ns.ip("tuntap", "add", "dev", "tunll", "mode", "tun")
        ns.ip("addr", "add", "10.9.0.1/24", "dev", "tunll")
        ns.ip("addr", "add", "fe80::1/64", "dev", "tunll", "nodad")
        ns.ip("link", "set", "dev", "tunll", "up")
        before = (ns.link("tunll")["flags"], ns.link("tunll")["linkinfo"],
                  ns.addresses("tunll"))
        assert before[2] == ["10.9.0.1/24", "fe80::1/64"]
        with TunDevice("tunll", netns=ns.name) as dev:
            during = ns.addresses("tunll")
            assert len(during) == 3, during  # the kernel's own link-local appeared
        assert dev.stats.ll_removed == 1
        after = (ns.link("tunll")["flags"], ns.link("tunll")["linkinfo"], ns.addresses("tunll"))
        assert after == before


def _open_queue_in(topo: Topology, name: str, flags: int) -> int:
    from tun.device import _open_queue

    with topo.enter():
        return _open_queue(name, flags)


def test_create_non_persistent_device() -> None:
    with Netns() as ns:
        name = unique_name("c")
        dev = TunDevice(name, netns=ns.name)
        assert dev.created and not dev.persistent and dev.offload
        assert ns.link(name)["linkinfo"]["info_data"]["persist"] is False
        dev.close()
        assert ns.ip("link", "show", name, check=False).returncode != 0


def test_refuses_non_tun_device() -> None:
    with Netns() as ns, pytest.raises(OSError):
        TunDevice("lo", netns=ns.name)


def test_kernel_tcp_through_offloaded_tun(topo: Topology) -> None:
    """RX: the kernel's super-segments arrive whole; TX: one 58 KB write becomes
    40 segments with correct checksums (the kernel delivers every byte)."""
    with TunDevice(topo.path.tun, netns=topo.ns, offload=True) as dev:
        conn, kseq = handshake(topo, dev)
        # kernel -> us: acknowledge each read; expect GSO super-segments
        blob = bytes(range(256)) * 1024
        conn.setblocking(False)
        conn.send(blob)
        got, biggest, gso_types = 0, 0, set()
        while got < 60000:
            pkt, info = read_tcp(dev)
            plen = len(pkt) - 20 - (pkt[32] >> 4) * 4
            got += plen
            biggest = max(biggest, len(pkt))
            if plen:
                gso_types.add(info.gso_type)
                assert info.flags & F_NEEDS_CSUM  # no valid checksum to verify
            dev.write(segment(1001, kseq + got, ACK))
        assert biggest > 1500 and GSO_TCPV4 in gso_types
        # us -> kernel: one super-segment, checksum left to the kernel
        data = bytes((i * 7) & 0xFF for i in range(1448 * 40))
        frame = Frame(segment(1001, kseq + got, ACK | PSH, data, partial=True), 1448)
        assert dev.write(frame)
        assert dev.stats.tx_gso == 1
        conn.setblocking(True)
        conn.settimeout(3)
        received = b""
        while len(received) < len(data):
            received += conn.recv(1 << 20)
        assert received == data
        conn.close()


def test_kernel_tcp_through_plain_tun(topo: Topology) -> None:
    with TunDevice(topo.path.tun, netns=topo.ns, offload=False) as dev:
        conn, kseq = handshake(topo, dev)
        conn.send(bytes(20000))
        got = 0
        while got < 20000:
            pkt, info = read_tcp(dev)
            assert len(pkt) <= 1500 and not info.is_gso
            got += len(pkt) - 20 - (pkt[32] >> 4) * 4
            dev.write(segment(1001, kseq + got, ACK))
        dev.write(segment(1001, kseq + got, ACK | PSH, b"hello kernel"))
        # A super-segment on a plain device is cut in software (soft GSO) ...
        before = dev.stats.tx_packets
        assert dev.write(Frame(segment(1013, kseq + got, ACK, b"x" * 3000, partial=True),
                               1448))
        assert dev.stats.tx_gso == 1 and dev.stats.tx_packets - before == 3  # 1448+1448+104
        # ... or, with soft_gso off, dropped and counted.
        dev.soft_gso = False
        assert not dev.write(Frame(segment(4013, kseq + got, ACK, b"y" * 3000, partial=True),
                                   1448))
        assert dev.stats.tx_errors == {"offload_on_plain_device": 1}
        conn.settimeout(3)
        received = b""
        while len(received) < 3012:
            received += conn.recv(10000)
        assert received == b"hello kernel" + b"x" * 3000
        conn.close()


def test_offloads_refused_fall_back_to_plain(topo: Topology, monkeypatch) -> None:
    """A kernel that refuses TUNSETOFFLOAD: the device is reopened without the
    vnet header and runs in plain mode; a kernel TCP peer still gets through."""
    import tun.device as device

    real_ioctl = device.fcntl.ioctl
    calls = []

    def refusing_ioctl(fd, request, arg=0, *rest):
        if request == device.TUNSETOFFLOAD and arg:
            calls.append(arg)
            raise OSError(errno.EINVAL, "offloads refused")
        return real_ioctl(fd, request, arg, *rest)

    monkeypatch.setattr(device.fcntl, "ioctl", refusing_ioctl)
    before = link_state(topo, topo.path.tun)
    with TunDevice(topo.path.tun, netns=topo.ns, offload=True) as dev:
        assert calls == [device.OFFLOADS]
        assert not dev.offload and not dev.vnet and not dev.flags & IFF_VNET_HDR
        assert topo.link(topo.path.tun)["linkinfo"]["info_data"]["vnet_hdr"] is False
        conn, kseq = handshake(topo, dev)
        conn.send(b"k" * 5000)
        got = 0
        while got < 5000:
            pkt, info = read_tcp(dev)
            assert len(pkt) <= 1500 and not info.is_gso  # no vnet header: plain packets
            got += len(pkt) - 20 - (pkt[32] >> 4) * 4
        conn.close()
    monkeypatch.undo()
    assert link_state(topo, topo.path.tun) == before


class FakeCore:
    """Stands in for HostCore: records what the loop feeds it, answers SYNs with RST."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str, bool]] = []
        self.out: list[tuple[str, Frame | bytes]] = []
        self.timer_calls: list[float] = []
        self.deadline: float | None = time.monotonic() + 0.05
        self.raise_next = True

    def receive(self, packet, iface, now, *, checksum_verified=False) -> None:
        if self.raise_next:  # a bug in the core must not stop the loop
            self.raise_next = False
            raise RuntimeError("core bug")
        pkt = bytes(packet)
        self.received.append((pkt, iface, checksum_verified))
        if pkt[0] >> 4 == 4 and pkt[9] == 6 and pkt[33] & SYN:
            sport, dport, seq = struct.unpack_from("!HHI", pkt, 20)
            self.out.append((iface, segment(0, seq + 1, RST | ACK, sport=dport, dport=sport)))

    def on_timer(self, now: float) -> None:
        self.timer_calls.append(now)
        self.deadline = None

    def next_deadline(self) -> float | None:
        return self.deadline

    def transmit(self):
        out, self.out = self.out, []
        return out


def test_event_loop_feeds_core_and_writes_its_output(topo: Topology) -> None:
    from tun.loop import EventLoop

    core = FakeCore()
    taps: list[tuple[str, str, int]] = []
    with TunDevice(topo.path.tun, netns=topo.ns) as dev:
        loop = EventLoop(core, {"t0": dev}, tap=lambda d, i, p, g: taps.append((d, i, len(p))))
        loop.start()
        try:
            for _ in range(2):  # the first SYN hits the "bug", the retry is answered
                with topo.enter():
                    c = socket.socket()
                c.settimeout(5)
                try:
                    c.connect(("10.1.0.2", 5001))
                    refused = False
                except ConnectionRefusedError:
                    refused = True
                except TimeoutError:
                    refused = False
                c.close()
                if refused:
                    break
            assert refused  # our RST, written by the loop, reached the kernel
            assert loop.errors == 1 and loop.running
            syns = [r for r in core.received if r[0][9] == 6]
            assert syns and all(iface == "t0" for _, iface, _ in syns)
            # offload mode: the kernel's SYN comes with NEEDS_CSUM, no checksum to verify
            assert syns[-1][2] is True
            assert len(core.timer_calls) == 1
            assert ("out", "t0", 40) in taps and any(t[0] == "in" for t in taps)
            with loop.lock:  # an application call: output goes out at once
                core.out.append(("t0", segment(1, 0, RST)))
                loop.kick()
            assert dev.stats.tx_packets == 2
        finally:
            loop.stop()
        assert not loop.running
