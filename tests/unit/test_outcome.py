"""One outcome per cell: pass, fail (an SLO breached), invalid (the run says nothing about the server) or undecided."""

from pytest_wsgi502.cellrun import OUTCOMES, judge
from pytest_wsgi502.report.table import render_table
from pytest_wsgi502.slo import parse_slos, verdict


def _result(requests, responses, errors=0, **extra):
    r = {"name": "c", "requests": requests, "responses": responses, "error_count": errors,
         "error_rate": errors / requests if requests else 0.0, "status_counts": {"200": responses},
         "latency_ms": {"p50": 1.0 if responses else None}, "rps": 0.0, "generator_bound": False,
         "generator_bound_reason": None, "aborted": None, **extra}
    r["slo"] = verdict(parse_slos("p50<1s"), r)
    return r


def test_a_run_with_no_response_is_invalid_never_a_pass():
    r = _result(0, 0)
    judge(r)
    assert r["slo"]["outcome"] == "invalid" and not r["slo"]["passed"]
    assert r["slo"]["invalid"] == ["no_responses: no request was sent"]
    r = _result(40, 0, errors=40)
    judge(r)
    assert r["slo"]["invalid"] == ["no_responses: 40 request(s) sent, 0 responses received"]


def test_an_engine_error_makes_the_run_invalid_even_with_responses():
    r = _result(100, 100)
    judge(r, "connection task 3 died: ValueError: boom")
    assert r["slo"]["outcome"] == "invalid"
    assert r["slo"]["failures"] == ["engine_error: connection task 3 died: ValueError: boom"]


def test_generator_bound_and_aborted_are_invalid():
    r = _result(100, 100, generator_bound=True, generator_bound_reason="engine process 0 used 95% of a core")
    judge(r)
    assert r["slo"]["outcome"] == "invalid" and "generator_bound: engine process 0 used 95% of a core" in \
        r["slo"]["failures"]


def test_pass_and_fail():
    r = _result(100, 100)
    judge(r)
    assert r["slo"]["outcome"] == "pass" and r["slo"]["invalid"] == []
    r = _result(100, 100)
    r["slo"] = verdict(parse_slos("p50<1us"), r)
    judge(r)
    assert r["slo"]["outcome"] == "fail"
    assert set(OUTCOMES) == {"pass", "fail", "invalid", "undecided"}


def test_the_table_says_invalid_and_why():
    r = _result(0, 0, **{"errors": {}, "http_5xx": 0})
    judge(r)
    lines = render_table([r])
    assert lines[2].rstrip().endswith("INVALID")
    assert "c: INVALID run: no_responses: no request was sent" in lines


def test_lint_findings_are_listed_once_with_their_cells():
    """Was a Python UserWarning per finding and cell, printed twice each (message and source line)."""
    from pytest_wsgi502.report.table import render_lint

    race = {"code": "keepalive-race", "message": "uWSGI http-socket closes every connection"}
    results = [{"name": n, "lint": [{**race, "message": f"{n}: {race['message']}"}]} for n in ("a", "b")]
    results.append({"name": "c", "lint": [{"code": "recycle-lockstep", "message": "c: 2 workers share max-requests"}]})
    results.append({"name": "d", "lint": []})
    assert render_lint(results) == [
        "[keepalive-race] uWSGI http-socket closes every connection (cells: a, b)",
        "[recycle-lockstep] 2 workers share max-requests (cells: c)",
    ]
    assert render_lint([{"name": "d"}]) == []
