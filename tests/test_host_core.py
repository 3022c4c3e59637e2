"""The sans-IO host: packets in, packets out (RFC 9293 §3.10.7.1-2 for
segments that find no connection), drops counted, timers, ISNs, backlog."""

from __future__ import annotations

import dataclasses
import ipaddress
import random

import pytest
from fastpath.checksum import internet_checksum
from fastpath.segment import parse_segment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.host import HostCore
from stack.host.isn import IsnGenerator
from stack.host.packetize import build_frame, to_tcp_segment
from stack.host.timers import TimerHeap
from stack.tcp.segment import ACK, FIN, PSH, RST, SYN, TcpSegment

US4, PEER4 = ipaddress.ip_address("10.0.0.2").packed, ipaddress.ip_address("10.0.0.1").packed
US6, PEER6 = ipaddress.ip_address("fd00::2").packed, ipaddress.ip_address("fd00::1").packed
SYN_SEG = TcpSegment(5555, 80, 1000, 0, SYN, 64240, mss=1460, wscale=7, sack_permitted=True,
                     ts=(1, 0))


def make_host(seed: int = 1) -> HostCore:
    h = HostCore(random.Random(seed), name="h")
    h.add_interface("eth0", 1500, ["10.0.0.2/24", "fd00::2/64"])
    return h


def feed(host: HostCore, seg: TcpSegment, src: bytes = PEER4, dst: bytes = US4,
         now: float = 0.0) -> list[TcpSegment]:
    host.receive(build_frame(seg, src, dst).data, "eth0", now)
    return emitted(host)


def emitted(host: HostCore) -> list[TcpSegment]:
    out = []
    for iface, frame in host.transmit():
        assert iface == "eth0"
        p = parse_segment(frame.data)
        assert p.tcp_checksum_ok and p.ip_checksum_ok
        out.append(to_tcp_segment(p, frame.data))
    return out


def assert_no_state(host: HostCore) -> None:
    assert len(host.table) == 0
    assert host.next_deadline() is None


# --- RFC 9293 §3.10.7.1: CLOSED ---------------------------------------------------


@pytest.mark.parametrize("src,dst", [(PEER4, US4), (PEER6, US6)], ids=["v4", "v6"])
def test_syn_to_closed_port_gets_rst_ack(src: bytes, dst: bytes) -> None:
    host = make_host()
    out = feed(host, SYN_SEG, src, dst)
    # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, no options
    assert out == [TcpSegment(80, 5555, 0, 1001, RST | ACK, 0)]
    assert host.stats["no_listener_rst"] == 1
    assert_no_state(host)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_bytes_like_packet(kind) -> None:
    host = make_host()
    host.receive(kind(build_frame(SYN_SEG, PEER4, US4).data), "eth0", 0.0)
    assert emitted(host) == [TcpSegment(80, 5555, 0, 1001, RST | ACK, 0)]


def test_ack_to_closed_port_gets_rst_at_its_ack() -> None:
    host = make_host()
    out = feed(host, TcpSegment(5555, 80, 1000, 777777, ACK | PSH, 100, payload=b"hello"))
    assert out == [TcpSegment(80, 5555, 777777, 0, RST, 0)]  # <SEQ=SEG.ACK><CTL=RST>
    assert_no_state(host)


def test_data_and_fin_without_ack_count_in_seg_len() -> None:
    host = make_host()
    out = feed(host, TcpSegment(5555, 80, 0xFFFFFFFE, 0, FIN, 100, payload=b"abc"))
    assert out == [TcpSegment(80, 5555, 0, 2, RST | ACK, 0)]  # 0xfffffffe + 3 + 1, wrapped


def test_no_rst_for_a_rst() -> None:
    host = make_host()
    assert feed(host, TcpSegment(5555, 80, 1000, 5, RST | ACK, 0)) == []
    assert feed(host, TcpSegment(5555, 80, 1000, 0, RST, 0)) == []
    assert host.stats["rst_no_conn"] == 2
    assert_no_state(host)


# --- drops ----------------------------------------------------------------------


