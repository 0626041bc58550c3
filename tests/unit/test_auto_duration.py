"""duration = auto: parsing, the precedence of a stopping rule against a length, and the sequential stop."""

from pathlib import Path
from typing import ClassVar

import pytest

from pytest_wsgi502.cellrun import CellContext, judge, load_sources, load_spec, stop_rule
from pytest_wsgi502.config.duration import DEFAULT_CAP, Auto, parse
from pytest_wsgi502.config.matrix import expand
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.metrics.inference import needed_n
from pytest_wsgi502.metrics.sequential import AutoStop, BaselineStop, Horizon, apply, horizon
from pytest_wsgi502.metrics.stats import Stats
from pytest_wsgi502.slo import parse_slos, verdict


@pytest.mark.parametrize(("text", "want"), [
    ("auto", Auto(DEFAULT_CAP)), ("auto:2m", Auto(120.0)), (" auto : 30s ", Auto(30.0)), ("10s", 10.0), (5, 5.0),
])
def test_parse(text, want):
    assert parse(text) == want


@pytest.mark.parametrize(("text", "message"), [
    ("soon", "not a duration"), ("auto:0.5s", "cap of auto"), ("auto:zz", "cap of auto:MAX"), (True, "number"),
    (0, ">= 0.001"),
])
def test_parse_refuses(text, message):
    with pytest.raises(ConfigError, match=message):
        parse(text)


def ctx(duration, layer) -> CellContext:
    return CellContext(run_dir=Path("/nonexistent"), ledger=Path("/nonexistent/l"), app="a:b", chdir=Path("."),
                       server_binaries={}, nginx="nginx", db_env={}, duration=duration, max_requests=10**6,
                       concurrency=4, timeout=65.0, idle_timeout=60.0, sources={"duration": layer})


def cell(**keys):
    return expand({"cells": {"c": {"server": "uwsgi", **keys}}})[0]


def test_auto_is_a_stopping_rule_and_a_number_a_length_each_layered_on_its_own():
    # --wsgi-duration=auto on a cell with its own 25 s: auto, at most 25 s (the cell's length is more specific)
    c, session = cell(duration=25), ctx(Auto(), "option")
    assert stop_rule(c, session) == ("auto", "option")
    assert load_spec(c, session, "http://127.0.0.1:1").duration == 25
    assert load_sources(c, session) == {**load_sources(c, session), "duration": "cell", "stop": "option"}
    # a cell without a duration: the option's cap
    assert load_spec(cell(), session, "http://127.0.0.1:1").duration == DEFAULT_CAP
    # the cell asks for auto: the session's 5 s is less specific than the cell's cap
    c2 = cell(duration="auto:90s")
    assert stop_rule(c2, ctx(5.0, "option")) == ("auto", "cell")
    assert load_spec(c2, ctx(5.0, "option"), "http://127.0.0.1:1").duration == 90
    # nobody asks for auto: a fixed length, and no "stop" source
    assert stop_rule(cell(duration=3), ctx(10.0, "default")) == (None, "default")
    assert "stop" not in load_sources(cell(duration=3), ctx(10.0, "default"))


def feed(auto: AutoStop, total: int, errors_every: int | None = None, slow_every: int | None = None,
         step: int = 100) -> tuple[str | None, int]:
    """Feed ``total`` requests, ``step`` at a time (a second of load); returns (stop reason, requests fed)."""
    stats = Stats()
    for n in range(1, total + 1):
        error = errors_every is not None and n % errors_every == 0
        slow = slow_every is not None and n % slow_every == 0
        stats.record(502 if error else 200, 2.0 if slow else 0.005, 1000.0 + n / 1000)
        if n % step == 0 and (why := auto.update(stats)):
            return why, n
    return None, total


