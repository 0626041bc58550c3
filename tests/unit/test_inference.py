"""The statistics of issue 14 against known values: scipy (a dev dependency, never imported by the plugin),
closed forms, and exact decimal arithmetic where scipy itself is off by 1e-10."""

import ast
import math
import random
from decimal import Decimal, getcontext
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.metrics import inference as inf
from pytest_wsgi502.metrics.inference import (
    SequentialRate,
    binom_interval,
    binom_test_two_sided,
    binom_upper,
    exceedance_limit,
    mean_diff,
    mean_interval,
    needed_n,
    quantile_diff_bootstrap,
    rate_ratio,
    relative,
    t_ppf,
    verdict_word,
)
from pytest_wsgi502.slo import error_rate_upper_bound

REL = 1e-9
NS = (1, 2, 3, 5, 10, 30, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)


def _ks(n):
    return sorted({k for k in (0, 1, 2, 3, 5, 10, 100, n // 3, n // 2, n - 3, n - 2, n - 1, n) if 0 <= k <= n})


def _close(mine, ref, rel=REL):
    assert mine == pytest.approx(ref, rel=rel, abs=0 if ref else 1e-300), (mine, ref)


# --- Clopper-Pearson ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("conf", [0.95, 0.99, 0.5, 0.999])
def test_binom_interval_matches_scipy_beta_ppf(conf):
    alpha = (1 - conf) / 2
    for n in NS:
        for k in _ks(n):
            lo, hi = binom_interval(k, n, conf)
            _close(lo, 0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1))
            _close(hi, 1.0 if k == n else stats.beta.ppf(1 - alpha, k + 1, n - k))


def test_binom_interval_matches_scipy_binomtest_proportion_ci():
    """proportion_ci(method='exact') solves with brentq's absolute xtol 2e-12, so compare to 1e-11 absolute."""
    for n in (1, 7, 40, 1_000, 123_457, 10_000_000):
        for k in _ks(n):
            ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
            lo, hi = binom_interval(k, n)
            assert lo == pytest.approx(ci.low, abs=1e-11) and hi == pytest.approx(ci.high, abs=1e-11), (k, n)


def _exact_cdf(k, n, p):
    q = 1 - p
    term = total = q**n
    for j in range(1, k + 1):
        term = term * (n - j + 1) / j * p / q
        total += term
    return total


def _bisect(pred, lo, hi):
    for _ in range(110):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pred(mid) else (lo, mid)
    return lo


@pytest.mark.parametrize(("k", "n"), [(1, 10**6), (2, 10**7), (3, 10**7), (5, 10**7), (3, 10**6)])
def test_binom_interval_exact_to_rounding_where_scipy_is_not(k, n):
    """50-digit decimal roots of P(X >= k) = alpha/2 and P(X <= k) = alpha/2: ours within 1e-13; scipy's upper
    bound is off by up to 1.4e-10 here (the continued fraction near x = 1 cancels; we sum the binomial tail)."""
    getcontext().prec = 50
    half = Decimal("0.025")
    lo = _bisect(lambda p: 1 - _exact_cdf(k - 1, n, p) < half, Decimal(0), Decimal(k) / n)
    hi = _bisect(lambda p: _exact_cdf(k, n, p) > half, Decimal(k) / n, Decimal(1) / 10)
    mine_lo, mine_hi = binom_interval(k, n)
    assert abs(Decimal(mine_lo) / lo - 1) < Decimal("1e-13")
    assert abs(Decimal(mine_hi) / hi - 1) < Decimal("1e-13")


def test_binom_interval_closed_forms_and_edges():
    assert binom_interval(0, 0) == (0.0, 1.0)
    assert binom_interval(0, 1000)[0] == 0.0 and binom_interval(1000, 1000)[1] == 1.0
    assert binom_interval(0, 1000)[1] == pytest.approx(1 - 0.025 ** (1 / 1000), rel=1e-14)
    assert binom_interval(1000, 1000)[0] == pytest.approx(0.025 ** (1 / 1000), rel=1e-14)
    assert binom_interval(1, 1) == pytest.approx((0.025, 1.0), rel=1e-14)
    for bad in [(-1, 10), (11, 10), (1.5, 10), (1, 10, 1.0), (1, 10, 0), (1, 10, "x")]:
        with pytest.raises(ConfigError) as e:
            binom_interval(*bad)
        assert "\n" not in str(e.value)


def test_binom_upper_one_sided_and_consistent_with_the_slo_poisson_bound():
    for n in (10, 1_000, 7_000, 10**6):
        for k in (0, 1, 2, 5, min(n - 1, 50)):
            _close(binom_upper(k, n, 0.95), stats.beta.ppf(0.95, k + 1, n - k))
    assert binom_upper(5, 5) == 1.0 and binom_upper(0, 0) == 1.0
    # the table's "< x at 95 %" (slo.error_rate_upper_bound, Poisson) is this bound's approximation for small rates
    for k, n in [(0, 7_000), (0, 30_000), (1, 10_000), (3, 100_000), (20, 10**6)]:
        assert binom_upper(k, n) == pytest.approx(error_rate_upper_bound(k, n), rel=2e-3)
        assert binom_upper(k, n) <= error_rate_upper_bound(k, n)  # Poisson is the conservative one


# --- rate ratio -------------------------------------------------------------------------------------------------


def test_binom_test_two_sided_matches_scipy():
    rng = random.Random(7)
    cases = [(0, 10, 0.5), (5, 10, 0.5), (3, 15, 0.1), (1, 2000, 0.5), (999, 2000, 0.5), (7, 100, 0.5)]
    for _ in range(300):
        n = rng.randint(1, 5000)
        k = rng.randint(0, n) if rng.random() < 0.5 else rng.randint(0, min(n, 12))
        cases.append((k, n, rng.choice([0.5, 0.1, 1 / 3, 1e-3, rng.random()])))
    for k, n, p in cases:
        ref = stats.binomtest(k, n, p).pvalue
        if ref > 1e-250:  # below, scipy's own tail sums are off by a factor of 3 (denormals)
            _close(binom_test_two_sided(k, n, p), ref)


def test_rate_ratio_against_scipy():
    for x1, n1, x2, n2 in [(3, 1000, 10, 2000), (0, 5000, 12, 5000), (12, 5000, 0, 5000), (238, 30000, 618, 31000),
                           (1, 10**7, 1, 10**7), (50, 10**6, 20, 3 * 10**6), (400_000, 10**7, 500_000, 10**7)]:
        r = rate_ratio(x1, n1, x2, n2)
        m = x1 + x2
        assert r["method"] == "conditional binomial (exact)"
        ref = stats.binomtest(x1, m, n1 / (n1 + n2)).pvalue
        if ref > 1e-250:
            _close(r["p"], ref)
        a = 0.025
        plo = 0.0 if x1 == 0 else stats.beta.ppf(a, x1, m - x1 + 1)
        phi = 1.0 if x1 == m else stats.beta.ppf(1 - a, x1 + 1, m - x1)
        _close(r["lo"], plo / (1 - plo) * n2 / n1)
        if phi == 1.0:
            assert r["hi"] == math.inf and r["ratio"] == math.inf
        else:
            _close(r["hi"], phi / (1 - phi) * n2 / n1)
            _close(r["ratio"], (x1 / n1) / (x2 / n2), rel=1e-15)
        assert r["lo"] <= r["ratio"] <= r["hi"]


def test_rate_ratio_without_events_is_undefined_and_same():
    r = rate_ratio(0, 1000, 0, 50_000)
    assert r == {"ratio": None, "lo": 0.0, "hi": math.inf, "p": 1.0, "method": "conditional binomial (exact)"}
    assert verdict_word(r["lo"], r["hi"], higher_is_better=False, null=1.0) == "same"


def test_rate_ratio_tells_a_fix_from_noise():
    """The issue's seed-unix numbers: 0 502s against 618 in equal exposure is a real improvement; 238 vs 618 too;
    3 vs 4 is not."""
    fixed = rate_ratio(0, 20_000, 618, 20_000)
    assert fixed["hi"] < 0.01 and fixed["p"] < 1e-100
    assert verdict_word(fixed["lo"], fixed["hi"], higher_is_better=False, null=1) == "better"
    noise = rate_ratio(3, 20_000, 4, 20_000)
    assert noise["lo"] < 1 < noise["hi"] and noise["p"] == pytest.approx(1.0)
    assert verdict_word(noise["lo"], noise["hi"], higher_is_better=False, null=1) == "same"
    worse = rate_ratio(618, 20_000, 238, 20_000)
    assert verdict_word(worse["lo"], worse["hi"], higher_is_better=False, null=1) == "worse"


def test_rate_ratio_rejects_bad_exposure():
    for args in [(1, 0, 1, 10), (1, 10, 1, -5), (-1, 10, 1, 10), (1, 10, 1, float("nan"))]:
        with pytest.raises(ConfigError):
            rate_ratio(*args)


# --- t, Welch ---------------------------------------------------------------------------------------------------


def test_t_ppf_matches_scipy():
    for df in (1, 1.5, 2, 3, 4.7, 10, 30, 100, 1e3, 1e5, 1e7):
        for p in (0.6, 0.9, 0.95, 0.975, 0.995, 0.9995, 0.999999, 0.025, 1e-6, 0.75, 0.3):
            _close(t_ppf(p, df), stats.t.ppf(p, df))
    assert t_ppf(0.5, 3) == 0.0


def test_t_ppf_closed_forms_near_the_centre():
    """Cauchy (df = 1) and df = 2 have closed forms; there scipy is off by 4e-10 at p = 0.5000001, we are not."""
    for p in (0.5000001, 0.51, 0.7, 0.975, 0.9999):
        cauchy = math.tan(math.pi * (p - 0.5)) if p < 0.75 else 1 / math.tan(math.pi * (1 - p))  # no cancellation
        assert t_ppf(p, 1) == pytest.approx(cauchy, rel=1e-13)
        assert t_ppf(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-13)


def test_mean_diff_is_welch_as_scipy():
    rng = random.Random(3)
    samples = [([585.0, 499, 442], [889.0, 768, 653]), ([1.0, 2, 3.5, 4], [0.5, 0.7, 0.2])]
    samples += [([rng.gauss(500, 40) for _ in range(rng.randint(2, 9))],
                 [rng.gauss(520, rng.choice([5, 60])) for _ in range(rng.randint(2, 9))]) for _ in range(20)]
    for a, b in samples:
        for conf in (0.95, 0.9, 0.99):
            d = mean_diff(a, b, conf)
            ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(conf)
            _close(d["lo"], ref.low, rel=1e-9)
            _close(d["hi"], ref.high, rel=1e-9)
            assert d["method"] == "Welch t interval"


def test_mean_diff_edges():
    with pytest.raises(ConfigError, match="at least 2 values"):
        mean_diff([1.0], [1.0, 2.0])
    flat = mean_diff([5.0, 5.0], [3.0, 3.0, 3.0])
    assert (flat["lo"], flat["hi"]) == (2.0, 2.0)


def test_mean_interval_as_scipy_and_one_value():
    values = [585.0, 499.0, 442.0]
    m = mean_interval(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    _close(m["lo"], ref[0])
    _close(m["hi"], ref[1])
    assert mean_interval([42.0]) == {"mean": 42.0, "lo": None, "hi": None, "half": None, "n": 1,
                                     "method": "t interval"}
    with pytest.raises(ConfigError):
        mean_interval([])


def test_relative_in_percent():
    d = {"diff": 50.0, "lo": -10.0, "hi": 110.0}
    assert relative(d, 500.0) == {"diff_pct": 10.0, "lo_pct": -2.0, "hi_pct": 22.0}
    assert relative(d, 0.0) == {"diff_pct": None, "lo_pct": None, "hi_pct": None}


# --- bootstrap, verdict -----------------------------------------------------------------------------------------


def test_quantile_bootstrap_deterministic_and_sensible():
    rng = random.Random(11)
    a = [rng.gauss(100, 10) for _ in range(120)]
    b = [rng.gauss(100, 10) for _ in range(120)]
    shifted = [x + 30 for x in b]
    same = quantile_diff_bootstrap(a, b, 0.99)
    assert same == quantile_diff_bootstrap(a, b, 0.99)  # seeded
    assert same != quantile_diff_bootstrap(a, b, 0.99, seed=1)
    assert same["lo"] <= same["diff"] <= same["hi"] and same["method"] == "percentile bootstrap"
    assert verdict_word(same["lo"], same["hi"], higher_is_better=False) == "same"
    up = quantile_diff_bootstrap(shifted, b, 0.5)
    assert up["diff"] == pytest.approx(30.0) and up["lo"] > 20
    assert verdict_word(up["lo"], up["hi"], higher_is_better=False) == "worse"
    assert inf._quantile(sorted(a), 0.37) == pytest.approx(np.quantile(a, 0.37), rel=1e-14)
    with pytest.raises(ConfigError):
        quantile_diff_bootstrap(a, b, 0.5, n_boot=10_001)
    with pytest.raises(ConfigError):
        quantile_diff_bootstrap([], b, 0.5)


def test_verdict_word():
    assert verdict_word(1.0, 5.0, higher_is_better=True) == "better"
    assert verdict_word(1.0, 5.0, higher_is_better=False) == "worse"
    assert verdict_word(-5.0, -1.0, higher_is_better=True) == "worse"
    assert verdict_word(-5.0, -1.0, higher_is_better=False) == "better"
    assert verdict_word(-1.0, 1.0, higher_is_better=True) == "same"
    assert verdict_word(0.0, 3.0, higher_is_better=True) == "same"  # touching the null is not a difference
    assert verdict_word(0.2, 0.9, higher_is_better=False, null=1.0) == "better"
    assert verdict_word(0.0, math.inf, higher_is_better=False, null=1.0) == "same"
    assert verdict_word(None, None, higher_is_better=True) == "same"
    assert verdict_word(math.nan, math.nan, higher_is_better=True) == "same"


# --- sequential decision (duration = "auto") --------------------------------------------------------------------


def test_needed_n_for_clean_requests():
    """The issue's targets: error_rate<1e-3 after ~3,000 clean requests, error_rate<1e-4 after ~30,000."""
    assert needed_n(1e-3) == 3228
    assert needed_n(1e-4) == 32286
    assert needed_n(1e-2) == 322
    for limit in (0.3, 1e-2, 1e-3, 1e-4, 1e-5):
        n = needed_n(limit)
        fixed = math.log(0.05) / math.log1p(-limit)  # 0 in n shows p < L at 95 % from here with a fixed n
        assert fixed <= n <= math.log(2 / 0.05) / -math.log1p(-limit) + 1
        seq = SequentialRate(limit)
        assert seq.decide(0, n) == "pass" and seq.decide(0, n - 1) is None


def test_clean_cell_decided_by_feeding_every_second():
    seq = SequentialRate(1e-4)
    n, decision = 0, None
    while decision is None:
        n += 700  # one second of a 700 req/s cell
        decision = seq.update(0, n)
    assert decision == "pass" and seq.decided() == "pass" and seq.decided_at == 32_900
    assert seq.update(50, 40_000) == "pass"  # a decision stands


def test_error_stream_fails_within_a_few_hundred():
    at = []
    for seed in range(20):
        rng, seq, x = random.Random(seed), SequentialRate(1e-2), 0
        for n in range(1, 5_000):
            x += rng.random() < 0.05
            if seq.update(x, n):
                break
        assert seq.decided() == "fail"
        at.append(seq.decided_at)
    assert max(at) < 400, at


def test_greater_comparison_swaps_roles_and_bad_input():
    seq = SequentialRate(0.01, comparison=">=")
    assert seq.decide(0, 10_000) == "fail" and seq.decide(100, 1_000) == "pass"
    assert SequentialRate(0.01, comparison="<=").decide(0, 10_000) == "pass"
    with pytest.raises(ValueError, match="went back"):
        s = SequentialRate(0.01)
        s.update(1, 100)
        s.update(0, 200)
    for kwargs in [{"limit": 0}, {"limit": 1}, {"limit": 0.1, "alpha": 0.7}, {"limit": 0.1, "comparison": "=="}]:
        with pytest.raises(ConfigError):
            SequentialRate(**kwargs)
    assert SequentialRate(0.6).decide(20, 20) == "fail"  # no grid point above L below 1: (1 + L) / 2 stands in


def _thresholds(ns, ok):
    """Per n, the largest error count for which ``ok`` holds (it holds for every smaller one; -1 for none)."""
    out, t = [], -1
    for n in ns:
        while t + 1 <= n and ok(t + 1, int(n)):
            t += 1
        out.append(t)
    return np.array(out)


def test_optional_stopping_keeps_the_error_rate_and_the_naive_bound_does_not():
    """2,000 streams at exactly p = L = 1e-3, looked at every 100 requests up to 100,000 (1,000 looks). The
    sequential test's false passes stay <= alpha (measured 0.040; bound 0.06 = alpha + 2 sd of 2,000 paths); its
    false fails too. The fixed-n Clopper-Pearson bound checked at every look passes 27 % of them."""
    limit, step, looks, paths = 1e-3, 100, 1_000, 2_000
    ns = np.arange(1, looks + 1) * step
    seq = SequentialRate(limit)
    pass_at = _thresholds(ns, lambda x, n: seq.decide(x, n) == "pass")
    naive_at = _thresholds(ns, lambda x, n: binom_upper(x, n) < limit)
    fail_at = np.array([next(x for x in range(int(n) + 1) if seq.decide(x, int(n)) == "fail") for n in ns[::50]])
    counts = np.random.default_rng(0).binomial(step, limit, size=(paths, looks)).cumsum(axis=1)
    false_pass = (counts <= pass_at).any(axis=1).mean()
    false_fail = (counts[:, ::50] >= fail_at).any(axis=1).mean()
    naive = (counts <= naive_at).any(axis=1).mean()
    assert false_pass <= 0.06, false_pass
    assert false_fail <= 0.06, false_fail
    assert naive > 0.15, naive


def test_exceedance_limit():
    assert exceedance_limit(99) == 0.01
    assert exceedance_limit(99.9) == 0.001
    assert exceedance_limit(50) == 0.5
    assert exceedance_limit(99.99) == 0.0001
    for bad in (0, 100, -1, "p99", float("nan")):
        with pytest.raises(ConfigError):
            exceedance_limit(bad)


def test_module_is_pure_stdlib():
    """No scipy, numpy or pytest at run time: the plugin's core must import without the dev extra."""
    tree = ast.parse(Path(inf.__file__).read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots <= {"__future__", "math", "random", "collections", "decimal", "statistics", "typing",
                     "pytest_wsgi502"}, roots
