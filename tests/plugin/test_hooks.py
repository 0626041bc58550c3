"""The hooks a project implements (pytest_wsgi502/hookspec.py): ``pytest_wsgi502_modify_cell`` adjusts a cell
before it starts, ``pytest_wsgi502_cell_result`` receives each result before it is reported."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.fixtures import _modified

from .test_reports_plugin import FAKE_CELL

COLLECT = """
import json

SEEN = []

def pytest_wsgi502_cell_result(result, config):
    SEEN.append(result["name"])
    result["build"] = "b-42"  # a key added here reaches the JSON

def pytest_sessionfinish(session):
    with open("seen.json", "w") as fh:
        json.dump(SEEN, fh)
"""


def test_cell_result_hook_sees_each_result_before_it_is_reported(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(COLLECT)
    pytester.makepyfile(test_fake=FAKE_CELL)
    r = pytester.runpytest("--wsgi-json=out.json")
    assert r.ret == 0, r.stdout.str()
    assert json.loads((pytester.path / "seen.json").read_text()) == ["fake"]
    cells = json.loads((pytester.path / "out.json").read_text())["cells"]
    assert [(c["name"], c["build"]) for c in cells] == [("fake", "b-42")]


def test_hooks_are_registered_with_their_specs(pytester: pytest.Pytester) -> None:
    """A misspelt argument in a conftest hook is an error at startup: the specs are known to pytest."""
    pytester.makeconftest("def pytest_wsgi502_modify_cell(cell, config, nope):\n    return None\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    r = pytester.runpytest()
    assert r.ret != 0
    assert "nope" in r.stdout.str() + r.stderr.str()


def _config(*answers: Any) -> Any:
    def hook(cell: Cell, config: Any) -> Any:  # firstresult: the first non-None answer
        return next((a for a in answers if a is not None), None)

    return SimpleNamespace(hook=SimpleNamespace(pytest_wsgi502_modify_cell=hook))


def test_modify_cell_none_keeps_the_cell_and_a_cell_replaces_it() -> None:
    cell = Cell("a", "uwsgi")
    assert _modified(_config(), cell) is cell
    changed = dataclasses.replace(cell, workers=1, options={"harakiri": 30}, slo=("p99<1s",))
    assert _modified(_config(None, changed), cell) == changed


@pytest.mark.parametrize(("change", "message"), [
    ({"workers": 0}, "pytest_wsgi502_modify_cell*cell 'a'*workers*"),
    ({"server": "waitress"}, "pytest_wsgi502_modify_cell*cell 'a'*waitress*"),
    ({"slo": ("p99 < fast",)}, "*bad SLO*"),
])
def test_a_modified_cell_is_checked_like_a_matrix_cell(change: dict[str, Any], message: str) -> None:
    """A hook cannot bring a value the matrix file would refuse: one line, no traceback."""
    with pytest.raises(pytest.fail.Exception) as info:
        _modified(_config(dataclasses.replace(Cell("a", "uwsgi"), **change)), Cell("a", "uwsgi"))
    assert info.value.pytrace is False
    assert fnmatch.fnmatch(str(info.value), message), str(info.value)


def test_modify_cell_returning_something_else_fails_the_test_with_one_line() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"returned dict for cell a: return a Cell") as info:
        _modified(_config({"workers": 1}), Cell("a", "uwsgi"))
    assert info.value.pytrace is False


MODIFY = """
import dataclasses
import json

RESULTS = []

def pytest_wsgi502_modify_cell(cell, config):
    if cell.server == "gunicorn":
        return dataclasses.replace(cell, workers=1, description="one worker (conftest)")
    return None

def pytest_wsgi502_cell_result(result, config):
    RESULTS.append({"name": result["name"], "workers": result["config"]["workers"]})

def pytest_sessionfinish(session):
    with open("results.json", "w") as fh:
        json.dump(RESULTS, fh)
"""

TESTS = """
def test_cell(wsgi_cell_run):
    assert wsgi_cell_run.cell.workers == (1 if wsgi_cell_run.cell.server == "gunicorn" else 2)
    wsgi_cell_run.assert_slo()

def test_server(wsgi_server, wsgi_load):
    target = wsgi_server({"server": "gunicorn", "workers": 3, "name": "adhoc"})
    assert target.cell.workers == 1
    result = wsgi_load(target, duration=1, concurrency=2)
    assert result.requests > 0 and result.config["workers"] == 1
"""


@pytest.mark.integration
def test_a_conftest_changes_workers_of_matrix_and_wsgi_server_cells(real_project: pytest.Pytester) -> None:
    """Real cells (1 s of load each): the hook changes gunicorn cells to one worker, both for the matrix and for
    ``wsgi_server(...)``; the result hook receives each of the three results with the config that ran."""
    real_project.makeconftest(MODIFY)
    real_project.makepyfile(test_cells=TESTS)
    r = real_project.runpytest_subprocess("--wsgi-matrix", "--wsgi-json=out.json", "-p", "no:cacheprovider",
                                          timeout=600)
    out = r.stdout.str() + r.stderr.str()
    assert r.ret == 0, out
    r.assert_outcomes(passed=3)
    seen = json.loads((real_project.path / "results.json").read_text())
    assert sorted(seen, key=lambda s: s["name"]) == [
        {"name": "adhoc", "workers": 1}, {"name": "gunicorn-2w", "workers": 1}, {"name": "uwsgi-2w", "workers": 2}]
    cells = {c["name"]: c for c in json.loads((real_project.path / "out.json").read_text())["cells"]}
    assert cells["gunicorn-2w"]["config"]["workers"] == 1
    assert cells["gunicorn-2w"]["description"] == "one worker (conftest)"
