"""Report plumbing through pytest itself (pytester, no services): results travel on the test report, saved
runs and regression checks fail the session, JUnit properties and the GitHub step summary are written."""

import json
import xml.etree.ElementTree as ET

import pytest

# A test that hands the reporter a result the way wsgi_cell_run does (the real record), with a p50 from env.
FAKE_CELL = """
import os
from pytest_wsgi502.results import Result, record
from pytest_wsgi502 import slo
from hdrh.histogram import HdrHistogram

def test_cell(request):
    p50 = float(os.environ.get("FAKE_P50", "40"))
    r = {"name": "fake", "server": "uwsgi", "config": {}, "requests": 1000, "responses": 1000,
         "status_counts": {"200": 1000}, "http_5xx": 0, "errors": {}, "error_count": 0, "error_rate": 0.0,
         "latency_ms": {"p50": p50, "p95": p50 * 1.5, "p99": p50 * 2, "max": p50 * 3, "mean": p50},
         "rps": 100.0, "respawns": 1, "kills": 0, "attribution": {}, "timeline": []}
    h = HdrHistogram(1, 60_000_000, 3)
    h.record_value(int(p50 * 1000), 1000)
    r["histogram"] = h.encode().decode()
    r["slo"] = slo.verdict(slo.parse_slos(["p50<1000ms", "error_rate<0.01"]), r)
    record(request, Result(r))
"""


@pytest.fixture
def project(pytester):
    pytester.makepyfile(test_fake=FAKE_CELL)
    return pytester


def test_save_then_compare_fail_passes_unchanged_and_fails_slowed(project, monkeypatch):
    r = project.runpytest("--wsgi-save=base", "--wsgi-storage=store")
    assert r.ret == 0
    r.stdout.fnmatch_lines(["*wsgi502: run saved as *0001_base.json"])
    saved = json.loads(next(project.path.glob("store/*/0001_base.json")).read_text())
    # pytest-benchmark's file format: its CLI can list our runs
    assert saved["benchmarks"][0]["name"] == "fake" and saved["benchmarks"][0]["stats"]["rounds"] == 1000
    assert saved["benchmarks"][0]["extra_info"]["wsgi502"]["latency_ms"]["p50"] == 40.0

    r = project.runpytest("--wsgi-compare-fail=p50:20%", "--wsgi-storage=store")
    assert r.ret == 0, r.stdout.str()
    r.stdout.fnmatch_lines(["*now vs 0001_base*", "fake*p50*40.0ms*40.0ms*+0.0%*p50:20%*ok"])

    monkeypatch.setenv("FAKE_P50", "60")
    r = project.runpytest("--wsgi-compare=base", "--wsgi-compare-fail=p50:20%", "--wsgi-storage=store")
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    # one run a side: no significance test for latency, so the limit alone decides, and the line says so
    r.stdout.fnmatch_lines(["*fake*p50*40.0ms*60.0ms*+50.0%*-*p50:20%*FAIL",
                            "regression: fake: p50 40.0ms -> 60.0ms (+50.0%), limit p50:20%, no significance test: "
                            "needs repeats"])
    assert "1 passed" in r.stdout.str()  # the test itself passed: the regression is what fails the session


@pytest.mark.parametrize(("args", "message"), [
    (["--wsgi-compare"], "ERROR: --wsgi-compare: no saved wsgi502 run in *(save one first with --wsgi-save=NAME)"),
    (["--wsgi-compare-fail=p99:10%"], "ERROR: --wsgi-compare-fail: no saved wsgi502 run in *"),
    (["--wsgi-compare-fail=p99:ten%"], "ERROR: --wsgi-compare-fail='p99:ten%': not a check: 'p99:ten%'*"),
    (["--wsgi-compare-fail=speed:10%"], "ERROR: --wsgi-compare-fail='speed:10%': unknown metric 'speed'*"),
    (["--wsgi-save=a b"], "ERROR: --wsgi-save='a b': not a run name*"),
])
def test_bad_report_options_are_one_line(project, args, message):
    r = project.runpytest("--wsgi-storage=store", *args)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines([message])
    assert "Traceback" not in r.stderr.str()


def test_compare_names_a_missing_run_and_lists_saved_ones(project):
    assert project.runpytest("--wsgi-save=base", "--wsgi-storage=store").ret == 0
    r = project.runpytest("--wsgi-compare=nightly", "--wsgi-storage=store")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["ERROR: --wsgi-compare: no saved run 'nightly' in * (saved: 0001_base)"])


def test_junit_properties_and_step_summary(project, monkeypatch):
    summary = project.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    r = project.runpytest("--junitxml=junit.xml", "--wsgi-json=out.json")
    assert r.ret == 0
    props = {p.get("name"): p.get("value") for p in ET.parse(project.path / "junit.xml").iter("property")}
    assert props["wsgi502.fake.p50_ms"] == "40.0"
    assert props["wsgi502.fake.slo.p50<1000ms"] == "pass (measured 40)"
    assert props["wsgi502.fake.slo"] == "pass"
    assert not any("histogram" in (v or "") or len(v or "") > 200 for v in props.values()), "no result blobs"
    text = summary.read_text()
    assert text.startswith("### pytest-wsgi502") and "| fake | 1000 |" in text and "| pass |" in text
    doc = json.loads((project.path / "out.json").read_text())
    assert doc["schema"] == 1 and doc["cells"][0]["name"] == "fake"


def test_pytest_benchmark_cli_reads_a_saved_run(project):
    import subprocess
    import sys

    assert project.runpytest("--wsgi-save=base", "--wsgi-storage=store").ret == 0
    cli = subprocess.run([sys.executable, "-c", "from pytest_benchmark.cli import main; main()",
                          "--storage", f"file://{project.path / 'store'}", "compare", "0001"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    row = next((line for line in cli.stdout.splitlines() if line.startswith("fake")), cli.stdout + cli.stderr)
    assert row.split()[-2:] == ["1000", "1"]  # rounds = requests, iterations = 1
