"""Pure statistics for verdicts that hold twice: exact intervals, comparisons and sequential decisions.

Stdlib only (``math``, ``random``, ``decimal``): the plugin must not need scipy or numpy at run time. The
special functions are implemented here and checked against scipy in ``tests/unit/test_inference.py``:

- the regularized incomplete beta ``I_x(a, b)``: continued fraction (Numerical Recipes ``betacf``, modified
  Lentz) times the prefactor ``x^a (1-x)^b / B(a, b)`` computed with Loader's saddle-point binomial density
  (``stirlerr``/``bd0``), which keeps full relative precision for counts up to 10^9 where ``lgamma``
  differences would lose eight digits;
- its inverse by safeguarded Newton steps on ``log x`` (the tails are near power laws there, so Newton is close
  to linear), always solving for the root that is <= 1/2 so that both ``x`` and ``1 - x`` are accurate.

On top: Clopper-Pearson intervals, the conditional binomial test for two Poisson rates, Welch's t interval,
a percentile bootstrap of a quantile difference, one verdict word, and ``SequentialRate``: a rate SLO decided
as early as the data allow and still valid at 95 % under optional stopping.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from statistics import NormalDist
from typing import Any, Literal

from pytest_wsgi502.config.values import MAX_COUNT, ConfigError, number, shown

_LN_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_EPS = 1e-16
_FPMIN = 1e-300
_TINY_X = 1e-300  # lowest root the quantile solver reports (below it every tail here is 0 in doubles)


# ---------------------------------------------------------------------------------------------------------------
# special functions


def _stirlerr(z: float) -> float:
    """ln Gamma(z+1) - ((z+1/2) ln z - z + ln sqrt(2 pi)): the error of Stirling's formula (Loader 2000).

    The series is used from z > 15 (its terms fall below 1e-17 there); below, lgamma's magnitude is small, so
    the subtraction loses nothing that matters."""
    if z <= 15.0:
        return math.lgamma(z + 1.0) - (z + 0.5) * math.log(z) + z - _LN_SQRT_2PI
    zz = z * z
    s0, s1, s2, s3, s4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188
    if z > 500:
        return (s0 - s1 / zz) / z
    if z > 80:
        return (s0 - (s1 - s2 / zz) / zz) / z
    if z > 35:
        return (s0 - (s1 - (s2 - s3 / zz) / zz) / zz) / z
    return (s0 - (s1 - (s2 - (s3 - s4 / zz) / zz) / zz) / zz) / z


def _bd0(x: float, m: float) -> float:
    """x ln(x/m) + m - x without cancellation when x is close to m (Loader's deviance term)."""
    if abs(x - m) < 0.1 * (x + m):
        v = (x - m) / (x + m)
        s = (x - m) * v
        ej = 2 * x * v
        v2 = v * v
        for j in range(1, 1000):
            ej *= v2
            s1 = s + ej / (2 * j + 1)
            if s1 == s:
                return s1
            s = s1
        return s
    return x * math.log(x / m) + m - x


def _log_dbinom(x: float, n: float, p: float, q: float) -> float:
    """ln of C(n, x) p^x q^(n-x) for real 0 <= x <= n (q = 1 - p given accurately): Loader's saddle point."""
    if p == 0.0:
        return 0.0 if x == 0 else -math.inf
    if q == 0.0:
        return 0.0 if x == n else -math.inf
    if x == 0:
        return n * math.log1p(-p) if p < 0.5 else n * math.log(q)
    if x == n:
        return n * math.log(p) if p > 0.5 else n * math.log1p(-q)
    lc = _stirlerr(n) - _stirlerr(x) - _stirlerr(n - x) - _bd0(x, n * p) - _bd0(n - x, n * q)
    lf = math.log(2 * math.pi) + math.log(x) + math.log1p(-x / n)
    return lc - 0.5 * lf


def _log_prefactor(a: float, b: float, x: float, y: float) -> float:
    """ln of x^a y^b / B(a, b) (y = 1 - x): a b / (a + b) times the binomial density at a of a + b trials."""
    return math.log(a) + math.log(b) - math.log(a + b) + _log_dbinom(a, a + b, x, y)


def _betacf(a: float, b: float, x: float, y: float) -> float:
    """Continued fraction of I_x(a, b) (Numerical Recipes 6.4, modified Lentz); fast for x < (a+1)/(a+b+2).

    Its first term 1 - (a+b) x / (a+1) is written ((a+1) y - (b-1) x) / (a+1) with y = 1 - x: near the switch
    point and x close to 1 the textbook form cancels (2.6e-11 relative error at a = 10^6, b = 2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = (qap * y - (b - 1.0) * x) / qap
    d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
    h = d
    for m in range(1, 10_000_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
        c = 1.0 + aa / c
        c = c if abs(c) > _FPMIN else _FPMIN
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
        c = 1.0 + aa / c
        c = c if abs(c) > _FPMIN else _FPMIN
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def _ibeta(a: float, b: float, x: float, y: float) -> tuple[float, float, float]:
    """Both tails of the beta distribution at x: (I_x(a, b), 1 - I_x(a, b), ln(x^a y^b / B(a, b))), y = 1 - x.

    The tail the continued fraction computes is exact to rounding; the other is 1 minus it, so a tail is only
    ever tiny when it is the one computed directly."""
    if x <= 0.0:
        return 0.0, 1.0, -math.inf
    if y <= 0.0:
        return 1.0, 0.0, -math.inf
    lp = _log_prefactor(a, b, x, y)
    if x < (a + 1.0) / (a + b + 2.0):
        lower = _tail_sum(a, b, x, y) if _small_int(b) else math.exp(lp) * _betacf(a, b, x, y) / a
        return lower, 1.0 - lower, lp
    upper = _tail_sum(b, a, y, x) if _small_int(a) else math.exp(lp) * _betacf(b, a, y, x) / b
    return 1.0 - upper, upper, lp


_SUM_TERMS = 2000


def _small_int(v: float) -> bool:
    return v <= _SUM_TERMS and v == int(v)


def _tail_sum(a: float, b: float, x: float, y: float) -> float:
    """I_x(a, b) for a whole b <= 2000 as the finite binomial sum P(Binomial(a + b - 1, y) <= b - 1).

    Why: the continued fraction loses ~1e-16 * a of relative precision when a is huge and x near 1 (errors
    of 1e-10 at a = 10^7), exactly the Clopper-Pearson regime of a few errors in millions of requests. The sum
    has positive terms only, from the top one (Loader's density) down by the ratio of neighbours."""
    n = a + b - 1.0
    j = b - 1.0
    term = math.exp(_log_dbinom(j, n, y, x))
    total = term
    mode = n * y
    while j > 0 and term > 0.0:
        term *= j * x / ((n - j + 1.0) * y)
        total += term
        j -= 1.0
        if term < total * 1e-17 and j < mode:
            break
    return total


def _initial_guess(a: float, b: float, p: float) -> float:
    """Numerical Recipes ``invbetai``'s starting point for the lower-tail quantile p (Abramowitz-Stegun 26.5.22)."""
    if a >= 1.0 and b >= 1.0:
        pp = p if p < 0.5 else 1.0 - p
        t = math.sqrt(-2.0 * math.log(max(pp, 1e-300)))
        z = (2.30753 + t * 0.27061) / (1.0 + t * (0.99229 + t * 0.04481)) - t
        if p < 0.5:
            z = -z
        al = (z * z - 3.0) / 6.0
        h = 2.0 / (1.0 / (2.0 * a - 1.0) + 1.0 / (2.0 * b - 1.0))
        skew = (1.0 / (2.0 * b - 1.0) - 1.0 / (2.0 * a - 1.0)) * (al + 5.0 / 6.0 - 2.0 / (3.0 * h))
        w = z * math.sqrt(al + h) / h - skew
        return a / (a + b * math.exp(min(2.0 * w, 700.0)))
    lna, lnb = math.log(a / (a + b)), math.log(b / (a + b))
    t, u = math.exp(a * lna) / a, math.exp(b * lnb) / b
    w = t + u
    if p < t / w:
        return float((a * w * p) ** (1.0 / a))
    return 1.0 - float((b * w * (1.0 - p)) ** (1.0 / b))


def _solve_low(a: float, b: float, target: float, upper: bool) -> float:
    """The x in (0, 1/2] where the lower (or, if ``upper``, the upper) tail of Beta(a, b) equals ``target``.

    Safeguarded Newton on u = ln x: the bracket shrinks with every evaluation and a step that leaves it is
    replaced by a geometric bisection, so it converges even from a poor start."""
    lo, hi = _TINY_X, 0.5
    x = min(max(_initial_guess(a, b, 1.0 - target if upper else target), 1e-30), 0.5)
    log_t = math.log(target)
    for _ in range(400):
        lower, upp, lp = _ibeta(a, b, x, 1.0 - x)
        tail = upp if upper else lower
        if tail <= 0.0:  # underflow: below the root for a lower tail, above it for an upper tail
            if upper:
                hi = x
            else:
                lo = x
            x = math.sqrt(lo) * math.sqrt(hi)
            continue
        g = math.log(tail) - log_t
        if (g < 0) != upper:  # the tail grows with x for a lower tail, falls for an upper one
            lo = x
        else:
            hi = x
        slope = math.exp(lp - math.log1p(-x) - math.log(tail))  # d ln(tail) / d ln x, in magnitude
        step = (g if upper else -g) / slope if slope > 0.0 else math.nan
        new = x * math.exp(max(min(step, 50.0), -50.0)) if math.isfinite(step) else math.nan
        if not (lo < new < hi):
            new = math.sqrt(lo) * math.sqrt(hi) if hi > 4 * lo else 0.5 * (lo + hi)  # no underflow of lo * hi
        if abs(new - x) <= 2e-16 * x or hi - lo <= 4e-16 * hi:
            return new
        x = new
    return x


def _beta_quantile(a: float, b: float, target: float, upper: bool = False) -> tuple[float, float]:
    """(x, 1 - x), both to full relative precision, where the lower (``upper``: upper) tail of Beta(a, b) at x
    is ``target``. The root is found as the one of x, 1 - x that is <= 1/2 (Beta(b, a) mirrors Beta(a, b))."""
    lower_half, upper_half, _ = _ibeta(a, b, 0.5, 0.5)
    at_half = upper_half if upper else lower_half
    if (at_half >= target) != upper or at_half == target:
        x = _solve_low(a, b, target, upper)
        return x, 1.0 - x
    y = _solve_low(b, a, target, not upper)
    return 1.0 - y, y


def _t_ppf_two_sided(alpha: float, df: float) -> float:
    """t such that P(|T| > t) = alpha for Student's t with df degrees of freedom (df may be fractional).

    T^2/(df + T^2) is Beta(1/2, df/2), so t = sqrt(df y / (1 - y)) with y that beta's upper alpha quantile."""
    y, x = _beta_quantile(0.5, df / 2.0, alpha, upper=True)
    return math.sqrt(df * y / x)


def t_ppf(prob: float, df: float) -> float:
    """Quantile of Student's t (the inverse of its CDF), from the incomplete beta as in ``_t_ppf_two_sided``."""
    if not 0.0 < prob < 1.0 or not df > 0:
        raise ConfigError(f"t quantile needs 0 < prob < 1 and df > 0, got prob={shown(prob)} df={shown(df)}")
    if prob == 0.5:
        return 0.0
    centre = abs(prob - 0.5)  # exact near the centre, where 1 - prob would round away the digits that matter
    if centre < 0.25:
        y, x = _beta_quantile(0.5, df / 2.0, 2.0 * centre)
        t = math.sqrt(df * y / x)
    else:
        t = _t_ppf_two_sided(2.0 * min(prob, 1.0 - prob), df)
    return t if prob > 0.5 else -t


def binom_pmf(k: int, n: int, p: float) -> float:
    """P(X = k) for X ~ Binomial(n, p), by Loader's saddle-point formula (exact to ~1e-15 relative)."""
    if k < 0 or k > n:
        return 0.0
    return math.exp(_log_dbinom(k, n, p, 1.0 - p))


def binom_cdf(k: int, n: int, p: float) -> tuple[float, float]:
    """(P(X <= k), P(X > k)) for X ~ Binomial(n, p): the tails of Beta(k + 1, n - k) at p, swapped."""
    if k < 0:
        return 0.0, 1.0
    if k >= n:
        return 1.0, 0.0
    lower, upper, _ = _ibeta(k + 1.0, float(n - k), p, 1.0 - p)
    return upper, lower


# ---------------------------------------------------------------------------------------------------------------
# validation


def _count(value: Any, what: str) -> int:
    return int(number(value, what, 0, MAX_COUNT, integer=True))


def _conf(conf: Any) -> float:
    value = float(number(conf, "confidence", 0.0, 1.0, lo_open=True))
    if value >= 1.0:
        raise ConfigError(f"confidence must be > 0 and < 1 (0.95 for 95 %), got {shown(conf)}")
    return value


def _counts(k: Any, n: Any) -> tuple[int, int]:
    k, n = _count(k, "count of events"), _count(n, "number of trials")
    if k > n:
        raise ConfigError(f"count of events ({k}) must not exceed the number of trials ({n})")
    return k, n


# ---------------------------------------------------------------------------------------------------------------
# one proportion


def binom_interval(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a proportion seen as k events in n trials.

    Why exact: error rates here are tiny (0-10 errors in 10^4-10^7 requests), where normal approximations
    (Wald, even Wilson) undercover. The bounds are beta quantiles: lo = B(alpha/2; k, n-k+1),
    hi = B(1-alpha/2; k+1, n-k). n = 0 gives (0, 1)."""
    k, n = _counts(k, n)
    half = (1.0 - _conf(conf)) / 2.0
    if n == 0:
        return 0.0, 1.0
    return _lower_bound(k, n, half), _upper_bound(k, n, half)


def binom_upper(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided exact (Clopper-Pearson) upper bound: the largest rate not refuted at ``conf`` by k in n.

    ``slo.error_rate_upper_bound`` is its Poisson approximation (rule of three for k = 0); this is exact."""
    k, n = _counts(k, n)
    alpha = 1.0 - _conf(conf)
    return 1.0 if n == 0 else _upper_bound(k, n, alpha)


def _lower_bound(k: int, n: int, alpha: float) -> float:
    """p with P(X >= k | p) = alpha: the alpha quantile of Beta(k, n - k + 1); closed forms at k = 0, 1, n."""
    if k == 0:
        return 0.0
    if k == n:
        return math.exp(math.log(alpha) / n)
    if k == 1:
        return -math.expm1(math.log1p(-alpha) / n)
    return _beta_quantile(float(k), float(n - k + 1), alpha)[0]


def _upper_bound(k: int, n: int, alpha: float) -> float:
    """p with P(X <= k | p) = alpha: the upper alpha quantile of Beta(k + 1, n - k); closed forms at 0, n-1, n."""
    if k == n:
        return 1.0
    if k == 0:
        return -math.expm1(math.log(alpha) / n)
    if k == n - 1:
        return math.exp(math.log1p(-alpha) / n)
    return _beta_quantile(float(k + 1), float(n - k), alpha, upper=True)[0]


# ---------------------------------------------------------------------------------------------------------------
# two rates


def binom_test_two_sided(k: int, n: int, p: float) -> float:
    """Exact two-sided binomial test p-value: the probability of outcomes no more likely than k (as
    ``scipy.stats.binomtest``: densities within a relative 1e-7 of k's count as equally likely)."""
    if n == 0 or k == p * n:
        return 1.0
    d = binom_pmf(k, n, p) * (1.0 + 1e-7)
    if k < p * n:
        # first j >= ceil(p n) with pmf(j) <= d; the density falls from there to n
        lo, hi = math.ceil(p * n), n + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if binom_pmf(mid, n, p) <= d:
                hi = mid
            else:
                lo = mid + 1
        total = binom_cdf(k, n, p)[0] + binom_cdf(lo - 1, n, p)[1]
    else:
        # last j <= floor(p n) with pmf(j) <= d; the density rises from 0 to there
        lo, hi = -1, math.floor(p * n)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if binom_pmf(mid, n, p) <= d:
                lo = mid
            else:
                hi = mid - 1
        total = binom_cdf(lo, n, p)[0] + binom_cdf(k - 1, n, p)[1]
    return min(1.0, total)


def rate_ratio(x1: int, n1: float, x2: int, n2: float, conf: float = 0.95) -> dict[str, Any]:
    """Ratio of two event rates (x1/n1) / (x2/n2), x events over n requests each, as Poisson counts.

    Method: the conditional binomial test. Given x1 + x2, x1 ~ Binomial(x1 + x2, n1 r / (n1 r + n2)) with r
    the rate ratio, whatever the common rate (which cancels). The exact interval for r is the Clopper-Pearson
    interval of that proportion, mapped by r = p / (1 - p) * n2 / n1; the p-value is the exact two-sided
    test of r = 1. No events on either side: the ratio is undefined (None), the interval (0, inf), p = 1.
    An interval bound of ``math.inf`` means "no upper limit" (no event on side 2)."""
    x1, x2 = _count(x1, "events of side 1"), _count(x2, "events of side 2")
    n1 = float(number(n1, "exposure of side 1", 0, MAX_COUNT, lo_open=True))
    n2 = float(number(n2, "exposure of side 2", 0, MAX_COUNT, lo_open=True))
    alpha = 1.0 - _conf(conf)
    method = "conditional binomial (exact)"
    m = x1 + x2
    if m == 0:
        return {"ratio": None, "lo": 0.0, "hi": math.inf, "p": 1.0, "method": method}
    scale = n2 / n1
    ratio = math.inf if x2 == 0 else (x1 / n1) / (x2 / n2)
    half = alpha / 2.0
    # p's lower bound l1 and 1 - (p's upper bound) l2 are both lower bounds, each accurate to full precision
    l1 = _lower_bound(x1, m, half)
    l2 = _lower_bound(x2, m, half)
    lo = 0.0 if l1 == 0.0 else l1 / _upper_bound(x2, m, half) * scale  # 1 - l1 is x2's upper bound
    hi = math.inf if l2 == 0.0 else _upper_bound(x1, m, half) / l2 * scale
    p = binom_test_two_sided(x1, m, n1 / (n1 + n2))
    return {"ratio": ratio, "lo": lo, "hi": hi, "p": p, "method": method}


def quasi_poisson_chi2(groups: Iterable[Sequence[tuple[int, int]]], count_empty: bool = False) -> tuple[float, int]:
    """Pearson chi-square of each group's (events, trials) points around that group's own rate, and its degrees
    of freedom, pooled over the groups (McCullagh & Nelder, Generalized Linear Models, 2nd ed., sec. 4.5). A group
    with fewer than 2 points with trials adds nothing, nor does one whose every trial is an event. A group with no
    event adds nothing either, or, with ``count_empty``, its points - 1 degrees of freedom at zero chi-square: a
    fitted rate of 0 fits it exactly, as a quasi-Poisson GLM (R's ``glm(family = quasipoisson)``) counts it."""
    chi2, df = 0.0, 0
    for group in groups:
        pts = [(int(x), int(n)) for x, n in group if int(n) > 0]
        x_sum, n_sum = sum(p[0] for p in pts), sum(p[1] for p in pts)
        if len(pts) < 2:
            continue
        if x_sum == 0:
            df += len(pts) - 1 if count_empty else 0
            continue
        rate = x_sum / n_sum
        if rate >= 1.0:  # every trial an event: no spread to measure
            continue
        chi2 += math.fsum((x - n * rate) ** 2 / (n * rate) for x, n in pts)
        df += len(pts) - 1
    return chi2, df


def quasi_poisson_dispersion(groups: Iterable[Sequence[tuple[int, int]]]) -> float | None:
    """How much more the event counts vary than independent events would: ``quasi_poisson_chi2`` over its degrees
    of freedom, at least 1. A group with no event or fewer than 2 points with trials adds nothing; None when no
    group adds anything.

    The points are repeats of a cell, or the per-second windows of one run: 502s that come in bursts (a joint
    recycle: no error for 10 s, then a hundred in one second) give a dispersion near the burst size, and a test
    on the counts divided by it weighs each burst about once instead of a hundred times."""
    chi2, df = quasi_poisson_chi2(groups)
    return max(1.0, chi2 / df) if df else None


def estimated_dispersion(chi2: float, df: int, conf: float = 0.95) -> float:
    """The dispersion to divide counts by when it is itself estimated on ``df`` degrees of freedom: chi2 / df
    times (t_df / z)^2 at the two-sided ``conf``, at least 1.

    Dividing by chi2 / df as if it were known treats the test on the effective counts as a z-test; with the
    dispersion estimated from a few repeats the right reference is Student's t on its degrees of freedom (the
    quasi-likelihood F-test with one numerator df). Measured by simulation (5 repeats a side drawn alike,
    negative binomial like seed-unix's bursts, 3,000 pairs a shape): dividing by chi2 / df gave `better` or
    `worse` in 7.2-8.0 %, not 5 %; widened this way (with ``count_empty`` degrees of freedom), 4.1-4.2 %."""
    conf = _conf(conf)
    if df < 1:
        raise ConfigError(f"an estimated dispersion needs at least 1 degree of freedom, got {shown(df)}")
    q = 0.5 + conf / 2.0
    widen = (t_ppf(q, df) / NormalDist().inv_cdf(q)) ** 2
    return max(1.0, chi2 / df * widen)


def effective_counts(events: int, trials: int, dispersion: float | None) -> tuple[int, int]:
    """(events, trials) divided by the dispersion (quasi-Poisson effective counts), rounded, events <= trials;
    unchanged for no dispersion or 1."""
    events, trials = _counts(events, trials)
    if not dispersion or dispersion <= 1.0:
        return events, trials
    n = max(1, round(trials / dispersion)) if trials else 0
    return min(n, round(events / dispersion)), n


# ---------------------------------------------------------------------------------------------------------------
# means (req/s over repeats)


def _mean_var(values: Sequence[float], what: str) -> tuple[float, float, int]:
    xs = [float(number(v, what, -math.inf, math.inf)) for v in values]
    n = len(xs)
    if n == 0:
        raise ConfigError(f"{what} needs at least one value")
    mean = math.fsum(xs) / n
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else math.nan
    return mean, var, n


def mean_interval(values: Sequence[float], conf: float = 0.95) -> dict[str, Any]:
    """Student's t interval of one mean: mean +- t(1-alpha/2, n-1) s / sqrt(n).

    Why t: a handful of repeats (3-5) per cell, whose spread is unknown. One value has no spread: lo, hi and
    half are None then."""
    alpha = 1.0 - _conf(conf)
    mean, var, n = _mean_var(values, "mean_interval")
    if n < 2:
        return {"mean": mean, "lo": None, "hi": None, "half": None, "n": n, "method": "t interval"}
    half = _t_ppf_two_sided(alpha, n - 1.0) * math.sqrt(var / n) if var > 0 else 0.0
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "half": half, "n": n, "method": "t interval"}


def mean_diff(a: Sequence[float], b: Sequence[float], conf: float = 0.95) -> dict[str, Any]:
    """Welch's t interval for mean(a) - mean(b), with Welch-Satterthwaite degrees of freedom.

    Why Welch: two configurations need not share a variance (a saturated server is steadier than one that
    stalls); for repeats, the per-repeat means are independent where per-second windows are not. Needs two
    values a side. Both sides without spread give the point interval (diff, diff)."""
    alpha = 1.0 - _conf(conf)
    ma, va, na = _mean_var(a, "mean_diff side a")
    mb, vb, nb = _mean_var(b, "mean_diff side b")
    if na < 2 or nb < 2:
        raise ConfigError(f"mean_diff needs at least 2 values a side (repeats), got {na} and {nb}")
    diff = ma - mb
    sa, sb = va / na, vb / nb
    se2 = sa + sb
    method = "Welch t interval"
    if se2 == 0:
        return {"diff": diff, "lo": diff, "hi": diff, "half": 0.0, "df": math.inf, "method": method}
    ra, rb = sa / se2, sb / se2  # shares of the variance: no overflow or underflow of squared variances
    df = 1.0 / (ra * ra / (na - 1) + rb * rb / (nb - 1))
    half = _t_ppf_two_sided(alpha, df) * math.sqrt(se2)
    return {"diff": diff, "lo": diff - half, "hi": diff + half, "half": half, "df": df, "method": method}


def relative(diff: dict[str, Any], base_mean: float) -> dict[str, float | None]:
    """A difference (keys diff/lo/hi) in percent of the baseline's mean; None when the baseline is 0."""
    out: dict[str, float | None] = {}
    for key in ("diff", "lo", "hi"):
        value = diff.get(key)
        out[f"{key}_pct"] = None if value is None or not base_mean else 100.0 * value / base_mean
    return out


# ---------------------------------------------------------------------------------------------------------------
# quantiles (p50/p99 over per-second windows)


def _quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (Hyndman-Fan type 7, numpy's default)."""
    pos = (len(sorted_xs) - 1) * q
    i = math.floor(pos)
    if i + 1 >= len(sorted_xs):
        return float(sorted_xs[-1])
    return float(sorted_xs[i] + (sorted_xs[i + 1] - sorted_xs[i]) * (pos - i))


def quantile_diff_bootstrap(a_windows: Sequence[float], b_windows: Sequence[float], q: float,
                            conf: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap interval for quantile_q(a) - quantile_q(b), resampling each side with replacement.

    Deterministic (``random.Random(seed)``). Caveat: per-second windows of one run are autocorrelated (a stall
    spans seconds), so resampling them as if independent makes the interval too narrow; prefer repeats (one
    value per repeat) when there are any, and read a window-based verdict as indicative."""
    alpha = 1.0 - _conf(conf)
    q = float(number(q, "quantile", 0.0, 1.0))
    n_boot = int(number(n_boot, "n_boot", 100, 10_000, integer=True))
    xa = sorted(float(number(v, "window value", -math.inf, math.inf)) for v in a_windows)
    xb = sorted(float(number(v, "window value", -math.inf, math.inf)) for v in b_windows)
    if not xa or not xb:
        raise ConfigError(f"quantile_diff_bootstrap needs values on both sides, got {len(xa)} and {len(xb)}")
    rng = random.Random(seed)
    diffs = sorted(
        _quantile(sorted(rng.choices(xa, k=len(xa))), q) - _quantile(sorted(rng.choices(xb, k=len(xb))), q)
        for _ in range(n_boot)
    )
    return {"diff": _quantile(xa, q) - _quantile(xb, q), "lo": _quantile(diffs, alpha / 2),
            "hi": _quantile(diffs, 1 - alpha / 2), "n_boot": n_boot, "method": "percentile bootstrap"}


# ---------------------------------------------------------------------------------------------------------------
# verdicts


def verdict_word(lo: float | None, hi: float | None, higher_is_better: bool,
                 null: float = 0.0) -> Literal["better", "worse", "same"]:
    """One word from an interval of candidate - baseline (``null`` 0) or candidate / baseline (``null`` 1):
    the whole interval above the null is a higher candidate, below it a lower one; otherwise "same" (no
    detectable difference at the interval's confidence). A missing or NaN bound is "same"."""
    if lo is not None and not math.isnan(lo) and lo > null:
        return "better" if higher_is_better else "worse"
    if hi is not None and not math.isnan(hi) and hi < null:
        return "worse" if higher_is_better else "better"
    return "same"


# ---------------------------------------------------------------------------------------------------------------
# sequential decision (duration = "auto")

_PASS_GRID = ((0.0, 0.5), (0.5, 0.125), (0.25, 0.125), (0.1, 0.125), (0.01, 0.125))  # (q / L, weight)
_FAIL_GRID = (2.0, 5.0, 10.0, 50.0)  # q / L, equal weights; points >= 1 are dropped


def exceedance_limit(percentile: float) -> float:
    """L for a latency SLO ``pNN<X``: "the NN-th percentile is below X" is "the share of responses slower than
    X is below (100 - NN) %", a rate SLO that ``SequentialRate`` decides (p99 -> 0.01, p99.9 -> 0.001)."""
    value = number(percentile, "percentile", 0.0, 100.0, lo_open=True)
    if value >= 100:
        raise ConfigError(f"percentile must be > 0 and < 100, got {shown(percentile)}")
    try:
        return float((Decimal(100) - Decimal(repr(float(value)))) / Decimal(100))
    except InvalidOperation:  # pragma: no cover - repr of a finite float is always a valid Decimal
        return (100.0 - float(value)) / 100.0


def _logsumexp(terms: Sequence[float]) -> float:
    top = max(terms)
    if top == -math.inf:
        return top
    return top + math.log(math.fsum(math.exp(t - top) for t in terms))


class SequentialRate:
    """A rate SLO (``error_rate<L``) decided as soon as the data allow, valid under optional stopping.

    Method: two one-sided mixture likelihood-ratio test martingales and Ville's inequality (an "always-valid"
    test). Each request is x = 1 (error) or 0. For q < L, E_p[(q/L)^x ((1-q)/(1-L))^(1-x)] = 1 + (p-L)(q-L)/
    (L(1-L)) <= 1 whenever p >= L, so the product over requests and any fixed mixture of such products is a
    supermartingale under every p >= L, and P(ever >= 1/alpha) <= alpha (Ville): "pass" (p < L) when the
    mixture over q in {0 (weight 1/2), L/2, L/4, L/10, L/100} reaches 1/alpha. "fail" (p > L) mirrors it with
    q in {2L, 5L, 10L, 50L} (those < 1), under p <= L. Each side errs with probability <= alpha however often
    it is checked; the state is closed-form in (errors, n), so checking costs O(1) per look.

    ``comparison`` is the SLO's operator: for ``<`` and ``<=`` a pass proves the rate below L; for ``>`` and
    ``>=`` a pass proves it above. (The boundary p = L itself cannot be decided by any test.)"""

    def __init__(self, limit: float, alpha: float = 0.05, comparison: str = "<") -> None:
        self.limit = float(number(limit, "rate limit", 0.0, 1.0, lo_open=True))
        if self.limit >= 1.0:
            raise ConfigError(f"a sequential rate limit must be > 0 and < 1, got {shown(limit)}")
        self.alpha = float(number(alpha, "alpha", 0.0, 0.5, lo_open=True))
        if comparison not in ("<", "<=", ">", ">="):
            raise ConfigError(f"comparison must be one of < <= > >=, got {shown(comparison)}")
        self.comparison = comparison
        L = self.limit
        self._below = [(q * L, w) for q, w in _PASS_GRID]
        above = [q * L for q in _FAIL_GRID if q * L < 1.0] or [(1.0 + L) / 2.0]
        self._above = [(q, 1.0 / len(above)) for q in above]
        self._threshold = math.log(1.0 / self.alpha)
        self._last = (0, 0)
        self._decision: Literal["pass", "fail"] | None = None
        self.decided_at: int | None = None  # n at the decision

    def _log_mixture(self, grid: Sequence[tuple[float, float]], x: int, n: int) -> float:
        L = self.limit
        terms = []
        for q, w in grid:
            if q == 0.0:
                terms.append(math.log(w) - (n - x) * math.log1p(-L) if x == 0 else -math.inf)
                continue
            terms.append(math.log(w) + x * math.log(q / L) + (n - x) * (math.log1p(-q) - math.log1p(-L)))
        return _logsumexp(terms)

    def evidence(self, errors: int, n: int) -> tuple[float, float]:
        """(ln M_below, ln M_above): the log mixtures against p >= L and against p <= L; a side is proven when
        its value reaches ln(1/alpha)."""
        errors, n = _counts(errors, n)
        return self._log_mixture(self._below, errors, n), self._log_mixture(self._above, errors, n)

    def decide(self, errors: int, n: int) -> Literal["pass", "fail"] | None:
        """The decision the cumulative counts alone support (stateless; ``update`` keeps the first one)."""
        below, above = self.evidence(errors, n)
        below_proven, above_proven = below >= self._threshold, above >= self._threshold
        if self.comparison in ("<", "<="):
            return "pass" if below_proven else "fail" if above_proven else None
        return "pass" if above_proven else "fail" if below_proven else None

    def update(self, errors: int, n: int) -> Literal["pass", "fail"] | None:
        """Feed the cumulative counts (after every second); returns the decision, which never changes once made."""
        errors, n = _counts(errors, n)
        if errors < self._last[0] or n < self._last[1]:
            raise ValueError(f"cumulative counts went back: ({errors}, {n}) after {self._last}")
        self._last = (errors, n)
        if self._decision is None:
            self._decision = self.decide(errors, n)
            if self._decision is not None:
                self.decided_at = n
        return self._decision

    def decided(self) -> Literal["pass", "fail"] | None:
        return self._decision


def needed_n(limit: float, alpha: float = 0.05) -> int:
    """The number of clean requests (0 errors) after which ``SequentialRate`` decides ``rate<limit`` passes.

    Never below the fixed-n exact bound ln(alpha)/ln(1-L) (~ ln(1/alpha)/L, 2,996 for 1e-3): the mixture is at
    most (1-L)^-n with no errors; and at most ln(2/alpha)/-ln(1-L), where its q = 0 half alone gets there.
    At alpha = 0.05: 322 for L = 1e-2, 3,228 for 1e-3, 32,286 for 1e-4 (one error: 7,267 for 1e-3)."""
    seq = SequentialRate(limit, alpha)
    lo = max(1, math.floor(math.log(seq.alpha) / math.log1p(-seq.limit)))
    hi = math.ceil(math.log(2.0 / seq.alpha) / -math.log1p(-seq.limit)) + 1
    while seq.decide(0, hi) != "pass":  # pragma: no cover - the q = 0 component guarantees the bound
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if seq.decide(0, mid) == "pass":
            hi = mid
        else:
            lo = mid + 1
    return lo
