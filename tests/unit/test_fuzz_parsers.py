"""Property-based tests over every parser at the pytest edge (issue 12): SLO strings and lists, matrix data
(tables, types, nesting, random keys), every setting from an option, env or ini text, compare-fail specs and
request paths.

The property, for every input: either a sane value (finite, within the documented bounds, round-tripping through
its normalized text) or a ``ConfigError`` whose message is one line. Never another exception, never nan, inf or
a negative number accepted.

Deterministic in CI: ``derandomize=True`` (the examples derive from the test itself, no random seed) and no
example database. About 11,700 examples per run (the ``max_examples`` below add up to 11,700; hypothesis runs
that many unless a strategy is exhausted first), in about 25 s on a 2-core machine.
"""

from __future__ import annotations

import math
import os
import tempfile
import urllib.parse
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pytest_wsgi502.config import values
from pytest_wsgi502.config.checks import Check, parse_checks
from pytest_wsgi502.config.duration import Auto
from pytest_wsgi502.config.matrix import (
    _BOUNDS,
    _FIELDS,
    _OPEN_BOUNDS,
    ACTIONS,
    MAX_ROLLING_SECONDS,
    ROLLING_KEYS,
    SERVER_ACTIONS,
    Cell,
    expand,
    load_matrix,
)
from pytest_wsgi502.config.settings import SETTINGS, resolve
from pytest_wsgi502.config.values import DAY, MAX_CONCURRENCY, MAX_COUNT, MAX_RATE, ConfigError
from pytest_wsgi502.metrics.registry import CHECKED_METRICS as CHECK_METRICS
from pytest_wsgi502.metrics.registry import SLO_METRICS
from pytest_wsgi502.slo import SLO, parse_slo, parse_slos


def fuzz(n: int) -> Any:
    return settings(derandomize=True, max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def one_line_error(exc: ConfigError) -> None:
    event("refused")  # --hypothesis-show-statistics shows how many inputs were refused vs accepted
    text = str(exc)
    assert text and len(text.splitlines()) == 1 and "\n" not in text and "\r" not in text, repr(text)


REFUSED = object()  # what ``accepted`` returns for an input refused with a one-line error


def accepted(parse: Any, *args: Any) -> Any:
    """``parse(*args)``, or REFUSED when it raised a ConfigError of one line (checked here): every property below
    either gets a value to check or a refusal that must be one actionable line, never a traceback."""
    try:
        out = parse(*args)
    except ConfigError as exc:
        one_line_error(exc)
        return REFUSED
    event("accepted")
    return out


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


# --- inputs ------------------------------------------------------------------------------------------------------

EVIL = ["", " ", "\n", "\r\n", "\x00", "\x7f", "\u2028", "\x85", "nan", "NaN", "-nan", "inf", "-inf", "Infinity",
        "1e999", "-1e999", "1e-400", "-0", "-1", "0", "0.5", "1", "99999999999999999999", "9" * 5000, "1_000",
        "0x10", "١٢٣", "1e3", "10s", "250ms", "2m", "25h", "//192.0.2.10:8080/api", "http://198.51.100.7/x",
        "/a\r\nX: 1", "/ok?q=1", "/{n}", "/a#frag", "GET", "GET /x", "mod:app", "a.b:c.d", "x\nexec-pre-app = id",
        "p99<500ms", "error_rate<1e-3", "kills==0", "p99:10%", "%", "%s", "{}", "'", '"', "\\", "\t", "é"]
NUMERIC_TEXT = st.builds(
    lambda sign, digits, frac, exp, unit: f"{sign}{digits}{frac}{exp}{unit}",
    st.sampled_from(["", "-", "+", " "]),
    st.one_of(st.integers(0, 10**25).map(str), st.sampled_from(["", "0", "00", "1_0", "nan", "inf"])),
    st.sampled_from(["", ".", ".5", ".000001", ".9999999999"]),
    st.sampled_from(["", "e3", "e-3", "e308", "e309", "e999", "E-400", "e"]),
    st.sampled_from(["", "s", "ms", "m", "min", "us", "%", "h", " s", "x"]),
)
NUM_OK = st.one_of(st.integers(0, 10**6).map(str), st.floats(0, 1e6).map(repr),
                   st.sampled_from(["0.5", ".5", "1e-3", "1E2", "100", "1_000", "1e999", "1e-400"]))
TEXT = st.one_of(st.sampled_from(EVIL), NUMERIC_TEXT, st.text(max_size=24),
                 st.text(alphabet=st.characters(codec="ascii"), max_size=24))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
INTS = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([0, 1, -1, 2**63, 10**30, MAX_CONCURRENCY + 1]))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
ANY = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)


