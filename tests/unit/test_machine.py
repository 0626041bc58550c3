"""The machine probe (metrics/machine.py): its best-of timing, the spread of a session's probes and what the
report says about it. No assertion here depends on how fast this machine is: the clock is replaced."""

import math
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_wsgi502.metrics import machine
from pytest_wsgi502.report.manifest import build, comparable
from pytest_wsgi502.report.table import render_table


def test_probe_keeps_the_best_of_its_rounds(monkeypatch):
    ticks = iter([0.0, 0.040, 1.0, 1.025, 2.0, 2.031])  # rounds of 40, 25 and 31 ms
    monkeypatch.setattr(machine.time, "perf_counter", lambda: next(ticks))
    assert machine.probe_ms(iterations=10, rounds=3) == 25.0


def test_probe_runs_at_least_one_round_and_reports_milliseconds(monkeypatch):
    ticks = iter([5.0, 5.0125])
    monkeypatch.setattr(machine.time, "perf_counter", lambda: next(ticks))
    assert machine.probe_ms(iterations=10, rounds=0) == 12.5


def test_spread_against_known_values():
    info = machine.spread([12.0, 10.0, 11.0])
    assert (info["n"], info["min"], info["median"], info["max"]) == (3, 10.0, 11.0, 12.0)
    assert info["spread"] == pytest.approx(0.2)
    assert info["cv"] == pytest.approx(1.0 / 11.0)  # sample stdev 1 over mean 11
    assert info["steady"] is False
    assert machine.spread([10.0, 10.4])["steady"] is True  # 4 % < 5 %
    assert machine.spread([10.0, 10.5])["steady"] is False  # 5 %: moved


@pytest.mark.parametrize("values", [[], [10.0], [10.0, -1.0, 0.0, math.nan, math.inf]])
def test_spread_needs_two_usable_probes(values):
    assert machine.spread(values) is None


def test_cell_probes_reads_single_runs_and_every_repeat_and_skips_junk():
    results = [
        {"name": "a", "machine_speed": {"probe_ms": [10.0, 11.0]}},
        {"name": "b", "machine_speed": {"probe_ms": [99.0]},  # the pooled copy of repeat 1: not counted twice
         "repeats": [{"machine_speed": {"probe_ms": [12.0, 13.0]}},
                     {"machine_speed": {"probe_ms": [14.0, "x", -2]}}, {}]},
        {"name": "c"},  # an older result without a probe
    ]
    assert machine.cell_probes(results) == [10.0, 11.0, 12.0, 13.0, 14.0]


def test_summary_line_says_when_the_machine_moved_and_what_to_do():
    assert machine.summary_line(None) is None
    still = machine.summary_line(machine.spread([10.0, 10.2, 10.1]))
    assert "10.0-10.2 ms" in still and "held still" in still
    moved = machine.summary_line(machine.spread([28.5, 34.5, 30.0]))
    assert "28.5-34.5 ms" in moved and "spread 21 %" in moved and "--wsgi-repeat" in moved


def _result(name, probes):
    ok = {"passed": True, "failures": [], "checks": []}
    return {"name": name, "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0}, "rps": 100.0,
            "error_rate": 0.0, "respawns": 0, "kills": 0, "requests": 100, "responses": 100, "error_count": 0,
            "status_counts": {"200": 100}, "slo": ok, "machine_speed": {"probe_ms": probes}}


def test_table_footer_carries_the_machine_line():
    lines = render_table([_result("a", [28.5, 30.0]), _result("b", [34.5, 31.0])])
    assert any(line.startswith("machine: a fixed CPU probe took 28.5-34.5 ms on the engine's CPU") for line in lines)
    assert not any(line.startswith("machine:") for line in render_table([_result("a", [])]))
    both = _result("c", [30.0, 30.5])
    both["machine_speed"]["servers_probe_ms"] = [36.0, 29.0]
    line = next(x for x in render_table([both]) if x.startswith("machine:"))
    assert "29.0-36.0 ms on the engine's and the servers' CPUs" in line and "(4 probes" in line


@pytest.mark.parametrize(("text", "value"), [("31.25\n", 31.25), (" 7 ", 7.0), ("", None), ("nan", None),
                                             ("inf", None), ("-3", None), ("0", None), ("Traceback", None)])
def test_parse_probe(text, value):
    assert machine.parse_probe(text) == value


@given(st.text())
def test_parse_probe_takes_any_text(text):
    value = machine.parse_probe(text)
    assert value is None or (math.isfinite(value) and value > 0)


@given(st.floats(min_value=1e-6, max_value=1e9, allow_nan=False))
def test_parse_probe_reads_what_the_child_prints(value):
    assert machine.parse_probe(f"{value}\n") == value


def test_manifest_records_the_spread_and_two_runs_still_compare_equal(tmp_path):
    settings = SimpleNamespace(backend="local", values={})  # what the manifest reads of the settings
    a = build([_result("a", [28.5, 30.0])], settings, tmp_path)
    b = build([_result("a", [31.0, 34.5])], settings, tmp_path)
    assert a["environment"]["machine_speed"]["max"] == 30.0 and b["environment"]["machine_speed"]["min"] == 31.0
    assert comparable(a)["environment"] == comparable(b)["environment"]


@given(st.lists(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False), min_size=2, max_size=50),
       st.randoms(use_true_random=False))
def test_spread_properties(values, rnd):
    info = machine.spread(values)
    assert info["min"] <= info["median"] <= info["max"]
    assert info["spread"] >= 0.0 and info["cv"] >= 0.0
    assert info["steady"] == (info["spread"] < machine.STEADY)
    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert machine.spread(shuffled) == info
