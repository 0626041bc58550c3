"""--wsgi-repeat and baseline_cell: the interleaved order, the pooled result, the comparison, the table."""

import json

import pytest

from pytest_wsgi502.metrics.comparison import compare, summary
from pytest_wsgi502.metrics.repeats import interleaved, pool
from pytest_wsgi502.metrics.stats import Stats
from pytest_wsgi502.report.table import BASELINE_COLUMN, render_table
from pytest_wsgi502.schedule import Schedule


def run(name: str, ok: int, errors: int = 0, latency_ms: float = 10.0, seconds: float = 10.0, **extra):
    """A single run's result dict as cellrun makes it (the fields pool() and the table read)."""
    s = Stats()
    for i in range(ok):
        s.record(200, latency_ms / 1000 * (1 + (i % 10) / 10), 1000.0 + seconds * i / ok)
    for i in range(errors):
        s.record(502, 0.001, 1000.0 + seconds * i / max(errors, 1))
    s.started, s.ended = 1000.0, 1000.0 + seconds
    d = s.to_dict()
    d.update(name=name, histogram=s.histogram.encode().decode("ascii"), respawns=1, kills=0,
             attribution={"recycle": errors}, telemetry={"event_counts": {"recycle": 1}},
             slo={"passed": True, "failures": [], "invalid": [], "outcome": "pass"}, generator_bound=False,
             generator_bound_reason=None, aborted=None, lint=[], rendered={"server": {"text": "x"}})
    d.update(extra)
    return d


def test_rounds_alternate_so_a_linear_drift_hits_every_cell_alike():
    assert interleaved(["a", "b", "c"], 3) == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    order = interleaved(["a", "b"], 4)
    # positions (0-based) sum to the same for every cell: a drift linear in time adds the same to each
    assert sum(i for i, n in enumerate(order) if n == "a") == sum(i for i, n in enumerate(order) if n == "b")


def test_the_schedule_runs_lazily_in_order_and_keeps_a_failure_to_its_cell():
    calls = []

    def go(name):
        calls.append(name)
        if name == "b":
            raise ValueError("b does not start")
        return {"name": name, "n": calls.count(name)}

    s = Schedule(["a", "b", "c", "a"], 2, go)  # a name twice (a baseline) is scheduled once a round
    assert s.order == ["a", "b", "c", "c", "b", "a"]
    assert [r["n"] for r in s.runs("c")] == [1, 2] and calls == ["a", "b", "c", "c"]
    with pytest.raises(ValueError, match="b does not start"):
        s.runs("b")
    assert [r["n"] for r in s.runs("a")] == [1, 2]
    assert calls == ["a", "b", "c", "c", "a"]  # b was not started again after it failed
    with pytest.raises(KeyError):
        s.runs("zzz")


def test_pool_sums_counts_merges_histograms_and_gives_intervals():
    runs = [run("x", 1000, 2, seconds=10), run("x", 1100, 0, latency_ms=20, seconds=11), run("x", 900, 1)]
    p = pool(runs)
    assert p["requests"] == 3003 and p["error_count"] == 3 and p["status_counts"] == {"200": 3000, "502": 3}
    assert p["error_rate"] == pytest.approx(3 / 3003) and p["respawns"] == 3
    assert p["attribution"] == {"recycle": 3} and p["telemetry"]["event_counts"] == {"recycle": 3}
    assert len(p["repeats"]) == 3 and "rendered" not in p["repeats"][0] and "slo" not in p
    # latency from all requests: a third of them at 2x the latency moves p99 to the slow run's
    assert p["latency_ms"]["p99"] == pytest.approx(20 * 1.9, rel=0.01)
    rps = p["intervals"]["rps"]
    assert rps["n"] == 3 and rps["lo"] < rps["mean"] < rps["hi"] and p["rps"] == round(rps["mean"], 1)
    assert rps["values"] == [r["rps"] for r in runs]
    bound = pool([run("x", 10), run("x", 10, generator_bound=True, generator_bound_reason="starved")])
    assert bound["generator_bound"] and bound["generator_bound_reason"] == "repeat 2: starved"
    with pytest.raises(ValueError):
        pool([])