# --- SLOs --------------------------------------------------------------------------------------------------------

_SLO_PARTS = {  # per kind: plausible numbers and units, so that most of these are accepted
    "latency": (st.one_of(st.integers(1, 10_000).map(str), st.floats(0.001, 1e4).map(repr)),
                st.sampled_from(["", "ms", "us", "s"])),
    "ratio": (st.one_of(st.floats(0, 1).map(repr), st.sampled_from(["1e-3", "0", ".5"])), st.just("")),
    "count": (st.integers(0, 10**6).map(str), st.just("")),
    "rate": (st.one_of(st.integers(1, 10**6).map(str), st.floats(0.1, 1e6).map(repr)), st.just("")),
}
GOOD_SLO = st.sampled_from(sorted(SLO_METRICS)).flatmap(lambda m: st.builds(
    lambda op, num, unit: f"{m}{op}{num}{unit}", st.sampled_from(["<", "<=", ">", ">=", "=="]),
    *_SLO_PARTS[SLO_METRICS[m][0]]))
SLO_TEXT = st.one_of(
    GOOD_SLO, GOOD_SLO, GOOD_SLO,
    st.builds(lambda m, sp1, op, sp2, num, unit: f"{m}{sp1}{op}{sp2}{num}{unit}",
              st.one_of(st.sampled_from(sorted(SLO_METRICS)), st.sampled_from(["latency", "p100", "P99", ""])),
              st.sampled_from(["", " ", "\t"]), st.sampled_from(["<", "<=", ">", ">=", "==", "=", "<<", "!="]),
              st.sampled_from(["", " "]), NUMERIC_TEXT, st.sampled_from(["", "ms", "us", "s", "%", " ms", "x"])),
    TEXT,
)


def check_slo(slo: SLO) -> None:
    kind = SLO_METRICS[slo.metric][0]
    assert finite(slo.limit) and slo.limit >= 0, slo
    assert slo.limit <= {"latency": DAY * 1000, "ratio": 1, "count": MAX_COUNT, "rate": MAX_RATE}[kind], slo
    if kind == "count":
        assert slo.limit == int(slo.limit), slo
    if kind == "latency":
        assert slo.limit > 0, slo
    if slo.op == "<":
        assert slo.limit > 0, slo
    assert parse_slo(slo.text) == slo  # the normalized text is the same SLO


@given(SLO_TEXT)
@fuzz(2500)
def test_slo_text(text: str) -> None:
    slo = accepted(parse_slo, text)
    if slo is REFUSED:
        return
    check_slo(slo)


@given(st.one_of(st.lists(GOOD_SLO, max_size=4), st.lists(GOOD_SLO, max_size=4).map(", ".join),
                 st.lists(st.one_of(SLO_TEXT, SCALARS), max_size=4), st.text(max_size=60),
                 st.lists(SLO_TEXT, max_size=4).map(", ".join), ANY))
@fuzz(1200)
def test_slo_lists(spec: Any) -> None:
    slos = accepted(parse_slos, spec)
    if slos is REFUSED:
        return
    for s in slos:
        check_slo(s)
    assert len({s.metric for s in slos}) == len(slos)  # a metric given twice is an error
    assert parse_slos(", ".join(s.text for s in slos)) == slos