def test_clean_requests_decide_a_ceiling_after_about_3_over_l_and_never_before_the_fixed_n_bound():
    for limit, expected in ((1e-3, needed_n(1e-3)), (1e-4, needed_n(1e-4))):
        auto = AutoStop(parse_slos([f"error_rate<{limit}", "kills==0"]))
        why, n = feed(auto, 60_000, step=500)
        assert why and "met" in why
        assert 2_996 / (limit / 1e-3) <= expected <= n < expected + 500  # decided at the first look after it
        assert auto.report()["decisions"][f"error_rate<{limit}"]["decision"] == "pass"
    assert 2_996 <= needed_n(1e-3) <= 4_000 and 29_958 <= needed_n(1e-4) <= 40_000


def test_a_breach_stops_the_load_early():
    auto = AutoStop(parse_slos(["error_rate<1e-2"]))
    why, n = feed(auto, 30_000, errors_every=20)  # 5 % errors
    assert why and "breached" in why and n <= 1_000
    slow = AutoStop(parse_slos(["p99<500ms"]))
    why, n = feed(slow, 30_000, slow_every=10)  # 10 % slower than 500 ms
    assert why and "p99<500ms breached" in why and n <= 1_000


def test_a_cell_with_nothing_to_decide_is_refused():
    with pytest.raises(ConfigError, match="duration=auto decides"):
        AutoStop(parse_slos(["kills==0", "rps>10"]))


def test_an_slo_open_at_the_cap_is_undecided_never_a_pass():
    slos = parse_slos(["error_rate<1e-4", "kills==0"])
    auto = AutoStop(slos)
    feed(auto, 5_000)  # clean, but far from the ~30,000 a decision needs
    result = {"requests": 5000, "responses": 5000, "error_count": 0, "error_rate": 0.0, "kills": 0}
    v = verdict(slos, result)
    apply(v, auto.report())
    result["slo"] = v
    judge(result)
    assert result["slo"]["outcome"] == "undecided" and not result["slo"]["passed"]
    assert "undecided after 5,000 requests" in result["slo"]["failures"][0]
    # a breach proven elsewhere makes it a plain fail
    result["kills"] = 1
    v = verdict(slos, result)
    apply(v, auto.report())
    result["slo"] = v
    judge(result)
    assert result["slo"]["outcome"] == "fail"


def recycle_like(auto: AutoStop, seconds: int = 25, rate: int = 150, burst_at: int = 10) -> tuple[str | None, int]:
    """The ``recycle`` scenario's shape (measured): clean for 10 s, then a joint recycle turns 1.5 s of requests
    into 502s. Fed a second at a time as the engine does; returns (stop reason, the second it stopped in)."""
    stats = Stats()
    for sec in range(seconds):
        for i in range(rate):
            bad = burst_at <= sec + i / rate < burst_at + 1.5
            stats.record(502 if bad else 200, 0.002, 1000.0 + sec + i / rate)
        if why := auto.update(stats):
            return why, sec
    return None, seconds


def test_horizon_is_twice_the_first_lifecycle_event():
    # the recycle scenario: 2 uWSGI workers, max-requests 100, min-worker-lifetime 10 s
    h = horizon("uwsgi", 2, 100, options={"min-worker-lifetime": 10, "lazy-apps": True})
    assert (h.requests, h.seconds) == (400, 20.0) and "max_requests 100 x 2 workers" in h.why
    assert horizon("uwsgi", 2, 500).seconds == 20.0  # uWSGI's default min-worker-lifetime is 10 s
    assert (horizon("gunicorn", 2, 500, jitter=50).requests, horizon("gunicorn", 2, 500).seconds) == (2200, 0.0)
    assert horizon("uwsgi", 4, 0) == Horizon()  # nothing recycles: no wait
    assert horizon("uwsgi", 2, 0, options={"max_worker_lifetime": 30}).seconds == 60.0
    assert horizon("gunicorn", 2, 0, actions=[{"at": 3, "do": "reload"}, {"at": 6, "do": "term"}]).seconds == 12.0


