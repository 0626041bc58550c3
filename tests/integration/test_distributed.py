"""Distributed load on Locust's runtime against a fixed-delay target (issue 17 item 2 acceptance, loopback only).

Acceptance bullet 1: the target answers every request after 20 ms (``bench.targets delay``) behind the harness's
nginx proxy (``LocalProxy``, its JSON access log); one engine process and a master with 2 generators at the same
total open-loop rate must agree with each other and with the proxy's access log. Item 4: a generator killed
mid-run fails the run with "generator N lost at t=..s" and leaves nothing; one that never connects ends the run
with the count. Capacity (a capped generator) and a generator that falls behind: test_distributed_capacity.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from pytest_wsgi502.load import distributed
from pytest_wsgi502.load.engine import LoadSpec, run
from pytest_wsgi502.metrics.stats import new_histogram
from pytest_wsgi502.nginxlog import ACCESS_LOG, read_access_log
from pytest_wsgi502.proxy import LocalProxy, find_nginx

SERVER = r"""
import threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
count, lock = 0, threading.Lock()
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        global count
        if self.path == "/count":
            body = str(count).encode()
        else:
            time.sleep(0.020)
            with lock:
                count += 1
            body = b"slept"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""
RATE, DURATION = 200.0, 4.0


@pytest.fixture
def target() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}"
    finally:
        proc.kill()
        proc.wait(10)


def served(url: str) -> int:
    with urllib.request.urlopen(url + "/count", timeout=5) as r:
        return int(r.read())


def _spec(url: str, **kw: Any) -> LoadSpec:
    return LoadSpec(url, **{"path": "/sleep", "verify_contains": "slept", "mode": "open", "rate": RATE,
                            "concurrency": 16, "duration": DURATION, "drain": 3.0, **kw})


