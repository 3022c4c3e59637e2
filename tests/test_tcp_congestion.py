"""Congestion control windows with numbers: NewReno (RFC 5681/3465/6582/6928)
and CUBIC (RFC 9438)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.tcp.congestion import (
    INFINITE_SSTHRESH,
    CongestionControl,
    initial_window,
    make_congestion,
    register_congestion,
)
from stack.tcp.congestion.cubic import Cubic, cubic_k, w_cubic
from stack.tcp.congestion.newreno import NewReno

MSS = 1000


def run_round(cc, now: float, rtt: float, per_ack: int = MSS) -> float:
    """One RTT of a cwnd-limited sender: a window of data is sent and acked in
    ``per_ack`` pieces spread evenly over the RTT. Returns the new time."""
    window = cc.cwnd
    n = max(1, window // per_ack)
    for i in range(n):
        cc.on_ack(per_ack, rtt, now + rtt * (i + 1) / n, window)
    return now + rtt


# ------------------------------------------------------------------ common
def test_initial_window_rfc6928():
    assert initial_window(1460) == 14600
    assert initial_window(1000) == 10000
    assert initial_window(9000) == 18000  # max(2*MSS, 14600) caps big MSS
    assert initial_window(1000, segments=4) == 4000
    assert NewReno(1460).cwnd == 14600
    assert NewReno(1000, iw_segments=3).cwnd == 3000
    assert NewReno(MSS).ssthresh == INFINITE_SSTHRESH


def test_registry():
    assert isinstance(make_congestion("newreno", MSS), NewReno)
    assert isinstance(make_congestion("Reno", MSS), NewReno)
    cubic = make_congestion("cubic", MSS, fast_convergence=False)
    assert isinstance(cubic, Cubic) and not cubic.fast_convergence
    assert isinstance(cubic, CongestionControl)
    with pytest.raises(ValueError):
        make_congestion("vegas", MSS)
    register_congestion("test-reno", lambda mss, **kw: NewReno(mss, iw_segments=2))
    assert make_congestion("test-reno", MSS).cwnd == 2000


def test_invalid_mss():
    with pytest.raises(ValueError):
        NewReno(0)


# ------------------------------------------------------------------ NewReno
@pytest.mark.parametrize("algo", ["newreno", "cubic"])
def test_slow_start_doubles_per_rtt(algo):
    cc = make_congestion(algo, MSS)
    now = 0.0
    seen = []
    for _ in range(4):
        now = run_round(cc, now, 0.1)
        seen.append(cc.cwnd // MSS)
    assert seen == [20, 40, 80, 160]


def test_slow_start_doubles_with_delayed_acks_thanks_to_abc():
    # RFC 3465 §2.2: one ACK per 2 segments, L = 2: still doubling.
    cc = NewReno(MSS)
    now = 0.0
    for _ in range(3):
        now = run_round(cc, now, 0.1, per_ack=2 * MSS)
    assert cc.cwnd == 80 * MSS


def test_abc_limits_stretch_acks_to_two_segments():
    # One ACK per 4 segments: +2 SMSS per ACK (L = 2), 1.5x per RTT.
    cc = NewReno(MSS, iw_segments=8)
    run_round(cc, 0.0, 0.1, per_ack=4 * MSS)
    assert cc.cwnd == 12 * MSS


def test_congestion_avoidance_adds_one_mss_per_rtt():
    cc = NewReno(MSS)
    cc.on_congestion_event(0.0, 40 * MSS)
    assert cc.ssthresh == 20 * MSS and cc.cwnd == 20 * MSS and cc.in_recovery
    cc.on_recovery_end(0.1)
    now = 0.1
    seen = []
    for _ in range(5):
        now = run_round(cc, now, 0.1)
        seen.append(cc.cwnd // MSS)
    assert seen == [21, 22, 23, 24, 25]


def test_ssthresh_after_loss_is_half_flight_at_least_two_mss():
    # RFC 5681 eq. (4)
    cc = NewReno(MSS)
    cc.on_congestion_event(0.0, 3 * MSS)
    assert cc.ssthresh == 2 * MSS
    cc2 = NewReno(MSS)
    cc2.on_congestion_event(0.0, 33_333)
    assert cc2.ssthresh == 16_666


def test_slow_start_crossing_ssthresh_counts_rest_for_avoidance():
    cc = NewReno(MSS)
    cc.cwnd, cc.ssthresh = 9_500, 10_000
    cc.on_ack(2 * MSS, 0.1, 0.0, 10_000)
    assert cc.cwnd == 10_000
    assert cc.bytes_acked == 1_500


def test_no_growth_in_recovery_or_when_not_cwnd_limited():
    cc = NewReno(MSS)
    cc.on_ack(MSS, 0.1, 0.0, 1_000)  # 1 KB in flight of a 10 KB window
    assert cc.cwnd == 10 * MSS
    cc.on_congestion_event(0.0, 10 * MSS)
    cc.on_ack(MSS, 0.1, 0.1, 10 * MSS)
    assert cc.cwnd == 5 * MSS


def test_rto_collapses_to_one_segment_then_slow_start_to_ssthresh():
    cc = NewReno(MSS)
    cc.cwnd = 40 * MSS
    cc.on_rto(0.0, 40 * MSS)
    assert cc.cwnd == MSS and cc.ssthresh == 20 * MSS and not cc.in_recovery
    now = 0.0
    seen = []
    for _ in range(7):
        now = run_round(cc, now, 0.1)
        seen.append(cc.cwnd // MSS)
    assert seen == [2, 4, 8, 16, 20, 21, 22]


def test_newreno_fast_recovery_inflation_and_partial_ack_deflation():
    # RFC 6582 §3.2 without SACK.
    cc = NewReno(MSS)
    cc.cwnd = 20 * MSS
    cc.on_congestion_event(0.0, 20 * MSS)
    cc.on_dupack(3)  # step 2: cwnd = ssthresh + 3*SMSS
    assert cc.cwnd == 13 * MSS
    cc.on_dupack()  # step 4: +SMSS per further dupack
    assert cc.cwnd == 14 * MSS
    cc.on_partial_ack(3 * MSS)  # step 5: -3000 + SMSS
    assert cc.cwnd == 12 * MSS
    cc.on_partial_ack(500)  # less than one SMSS: no add-back
    assert cc.cwnd == 11_500
    cc.on_recovery_end(1.0)  # full ACK, option (2)
    assert cc.cwnd == 10 * MSS and not cc.in_recovery
    cc.on_dupack()  # outside recovery: no effect
    assert cc.cwnd == 10 * MSS


def test_idle_restart_window():
    # RFC 5681 §4.1: cwnd = min(IW, cwnd)
    cc = NewReno(MSS)
    cc.cwnd = 50 * MSS
    cc.on_idle_restart(10.0)
    assert cc.cwnd == 10 * MSS
    cc.cwnd = 4 * MSS
    cc.on_idle_restart(20.0)
    assert cc.cwnd == 4 * MSS


def test_mss_change_keeps_segment_counts():
    cc = NewReno(1460)
    cc.on_congestion_event(0.0, 40 * 1460)
    cc.on_mss_change(1000)
    assert cc.cwnd == 20 * 1000 and cc.ssthresh == 20 * 1000 and cc.mss == 1000
    fresh = NewReno(536)
    fresh.on_mss_change(1460)
    assert fresh.ssthresh == INFINITE_SSTHRESH


# ------------------------------------------------------------------ CUBIC
def test_cubic_k_and_curve_formula():
    # RFC 9438 eq. (1), (2): W_max = 100, cwnd_epoch = 70 -> K = cbrt(75)
    k = cubic_k(100, 70)
    assert k == pytest.approx(75 ** (1 / 3)) and k == pytest.approx(4.2172, abs=1e-4)
    assert w_cubic(0, 100, k) == pytest.approx(70)
    assert w_cubic(k, 100, k) == pytest.approx(100)
    assert w_cubic(k + 2, 100, k) == pytest.approx(103.2)
    assert cubic_k(50, 60) == pytest.approx(-(25 ** (1 / 3)))


def test_cubic_multiplicative_decrease_and_fast_convergence():
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    cc.on_congestion_event(0.0, 100 * MSS)
    # RFC 9438 §4.6: ssthresh = cwnd * 0.7; cwnd = ssthresh
    assert cc.ssthresh == 70 * MSS and cc.cwnd == 70 * MSS and cc.w_max == 100
    cc.on_recovery_end(0.1)
    cc.cwnd = 80 * MSS
    cc.on_congestion_event(1.0, 80 * MSS)
    # §4.7: 80 < W_max = 100 -> W_max = 80 * (1 + 0.7) / 2 = 68
    assert cc.w_max == pytest.approx(68)
    assert cc.ssthresh == 56 * MSS

    slow = Cubic(MSS, fast_convergence=False)
    slow.cwnd = 100 * MSS
    slow.on_congestion_event(0.0, 100 * MSS)
    slow.on_recovery_end(0.1)
    slow.cwnd = 80 * MSS
    slow.on_congestion_event(1.0, 80 * MSS)
    assert slow.w_max == pytest.approx(80)


def test_cubic_ssthresh_floor_two_segments():
    cc = Cubic(MSS)
    cc.cwnd = 2 * MSS
    cc.on_congestion_event(0.0, 2 * MSS)
    assert cc.ssthresh == 2 * MSS and cc.cwnd == 2 * MSS


def _cubic_after_loss(w_max_segs: int, rtt: float) -> tuple[Cubic, float]:
    cc = Cubic(MSS)
    cc.cwnd = w_max_segs * MSS
    cc.on_congestion_event(0.0, cc.cwnd)
    cc.on_recovery_end(rtt)
    return cc, rtt


def test_cubic_window_follows_the_curve():
    # W_max = 1000 segments, RTT 100 ms: the Reno estimate stays far below
    # the cubic curve, so cwnd(t) tracks W_cubic(t) (it reaches the target
    # W_cubic(t + RTT) one RTT later).
    rtt = 0.1
    cc, now = _cubic_after_loss(1000, rtt)
    t0 = now
    k = cubic_k(1000, 700)
    checkpoints = [1.0, 3.0, k, 6.0, 9.0, 12.0]
    got = {}
    growth = []
    prev = cc.cwnd
    while now - t0 < 12.0 + 1e-9:
        now = run_round(cc, now, rtt, per_ack=2 * MSS)
        t = now - t0
        growth.append((t, cc.cwnd - prev))
        prev = cc.cwnd
        for cp in checkpoints:
            if cp not in got and t >= cp - 1e-9:
                got[cp] = (t, cc.cwnd / MSS)
    assert cc.k == pytest.approx(k)
    for cp, (t, w) in got.items():
        assert w == pytest.approx(w_cubic(t, 1000, k), rel=0.01), (cp, t, w)
    # Concave region (t < K): growth per RTT shrinks toward the plateau;
    # convex region (t > K): it accelerates.
    concave = [g for t, g in growth if 0.5 < t < k - 0.5]
    convex = [g for t, g in growth if t > k + 0.5]
    assert concave[0] > concave[len(concave) // 2] > concave[-1]
    assert convex[0] < convex[len(convex) // 2] < convex[-1]
    plateau = [g for t, g in growth if abs(t - k) < 0.3]
    assert max(plateau) < 0.01 * cc.cwnd


def test_cubic_reno_friendly_region():
    # Small window, short RTT: Reno would grow faster than the cubic curve,
    # so cwnd = W_est, growing alpha_cubic = 3*0.3/1.7 = 0.529 segments per RTT
    # until it reaches cwnd_prior (20), then 1 segment per RTT (RFC 9438 §4.3).
    rtt = 0.01
    cc, now = _cubic_after_loss(20, rtt)
    t0 = now
    assert cc.cwnd == 14 * MSS
    for _ in range(5):
        now = run_round(cc, now, rtt)
    assert cc.alpha_reno == pytest.approx(0.5294, abs=1e-4)
    assert cc.cwnd / MSS == pytest.approx(14 + 5 * 0.5294, abs=0.2)
    assert cc.cwnd / MSS > w_cubic(now - t0, 20, cc.k) + 2
    for _ in range(10):
        now = run_round(cc, now, rtt)
    assert cc._alpha == 1.0
    before = cc.cwnd
    for _ in range(3):
        now = run_round(cc, now, rtt)
    assert (cc.cwnd - before) / MSS == pytest.approx(3, abs=0.2)


def test_cubic_after_rto_uses_k_zero_and_current_window():
    # RFC 9438 §4.8
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    cc.on_rto(0.0, 100 * MSS)
    assert cc.cwnd == MSS and cc.ssthresh == 70 * MSS
    now = 0.0
    while cc.cwnd < cc.ssthresh:
        now = run_round(cc, now, 0.1)
    # The ACK that crossed ssthresh started the CA stage at cwnd = 70.
    assert cc.k == 0.0 and cc.w_max == pytest.approx(70)
    # W(t) = 70 + 0.4 t^3, convex from the start; the Reno estimate
    # (+0.53/RTT, then +1/RTT) leads for the first ~4 s, the curve after.
    t0 = cc.t_epoch
    for i in range(60):
        now = run_round(cc, now, 0.1)
        t = now - t0
        if i == 19:
            assert cc.cwnd / MSS == pytest.approx(cc.w_est, rel=0.01)
            assert cc.cwnd / MSS > 70 + 0.4 * t**3 + 3
    assert cc.cwnd / MSS == pytest.approx(70 + 0.4 * t**3, rel=0.01)
    assert cc.cwnd / MSS > cc.w_est + 40


def test_cubic_idle_restart_resets_epoch():
    cc, now = _cubic_after_loss(100, 0.1)
    now = run_round(cc, now, 0.1)
    assert cc.t_epoch is not None
    cc.on_idle_restart(now + 5)
    assert cc.t_epoch is None and cc.cwnd == 10 * MSS


def test_cubic_no_growth_during_recovery():
    cc = Cubic(MSS)
    cc.cwnd = 50 * MSS
    cc.on_congestion_event(0.0, 50 * MSS)
    cc.on_ack(10 * MSS, 0.1, 0.5, 35 * MSS)
    assert cc.cwnd == 35 * MSS


def test_on_loss_alias_and_rto_without_flight():
    cc = NewReno(MSS)
    cc.cwnd = 30 * MSS
    cc.on_loss(0.0, 30 * MSS)
    assert cc.in_recovery and cc.ssthresh == 15 * MSS
    cc2 = NewReno(MSS)
    cc2.cwnd = 30 * MSS
    cc2.on_rto(0.0)  # FlightSize unknown: taken as cwnd
    assert cc2.ssthresh == 15 * MSS and cc2.cwnd == MSS and cc2.rto_events == 1


# ------------------------------------------------------------------ HyStart++
def _hystart_run(rtts: list[float], **kw):
    """Slow start with HyStart++ (RFC 9406): round r has RTT rtts[r]; every
    ACK carries an RTT sample. Returns the windows (segments) after each round."""
    cc = NewReno(MSS, hystart=True, **kw)
    now = 0.0
    seen = []
    for rtt in rtts:
        window = cc.cwnd
        for i in range(window // MSS):
            cc.on_rtt_sample(rtt, now)
            cc.on_ack(MSS, 0.05, now + rtt * (i + 1) * MSS / window, window)
        now += rtt
        seen.append(cc.cwnd / MSS)
    return cc, seen


def test_hystart_off_by_default():
    cc = NewReno(MSS)
    assert cc.hystart is None
    now = 0.0
    for _ in range(5):
        now = run_round(cc, now, 0.05)
    assert cc.cwnd == 320 * MSS


def test_hystart_delay_increase_enters_css_then_avoidance():
    # RTT 50 ms for 4 rounds, then 70 ms: 70 >= 50 + max(4, min(50/8, 16)) ms.
    cc, seen = _hystart_run([0.05] * 4 + [0.07] * 7)
    assert seen[:4] == [20, 40, 80, 160]
    # Round 5: 8 samples at full slow start (+8), then CSS (+1/4 per MSS).
    assert seen[4] == pytest.approx(160 + 8 + 152 / 4)
    assert cc.hystart.exits == 1
    # CSS: 1/4 of slow start's growth, i.e. x1.25 per round, for CSS_ROUNDS = 5
    # rounds (the partial one included), then ssthresh = cwnd.
    assert seen[5] == pytest.approx(seen[4] * 1.25, abs=1)
    assert seen[8] == pytest.approx(seen[7] * 1.25, abs=1)
    assert cc.ssthresh == pytest.approx(seen[8] * MSS, abs=MSS)
    assert seen[9] - seen[8] < 1.5  # congestion avoidance: about +1 per RTT


def test_hystart_spurious_exit_resumes_slow_start():
    # A one-round RTT bump: the next round's minimum falls below the CSS
    # baseline, so slow start resumes (RFC 9406 §4.2).
    cc, seen = _hystart_run([0.05] * 4 + [0.07] + [0.05] * 2)
    assert cc.hystart.exits == 1 and not cc.hystart.in_css
    assert cc.ssthresh == INFINITE_SSTHRESH
    assert seen[5] == pytest.approx(2 * seen[4], rel=0.02)  # 8 ACKs at 1/4, then x2
    assert seen[6] == pytest.approx(2 * seen[5], rel=0.01)


def test_hystart_only_in_initial_slow_start():
    cc = NewReno(MSS, hystart=True)
    cc.cwnd = 40 * MSS
    cc.on_rto(0.0, 40 * MSS)  # ssthresh 20: standard slow start from now on
    now = 0.0
    for rtt in [0.05, 0.05, 0.09, 0.09]:
        now = run_round(cc, now, rtt)
    assert cc.hystart.exits == 0


def test_abc_limit_configurable():
    cc = NewReno(MSS, abc_l=None)  # no per-ACK limit (Linux)
    cc.on_ack(8 * MSS, 0.05, 0.0, cc.cwnd)
    assert cc.cwnd == 18 * MSS
    cc2 = make_congestion("cubic", MSS, abc_l=4)
    cc2.on_ack(8 * MSS, 0.05, 0.0, cc2.cwnd)
    assert cc2.cwnd == 14 * MSS


# ------------------------------------------------------------------ fuzz
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["ack", "loss", "end", "rto", "idle", "dup", "partial", "mss"]),
        st.integers(-10_000, 200_000),
        st.one_of(st.none(), st.floats(0.0, 5.0)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(algo=st.sampled_from(["newreno", "cubic", "lia", "olia", "balia"]), events=EVENTS)
def test_any_event_sequence_keeps_windows_sane(algo, events):
    import stack.mptcp.coupled  # noqa: F401  (registers the coupled names)

    cc = make_congestion(algo, MSS, hystart=True)
    now = 0.0
    for kind, n, rtt in events:
        now += 0.01
        if kind == "ack":
            cc.on_ack(n, rtt, now, max(0, n) + cc.cwnd)
        elif kind == "loss":
            cc.on_congestion_event(now, max(0, n))
        elif kind == "end":
            cc.on_recovery_end(now)
        elif kind == "rto":
            cc.on_rto(now, max(0, n))
        elif kind == "idle":
            cc.on_idle_restart(now)
        elif kind == "dup":
            cc.on_dupack(n % 4)
        elif kind == "partial":
            cc.on_partial_ack(n)
        elif kind == "mss":
            cc.on_mss_change(max(536, n % 9000))
        assert isinstance(cc.cwnd, int) and cc.cwnd >= cc.mss
        assert cc.ssthresh >= 2 * min(cc.mss, MSS) or cc.ssthresh == INFINITE_SSTHRESH
