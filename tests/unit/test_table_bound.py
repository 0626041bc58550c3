"""The terminal table shows each cell's error rate with its 95 % upper bound (rule of three for 0 errors)."""

from pytest_wsgi502.report.table import COLUMNS, render_table


def _result(name, requests, errors):
    return {"name": name, "requests": requests, "status_counts": {"502": errors} if errors else {},
            "http_5xx": errors, "errors": {}, "error_rate": errors / requests, "error_count": errors,
            "latency_ms": {}, "rps": 100.0, "slo": {"passed": not errors, "failures": []}}


def test_zero_errors_show_three_over_n_and_errors_their_poisson_bound():
    lines = render_table([_result("clean", 10_000, 0), _result("broken", 10_000, 3)])
    at = COLUMNS.index("<95%")
    clean, broken = (line.split() for line in lines[2:4])
    assert clean[at] == "3.0e-04"  # 2.996 / 10,000
    assert broken[at] == "7.8e-04"  # exact Poisson upper bound for 3 events (7.75)
    assert any("upper bound at 95 %" in line for line in lines)
