"""64-bit data-sequence arithmetic and 32-bit expansion (RFC 8684 §3.3)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stack.mptcp.dsn import (
    MASK64,
    dsn_add,
    dsn_diff,
    dsn_ge,
    dsn_gt,
    dsn_le,
    dsn_lt,
    dsn_max,
    expand,
    expand32,
)

u64 = st.integers(0, MASK64)


def test_add_wraps_at_2_64():
    assert dsn_add(MASK64, 1) == 0
    assert dsn_add(MASK64 - 1, 5) == 3
    assert dsn_add(2, -5) == MASK64 - 2


def test_diff_is_signed_across_the_wrap():
    assert dsn_diff(3, MASK64 - 1) == 5
    assert dsn_diff(MASK64 - 1, 3) == -5
    assert dsn_diff(10, 10) == 0


def test_comparisons_across_the_wrap():
    a, b = MASK64 - 10, 20  # b is 31 ahead of a
    assert dsn_lt(a, b) and dsn_le(a, b) and not dsn_gt(a, b) and not dsn_ge(a, b)
    assert dsn_gt(b, a) and dsn_ge(b, a)
    assert dsn_le(a, a) and dsn_ge(a, a) and not dsn_lt(a, a)
    assert dsn_max(a, b) == b and dsn_max(b, a) == b


@given(u64, st.integers(-(2**62), 2**62))
def test_add_then_diff_round_trips(a, n):
    assert dsn_diff(dsn_add(a, n), a) == n


def test_expand32_same_block():
    old = 0x1122334400000010
    assert expand32(old, 0x00000020) == 0x1122334400000020
    assert expand32(old, 0x00000005) == 0x1122334400000005  # slightly behind


def test_expand32_forward_wrap_of_the_low_half():
    old = 0x00000001FFFFFFF0
    assert expand32(old, 0x00000010) == 0x0000000200000010


def test_expand32_backward_wrap_of_the_low_half():
    old = 0x0000000200000010
    assert expand32(old, 0xFFFFFFF0) == 0x00000001FFFFFFF0


def test_expand32_wraps_the_64_bit_space():
    old = 0xFFFFFFFFFFFFFFF0
    assert expand32(old, 0x00000004) == 0x0000000000000004
    assert expand32(0x0000000000000004, 0xFFFFFFF0) == 0xFFFFFFFFFFFFFFF0


def test_expand_takes_64_bit_values_as_they_are():
    assert expand(0x1234, 0xAABBCCDD11223344, True) == 0xAABBCCDD11223344
    assert expand(0xE8A134FF18C4F937, 0x18C4FEC7, False) == 0xE8A134FF18C4FEC7


def test_expand_kernel_trace_values():
    # kernel-2subflows.pcap: client DATA_ACK32 0xd0ce6683 against the server's
    # 64-bit snd_una 0xdfe08a64d0ce6683 (IDSN + 1)
    assert expand32(0xDFE08A64D0CE6683, 0xD0CE6683) == 0xDFE08A64D0CE6683


@given(u64, st.integers(-(2**31) + 1, 2**31 - 1))
def test_expand32_recovers_values_within_half_the_32_bit_circle(old, delta):
    cur = dsn_add(old, delta)
    assert expand32(old, cur & 0xFFFFFFFF) == cur
