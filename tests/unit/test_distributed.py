"""Distributed load (issue 17 item 2), the parts that need no process: what crosses the wire survives exactly, the
master's merge is exact, bad setups are refused in one line before anything starts, the result has the local
engine's shape, and Locust (gevent) never enters the calling process. Processes: tests/integration."""

from __future__ import annotations

import ast
import importlib.util
import json
import random
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.load import distributed, distributed_wire
from pytest_wsgi502.load.engine import Endpoint, LoadSpec
from pytest_wsgi502.metrics.stats import Stats

ROOT = Path(__file__).resolve().parents[2]
URL = "http://127.0.0.1:9"


def _recorded(values: list[tuple[int, float, float, str | None]]) -> Stats:
    s = Stats()
    for status, latency, at, error in values:
        s.record(status if status else None, latency, at, error)
    if values:
        s.started, s.ended = min(v[2] for v in values), max(v[2] for v in values)
    return s


def _samples(seed: int, n: int = 3000) -> list[tuple[int, float, float, str | None]]:
    rng = random.Random(seed)
    out: list[tuple[int, float, float, str | None]] = []
    for _ in range(n):
        status = rng.choice([200, 200, 200, 302, 502, 0])
        out.append((status, rng.lognormvariate(-4, 1.2), 1_700_000_000 + rng.random() * 5,
                    "connect" if status == 0 else ("verify" if rng.random() < 0.01 else None)))
    return out


def _counts(stats: Stats) -> dict[int, int]:
    return {v.value_iterated_to: v.count_at_value_iterated_to for v in stats.histogram.get_recorded_iterator()}


def test_spec_survives_the_wire_with_mix_and_headers() -> None:
    spec = LoadSpec(URL, mode="ramp", rate=900.5, start_rate=10.25, concurrency=64, duration=7.5, seed=42,
                    headers={"X-Run": "a b"}, mix=(Endpoint("/a?n={n}", 2.5, "ok {n}", "GET", "2xx,302", "text/"),
                                                   Endpoint("/b", 0.5, method="POST")))
    text = json.dumps(distributed_wire.spec_to_json(spec))
    assert distributed_wire.spec_from_json(json.loads(text)) == spec


def test_a_spec_from_another_version_is_refused_by_name() -> None:
    data = distributed_wire.spec_to_json(LoadSpec(URL))
    data["burst"] = 3
    with pytest.raises(ConfigError, match="unknown keys burst: master and generators must run the same"):
        distributed_wire.spec_from_json(data)


def test_stats_survive_the_wire_exactly() -> None:
    s = _recorded(_samples(1))
    back = distributed_wire.stats_from_json(json.loads(json.dumps(distributed_wire.stats_to_json(s))))
    assert _counts(back) == _counts(s)
    assert back.to_dict() == s.to_dict()  # status codes stay integers (5xx counted), windows keep their seconds
    assert back.to_dict()["http_5xx"] > 0


def test_the_masters_merge_equals_one_histogram_of_everything_bucket_by_bucket() -> None:
    a, b = _samples(2), _samples(3)
    merged = Stats()
    for part in (a, b):  # what the master does with each generator's message
        merged.merge(distributed_wire.stats_from_json(json.loads(json.dumps(distributed_wire.stats_to_json(
            _recorded(part))))))
    whole = _recorded(a + b)
    assert _counts(merged) == _counts(whole)
    assert merged.to_dict()["latency_ms"] == whole.to_dict()["latency_ms"]
    assert merged.requests == whole.requests == len(a) + len(b)


@pytest.mark.parametrize(("kwargs", "generators", "message"), [
    ({"processes": 2, "concurrency": 4}, 2, "--wsgi-processes and --wsgi-generators do not combine"),
    ({"concurrency": 2}, 3, "3 generators need at least as many connections"),
    ({}, 0, "generators"),
    ({"mode": "open"}, 2, "open load needs a rate"),
])
def test_bad_setups_are_one_line_before_anything_starts(kwargs: dict[str, Any], generators: int,
                                                        message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        distributed.run_distributed(LoadSpec(URL, **kwargs), generators=generators)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"verify": lambda r: True}, "a custom transport or verify callable runs in one process only"),
    ({"transport_factory": object}, "a custom transport or verify callable runs in one process only"),
    ({"stop": lambda s: None}, "duration=auto needs the live stats of one engine process"),
])
def test_what_needs_one_process_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        distributed.run_distributed(LoadSpec(URL, concurrency=4), generators=2, **kwargs)


