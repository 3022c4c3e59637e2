"""RFC 6897 §4 (legacy applications): checklist rows L1-L11, each test named
after its row. Facade hosts over in-memory links (`Host.virtual`, real time)
unless the row needs a middlebox (L11: virtual time, `mptcp_topology`)."""

from __future__ import annotations

import errno
import socket as std

import pytest
from mptcp_topology import Exchange, payload, tcp_flags, two_hosts
from rfc6897_util import Wire, connect, hosts, pump, server, wait

from stack.api.mpcontrol import MultipathControl, MultipathSettings, connection_info
from stack.api.multipath import TCP_MULTIPATH_ENABLE
from stack.api.policy import DEFAULT_POLICY, set_policy
from stack.mptcp.connection import MptcpConfig
from stack.tcp.segment import SYN, URG
from stack.wire.mptcp import Dss, MpCapable

TCP = std.IPPROTO_TCP


def _is_mptcp(s) -> bool:
    return hasattr(s.connection, "subflows") and not s.connection.fallen_back


def test_L1_bound_to_one_address_means_tcp_and_no_other_address() -> None:
    """L1: bound to a specific address: no MP_CAPABLE by default; with a
    policy that allows MPTCP there, subflows still use only that address."""
    with hosts(2) as (a, b):
        wire = Wire(a)
        ls = server(b, 7001)
        c, s = connect(a, ls, "10.1.0.2", 7001, setup=lambda c: c.bind(("10.1.0.1", 0)))
        syn = wire.where(lambda p: p.host == "A" and p.flags == SYN and p.dport == 7001)
        assert syn and not any(isinstance(o, MpCapable) for o in syn[0].opts)
        assert not _is_mptcp(c) and c.getsockopt(TCP, TCP_MULTIPATH_ENABLE) == 0
        pump(c, s, 100_000)
        set_policy(a, enable_on_specific=True)
        c2, s2 = connect(a, ls, "10.1.0.2", 7001, setup=lambda c: c.bind(("10.1.0.1", 0)))
        assert _is_mptcp(c2)
        pump(c2, s2, 2_000_000)
        wait(lambda: len(s2.multipath_subflows()) > 1, 1.0)  # the server announced 10.2.0.2
        sides = {loc[0] for loc, _ in c2.multipath_subflows()}
        assert sides == {"10.1.0.1"}, c2.multipath_subflows()
        assert all(sf["local"][0] == "10.1.0.1" for sf in c2.multipath_info()["subflows"])


def test_L2_wildcard_bound_socket_uses_every_path_per_policy() -> None:
    """L2: INADDR_ANY: the policy lets MPTCP add subflows; the policy is settable."""
    with hosts(2) as (a, b):
        ls = server(b, 7002)
        c, s = connect(a, ls, "10.1.0.2", 7002, setup=lambda c: c.bind(("0.0.0.0", 0)))
        assert _is_mptcp(c)
        pump(c, s, 1_000_000)
        assert wait(lambda: {"10.1.0.1", "10.2.0.1"} <= {loc[0] for loc, _ in
                                                         c.multipath_subflows()})
        set_policy(a, DEFAULT_POLICY.with_(enable_on_wildcard=False))
        c2, s2 = connect(a, ls, "10.1.0.2", 7002)
        assert not _is_mptcp(c2) and c2.getsockopt(TCP, TCP_MULTIPATH_ENABLE) == 0
        pump(c2, s2, 10_000)


def test_L3_names_stay_the_first_subflow_after_it_closed() -> None:
    """L3: getsockname()/getpeername() give the initial subflow's addresses for
    the whole connection, on both ends, also after that subflow is gone."""
    with hosts(2) as (a, b):
        ls = server(b, 7003)
        c, s = connect(a, ls, "10.1.0.2", 7003)
        names = (c.getsockname(), c.getpeername(), s.getsockname(), s.getpeername())
        pump(c, s, 500_000)
        assert wait(lambda: len(c.multipath_subflows()) >= 2)
        first = (names[0], names[1])
        c.multipath_close_subflow(1)
        assert wait(lambda: first not in c.multipath_subflows()
                    and (first[1], first[0]) not in s.multipath_subflows())
        pump(c, s, 500_000, seed=4)
        assert first not in c.multipath_subflows()
        assert (c.getsockname(), c.getpeername(), s.getsockname(), s.getpeername()) == names
        assert names[0][0] == "10.1.0.1" and names[1] == ("10.1.0.2", 7003)


