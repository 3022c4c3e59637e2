"""Default path manager decisions (RFC 8684 §3.4; Linux in-kernel PM)."""

from __future__ import annotations

from ipaddress import ip_address

from stack.mptcp.pm import (
    ADD_ADDR_RETRANS_MAX,
    CloseSubflows,
    Endpoint,
    OpenSubflow,
    PathManager,
    PmLimits,
    SendAddAddr,
    SendRemoveAddr,
    add_addr_option,
    remove_addr_options,
    verify_add_addr,
)
from stack.wire.mptcp import parse_mptcp

C1, C2, C3 = "198.18.1.1", "198.18.2.1", "198.18.3.1"
S1, S2, S3 = "198.18.1.2", "198.18.2.2", "198.18.3.2"
PORT = 5202


def ep(i, a, port=None):
    return Endpoint(i, ip_address(a), port)


def client(locals_=(C1, C2), **kw) -> PathManager:
    return PathManager(False, locals_, C1, S1, PORT, **kw)


def server(locals_=(S1, S2), **kw) -> PathManager:
    return PathManager(True, locals_, S1, C1, 55526, **kw)


# -- client --------------------------------------------------------------------


def test_client_joins_only_after_the_peer_acknowledged_data():
    pm = client()
    assert pm.on_fully_established(0.0) == []  # fully established on our side only
    acts = pm.on_data_acked(0.1)
    assert acts == [OpenSubflow(ep(1, C2), ep(0, S1, PORT), PORT)]
    assert pm.on_data_acked(0.2) == [] and pm.extra_subflows == 1


def test_client_opens_to_each_announced_address_and_echoes_every_one():
    pm = client(locals_=(C1,))
    pm.on_fully_established(0.0)
    pm.on_data_acked(0.0)
    acts = pm.on_add_addr(ep(1, S2), 1.0)  # pkt 4 of kernel-2subflows.pcap
    assert acts == [SendAddAddr(ep(1, S2), echo=True), OpenSubflow(None, ep(1, S2), PORT)]
    assert pm.accepted == 1


def test_announcement_before_joins_are_allowed_waits_for_the_data_ack():
    pm = client(locals_=(C1,))
    pm.on_fully_established(0.0)
    assert pm.on_add_addr(ep(1, S2, 6000), 0.0) == [SendAddAddr(ep(1, S2, 6000), echo=True)]
    assert pm.on_data_acked(0.5) == [OpenSubflow(None, ep(1, S2, 6000), 6000)]


def test_client_limits_subflows_and_accepted_announcements():
    pm = client(locals_=(C1, C2, C3), limits=PmLimits(subflows=2, add_addr_accepted=1))
    pm.on_fully_established(0.0)
    assert len(pm.on_data_acked(0.0)) == 2  # from C2 and C3: limit reached
    assert pm.on_add_addr(ep(1, S2), 0.0) == [SendAddAddr(ep(1, S2), echo=True)]
    pm.on_subflow_closed(C2, 0)
    acts = pm.on_add_addr(ep(2, S3), 0.0)
    assert acts[1] == OpenSubflow(None, ep(2, S3), PORT)
    assert pm.on_add_addr(ep(3, "198.18.4.2"), 0.0) == [
        SendAddAddr(ep(3, "198.18.4.2"), echo=True)]  # add_addr_accepted 1 used


def test_source_selection_hook_gives_the_local_id():
    pm = client(locals_=(C1, C2), limits=PmLimits(join_from_local_addrs=False),
                source_for=lambda remote: ip_address(C2))
    pm.on_fully_established(0.0)
    pm.on_data_acked(0.0)
    acts = pm.on_add_addr(ep(1, S2), 0.0)
    assert acts[1] == OpenSubflow(ep(1, C2), ep(1, S2), PORT)
    assert pm.local_id("10.9.9.9") == 2  # an address first used now gets a new id


def test_peer_c_flag_forbids_joining_its_initial_address():
    pm = client(peer_deny_join_id0=True)
    pm.on_fully_established(0.0)
    assert pm.on_data_acked(0.0) == []


