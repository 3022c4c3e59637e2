"""Known-answer tests for stack.mptcp.crypto (linux-mptcp-v1.md §1.2-§1.5, RFC 8684)."""

from __future__ import annotations

import hashlib
import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.mptcp import crypto
from stack.mptcp.crypto import (
    add_addr_hmac,
    dss_checksum,
    join_ack_hmac,
    join_synack_hmac,
    key_idsn_v0,
    key_idsn_v1,
    key_token_v0,
    key_token_v1,
)
from stack.wire.mptcp import parse_mptcp

# Keys seen on the wire in pcaps/kernel-2subflows.pcap (§1.2)
CLIENT_KEY = 0x0EAE836AAE29D673
SERVER_KEY = 0xDFEFE678E0D6D2AD
# Synthetic keys and nonces of §1.2
KEY_A = 0x0102030405060708
KEY_B = 0x1112131415161718
R_A = 0x01020304
R_B = 0x0A0B0C0D


@pytest.mark.parametrize(
    ("key", "token", "idsn"),
    [
        (CLIENT_KEY, 0x22C97822, 0xE8A134FF18C4F936),
        (SERVER_KEY, 0x9E8A2491, 0xDFE08A64D0CE6682),
        (KEY_A, 0x66840DDA, 0xF5A101D3D29D6F72),
        (KEY_B, 0xCCAD45AC, 0x535BEEA38E087C8E),
    ],
)
def test_token_and_idsn_v1_worked_examples(key: int, token: int, idsn: int) -> None:
    assert key_token_v1(key) == token
    assert key_idsn_v1(key) == idsn
    assert key_token_v1(key.to_bytes(8, "big")) == token  # bytes keys too


def test_server_token_is_the_one_in_the_mp_join_syn() -> None:
    # MP_JOIN SYN on subflow 2 of kernel-2subflows.pcap names the server's token.
    syn = parse_mptcp(bytes.fromhex("1e0c10019e8a24913403d5b4"), syn=True)
    assert syn.token == key_token_v1(SERVER_KEY) == 2659853457


def test_first_dsn_is_idsn_plus_one_on_the_wire() -> None:
    # §1.2: first client DSS dsn8 0xe8a134ff18c4f937, first server 0xdfe08a64d0ce6683
    client = parse_mptcp(bytes.fromhex("1e16200dd0ce6683e8a134ff18c4f937000000010bb8"))
    server = parse_mptcp(bytes.fromhex("1e1a200fe8a134ff18c510a8dfe08a64d0ce6683000000010bb8"))
    assert client.dsn == key_idsn_v1(CLIENT_KEY) + 1
    assert server.dsn == key_idsn_v1(SERVER_KEY) + 1


def test_v0_uses_sha1_truncations() -> None:
    # RFC 6824 §3.1: token = most significant 32 bits, IDSN = least significant 64
    digest = hashlib.sha1(KEY_A.to_bytes(8, "big")).digest()
    assert key_token_v0(KEY_A) == int.from_bytes(digest[:4], "big")
    assert key_idsn_v0(KEY_A) == int.from_bytes(digest[12:], "big")
    assert key_token_v0(KEY_A) != key_token_v1(KEY_A)


def test_mp_join_hmacs_synthetic_example() -> None:
    assert join_synack_hmac(KEY_B, KEY_A, R_B, R_A) == bytes.fromhex("dfd01286724255b2")
    assert join_ack_hmac(KEY_A, KEY_B, R_A, R_B) == bytes.fromhex(
        "4c24d5137175aeb366a76ac23a3fd5a0648628d2"
    )


def test_mp_join_hmacs_from_the_wire() -> None:
    # §1.3: subflow 2 of kernel-2subflows.pcap; A = the joining client.
    synack = parse_mptcp(bytes.fromhex("1e101001dd592f127197122d1d6d0315"), syn=True, ack=True)
    ack = parse_mptcp(bytes.fromhex("1e181000028a62e8dd3deae1593341ef4a959ce6935dd101"), ack=True)
    r_a, r_b = 0x3403D5B4, synack.nonce
    assert r_b == 0x1D6D0315
    assert synack.hmac == join_synack_hmac(SERVER_KEY, CLIENT_KEY, r_b, r_a)
    assert ack.hmac == join_ack_hmac(CLIENT_KEY, SERVER_KEY, r_a, r_b)
    # and a swapped nonce pair does not verify
    assert ack.hmac != join_ack_hmac(CLIENT_KEY, SERVER_KEY, r_b, r_a)


@pytest.mark.parametrize(
    ("key", "msg", "result"),
    [  # net/mptcp/crypto_test.c: ASCII strings used as the 2 keys and 2 nonces
        (b"0b0b0b0b0b0b0b0b", b"48692054",
         "8385e24fb4235ac37556b6b886db106284a1da671699f46db1f235ec622dcafa"),
        (b"aaaaaaaaaaaaaaaa", b"dddddddd",
         "2c5e219164ff1dca1c4a92318d847bb6b9d44492984e1eb71aff9022f71046e9"),
        (b"0102030405060708", b"cdcdcdcd",
         "e73b9ba9969969cefb04aa0d6df18ec2fcc075b6f23b4d8c4da736a5dbbc6e7d"),
    ],
)
def test_kernel_kunit_vectors(key: bytes, msg: bytes, result: str) -> None:
    full = bytes.fromhex(result)
    assert join_ack_hmac(key[:8], key[8:], msg[:4], msg[4:]) == full[:20]
    assert join_synack_hmac(key[:8], key[8:], msg[:4], msg[4:]) == full[:8]


