"""Report pieces as pure functions: regression checks, comparison rows, manifest comparability, progress line,
the HTML report's self-containment and event placement."""

import copy

import pytest

from pytest_wsgi502.config.checks import parse_checks
from pytest_wsgi502.report import compare
from pytest_wsgi502.report.manifest import comparable
from pytest_wsgi502.report.progress import LiveProgress, format_line


def cell(name="c", p99=100.0, rps=500.0, error_rate=0.0, **extra):
    return {"name": name, "latency_ms": {"p50": p99 / 2, "p95": p99 * 0.8, "p99": p99, "max": p99 * 2},
            "rps": rps, "error_rate": error_rate, "respawns": 2, "kills": 0, **extra}


@pytest.mark.parametrize(("text", "now", "saved", "fails"), [
    ("p99:10%", 109.0, 100.0, False),
    ("p99:10%", 111.0, 100.0, True),
    ("p99:10%", 50.0, 100.0, False),  # faster is never a regression
    ("rps:10%", 440.0, 500.0, True),  # req/s: smaller is worse
    ("rps:10%", 900.0, 500.0, False),
    ("error_rate:0.0001", 0.00005, 0.0, False),
    ("error_rate:0.0001", 0.0002, 0.0, True),
    ("error_rate:5%", 0.001, 0.0, True),  # any increase from zero is an infinite relative change
    ("kills:0", 1, 0, True),
])
def test_check_direction_and_kind(text, now, saved, fails):
    (check,) = parse_checks(text)
    assert check.fails(now, saved) is fails


@pytest.mark.parametrize(("text", "message"), [
    ("p99", "not a check: 'p99'"), ("p99:x%", "not a check"), ("latency:10%", "unknown metric 'latency'"),
    ("", "no checks given"), ("p99:-5%", "not a check"),
])
def test_bad_checks_name_the_part(text, message):
    with pytest.raises(ValueError, match=message):
        parse_checks(text)


def test_compare_rows_failures_and_unmatched_cells():
    checks = parse_checks("p99:10%, error_rate:0.001")
    now = [cell("a", p99=150.0), cell("b"), cell("new")]
    saved = {"a": cell("a"), "b": cell("b"), "gone": cell("gone")}
    result = compare.compare(now, saved, checks)
    assert result["failures"] == ["a: p99 100ms -> 150ms (+50.0%), limit p99:10%, no significance test: needs repeats"]
    assert result["only_now"] == ["new"] and result["only_saved"] == ["gone"]
    failed = {(r["cell"], r["metric"]) for r in result["rows"] if r["failed"]}
    assert failed == {("a", "p99")}
    lines = compare.render(result, "0001_x")
    assert lines[0] == "now vs 0001_x" and any(x.startswith("a") and "FAIL" in x for x in lines)
    assert "saved but not run now: gone" in lines and lines[-1].startswith("regression: a: p99")


def repeated(name, p99s, errors=0, requests=30_000):
    mean = sum(p99s) / len(p99s)
    return cell(name, p99=mean, error_rate=errors / requests, requests=requests, error_count=errors,
                intervals={"p99": {"values": list(p99s)}, "rps": {"values": [500.0, 510.0, 490.0]}})


def test_a_regression_fails_only_when_beyond_the_limit_and_significant():
    checks = parse_checks("p99:10%, error_rate:0.0001")
    saved = {"a": repeated("a", [100, 130, 70], errors=3), "b": repeated("b", [100, 101, 99], errors=3)}
    # a: +20 % p99 but the repeats spread 70..130 ms: not significant -> "noise", not a failure
    # b: +20 % p99 with tight repeats: a regression; error rate 3 -> 40 in 30,000: beyond 1e-4 and significant
    now = [repeated("a", [110, 150, 100], errors=3), repeated("b", [120, 121, 119], errors=40)]
    result = compare.compare(now, saved, checks)
    rows = {(r["cell"], r["metric"]): r for r in result["rows"]}
    assert rows[("a", "p99")]["beyond_limit_not_significant"] and not rows[("a", "p99")]["failed"]
    assert rows[("a", "p99")]["significance"] == "same"
    assert rows[("b", "p99")]["failed"] and rows[("b", "error_rate")]["failed"]
    assert result["failures"] == [
        "b: error_rate 1.00e-04 -> 1.33e-03 (+1233.3%), limit error_rate:0.0001, significant at 95 %",
        "b: p99 100ms -> 120ms (+20.0%), limit p99:10%, significant at 95 %"]
    assert any("noise" in line for line in compare.render(result, "0001_x"))


