"""Routes, longest prefix match, source selection and source-based egress."""

from __future__ import annotations

import ipaddress
import random

import pytest
from fastpath.segment import parse_segment

from stack.host import HostCore, NoRoute
from stack.host.packetize import build_frame
from stack.tcp.segment import SYN, TcpSegment

ip = ipaddress.ip_address


@pytest.fixture
def host() -> HostCore:
    h = HostCore(random.Random(7), name="mh")
    h.add_interface("eth0", 1500, ["10.1.0.2/24", "fd01::2/64"])
    h.add_interface("eth1", 1500, ["10.2.0.2/24", "fd02::2/64"])
    h.add_route("0.0.0.0/0", "eth1", "10.2.0.1")
    h.add_route("::/0", "eth1", "fd02::1")
    h.add_route("192.168.5.0/24", "eth0", "10.1.0.1")
    return h


def test_longest_prefix_match_without_source(host: HostCore) -> None:
    assert host.route(ip("10.1.0.7")).iface == "eth0"  # connected
    assert host.route(ip("10.2.0.9")).iface == "eth1"  # connected
    r = host.route(ip("8.8.8.8"))
    assert (r.iface, r.gateway) == ("eth1", ip("10.2.0.1"))  # default gateway
    assert host.route(ip("192.168.5.9")).iface == "eth0"  # explicit /24
    host.add_route("192.168.5.128/25", "eth1")
    assert host.route(ip("192.168.5.200")).iface == "eth1"  # longer prefix wins
    assert host.route(ip("192.168.5.1")).iface == "eth0"
    assert host.route(ip("2001:db8::1")).iface == "eth1"
    assert host.route(ip("fd01::77")).iface == "eth0"


def test_no_route() -> None:
    h = HostCore(random.Random(1))
    h.add_interface("eth0", 1500, ["10.1.0.2/24"])
    with pytest.raises(NoRoute):
        h.route(ip("8.8.8.8"))
    with pytest.raises(OSError):
        h.select_source(ip("fd00::1"))  # no IPv6 route at all


def test_source_selection(host: HostCore) -> None:
    assert host.select_source(ip("8.8.8.8")) == ip("10.2.0.2")
    assert host.select_source(ip("10.1.0.9")) == ip("10.1.0.2")
    assert host.select_source(ip("192.168.5.3")) == ip("10.1.0.2")
    assert host.select_source(ip("2001:db8::1")) == ip("fd02::2")
    assert host.select_source(ip("fd01::1")) == ip("fd01::2")


def test_egress_follows_the_source_address(host: HostCore) -> None:
    # A default route elsewhere never pulls a packet off its source's interface.
    assert host.route(ip("8.8.8.8"), ip("10.1.0.2")).iface == "eth0"
    # Nor does the other interface's on-link prefix (an MPTCP subflow from
    # 10.1.0.2 to the far end of eth1 still leaves through eth0).
    assert host.route(ip("10.2.0.1"), ip("10.1.0.2")).iface == "eth0"
    assert host.route(ip("fd02::1"), ip("fd01::2")).iface == "eth0"
    # An explicit, more specific route through another interface says otherwise.
    assert host.route(ip("192.168.5.9"), ip("10.2.0.2")).iface == "eth0"
    # ... unless the source's interface has a route at least as specific.
    host.add_route("192.168.5.0/24", "eth1")
    assert host.route(ip("192.168.5.9"), ip("10.2.0.2")).iface == "eth1"
    # An address that is not ours has no egress.
    with pytest.raises(OSError):
        host.route(ip("8.8.8.8"), ip("10.9.9.9"))


def test_reply_leaves_through_the_interface_of_its_source(host: HostCore) -> None:
    # A SYN for eth1's address arrives on eth0 (weak host model: accepted);
    # the RST from 10.2.0.2 leaves through eth1, which owns that address.
    syn = TcpSegment(1234, 80, 99, 0, SYN, 1000)
    host.receive(build_frame(syn, ip("10.1.0.1").packed, ip("10.2.0.2").packed).data, "eth0", 0.0)
    out = host.transmit()
    assert [name for name, _ in out] == ["eth1"]
    p = parse_segment(out[0][1].data)
    assert (p.src, p.dst) == (ip("10.2.0.2").packed, ip("10.1.0.1").packed)


def test_interface_mss_and_config(host: HostCore) -> None:
    eth0 = host.interfaces["eth0"]
    assert eth0.mss_for(4) == 1460 and eth0.mss_for(6) == 1440
    cfg = host.config_for(eth0, 4, None)
    assert cfg.mss == 1460 and cfg.max_segment is None
    tso = host.add_interface("tso0", 9000, ["10.3.0.2/24"], offload=True)
    cfg = host.config_for(tso, 4, None)
    assert cfg.mss == 8960
    assert cfg.max_segment == 7 * 8960  # whole MSS pieces within a 64 KB packet
    cfg = host.config_for(host.add_interface("tso1", 1500, offload=True), 6, None)
    assert cfg.mss == 1440 and cfg.max_segment == 45 * 1440


def test_duplicate_address_rejected(host: HostCore) -> None:
    with pytest.raises(ValueError):
        host.add_address("eth1", "10.1.0.2/24")


def test_multihomed_connection_leaves_through_its_source_interface() -> None:
    """Two hosts joined by two links. A connection from the client's eth1
    address to the server's eth0 address goes out on eth1 (its source's
    interface) although eth0 is on-link for the destination; the server's
    answers, from its eth0 address, leave through its eth0."""
    from stack.netsim import Network
    from stack.netsim.bulk import BulkTransfer

    client = HostCore(random.Random(1), name="c")
    server = HostCore(random.Random(2), name="s")
    client.add_interface("eth0", 1500, ["10.1.0.1/24"])
    client.add_interface("eth1", 1500, ["10.2.0.1/24"])
    server.add_interface("eth0", 1500, ["10.1.0.2/24"])
    server.add_interface("eth1", 1500, ["10.2.0.2/24"])
    net = Network(random.Random(3))
    c0, s0 = net.connect(client, "eth0", server, "eth0")
    c1, s1 = net.connect(client, "eth1", server, "eth1")
    xfer = BulkTransfer(net, client, server, b"m" * 50_000, server_addr="10.1.0.2")
    # BulkTransfer's connect picked 10.1.0.1 (longest prefix): add a second
    # connection bound to the other address by hand.
    conn = client.connect("10.1.0.2", 5001, net.now, local_addr="10.2.0.1")
    assert client.path_of(xfer.conn).iface == "eth0"
    assert client.path_of(conn).iface == "eth1"
    assert net.run_until(lambda: xfer.done() and conn.state.name == "ESTABLISHED",
                         timeout=10, on_step=xfer.step)
    assert c1.stats.packets >= 2  # the second connection's SYN and ACK went via eth1
    assert s1.stats.packets == 0  # the server answers from 10.1.0.2: via its eth0
    assert c0.stats.packets > 30 and s0.stats.packets > 2
    accepted = xfer.listener.accept()
    assert server.path_of(accepted).iface == "eth0"
    assert server.path_of(accepted).dst == ipaddress.ip_address("10.2.0.1").packed
