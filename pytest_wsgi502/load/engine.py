"""The load engine: httpx API in, mergeable ``Stats`` out, and an honest account of its own capacity.

Profiles
- ``closed``: N virtual users, each sends, waits for the answer, thinks ``think_time``, repeats. A
  throughput ceiling; it hides stalls (a frozen server just stops being asked).
- ``open``: a constant rate, wrk2-style. Request *i* has an intended send time; connection *k* owns every
  C-th slot. Latency is measured from the intended time, so a 1 s stall counts in full for every request
  that should have been sent during it (coordinated-omission correction).
- ``ramp``: like ``open`` with the rate rising linearly from ``start_rate`` to ``rate``.

Users write requests with the httpx API (``httpx.Request`` templates, ``httpx.Response`` to a ``verify``
callable, any ``httpx.AsyncBaseTransport``). With the default ``FastTransport`` and no ``verify`` callable the
hot path skips building ``httpx.Response`` objects; the body check (``verify_contains``) runs on raw bytes.
Every failure is counted, never raised; a target that refuses every connection for 2 s ends the run with a
reason. Every run is bounded by a request budget and a deadline, and aimed at loopback unless allowed.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import ipaddress
import math
import os
import random
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from pytest_wsgi502.load.transport import FastTransport, serialize
from pytest_wsgi502.metrics.stats import Stats, new_histogram

MODES = ("closed", "open", "ramp")
DEAD_TARGET_S = 2.0  # no success and only refused connects for this long: the target is gone


@dataclass(frozen=True)
class Endpoint:
    path: str  # may contain {n}: a random integer in 1..n_max per request
    weight: float = 1.0
    verify_contains: str = ""  # a 2xx whose body lacks this (after {n} substitution) is a "verify" error
    method: str = "GET"


@dataclass(frozen=True)
class LoadSpec:
    base_url: str
    path: str = "/"  # the single endpoint, unless ``mix`` is given
    n_max: int = 1000
    verify_contains: str = ""
    mix: tuple[Endpoint, ...] = ()  # weighted request mix; replaces path/verify_contains
    mode: str = "closed"
    concurrency: int = 32  # closed: virtual users; open/ramp: connections
    rate: float = 0.0  # open: requests/s; ramp: final requests/s
    start_rate: float = 0.0  # ramp: initial requests/s
    think_time: float = 0.0  # closed: pause between a response and the next request of a user
    duration: float = 10.0
    max_requests: int = 1_000_000
    timeout: float = 65.0
    drain: float = 10.0  # after the deadline, wait this long for in-flight requests, then count them as timeouts
    processes: int = 1
    allow_remote: bool = False
    seed: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.mix or (Endpoint(self.path, 1.0, self.verify_contains),)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"load mode {self.mode!r} unknown; choose one of {', '.join(MODES)}")
        if self.mode in ("open", "ramp") and self.rate <= 0:
            raise ValueError(f"{self.mode} load needs a rate > 0 (requests per second)")
        if self.concurrency < 1 or self.processes < 1 or self.duration <= 0 or self.max_requests < 1:
            raise ValueError("concurrency, processes, duration and max_requests must be > 0")
        if self.processes > self.concurrency:
            raise ValueError(f"{self.processes} processes need at least as many connections (got {self.concurrency})")
        if any(e.weight <= 0 for e in self.endpoints()):
            raise ValueError("every endpoint of the mix needs a weight > 0")

    def share(self, p: int) -> LoadSpec:
        """This spec's part for engine process ``p`` of ``processes`` (connections, rate and budget split)."""
        n = self.processes
        part = lambda total: total // n + (1 if p < total % n else 0)  # noqa: E731
        return replace(self, concurrency=part(self.concurrency), max_requests=max(1, part(self.max_requests)),
                       seed=self.seed * 1000 + p)


class RemoteTargetError(ValueError):
    pass


def check_loopback(url: str) -> None:
    """Load is only ever aimed at this machine unless the caller opts in explicitly."""
    host = httpx.URL(url).host
    try:
        addrs = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise RemoteTargetError(f"cannot resolve load target host {host!r}: {exc}") from None
    remote = [a for a in addrs if not ipaddress.ip_address(str(a).split("%")[0]).is_loopback]
    if remote:
        raise RemoteTargetError(
            f"load target {url} resolves to non-loopback {', '.join(sorted(remote))}; "
            "pass allow_remote=True to aim load at another machine"
        )


