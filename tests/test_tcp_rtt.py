"""RFC 6298 retransmission timer arithmetic, with numbers."""

from __future__ import annotations

import math

import pytest

from stack.tcp.rtt import MinRttFilter, RttEstimator


def test_initial_rto_is_one_second_before_any_sample():
    # RFC 6298 §2.1
    est = RttEstimator()
    assert est.srtt is None and est.rttvar is None
    assert est.rto == 1.0


def test_first_sample_sets_srtt_and_half_rttvar():
    # RFC 6298 §2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + max(G, K*RTTVAR)
    est = RttEstimator(min_rto=0.001)
    est.on_sample(0.1, now=0.0)
    assert est.srtt == pytest.approx(0.1)
    assert est.rttvar == pytest.approx(0.05)
    assert est.rto == pytest.approx(0.1 + 4 * 0.05)


def test_subsequent_samples_use_alpha_eighth_beta_quarter():
    # RFC 6298 §2.3, RTTVAR updated with the old SRTT.
    est = RttEstimator(min_rto=0.001)
    est.on_sample(0.1, now=0.0)
    est.on_sample(0.3, now=1.0)
    rttvar = 0.75 * 0.05 + 0.25 * abs(0.1 - 0.3)  # 0.0875
    srtt = 0.875 * 0.1 + 0.125 * 0.3  # 0.125
    assert est.rttvar == pytest.approx(rttvar)
    assert est.srtt == pytest.approx(srtt)
    assert est.rto == pytest.approx(srtt + 4 * rttvar)  # 0.475


def test_clock_granularity_bounds_the_variance_term():
    # RFC 6298 §2.3: RTO = SRTT + max(G, K*RTTVAR); a steady RTT makes RTTVAR
    # tiny, then G (here 0.1 s) dominates.
    est = RttEstimator(min_rto=0.001, granularity=0.1)
    for i in range(200):
        est.on_sample(0.05, now=float(i))
    assert est.rttvar < 1e-6
    assert est.rto == pytest.approx(0.05 + 0.1)


def test_minimum_rto_applies_default_200ms_and_is_configurable():
    # RFC 6298 §2.4 (1 s in the RFC; 200 ms like Linux by default).
    est = RttEstimator()
    for i in range(50):
        est.on_sample(0.001, now=float(i))
    assert est.rto == pytest.approx(0.2)
    est1 = RttEstimator(min_rto=1.0)
    est1.on_sample(0.001, now=0.0)
    assert est1.rto == pytest.approx(1.0)


def test_maximum_rto_is_120s():
    est = RttEstimator()
    est.on_sample(100.0, now=0.0)  # 100 + 4*50 = 300 s -> clamped
    assert est.rto == 120.0


def test_backoff_doubles_until_max_and_new_sample_resets():
    # RFC 6298 §5.5 (back off) and Karn: keep the backed-off value until a
    # valid sample is taken, then recompute.
    est = RttEstimator()
    est.on_sample(0.1, now=0.0)  # rto 0.3
    assert est.rto == pytest.approx(0.3)
    seen = []
    for _ in range(12):
        est.on_timeout()
        seen.append(est.rto)
    assert seen[:4] == pytest.approx([0.6, 1.2, 2.4, 4.8])
    assert seen[-1] == 120.0 and max(seen) == 120.0
    est.on_sample(0.1, now=5.0)
    assert est.backoff == 0
    assert est.rto < 1.0


def test_backoff_before_first_sample_from_initial_rto():
    est = RttEstimator()
    est.on_timeout()
    est.on_timeout()
    assert est.rto == pytest.approx(4.0)


def test_handshake_timeout_falls_back_to_three_seconds():
    # RFC 6298 §5.7: SYN timed out and no sample: RTO = 3 s for data.
    est = RttEstimator()
    est.on_timeout()
    est.on_handshake_timeout_recovered()
    assert est.rto == pytest.approx(3.0)
    measured = RttEstimator()
    measured.on_sample(0.1, now=0.0)
    measured.on_handshake_timeout_recovered()
    assert measured.rto == pytest.approx(0.3)


def test_karn_rule():
    # RFC 6298 §3: no sample from a retransmitted segment...
    assert RttEstimator.may_sample(retransmitted=False)
    assert not RttEstimator.may_sample(retransmitted=True)
    # ... unless timestamps say which transmission was acknowledged (RFC 7323 §4).
    assert RttEstimator.may_sample(retransmitted=True, timestamps=True)
    assert RttEstimator.timestamp_sample(10.25, 10.0) == pytest.approx(0.25)
    assert RttEstimator.timestamp_sample(10.0, 10.5) == 0.0


def test_expected_samples_scales_gains():
    # RFC 7323 Appendix G: alpha' = alpha / ExpectedSamples.
    est = RttEstimator(min_rto=0.001)
    est.on_sample(0.1, now=0.0)
    est.on_sample(0.3, now=1.0, expected_samples=4)
    assert est.srtt == pytest.approx(0.1 + (0.3 - 0.1) / 32)
    assert est.rttvar == pytest.approx((1 - 1 / 16) * 0.05 + (1 / 16) * 0.2)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_invalid_sample_is_a_typed_error(bad):
    with pytest.raises(ValueError):
        RttEstimator().on_sample(bad, now=0.0)


def test_min_rtt_tracks_minimum_and_ages_out():
    est = RttEstimator(min_rtt_window=10.0)
    est.on_sample(0.05, now=0.0)
    est.on_sample(0.08, now=1.0)
    est.on_sample(0.03, now=2.0)
    est.on_sample(0.09, now=3.0)
    assert est.min_rtt == pytest.approx(0.03)
    # The path got longer: after the window the old minimum is forgotten.
    for t in range(4, 30):
        est.on_sample(0.2, now=float(t))
    assert est.min_rtt == pytest.approx(0.2)


def test_min_rtt_filter_keeps_second_best_when_best_expires():
    f = MinRttFilter(window=10.0)
    f.update(0.010, 0.0)
    f.update(0.030, 4.0)  # 2nd best, fresher
    f.update(0.050, 8.0)
    assert f.value == pytest.approx(0.010)
    assert f.update(0.060, 11.0) == pytest.approx(0.030)


def test_invalid_limits_rejected():
    with pytest.raises(ValueError):
        RttEstimator(min_rto=5.0, max_rto=1.0)