def test_bad_checksum_dropped_and_counted() -> None:
    host = make_host()
    data = bytearray(build_frame(SYN_SEG, PEER4, US4).data)
    data[-1] ^= 0x40  # inside the options: TCP checksum now wrong
    host.receive(bytes(data), "eth0", 0.0)
    assert host.transmit() == []
    assert host.stats["bad_checksum"] == 1
    # the same bytes from a device that verified (or NEEDS_CSUM) are processed
    host.receive(bytes(build_frame(SYN_SEG, PEER4, US4).data), "eth0", 0.0,
                 checksum_verified=True)
    assert len(host.transmit()) == 1


def test_bad_ip_checksum_dropped() -> None:
    host = make_host()
    data = bytearray(build_frame(SYN_SEG, PEER4, US4).data)
    data[8] = 3  # TTL changed, IP header checksum not updated
    host.receive(bytes(data), "eth0", 0.0)
    assert host.transmit() == [] and host.stats["bad_ip_checksum"] == 1


def test_not_for_us_and_martians_dropped_silently() -> None:
    host = make_host()
    other = ipaddress.ip_address("10.0.0.99").packed
    assert feed(host, SYN_SEG, PEER4, other) == []
    assert host.stats["not_for_us"] == 1
    for src in ("224.0.0.1", "0.0.0.0", "127.0.0.1", "255.255.255.255", "10.0.0.2"):
        assert feed(host, SYN_SEG, ipaddress.ip_address(src).packed, US4) == []
    assert feed(host, SYN_SEG, ipaddress.ip_address("ff02::1").packed, US6) == []
    assert host.stats["bad_address"] == 6
    assert feed(host, dataclasses.replace(SYN_SEG, sport=0)) == []
    assert host.stats["bad_port"] == 1
    assert_no_state(host)


@pytest.mark.parametrize("packet,kind", [
    (b"", "malformed"),
    (b"\x45\x00", "malformed"),
    (b"\x60" + bytes(39), "malformed"),
    (bytes(build_frame(SYN_SEG, PEER4, US4).data)[:30], "malformed"),  # cut in the TCP header
])
def test_malformed_counted(packet: bytes, kind: str) -> None:
    host = make_host()
    host.receive(packet, "eth0", 0.0)
    assert host.transmit() == []
    assert host.stats[kind] == 1
    assert_no_state(host)


def test_ipv4_fragments_dropped() -> None:
    host = make_host()
    for flags_offset in (b"\x20\x00", b"\x00\xb9", b"\x40\x01"):  # MF; offset; DF+offset
        data = bytearray(build_frame(SYN_SEG, PEER4, US4).data)
        data[6:8] = flags_offset
        data[10:12] = b"\x00\x00"
        data[10:12] = internet_checksum(bytes(data[:20])).to_bytes(2, "big")
        host.receive(bytes(data), "eth0", 0.0)
    # the parser refuses fragments (not reassembled: our peers send DF and do
    # path MTU discovery, RFC 1191 / RFC 9293 §3.7.2)
    assert host.transmit() == [] and host.stats["malformed_not_tcp"] == 3
    assert_no_state(host)


def test_udp_is_not_tcp() -> None:
    host = make_host()
    data = bytearray(build_frame(SYN_SEG, PEER4, US4).data)
    data[9] = 17
    host.receive(bytes(data), "eth0", 0.0)
    assert host.transmit() == [] and host.stats["malformed"] == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=120), flips=st.lists(st.tuples(st.integers(0, 80),
                                                               st.integers(1, 255)), max_size=4))
def test_junk_never_raises_and_creates_no_state(data: bytes, flips) -> None:
    host = make_host()  # no listener: whatever parses as TCP finds a closed port
    good = bytearray(build_frame(dataclasses.replace(SYN_SEG, flags=ACK), PEER4, US4).data)
    for pos, x in flips:
        if pos < len(good):
            good[pos] ^= x
    for pkt in (data, bytes(good), b"\x45" + data, b"\x60" + data):
        host.receive(pkt, "eth0", 0.0)
        host.receive(pkt, "eth0", 0.0, checksum_verified=True)
    # whatever came in (no SYN), nothing is remembered; at most RSTs go out
    assert len(host.table) == 0 and host.next_deadline() is None
    for seg in emitted(host):
        assert seg.flags & RST


