"""RFC 6897 §5.3 basic API (TCP_MULTIPATH_* at level IPPROTO_TCP and the
typed methods): checklist rows B1-B12, each test named after its row.
Facade hosts over in-memory links (`Host.virtual`, real time)."""

from __future__ import annotations

import errno
import ipaddress
import socket as std

import pytest
from rfc6897_util import Wire, connect, hosts, pump, server, sock, subflow_locals, wait

import stack.socket as ssock
from stack.api.multipath import (
    decode_addresses,
    decode_pairs,
    encode_addresses,
    encode_pairs,
)
from stack.tcp.segment import SYN
from stack.wire.mptcp import AddAddr, MpCapable, RemoveAddr

TCP = ssock.IPPROTO_TCP
ENABLE, ADD, REMOVE = ssock.TCP_MULTIPATH_ENABLE, ssock.TCP_MULTIPATH_ADD, \
    ssock.TCP_MULTIPATH_REMOVE
SUBFLOWS, CONNID = ssock.TCP_MULTIPATH_SUBFLOWS, ssock.TCP_MULTIPATH_CONNID


def _syn_has_mpc(wire: Wire, port: int, nth: int = -1) -> bool:
    syns = wire.where(lambda p: p.host == "A" and p.flags == SYN and p.dport == port)
    return any(isinstance(o, MpCapable) for o in syns[nth].opts)


def test_constants_exported_with_distinct_values() -> None:
    names = ["TCP_MULTIPATH_ENABLE", "TCP_MULTIPATH_ADD", "TCP_MULTIPATH_REMOVE",
             "TCP_MULTIPATH_SUBFLOWS", "TCP_MULTIPATH_CONNID"]
    values = [getattr(ssock, n) for n in names]
    assert len(set(values)) == 5 and all(isinstance(v, int) for v in values)
    assert set(names) <= set(ssock.__all__)
    # no clash with the kernel's TCP_* options the facade knows
    assert not set(values) & {std.TCP_NODELAY, getattr(std, "TCP_KEEPIDLE", 4)}


def test_B1_enable_true_tries_mptcp_and_false_forbids_it() -> None:
    """B1: ENABLE=1 before connect tries MPTCP even where the policy would
    not (bound to one address); ENABLE=0 means no MP_CAPABLE at all."""
    with hosts(2) as (a, b):
        wire = Wire(a)
        ls = server(b, 7101)

        def on(c) -> None:
            c.bind(("10.1.0.1", 0))
            c.setsockopt(TCP, ENABLE, 1)

        c, s = connect(a, ls, "10.1.0.2", 7101, setup=on)
        assert _syn_has_mpc(wire, 7101) and c.getsockopt(TCP, ENABLE) == 1
        c2, s2 = connect(a, ls, "10.1.0.2", 7101,
                         setup=lambda c: c.setsockopt(TCP, ENABLE, 0))
        assert not _syn_has_mpc(wire, 7101) and c2.getsockopt(TCP, ENABLE) == 0
        assert not hasattr(c2.connection, "subflows")
        pump(c2, s2, 100_000)
        assert c2.multipath_subflows() == [(("10.1.0.1", c2.getsockname()[1]),
                                            ("10.1.0.2", 7101))]


def test_B2_enable_read_after_setup_tells_whether_mptcp_is_in_use() -> None:
    """B2: 1 with an MPTCP peer, 0 after fallback to a TCP-only peer."""
    with hosts(1) as (a, b):
        ls = server(b, 7102)
        plain = server(b, 7103, setup=lambda s: s.setsockopt(TCP, ENABLE, 0))
        c, s = connect(a, ls, "10.1.0.2", 7102)
        assert c.getsockopt(TCP, ENABLE) == 1 and s.getsockopt(TCP, ENABLE) == 1
        assert c.getsockopt(TCP, ENABLE, 4) == (1).to_bytes(4, "little")
        c2, s2 = connect(a, plain, "10.1.0.2", 7103,
                         setup=lambda c: c.setsockopt(TCP, ENABLE, 1))
        assert c2.getsockopt(TCP, ENABLE) == 0 and s2.getsockopt(TCP, ENABLE) == 0
        with pytest.raises(OSError) as exc:
            c.setsockopt(TCP, ENABLE, 0)
        assert exc.value.errno == errno.EISCONN
        with pytest.raises(OSError) as exc:
            ls.setsockopt(TCP, ENABLE, 0)
        assert exc.value.errno == errno.EINVAL
        with pytest.raises(OSError) as exc:
            sock(a).setsockopt(TCP, ENABLE, 7)
        assert exc.value.errno == errno.EINVAL


