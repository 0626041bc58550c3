"""Property-based tests of the statistics in ``metrics/inference.py`` (issue 14) over the whole input range.

For any 0 <= k <= n <= 10^9: finite intervals that contain the point estimate, lo <= hi, wider at a higher
confidence; the rate ratio is symmetric (swapping the sides inverts the interval); Welch's interval flips sign
with the sides; the sequential test's evidence moves the right way with every clean request or error.

Deterministic (``derandomize=True``, no example database); a few hundred examples per property, a few seconds.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_wsgi502.metrics.inference import (
    SequentialRate,
    binom_interval,
    binom_upper,
    mean_diff,
    rate_ratio,
    t_ppf,
)

FUZZ = settings(derandomize=True, database=None, max_examples=500, deadline=None)
CONF = st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.999999])


@st.composite
def counts(draw, top=10**9):
    """(k, n) with n spread over every magnitude and k biased to the edges, where the closed forms switch."""
    n = draw(st.one_of(st.integers(0, 30), st.integers(0, 10**4), st.integers(0, top)))
    k = draw(st.one_of(st.sampled_from([0, 1, 2, n // 2, n - 2, n - 1, n]), st.integers(0, n)))
    return max(0, min(k, n)), n


@FUZZ
@given(counts(), CONF, CONF)
def test_binom_interval_contains_estimate_and_widens_with_confidence(kn, c1, c2):
    k, n = kn
    lo, hi = binom_interval(k, n, c1)
    assert math.isfinite(lo) and math.isfinite(hi)
    assert 0.0 <= lo <= hi <= 1.0
    if n:
        assert lo <= k / n <= hi and lo < hi
        assert (lo == 0.0) == (k == 0) and (hi == 1.0) == (k == n)
    lo2, hi2 = binom_interval(k, n, c2)
    if c2 >= c1:
        assert lo2 <= lo and hi2 >= hi
    up = binom_upper(k, n, c1)
    assert (k / n if n else 0.0) <= up <= 1.0
    assert (binom_upper(k, n, c2) >= up) == (c2 >= c1) or binom_upper(k, n, c2) == up


@FUZZ
@given(counts(), st.sampled_from([0.9, 0.95, 0.99]))
def test_one_sided_bound_is_the_two_sided_one_at_twice_the_tail(kn, conf):
    k, n = kn
    assert binom_upper(k, n, conf) == pytest.approx(binom_interval(k, n, 2 * conf - 1)[1], rel=1e-12)


def inv(v: float) -> float:
    return math.inf if v == 0 else 0.0 if v == math.inf else 1 / v


exposures = st.integers(1, 10**9)
events = st.one_of(st.integers(0, 20), st.integers(0, 10**6))


@FUZZ
@given(events, exposures, events, exposures, CONF)
def test_rate_ratio_is_symmetric(x1, n1, x2, n2, conf):
    r, s = rate_ratio(x1, n1, x2, n2, conf), rate_ratio(x2, n2, x1, n1, conf)
    assert 0.0 <= r["lo"] <= r["hi"] and 0.0 <= r["p"] <= 1.0
    if x1 + x2 == 0:
        assert r["ratio"] is None and (r["lo"], r["hi"], r["p"]) == (0.0, math.inf, 1.0)
        return
    assert r["lo"] <= r["ratio"] <= r["hi"]
    assert s["lo"] == pytest.approx(inv(r["hi"]), rel=1e-12)
    assert s["hi"] == pytest.approx(inv(r["lo"]), rel=1e-12)
    assert s["ratio"] == pytest.approx(inv(r["ratio"]), rel=1e-12)
    assert s["p"] == pytest.approx(r["p"], rel=1e-6, abs=1e-300)


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@FUZZ
@given(st.lists(finite, min_size=2, max_size=12), st.lists(finite, min_size=2, max_size=12), CONF)
def test_welch_interval_contains_the_difference_and_flips(a, b, conf):
    d, e = mean_diff(a, b, conf), mean_diff(b, a, conf)
    assert all(math.isfinite(d[k]) for k in ("diff", "lo", "hi"))
    assert d["lo"] <= d["diff"] <= d["hi"]
    assert e["lo"] == pytest.approx(-d["hi"], rel=1e-9, abs=1e-6)
    assert e["hi"] == pytest.approx(-d["lo"], rel=1e-9, abs=1e-6)


@FUZZ
@given(st.floats(1e-9, 1 - 1e-9), st.floats(0.5, 1e8), st.floats(1e-9, 1 - 1e-9))
def test_t_quantile_is_finite_and_monotone(p1, df, p2):
    t1, t2 = t_ppf(p1, df), t_ppf(p2, df)
    assert math.isfinite(t1) and math.isfinite(t2)
    lo, hi = (t1, t2) if p1 <= p2 else (t2, t1)
    assert lo <= hi + 1e-12 * abs(hi)  # monotone up to rounding (p a few ulps apart)
    # 1 - p1 rounds by up to 1e-16 absolute: 1e-7 of a 1e-9 tail, which moves t by 1e-7 / df relative
    assert t_ppf(1 - p1, df) == pytest.approx(-t1, rel=1e-6, abs=1e-12)


@FUZZ
@given(counts(top=10**8), st.sampled_from([1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.5]))
def test_sequential_evidence_moves_the_right_way(kn, limit):
    """One more clean request never weakens "below L"; one more error never weakens "above L"; and a pass
    stays a pass when an error count is lower."""
    k, n = kn
    seq = SequentialRate(limit)
    below, above = seq.evidence(k, n)
    assert not math.isnan(below) and not math.isnan(above)
    assert seq.evidence(k, n + 1)[0] >= below
    if k < n:
        assert seq.evidence(k + 1, n)[1] >= above
    if seq.decide(k, n) == "pass" and k:
        assert seq.decide(k - 1, n) == "pass"


_point = st.integers(0, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


@FUZZ
@given(st.lists(st.lists(_point, max_size=30), max_size=5))
def test_quasi_poisson_dispersion_is_none_or_at_least_one(groups):
    from pytest_wsgi502.metrics.inference import quasi_poisson_dispersion

    phi = quasi_poisson_dispersion(groups)
    assert phi is None or (math.isfinite(phi) and phi >= 1.0)
    informative = [g for g in groups if len([p for p in g if p[1]]) >= 2 and 0 < sum(x for x, _ in g)
                   < sum(n for _, n in g)]
    assert (phi is None) == (not informative)


@FUZZ
@given(st.integers(0, 10**6).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.one_of(st.none(), st.floats(0.0, 1e6, allow_nan=False)))
def test_effective_counts_stay_counts(point, phi):
    from pytest_wsgi502.metrics.inference import effective_counts

    x, n = effective_counts(*point, phi)
    assert 0 <= x <= n <= point[1] and (n > 0) == (point[1] > 0)
    if not phi or phi <= 1.0:
        assert (x, n) == point
