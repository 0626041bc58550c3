"""--wsgi-warmup (issue 14): the first seconds of every cell are sent but not measured. Layering (cell over
session), the cap at half the duration, what the JSON says, and what duration=auto's tests count."""

from pathlib import Path

import pytest

from pytest_wsgi502.cellrun import CellContext, load_sources, load_spec, spec_dict, warmup_within
from pytest_wsgi502.config.duration import Auto
from pytest_wsgi502.config.matrix import expand
from pytest_wsgi502.config.settings import resolve
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.metrics.sequential import AutoStop
from pytest_wsgi502.metrics.stats import Stats
from pytest_wsgi502.slo import parse_slos

URL = "http://127.0.0.1:1"


def ctx(warmup=1.0, layer="default", duration=10.0, duration_layer="default") -> CellContext:
    return CellContext(run_dir=Path("/nonexistent"), ledger=Path("/nonexistent/l"), app="a:b", chdir=Path("."),
                       server_binaries={}, nginx="nginx", db_env={}, duration=duration, max_requests=10**6,
                       concurrency=4, timeout=65.0, idle_timeout=60.0, warmup=warmup,
                       sources={"warmup": layer, "duration": duration_layer})


def cell(**keys):
    return expand({"cells": {"c": {"server": "uwsgi", **keys}}})[0]


def test_the_setting_defaults_to_one_second_and_takes_durations():
    assert resolve({}, {}, {}).warmup == 1.0
    assert resolve({"wsgi502_warmup": "250ms"}, {}, {}).warmup == 0.25
    assert resolve({}, {"WSGI502_WARMUP": "0"}, {}).warmup == 0.0
    with pytest.raises(ConfigError, match="--wsgi-warmup='soon'"):
        resolve({"wsgi502_warmup": "soon"}, {}, {})
    with pytest.raises(ConfigError, match="WSGI502_WARMUP='-1'"):
        resolve({}, {"WSGI502_WARMUP": "-1"}, {})


def test_a_cell_key_with_bounds():
    assert cell(warmup=2.5).warmup == 2.5 and cell().warmup is None
    with pytest.raises(ConfigError, match="warmup must be >= 0"):
        cell(warmup=-1)
    with pytest.raises(ConfigError, match="warmup must be a number"):
        cell(warmup="2s")


def test_the_cell_wins_over_the_session_and_the_json_says_where_it_came_from():
    own, inherits = cell(warmup=3), cell()
    session = ctx(2.0, "option")
    assert load_spec(own, session, URL).warmup == 3.0 and load_sources(own, session)["warmup"] == "cell"
    assert load_spec(inherits, session, URL).warmup == 2.0 and load_sources(inherits, session)["warmup"] == "option"
    assert spec_dict(load_spec(inherits, session, URL))["warmup"] == 2.0  # the JSON's load.spec
    assert load_spec(cell(warmup=0), session, URL).warmup == 0.0  # 0 turns it off for one cell


def test_at_most_half_the_duration_fixed_or_the_auto_cap():
    assert warmup_within(1.0, 1.0) == 0.5 and warmup_within(None, 10.0) == 0.0 and warmup_within(5.0, 60.0) == 5.0
    assert load_spec(cell(duration=1), ctx(1.0), URL).warmup == 0.5  # a 1 s cell still measures half a second
    # duration=auto: the duration is the cap, the warm-up part of it like of a fixed length
    spec = load_spec(cell(duration="auto:4s"), ctx(3.0), URL)
    assert (spec.duration, spec.warmup) == (4.0, 2.0)
    spec.validate()
    assert load_spec(cell(), ctx(1.0, duration=Auto(600.0), duration_layer="option"), URL).warmup == 1.0


def stats_with_warmup(warm: int, warm_errors: int, slow_warm: int, clean: int) -> Stats:
    """Warm-up requests (some 502, some slow), then clean fast ones after the warm-up."""
    s = Stats(started=1000.0, warmup_until=1001.0)
    for i in range(warm):
        status = 502 if i < warm_errors else 200
        latency = 2.0 if i < slow_warm else 0.01
        s.record(status, latency, at=1000.5 + latency)  # sent at 1000.5, within the warm-up
    for _ in range(clean):
        s.record(200, 0.01, at=1003.0)
    s.ended = 1003.0
    return s


def test_warm_up_latency_is_not_measured_but_its_errors_count():
    s = stats_with_warmup(warm=100, warm_errors=3, slow_warm=50, clean=900)
    d = s.to_dict()
    assert d["requests"] == 1000 and d["error_count"] == 3  # a 502 at start-up is a 502
    assert s.histogram.get_total_count() == 900 and d["latency_ms"]["max"] < 100  # the slow warm-up is not in it
    assert d["warmup"]["requests"] == 100


def test_duration_auto_latency_tests_skip_the_warm_up_and_error_tests_count_it_as_the_verdict_does():
    """AutoStop decides what the fixed-n verdict would judge: p99 on the measured histogram (no warm-up), the error
    rate on every request (warm-up included, like the result's error_rate)."""
    s = stats_with_warmup(warm=100, warm_errors=0, slow_warm=100, clean=3000)
    auto = AutoStop(parse_slos(["p99<500ms"]))
    auto.update(s)
    (t,) = auto.tests
    assert (t.x, t.n) == (0, 3000)  # 100 slow warm-up responses would be 3 % over 500 ms: a breach
    s = stats_with_warmup(warm=100, warm_errors=100, slow_warm=0, clean=3000)
    auto = AutoStop(parse_slos(["error_rate<1e-3"]))
    assert auto.update(s) is not None and "breached" in auto.stopped