def test_recycle_is_not_passed_before_its_first_recycle_and_stops_early_with_the_breach():
    slos = parse_slos(["http_502==0", "error_rate<0.05"])
    # the reproducer: without a wait a pass was proven after 150 clean requests, before any recycle
    why, sec = recycle_like(AutoStop(slos))
    assert why and "met" in why and sec == 0
    # waiting for the lifecycle: the burst at 10 s is seen and proven a breach, well before the 25 s cap
    auto = AutoStop(slos, hold=horizon("uwsgi", 2, 100, options={"min-worker-lifetime": 10}))
    why, sec = recycle_like(auto)
    assert why and "error_rate<0.05 breached" in why and 10 <= sec <= 12, (why, sec)
    d = auto.report()["decisions"]["error_rate<0.05"]
    assert d["decision"] == "fail" and d["at_requests"] > 1_500
    assert auto.report()["hold"]["seconds"] == 20.0


def test_a_held_pass_stops_at_the_horizon_and_says_so():
    auto = AutoStop(parse_slos(["error_rate<0.05"]), hold=Horizon(400, 20.0, "max_requests 100 x 2 workers"))
    why, sec = recycle_like(auto, seconds=30, burst_at=10**6)  # never a burst: clean throughout
    assert why and "met" in why and "held to" in why and sec == 19  # 20 whole seconds of load
    assert auto.report()["decisions"]["error_rate<0.05"]["decision"] == "pass"


def test_baseline_bounds_are_exact_clopper_pearson_at_alpha_over_4():
    # scipy.stats.beta.ppf(0.0125, 711, 27000 - 711 + 1) and beta.ppf(0.9875, 712, 27000 - 711)
    b = BaselineStop(711, 27_000)
    assert b.lo == pytest.approx(0.02419550966200235, rel=1e-9)
    assert b.hi == pytest.approx(0.028601839687034447, rel=1e-9)
    zero = BaselineStop(0, 10_000)  # 0 errors: nothing is below it; the upper bound 1 - 0.0125^(1/n)
    assert zero.lo == 0.0 and zero.hi == pytest.approx(4.3810666670274223e-4, rel=1e-9)


def test_baseline_comparison_decides_better_after_the_clean_requests_its_bound_needs():
    b = BaselineStop(300, 10_000)  # 3 % on the baseline
    need = needed_n(b.lo, 0.05 / 4)  # clean requests proving a rate below the baseline's lower bound
    assert b.update(0, need - 1) is None and b.update(0, need) == "better" and b.at == need
    assert b.update(50, need + 100) == "better"  # a decision stands
    assert 100 < need < 300  # ln(4/alpha) / lo ~ 6 / 0.026