# --- RFC 9293 §3.10.7.2: LISTEN -------------------------------------------------


def test_listen_state_ack_rst_junk() -> None:
    host = make_host()
    host.listen("10.0.0.2", 80)
    # an ACK to a listener: <SEQ=SEG.ACK><CTL=RST>
    assert feed(host, TcpSegment(5555, 80, 1, 4242, ACK, 100)) == [
        TcpSegment(80, 5555, 4242, 0, RST, 0)]
    assert feed(host, TcpSegment(5555, 80, 1, 0, RST, 100)) == []  # RST ignored
    assert feed(host, TcpSegment(5555, 80, 1, 0, PSH, 100, payload=b"x")) == []  # dropped
    assert host.stats["listen_junk"] == 1
    assert_no_state(host)
    # the listener is on 10.0.0.2 only: the IPv6 address' port 80 is closed
    assert feed(host, SYN_SEG, PEER6, US6)[0].flags == RST | ACK


def test_listen_port_conflicts_and_ephemeral() -> None:
    host = make_host()
    host.listen(None, 80)
    with pytest.raises(OSError):
        host.listen("10.0.0.2", 80)
    lst = host.listen("0.0.0.0", 0)
    assert 32768 <= lst.port <= 60999
    with pytest.raises(OSError):
        host.listen("10.9.9.9", 81)  # not our address


# --- the engine behind the host -------------------------------------------------

def test_syn_creates_embryo_and_handshake_completes_to_accept_queue() -> None:
    host = make_host()
    lst = host.listen(None, 80, backlog=4)
    out = feed(host, SYN_SEG, now=1.0)
    assert len(out) == 1 and out[0].flags == SYN | ACK and out[0].ack == 1001
    assert out[0].mss == 1460
    assert lst.pending == 0 and len(lst.syn_queue) == 1
    assert host.next_deadline() is not None  # SYN,ACK retransmission timer
    assert feed(host, TcpSegment(5555, 80, 1001, (out[0].seq + 1) & 0xFFFFFFFF, ACK, 502,
                                 ts=(2, out[0].ts[0])), now=1.01) == []
    assert lst.pending == 1 and not lst.syn_queue
    assert lst in host.poll_events()
    conn = lst.accept()
    assert conn.state.name == "ESTABLISHED" and lst.accept() is None


def test_backlog_bounds_syn_and_accept_queues() -> None:
    host = make_host()
    lst = host.listen(None, 80, backlog=2)
    synacks = [feed(host, dataclasses.replace(SYN_SEG, sport=p)) for p in (1001, 1002, 1003)]
    assert [len(s) for s in synacks] == [1, 1, 0]  # the third SYN is dropped
    assert host.stats["listen_overflow"] == 1 and lst.dropped_syns == 1
    assert len(host.table) == 2
    # complete one handshake: it moves to the accept queue, still counted
    sa = synacks[0][0]
    feed(host, TcpSegment(1001, 80, 1001, (sa.seq + 1) & 0xFFFFFFFF, ACK, 502,
                          ts=(2, sa.ts[0])))
    assert lst.pending == 1 and len(lst.syn_queue) == 1
    assert feed(host, dataclasses.replace(SYN_SEG, sport=1004)) == []
    assert host.stats["listen_overflow"] == 2
    lst.accept()  # room again
    assert feed(host, dataclasses.replace(SYN_SEG, sport=1005))[0].flags == SYN | ACK


def test_connect_then_rst_removes_connection() -> None:
    host = make_host()
    conn = host.connect("10.0.0.1", 80, 0.0)
    (syn,) = emitted(host)
    assert syn.flags == SYN and syn.mss == 1460 and 32768 <= syn.sport <= 60999
    assert host.path_of(conn).iface == "eth0"
    # RFC 9293 §3.10.7.3: an acceptable RST,ACK in SYN-SENT: refused, deleted
    feed(host, TcpSegment(80, syn.sport, 0, (syn.seq + 1) & 0xFFFFFFFF, RST | ACK, 0))
    assert conn.state.name == "CLOSED" and conn.error is not None
    assert conn in host.poll_events()
    assert_no_state(host)


