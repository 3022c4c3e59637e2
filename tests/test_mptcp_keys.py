"""Keys, tokens, nonces and the per-host token registry (RFC 8684 §3.1, §3.2)."""

from __future__ import annotations

import random

import pytest

from stack.mptcp.keys import (
    MAX_RETRIES,
    KeyMaterial,
    TokenExhausted,
    TokenRegistry,
    draw_key,
    draw_nonce,
    key_material,
)

KEY_A = 0x0102030405060708  # linux-mptcp-v1.md §1.2 synthetic example


class Script:
    """An rng that returns the given values, in order."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)
        self.calls: list[int] = []

    def getrandbits(self, k: int) -> int:
        self.calls.append(k)
        return self.values.pop(0)


def test_key_material_matches_the_reference_example():
    assert key_material(KEY_A) == KeyMaterial(KEY_A, 0x66840DDA, 0xF5A101D3D29D6F72)


def test_key_material_matches_the_kernel_trace():
    km = key_material(0xDFEFE678E0D6D2AD)  # server key of kernel-2subflows.pcap
    assert km.token == 0x9E8A2491 and km.idsn == 0xDFE08A64D0CE6682


def test_zero_key_and_zero_nonce_are_redrawn():
    assert draw_key(Script(0, 0, KEY_A)) == KEY_A
    rng = Script(0, 0x0A0B0C0D)
    assert draw_nonce(rng) == 0x0A0B0C0D and rng.calls == [32, 32]


def test_allocate_reserves_a_token_and_bind_makes_it_joinable():
    reg = TokenRegistry()
    km = reg.allocate(Script(KEY_A))
    key, token, idsn = km
    assert (key, token, idsn) == (KEY_A, 0x66840DDA, 0xF5A101D3D29D6F72)
    assert km.token == 0x66840DDA and km.token in reg and len(reg) == 1
    assert reg.lookup(km.token) is None  # reserved, not yet joinable
    conn = object()
    reg.bind(km.token, conn)
    assert reg.lookup(km.token) is conn
    assert reg.release(km.token) and reg.lookup(km.token) is None and len(reg) == 0
    assert not reg.release(km.token)


def test_allocate_with_owner_is_joinable_at_once():
    reg = TokenRegistry()
    conn = object()
    km = reg.allocate(Script(KEY_A), owner=conn)
    assert reg.lookup(km.token) is conn


def test_colliding_token_draws_a_new_key():
    reg = TokenRegistry()
    reg.allocate(Script(KEY_A))
    km = reg.allocate(Script(KEY_A, 0, 0x1112131415161718))
    assert km.key == 0x1112131415161718 and km.token == 0xCCAD45AC
    assert len(reg) == 2


def test_repeated_collisions_give_up():
    reg = TokenRegistry()
    reg.allocate(Script(KEY_A))
    with pytest.raises(TokenExhausted):
        reg.allocate(Script(*([KEY_A] * (MAX_RETRIES + 1))))
    assert len(reg) == 1


def test_registry_is_bounded():
    reg = TokenRegistry(capacity=3)
    rng = random.Random(7)
    tokens = {reg.allocate(rng).token for _ in range(3)}
    assert len(tokens) == 3
    with pytest.raises(TokenExhausted):
        reg.allocate(rng)
    reg.release(tokens.pop())
    reg.allocate(rng)
    assert len(reg) == 3


def test_bind_unknown_token_is_a_typed_error():
    with pytest.raises(KeyError):
        TokenRegistry().bind(0x12345678, object())


def test_seeded_rng_is_deterministic():
    a = TokenRegistry().allocate(random.Random(42))
    b = TokenRegistry().allocate(random.Random(42))
    assert a == b and a.key != 0
