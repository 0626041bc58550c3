"""The engine's latency accounting against targets whose behaviour is known exactly (loopback subprocesses)."""

import subprocess
import sys

import pytest

from pytest_wsgi502.bench import static_nginx
from pytest_wsgi502.load.engine import LoadSpec, run


@pytest.fixture
def target():
    procs = []

    def start(*args):
        proc = subprocess.Popen([sys.executable, "-m", "pytest_wsgi502.bench.targets", *args],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return f"http://127.0.0.1:{int(proc.stdout.readline().split()[1])}"

    yield start
    for p in procs:
        p.kill()
        p.wait(5)


def test_open_loop_counts_stalls_that_closed_loop_hides(target):
    """Coordinated omission: the target answers nothing for 1 s out of every 5 s. Sent at a constant rate and
    timed from the intended send time, every request due in a stall waits it out, so p99 is near 1 s. Closed
    loop users stop sending during the stall, so the same stalls barely reach its p99."""
    url = target("stall", "--every", "5", "--stall", "1")
    opened = run(LoadSpec(base_url=url, mode="open", rate=200, concurrency=10, duration=6))["stats"].to_dict()
    closed = run(LoadSpec(base_url=url, mode="closed", concurrency=10, duration=6))["stats"].to_dict()
    assert opened["latency_ms"]["p99"] >= 900, opened["latency_ms"]
    assert closed["latency_ms"]["p99"] < 100, closed["latency_ms"]
    assert closed["latency_ms"]["max"] >= 900  # the stall happened in both runs: only the accounting differs


def test_fixed_delay_is_measured_within_a_millisecond(target):
    """Every answer takes exactly 50 ms: the engine's p50 must say so within 1 ms (median of 3 runs, as the
    benchmark does). A mistake in the accounting (timing from the wrong moment, rounding to whole milliseconds)
    moves the median. No percentile may read below 50 ms: a request cannot be answered faster than the server
    answers it. Above 50 ms the tail measures the machine (the target is a process on the same 2 cores), so it is
    not bounded here: in clean Debian containers the runs' p50 was 50.4-50.5 ms while p95 was 50.6-50.7 ms in one
    check, 52.6-54.3 ms in another and 55.2-57.4 ms in a third (nothing else measured on the host). The benchmark
    reports the precision itself (docs/load.md: p99 error +0.69 ms on a quiet machine)."""
    import statistics

    url = target("delay", "--ms", "50")
    runs = [run(LoadSpec(base_url=url, mode="open", rate=50, concurrency=5, duration=4)) for _ in range(3)]
    lats = [r["stats"].to_dict()["latency_ms"] for r in runs]
    p50, p95, p99 = (statistics.median(lat[p] for lat in lats) for p in ("p50", "p95", "p99"))
    resolution = 50 * 1e-3  # the histogram's resolution at 50 ms (3 digits: 0.1 %)
    assert abs(p50 - 50) <= 1 + resolution, lats
    assert 50 - resolution <= min(lat["p50"] for lat in lats) and p50 <= p95 <= p99, lats
    assert not any(r["generator_bound"] for r in runs)


def test_generator_bound_when_the_rate_exceeds_the_engine(tmp_path):
    """nginx `return 200` answers faster than one engine process can send: asked for 10^6 req/s, the engine
    saturates its core and must say the run measured itself, not the server."""
    nginx, port = static_nginx(tmp_path)
    try:
        out = run(LoadSpec(base_url=f"http://127.0.0.1:{port}", mode="open", rate=1_000_000, concurrency=32,
                           duration=2, max_requests=10**7))
    finally:
        nginx.terminate()
        nginx.wait(10)
    assert out["generator_bound"], out["engine"]
    assert out["generator_bound_reason"]
    assert out["engine"]["achieved_rps"] < 1_000_000


def test_processes_merge_exactly(target):
    url = target("delay", "--ms", "5")
    out = run(LoadSpec(base_url=url, mode="closed", concurrency=8, processes=2, duration=2))
    stats = out["stats"]
    assert stats.requests == sum(w.requests for w in stats.windows.values()) > 100
    assert stats.histogram.get_total_count() == stats.responses
    assert len(out["engine"]["per_process"]) == 2
    assert 5 <= stats.to_dict()["latency_ms"]["p50"] < 20


def test_engine_benchmark_reports_ratios(tmp_path):
    """The documented benchmark command runs and writes the ratio keys (a smoke test: 1 s, 1 repetition)."""
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "pytest_wsgi502.bench", "engine", f"--json={out}", "--duration=1",
                        "--reps=1"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    import json

    d = json.loads(out.read_text())
    assert {"engine_rps_per_core", "wrk_rps_per_core", "ratio", "httpx_ratio"} <= set(d)
    assert d["engine_rps_per_core"] > d["httpx_rps_per_core"] > 0
    assert d["detail"]["wrk"]["saturated"] in ("server", "client", "neither")