def test_compare_says_better_only_when_the_interval_excludes_no_difference():
    base = pool([run("base", 5000, 300), run("base", 5000, 250), run("base", 5000, 400)])
    fixed = pool([run("fixed", 5000, 0), run("fixed", 5000, 0), run("fixed", 5000, 0)])
    c = compare(fixed, base)
    err = c["metrics"]["error_rate"]
    assert err["verdict"] == "better" and err["hi"] < 1 and err["method"].startswith("conditional binomial")
    assert c["metrics"]["rps"]["verdict"] in ("better", "same", "worse")  # decided from 3 vs 3 repeats
    worse = compare(base, fixed)  # errors against none: the ratio has no upper bound, and JSON has no infinity
    assert worse["metrics"]["error_rate"]["verdict"] == "worse" and worse["metrics"]["error_rate"]["hi"] is None
    json.dumps(worse, allow_nan=False)
    # the same counts on both sides: no detectable difference
    same = compare(pool([run("a", 5000, 3)] * 3), pool([run("b", 5000, 4)] * 3))
    assert same["metrics"]["error_rate"]["verdict"] == "same"
    # one run a side: no word on req/s or latency (per-second windows are not independent)
    single = compare(run("a", 100, 0, intervals={}), run("b", 100, 0, intervals={}))
    assert single["metrics"]["rps"]["verdict"] is None and "repeat" in single["metrics"]["rps"]["method"]
    assert summary(c).startswith("err better")


def test_open_loop_req_s_gets_no_word():
    """Open loop at 317 req/s: 315 +- 0 against 317 +- 0 is "significant" and means nothing (seed-unix, 3 repeats:
    every cell came out "rps better" than the baseline that lost requests to 502s); latency still compares."""
    def paced(name, n, ms):
        return pool([run(name, n, latency_ms=ms, load={"mode": "open"}) for _ in range(3)])

    c = compare(paced("fixed", 3170, 5.0), paced("base", 3150, 50.0))
    assert c["metrics"]["rps"]["verdict"] is None and "offered rate" in c["metrics"]["rps"]["method"]
    assert c["metrics"]["p99"]["verdict"] == "better"
    assert "rps" not in summary(c)


def test_table_shows_plus_minus_and_the_baseline_column_only_when_used():
    plain = render_table([run("a", 100)])
    assert BASELINE_COLUMN not in plain[0] and "±" not in "\n".join(plain)
    base = pool([run("base", 5000, 300), run("base", 5000, 250)])
    fixed = pool([run("fixed", 5000, 0), run("fixed", 4000, 0)])
    for r in (base, fixed):
        r["slo"] = {"passed": True, "failures": [], "invalid": [], "outcome": "pass"}
    fixed["comparison"] = compare(fixed, base)
    lines = render_table([base, fixed])
    assert BASELINE_COLUMN in lines[0]
    text = "\n".join(lines)
    assert "±" in text and "95 % t interval over the 2 repeats" in text
    assert "base: err better" in text


def test_relative_slos_fail_only_when_beyond_the_baseline_and_significant():
    from pytest_wsgi502.slo import parse_slos, verdict

    base = pool([run("base", 5000, 30), run("base", 5000, 25), run("base", 5000, 40)])
    slos = parse_slos("error_rate<=baseline, p99<=baseline*1.1, rps>=baseline*0.5")
    same_rate = pool([run("c", 5000, 35), run("c", 5000, 33), run("c", 5000, 31)])  # a bit above, not shown
    v = verdict(slos, same_rate, baseline=base)
    assert v["passed"], v["failures"]
    assert v["checks"][0]["significance"] == "same" and v["checks"][0]["value"] > v["checks"][0]["limit"]
    much_worse = pool([run("c", 5000, 300), run("c", 5000, 280), run("c", 5000, 310)])
    v = verdict(slos, much_worse, baseline=base)
    assert [f.split(":")[0] for f in v["failures"]] == ["error_rate<=baseline"]
    assert "significant at 95 %" in v["failures"][0] and "base" in v["failures"][0]
    slow = pool([run("c", 5000, 30, latency_ms=30)] * 3)  # 3x the baseline's latency in every repeat
    v = verdict(slos, slow, baseline=base)
    assert [f.split(":")[0] for f in v["failures"]] == ["p99<=baseline*1.1"]
    # without a baseline cell a relative SLO cannot pass, and says why
    v = verdict(slos, base)
    assert not v["passed"] and "needs a baseline cell" in v["failures"][0]