@pytest.fixture
def delayed() -> Iterator[str]:
    """``host:port`` of a target that answers every request after exactly 20 ms (its own process)."""
    proc = subprocess.Popen([sys.executable, "-m", "pytest_wsgi502.bench.targets", "delay", "--ms", "20"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield f"127.0.0.1:{int(proc.stdout.readline().split()[1])}"
    finally:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def proxied(workdir: Path, upstream: str) -> Iterator[LocalProxy]:
    """The harness's nginx proxy in front of ``upstream``; stopped (SIGQUIT: its access log flushed) on exit."""
    binary = find_nginx(None)
    assert binary is not None, "nginx is needed: bash bin/dev setup installs it"
    workdir.mkdir(parents=True)
    proxy = LocalProxy(workdir, upstream, 60.0, binary)
    try:
        yield proxy.start("/ready")
    finally:
        proxy.stop()


def logged(workdir: Path, path: str) -> list[dict[str, Any]]:
    """The proxy's access-log records of requests for ``path`` (the readiness probe excluded)."""
    return [r for r in read_access_log(workdir / ACCESS_LOG) if r.get("uri") == path]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _pids(workdir: Path) -> list[int]:
    """Every process the run started, from the master's events: master, generators, their engine processes."""
    pids = []
    for line in (workdir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "started":
            pids += [p for g in event["generators"] for p in (g["pid"], g["engine_pid"])]
    return pids


def _locust_processes() -> list[str]:
    """Any process of this distributed machinery still running (by command line)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ("distributed_master" in cmd or "distributed_engine" in cmd or "distributed_locustfile" in cmd) \
                and _alive(int(pid)):
            found.append(f"{pid} {cmd[:160]}")
    return found


def _pair(spec: LoadSpec, upstream: str, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """One engine process, then a master with 2 generators, each through its own fresh proxy; every count checked:
    within 1 % of each other, each equal to its proxy's access log, and the merge equal to the generators' dumps."""
    with proxied(tmp / "proxy-local", upstream) as proxy:
        local = run(replace(spec, base_url=proxy.url))
    dumps = tmp / "dumps"
    dumps.mkdir()
    ticks: list[dict[str, Any]] = []
    with proxied(tmp / "proxy-dist", upstream) as proxy:
        dist = distributed.run_distributed(replace(spec, base_url=proxy.url), generators=2, workdir=tmp / "run",
                                           dump_dir=dumps, progress=ticks.append, progress_every=0.5)
    assert local["engine_error"] is None and dist["engine_error"] is None, (local["engine_error"], dist["engine_error"])
    one, two = local["stats"], dist["stats"]
    assert one.errors.total() == 0 and two.errors.total() == 0, (one.errors, two.errors)
    # the same schedule: request counts within 1 % of each other, and each what the proxy logged
    assert abs(two.requests - one.requests) <= 0.01 * one.requests, (one.requests, two.requests)
    local_log, dist_log = logged(tmp / "proxy-local", "/sleep"), logged(tmp / "proxy-dist", "/sleep")
    assert (one.requests, two.requests) == (len(local_log), len(dist_log))
    assert all(r["status"] == 200 for r in local_log + dist_log)
    # the schedule's 800, within 1 % (a generator a CPU let start late sends its first few late or not at all:
    # 797 of 800 in a clean container on a busy host; the engine's own "fell behind" check allows more)
    assert abs(two.requests - RATE * DURATION) <= 0.01 * RATE * DURATION, two.requests
    # the master's merge is the sum of what each generator dumped itself, bucket by bucket
    own = new_histogram()
    for g in range(2):
        own.add(HdrHistogram.decode((dumps / f"generator-{g}.hdr").read_bytes()))
    assert own.get_total_count() == two.histogram.get_total_count() == two.responses
    assert list(own.counts) == list(two.histogram.counts)
    # and both generators did their half
    per = [e["requests"] for e in dist["engine"]["per_process"]]
    assert all(abs(n - RATE * DURATION / 2) <= 0.01 * RATE * DURATION / 2 for n in per) and len(per) == 2, per
    assert dist["engine"]["distributed"]["runtime"] == "locust"
    assert len(ticks) >= DURATION and all(t["duration"] == DURATION for t in ticks), ticks
    return local, dist


def test_two_generators_match_one_engine_process_the_proxy_log_and_merge_exactly(delayed: str,
                                                                                  tmp_path: Path) -> None:
    """Latency: p50 and p90 within 5 %, p99 within 25 %, over 3 interleaved pairs pooled (2,400 samples a side,
    exact merges). A bias of the distributed generator moves the body of the distribution; its tail also
    measures the machine: one run's p99 (its 8 slowest of 800) can catch a scheduler hiccup of this shared 2-core
    machine (seen once in 6: p99 25.5 vs 21.5 ms; a median of 3 pairs failed once in 3: 22.9 vs 24.7 ms), and
    pooled over 3 pairs in a clean container on a busy host, 24.0 vs 28.6 ms (1 of 3 newcomer checks)."""
    spec = LoadSpec("http://placeholder", path="/sleep", verify_contains="ok", mode="open", rate=RATE,
                    concurrency=16, duration=DURATION, drain=3.0)
    pairs = [_pair(spec, delayed, tmp_path / f"pair-{i}") for i in range(3)]
    pooled = new_histogram(), new_histogram()
    for pair in pairs:
        for side, r in zip(pooled, pair, strict=True):
            side.add(r["stats"].histogram)
    for p, tolerance in ((50, 0.05), (90, 0.05), (99, 0.25)):
        a, b = (side.get_value_at_percentile(p) for side in pooled)
        assert abs(b - a) <= tolerance * a, (p, a / 1000, b / 1000)
    bound = [r["generator_bound_reason"] for pair in pairs for r in pair if r["generator_bound"]]
    assert len(bound) <= 1, bound  # the comparison holds between runs that measured the target
    assert not _locust_processes()


def test_a_generator_killed_mid_run_fails_the_run_and_leaves_no_process(target: str, tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    killed: list[int] = []

    def killer() -> None:  # SIGKILL generator 1 (the Locust worker) a second into the load
        events = workdir / "events.jsonl"
        until = time.monotonic() + 60
        while time.monotonic() < until:
            for line in events.read_text().splitlines() if events.exists() else []:
                event = json.loads(line)
                if event.get("event") == "started":
                    time.sleep(max(0.0, event["start_at"] - time.time()) + 1.0)
                    pid = next(g["pid"] for g in event["generators"] if g["g"] == 1)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    t0 = time.monotonic()
    result = distributed.run_distributed(_spec(target, max_requests=100_000), generators=2, workdir=workdir)
    thread.join(10)
    assert killed
    assert re.fullmatch(r"generator 1 lost at t=1\.\ds \(killed by SIGKILL\)", result["engine_error"] or ""), \
        result["engine_error"]
    assert time.monotonic() - t0 < DURATION + 10  # ended when it was lost, not at the deadline plus grace
    pids = _pids(workdir)
    assert len(pids) == 4
    pids.append(result["engine"]["pid"])  # the master
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)]
    assert not _locust_processes()


def _worker(port: int, log: Path) -> subprocess.Popen[bytes]:
    """A generator started the documented way, as it would be on another machine."""
    locustfile = Path(distributed.__file__).with_name("distributed_locustfile.py")
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "locust", "--worker", "-f", str(locustfile), "--master-host",
                                 "127.0.0.1", "--master-port", str(port), "--loglevel", "WARNING"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def test_generators_started_elsewhere_and_one_lost_by_heartbeat(target: str, tmp_path: Path) -> None:
    """The master alone (``master=HOST:PORT``): Locust's heartbeat finds the generator that stopped answering."""
    from pytest_wsgi502.services.process import free_port

    port = free_port()
    workers = [_worker(port, tmp_path / f"w{i}.log") for i in range(2)]
    workdir = tmp_path / "run"

    def killer() -> None:
        events = workdir / "events.jsonl"
        until = time.monotonic() + 60
        while time.monotonic() < until:
            for line in events.read_text().splitlines() if events.exists() else []:
                event = json.loads(line)
                if event.get("event") == "started":
                    time.sleep(max(0.0, event["start_at"] - time.time()) + 1.0)
                    g1 = next(g for g in event["generators"] if g["g"] == 1)
                    os.kill(g1["pid"], signal.SIGKILL)
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        result = distributed.run_distributed(_spec(target, duration=10.0, max_requests=100_000),
                                             master=f"127.0.0.1:{port}", expect_generators=2, workdir=workdir)
    finally:
        thread.join(10)
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
            w.wait(10)
    assert re.fullmatch(r"generator 1 lost at t=\d+\.\ds \(no heartbeat for 3s on \S+ pid \d+\)",
                        result["engine_error"] or ""), result["engine_error"]
    assert not _locust_processes()


def test_generators_that_never_connect_end_the_run_with_the_count(tmp_path: Path) -> None:
    from pytest_wsgi502.services.process import free_port

    port = free_port()
    worker = _worker(port, tmp_path / "w.log")
    try:
        t0 = time.monotonic()
        result = distributed.run_distributed(LoadSpec("http://127.0.0.1:9", concurrency=4, duration=1.0),
                                             master=f"127.0.0.1:{port}", expect_generators=2, workdir=tmp_path / "r",
                                             start_timeout=4.0)
        assert time.monotonic() - t0 < 4.0 + 5  # the bounded wait (4 s) plus the master's start, not more
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    assert result["engine_error"] == "1 of 2 generators connected within 4s"
    assert result["stats"].requests == 0
    assert not _locust_processes()
