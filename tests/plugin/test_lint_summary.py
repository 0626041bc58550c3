"""Lint findings once, where people look (issue 15 item 6): one line per finding with the cells it applies to, in
the terminal summary, the JSON (top-level ``lint``) and the HTML report; never a Python warning. A cell with
max_requests = 1000000 gets no recycle-lockstep finding (no recycling in practice)."""

from __future__ import annotations

import importlib.util
import json

import pytest

# Two results the way wsgi_cell_run records them, sharing one finding and each with one of its own.
FAKE_CELLS = """
import pytest
from pytest_wsgi502.results import Result, record
from pytest_wsgi502 import slo

RACE = "uWSGI http-socket closes every connection after the response"

def result(name, lint):
    r = {"name": name, "server": "uwsgi", "config": {}, "requests": 100, "responses": 100,
         "status_counts": {"200": 100}, "http_5xx": 0, "errors": {}, "error_count": 0, "error_rate": 0.0,
         "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0, "mean": 1.0}, "rps": 100.0,
         "respawns": 0, "kills": 0, "attribution": {}, "timeline": [], "lint": lint}
    r["slo"] = slo.verdict(slo.parse_slos(["error_rate<0.5"]), r)
    return Result(r)

@pytest.mark.parametrize("name", ["a", "b"])
def test_cell(request, name):
    lint = [{"code": "keepalive-race", "message": f"{name}: {RACE}"}]
    if name == "b":
        lint.append({"code": "recycle-lockstep", "message": "b: 2 workers share max-requests 500"})
    record(request, result(name, lint))
"""


def test_each_finding_once_in_the_terminal_json_and_html(pytester: pytest.Pytester) -> None:
    if importlib.util.find_spec("matplotlib") is None:  # not imported here: pytester would unload its numpy
        pytest.skip("--wsgi-html needs matplotlib (the report extra)")
    pytester.makepyfile(test_fake=FAKE_CELLS)
    # in a subprocess: matplotlib's numpy cannot be imported twice in one process (pytester unloads it)
    r = pytester.runpytest_subprocess("--wsgi-json=out.json", "--wsgi-html=report.html", "-p", "no:cacheprovider")
    assert r.ret == 0, r.stdout.str()
    r.stdout.fnmatch_lines([
        "*wsgi502 config lint*",
        "[[]keepalive-race[]] uWSGI http-socket closes every connection after the response (cells: a, b)",
        "[[]recycle-lockstep[]] 2 workers share max-requests 500 (cells: b)",
    ])
    assert r.stdout.str().count("keepalive-race") == 1
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["lint"] == [
        {"code": "keepalive-race", "message": "uWSGI http-socket closes every connection after the response",
         "cells": ["a", "b"]},
        {"code": "recycle-lockstep", "message": "2 workers share max-requests 500", "cells": ["b"]},
    ]
    assert [len(c["lint"]) for c in doc["cells"]] == [1, 2]  # each cell keeps its own
    page = (pytester.path / "report.html").read_text()
    section = page[page.index("<section id='lint'>"):]
    section = section[:section.index("</section>")]
    assert section.count("<li>") == 2
    assert "<code>keepalive-race</code> uWSGI http-socket closes every connection after the response" in section
    assert "(cells: a, b)" in section and "(cells: b)" in section


def test_html_lint_section_from_a_document_without_the_summary() -> None:
    """A JSON written before the top-level key (or by hand) still shows its findings, from the cells."""
    pytest.importorskip("matplotlib")
    from pytest_wsgi502.report.html import render_html

    cell = {"name": "x", "requests": 0, "error_rate": 0.0, "rps": 0.0, "slo": {"passed": True, "failures": []},
            "lint": [{"code": "unix-listen-queue", "message": "x: listen queue 100 on a unix socket"}]}
    page = render_html({"cells": [cell]})
    assert "<code>unix-listen-queue</code> listen queue 100 on a unix socket" in page
    assert "id='lint'" not in render_html({"cells": [{**cell, "lint": []}]})


MATRIX = """\
[cells.uwsgi-2w]
server = "uwsgi"
workers = 2
max_requests = 1000000
[cells.gunicorn-gthread]
server = "gunicorn"
workers = 2
worker_class = "gthread"
threads = 2
max_requests = 500
"""


@pytest.mark.integration
def test_a_real_run_lists_findings_once_and_prints_no_python_warning(real_project: pytest.Pytester) -> None:
    """Two real cells (run under the heavy lock): the findings are a block in the summary and the JSON, no
    'warnings summary', and max_requests = 1000000 is no recycle-lockstep (the issue's reproducer)."""
    real_project.makefile(".toml", matrix=MATRIX)
    real_project.makepyfile(test_cells="def test_cell(wsgi_cell_run):\n    wsgi_cell_run.assert_slo()\n")
    r = real_project.runpytest_subprocess("--wsgi-matrix", "--wsgi-backend=local", "--wsgi-json=out.json",
                                          "-p", "no:cacheprovider", timeout=600)
    out = r.stdout.str() + r.stderr.str()
    assert r.ret == 0, out
    assert "warnings summary" not in out and "UserWarning" not in out, out
    block = out[out.index("wsgi502 config lint"):]
    block = block[:block.index("wsgi502: results written")]
    findings = [line for line in block.splitlines() if line.startswith("[")]
    assert len(findings) == len({line.split("]")[0] for line in findings}), findings  # one line per finding
    lockstep = [line for line in findings if line.startswith("[recycle-lockstep]")]
    assert len(lockstep) == 1 and lockstep[0].endswith("(cells: gunicorn-gthread)"), findings  # not uwsgi-2w
    assert lockstep[0].startswith("[recycle-lockstep] max_requests 500 and no max_requests_jitter"), lockstep
    assert any(line.startswith("[keepalive-shorter-than-lb]") for line in findings), findings
    doc = json.loads((real_project.path / "out.json").read_text())
    cells = {c["name"]: c for c in doc["cells"]}
    assert "recycle-lockstep" not in {f["code"] for f in cells["uwsgi-2w"]["lint"]}
    assert {"recycle-lockstep", "keepalive-shorter-than-lb"} <= {f["code"] for f in doc["lint"]}
    assert sorted(f["code"] for f in doc["lint"]) == sorted(line[1:line.index("]")] for line in findings)
