"""MPTCP key material and authentication (RFC 8684 §3.1, §3.2, §3.3.1, §3.4.1; RFC 6824 v0).

- token / IDSN: v1 hashes the 64-bit key (big-endian) with SHA-256, v0 with
  SHA-1; the token is the most significant 32 bits of the hash, the IDSN the
  least significant 64 bits (RFC 8684 §3.1, RFC 6824 §3.1).
- MP_JOIN: HMAC(Key_B ‖ Key_A, R_B ‖ R_A) truncated to its leftmost 64 bits
  on the SYN/ACK, HMAC(Key_A ‖ Key_B, R_A ‖ R_B) truncated to 160 bits on the
  ACK (RFC 8684 §3.2); HMAC-SHA256 in v1, HMAC-SHA1 in v0.
- ADD_ADDR (v1): HMAC(Key_sender ‖ Key_receiver, id ‖ address ‖ port), the
  port as 2 zero bytes when absent, rightmost 64 bits (RFC 8684 §3.4.1).
- DSS checksum (RFC 8684 §3.3.1): `fastpath.checksum.dss_checksum` when the
  extension is built, else an equivalent pure-Python fallback.

Keys are ints (64-bit) or 8 bytes; nonces ints (32-bit) or 4 bytes.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import struct
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address

__all__ = [
    "add_addr_hmac",
    "dss_checksum",
    "join_ack_hmac",
    "join_synack_hmac",
    "key_idsn_v0",
    "key_idsn_v1",
    "key_token_v0",
    "key_token_v1",
]

Key = int | bytes
Nonce = int | bytes
Payload = bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview]


def _fixed(v: int | bytes, size: int, what: str) -> bytes:
    """``v`` as ``size`` big-endian bytes (an int or already ``size`` bytes)."""
    if isinstance(v, bytes | bytearray):
        if len(v) != size:
            raise ValueError(f"{what} must be {size} bytes, got {len(v)}")
        return bytes(v)
    if not 0 <= v < 1 << (8 * size):
        raise ValueError(f"{what} {v} does not fit in {8 * size} bits")
    return v.to_bytes(size, "big")


def _key(k: Key) -> bytes:
    return _fixed(k, 8, "MPTCP key")


def _nonce(n: Nonce) -> bytes:
    return _fixed(n, 4, "MP_JOIN nonce")


def _digest(version: int) -> str:
    if version == 1:
        return "sha256"
    if version == 0:
        return "sha1"
    raise ValueError(f"MPTCP version {version} has no defined hash")


# RFC 8684 §3.1: token = most significant 32 bits, IDSN = least significant 64
def key_token_v1(key: Key) -> int:
    return int.from_bytes(hashlib.sha256(_key(key)).digest()[:4], "big")


def key_idsn_v1(key: Key) -> int:
    return int.from_bytes(hashlib.sha256(_key(key)).digest()[-8:], "big")


# RFC 6824 §3.1: same truncations of SHA-1
def key_token_v0(key: Key) -> int:
    return int.from_bytes(hashlib.sha1(_key(key)).digest()[:4], "big")


def key_idsn_v0(key: Key) -> int:
    return int.from_bytes(hashlib.sha1(_key(key)).digest()[-8:], "big")


def _mac(key_x: Key, key_y: Key, msg: bytes, version: int) -> bytes:
    return _hmac.new(_key(key_x) + _key(key_y), msg, _digest(version)).digest()


def join_synack_hmac(
    key_b: Key, key_a: Key, nonce_b: Nonce, nonce_a: Nonce, *, version: int = 1
) -> bytes:
    """MP_JOIN SYN/ACK: HMAC(Key_B‖Key_A, R_B‖R_A), leftmost 64 bits (RFC 8684 §3.2)."""
    return _mac(key_b, key_a, _nonce(nonce_b) + _nonce(nonce_a), version)[:8]


def join_ack_hmac(
    key_a: Key, key_b: Key, nonce_a: Nonce, nonce_b: Nonce, *, version: int = 1
) -> bytes:
    """MP_JOIN ACK: HMAC(Key_A‖Key_B, R_A‖R_B), leftmost 160 bits (RFC 8684 §3.2)."""
    return _mac(key_a, key_b, _nonce(nonce_a) + _nonce(nonce_b), version)[:20]


def add_addr_hmac(
    key_sender: Key,
    key_receiver: Key,
    addr_id: int,
    address: IPv4Address | IPv6Address | bytes | str,
    port: int | None,
) -> bytes:
    """ADD_ADDR truncated HMAC (v1): rightmost 64 bits (RFC 8684 §3.4.1)."""
    if isinstance(address, bytes | bytearray):
        if len(address) not in (4, 16):
            raise ValueError(f"address must be 4 or 16 bytes, got {len(address)}")
        packed = bytes(address)
    else:
        packed = ip_address(address).packed
    msg = struct.pack("!B", addr_id) + packed + struct.pack("!H", port or 0)
    return _mac(key_sender, key_receiver, msg, 1)[-8:]


def _py_dss_checksum(dsn: int, ssn: int, dll: int, payload: Payload) -> int:
    """RFC 8684 §3.3.1: checksum of DSN(64) ‖ SSN(32) ‖ DLL(16) ‖ 0(16) ‖ payload."""
    if not (0 <= dsn < 1 << 64 and 0 <= ssn < 1 << 32 and 0 <= dll < 1 << 16):
        raise ValueError("dsn must fit 64 bits, ssn 32 bits, dll 16 bits")  # as fastpath
    if isinstance(payload, bytes | bytearray | memoryview):
        data = bytes(payload)
    else:
        data = b"".join(bytes(p) for p in payload)
    buf = struct.pack("!QIHH", dsn, ssn, dll, 0)
    buf += data
    if len(buf) & 1:
        buf += b"\x00"
    total = sum(struct.unpack(f"!{len(buf) // 2}H", buf))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


try:  # the compiled fast path, when built (fastpath/ is owned elsewhere)
    from fastpath.checksum import dss_checksum  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the build
    dss_checksum = _py_dss_checksum