def test_bursty_errors_widen_the_error_rate_test_quasi_poisson():
    """seed-unix, 3 x 30 s repeats: uwsgi-2w 378/135/198 502s, uwsgi-sqlalchemy-pool 570/224/404. Pooled as if
    independent, 1198 vs 711 is "worse"; the repeats show bursts (dispersion ~70), and it is not shown."""
    from pytest_wsgi502.metrics.comparison import error_ratio

    def cell(counts):
        return pool([run("c", 9510 - x, x) for x in counts])

    base, pool_cell, fixed = cell([378, 135, 198]), cell([570, 224, 404]), cell([0, 0, 0])
    phi = error_ratio(pool_cell, base)["dispersion"]
    estimate = error_ratio(pool_cell, base)["dispersion_estimate"]
    assert 60 < estimate < 80 and error_ratio(pool_cell, base)["dispersion_df"] == 4
    # an estimate on 4 df: widened by (t_4 / z)^2 = 2.0067 (scipy: (t.ppf(0.975, 4) / norm.ppf(0.975)) ** 2)
    assert phi == pytest.approx(estimate * 2.006698, rel=1e-6)
    naive = compare(pool_cell | {"repeats": []}, base | {"repeats": []})["metrics"]["error_rate"]
    assert naive["verdict"] == "worse" and naive["dispersion"] == 1.0  # errors spread evenly over each second
    burst = compare(pool_cell, base)["metrics"]["error_rate"]
    assert burst["verdict"] == "same" and "quasi-Poisson" in burst["method"] and burst["lo"] < 1 < burst["hi"]
    assert burst["ratio"] == pytest.approx(1198 / 711)
    assert compare(fixed, base)["metrics"]["error_rate"]["verdict"] == "better"  # 0 in 3 runs vs 135+ each
    # Poisson-like repeats (no bursts): dispersion 1, the exact test unchanged
    calm = cell([100, 104, 98])
    assert error_ratio(calm, cell([50, 49, 53]))["dispersion"] == 1.0
    assert error_ratio(calm, cell([50, 49, 53]))["method"] == "conditional binomial (exact)"


def bursty_run(name: str, ok: int, bursts: dict[int, int], seconds: int = 10):
    """A run whose errors all fall in the given seconds (second -> 502s), as a joint recycle makes them."""
    s = Stats()
    for i in range(ok):
        s.record(200, 0.01, 1000.0 + seconds * i / ok)
    for sec, n in bursts.items():
        for i in range(n):
            s.record(502, 0.001, 1000.0 + sec + i / n / 2)
    s.started, s.ended = 1000.0, 1000.0 + seconds
    d = s.to_dict()
    d.update(name=name, slo={"passed": True, "failures": [], "invalid": [], "outcome": "pass"},
             generator_bound=False, generator_bound_reason=None, aborted=None, histogram=s.histogram.encode().decode())
    return d


def test_one_run_with_bursts_is_judged_on_its_bursts_not_its_502s():
    """The session-9 pilot of seed-unix with duration=auto: the baseline had 221 errors in its bursts, another
    cell 167 in two; counted as independent requests the second was "better" at p = 0.007 (and "worse" in a
    30 s run). Per-second windows show the bursts: no difference is claimed from two bursts against two."""
    from pytest_wsgi502.metrics.comparison import compare, window_dispersion

    base = pool([bursty_run("base", 2951, {3: 111, 8: 110})])
    other = pool([bursty_run("c", 3004, {4: 80, 9: 87})])
    phi = window_dispersion(other, base)
    assert phi > 50
    r = compare(other, base)["metrics"]["error_rate"]
    assert r["verdict"] == "same" and "within the run" in r["method"] and r["lo"] < 1 < r["hi"]
    # the same counts spread evenly over the seconds are independent errors: the difference is shown
    even = compare(pool([run("c", 3004, 167)]), pool([run("base", 2951, 221)]))["metrics"]["error_rate"]
    assert even["dispersion"] == 1.0 and even["verdict"] == "better" and even["p"] < 0.01
    # a clean cell against a bursty baseline is still better once the baseline has enough bursts
    clean = pool([bursty_run("c", 6000, {})])
    assert compare(clean, base)["metrics"]["error_rate"]["verdict"] == "same"  # 2 bursts: ~2 effective errors
    base10 = pool([bursty_run("base", 29730, {s: 100 for s in range(1, 100, 10)}, seconds=100)])
    clean100 = pool([bursty_run("c", 30000, {}, seconds=100)])  # the dispersion is common to both sides
    assert compare(clean100, base10)["metrics"]["error_rate"]["verdict"] == "better"


