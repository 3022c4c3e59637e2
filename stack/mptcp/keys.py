"""Keys, tokens and nonces, and the per-host token registry (RFC 8684 §3.1, §3.2).

A connection's key is 64 random bits from the host's injectable randomness
source; its token (SHA-256 of the key, first 32 bits) names the connection in
MP_JOIN SYNs, so tokens must be unique per host (RFC 8684 §3.1: "a host MUST
ensure the token is unique"). As the kernel (net/mptcp/token.c
``mptcp_token_new_connect``), a colliding token makes us draw a new key, at
most ``MAX_RETRIES`` times; a zero key is redrawn (``subflow.c``
``subflow_init_req``: zero keys are refused by the peer after syncookies).

The registry is bounded: ``allocate`` raises :class:`TokenExhausted` when it is
full or keeps colliding, and the caller then opens a plain-TCP connection (the
kernel falls back the same way when the token table refuses it).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from stack.mptcp.crypto import key_idsn_v1, key_token_v1

__all__ = [
    "KeyMaterial",
    "RandomSource",
    "TokenExhausted",
    "TokenRegistry",
    "draw_key",
    "draw_nonce",
    "key_material",
]

MAX_RETRIES = 4  # kernel MPTCP_TOKEN_MAX_RETRIES


class RandomSource(Protocol):
    """What we need from ``random.Random`` / ``random.SystemRandom``."""

    def getrandbits(self, k: int, /) -> int: ...


class TokenExhausted(Exception):
    """No unique token could be allocated (registry full or repeated collisions)."""


class KeyMaterial(NamedTuple):
    """A key with its derived token and initial data sequence number (§3.1);
    a tuple, so ``key, token, idsn = registry.allocate(rng)`` works."""

    key: int
    token: int
    idsn: int


def key_material(key: int) -> KeyMaterial:
    return KeyMaterial(key, key_token_v1(key), key_idsn_v1(key))


def draw_key(rng: RandomSource) -> int:
    """A non-zero 64-bit key."""
    while True:
        key = rng.getrandbits(64)
        if key:
            return key


def draw_nonce(rng: RandomSource) -> int:
    """A non-zero 32-bit MP_JOIN nonce (the kernel redraws zero nonces)."""
    while True:
        nonce = rng.getrandbits(32)
        if nonce:
            return nonce


_UNBOUND = object()


class TokenRegistry:
    """Tokens in use on one host, each optionally bound to its connection.

    ``lookup`` only finds bound tokens: a token allocated for a connection
    that is not yet established cannot be joined (as the kernel, whose token
    lookup for MP_JOIN only sees accepted connections).
    """

    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self._owners: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self._owners)

    def __contains__(self, token: int) -> bool:
        return token in self._owners

    def allocate(self, rng: RandomSource, owner: object | None = None) -> KeyMaterial:
        """Draw a key whose token is not in use, and reserve that token."""
        if len(self._owners) >= self.capacity:
            raise TokenExhausted(f"token registry full ({self.capacity})")
        for _ in range(MAX_RETRIES + 1):
            km = key_material(draw_key(rng))
            if km.token not in self._owners:
                self._owners[km.token] = _UNBOUND if owner is None else owner
                return km
        raise TokenExhausted(f"{MAX_RETRIES + 1} colliding tokens in a row")

    def bind(self, token: int, owner: object) -> None:
        """Attach the connection to a token reserved by ``allocate``."""
        if token not in self._owners:
            raise KeyError(f"token {token:#010x} was not allocated")
        self._owners[token] = owner

    def release(self, token: int) -> bool:
        """Free a token; False when it was not allocated."""
        return self._owners.pop(token, None) is not None

    def lookup(self, token: int) -> object | None:
        """The connection bound to ``token``, or None (unknown or not yet bound)."""
        owner = self._owners.get(token)
        return None if owner is _UNBOUND else owner