# --- compare-fail ------------------------------------------------------------------------------------------------

GOOD_CHECK = st.builds(lambda m, num, pct: f"{m}:{num}{pct}", st.sampled_from(sorted(CHECK_METRICS)), NUM_OK,
                       st.sampled_from(["", "%"]))
CHECK_LIST = st.lists(GOOD_CHECK, min_size=1, max_size=3).map(",".join)
CHECK_TEXT = st.one_of(
    CHECK_LIST, CHECK_LIST,
    st.lists(st.builds(lambda m, num, pct: f"{m}:{num}{pct}",
                       st.one_of(st.sampled_from(sorted(CHECK_METRICS)), st.sampled_from(["latency", ""])),
                       NUMERIC_TEXT, st.sampled_from(["", "%", " %"])), max_size=4).map(",".join),
    TEXT, ANY,
)


@given(CHECK_TEXT)
@fuzz(1200)
def test_compare_fail_checks(text: Any) -> None:
    checks = accepted(parse_checks, text)
    if checks is REFUSED:
        return
    assert checks and all(isinstance(c, Check) for c in checks)
    for c in checks:
        assert finite(c.threshold) and c.threshold >= 0, c
    assert len({c.metric for c in checks}) == len(checks)
    assert parse_checks(",".join(c.text for c in checks)) == checks


# --- request paths -----------------------------------------------------------------------------------------------

VISIBLE_ASCII = st.characters(codec="ascii", min_codepoint=33, max_codepoint=126, exclude_characters="#")
GOOD_PATH = st.builds(lambda a, b: "/" + a + b, st.text(VISIBLE_ASCII, max_size=20),
                      st.sampled_from(["", "{n}", "?q={n}", "?a=1&b=2"]))
ODD_PATH = st.builds(lambda a, b: a + b, st.sampled_from(["/", "//", "/\\", "http:", "/..", "/%0d%0a"]),
                     st.text(max_size=20))
PATHS = st.one_of(GOOD_PATH, GOOD_PATH, TEXT, ODD_PATH)


@given(PATHS)
@fuzz(1200)
def test_request_paths_stay_on_the_target(path: str) -> None:
    try:
        ok = values.origin_form(path)
    except ConfigError as exc:
        one_line_error(exc)
        sources: list[tuple[dict[str, str], ...]] = [({"wsgi502_path": path}, {}, {}), ({}, {"WSGI502_PATH": path}, {})]
        for where in sources if path else []:  # refused there too ("" means unset: the default path)
            try:
                resolve(*where)
            except ConfigError as refused:
                one_line_error(refused)
            else:
                raise AssertionError(f"--wsgi-path accepted {path!r}")
        cell = {"server": "uwsgi", "path": path, "mix": [{"path": path}]}
        try:
            expand({"cells": {"a": cell}})
        except ConfigError as refused:
            one_line_error(refused)
        else:
            raise AssertionError(f"the matrix accepted path {path!r}")
        return
    event("accepted")
    assert ok == path and ok.startswith("/") and not ok.startswith("//") and ok.isascii() and ok.isprintable()
    url = urllib.parse.urlsplit("http://127.0.0.1:8080" + ok.replace("{n}", "7"))
    assert (url.hostname, url.port) == ("127.0.0.1", 8080)  # nothing in the path names another host
    assert resolve({"wsgi502_path": path}, {}, {}).path == path  # the option takes exactly what the validator takes
    assert expand({"cells": {"a": {"server": "uwsgi", "path": path, "mix": [{"path": path}]}}})[0].path == path


# --- every setting, from an option, env or ini text --------------------------------------------------------------

NUMBER_BOUNDS = {  # setting -> (lo, hi, lo_open, integer)
    "duration": (0.001, DAY, False, False), "think_time": (0, DAY, False, False),
    "timeout": (1, DAY, False, False), "idle_timeout": (1, DAY, False, True),
    "requests": (1, MAX_COUNT, False, True), "concurrency": (1, MAX_CONCURRENCY, False, True),
    "processes": (1, MAX_CONCURRENCY, False, True), "rate": (0, MAX_RATE, True, False),
    "start_rate": (0, MAX_RATE, True, False), "warmup": (0, DAY, False, False),
    "generators": (1, 1000, False, True), "expect_generators": (1, 1000, False, True),
}


