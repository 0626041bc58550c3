"""``--wsgi-shard=I/N`` through pytest, and ``python -m pytest_wsgi502.report merge`` on the shards' JSON.

The collection tests start nothing (``--collect-only``); the one real run executes a two-cell matrix (1 s of load
each) as shards 1/2 and 2/2, with gunicorn-2w compared against uwsgi-2w, so the baseline is pinned to shard 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

TEST = """
def test_cell(wsgi_cell_run):
    wsgi_cell_run.assert_slo()

def test_not_a_cell():
    pass
"""

MATRIX4 = """\
[cells.base]
server = "uwsgi"
[cells.a]
server = "gunicorn"
baseline_cell = "base"
[cells.long]
server = "uwsgi"
duration = "auto:2m"
[cells.c]
server = "gunicorn"
baseline_cell = "base"
"""


def _collected(r: pytest.RunResult) -> list[str]:
    return re.findall(r"test_cell\[([^\]]+)\]", r.stdout.str())


@pytest.mark.parametrize(("shard", "cells", "header"), [
    ("1/2", ["base", "long"], "wsgi502: shard 1/2: 2 of 4 cells (base, long)"),
    ("2/2", ["base", "a", "c"],
     "wsgi502: shard 2/2: 2 of 4 cells (a, c); baseline base pinned here too (for a, c; it belongs to shard 1/2)"),
])
def test_a_shard_deselects_the_other_shards_cells(pytester: pytest.Pytester, shard: str, cells: list[str],
                                                  header: str) -> None:
    """In matrix order to the least-loaded shard: base (15 s with start-up) to 1, a to 2, long (auto:2m counts as
    its 2-minute cap) to 1 on the tie, c to 2. Shard 2 compares a and c with base: base is pinned to it too.
    Deselected, not skipped; a test that is not a matrix cell stays in every shard."""
    pytester.makefile(".toml", matrix=MATRIX4)
    pytester.makepyfile(test_cells=TEST)
    r = pytester.runpytest("--wsgi-matrix-file=matrix.toml", f"--wsgi-shard={shard}", "--collect-only", "-q")
    assert r.ret == 0, r.stdout.str()
    assert _collected(r) == cells and "test_not_a_cell" in r.stdout.str()
    r.stdout.fnmatch_lines([f"*{4 - len(cells)} deselected*"])
    r = pytester.runpytest("--wsgi-matrix", "--wsgi-matrix-file=matrix.toml", f"--wsgi-shard={shard}",
                           "--wsgi-db=none", "--wsgi-setup-command=none", "--collect-only")  # no -q: the header
    assert _collected(r) == cells
    assert header in r.stdout.lines, r.stdout.str()


@pytest.mark.parametrize(("value", "message"), [
    ("3/2", "ERROR: --wsgi-shard='3/2': the shard I in I/2 must be >= 1 and <= 2, got 3"),
    ("1-2", "ERROR: --wsgi-shard='1-2': not a shard: '1-2' (use I/N, e.g. 1/3: the first of 3 shards)"),
])
def test_a_bad_shard_is_a_one_line_usage_error(pytester: pytest.Pytester, value: str, message: str) -> None:
    r = pytester.runpytest(f"--wsgi-shard={value}")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in r.stderr.lines if line] == [message]


TWO_CELLS_WITH_BASELINE = """\
[cells.uwsgi-2w]
server = "uwsgi"
workers = 2
[cells.gunicorn-2w]
server = "gunicorn"
workers = 2
baseline_cell = "uwsgi-2w"
"""


@pytest.mark.integration
def test_two_shards_merge_into_the_unsharded_matrix(real_project: pytest.Pytester) -> None:
    real_project.makefile(".toml", matrix=TWO_CELLS_WITH_BASELINE)
    real_project.makepyfile(test_cells="def test_cell(wsgi_cell_run):\n    wsgi_cell_run.assert_slo()\n")
    unsharded = real_project.runpytest("--collect-only", "-q")  # what an unsharded run runs
    everything = _collected(unsharded)
    assert everything == ["uwsgi-2w", "gunicorn-2w"]
    for i in (1, 2):
        r = real_project.runpytest_subprocess("--wsgi-matrix", "--wsgi-backend=local", f"--wsgi-shard={i}/2",
                                              f"--wsgi-json=shard{i}.json", "-p", "no:cacheprovider", timeout=600)
        out = r.stdout.str() + r.stderr.str()
        assert r.ret == 0, out
        assert f"wsgi502: shard {i}/2: 1 of 2 cells" in out
    one = json.loads((real_project.path / "shard1.json").read_text())
    two = json.loads((real_project.path / "shard2.json").read_text())
    assert one["shard"] == {"index": 1, "count": 2} and [c["name"] for c in one["cells"]] == ["uwsgi-2w"]
    assert one["cells"][0]["shard"]["owners"] == {"uwsgi-2w": 1, "gunicorn-2w": 2}
    # shard 2 ran its cell and the pinned baseline, side by side
    assert sorted(c["name"] for c in two["cells"]) == ["gunicorn-2w", "uwsgi-2w"]
    assert next(c for c in two["cells"] if c["name"] == "uwsgi-2w")["shard"]["pinned"] is True

    done = subprocess.run([sys.executable, "-m", "pytest_wsgi502.report", "merge", "shard1.json", "shard2.json",
                           "--json=merged.json", "--html=merged.html"],
                          cwd=real_project.path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    merged = json.loads((real_project.path / "merged.json").read_text())
    assert [c["name"] for c in merged["cells"]] == everything
    base = merged["cells"][0]
    assert base["shard"] == one["cells"][0]["shard"] and base["histogram"] == one["cells"][0]["histogram"]
    gunicorn = merged["cells"][1]
    assert gunicorn["comparison"]["baseline"] == "uwsgi-2w" and gunicorn["comparison"]["side_by_side"] is False
    lines = done.stdout.splitlines()
    assert lines[0].split()[0] == "cell"
    assert re.search(r"^uwsgi-2w\s+\d+", done.stdout, re.M) and re.search(r"^gunicorn-2w\s+\d+", done.stdout, re.M)
    assert "(not side by side)" in done.stdout
    assert "baseline uwsgi-2w: kept from shard1.json; its pinned runs in shard2.json not kept" in done.stdout
    assert "verdict: pass (2 pass, 0 fail, 0 invalid)" in done.stdout
    assert merged["merge"]["missing_shards"] == [] and merged["merge"]["verdict"]["outcome"] == "pass"
    page = (real_project.path / "merged.html").read_text()
    assert "<section id='merge'>" in page and "id='cell-gunicorn-2w'" in page and "(not side by side)" in page
