"""One precedence rule (config/layers.py), applied the same way to load keys, durations and SLOs."""

import itertools
from pathlib import Path

import pytest

from pytest_wsgi502.cellrun import CellContext, effective_slos, load_sources, load_spec
from pytest_wsgi502.config.layers import LAYERS, merge_keyed, pick
from pytest_wsgi502.config.matrix import expand

MATRIX = {
    "defaults": {"duration": 30, "rate": 100, "load_mode": "open", "slo": ["error_rate<1e-2", "kills==0"]},
    "cells": {
        "base": {"server": "uwsgi"},
        "own": {"server": "uwsgi", "duration": 25, "slo": ["http_502==0"], "concurrency": 7},
        "child": {"extends": "own", "rate": 150},
    },
}


def ctx(**session: tuple[object, str]) -> CellContext:
    """A context whose settings come from the given layers: ctx(duration=(5.0, "option"))."""
    values = {"duration": 10.0, "concurrency": 32, "mode": "closed", "rate": None, "path": "/",
              "verify_contains": "", "start_rate": None, "think_time": 0.0}
    sources = {k: "default" for k in values}
    for key, (value, layer) in session.items():
        if key == "slo":
            continue
        values[key], sources[key] = value, layer
    slo, slo_layer = session.get("slo", ((), "default"))
    sources["slo"] = slo_layer
    return CellContext(run_dir=Path("/nonexistent"), ledger=Path("/nonexistent/ledger"), app="a:b",
                       chdir=Path("."), server_binaries={}, nginx="nginx", db_env={}, max_requests=1000,
                       timeout=65.0, idle_timeout=60.0, processes=1, session_slos=tuple(slo),  # type: ignore[arg-type]
                       sources=sources, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cells():
    return {c.name: c for c in expand(MATRIX)}


def test_layers_are_ordered_from_general_to_specific():
    assert LAYERS == ("default", "ini", "matrix-defaults", "env", "option", "cell", "marker", "argument")
    for low, high in itertools.pairwise(LAYERS):
        assert pick((high, "H"), (low, "L")) == ("H", high)
        assert pick((low, "L"), (high, "H")) == ("H", high)
        assert pick((low, "L"), (high, None)) == ("L", low)  # None: not set in that layer
    assert pick() == (None, "default")
    with pytest.raises(ValueError, match="unknown settings layer"):
        pick(("cli", 1))


def test_merge_keyed_replaces_per_key_and_keeps_the_rest():
    merged = merge_keyed([("option", ["a1", "b1"]), ("cell", ["a2"]), ("matrix-defaults", ["c0", "b0"])],
                         key=lambda s: s[0])
    assert merged == [("a2", "cell"), ("b1", "option"), ("c0", "matrix-defaults")]


def test_matrix_records_where_each_key_came_from(cells):
    assert cells["base"].origin["duration"] == "matrix-defaults" and cells["base"].origin["server"] == "cell"
    assert cells["own"].origin["duration"] == "cell" and cells["own"].origin["slo"] == "cell"
    child = cells["child"]
    assert child.origin["duration"] == "cell" and child.origin["rate"] == "cell"  # from the cell it extends
    assert child.origin["load_mode"] == "matrix-defaults"
    assert "workers" not in child.origin  # the built-in default
    assert "origin" not in child.as_dict()  # not a matrix key
    with pytest.raises(ValueError, match="unknown key"):
        expand({"cells": {"x": {"server": "uwsgi", "origin": {}}}})


def test_a_session_option_beats_matrix_defaults_but_not_a_cells_own_key(cells):
    session = ctx(duration=(5.0, "option"), rate=(50.0, "env"), concurrency=(3, "option"))
    base = load_spec(cells["base"], session, "http://127.0.0.1:1")
    assert (base.duration, base.rate, base.concurrency, base.mode) == (5.0, 50.0, 3, "open")
    assert load_sources(cells["base"], session)["duration"] == "option"
    own = load_spec(cells["own"], session, "http://127.0.0.1:1")
    assert (own.duration, own.concurrency) == (25, 7)
    assert load_sources(cells["own"], session)["duration"] == "cell"


def test_matrix_defaults_beat_ini_and_the_built_in_default(cells):
    for layer in ("ini", "default"):
        spec = load_spec(cells["base"], ctx(duration=(5.0, layer)), "http://127.0.0.1:1")
        assert spec.duration == 30


def test_slos_merge_per_metric_by_the_same_rule(cells):
    # --wsgi-slo tightens what a cell only inherits from [defaults], and adds metrics nobody set
    slos, layer = effective_slos(cells["base"], ctx(slo=(("error_rate<1e-4", "p99<500ms"), "option")))
    assert {s.text for s in slos} == {"error_rate<1e-4", "kills==0", "p99<500ms"}
    assert layer == {"error_rate": "option", "kills": "matrix-defaults", "p99": "option"}
    # a cell's own SLO beats the session's on its metric
    slos, layer = effective_slos(cells["own"], ctx(slo=(("http_502<=5",), "option")))
    assert [s.text for s in slos] == ["http_502==0"] and layer == {"http_502": "cell"}
    # ini is below the matrix's [defaults]
    slos, _ = effective_slos(cells["base"], ctx(slo=(("error_rate<0.5",), "ini")))
    assert "error_rate<1e-2" in {s.text for s in slos}
    # test code is the most specific: marker, then the slo= argument
    slos, layer = effective_slos(cells["own"], ctx(), marker=["http_502<=1", "p50<1s"], argument=["p50<2s"])
    assert {s.text for s in slos} == {"http_502<=1", "p50<2s"}
    assert layer == {"http_502": "marker", "p50": "argument"}