def test_B3_enabled_and_bound_uses_only_the_given_addresses() -> None:
    """B3: ENABLE + bind(10.1.0.1) + ADD(10.2.0.1): MPTCP, and subflows only
    from those two addresses (never 10.3.0.1)."""
    with hosts(3) as (a, b):
        ls = server(b, 7104)

        def setup(c) -> None:
            c.bind(("10.1.0.1", 0))
            c.setsockopt(TCP, ENABLE, 1)
            c.setsockopt(TCP, ADD, encode_addresses([("10.2.0.1", 0)]))

        c, s = connect(a, ls, "10.1.0.2", 7104, setup=setup)
        pump(c, s, 1_000_000)
        assert wait(lambda: subflow_locals(c) == {"10.1.0.1", "10.2.0.1"})
        assert all(sf["local"][0] in ("10.1.0.1", "10.2.0.1")
                   for sf in c.multipath_info()["subflows"])


def test_B4_add_before_connect_restricts_local_addresses() -> None:
    """B4: ADD before connect on a wildcard socket: every subflow, the
    initial one included, uses only the listed addresses."""
    with hosts(3) as (a, b):
        ls = server(b, 7105)
        c, s = connect(a, ls, "10.1.0.2", 7105,
                       setup=lambda c: c.multipath_add([("10.2.0.1", 0), ("10.3.0.1", 0)]))
        assert c.getsockname()[0] == "10.2.0.1"  # routing alone would pick 10.1.0.1
        pump(c, s, 1_000_000)
        assert wait(lambda: subflow_locals(c) == {"10.2.0.1", "10.3.0.1"})
        assert all(sf["local"][0] != "10.1.0.1" for sf in c.multipath_info()["subflows"])


def test_B5_add_during_connection_opens_and_signals() -> None:
    """B5: ADD during the connection: a subflow from the new address and an
    ADD_ADDR announcing it."""
    with hosts(2) as (a, b):
        wire = Wire(a)
        ls = server(b, 7106)
        c, s = connect(a, ls, "10.1.0.2", 7106, setup=lambda c: c.multipath_add(["10.1.0.1"]))
        pump(c, s, 300_000)
        assert subflow_locals(c) == {"10.1.0.1"}
        c.multipath_add([("10.2.0.1", 0)])
        assert wait(lambda: "10.2.0.1" in subflow_locals(c))
        ann = [o for _, o in wire.options(AddAddr, "A") if not o.echo]
        assert [str(o.address) for o in ann] == ["10.2.0.1"]
        pump(c, s, 300_000, seed=8)


def test_B6_address_with_port_binds_that_port_else_the_same_port() -> None:
    """B6: ADD (10.2.0.1, 45000): its subflows use local port 45000; an
    address without a port gets the initial subflow's port."""
    with hosts(3) as (a, b):
        ls = server(b, 7107)
        c, s = connect(a, ls, "10.1.0.2", 7107, setup=lambda c: c.multipath_add(
            [("10.1.0.1", 0), ("10.2.0.1", 45000), ("10.3.0.1", 0)]))
        port0 = c.getsockname()[1]
        pump(c, s, 1_000_000)
        assert wait(lambda: subflow_locals(c) == {"10.1.0.1", "10.2.0.1", "10.3.0.1"})
        for (laddr, lport), _ in c.multipath_subflows():
            assert lport == (45000 if laddr == "10.2.0.1" else port0), (laddr, lport)


