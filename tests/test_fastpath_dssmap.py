"""fastpath.dssmap.DssMap (RFC 8684 section 3.3.1 mappings) against its twin."""

from __future__ import annotations

import pytest
from fastpath.dssmap import DssMap, MappingConflict, MappingTableFull
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fastpath import reference as ref

M32, M64 = 2**32 - 1, 2**64 - 1

# --- what the kernel sends -------------------------------------------------


def test_kernel_mappings_from_trace() -> None:
    # kernel-1subflow-csum.pcap: MP_CAPABLE data maps SSN 1..3000 to IDSN+1..,
    # then DSS dsn=0x279180e785146520 ssn=3001 dll=3000 (three TCP segments).
    m = DssMap()
    m.add(1, 0x279180E785145968, 3000)
    m.add(3001, 0x279180E785146520, 3000)
    assert m.lookup(1) == (0x279180E785145968, 3000)
    assert m.lookup(1425) == (0x279180E785145968 + 1424, 3000 - 1424)
    assert m.lookup(6000) == (0x279180E785146520 + 2999, 1)
    assert m.lookup(6001) is None and m.lookup(0) is None
    # a segment repeating a mapping (the kernel repeats it on each segment)
    m.add(3001, 0x279180E785146520, 3000)
    assert len(m) == 2
    # one segment spanning both mappings translates into one DSN range
    assert m.translate(2849, 1576) == [(0x279180E785145968 + 2848, 1576)]


def test_conflicting_mapping_refused_and_table_unchanged() -> None:
    m = DssMap()
    m.add(100, 5000, 50)
    with pytest.raises(MappingConflict):
        m.add(120, 9999, 10)  # same subflow bytes, other DSN
    with pytest.raises(ValueError):  # MappingConflict is a ValueError
        m.add(50, 4900, 60)  # overlaps 100..110 with DSN 4950.., held 5000..
    assert m.entries() == [(100, 5000, 50)]
    m.add(140, 5040, 30)  # overlapping and consistent: extends
    assert m.entries() == [(100, 5000, 50), (150, 5050, 20)]


def test_ssn_wraps_modulo_2_32_and_dsn_modulo_2_64() -> None:
    m = DssMap()
    m.add(M32 - 9, M64 - 4, 20)
    assert m.lookup(M32) == (4, 11)  # DSN wrapped past 2**64
    assert m.lookup(3) == (8, 7)  # SSN wrapped past 2**32
    assert m.translate(M32 - 2, 8) == [(2, 8)]
    m.discard_before(2)
    assert m.lookup(M32) is None and m.lookup(2) == (7, 8)
    assert m.entries() == [(2, 7, 8)]


def test_translate_stops_at_unmapped_bytes() -> None:
    m = DssMap()
    m.add(1000, 10, 100)
    m.add(1100, 500, 100)  # next subflow bytes, DSN jumps (reinjection)
    m.add(1300, 900, 10)
    assert m.translate(1050, 300) == [(60, 50), (500, 100)]
    assert m.translate(1250, 10) == [] and m.translate(1000, 0) == []


def test_bounded() -> None:
    m = DssMap(max_entries=2)
    m.add(0, 0, 10)
    m.add(20, 20, 10)
    with pytest.raises(MappingTableFull):
        m.add(5, 5, 30)  # would need new entries for 10..20 and 30..35
    assert m.entries() == [(0, 0, 10), (20, 20, 10)]
    m.discard_before(10)  # the subflow consumed bytes before 10
    m.add(20, 20, 15)  # extends the held mapping by 30..35
    assert m.entries() == [(20, 20, 10), (30, 30, 5)]
    with pytest.raises(MappingTableFull):
        m.add(40, 40, 1)


def test_bad_arguments() -> None:
    m = DssMap()
    for args in [(-1, 0, 1), (0, 2**64, 1), (0, 0, 0), (2**32, 0, 1)]:
        with pytest.raises(ValueError):
            m.add(*args)
    with pytest.raises(ValueError):
        m.lookup(2**32)


# --- agreement with the twin ---------------------------------------------

ssn_near = st.integers(0, 600).map(lambda d: (M32 - 300 + d) & M32)  # straddles the wrap


class AgreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fast, self.slow = DssMap(max_entries=8), ref.DssMap(max_entries=8)

    def both(self, name: str, *args: int):  # noqa: ANN202
        try:
            a = getattr(self.fast, name)(*args)
        except ValueError as e:
            with pytest.raises(ValueError) as info:
                getattr(self.slow, name)(*args)
            assert type(info.value).__name__ == type(e).__name__
            return None
        assert a == getattr(self.slow, name)(*args)
        return a

    @rule(ssn=ssn_near, delta=st.integers(-3, 3), length=st.integers(1, 120))
    def add_consistent(self, ssn: int, delta: int, length: int) -> None:
        # mostly the "true" translation dsn = ssn + 2**64 - 200 (+ small conflicts)
        dsn = (ssn + (M64 - 200) + (delta if abs(delta) == 3 else 0)) & M64
        self.both("add", ssn, dsn, length)

    @rule(ssn=ssn_near, dsn=st.integers(0, M64), length=st.integers(1, 2**31 - 1))
    def add_any(self, ssn: int, dsn: int, length: int) -> None:
        self.both("add", ssn, dsn, length)

    @rule(ssn=st.sampled_from([-1, 0, M32, M32 + 1]), dsn=st.sampled_from([-1, 0, M64, M64 + 1]),
          length=st.sampled_from([-1, 0, 1, 2**31 - 1, 2**31]))
    def add_edges(self, ssn: int, dsn: int, length: int) -> None:
        # out-of-range arguments: the same ValueError from both, table unchanged
        self.both("add", ssn, dsn, length)

    @rule(ssn=ssn_near)
    def lookup(self, ssn: int) -> None:
        self.both("lookup", ssn)

    @rule(ssn=ssn_near, length=st.integers(0, 400))
    def translate(self, ssn: int, length: int) -> None:
        self.both("translate", ssn, length)

    @rule(ssn=ssn_near)
    def discard(self, ssn: int) -> None:
        self.both("discard_before", ssn)

    @invariant()
    def same_entries(self) -> None:
        assert self.fast.entries() == self.slow.entries()
        assert len(self.fast) == len(self.slow) <= 8


AgreeMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
test_fast_and_reference_agree = AgreeMachine.TestCase
