"""``pytest -n 2``: a two-cell matrix on the local backend, one cell per xdist worker (each with its own MariaDB,
ports and run directory); both results travel on the test reports to the controller's table and JSON."""

from __future__ import annotations

import json
import re

import pytest

TEST = """
def test_cell(wsgi_cell_run):
    wsgi_cell_run.assert_slo()
"""


@pytest.mark.integration
def test_two_cells_on_two_workers_reach_the_controller(real_project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    real_project.makepyfile(test_cells=TEST)
    r = real_project.runpytest_subprocess("--wsgi-matrix", "--wsgi-backend=local", "-n", "2", "--dist=load",
                                          "--wsgi-json=out.json", "-p", "no:cacheprovider", timeout=600)
    out = r.stdout.str() + r.stderr.str()
    assert r.ret == 0, out
    r.assert_outcomes(passed=2)
    assert "2 workers" in out
    doc = json.loads((real_project.path / "out.json").read_text())
    cells = {c["name"]: c for c in doc["cells"]}
    assert sorted(cells) == ["gunicorn-2w", "uwsgi-2w"]
    for name, c in cells.items():
        assert c["requests"] > 0 and c["slo"]["outcome"] == "pass", (name, c["slo"])
    # each cell ran on its own worker: its own run directory (one per worker session)
    assert len({c["dir"].split("/cells/")[0] for c in cells.values()}) == 2
    # the controller printed one table with both rows
    table = out[out.index("wsgi502 matrix"):]
    assert re.search(r"uwsgi-2w\s+\d+", table) and re.search(r"gunicorn-2w\s+\d+", table), table
    # what each worker got for CPU isolation (2 workers on 2 CPUs cannot each split: both weigh with nice)
    workers = sorted(re.findall(r"^wsgi502: isolation (gw\d): auto -> (\w[\w-]*)", out, re.M))
    assert [w for w, _ in workers] == ["gw0", "gw1"], out
    import os

    if len(os.sched_getaffinity(0)) == 2:
        assert {m for _, m in workers} == {"nice"}, workers
    assert sorted(s["worker"] for s in doc["environment"]["isolation"]) == ["gw0", "gw1"]