def test_add_addr_hmac_examples() -> None:
    # §1.2 synthetic: sent by A, id 1, 198.18.2.2, no port
    assert add_addr_hmac(KEY_A, KEY_B, 1, IPv4Address("198.18.2.2"), None) == bytes.fromhex(
        "5059ee641f9675ca"
    )
    # §1.5 wire: the server announced id 1 198.18.2.2 to the client
    opt = parse_mptcp(bytes.fromhex("1e103001c6120202d6a3917808f8b7dd"))
    assert opt.hmac == add_addr_hmac(SERVER_KEY, CLIENT_KEY, opt.addr_id, opt.address, opt.port)
    assert opt.hmac == add_addr_hmac(SERVER_KEY, CLIENT_KEY, 1, "198.18.2.2", None)
    assert opt.hmac == add_addr_hmac(SERVER_KEY, CLIENT_KEY, 1, bytes([198, 18, 2, 2]), None)
    # the key order matters (sender first)
    assert opt.hmac != add_addr_hmac(CLIENT_KEY, SERVER_KEY, 1, "198.18.2.2", None)


def test_add_addr_hmac_message_layout_with_port_and_ipv6() -> None:
    import hmac

    addr = IPv6Address("fd00::2")
    want = hmac.new(
        KEY_A.to_bytes(8, "big") + KEY_B.to_bytes(8, "big"),
        b"\x07" + addr.packed + struct.pack("!H", 8080),
        "sha256",
    ).digest()[24:]
    assert add_addr_hmac(KEY_A, KEY_B, 7, addr, 8080) == want
    # "no port" hashes 2 zero bytes (RFC 8684 §3.4.1), i.e. the same as port 0
    assert add_addr_hmac(KEY_A, KEY_B, 7, addr, None) == add_addr_hmac(KEY_A, KEY_B, 7, addr, 0)


def _ref_dss_checksum(dsn: int, ssn: int, dll: int, payload: bytes) -> int:
    data = struct.pack("!QIHH", dsn, ssn, dll, 0) + payload
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def test_dss_checksum_data_fin_only_mappings_from_the_wire() -> None:
    # kernel-2subflows-csum.pcap: DATA_FIN-only mappings (SSN 0, DLL 1, no payload)
    for raw in ("1e18201d4dbe14aa8bf2962e4b8c13ae0000000000017ea3",
                "1e1c201f8bf2962e4b8c13af8957e24b4dbe2130000000000001256d"):
        opt = parse_mptcp(bytes.fromhex(raw))
        assert (opt.ssn, opt.dll, opt.data_fin) == (0, 1, True)
        assert dss_checksum(opt.dsn, opt.ssn, opt.dll, b"") == opt.checksum
        # Receiver check (§1.4): pseudo-header with the checksum in place sums to 0xffff.
        words = struct.unpack("!8H", struct.pack("!QIHH", opt.dsn, 0, 1, opt.checksum))
        s = sum(words)
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        assert s == 0xFFFF


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**16 - 1),
    st.lists(st.binary(max_size=50), max_size=4),
)
def test_dss_checksum_matches_reference_and_spans_segments(dsn, ssn, dll, parts) -> None:
    whole = b"".join(parts)
    want = _ref_dss_checksum(dsn, ssn, dll, whole)
    assert dss_checksum(dsn, ssn, dll, whole) == want
    assert dss_checksum(dsn, ssn, dll, parts) == want  # mapping spread over segments
    assert crypto._py_dss_checksum(dsn, ssn, dll, parts) == want


def test_dss_checksum_detects_a_flipped_byte() -> None:
    data = bytes(range(200))
    good = dss_checksum(1, 1, 200, data)
    bad = dss_checksum(1, 1, 200, data[:50] + b"\xff" + data[51:])
    assert good != bad


@pytest.mark.parametrize(
    "call",
    [
        lambda: key_token_v1(-1),
        lambda: key_token_v1(2**64),
        lambda: key_token_v1(b"short"),
        lambda: join_ack_hmac(KEY_A, KEY_B, 2**32, 0),
        lambda: join_ack_hmac(KEY_A, KEY_B, R_A, R_B, version=2),
        lambda: add_addr_hmac(KEY_A, KEY_B, 1, b"\x01\x02\x03", None),
        lambda: dss_checksum(2**64, 0, 0, b""),
        lambda: dss_checksum(0, -1, 0, b""),
        lambda: dss_checksum(0, 0, 2**16, b""),
        lambda: crypto._py_dss_checksum(2**64, 0, 0, b""),  # the fallback agrees
        lambda: crypto._py_dss_checksum(0, 2**32, 0, b""),
        lambda: crypto._py_dss_checksum(0, 0, -1, b""),
    ],
)
def test_bad_inputs_raise_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()
