"""Schedulers: min-RTT with backup rules as Linux, round robin, redundant."""

from __future__ import annotations

import pytest

from stack.mptcp.scheduler import (
    SCHEDULERS,
    MinRtt,
    Redundant,
    RoundRobin,
    StaleTracker,
    SubflowState,
    candidates,
    is_stale,
    make_scheduler,
)

MSS = 1448


def sf(i, rtt, cwnd=10 * MSS, flight=0, **kw):
    return SubflowState(i, rtt, cwnd, flight, **kw)


def ids(chosen):
    return [s.id for s in chosen]


def test_lowest_rtt_with_window_space_wins():
    s = MinRtt()
    a, b = sf(1, 0.040), sf(2, 0.010)
    assert ids(s.select([a, b])) == [2]
    full_b = sf(2, 0.010, flight=10 * MSS)
    assert ids(s.select([a, full_b])) == [1]  # b's window is full: use a
    assert ids(s.select([sf(1, 0.04, flight=10 * MSS), full_b])) == []  # wait


def test_ties_and_missing_rtt_samples():
    s = MinRtt()
    assert ids(s.select([sf(3, 0.02), sf(2, 0.02)])) == [2]
    assert ids(s.select([sf(1, None), sf(2, 0.5)])) == [2]  # unsampled subflow last
    assert ids(s.select([sf(1, None)])) == [1]


def test_backup_only_when_no_other_subflow_is_usable():
    s = MinRtt()
    active, backup = sf(1, 0.100), sf(2, 0.001, backup=True)
    assert ids(s.select([active, backup])) == [1]  # backup ignored despite lower RTT
    full = sf(1, 0.100, flight=10 * MSS)
    assert ids(s.select([full, backup])) == []  # wait, do not spill onto the backup
    gone = sf(1, 0.100, usable=False)
    assert ids(s.select([gone, backup])) == [2]


def test_stale_subflows_are_skipped_unless_all_are_stale():
    s = MinRtt()
    stale, ok = sf(1, 0.001, stale=True), sf(2, 0.200)
    assert ids(s.select([stale, ok])) == [2]
    assert ids(s.select([stale, sf(2, 0.2, stale=True)])) == [1]
    # a stale non-backup subflow leaves the backup in charge
    assert ids(candidates([stale, sf(3, 0.3, backup=True)])) == [3]
    assert not is_stale(3) and is_stale(4) and is_stale(2, limit=2)


def test_joins_before_their_fourth_ack_are_not_usable():
    s = MinRtt()
    assert ids(s.select([sf(1, 0.05), sf(2, 0.001, usable=False)])) == [1]


def test_round_robin_rotates_over_subflows_with_space():
    s = RoundRobin()
    flows = [sf(1, 0.01), sf(2, 0.02), sf(3, 0.03)]
    assert [ids(s.select(flows))[0] for _ in range(4)] == [1, 2, 3, 1]
    flows[1] = sf(2, 0.02, flight=10 * MSS)
    assert [ids(s.select(flows))[0] for _ in range(3)] == [3, 1, 3]


def test_redundant_uses_every_candidate():
    s = Redundant()
    flows = [sf(1, 0.03), sf(2, 0.01), sf(3, 0.001, backup=True), sf(4, 0.02, flight=10 * MSS)]
    assert ids(s.select(flows)) == [2, 1]


def test_registry():
    assert isinstance(make_scheduler(), MinRtt)
    assert isinstance(make_scheduler("roundrobin"), RoundRobin)
    assert set(SCHEDULERS) >= {"default", "roundrobin", "redundant"}
    with pytest.raises(ValueError):
        make_scheduler("nope")


def test_min_rtt_fills_the_fast_path_first_in_a_toy_run():
    """Two paths, 10 ms and 40 ms, same window: while both have space the
    10 ms one is chosen; once it is full, the 40 ms one takes the rest."""
    s = MinRtt()
    flight = {1: 0, 2: 0}
    picks = []
    for _ in range(30):
        got = s.select([sf(1, 0.010, flight=flight[1]), sf(2, 0.040, flight=flight[2])])
        if not got:
            break
        flight[got[0].id] += MSS
        picks.append(got[0].id)
    assert picks == [1] * 10 + [2] * 10


def test_stale_tracker_marks_after_four_rtos_and_recovers():
    t = StaleTracker()
    assert [t.on_rto() for _ in range(5)] == [False, False, False, True, False]
    assert t.stale
    s = MinRtt()
    flows = [sf(1, 0.01, stale=t.stale), sf(2, 0.1)]
    assert ids(s.select(flows)) == [2]
    assert t.on_progress() and not t.stale and not t.on_progress()