def classify(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "reset"
    return "protocol"


def slot_time(i: int, spec: LoadSpec) -> float:
    """Intended send offset (s) of global request slot ``i`` (open: i/rate; ramp: linear rate)."""
    if spec.mode == "open" or spec.start_rate == spec.rate:
        return i / spec.rate
    r0, a = spec.start_rate, (spec.rate - spec.start_rate) / spec.duration
    return (-r0 + math.sqrt(r0 * r0 + 2 * a * i)) / a


class _Templates:
    """httpx.Request objects built once per (endpoint, n) and reused; the transport caches their bytes."""

    def __init__(self, spec: LoadSpec) -> None:
        self.base = httpx.URL(spec.base_url)
        self.endpoints = spec.endpoints()
        self.n_max, self.headers = spec.n_max, spec.headers
        total = sum(e.weight for e in self.endpoints)
        self.cumulative = [sum(e.weight for e in self.endpoints[: i + 1]) / total for i in range(len(self.endpoints))]
        self._cache: dict[tuple[int, int], tuple[httpx.Request, bytes, bytes]] = {}
        self._rng = random.Random(spec.seed)

    def pick(self) -> tuple[httpx.Request, bytes, bytes]:
        """(request, its wire bytes, the bytes a 2xx body must contain)"""
        rng = self._rng
        e = 0 if len(self.endpoints) == 1 else bisect.bisect_left(self.cumulative, rng.random())
        ep = self.endpoints[e]
        n = rng.randint(1, self.n_max) if "{n}" in ep.path or "{n}" in ep.verify_contains else 0
        hit = self._cache.get((e, n))
        if hit is None:
            req = httpx.Request(ep.method, self.base.join(ep.path.replace("{n}", str(n))), headers=self.headers)
            hit = self._cache[(e, n)] = (req, serialize(req), ep.verify_contains.replace("{n}", str(n)).encode())
        return hit


class _Run:
    """Shared state of one engine process: stats, bounds, and the self-capacity measurements."""

    def __init__(self, spec: LoadSpec, clock: Callable[[], float]) -> None:
        self.spec, self.clock = spec, clock
        self.stats = Stats(started=time.time())
        self.t0 = clock()
        self.wall0 = self.stats.started
        self.deadline = self.t0 + spec.duration
        self.budget = spec.max_requests
        self.abort_reason: str | None = None
        self.last_ok = self.t0
        self.send_lag = new_histogram(2)  # open/ramp: how late the engine sent, beyond waiting for the server
        self.spin_s = 0.0  # wall time spent yield-spinning to exact send times (not work)

    def going(self) -> bool:
        return self.budget > 0 and self.abort_reason is None and self.clock() < self.deadline

    def done(self, status: int | None, start: float, end: float, error: str | None) -> None:
        self.stats.record(status, end - start, self.wall0 + end - self.t0, error)
        if status is not None:
            self.last_ok = end
        elif end - self.last_ok > DEAD_TARGET_S and self.abort_reason is None:
            what = "refused every connection" if error == "connect" else f"gave no response ({error})"
            self.abort_reason = f"target {what} for {DEAD_TARGET_S:.0f}s: {self.spec.base_url}"


async def _send(transport: httpx.AsyncBaseTransport, fast: bool, request: httpx.Request, raw: bytes,
                verify: Callable[[httpx.Response], bool] | None, expect: bytes) -> tuple[int, str | None]:
    """One request; returns (status, error class or None). Raises on transport failure."""
    if fast:
        status, _headers, body = await transport.roundtrip(request, raw)  # type: ignore[attr-defined]
        bad = status < 300 and expect and expect not in body
        return status, "verify" if bad else None
    response = await transport.handle_async_request(request)
    await response.aread()
    status = response.status_code
    ok = status >= 300 or ((not expect or expect in response.content) and (verify is None or verify(response)))
    return status, None if ok else "verify"


async def _connection(run: _Run, templates: _Templates, transport: httpx.AsyncBaseTransport,
                      verify: Callable[[httpx.Response], bool] | None, k: int, process: int) -> None:
    spec, clock = run.spec, run.clock
    fast = isinstance(transport, FastTransport) and verify is None
    open_loop = spec.mode != "closed"
    m, prev_end = 0, run.t0
    try:
        while run.going():
            if open_loop:
                # global slot of this connection's m-th request: connections interleave, processes interleave
                slot = (k + m * spec.concurrency) * spec.processes + process
                m += 1
                intended = run.t0 + slot_time(slot, spec)
                if intended >= run.deadline:
                    break
                wait = intended - clock()
                if wait > 0.001:
                    # uvloop's timers tick in whole milliseconds: wake up to 1 ms early, then yield to the loop
                    # until due. Costs at most rate x 1 ms of CPU a second (30 % at 300 req/s, less when busy).
                    await asyncio.sleep(wait - 0.001)
                spin_from = clock()
                while clock() < intended:
                    await asyncio.sleep(0)
                start = clock()
                run.spin_s += start - spin_from
                run.send_lag.record_value(max(1, int((start - max(intended, prev_end)) * 1e6)))
                measure_from = intended
            else:
                start = measure_from = clock()
            run.budget -= 1
            request, raw, expect = templates.pick()
            try:
                status, error = await _send(transport, fast, request, raw, verify, expect)
            except Exception as exc:  # every failure is data, never raised out of the engine
                prev_end = clock()
                run.done(None, measure_from, prev_end, classify(exc))
                continue
            prev_end = clock()
            run.done(status, measure_from, prev_end, error)
            if spec.think_time and not open_loop:
                await asyncio.sleep(spec.think_time)
    finally:
        await transport.aclose()


async def _lag_probe(run: _Run, lag: Any) -> None:
    """Event-loop lag: how late a 10 ms timer fires. A loaded engine shows it before anything else."""
    while True:
        before = run.clock()
        await asyncio.sleep(0.01)
        lag.record_value(max(1, int((run.clock() - before - 0.01) * 1e6)))


Progress = Callable[[dict[str, Any]], None]


async def _progress(run: _Run, report: Progress, every: float) -> None:
    """Calls ``report`` every ``every`` seconds with what the run has done so far (never raises into the run)."""
    while True:
        await asyncio.sleep(every)
        stats = run.stats
        elapsed = run.clock() - run.t0
        with contextlib.suppress(Exception):
            report({"elapsed": elapsed, "duration": run.spec.duration, "requests": stats.requests,
                    "errors": stats.error_count, "rps": stats.requests / elapsed if elapsed > 0 else 0.0})


async def drive(
    spec: LoadSpec,
    transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
    verify: Callable[[httpx.Response], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    process: int = 0,
    progress: Progress | None = None,
    progress_every: float = 1.0,
) -> tuple[Stats, dict[str, Any]]:
    """Run ``spec`` (one process's share) on the running loop. Returns stats and the engine's self-report."""
    spec.validate()
    if not spec.allow_remote:
        check_loopback(spec.base_url)
    factory = transport_factory or (lambda: FastTransport(timeout=spec.timeout))
    templates = _Templates(spec)
    run = _Run(spec, clock)
    lag = new_histogram(2)
    probe = asyncio.ensure_future(_lag_probe(run, lag))
    ticker = asyncio.ensure_future(_progress(run, progress, progress_every)) if progress else None
    cpu0 = time.process_time()
    tasks = [asyncio.ensure_future(_connection(run, templates, factory(), verify, k, process))
             for k in range(spec.concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=spec.duration + spec.drain)
    for _ in pending:  # stuck past the drain window: a timeout, counted, then cancelled
        run.stats.record(None, 0.0, time.time(), "timeout")
    helpers = [t for t in (probe, ticker) if t is not None]
    for task in (*pending, *helpers):
        task.cancel()
    await asyncio.gather(*pending, *helpers, return_exceptions=True)
    wall = clock() - run.t0
    run.stats.ended = run.wall0 + wall
    engine = {
        "cpu_percent": round(100 * (time.process_time() - cpu0) / wall, 1) if wall else 0.0,
        "loop_lag_p99_ms": lag.get_value_at_percentile(99) / 1000 if lag.get_total_count() else 0.0,
        "send_lag_p99_ms": run.send_lag.get_value_at_percentile(99) / 1000 if run.send_lag.get_total_count() else None,
        "aborted": run.abort_reason,
        "cpu_s": time.process_time() - cpu0,
        "spin_s": run.spin_s,
        "requests": run.stats.requests,
    }
    return run.stats, engine


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None


@contextlib.contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """No cyclic-GC pauses inside a measurement (the hot path makes no cycles; refcounting frees it)."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _child(spec: LoadSpec, process: int, go: Any, out: Any) -> None:
    """Engine process body (spawned): wait for the common start, drive, send stats back over the queue."""
    try:
        out.put(("ready", process, None, None))
        go.wait(60)
        with _no_gc_pauses(), asyncio.Runner(loop_factory=_loop_factory()) as runner:
            stats, engine = runner.run(drive(spec, process=process))
        out.put((process, stats.to_wire(), engine, None))
    except BaseException as exc:  # reported to the parent, which decides
        out.put((process, None, None, f"{type(exc).__name__}: {exc}"))


def _run_processes(spec: LoadSpec) -> tuple[Stats, list[dict[str, Any]]]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # the parent has threads (samplers): fork would copy their locks
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(spec.share(p), p, go, out), daemon=True, name=f"wsgi502-engine-{p}")
             for p in range(spec.processes)]
    for p in procs:
        p.start()
    stats, errors = Stats(), []
    engines: list[dict[str, Any]] = [{} for _ in procs]
    try:
        for _ in procs:  # every process imported and ready: start together
            kind, p_idx, _, err = out.get(timeout=60)
            if kind != "ready":
                raise RuntimeError(f"engine process {p_idx} failed to start: {err}")
        go.set()
        for _ in procs:
            p_idx, wire, engine, err = out.get(timeout=spec.duration + spec.drain + 60)
            if err:
                errors.append(f"engine process {p_idx}: {err}")
            else:
                stats.merge(Stats.from_wire(wire))
                engines[p_idx] = engine
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    if errors:
        raise RuntimeError("; ".join(errors))
    return stats, engines


@contextlib.contextmanager
def _elapsed_ticker(spec: LoadSpec, progress: Progress | None, every: float) -> Iterator[None]:
    if progress is None:
        yield
        return
    import threading

    stop, t0 = threading.Event(), time.monotonic()

    def tick() -> None:
        while not stop.wait(every):
            with contextlib.suppress(Exception):
                progress({"elapsed": time.monotonic() - t0, "duration": spec.duration})

    thread = threading.Thread(target=tick, daemon=True, name="wsgi502-progress")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(2)


def intended_rate(spec: LoadSpec) -> float:
    """The mean rate an open/ramp spec asks for (0 for closed loop)."""
    if spec.mode == "open":
        return spec.rate
    if spec.mode == "ramp":
        return (spec.rate + spec.start_rate) / 2
    return 0.0


def generator_verdict(spec: LoadSpec, stats: Stats, engines: Sequence[dict[str, Any]]) -> tuple[bool, str | None]:
    """Was the engine, not the server, the bottleneck? (True, reason) when any process was saturated or,
    in open/ramp mode, sent late on its own account."""
    for p, e in enumerate(engines):
        if spec.mode != "closed" and e.get("requests"):
            # CPU the intended rate needs at the measured cost per request (spinning excluded): robust even
            # when other processes starve the engine, which then never shows 90 % itself
            work_us = 1e6 * max(0.0, e.get("cpu_s", 0.0) - e.get("spin_s", 0.0)) / e["requests"]
            need = work_us * intended_rate(spec) / spec.processes / 1e6
            if need >= 0.9:
                return True, (f"engine process {p} needs {need:.2f} cores for {intended_rate(spec):.0f} req/s "
                              f"at {work_us:.0f} us of CPU per request")
        if e.get("cpu_percent", 0) >= 90:
            return True, f"engine process {p} used {e['cpu_percent']:.0f}% of a core"
        if e.get("loop_lag_p99_ms", 0) >= 25:
            return True, f"engine process {p} event loop lagged {e['loop_lag_p99_ms']:.0f} ms (p99)"
        if spec.mode != "closed" and (e.get("send_lag_p99_ms") or 0) >= 10:
            return True, f"engine process {p} sent {e['send_lag_p99_ms']:.0f} ms late (p99) with free connections"
    return False, None


def run(spec: LoadSpec, transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
        verify: Callable[[httpx.Response], bool] | None = None, progress: Progress | None = None,
        progress_every: float = 1.0) -> dict[str, Any]:
    """Run a load on fresh event loops (uvloop), in ``spec.processes`` processes; merge; judge the engine.

    ``progress`` (one process only) is called every ``progress_every`` seconds with elapsed, duration, requests,
    errors and req/s so far; with several processes it gets elapsed and duration only (the counts live in the
    children until the end)."""
    spec.validate()
    if not spec.allow_remote:
        check_loopback(spec.base_url)
    if spec.processes > 1:
        if transport_factory is not None or verify is not None:
            raise ValueError("a custom transport or verify callable runs in one process only (processes=1)")
        with _elapsed_ticker(spec, progress, progress_every):
            stats, engines = _run_processes(spec)
    else:
        with _no_gc_pauses(), asyncio.Runner(loop_factory=_loop_factory()) as runner:
            stats, engine = runner.run(drive(spec, transport_factory, verify, progress=progress,
                                             progress_every=progress_every))
        engines = [engine]
    bound, reason = generator_verdict(spec, stats, engines)
    intended = intended_rate(spec) or None
    achieved = stats.requests / stats.duration if stats.duration else 0.0
    return {
        "stats": stats,
        "engine": {
            "mode": spec.mode,
            "concurrency": spec.concurrency,
            "processes": spec.processes,
            "intended_rps": intended,
            "achieved_rps": round(achieved, 1),
            "cpu_percent": max(e.get("cpu_percent", 0.0) for e in engines),
            "cpu_us_per_request": round(1e6 * sum(e.get("cpu_s", 0.0) for e in engines) / stats.requests, 1)
            if stats.requests else None,
            "loop_lag_p99_ms": max(e.get("loop_lag_p99_ms", 0.0) for e in engines),
            "send_lag_p99_ms": None if spec.mode == "closed" else max(e.get("send_lag_p99_ms") or 0.0 for e in engines),
            "per_process": list(engines),
            "pid": os.getpid(),
        },
        "generator_bound": bound,
        "generator_bound_reason": reason,
        "aborted": next((e["aborted"] for e in engines if e.get("aborted")), None),
    }