@given(st.sampled_from(SETTINGS), st.sampled_from(["option", "env", "ini"]),
       st.one_of(TEXT, NUM_OK, GOOD_SLO, GOOD_CHECK, GOOD_PATH))
@fuzz(2500)
def test_every_setting(setting: Any, source: str, text: str) -> None:
    where = {"option": ({setting.dest: text}, {}, {}), "env": ({}, {setting.env: text}, {}),
             "ini": ({}, {}, {setting.ini: text})}[source]
    s = accepted(resolve, *where)
    if s is REFUSED:
        return
    value = getattr(s, setting.name)
    if setting.name in NUMBER_BOUNDS and value is not None:
        lo, hi, lo_open, integer = NUMBER_BOUNDS[setting.name]
        assert finite(value) and lo <= value <= hi and not (lo_open and value == lo), (text, value)
        assert not integer or value == int(value), (text, value)
    elif setting.name == "slo" and value is not None:
        for t in value:
            check_slo(parse_slo(t))
    elif setting.name == "compare_fail" and value is not None:
        assert all(finite(c.threshold) and c.threshold >= 0 for c in value)
    elif setting.name == "path":
        values.origin_form(value)
    elif setting.name == "app":
        values.wsgi_app(value)
    elif setting.name == "django_settings" and value is not None:
        values.dotted(value)
    elif isinstance(value, str) and setting.name != "verify_contains":
        values.single_line(value, setting.name)  # paths, commands, images: one line, no control characters


# --- the matrix --------------------------------------------------------------------------------------------------

KNOWN_KEYS = [*sorted(set(_FIELDS) - {"name"}), "extends"]
PLAUSIBLE = {
    "server": st.sampled_from(["uwsgi", "gunicorn"]), "worker_class": st.sampled_from(["", "gevent", "sync", "x"]),
    "socket": st.sampled_from(["tcp", "unix"]), "driver": st.sampled_from(["mysqlclient", "pymysql"]),
    "pool": st.sampled_from(["none", "sqlalchemy"]), "load_mode": st.sampled_from(["", "closed", "open", "ramp"]),
    "server_version": st.sampled_from(["", "2.0.24", "2.0.24\n", "latest"]),
    "mem_limit": st.sampled_from(["256m", "1g", "2048g", "1.5g", "lots"]),
    "path": PATHS, "slo": st.one_of(st.lists(SLO_TEXT, max_size=3), SLO_TEXT),
    "mix": st.lists(st.fixed_dictionaries({"path": PATHS}, optional={
        "weight": st.one_of(FLOATS, INTS, TEXT), "method": st.one_of(st.sampled_from(["GET", "POST"]), TEXT),
        "verify_contains": st.one_of(TEXT, INTS), "x": SCALARS}), max_size=3),
    "options": st.dictionaries(st.one_of(st.sampled_from(["harakiri", "add-header", "timeout"]), TEXT),
                               st.one_of(SCALARS, st.lists(SCALARS, max_size=2), ANY), max_size=3),
    "env": st.dictionaries(st.one_of(st.sampled_from(["A", "WSGI502_X", "_B1"]), TEXT), ANY, max_size=3),
}
for _name in _BOUNDS.keys() | _OPEN_BOUNDS.keys():
    PLAUSIBLE[_name] = st.one_of(st.integers(-2, 200_000), FLOATS, INTS)


def value_for(key: str) -> Any:
    return st.one_of(PLAUSIBLE.get(key, SCALARS), ANY) if key in PLAUSIBLE else ANY


TABLE = st.dictionaries(st.sampled_from(KNOWN_KEYS), st.just(None), max_size=5).flatmap(
    lambda keys: st.fixed_dictionaries({k: value_for(k) for k in keys}))