def test_baseline_comparison_decides_worse_and_same_only_at_the_cap():
    worse = BaselineStop(0, 10_000)
    for n in range(100, 2_001, 100):
        if worse.update(n // 20, n):  # 5 % errors against a clean baseline
            break
    assert worse.verdict() == "worse" and worse.at <= 300
    same = BaselineStop(300, 10_000)
    for n in range(100, 50_001, 100):
        assert same.update(n * 3 // 100, n) is None  # 3 % against 3 %: never decided
    assert same.verdict() == "same" and same.report()["decided"] is False


def test_baseline_comparison_errs_at_most_alpha_under_optional_stopping():
    import random

    rng = random.Random(14)
    wrong = 0
    for _ in range(300):  # equal rates; the baseline a finished 5,000-request run; looks every 100 requests
        p = 0.01
        b = BaselineStop(sum(rng.random() < p for _ in range(5_000)), 5_000)
        x = 0
        for n in range(1, 20_001):
            x += rng.random() < p
            if n % 100 == 0 and b.update(x, n):
                wrong += 1
                break
    assert wrong / 300 <= 0.05, wrong


def test_autostop_with_a_baseline_waits_for_the_comparison():
    auto = AutoStop(parse_slos(["error_rate<0.05"]), baseline=(300, 10_000))
    why, n = feed(auto, 5_000, step=50)  # clean: the SLO is proven at 63 requests, the comparison later
    need = needed_n(BaselineStop(300, 10_000).lo, 0.05 / 4)
    assert why and "better than the baseline's" in why and need <= n < need + 50
    report = auto.report()["comparison"]
    assert report["verdict"] == "better" and report["baseline"]["errors"] == 300
    only = AutoStop(parse_slos(["kills==0"]), baseline=(0, 10_000))  # no SLO to decide: the comparison is enough
    why, n = feed(only, 5_000, errors_every=20, step=50)
    assert why and "worse than the baseline's" in why


def bursts(auto: AutoStop, seconds: int, rate: int = 300, every: int = 10, size: int = 100,
           first: int = 3) -> tuple[str | None, int, Stats]:
    """seed-unix's uwsgi-2w shape (measured in the session-9 pilot): clean, then ``size`` 502s in one second at
    each joint recycle, every ``every`` s from ``first``. Fed a second at a time; (stop reason, second, stats)."""
    stats = Stats()
    for sec in range(seconds):
        burst = sec >= first and (sec - first) % every == 0
        for i in range(rate):
            stats.record(502 if burst and i < size else 200, 0.002, 1000.0 + sec + i / rate)
        if why := auto.update(stats):
            return why, sec, stats
    return None, seconds, stats


def test_a_comparison_of_bursty_errors_weighs_bursts_not_requests():
    """Two cells with the same burst shape (two bursts of ~100 502s in 10 s) against each other: per request the
    difference 221 vs 167 is "proven"; per burst it is not, so the candidate runs on (to the cap here: 60 s) and
    ends ``same``. Its own SLO breach (error_rate<1e-2) is proven early but does not stop it: the question of
    the run is the comparison."""
    from pytest_wsgi502.metrics.sequential import window_dispersion

    _, _, base = bursts(AutoStop(parse_slos(["kills==0"]), baseline=(0, 1)), 10, size=111)
    phi = window_dispersion(base)
    assert phi is not None and phi > 50
    auto = AutoStop(parse_slos(["error_rate<1e-2"]), baseline=(base.error_count, base.requests, phi))
    why, sec, _ = bursts(auto, 60, size=84)
    assert why is None and sec == 60  # neither better nor worse was proven: on to the cap
    report = auto.report()
    assert report["comparison"]["verdict"] == "same" and report["comparison"]["candidate_dispersion"] > 50
    assert report["decisions"]["error_rate<1e-2"]["decision"] == "fail"
    # the same counts taken as independent (no dispersion) decide "better" within 10 s: what the pilot saw
    naive = AutoStop(parse_slos(["error_rate<1e-2"]), baseline=(base.error_count, base.requests))
    naive.compare.update = lambda e, n, d=None, _u=naive.compare.update: _u(e, n, None)  # type: ignore[method-assign]
    why, sec, _ = bursts(naive, 60, size=60)
    assert why and "better than the baseline's" in why and sec < 20
    # a clean cell against 2 bursts: 0 errors in a minute is no proof (the baseline's dispersion applies to it:
    # under "no difference" it would burst as rarely); against 10 bursts in 100 s it is proven better
    clean = AutoStop(parse_slos(["error_rate<1e-2"]), baseline=(base.error_count, base.requests, phi))
    why, sec, _ = bursts(clean, 60, size=0)
    assert why is None and clean.report()["comparison"]["verdict"] == "same"
    _, _, base10 = bursts(AutoStop(parse_slos(["kills==0"]), baseline=(0, 1)), 100, size=100, first=1)
    assert base10.error_count == 1000
    clean = AutoStop(parse_slos(["error_rate<1e-2"]),
                     baseline=(base10.error_count, base10.requests, window_dispersion(base10)))
    why, sec, _ = bursts(clean, 300, size=0)
    assert why and "better than the baseline's" in why and 30 < sec < 200, (why, sec)


def test_a_baseline_runs_until_its_bursts_are_enough_to_compare_with():
    """A cell others compare with (``reference``) does not stop at its own decision: seed-unix's uwsgi-2w ran 19 s
    with 0 502s in one pilot and 10 s with two bursts in another, neither enough to prove anything against it."""
    from pytest_wsgi502.metrics.sequential import REFERENCE_EVENTS

    alone = AutoStop(parse_slos(["error_rate<1e-2"]))
    why, sec, _ = bursts(alone, 120, size=100, first=0)
    assert why and "breached" in why and sec == 0  # its own breach: proven by the first burst
    ref = AutoStop(parse_slos(["error_rate<1e-2"]), reference=True, hold=Horizon(0, 20.0, "uWSGI recycles"))
    why, sec, stats = bursts(ref, 120, size=100, first=0)
    assert why and "a baseline: ran until" in why and sec > 30  # about one effective error per burst
    from pytest_wsgi502.metrics.inference import effective_counts
    from pytest_wsgi502.metrics.sequential import window_dispersion

    assert effective_counts(stats.error_count, stats.requests, window_dispersion(stats))[0] >= REFERENCE_EVENTS
    clean = AutoStop(parse_slos(["error_rate<1e-2"]), reference=True)
    why, sec, _ = bursts(clean, 60, size=0)
    assert why is None and sec == 60  # never enough errors: it runs to the cap, and says why
    assert "at the cap; a baseline: 0 effective error(s)" in clean.report()["stopped"]


def test_the_baseline_runs_first_and_its_finished_counts_are_summed():
    """Issue 14 item 4, "comparisons can use the same rule": the schedule puts a baseline before the first cell
    that compares with it (it used to follow it: A's run had no baseline counts to stop on)."""
    from pytest_wsgi502.fixtures import baseline_counts, schedule_names

    assert schedule_names(["a", "b", "c"], {"a": "c", "b": "c"}) == ["c", "a", "b"]
    assert schedule_names(["c", "a"], {"a": "c"}) == ["c", "a"]
    assert schedule_names(["a", "b"], {}) == ["a", "b"]
    assert baseline_counts([]) is None and baseline_counts([{"requests": 0, "error_count": 0}]) is None
    runs = [{"requests": 1000, "error_count": 7}, {"requests": 500, "error_count": 1}]
    assert baseline_counts(runs) == (8, 1500, None)  # no timeline: no dispersion to see


class _FakeTarget:
    """cellrun.Target without services: ``drive`` feeds the stop rule stats of 0 errors in 4,000 requests."""

    seen: ClassVar[dict] = {}

    def __init__(self, cell, ctx, base_env):
        self.cell, self.url = cell, "http://127.0.0.1:1"

    def lint(self):
        return []

    def start(self):
        return self

    def checked(self, spec, verify=None):
        return spec

    def drive(self, spec, progress=None, stop=None):
        stats = Stats()
        stats.status_counts[200] = 4000
        _FakeTarget.seen["stopped"] = stop(stats) if stop else None
        return {"stats": stats}

    def settle(self):
        pass

    def stop(self):
        pass

    def result(self, load, since, slos, spec, auto=None):
        return {"load": {}, "slo": {}, "auto": auto}


def test_run_cell_gives_auto_the_baseline_counts_and_stops_on_the_comparison(monkeypatch):
    from pytest_wsgi502 import cellrun

    monkeypatch.setattr(cellrun, "Target", _FakeTarget)
    c = cell(duration="auto:60s", slo=["error_rate<0.5"])
    session = ctx(10.0, "default")
    # a baseline with 300 errors in 3,000 requests: 0 in 4,000 is proven better, the load stops on it
    result = cellrun.run_cell(c, session, {}, baseline_counts=(300, 3000))
    comparison = result["auto"]["comparison"]
    assert comparison["baseline"] == {**comparison["baseline"], "errors": 300, "requests": 3000}
    assert comparison["verdict"] == "better" and "better than the baseline" in _FakeTarget.seen["stopped"]
    # without the baseline's counts (none finished yet, or none asked for) the SLO alone decides
    result = cellrun.run_cell(c, session, {})
    assert "comparison" not in result["auto"] and "met" in _FakeTarget.seen["stopped"]
    assert "comparison" not in cellrun.run_cell(c, session, {}, baseline_counts=(0, 0))["auto"]