def test_without_locust_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "locust" else real(name, *a))
    with pytest.raises(ConfigError, match=r'pip install "pytest-wsgi502\[distributed\]"'):
        distributed.run_distributed(LoadSpec(URL), generators=2)


def test_a_remote_load_target_is_refused_without_allow_remote() -> None:
    with pytest.raises(ConfigError, match="non-loopback"):
        distributed.run_distributed(LoadSpec("http://192.0.2.1:80"), generators=2)


@pytest.mark.parametrize(("text", "expected"), [("127.0.0.1:5557", ("127.0.0.1", 5557)),
                                                 ("[::1]:80", ("::1", 80)), ("gen-1.example:7", ("gen-1.example", 7))])
def test_master_address(text: str, expected: tuple[str, int]) -> None:
    assert distributed.parse_master(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":5557", "h:0", "h:70000", "h:1\n", "a b:1", 5557])
def test_bad_master_address_is_one_line(text: Any) -> None:
    with pytest.raises(ConfigError, match="locust master"):
        distributed.parse_master(text)


def test_a_master_that_listens_beyond_loopback_needs_allow_remote() -> None:
    with pytest.raises(ConfigError, match="listens beyond this machine: that needs allow_remote"):
        distributed.run_distributed(LoadSpec(URL), master="0.0.0.0:5557", expect_generators=2)


def _engine(**kw: Any) -> dict[str, Any]:
    return {"cpu_percent": 20.0, "loop_lag_p99_ms": 1.0, "send_lag_p99_ms": 0.5, "cpu_s": 0.2, "spin_s": 0.1,
            "requests": 500, "loop_cpu_percent": 20.0, "runqueue_wait_ms": 1.0, "runqueue_wait_percent": 0.1,
            "aborted": None, "engine_error": None, **kw}


def test_the_result_has_the_engines_shape_and_judges_every_generator() -> None:
    spec = LoadSpec(URL, mode="open", rate=200, concurrency=8, duration=5)
    stats = _recorded(_samples(4, 1000))
    ok = distributed.judged(spec, 2, stats, [_engine(), _engine()], None, {"master_pid": 1})
    assert ok["generator_bound"] is False and ok["engine_error"] is None
    assert ok["engine"]["processes"] == 2 and ok["engine"]["distributed"]["runtime"] == "locust"
    local_keys = {"stats", "engine", "generator_bound", "generator_bound_reason", "aborted", "engine_error", "stopped"}
    assert set(ok) == local_keys
    lagging = distributed.judged(spec, 2, stats, [_engine(), _engine(loop_lag_p99_ms=40.0)], None, {})
    assert lagging["generator_bound"] is True
    assert lagging["generator_bound_reason"].startswith("generator 1 was "), lagging["generator_bound_reason"]
    busy = distributed.judged(spec, 2, stats, [_engine(cpu_percent=95.0), _engine()], None, {})
    assert "add generators (--wsgi-generators)" in busy["generator_bound_reason"]


def test_a_generator_that_fell_behind_its_share_of_the_rate_is_named() -> None:
    spec = LoadSpec(URL, mode="open", rate=200, concurrency=8, duration=4)
    assert [distributed.scheduled(spec, 2, g) for g in (0, 1)] == [400, 400]
    assert [distributed.scheduled(spec, 3, g) for g in (0, 1, 2)] == [267, 267, 266]
    ramp = LoadSpec(URL, mode="ramp", start_rate=100, rate=300, concurrency=8, duration=4)
    assert sum(distributed.scheduled(ramp, 2, g) for g in (0, 1)) == 800  # the mean rate over the duration
    capped = LoadSpec(URL, mode="open", rate=200, concurrency=8, duration=4, max_requests=101)
    assert [distributed.scheduled(capped, 2, g) for g in (0, 1)] == [51, 50]
    stats = _recorded(_samples(6, 700))
    fine = distributed.judged(spec, 2, stats, [_engine(requests=397), _engine(requests=400)], None, {})
    assert fine["generator_bound"] is False  # an edge loss of a few (one per connection) is not falling behind
    late = distributed.judged(spec, 2, stats, [_engine(requests=400), _engine(requests=300)], None, {})
    assert late["generator_bound"] is True
    assert late["generator_bound_reason"].startswith("generator 1 fell behind its share of the rate: sent 300 of "
                                                     "its 400 scheduled requests")