def test_connect_source_selection_and_port_reuse() -> None:
    host = make_host()
    c1 = host.connect("fd00::1", 443, 0.0, local_port=40000)
    assert host.path_of(c1).src == US6
    with pytest.raises(OSError):
        host.connect("fd00::1", 443, 0.0, local_port=40000)
    host.connect("fd00::1", 444, 0.0, local_port=40000)  # another 4-tuple: fine
    with pytest.raises(OSError):
        host.connect("fd00::1", 443, 0.0, local_addr="10.0.0.2")  # family mismatch


# --- timers and ISNs ---------------------------------------------------------------


class FakeConn:
    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline

    def next_deadline(self) -> float | None:
        return self.deadline


def test_timer_heap_lazy_invalidation() -> None:
    th = TimerHeap()
    a, b = FakeConn(5.0), FakeConn(3.0)
    th.schedule(a, 5.0)
    th.schedule(b, 3.0)
    assert th.peek() == 3.0
    th.schedule(a, 1.0)  # earlier: one new entry
    th.schedule(a, 4.0)  # later: nothing pushed, the 1.0 entry will re-read
    assert th.peek() == 1.0
    assert th.pop_due(0.5) == []
    assert th.pop_due(1.0) == [a]
    th.discard(b)
    assert th.peek() is None  # a's stale 5.0 entry and discarded b are skipped
    th.schedule(b, 2.0)
    th.schedule(a, 2.0)
    assert th.pop_due(10.0) == [b, a]  # deadline order, ties in scheduling order


def test_isn_differs_per_tuple_and_grows_with_time() -> None:
    isn = IsnGenerator(random.Random(3))
    t = (US4, 40000, PEER4, 80)
    base = isn(*t, 10.0)
    assert isn(*t, 10.0) == base  # same tuple, same time: same ISN
    assert isn(US4, 40001, PEER4, 80, 10.0) != base
    assert isn(US4, 40000, PEER4, 81, 10.0) != base
    assert (isn(*t, 11.0) - base) % 2**32 == 250_000  # 4 µs clock (RFC 6528 §3)
    assert (isn(*t, 10.000004) - base) % 2**32 == 1
    assert IsnGenerator(random.Random(3))(*t, 10.0) == base  # seeded: reproducible
    assert IsnGenerator(random.Random(4))(*t, 10.0) != base  # secret differs


# --- robustness: whatever arrives for a live connection ---------------------------

_u32 = st.integers(0, 2**32 - 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segs=st.lists(st.tuples(
    st.integers(0, 0x1FF), st.integers(-70000, 70000) | _u32, st.integers(-70000, 70000) | _u32,
    st.integers(0, 65535), st.none() | st.integers(0, 65535), st.none() | st.integers(0, 20),
    st.booleans(), st.none() | st.tuples(_u32, _u32),
    st.lists(st.tuples(_u32, _u32), max_size=3).map(tuple), st.binary(max_size=64)),
    min_size=1, max_size=6))
def test_random_segments_on_an_established_connection_never_raise(segs) -> None:
    from stack.netsim import Network

    client, server = make_host(1), HostCore(random.Random(2), name="peer")
    server.add_interface("eth0", 1500, ["10.0.0.1/24"])
    net = Network(random.Random(3))
    net.connect(client, "eth0", server, "eth0")
    lst = server.listen(None, 80)
    conn = client.connect("10.0.0.1", 80, 0.0)
    assert net.run_until(lambda: lst.pending == 1, timeout=1.0)
    peer = lst.accept()
    t = net.now
    for flags, dseq, dack, window, mss, ws, sok, ts, blocks, payload in segs:
        seq = (peer.snd_nxt + dseq) & 0xFFFFFFFF if -70000 <= dseq <= 70000 else dseq
        ack = (peer.rcv_nxt + dack) & 0xFFFFFFFF if -70000 <= dack <= 70000 else dack
        seg = TcpSegment(80, conn.local[1], seq, ack, flags, window, mss, ws, sok, ts, blocks,
                         (), payload)
        t += 0.001
        client.receive(build_frame(seg, PEER4, US4).data, "eth0", t)
        net.flush(client)
    net.now = t
    net.run_until(lambda: False, timeout=200.0)  # timers, retransmissions, TIME-WAIT...
    # the host's table follows the engine: CLOSED connections are gone
    assert (conn.state.name == "CLOSED") == (conn not in client.connections)
    assert (peer.state.name == "CLOSED") == (peer not in server.connections)