CELL_TABLE = st.builds(lambda server, table, extra: {**({"server": server} if server else {}), **table, **extra},
                       st.one_of(st.sampled_from(["uwsgi", "gunicorn"]), st.sampled_from([None, "apache"]), ANY),
                       TABLE, st.dictionaries(TEXT, ANY, max_size=1) | st.just({}))
NAMES = st.one_of(st.sampled_from(["a", "b", "uwsgi-2w", "a\n", "A B", "a.b_c-1", "x" * 101]), TEXT)
MATRIX = st.builds(
    lambda defaults, cells, extra: {**defaults, "cells": cells, **extra},
    st.one_of(st.just({}), st.fixed_dictionaries({"defaults": st.one_of(TABLE, ANY)})),
    st.one_of(st.dictionaries(NAMES, st.one_of(CELL_TABLE, ANY), min_size=1, max_size=3), ANY),
    st.one_of(st.just({}), st.dictionaries(TEXT, ANY, max_size=1)),
)


OPTION_KEY = st.text(st.sampled_from("abcxyz-_019"), min_size=1, max_size=12)
OPTION_VALUE = st.one_of(st.booleans(), st.integers(-(2**63) + 1, 2**63 - 1), st.floats(-1e6, 1e6),
                         st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12))
GOOD = {
    "server": st.sampled_from(["uwsgi", "gunicorn"]), "description": st.text(max_size=12),
    "workers": st.integers(1, 64), "threads": st.integers(0, 16), "async_cores": st.integers(0, 1000),
    "max_requests": st.integers(0, 10**6), "listen": st.one_of(st.none(), st.integers(0, 4096)),
    "socket": st.sampled_from(["tcp", "unix"]), "driver": st.sampled_from(["mysqlclient", "pymysql"]),
    "pool": st.sampled_from(["none", "sqlalchemy"]), "pool_size": st.integers(0, 20),
    "max_overflow": st.integers(0, 20),
    "conn_max_age": st.integers(0, 600), "mysql_max_connections": st.one_of(st.none(), st.integers(10, 1000)),
    "load_mode": st.sampled_from(["", "closed", "open", "ramp"]),
    "rate": st.one_of(st.none(), st.floats(0.1, 1e6), st.integers(1, 1000)), "start_rate": st.floats(0, 1e6),
    "think_time": st.floats(0, 10), "concurrency": st.integers(1, 1000), "duration": st.floats(0.001, DAY),
    "path": GOOD_PATH, "n_max": st.integers(1, 10**6), "verify_contains": st.text(max_size=10),
    "mix": st.lists(st.fixed_dictionaries({"path": GOOD_PATH}, optional={
        "weight": st.floats(0.01, 1e6), "method": st.sampled_from(["GET", "POST"])}), max_size=3),
    "slo": st.dictionaries(st.sampled_from(sorted(SLO_METRICS)), st.integers(1, 1000), max_size=3).map(
        lambda d: [f"{m}<={v}" for m, v in d.items()]),
    "options": st.dictionaries(OPTION_KEY, st.one_of(OPTION_VALUE, st.lists(OPTION_VALUE, max_size=2)), max_size=3),
    "env": st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True),
                           st.one_of(st.integers(), st.text(st.characters(min_codepoint=32, max_codepoint=126))),
                           max_size=2),
    "cpus": st.floats(0.01, 64), "mem_limit": st.sampled_from(["256m", "1g", "512k", "1.5g"]),
    "actions": st.lists(st.fixed_dictionaries({
        "at": st.one_of(st.floats(0, 120).map(lambda t: f"{t:.3f}s"), st.integers(0, 90), st.sampled_from(
            ["5s", "250ms", "1m", "auto", "-1s", "nans", "1e999s"])),
        "do": st.one_of(st.sampled_from(ACTIONS), st.sampled_from(["HUP", "kill", "reload\n", "rolling"]))},
        # a rolling deploy's own durations (issue 16), hostile ones included
        optional={k: st.one_of(st.floats(0, 4000).map(lambda t: f"{t:.2f}s"), st.integers(-5, 5000),
                               st.sampled_from(["1s", "auto", "-1s", "nans", "1e999s", "1h", ""]))
                  for k in ("lag", "prestop", "deregistration_delay")}), max_size=3),
    "instances": st.one_of(st.integers(-1, 70), st.sampled_from([1.5, "2", True])),
    "headers": st.dictionaries(
        st.one_of(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,12}", fullmatch=True),
                  st.sampled_from(["Host", "content-length", "X Y", "X:Y", "", "Cookie\r\nX"])),
        st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
                  st.sampled_from(["a\r\nX-Injected: 1", "\x00", "v" * 5000])), max_size=3),
}
GOOD_TABLE = st.dictionaries(st.sampled_from(sorted(GOOD)), st.just(None), max_size=6).flatmap(
    lambda keys: st.fixed_dictionaries({k: GOOD[k] for k in keys}))