def test_find_run_by_latest_number_name(tmp_path):
    store = compare.storage(tmp_path)
    with pytest.raises(LookupError, match="no saved wsgi502 run"):
        compare.find_run(store, "latest")
    env = {"machine": {}, "git": {}, "versions": {}}
    first = compare.save(store, "one", [cell("a")], env)
    second = compare.save(store, "two", [cell("a")], env)
    assert compare.find_run(store, "") == second
    assert compare.find_run(store, "1") == first and compare.find_run(store, "one") == first
    with pytest.raises(LookupError, match=r"no saved run 'three' .*\(saved: 0001_one, 0002_two\)"):
        compare.find_run(store, "three")
    _, cells = compare.load(first)
    assert cells["a"]["latency_ms"]["p99"] == 100.0


def doc():
    return {"schema": 1, "created": 1.0,
            "environment": {"backend": "local", "settings": {"duration": {"value": "5s"}, "json": {"value": "a"}}},
            "cells": [{"name": "a", "config": {"workers": 2}, "requests": 10, "latency_ms": {"p99": 1.0},
                       "started_at": 5.0, "dir": "/tmp/x", "ports": {"server": 1}, "rendered": {"server": "x"}}]}


def test_comparable_drops_only_measurements_timestamps_and_output_settings():
    a, b = doc(), doc()
    b["created"], b["cells"][0].update(requests=11, started_at=6.0, dir="/tmp/y", ports={"server": 2})
    b["cells"][0]["latency_ms"] = {"p99": 2.0}
    a["cells"][0]["warmup"] = {"seconds": 1.0, "requests": 40, "note": "n"}  # the warm-up's count is measured
    b["cells"][0]["warmup"] = {"seconds": 1.0, "requests": 43, "note": "n"}
    b["environment"]["settings"]["json"] = {"value": "b"}
    assert comparable(a) == comparable(b)
    for change in (("config", {"workers": 3}), ("rendered", {"server": "y"})):
        c = copy.deepcopy(a)
        c["cells"][0][change[0]] = change[1]
        assert comparable(a) != comparable(c), change
    c = copy.deepcopy(a)
    c["environment"]["settings"]["duration"] = {"value": "6s"}
    assert comparable(a) != comparable(c)


class FakeTR:
    def __init__(self, tty):
        self.isatty, self.calls = tty, []

    def ensure_newline(self):
        self.calls.append(("newline",))

    def rewrite(self, line, **kw):
        self.calls.append(("rewrite", line))

    def write_line(self, line):
        self.calls.append(("line", line))


class FakeConfig:
    def __init__(self, tr, verbosity=0):
        self.tr, self.verbosity = tr, verbosity
        self.pluginmanager = self

    def get_plugin(self, name):
        return self.tr if name == "terminalreporter" else None

    def get_verbosity(self):
        return self.verbosity


P = {"elapsed": 4.0, "duration": 10.0, "requests": 2731, "errors": 1, "rps": 682.7}


def test_progress_line_text():
    assert format_line("uwsgi-2w", P) == "wsgi502 uwsgi-2w  4/10s  2,731 req  683 req/s  1 error"
    assert format_line("x", {"elapsed": 1.2, "duration": 10.0}) == "wsgi502 x  1/10s"


def test_progress_rewrites_in_place_on_a_terminal():
    tr = FakeTR(True)
    live = LiveProgress(FakeConfig(tr), "c")
    live.callback(P)
    live.callback(P)
    live.finish()
    assert tr.calls[0] == ("newline",) and [c[0] for c in tr.calls[1:]] == ["rewrite"] * 3
    assert tr.calls[-1] == ("rewrite", "")


def test_progress_plain_lines_without_control_characters_when_not_a_terminal():
    tr, now = FakeTR(False), [0.0]
    live = LiveProgress(FakeConfig(tr), "c", clock=lambda: now[0])
    for t in range(1, 12):
        now[0] = float(t)
        live.callback({**P, "elapsed": float(t)})
    live.finish()
    assert [c[0] for c in tr.calls] == ["line", "line"]  # every 5 s, not every second
    assert not any(ch in c[1] for c in tr.calls for ch in "\r\x1b")