def test_poll_events_tell_the_facade_what_changed() -> None:
    from stack.netsim import Link, Network

    client, server = make_host(1), HostCore(random.Random(2), name="peer")
    server.add_interface("eth0", 1500, ["10.0.0.1/24"])
    net = Network(random.Random(3))
    net.connect(client, "eth0", server, "eth0", Link(delay=0.01), Link(delay=0.01))
    lst = server.listen(None, 80)
    conn = client.connect("10.0.0.1", 80, 0.0)
    assert client.poll_events() == [conn]
    assert net.run_until(lambda: lst.pending == 1, timeout=1.0)
    assert client.poll_events() == [conn] and conn.state.name == "ESTABLISHED"
    peer = lst.accept()
    assert server.poll_events() == [peer, lst]  # the listener has one to accept
    assert server.poll_events() == []
    conn.send(b"hello", net.now)
    client.wake(conn, net.now)
    assert client.poll_events() == [conn]
    assert net.run_until(lambda: peer.readable == 5, timeout=1.0)
    assert peer in server.poll_events()
    assert peer.recv(100) == b"hello"
    conn.config.time_wait = 0.5
    conn.close(net.now)
    client.wake(conn, net.now)
    assert net.run_until(lambda: peer.eof_received, timeout=1.0)
    assert server.poll_events() == [peer]
    peer.close(net.now)
    server.wake(peer, net.now)
    net.run_until(lambda: False, timeout=2.0)  # LAST-ACK, TIME-WAIT, CLOSED
    assert peer in server.poll_events() and conn in client.poll_events()
    assert conn.state.name == "CLOSED" and peer.state.name == "CLOSED"
    assert client.connections == [] and server.connections == []
    assert client.poll_events() == [] and server.poll_events() == []


class BurstConn:
    """A stand-in connection that emits one 10 kB super-segment."""

    state = None
    send_mss = 1460

    def __init__(self) -> None:
        self.segs = [TcpSegment(80, 5555, 1, 1, ACK, 100, ts=(1, 2), payload=bytes(10_000),
                                gso=1448)]

    def poll_transmit(self, now: float) -> list[TcpSegment]:
        out, self.segs = self.segs, []
        return out

    def next_deadline(self) -> None:
        return None


@pytest.mark.parametrize("offload", [False, True])
def test_super_segments_cut_in_software_without_offload(offload: bool) -> None:
    host = HostCore(random.Random(1))
    iface = host.add_interface("eth0", 1500, ["10.0.0.2/24"], offload=offload)
    conn = BurstConn()
    host._register((US4, 80, PEER4, 5555), conn, iface, 4)
    host.wake(conn, 0.0)
    frames = [f for _, f in host.transmit()]
    if offload:
        assert len(frames) == 1 and frames[0].gso_size == 1448 and frames[0].csum_partial
    else:
        assert len(frames) == 7 and host.stats["sw_gso"] == 1
        assert all(f.gso_size == 0 and len(f.data) <= 1500 for f in frames)
        assert all(parse_segment(f.data).tcp_checksum_ok for f in frames)
        assert sum(parse_segment(f.data).payload_len for f in frames) == 10_000


def two_hosts(ab_loss: float = 0.0):
    from stack.netsim import Link, Network

    a, b = make_host(1), HostCore(random.Random(2), name="peer")
    b.add_interface("eth0", 1500, ["10.0.0.1/24", "fd00::1/64"])
    net = Network(random.Random(3))
    net.connect(a, "eth0", b, "eth0", Link(delay=0.01, loss=ab_loss), Link(delay=0.01))
    return net, a, b