def test_hostile_announcements_are_echoed_but_not_used():
    pm = client(locals_=(C1,), limits=PmLimits(max_remote_addrs=3))
    pm.on_fully_established(0.0)
    pm.on_data_acked(0.0)
    pm.on_add_addr(ep(1, S2), 0.0)
    acts = pm.on_add_addr(ep(1, "203.0.113.9"), 0.0)  # id 1 reused for another address
    assert acts == [SendAddAddr(ep(1, "203.0.113.9"), echo=True)]
    assert pm.remote_addrs[1].address == ip_address(S2)
    assert pm.on_add_addr(ep(0, "203.0.113.8"), 0.0)[1:] == []  # id 0: initial only
    assert pm.on_add_addr(ep(1, S2), 0.0)[1:] == []  # duplicate: no second subflow
    pm.on_add_addr(ep(2, S3), 0.0)
    assert pm.on_add_addr(ep(3, "198.18.4.2"), 0.0)[1:] == []  # remote table full
    assert pm.rejected_announcements == 3 and len(pm.remote_addrs) == 3


def test_remove_addr_closes_subflows_and_frees_the_slot():
    pm = client(locals_=(C1,), limits=PmLimits(add_addr_accepted=1))
    pm.on_fully_established(0.0)
    pm.on_data_acked(0.0)
    pm.on_add_addr(ep(1, S2), 0.0)
    assert pm.on_remove_addr([1, 7]) == [CloseSubflows(1)]
    pm.on_subflow_closed(None, 1)
    assert pm.accepted == 0 and pm.extra_subflows == 0
    assert pm.on_add_addr(ep(2, S3), 0.0)[1] == OpenSubflow(None, ep(2, S3), PORT)


# -- server --------------------------------------------------------------------


def test_server_announces_one_address_at_a_time_after_the_echo():
    pm = server(locals_=(S1, S2, S3))
    acts = pm.on_fully_established(0.0)
    assert acts == [SendAddAddr(ep(1, S2))]
    assert pm.on_add_addr_echo(ep(2, S3), 0.1) == []  # not the one outstanding
    assert pm.on_add_addr_echo(ep(1, S2), 0.1) == [SendAddAddr(ep(2, S3))]
    assert pm.on_add_addr_echo(ep(2, S3), 0.2) == [] and pm.next_deadline() is None


def test_add_addr_retransmission_backs_off_three_times_then_moves_on():
    pm = server(locals_=(S1, S2, S3))
    pm.set_rto(0.5)
    pm.on_fully_established(10.0)
    assert pm.next_deadline() == 10.5
    assert pm.on_timer(10.4) == []
    sent = []
    t = 10.0
    while (d := pm.next_deadline()) is not None and len(sent) < 4:
        t = d
        acts = pm.on_timer(t)
        sent.append((t, acts))
    # retransmissions at T, 3T, 7T after the first send; after the third the
    # next address is announced at once (kernel ADD_ADDR_RETRANS_MAX == 3)
    assert [s[0] for s in sent[:3]] == [10.5, 11.5, 13.5]
    assert sent[0][1] == [SendAddAddr(ep(1, S2))]
    assert sent[2][1] == [SendAddAddr(ep(1, S2)), SendAddAddr(ep(2, S3))]
    assert ADD_ADDR_RETRANS_MAX == 3


def test_add_addr_timeout_is_capped_at_120_s():
    pm = server()
    pm.set_rto(300.0)
    pm.on_fully_established(0.0)
    assert pm.next_deadline() == 120.0


def test_server_accepts_joins_within_the_limit():
    pm = server(limits=PmLimits(subflows=1))
    assert pm.accept_join() and not pm.accept_join()
    pm.on_subflow_closed(None, 3)
    assert pm.accept_join()