def test_B7_remove_closes_subflows_signals_and_is_make_before_break() -> None:
    """B7: REMOVE of the only subflow's address: a new subflow on an unused
    allowed path comes up first, then the old one closes; REMOVE_ADDR is
    sent; the address is not used again by the path manager."""
    with hosts(2) as (a, b):
        wire = Wire(a)
        ls = server(b, 7108)
        c, s = connect(a, ls, "10.1.0.2", 7108, setup=lambda c: c.multipath_set_pm_mode("never"))
        pump(c, s, 200_000)
        assert subflow_locals(c) == {"10.1.0.1"}
        c.multipath_events()
        c.setsockopt(TCP, REMOVE, encode_addresses([("10.1.0.1", 0)]))
        assert wait(lambda: subflow_locals(c) and "10.1.0.1" not in subflow_locals(c))
        rm = [o for _, o in wire.options(RemoveAddr, "A")]
        assert rm and rm[0].addr_ids == (0,)
        pump(c, s, 500_000, seed=6)
        c.multipath_set_subflow_count(3)
        pump(c, s, 200_000, seed=7)
        assert "10.1.0.1" not in subflow_locals(c)
        used = [sf["local"][0] for sf in c.multipath_info()["subflows"]]
        assert used.count("10.1.0.1") == 1  # only the subflow that was removed


def test_B7_event_order_is_make_before_break() -> None:
    """B7: the replacement subflow is established before the removed
    address's subflow is closed."""
    with hosts(2) as (a, b):
        ls = server(b, 7109)
        c, s = connect(a, ls, "10.1.0.2", 7109, setup=lambda c: c.multipath_set_pm_mode("never"))
        pump(c, s, 100_000)
        c.multipath_events()
        c.multipath_remove(["10.1.0.1"])
        evs: list = []
        assert wait(lambda: evs.extend(c.multipath_events()) or
                    any(e.kind == "subflow_closed" for e in evs))
        order = [(e.kind, e.subflow) for e in evs if e.kind.startswith("subflow")]
        assert order[0] == ("subflow_established", 2) and ("subflow_closed", 1) in order
        assert order.index(("subflow_established", 2)) < order.index(("subflow_closed", 1))


def test_B8_ipv4_and_ipv6_in_one_call() -> None:
    """B8: one ADD and one REMOVE with an IPv4 and an IPv6 address each."""
    mixed = [("10.2.0.1", 0), ("fd00:2::1", 4000)]
    raw = encode_addresses(mixed)
    assert raw[:4] == bytes([0, 2, 0, 0]) and len(raw) == 8 + 20
    assert decode_addresses(raw) == mixed
    with hosts(2) as (a, b):
        ls = server(b, 7110)
        c, s = connect(a, ls, "10.1.0.2", 7110, setup=lambda c: c.setsockopt(
            TCP, ADD, encode_addresses([("10.1.0.1", 0), ("fd00:1::1", 0)])))
        c.setsockopt(TCP, ADD, raw)
        assert wait(lambda: "10.2.0.1" in subflow_locals(c))
        c.setsockopt(TCP, REMOVE, raw)
        assert wait(lambda: "10.2.0.1" not in subflow_locals(c))
        pump(c, s, 100_000)


def test_B9_subflows_lists_established_pairs_read_only_after_setup() -> None:
    """B9: SUBFLOWS before setup: ENOTCONN; after: established pairs, each
    all-IPv4 or all-IPv6, the same as the typed method; read-only."""
    with hosts(2) as (a, b):
        ls = server(b, 7111)
        c0 = sock(a)
        with pytest.raises(OSError) as exc:
            c0.getsockopt(TCP, SUBFLOWS)
        assert exc.value.errno == errno.ENOTCONN
        c, s = connect(a, ls, "10.1.0.2", 7111)
        pump(c, s, 500_000)
        assert wait(lambda: len(c.multipath_subflows()) >= 3)
        pairs = c.multipath_subflows()
        for (la, lp), (ra, rp) in pairs:
            assert ipaddress.ip_address(la).version == ipaddress.ip_address(ra).version
            assert isinstance(la, str) and isinstance(lp, int) and rp == 7111
        raw = c.getsockopt(TCP, SUBFLOWS)
        assert decode_pairs(raw) == pairs and raw == encode_pairs(pairs)
        with pytest.raises(OSError) as exc:
            c.getsockopt(TCP, SUBFLOWS, 4)
        assert exc.value.errno == errno.EINVAL
        with pytest.raises(OSError) as exc:
            c.setsockopt(TCP, SUBFLOWS, raw)
        assert exc.value.errno == errno.EOPNOTSUPP
        # a subflow that is closing is no longer listed
        sid = c.multipath_info()["subflows"][-1]["id"]
        gone = next(p for p in pairs if p[0] == tuple(c.multipath_info()["subflows"][-1]
                                                      ["local"]))
        c.multipath_close_subflow(sid)
        assert gone not in c.multipath_subflows()