def test_connection_refused_over_the_network() -> None:
    import errno

    net, a, b = two_hosts()
    conn = a.connect("fd00::1", 9, 0.0)
    assert net.run_until(lambda: conn.state.name == "CLOSED", timeout=1.0)
    assert conn.error == errno.ECONNREFUSED
    assert b.stats["no_listener_rst"] == 1 and a.connections == []
    assert net.now == pytest.approx(0.02)  # one round trip


def test_connect_times_out_and_is_forgotten() -> None:
    import errno

    net, a, b = two_hosts(ab_loss=1.0)
    conn = a.connect("10.0.0.1", 80, 0.0)
    assert net.run_until(lambda: conn.state.name == "CLOSED", timeout=1000.0)
    assert conn.error == errno.ETIMEDOUT
    assert net.link(a, "eth0").stats.lost == 1 + conn.config.syn_retries  # SYN + retries
    assert a.connections == [] and a.next_deadline() is None


def test_simultaneous_open_meets_in_the_tables() -> None:
    net, a, b = two_hosts()
    ca = a.connect("10.0.0.1", 2000, 0.0, local_port=1000)
    cb = b.connect("10.0.0.2", 1000, 0.0, local_port=2000)
    assert net.run_until(lambda: ca.state.name == cb.state.name == "ESTABLISHED", timeout=5.0)
    ca.send(b"ping", net.now)
    a.wake(ca, net.now)
    assert net.run_until(lambda: cb.readable == 4, timeout=1.0)
    assert cb.recv(10) == b"ping"
    assert a.stats["no_listener_rst"] == b.stats["no_listener_rst"] == 0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(syns=st.lists(st.tuples(
    st.integers(1, 65535), _u32, st.integers(0, 0x1FF), st.integers(0, 65535),
    st.none() | st.integers(0, 65535), st.none() | st.integers(0, 255), st.booleans(),
    st.none() | st.tuples(_u32, _u32), st.binary(max_size=40)), min_size=1, max_size=30))
def test_syn_flood_of_odd_syns_stays_within_the_backlog(syns) -> None:
    host = make_host()
    lst = host.listen(None, 80, backlog=8)
    t = 0.0
    for sport, seq, flags, window, mss, ws, sok, ts, payload in syns:
        seg = TcpSegment(sport, 80, seq, 0, (flags | SYN) & ~(ACK | RST), window, mss, ws, sok,
                         ts, (), (), payload)
        t += 0.01
        host.receive(build_frame(seg, PEER4, US4).data, "eth0", t)
        for out in emitted(host):
            assert out.flags & (SYN | ACK) == SYN | ACK or out.flags & RST
        assert len(host.table) <= 8 and len(lst.syn_queue) <= 8
    # unanswered SYN,ACKs are retried, then the embryos give up and vanish
    for _ in range(200):
        d = host.next_deadline()
        if d is None:
            break
        host.on_timer(d)
        emitted(host)
    assert len(host.table) == 0 and not lst.syn_queue


def test_close_listener_resets_what_was_not_accepted() -> None:
    host = make_host()
    lst = host.listen(None, 80)
    sa = feed(host, SYN_SEG)[0]  # will complete the handshake
    feed(host, TcpSegment(5555, 80, 1001, (sa.seq + 1) & 0xFFFFFFFF, ACK, 502,
                          ts=(2, sa.ts[0])))
    feed(host, dataclasses.replace(SYN_SEG, sport=6666))  # stays an embryo
    assert lst.pending == 1 and len(lst.syn_queue) == 1
    host.close_listener(lst, 1.0)
    rsts = emitted(host)
    assert sorted(s.dport for s in rsts) == [5555, 6666]
    assert all(s.flags & RST for s in rsts)
    assert_no_state(host)
    assert feed(host, dataclasses.replace(SYN_SEG, sport=7777))[0].flags == RST | ACK  # closed
