"""Fallback to plain TCP where RFC 8684 §3.7 and Linux do it (reference
§2.2), in virtual time; a fallen-back connection keeps working as TCP."""

from __future__ import annotations

from mptcp_topology import Exchange, payload, tcp_flags, two_hosts

from stack.mptcp.connection import MptcpConfig
from stack.tcp import TcpConnection
from stack.tcp.segment import ACK, SYN


def _intact(x: Exchange, up: bytes, down: bytes) -> None:
    assert x.run(60), (x.conn, x.peer)
    assert x.failed() is None
    assert x.received_up == up and x.received_down == down


def test_server_without_mptcp() -> None:
    t = two_hosts(1, s_mptcp=False)
    up, down = payload(500_000, 1), payload(200_000, 2)
    x = Exchange(t, up, down)
    _intact(x, up, down)
    assert isinstance(x.peer, TcpConnection)  # the server is plain TCP
    info = x.conn.mptcp_info()
    assert info["mptcp"] is False and info["fallback_reason"] == "synack_without_mpc"


def test_client_without_mptcp_to_an_mptcp_listener() -> None:
    t = two_hosts(1, c_mptcp=False)
    up, down = payload(300_000, 3), payload(100_000, 4)
    x = Exchange(t, up, down)
    _intact(x, up, down)
    # a SYN without MP_CAPABLE to an MPTCP listener is plain TCP (as Linux)
    assert isinstance(x.conn, TcpConnection) and isinstance(x.peer, TcpConnection)
    assert t.s.stats["passive_open"] == 1 and not t.s.mptcp_conns
    assert len(t.s.tokens) == 0  # no token reserved for a plain connection


def test_options_stripped_on_the_synack() -> None:
    syn_ack = SYN | ACK
    t = two_hosts(1, strip_ba=lambda pkt: tcp_flags(pkt) & syn_ack == syn_ack)
    up, down = payload(400_000, 5), payload(400_000, 6)
    x = Exchange(t, up, down)
    _intact(x, up, down)
    ci, si = x.conn.mptcp_info(), x.peer.mptcp_info()
    assert ci["mptcp"] is False and ci["fallback_reason"] == "synack_without_mpc"
    # the server saw no MP_CAPABLE on the third ACK (MPCapableFallbackACK)
    assert si["mptcp"] is False and si["fallback_reason"] == "third_ack_without_mpc"
    assert t.links[0][1].stripped == 1


def test_options_stripped_after_the_syn() -> None:
    t = two_hosts(1, strip_ab=lambda pkt: not tcp_flags(pkt) & SYN)
    up, down = payload(400_000, 7), payload(400_000, 8)
    x = Exchange(t, up, down)
    _intact(x, up, down)
    ci, si = x.conn.mptcp_info(), x.peer.mptcp_info()
    assert si["mptcp"] is False and si["fallback_reason"] == "third_ack_without_mpc"
    # the server's first segment had no DSS: the client falls back too
    # (MPCapableDataFallback)
    assert ci["mptcp"] is False and ci["fallback_reason"] == "first_segment_without_dss"


def test_mpc_syns_dropped_then_retried_without_mp_capable() -> None:
    drops = []
    t = two_hosts(1)
    link = t.links[0][0]
    orig = link.send

    def send(frame, now):
        data = frame.data if hasattr(frame, "data") else frame
        if tcp_flags(data) == SYN and b"\x1e\x04\x01\x01" in data[20:]:
            drops.append(now)
            return []
        return orig(frame, now)

    link.send = send  # a middlebox dropping SYNs with MP_CAPABLE
    up = payload(100_000, 9)
    x = Exchange(t, up, b"ok")
    _intact(x, up, b"ok")
    # net.mptcp.syn_retrans_before_tcp_fallback = 2: SYN + 2 retries with MPC
    assert len(drops) == 3
    assert x.conn.mptcp_info()["fallback_reason"] == "mpc_syn_timeout"
    assert isinstance(x.peer, TcpConnection)


def test_checksum_and_fallback_config_are_per_host() -> None:
    cfg = MptcpConfig(checksum=True, syn_retrans_before_tcp_fallback=0)
    t = two_hosts(1, s_cfg=cfg)
    up = payload(200_000, 10)
    x = Exchange(t, up, b"")
    _intact(x, up, b"")
    # the server asked for checksums in its SYN/ACK: both ends use them
    assert x.conn.mptcp_info()["checksum"] and x.peer.mptcp_info()["checksum"]


def test_checksum_failure_mp_fail_then_infinite_mapping() -> None:
    """A middlebox alters one payload byte (fixing the TCP checksum) after
    checksums worked: the receiver sends MP_FAIL and still delivers, the
    sender answers MP_FAIL + the infinite mapping, both fall back to TCP
    (RFC 8684 §3.7) and the transfer goes on as TCP."""
    t = two_hosts(1, c_cfg=MptcpConfig(checksum=True))
    link = t.links[0][0]
    orig = link.send
    done = []

    def corrupt(frame, now):
        out = orig(frame, now)
        fixed = []
        for when, pkt, verified in out:
            ihl = (pkt[0] & 0x0F) * 4
            doff = (pkt[ihl + 12] >> 4) * 4
            if not done and len(pkt) > ihl + doff + 100 and now > 0.02:
                b = bytearray(pkt)
                b[ihl + doff + 50] ^= 0xFF
                pkt = _fix_tcp_checksum(bytes(b))
                done.append(now)
            fixed.append((when, pkt, verified))
        return fixed

    link.send = corrupt
    up = payload(400_000, 11)
    x = Exchange(t, up, b"fin")
    assert x.run(60)
    assert done and x.failed() is None
    got = x.received_up
    assert len(got) == len(up) and sum(a != b for a, b in zip(got, up, strict=True)) == 1
    ci, si = x.conn.mptcp_info(), x.peer.mptcp_info()
    # the receiver found the bad checksum and sent MP_FAIL; the sender
    # answered it (MP_FAIL back), so each side received one
    assert si["stats"]["map_error_bad_csum"] == 1
    assert ci["stats"]["mp_fail_rx"] == 1 and si["stats"]["mp_fail_rx"] == 1
    assert ci["stats"]["infinite_mapping_tx"] == 1 and si["stats"]["infinite_mapping_rx"] == 1
    assert ci["fallback_reason"] == "mp_fail" and si["fallback_reason"] == "mp_fail"


def _fix_tcp_checksum(pkt: bytes) -> bytes:
    from stack.wire.checksum import pseudo_sum_v4, tcp_checksum

    b = bytearray(pkt)
    ihl = (b[0] & 0x0F) * 4
    total = int.from_bytes(b[2:4], "big")
    b[ihl + 16:ihl + 18] = b"\x00\x00"
    pseudo = pseudo_sum_v4(bytes(b[12:16]), bytes(b[16:20]), 6, total - ihl)
    b[ihl + 16:ihl + 18] = tcp_checksum(pseudo, bytes(b[ihl:])).to_bytes(2, "big")
    return bytes(b)