def test_L4_fate_sharing_is_a_documented_policy_off_by_default() -> None:
    """L4: closing the initial subflow leaves the connection up (default);
    with the host policy `fate_sharing=True` it takes the connection down."""
    assert DEFAULT_POLICY.fate_sharing is False
    with hosts(2) as (a, b):
        ls = server(b, 7004)
        c, s = connect(a, ls, "10.1.0.2", 7004)
        pump(c, s, 300_000)
        assert wait(lambda: len(c.multipath_subflows()) >= 2)
        c.multipath_close_subflow(1)
        pump(c, s, 300_000, seed=5)  # still up
        set_policy(a, fate_sharing=True)
        c2, s2 = connect(a, ls, "10.1.0.2", 7004)
        pump(c2, s2, 300_000)
        assert wait(lambda: len(c2.multipath_subflows()) >= 2)
        c2.multipath_close_subflow(1)
        assert wait(lambda: c2.connection.error is not None)
        with pytest.raises(ConnectionResetError):
            c2.sendall(b"x" * 10)
        s2.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while s2.recv(65536):
                pass


def test_L5_close_delivers_written_data_then_data_fin() -> None:
    """L5: close() right after a large write: every byte arrives, then EOF,
    signalled by a DATA_FIN (DSS F flag), and no reset."""
    with hosts(2) as (a, b):
        wire = Wire(a)
        ls = server(b, 7005)
        c, s = connect(a, ls, "10.1.0.2", 7005)
        data = payload(1_500_000, 9)
        c.sendall(data)
        c.close()
        got = bytearray()
        while chunk := s.recv(1 << 20):
            got += chunk
        assert bytes(got) == data
        assert any(o.data_fin for _, o in wire.options(Dss, "A"))
        assert not wire.where(lambda p: p.host == "A" and p.flags & 0x04)


def test_L6_socket_options_apply_to_every_subflow() -> None:
    """L6: SO_KEEPALIVE set on the socket reaches every subflow, including
    one opened afterwards."""
    with hosts(3) as (a, b):
        ls = server(b, 7006)
        c, s = connect(a, ls, "10.1.0.2", 7006,
                       setup=lambda c: c.multipath_add(["10.1.0.1", "10.2.0.1"]))
        pump(c, s, 200_000)
        assert wait(lambda: len(c.multipath_subflows()) >= 2)
        c.setsockopt(std.SOL_SOCKET, std.SO_KEEPALIVE, 1)
        mp = c.connection
        assert all(sf.conn.config.keepalive for sf in mp.subflows)
        c.multipath_add(["10.3.0.1"])
        assert wait(lambda: any(loc[0] == "10.3.0.1" for loc, _ in c.multipath_subflows()))
        assert all(sf.conn.config.keepalive for sf in mp.subflows)


def test_L7_nodelay_means_no_nagle_on_any_subflow() -> None:
    """L7: TCP_NODELAY: no subflow holds back a small segment (Nagle off on
    all of them): a small write while data is in flight leaves at once."""
    with hosts(2) as (a, b):
        wire = Wire(a)
        ls = server(b, 7007)
        c, s = connect(a, ls, "10.1.0.2", 7007)
        c.setsockopt(TCP, std.TCP_NODELAY, 1)
        assert c.getsockopt(TCP, std.TCP_NODELAY) == 1
        pump(c, s, 300_000)
        assert all(sf.conn.config.nodelay for sf in c.connection.subflows)
        before = len(wire.where(lambda p: p.host == "A" and p.plen == 7))
        c.sendall(b"x" * 50_000 + b"")
        c.sendall(b"tinyone")
        assert wait(lambda: len(wire.where(lambda p: p.host == "A" and p.plen == 7)) > before,
                    2.0)


def test_L8_buffer_sizes_are_connection_level_with_a_lower_bound() -> None:
    """L8: SO_RCVBUF/SO_SNDBUF size the connection-level buffers; below the
    policy's lower bound the socket does not use MPTCP."""
    with hosts(2) as (a, b):
        ls = server(b, 7008)
        big = 1 << 18

        def sized(c) -> None:
            c.setsockopt(std.SOL_SOCKET, std.SO_RCVBUF, big)
            c.setsockopt(std.SOL_SOCKET, std.SO_SNDBUF, big)

        c, s = connect(a, ls, "10.1.0.2", 7008, setup=sized)
        assert _is_mptcp(c)
        assert c.connection.cfg.rcvbuf == big and c.connection.ds.sndbuf == big
        pump(c, s, 100_000)
        small = DEFAULT_POLICY.min_buffer // 2
        c2, s2 = connect(a, ls, "10.1.0.2", 7008,
                         setup=lambda c: c.setsockopt(std.SOL_SOCKET, std.SO_RCVBUF, small))
        assert not _is_mptcp(c2) and c2.getsockopt(TCP, TCP_MULTIPATH_ENABLE) == 0
        pump(c2, s2, 50_000)