def test_a_generators_own_failure_or_nothing_sent_is_the_runs_error() -> None:
    spec = LoadSpec(URL, concurrency=4)
    r = distributed.judged(spec, 2, _recorded(_samples(5, 100)), [_engine(), _engine(engine_error="boom")], None, {})
    assert r["engine_error"] == "generator 1: boom"
    empty = distributed.judged(spec, 2, Stats(), [_engine(requests=0), _engine(requests=0)], None, {})
    assert empty["engine_error"].startswith("no request was sent")
    lost = distributed.judged(spec, 2, Stats(), [], "generator 1 lost at t=1.2s (killed by SIGKILL)", {})
    assert lost["engine_error"] == "generator 1 lost at t=1.2s (killed by SIGKILL)"


def test_importing_the_api_keeps_gevent_and_locust_out_of_the_calling_process() -> None:
    """Locust monkey-patches on import: in the pytest process that would patch the harness's own threads."""
    code = ("import sys, pytest_wsgi502.load.distributed as d; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_generator_script_is_locust_worker_with_this_locustfile(monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("import os, sys; os.execv = lambda exe, argv: print(repr(argv)) or sys.exit(0); "
            "from pytest_wsgi502.load import distributed_locustfile as f; f.main(['--master-host', 'h'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    argv = ast.literal_eval(out.stdout)
    assert argv[1:5] == ["-m", "locust", "--worker", "-f"]
    assert argv[5].endswith("pytest_wsgi502/load/distributed_locustfile.py") and argv[6:] == ["--master-host", "h"]


def test_locust_is_the_distributed_extra_and_in_the_test_set() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {e: {r.split(">")[0].split("[")[0].strip() for r in reqs}
             for e, reqs in project["optional-dependencies"].items()}
    assert "locust" in names["distributed"] and "locust" in names["dev"]  # bin/dev installs dev: CI runs these
    assert project["scripts"]["wsgi502-generator"] == "pytest_wsgi502.load.distributed_locustfile:main"


def test_a_generator_rate_cap_is_checked_before_anything_starts() -> None:
    spec = LoadSpec(URL, concurrency=4)
    with pytest.raises(ConfigError, match="generator max rate must be > 0"):
        distributed.run_distributed(spec, generators=2, generator_max_rate=0)
    with pytest.raises(ConfigError, match="generator max rate must be a number"):
        distributed.run_distributed(spec, generators=2, generator_max_rate="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="a remote generator's rate cap is its own: start it with --wsgi502-max-rate"):
        distributed.run_distributed(spec, master="127.0.0.1:5557", expect_generators=2, generator_max_rate=100.0)


def test_the_rate_cap_holds_the_rate_without_spinning() -> None:
    """A capped generator's connections take turns: 600 sends at a 2000/s cap last 0.3 s (one burst of 10 ms
    early at most), while the process stays nearly idle (it waits on timers, it does not spin)."""
    import asyncio
    import time

    from pytest_wsgi502.load.distributed_engine import RateCap

    cap = RateCap(2000.0)

    async def sends() -> None:
        async def conn() -> None:
            for _ in range(75):
                await cap.take()

        await asyncio.gather(*(conn() for _ in range(8)))

    cpu0, t0 = time.process_time(), time.monotonic()
    asyncio.run(sends())
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    assert 0.3 - 0.011 <= wall < 0.5, wall
    assert cpu < 0.5 * wall, (cpu, wall)


def test_a_capped_generator_that_fell_behind_says_its_cap() -> None:
    spec = LoadSpec(URL, mode="open", rate=200, concurrency=8, duration=4)
    late = distributed.judged(spec, 2, _recorded(_samples(7, 500)),
                              [_engine(requests=400, max_rate=None), _engine(requests=200, max_rate=50.0)], None, {})
    assert late["generator_bound_reason"].startswith("generator 1 fell behind its share of the rate: sent 200 of its "
                                                     "400 scheduled requests (capped at 50 req/s); add generators")


@pytest.mark.parametrize("value", ["-3", "nan", "fast"])
def test_a_bad_generator_cap_on_its_command_line_is_a_usage_error(value: str, tmp_path: Path) -> None:
    """Locust's own parser refuses it before the worker connects (port 9: nothing listens there)."""
    locustfile = Path(distributed.__file__).with_name("distributed_locustfile.py")
    out = subprocess.run([sys.executable, "-m", "locust", "--worker", "-f", str(locustfile), "--master-port", "9",
                          "--wsgi502-max-rate", value], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2, (out.returncode, out.stderr[-300:])
    assert "argument --wsgi502-max-rate: must be a" in out.stderr, out.stderr[-300:]