def test_server_does_not_open_subflows_but_echoes():
    pm = server()
    pm.on_fully_established(0.0)
    assert pm.on_add_addr(ep(5, "198.18.9.3"), 0.0) == [
        SendAddAddr(ep(5, "198.18.9.3"), echo=True)]


def test_removing_a_local_address_sends_remove_addr():
    pm = server(locals_=(S1, S2, S3))
    pm.on_fully_established(0.0)
    assert pm.remove_local(S2) == [SendRemoveAddr((1,))] and pm.next_deadline() is None
    assert pm.remove_local("192.0.2.1") == []


def test_ipv6_addresses_join_only_their_family():
    pm = PathManager(False, ("fd00::1", "198.18.2.1"), "fd00::1", "fd00::2", PORT)
    pm.on_fully_established(0.0)
    assert pm.on_data_acked(0.0) == []  # the IPv4 address cannot reach fd00::2
    pm2 = PathManager(False, ("fd00::1", "fd01::1"), "fd00::1", "fd00::2", PORT)
    pm2.on_fully_established(0.0)
    assert pm2.on_data_acked(0.0) == [OpenSubflow(ep(1, "fd01::1"), ep(0, "fd00::2", PORT), PORT)]


# -- ADD_ADDR / REMOVE_ADDR options ------------------------------------------------

CKEY, SKEY = 0x0EAE836AAE29D673, 0xDFEFE678E0D6D2AD  # kernel-2subflows.pcap
ANNOUNCE = bytes.fromhex("1e103001c6120202d6a3917808f8b7dd")  # pkt 4
ECHO = bytes.fromhex("1e083101c6120202")  # pkt 5


def test_add_addr_and_echo_bytes_are_the_kernels():
    assert add_addr_option(SendAddAddr(ep(1, S2)), SKEY, CKEY).emit() == ANNOUNCE
    assert add_addr_option(SendAddAddr(ep(1, S2), echo=True), CKEY, SKEY).emit() == ECHO


def test_received_add_addr_hmac_is_checked():
    assert verify_add_addr(parse_mptcp(ANNOUNCE), SKEY, CKEY) == ep(1, S2)
    assert verify_add_addr(parse_mptcp(ANNOUNCE), CKEY, SKEY) is None  # keys swapped
    assert verify_add_addr(parse_mptcp(ECHO), SKEY, CKEY) == ep(1, S2)
    bad = bytearray(ANNOUNCE)
    bad[7] ^= 1  # another address under the same HMAC
    assert verify_add_addr(parse_mptcp(bytes(bad)), SKEY, CKEY) is None


def test_add_addr_with_port_and_ipv6_round_trip():
    a = Endpoint(3, ip_address("fd00::2"), 6000)
    opt = add_addr_option(SendAddAddr(a), 1, 2)
    assert opt.length == 30 and verify_add_addr(parse_mptcp(opt.emit()), 1, 2) == a


def test_reference_add_addr_hmac_vector():
    # linux-mptcp-v1.md §1.2: A announces id 1, 198.18.2.2, no port
    opt = add_addr_option(SendAddAddr(ep(1, S2)), 0x0102030405060708, 0x1112131415161718)
    assert opt.hmac == bytes.fromhex("5059ee641f9675ca")


def test_remove_addr_packs_at_most_eight_ids():
    opts = remove_addr_options(SendRemoveAddr(tuple(range(1, 11))))
    assert [o.addr_ids for o in opts] == [tuple(range(1, 9)), (9, 10)]
    assert opts[1].emit() == bytes.fromhex("1e0540090a")


def test_closing_a_routed_subflow_by_its_actual_source_frees_the_pair():
    pm = client(locals_=(C1,), limits=PmLimits(subflows=1))
    pm.on_fully_established(0.0)
    pm.on_data_acked(0.0)
    assert pm.on_add_addr(ep(1, S2), 0.0)[1] == OpenSubflow(None, ep(1, S2), PORT)
    pm.on_subflow_closed(C2, 1)  # the host reports the source routing chose
    assert pm.extra_subflows == 0 and pm._opened == set()