def test_L9_urgent_data_is_not_used() -> None:
    """L9: send(MSG_OOB) is refused (EOPNOTSUPP); no URG segment is ever sent."""
    with hosts(1) as (a, b):
        wire = Wire(a)
        ls = server(b, 7009)
        c, s = connect(a, ls, "10.1.0.2", 7009)
        with pytest.raises(OSError) as exc:
            c.send(b"!", std.MSG_OOB)
        assert exc.value.errno == errno.EOPNOTSUPP
        with pytest.raises(OSError):
            c.sendall(b"!", std.MSG_OOB)
        pump(c, s, 10_000)
        assert not wire.where(lambda p: p.flags & URG or p.urgent)


def test_L10_mptcp_default_is_policy_and_enabling_does_not_force_it() -> None:
    """L10: MPTCP on by default (policy, wildcard sockets); an MPTCP socket
    talking to a TCP-only peer falls back and works, ENABLE then reads 0."""
    assert DEFAULT_POLICY.enable_on_wildcard is True
    with hosts(1) as (a, b):
        ls = server(b, 7010, setup=lambda s: s.setsockopt(TCP, TCP_MULTIPATH_ENABLE, 0))
        c, s = connect(a, ls, "10.1.0.2", 7010,
                       setup=lambda c: c.setsockopt(TCP, TCP_MULTIPATH_ENABLE, 1))
        assert hasattr(c.connection, "subflows")  # MPTCP was tried...
        assert c.connection.fallen_back  # ...and the peer declined: TCP
        assert c.getsockopt(TCP, TCP_MULTIPATH_ENABLE) == 0
        assert c.multipath_info()["fallback_reason"]
        pump(c, s, 200_000)
        ev = [e.kind for e in c.multipath_events()]
        assert "fallback" in ev


def test_L11_fallback_when_a_middlebox_strips_options() -> None:
    """L11: options stripped after the SYN: fallback to TCP, data intact, the
    API reports it (ENABLE false, a fallback event)."""
    t = two_hosts(1, strip_ab=lambda pkt: not tcp_flags(pkt) & SYN)
    up, down = payload(300_000), payload(100_000, 3)
    x = Exchange(t, up, down)
    ctl = MultipathControl(t.c, x.conn, MultipathSettings())
    events = []
    assert x.topo.net.run_until(lambda: x.done() or x.failed() is not None, timeout=60,
                                on_step=lambda now: (x.step(now), events.extend(ctl.poll(now))))
    assert x.failed() is None and x.received_up == up and x.received_down == down
    assert connection_info(x.conn)["mptcp"] is False
    assert [e.kind for e in events].count("fallback") == 1


def test_L11_payload_change_detected_by_dss_checksum_then_fallback() -> None:
    """L11: a middlebox that changes payload is caught by the DSS checksum
    (RFC 8684 §3.7) and handled by falling back; the API reports why."""
    from stack.wire.checksum import pseudo_sum_v4, tcp_checksum

    t = two_hosts(1, c_cfg=MptcpConfig(checksum=True))
    link = t.links[0][0]
    orig = link.send
    done: list[float] = []

    def corrupt(frame, now):
        out = []
        for when, pkt, verified in orig(frame, now):
            ihl = (pkt[0] & 0x0F) * 4
            doff = (pkt[ihl + 12] >> 4) * 4
            if not done and len(pkt) > ihl + doff + 100 and now > 0.02:
                b = bytearray(pkt)
                b[ihl + doff + 50] ^= 0xFF
                b[ihl + 16:ihl + 18] = b"\0\0"
                pseudo = pseudo_sum_v4(bytes(b[12:16]), bytes(b[16:20]), 6, len(b) - ihl)
                b[ihl + 16:ihl + 18] = tcp_checksum(pseudo, bytes(b[ihl:])).to_bytes(2, "big")
                pkt = bytes(b)
                done.append(now)
            out.append((when, pkt, verified))
        return out

    link.send = corrupt
    x = Exchange(t, payload(300_000, 11), b"ok")
    ctl = MultipathControl(t.c, x.conn, MultipathSettings())
    events = []
    assert t.net.run_until(lambda: x.done() or x.failed() is not None, timeout=60,
                           on_step=lambda now: (x.step(now), events.extend(ctl.poll(now))))
    assert done and x.failed() is None
    info = ctl.info()
    assert info["mptcp"] is False and info["fallback_reason"] == "mp_fail"
    assert any(e.kind == "fallback" and e.reason == "mp_fail" for e in events)