def test_quasi_poisson_dispersion_known_values():
    from pytest_wsgi502.metrics.inference import effective_counts, quasi_poisson_dispersion

    # rate 0.1 in both windows: no excess spread
    assert quasi_poisson_dispersion([[(10, 100), (10, 100)]]) == 1.0
    # all 20 events in one of two windows: chi2 = (20-10)^2/10 + (0-10)^2/10 = 20 over 1 df
    assert quasi_poisson_dispersion([[(20, 100), (0, 100)]]) == pytest.approx(20.0)
    assert quasi_poisson_dispersion([[(0, 100), (0, 100)]]) is None  # no event: no information
    assert quasi_poisson_dispersion([[(5, 100)]]) is None  # one point: no spread to see
    assert effective_counts(199, 3172, 100.0) == (2, 32)
    assert effective_counts(199, 3172, None) == (199, 3172)


def test_after_duration_auto_the_word_is_the_sequential_comparisons():
    """seed-unix pilot 3: the sequential comparison stopped 5 clean cells as "better" while the fixed-n test on
    the counts they stopped at said "same": two words for one question. A run that auto stopped on its comparison
    is judged by that comparison (a fixed-n test after a data-dependent stop is not valid); the interval stays."""
    from pytest_wsgi502.metrics.comparison import compare

    base = pool([bursty_run("base", 57000, {s: 10 for s in range(5, 180, 50)}, seconds=180)])
    cand = pool([bursty_run("c", 50000, {}, seconds=160)])
    fixed = compare(cand, base)["metrics"]["error_rate"]
    cand["auto"] = {"comparison": {"verdict": "better"}}
    decided = compare(cand, base)["metrics"]["error_rate"]
    assert decided["verdict"] == "better" and decided["decided_by"].startswith("duration=auto")
    assert (decided["lo"], decided["hi"]) == (fixed["lo"], fixed["hi"])
    repeated = pool([bursty_run("c", 500, {}), bursty_run("c", 500, {})])  # repeats: the repeats decide
    repeated["auto"] = {"comparison": {"verdict": "better"}}
    assert "decided_by" not in compare(repeated, base)["metrics"]["error_rate"]


def test_quasi_poisson_chi2_counts_a_clean_group_as_a_glm_does():
    from pytest_wsgi502.metrics.inference import quasi_poisson_chi2

    bursty, clean = [(20, 100), (0, 100)], [(0, 100), (0, 100), (0, 100)]
    # the bursty group: (20-10)^2/10 + (0-10)^2/10 = 20 on 1 df; the clean one fits a rate of 0 exactly
    assert quasi_poisson_chi2([bursty, clean]) == (pytest.approx(20.0), 1)
    assert quasi_poisson_chi2([bursty, clean], count_empty=True) == (pytest.approx(20.0), 3)
    assert quasi_poisson_chi2([[(5, 100)], [(0, 0), (3, 100)]], count_empty=True) == (0.0, 0)  # 1 point each
    assert quasi_poisson_chi2([[(100, 100), (100, 100)]]) == (0.0, 0)  # every trial an event: no spread


@pytest.mark.parametrize("conf", [0.9, 0.95, 0.99])
def test_an_estimated_dispersion_is_widened_by_t_over_z_as_scipy(conf):
    from scipy import stats

    from pytest_wsgi502.config.values import ConfigError
    from pytest_wsgi502.metrics.inference import estimated_dispersion

    q = 0.5 + conf / 2
    for df in (1, 2, 4, 8, 30, 400):
        widen = (stats.t.ppf(q, df) / stats.norm.ppf(q)) ** 2
        assert estimated_dispersion(50.0 * df, df, conf) == pytest.approx(50.0 * widen, rel=1e-9)
    assert estimated_dispersion(0.5 * 8, 8, conf) == 1.0  # no excess spread: at least Poisson
    with pytest.raises(ConfigError):
        estimated_dispersion(3.0, 0, conf)