GOOD_CELL = st.builds(lambda server, table: {**table, "server": server}, GOOD["server"], GOOD_TABLE)
SPOILED_CELL = st.builds(lambda cell, key, bad: {**cell, key: bad}, GOOD_CELL, st.sampled_from(KNOWN_KEYS),
                         st.one_of(FLOATS, INTS, TEXT, ANY))  # one hostile value in an otherwise good cell
PLAUSIBLE_MATRIX = st.builds(
    lambda defaults, cells: {"defaults": defaults, "cells": cells},
    st.one_of(st.just({}), GOOD_TABLE),
    st.dictionaries(st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,10}", fullmatch=True),
                    st.one_of(GOOD_CELL, GOOD_CELL, GOOD_CELL, SPOILED_CELL), min_size=1, max_size=3),
)


def check_cell(cell: Cell) -> None:
    for key, (lo, hi) in _BOUNDS.items():
        v = getattr(cell, key)
        assert v is None or (finite(v) and lo <= v <= hi), (key, v)
    for key, (lo, hi) in _OPEN_BOUNDS.items():
        v = getattr(cell, key)
        assert v is None or (finite(v) and lo < v <= hi), (key, v)
    if cell.path is not None:
        values.origin_form(cell.path)
    for m in cell.mix:
        values.origin_form(m["path"])
        assert finite(m.get("weight", 1)) and m.get("weight", 1) > 0
        values.method(m.get("method", "GET"))
    for t in cell.slo:
        check_slo(parse_slo(t))
    for k, v in cell.options.items():
        for item in v if isinstance(v, list) else [v]:
            assert isinstance(item, str | int | float) and (not isinstance(item, float) or math.isfinite(item))
            assert not isinstance(item, str) or item.isprintable() or values.single_line(item, k)
    for k, v in cell.env.items():
        assert isinstance(v, str) and "\n" not in v and "\x00" not in v and k.isidentifier()
    if cell.actions:
        event("accepted with actions")
    if cell.headers:
        event("accepted with headers")
    times = [a["at"] for a in cell.actions]
    assert times == sorted(times), cell.actions
    assert isinstance(cell.instances, int) and not isinstance(cell.instances, bool) and 1 <= cell.instances <= 64
    for a in cell.actions:
        if a["do"] == "rolling":  # only with several instances, alone, its durations finite and bounded
            event("accepted with a rolling deploy")
            assert cell.instances > 1 and len(cell.actions) == 1, (cell.instances, cell.actions)
            assert set(a) == {"at", "do", *ROLLING_KEYS}, a
            assert all(finite(a[k]) and 0 <= a[k] <= MAX_ROLLING_SECONDS for k in ROLLING_KEYS), a
        else:
            assert set(a) == {"at", "do"} and a["do"] in SERVER_ACTIONS[cell.server] and cell.instances == 1, a
        assert finite(a["at"]) and 0 <= a["at"] <= DAY, a
        assert cell.duration is None or isinstance(cell.duration, Auto) or a["at"] < cell.duration, (a, cell.duration)
    for name, text in cell.headers.items():
        assert name == values.header(name, text, "h")[0] and name.lower() not in ("host", "content-length")
        assert text.isprintable() and "\r" not in text and "\n" not in text, (name, text)
    # the accepted cell is a fixed point: its own fields, as a matrix table, give the same cell
    table = {k: v for k, v in cell.as_dict().items() if k != "name"}
    assert expand({"cells": {cell.name: table}}) == [cell]