def test_progress_is_silent_under_q():
    tr = FakeTR(True)
    live = LiveProgress(FakeConfig(tr, verbosity=-1), "c")
    live.callback(P)
    live.finish()
    assert tr.calls == []


def test_html_timeline_names_each_action_and_its_phases():
    """Issue 16: the HTML timeline marks each lifecycle action and the phases seen after it, by name."""
    from pytest_wsgi502.report.html import action_labels, event_offsets, render_html

    events = [{"kind": "action", "t": 1001.0, "action": "hup"},
              {"kind": "action_phase", "t": 1001.6, "action": "hup", "phase": "new_workers_ready"},
              {"kind": "action_phase", "t": 1009.0, "action": "hup", "phase": "after_the_load"}]
    c = cell("a", requests=90, responses=90, error_count=0, status_counts={"200": 90}, duration_s=3.0,
             started_at=1000.0, ended_at=1003.0, timeline_t0=1000,
             timeline=[{"t": i, "requests": 30, "errors": {}, "p99_ms": 5.0} for i in range(3)],
             telemetry={"events": events}, slo={"passed": True, "failures": [], "checks": []})
    assert event_offsets(c)["action"] == [1.0] and event_offsets(c)["phase"] == [pytest.approx(1.6)]
    assert action_labels(c) == [(1.0, "hup"), (pytest.approx(1.6), "new_workers_ready")]  # not the one after
    page = render_html({"environment": {}, "cells": [c]})
    assert "1 actions (black dotted), 1 phases (grey dotted)" in page
    # a rolling deploy's steps name their instance
    c["telemetry"]["events"] = [{"kind": "action", "t": 1000.5, "action": "rolling"},
                                {"kind": "action_phase", "t": 1001.0, "action": "rolling", "phase": "stop",
                                 "instance": 1},
                                {"kind": "action_phase", "t": 1002.0, "action": "rolling", "phase": "drain",
                                 "instance": 2}]
    assert [label for _, label in action_labels(c)] == ["rolling", "stop 1", "drain 2"]
    assert page.count("new_workers_ready") >= 1 and "after_the_load" not in page


def test_html_is_self_contained_and_places_events():
    from pytest_wsgi502.report.html import event_offsets, render_html

    c = cell("a", requests=100, responses=100, error_count=0, status_counts={"200": 100}, duration_s=3.0,
             started_at=1000.25, ended_at=1003.25, timeline_t0=1000,
             timeline=[{"t": i, "requests": 30, "errors": {"502": 1} if i == 1 else {}, "p99_ms": 5.0}
                       for i in range(4)],
             telemetry={"events": [{"kind": "respawn", "t": 1001.5}, {"kind": "no_mercy", "t": 1002.0},
                                   {"kind": "respawn", "t": 990.0}, {"kind": "recycle", "t": 1001.4}]},
             slo={"passed": False, "failures": ["p99<1ms: measured 5ms, limit < 1ms"], "checks": []})
    assert event_offsets(c) == {"respawn": [1.25], "kill": [1.75], "crash": [], "action": [], "phase": []}
    page = render_html({"environment": {"versions": {"nginx": "1.22.1"}}, "cells": [c]})
    assert page.count("<svg") == 2 and "p99&lt;1ms: measured 5ms" in page
    for fetched in ("<script", "<link", " src=", "url(http"):
        assert fetched not in page


def test_table_footer_names_the_burst_aware_error_test_when_a_baseline_column_is_shown():
    """The vs-baseline footer says the error-rate test is quasi-Poisson with repeats (metrics/comparison.py), and
    a table without comparisons does not carry that footer."""
    from pytest_wsgi502.report.table import render_table

    ok = {"passed": True, "failures": [], "checks": []}
    base = cell("base", requests=100, responses=100, error_count=0, status_counts={"200": 100}, slo=ok)
    other = cell("x", requests=100, responses=100, error_count=0, status_counts={"200": 100}, slo=ok,
                 comparison={"baseline": "base", "error": "no baseline run"})
    footer = "\n".join(render_table([base, other])[4:])
    assert "quasi-Poisson" in footer and "vs baseline" in footer
    assert "quasi-Poisson" not in "\n".join(render_table([base]))