def _nb_cells(rng, mean: float, sd: float, k: int, n: int = 9510):
    """k repeats of n requests whose error counts are negative binomial (mean, sd): bursts, as seed-unix has."""
    var = sd * sd
    counts = rng.negative_binomial(mean * mean / (var - mean), mean / var, k)
    return {"error_count": int(counts.sum()), "requests": n * k,
            "repeats": [{"error_count": int(c), "requests": n} for c in counts]}


def test_the_error_rate_comparison_between_repeats_keeps_its_95_percent():
    """Two cells drawn alike (5 repeats each, 502s in bursts like seed-unix's original: negative binomial with
    mean 400 and sd 250 a repeat) must read `same` at least 95 % of the time. Dividing the counts by the
    dispersion as if it were known read `better` or `worse` in 7.2 % of 3,000 such pairs; widened by (t/z)^2 for
    being estimated on few degrees of freedom, 4.2 %. A clean cell against those bursts is still `better`."""
    import numpy as np

    from pytest_wsgi502.metrics.comparison import error_ratio, repeats_chi2
    from pytest_wsgi502.metrics.inference import quasi_poisson_dispersion, rate_ratio, verdict_word

    def word(r):
        return verdict_word(r["lo"], r["hi"], higher_is_better=False, null=1.0)

    def as_if_known(a, b):  # the dispersion divided out as though it were the true one (the z-test)
        phi = quasi_poisson_dispersion([[(r["error_count"], r["requests"]) for r in c["repeats"]] for c in (a, b)])
        x1, x2, n1, n2 = a["error_count"], b["error_count"], a["requests"], b["requests"]
        return rate_ratio(round(x1 / phi), n1 / phi, round(x2 / phi), n2 / phi)

    rng = np.random.default_rng(20261202)
    pairs = [(_nb_cells(rng, 400, 250, 5), _nb_cells(rng, 400, 250, 5)) for _ in range(1000)]
    flips = sum(word(error_ratio(a, b)) != "same" for a, b in pairs) / len(pairs)
    naive = sum(word(as_if_known(a, b)) != "same" for a, b in pairs) / len(pairs)
    assert flips <= 0.05, flips
    assert naive > 0.06, naive  # the defect this guards against shows on the same draws
    clean = {"error_count": 0, "requests": 5 * 9510, "repeats": [{"error_count": 0, "requests": 9510}] * 5}
    bursty = [_nb_cells(rng, 400, 250, 5) for _ in range(200)]
    assert sum(word(error_ratio(clean, b)) == "better" for b in bursty) / len(bursty) >= 0.9
    assert repeats_chi2(clean, bursty[0])[1] == 8  # the clean cell's 4 df count


def test_the_cells_compared_with_one_baseline_hold_95_percent_together():
    """seed-unix, run 1 of docs/scenarios.md: SQLAlchemy pooling against the original, 5 repeats each. At 95 % on
    its own it is `worse` (p = 0.029); as one of the nine cells compared with that baseline (Bonferroni, 99.44 %
    each) it is `same`, while a clean cell stays `better` (p = 0.0005)."""
    from pytest_wsgi502.metrics.comparison import compare, family_confidence

    assert family_confidence(1) == 0.95 and family_confidence(0) == 0.95
    assert family_confidence(9) == pytest.approx(1 - 0.05 / 9) and family_confidence(4, 0.9) == pytest.approx(0.975)

    def cell(counts):
        return pool([run("c", 9510 - x, x) for x in counts])

    base, pooled, clean = cell([180, 196, 393, 0, 144]), cell([598, 594, 331, 206, 547]), cell([0] * 5)
    alone = compare(pooled, base)
    assert alone["metrics"]["error_rate"]["verdict"] == "worse" and alone["confidence"] == 0.95
    assert "family" not in alone
    together = compare(pooled, base, family=9)
    assert together["metrics"]["error_rate"]["verdict"] == "same"
    assert together["confidence"] == pytest.approx(1 - 0.05 / 9)
    assert together["family"] == {"comparisons": 9, "confidence": 0.95, "method": "Bonferroni"}
    lo, hi = together["metrics"]["error_rate"]["lo"], together["metrics"]["error_rate"]["hi"]
    assert lo < 1 < hi and lo < alone["metrics"]["error_rate"]["lo"] and hi > alone["metrics"]["error_rate"]["hi"]
    assert compare(clean, base, family=9)["metrics"]["error_rate"]["verdict"] == "better"