@given(st.one_of(MATRIX, PLAUSIBLE_MATRIX, PLAUSIBLE_MATRIX))
@fuzz(2000)
def test_matrix_data(data: Any) -> None:
    cells = accepted(expand, data, "m.toml")
    if cells is REFUSED:
        return
    assert cells
    for cell in cells:
        check_cell(cell)


@given(st.builds(lambda cell, actions, headers: {"cells": {"c": {**cell, "actions": actions, "headers": headers}}},
                 GOOD_CELL, GOOD["actions"], GOOD["headers"]))
@fuzz(600)
def test_matrix_actions_and_headers(data: Any) -> None:
    """The lifecycle ``actions`` and request ``headers`` of issue 16, in otherwise good cells: each is accepted
    sane (times finite, sorted and within the cell's duration; the server's own actions; header names tokens and
    values one printable line) or refused with one line."""
    cells = accepted(expand, data, "m.toml")
    if cells is REFUSED:
        return
    for cell in cells:
        check_cell(cell)


TOML_NUMBER = st.one_of(st.integers(-(2**63), 2**63 - 1).map(str), st.floats().map(repr),  # nan, inf: TOML too
                        st.integers(0, 1000).map(str))
TOML_CELL = st.builds(
    lambda name, server, numbers: f'[cells."{name}"]\nserver = "{server}"\n' + "".join(
        f"{k} = {v}\n" for k, v in numbers.items()),
    st.one_of(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True), st.sampled_from(["a\\n", "A B", ""])),
    st.sampled_from(["uwsgi", "gunicorn", "apache"]),
    st.dictionaries(st.sampled_from(sorted(_BOUNDS.keys() | _OPEN_BOUNDS.keys())), TOML_NUMBER, max_size=3))


@given(st.one_of(TOML_CELL.map(str.encode), TOML_CELL.map(str.encode), st.binary(max_size=80),
                 st.text(max_size=80).map(str.encode),
                 st.sampled_from([b'[cells.a]\nserver = "uwsgi"\nrate = nan\n', b'[cells.a]\nserver = "uwsgi"\n',
                                  b'[cells."a\\n"]\nserver = 1\n', b"defaults = 5\n", b"\xff\xfe[cells]"])))
@fuzz(500)
def test_matrix_files(content: bytes) -> None:
    fd, name = tempfile.mkstemp(suffix=".toml")
    try:
        os.write(fd, content)
        os.close(fd)
        try:
            cells = load_matrix(name)  # type: ignore[arg-type]
        except ConfigError as exc:
            one_line_error(exc)
            return
        event("accepted")
        for cell in cells:
            check_cell(cell)
    finally:
        os.unlink(name)


# --- the Locust master's address (--wsgi-locust-master, wsgi_load(locust_master=)) ------------------------------

MASTER_TEXT = st.one_of(
    st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["127.0.0.1", "localhost", "[::1]", "::1", "", "a b"]),
              st.one_of(st.integers(-5, 70000), NUMERIC_TEXT)),
    TEXT, ANY,
)


@given(MASTER_TEXT)
@fuzz(800)
def test_locust_master_address(text: Any) -> None:
    from pytest_wsgi502.load.distributed import parse_master

    out = accepted(parse_master, text)
    if out is REFUSED:
        return
    host, port = out
    assert isinstance(host, str) and host and "\n" not in host and " " not in host, out
    assert isinstance(port, int) and 1 <= port <= 65535, out