def test_B10_connid_is_the_locally_unique_token() -> None:
    """B10: CONNID: ENOTCONN before setup; then a non-negative int equal to
    the local token and to multipath_connid(), different per connection."""
    with hosts(1) as (a, b):
        ls = server(b, 7112)
        with pytest.raises(OSError) as exc:
            sock(a).getsockopt(TCP, CONNID)
        assert exc.value.errno == errno.ENOTCONN
        c1, s1 = connect(a, ls, "10.1.0.2", 7112)
        c2, s2 = connect(a, ls, "10.1.0.2", 7112)
        ids = [c1.getsockopt(TCP, CONNID), c2.getsockopt(TCP, CONNID)]
        assert ids == [c1.multipath_connid(), c2.multipath_connid()]
        assert ids[0] != ids[1] and all(isinstance(i, int) and i >= 0 for i in ids)
        assert ids[0] == c1.connection.token
        assert s1.multipath_connid() == s1.connection.token
        with pytest.raises(OSError) as exc:
            c1.setsockopt(TCP, CONNID, 5)
        assert exc.value.errno == errno.EOPNOTSUPP


def test_B11_add_refuses_an_address_the_host_does_not_have() -> None:
    """B11 (§7): ADD of a foreign address: EADDRNOTAVAIL; malformed values: EINVAL."""
    with hosts(1) as (a, b):
        c = sock(a)
        for bad in ([("192.0.2.7", 0)], [("10.1.0.2", 0)]):
            with pytest.raises(OSError) as exc:
                c.multipath_add(bad)
            assert exc.value.errno == errno.EADDRNOTAVAIL
            with pytest.raises(OSError) as exc:
                c.setsockopt(TCP, ADD, encode_addresses(bad))
            assert exc.value.errno == errno.EADDRNOTAVAIL
        for junk in (b"\x00", b"\x00\x07\x00\x00abcd", encode_addresses([("10.1.0.1", 0)])[:-1]):
            with pytest.raises(OSError) as exc:
                c.setsockopt(TCP, ADD, junk)
            assert exc.value.errno == errno.EINVAL
        for junk in ([("not an ip", 0)], [("10.1.0.1", 70000)], []):
            with pytest.raises(OSError) as exc:
                c.multipath_add(junk)
            assert exc.value.errno == errno.EINVAL
        with pytest.raises(OSError) as exc:
            c.setsockopt(TCP, ADD, 5)
        assert exc.value.errno == errno.EINVAL


def test_B12_an_unaware_program_works_unchanged() -> None:
    """B12: plain socket calls only (no option): an echo over the stack,
    MPTCP underneath by default, nothing else visible to the program."""
    with hosts(2) as (a, b):
        ls = b.socket(std.AF_INET, std.SOCK_STREAM)
        ls.bind(("", 7113))
        ls.listen(5)
        c = a.create_connection(("10.1.0.2", 7113), timeout=5)
        s, peer = ls.accept()
        assert peer == c.getsockname() and c.getpeername() == ("10.1.0.2", 7113)
        f = c.makefile("rwb")
        f.write(b"hello\n")
        f.flush()
        assert s.recv(100) == b"hello\n"
        s.sendall(b"world\n")
        assert f.readline() == b"world\n"
        f.close()
        c.close()
        assert s.recv(10) == b""
        assert hasattr(s.connection, "subflows")


def test_B4_listener_add_restricts_accepted_connections() -> None:
    """B4 on a listener: ADD(10.1.0.2) before listen: the accepted
    connection announces no other address (withdrawn with REMOVE_ADDR if
    the handshake already did) and keeps no subflow on another local address."""
    with hosts(2) as (a, b):
        wire = Wire(b)
        ls = server(b, 7114, setup=lambda s: s.multipath_add(["10.1.0.2"]))
        c, s = connect(a, ls, "10.1.0.2", 7114)
        pump(c, s, 1_000_000)
        assert wait(lambda: subflow_locals(s) == {"10.1.0.2"} and len(s.multipath_subflows()) >= 2)
        pump(c, s, 500_000, seed=5)
        assert subflow_locals(s) == {"10.1.0.2"}
        announced = {str(o.address) for _, o in wire.options(AddAddr, "B") if not o.echo}
        withdrawn = {i for _, o in wire.options(RemoveAddr, "B") for i in o.addr_ids}
        assert not announced or withdrawn, (announced, withdrawn)
