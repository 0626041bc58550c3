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

from pytest_wsgi502.config import values
from pytest_wsgi502.config.matrix import content_type, parse_statuses
from pytest_wsgi502.config.modes import load_mode
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.load.transport import FastTransport, serialize
from pytest_wsgi502.metrics.stats import Stats, new_histogram

DEAD_TARGET_S = 2.0  # no success and only refused connects for this long: the target is gone
LOOP_LAG_MS = 25.0  # event-loop lag p99 at or above this: the engine distorted the measurement
SEND_LAG_MS = 10.0  # open/ramp: sends this late (p99) with free connections: the same
LIMIT_CPU = 0.8  # a lagging loop thread that used this share of a core itself was the limit
STARVED_WAIT = 0.05  # a lagging loop thread that waited this share of the run for a CPU was starved
ADVICE_LIMIT = "add --wsgi-processes or lower the concurrency/rate"
ADVICE_STARVED = ("the server under test took the engine's CPUs: enable isolation (--wsgi-isolation=auto), "
                  "run fewer workers, or use a bigger machine")
ADVICE_STARVED_ISOLATED = ("isolation kept the servers under test off those CPUs, so the proxy or a process outside "
                           "this run took them: measure on a quiet machine, or run the cell again")


def schedstat() -> tuple[float, float] | None:
    """(CPU time, run-queue wait time) of the calling thread in seconds, from /proc/thread-self/schedstat: the
    wait is time it was runnable but another task had its CPU. None where the kernel does not offer it."""
    try:
        with open("/proc/thread-self/schedstat") as fh:
            run_ns, wait_ns, _slices = fh.read().split()
        return int(run_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Endpoint:
    path: str  # origin-form (``/a?b=1``); may contain {n}: a random integer in 1..n_max per request
    weight: float = 1.0
    verify_contains: str = ""  # a 2xx whose body lacks this (after {n} substitution) is a "verify" error
    method: str = "GET"
    verify_status: str = "2xx"  # a status below 400 outside these is a "verify" error (4xx/5xx count as such)
    verify_content_type: str = ""  # a 2xx whose Content-Type does not start with this is a "verify" error

    def checks(self) -> dict[str, Any]:
        """What every response to this endpoint is checked for (the JSON's ``verify``)."""
        return {"path": self.path, "method": self.method, "status": self.verify_status,
                "contains": self.verify_contains or None, "content_type": self.verify_content_type or None,
                "body_checked": bool(self.verify_contains)}


# set by the engine from the target URL and the body; a user value would break the framing or the target's name
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})


@dataclass(frozen=True)
class LoadSpec:
    """One load profile. ``validate()`` checks every field (``ConfigError``, one line) before anything is sent.

    ``allow_remote`` is the one switch that lets load leave this machine: without it the base URL's host must
    resolve only to loopback addresses (127.0.0.0/8, ::1), and the engine connects to the address it checked.
    Paths are origin-form, so no path, mix entry or request URL can name another host. The plugin's
    ``wsgi_load(...)`` fixture never passes ``base_url`` or ``allow_remote`` from a test."""

    base_url: str
    path: str = "/"  # the single endpoint, unless ``mix`` is given
    n_max: int = 1000
    verify_contains: str = ""
    verify_status: str = "2xx"  # statuses below 400 accepted for ``path`` (Endpoint.verify_status)
    verify_content_type: str = ""  # media type a 2xx of ``path`` must have (Endpoint.verify_content_type)
    mix: tuple[Endpoint, ...] = ()  # weighted request mix; replaces path/verify_contains/verify_*
    mode: str = "closed"
    concurrency: int = 32  # closed: virtual users; open/ramp: connections
    rate: float = 0.0  # open: requests/s; ramp: final requests/s
    start_rate: float = 0.0  # ramp: initial requests/s
    think_time: float = 0.0  # closed: pause between a response and the next request of a user
    duration: float = 10.0
    # seconds at the start whose requests count as requests and errors but not in latency and throughput: the
    # start-up transient (first connections, cold caches), measured to carry uwsgi-8w's p99 CV (bench/README)
    warmup: float = 0.0
    max_requests: int = 1_000_000
    timeout: float = 65.0
    drain: float = 10.0  # after the deadline, wait this long for in-flight requests, then count them as timeouts
    processes: int = 1
    allow_remote: bool = False  # the documented opt-out of the loopback guard (see the class docstring)
    seed: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.mix or (Endpoint(self.path, 1.0, self.verify_contains, "GET", self.verify_status,
                                     self.verify_content_type),)

    def validate(self, share: bool = False) -> None:
        """Every field finite, bounded and of its type; paths origin-form; methods and headers tokens/text.
        ``share``: this is one process's part (``share()``), whose connections are split but not its processes."""
        base_url_parts(self.base_url)
        load_mode(self.mode)
        for name, lo, hi in (("concurrency", 1, values.MAX_CONCURRENCY), ("processes", 1, values.MAX_CONCURRENCY),
                             ("max_requests", 1, values.MAX_COUNT), ("n_max", 1, values.MAX_COUNT)):
            values.number(getattr(self, name), name, lo, hi, integer=True)
        values.number(self.seed, "seed", -(2**62), 2**62, integer=True)
        values.number(self.rate, "rate", 0, values.MAX_RATE)
        values.number(self.start_rate, "start_rate", 0, values.MAX_RATE)
        values.number(self.duration, "duration", 0.001, values.DAY)
        values.number(self.timeout, "timeout", 0.001, values.DAY)
        values.number(self.think_time, "think_time", 0, values.DAY)
        values.number(self.drain, "drain", 0, values.DAY)
        values.number(self.warmup, "warmup", 0, values.DAY)
        if self.warmup >= self.duration:
            raise ConfigError(f"warmup ({self.warmup:g}s) must be shorter than the duration ({self.duration:g}s): "
                              "nothing would be measured")
        if self.mode in ("open", "ramp") and self.rate <= 0:
            raise ConfigError(f"{self.mode} load needs a rate > 0 (requests per second)")
        if self.processes > self.concurrency and not share:
            raise ConfigError(f"{self.processes} processes need at least as many connections "
                              f"(got {self.concurrency})")
        if not isinstance(self.allow_remote, bool):
            raise ConfigError(f"allow_remote must be True or False, got {values.shown(self.allow_remote)}")
        if not isinstance(self.headers, dict):
            raise ConfigError(f"headers must be a dict of name: value, got {values.shown(self.headers)}")
        for name, value in self.headers.items():
            values.header(name, value, "header")
            if name.lower() in _RESERVED_HEADERS:
                raise ConfigError(f"header {name} is set by the engine (from the target URL and the body); "
                                  "leave it out")
        if not isinstance(self.mix, tuple | list):
            raise ConfigError(f"mix must be a sequence of endpoints, got {values.shown(self.mix)}")
        if self.mix:
            for i, e in enumerate(self.mix):
                if not isinstance(e, Endpoint):
                    raise ConfigError(f"mix[{i}] must be an Endpoint, got {values.shown(e)}")
        else:
            _path(self.path, "path")
            _text(self.verify_contains, "verify_contains")
            parse_statuses(self.verify_status, "verify_status")
            content_type(self.verify_content_type, "verify_content_type")
        for i, e in enumerate(self.mix):
            _path(e.path, f"mix[{i}].path")
            values.number(e.weight, f"mix[{i}].weight", 0, 1e9,
                          lo_open=True)
            values.method(e.method, f"mix[{i}].method")
            _text(e.verify_contains, f"mix[{i}].verify_contains")
            parse_statuses(e.verify_status, f"mix[{i}].verify_status")
            content_type(e.verify_content_type, f"mix[{i}].verify_content_type")

    def share(self, p: int) -> LoadSpec:
        """This spec's part for engine process ``p`` of ``processes`` (connections, rate and budget split)."""
        n = self.processes

        def part(total: int) -> int:
            return total // n + (1 if p < total % n else 0)

        return replace(self, concurrency=part(self.concurrency), max_requests=max(1, part(self.max_requests)),
                       seed=self.seed * 1000 + p)


def _path(value: Any, what: str) -> None:
    """Origin-form, and sent as written: httpx would resolve ``.``/``..`` segments (``/..//x`` becomes ``//x``)."""
    values.origin_form(value, what)
    if any(seg in (".", "..") for seg in value.split("?", 1)[0].split("/")):
        raise ConfigError(f"{what} must not contain '.' or '..' segments (they would be rewritten); write the path "
                          f"they stand for, got {values.shown(value)}")


def _text(value: Any, what: str) -> None:
    if not isinstance(value, str) or len(value) > 8000:
        raise ConfigError(f"{what} must be a string of at most 8000 characters, got {values.shown(value)}")


def base_url_parts(base_url: Any) -> tuple[str, str, int]:
    """(scheme, host, port) of a load target URL: ``http(s)://host[:port]`` with at most a ``/`` path (the request
    path is ``path``/``mix``), no user info, query or fragment."""
    values.single_line(base_url, "base_url")
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ConfigError(f"base_url {values.shown(base_url)} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"base_url must be http://host:port, got {values.shown(base_url)}")
    if url.userinfo or url.query or url.fragment or url.raw_path not in (b"", b"/") or "?" in base_url:
        raise ConfigError(f"base_url must be scheme://host:port only (the request path goes in path or mix), "
                          f"got {values.shown(base_url)}")
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


class RemoteTargetError(ConfigError):
    """The load target is (or resolves to) another machine and ``allow_remote`` is not set."""


@dataclass(frozen=True)
class ConnectTarget:
    """Where the engine connects: the base URL's host resolved once, every address checked (loopback only unless
    ``allow_remote``). The transport connects to ``addresses``, never to a name, so what was checked is what is
    reached; the Host header keeps the original name."""

    host: str
    port: int
    addresses: tuple[str, ...]


AddrInfo = Sequence[tuple[Any, ...]]


def _target(base_url: str, host: str, port: int, infos: AddrInfo, allow_remote: bool) -> ConnectTarget:
    addrs = tuple(dict.fromkeys(str(info[4][0]) for info in infos))  # resolver order, duplicates dropped
    if not addrs:
        raise RemoteTargetError(f"load target host {values.shown(host)} resolves to no address")
    if not allow_remote:
        remote = [a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
        if remote:
            raise RemoteTargetError(
                f"load target {values.shown(base_url)} resolves to non-loopback {', '.join(sorted(remote))}; "
                "load only goes to this machine unless LoadSpec(allow_remote=True)")
    return ConnectTarget(host, port, addrs)


def resolve_target(base_url: str, allow_remote: bool = False) -> ConnectTarget:
    """Resolve the base URL's host once (``socket.getaddrinfo``) and check every address."""
    _, host, port = base_url_parts(base_url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RemoteTargetError(f"cannot resolve load target host {values.shown(host)}: {exc}") from None
    return _target(base_url, host, port, infos, allow_remote)


async def resolve_target_async(base_url: str, allow_remote: bool = False) -> ConnectTarget:
    """``resolve_target`` through the running loop's resolver."""
    _, host, port = base_url_parts(base_url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RemoteTargetError(f"cannot resolve load target host {values.shown(host)}: {exc}") from None
    return _target(base_url, host, port, infos, allow_remote)


def check_loopback(url: str) -> None:
    """Load is only ever aimed at this machine unless the caller opts in explicitly (``allow_remote``)."""
    resolve_target(url)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (newlines escaped), shortened: safe for a report line."""
    text = f"{type(exc).__name__}: {exc}".replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    disc = r0 * r0 + 2 * a * i
    if disc < 0:  # a falling ramp never reaches slot i (it would need the rate to go below 0): never due
        return math.inf
    return (-r0 + math.sqrt(disc)) / a


class _Templates:
    """httpx.Request objects built once per (endpoint, n) and reused; the transport caches their bytes."""

    def __init__(self, spec: LoadSpec) -> None:
        self.base = httpx.URL(spec.base_url)
        self.origin = (self.base.scheme, self.base.host, self.base.port)
        self.endpoints = spec.endpoints()
        self.n_max, self.headers = spec.n_max, spec.headers
        total = sum(e.weight for e in self.endpoints)
        self.cumulative = [sum(e.weight for e in self.endpoints[: i + 1]) / total for i in range(len(self.endpoints))]
        self._cache: dict[tuple[int, int], tuple[httpx.Request, bytes, _Check]] = {}
        self._checks = [(parse_statuses(e.verify_status), MediaType(content_type(e.verify_content_type)))
                        for e in self.endpoints]
        self._rng = random.Random(spec.seed)

    def pick(self) -> tuple[httpx.Request, bytes, _Check]:
        """(request, its wire bytes, what its response is checked for)"""
        rng = self._rng
        e = 0 if len(self.endpoints) == 1 else bisect.bisect_left(self.cumulative, rng.random())
        ep = self.endpoints[e]
        n = rng.randint(1, self.n_max) if "{n}" in ep.path or "{n}" in ep.verify_contains else 0
        hit = self._cache.get((e, n))
        if hit is None:
            # the validated base with the origin-form path, verbatim (no join: it resolves dot segments)
            url = self.base.copy_with(raw_path=ep.path.replace("{n}", str(n)).encode("ascii"))
            if (url.scheme, url.host, url.port) != self.origin:  # cannot happen to an origin-form path
                raise ConfigError(f"request path {values.shown(ep.path)} leaves the target {self.base}")
            req = httpx.Request(ep.method, url, headers=self.headers)
            statuses, ctype = self._checks[e]
            hit = self._cache[(e, n)] = (req, serialize(req),
                                         (ep.verify_contains.replace("{n}", str(n)).encode(), statuses, ctype))
        return hit


class _Run:
    """Shared state of one engine process: stats, bounds, and the self-capacity measurements."""

    def __init__(self, spec: LoadSpec, clock: Callable[[], float]) -> None:
        self.spec, self.clock = spec, clock
        self.stats = Stats(started=time.time())
        self.stats.warmup_until = self.stats.started + spec.warmup if spec.warmup else 0.0
        self.t0 = clock()
        self.wall0 = self.stats.started
        self.deadline = self.t0 + spec.duration
        self.stats.window_end = self.wall0 + spec.duration  # req/s counts completions up to here (metrics/stats.py)
        self.budget = spec.max_requests
        self.abort_reason: str | None = None
        self.engine_error: str | None = None  # the first failure of the engine itself (a task that died)
        self.last_ok = self.t0
        self.send_lag = new_histogram(2)  # open/ramp: how late the engine sent, beyond waiting for the server
        self.spin_s = 0.0  # wall time spent yield-spinning to exact send times (not work)
        self.stopped: str | None = None  # why a stop rule ended the load before its duration (duration=auto)

    def going(self) -> bool:
        return self.budget > 0 and self.abort_reason is None and self.engine_error is None and \
            self.clock() < self.deadline

    def fail(self, what: str, exc: BaseException) -> None:
        """The engine (not the target) failed: the first reason ends the run and is reported."""
        if self.engine_error is None:
            self.engine_error = f"{what}: {one_line(exc)}"

    def done(self, status: int | None, start: float, end: float, error: str | None) -> None:
        self.stats.record(status, end - start, self.wall0 + end - self.t0, error)
        if status is not None:
            self.last_ok = end
        elif end - self.last_ok > DEAD_TARGET_S and self.abort_reason is None:
            what = "refused every connection" if error == "connect" else f"gave no response ({error})"
            self.abort_reason = f"target {what} for {DEAD_TARGET_S:.0f}s: {self.spec.base_url}"


# (body substring, accepted statuses below 400, Content-Type prefix): what a response is checked for
class MediaType:
    """What a 2xx's Content-Type must start with: fixed, nothing (""), or learned (``auto``): the first 2xx of the
    endpoint in this engine process sets it, every later 2xx must match it."""

    __slots__ = ("learn", "value")

    def __init__(self, text: str) -> None:
        self.learn = text == "auto"
        self.value = b"" if self.learn else text.encode("ascii")


_Check = tuple[bytes, frozenset[int], MediaType]


def judged(status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes, check: _Check) -> str | None:
    """"verify" when a response below 400 is not what the endpoint expects: a status outside ``verify_status``,
    or a 2xx without the body substring or with another Content-Type. 4xx/5xx are counted by their status."""
    expect, statuses, ctype = check
    if status >= 400:
        return None
    if status not in statuses:
        return "verify"
    if status >= 300:
        return None
    if expect and expect not in body:
        return "verify"
    if ctype.value or ctype.learn:
        got = next((v for k, v in headers if k.lower() == b"content-type"), b"").lower()
        if not ctype.value:  # auto: the first 2xx sets the media type (parameters such as charset dropped)
            ctype.value = got.split(b";", 1)[0].strip()
            ctype.learn = False
        elif not got.startswith(ctype.value):
            return "verify"
    return None


async def _send(transport: httpx.AsyncBaseTransport, fast: bool, request: httpx.Request, raw: bytes,
                verify: Callable[[httpx.Response], bool] | None, check: _Check) -> tuple[int, str | None]:
    """One request; returns (status, error class or None). Raises on transport failure."""
    if fast:
        status, headers, body = await transport.roundtrip(request, raw)  # type: ignore[attr-defined]
        return status, judged(status, headers, body, check)
    response = await transport.handle_async_request(request)
    await response.aread()
    status = response.status_code
    error = judged(status, response.headers.raw, response.content, check)
    if error is None and status < 300 and verify is not None and not verify(response):
        error = "verify"
    return status, error


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
                if run.budget <= 0 or run.abort_reason or run.engine_error or clock() >= run.deadline:
                    break  # ended while this one waited (a stop rule moves the deadline)
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
    except Exception as exc:  # the scheduling code itself (slot_time, send_lag, templates.pick, ...): not data
        run.fail(f"connection task {k} died", exc)
    finally:
        try:
            await transport.aclose()
        except Exception as exc:
            run.fail(f"connection task {k} could not close its transport", exc)


async def _lag_probe(run: _Run, lag: Any) -> None:
    """Event-loop lag: how late a 10 ms timer fires. A loaded engine shows it before anything else."""
    while True:
        before = run.clock()
        await asyncio.sleep(0.01)
        lag.record_value(max(1, int((run.clock() - before - 0.01) * 1e6)))


Progress = Callable[[dict[str, Any]], None]
StopRule = Callable[[Stats], str | None]  # the live stats -> a reason to stop now, or None (metrics/sequential.py)


async def _stopper(run: _Run, stop: StopRule, every: float) -> None:
    """Asks ``stop`` every ``every`` seconds; a reason ends the load as the deadline would (in-flight requests
    are answered or time out within the drain window, no new ones are sent)."""
    while True:
        await asyncio.sleep(every)
        try:
            reason = stop(run.stats)
        except Exception as exc:  # the rule is the caller's code: its failure is the engine's error, never silent
            run.fail("the stop rule failed", exc)
            return
        if reason:
            run.stopped = reason
            run.deadline = min(run.deadline, run.clock())
            run.stats.window_end = min(run.stats.window_end, run.wall0 + run.deadline - run.t0)
            return


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
    target: ConnectTarget | None = None,
    stop: StopRule | None = None,
    stop_every: float = 1.0,
) -> tuple[Stats, dict[str, Any]]:
    """Run ``spec`` (one process's share) on the running loop. Returns stats and the engine's self-report.

    ``target``: where to connect (``run`` resolves once for all processes); resolved here when not given. The
    default transport connects only to ``target.addresses``. A custom ``transport_factory`` is the caller's code:
    it gets requests whose URL is the validated base URL plus an origin-form path."""
    spec.validate(share=spec.processes > 1)
    if target is None:
        target = await resolve_target_async(spec.base_url, spec.allow_remote)
    elif not spec.allow_remote:  # a target resolved elsewhere is still checked here
        _target(spec.base_url, target.host, target.port, [(0, 0, 0, "", (a, 0)) for a in target.addresses], False)
    if transport_factory is None:
        if httpx.URL(spec.base_url).scheme != "http":
            raise ConfigError("the built-in transport speaks plain HTTP; pass a transport_factory for https")
        pinned = target
        factory: Callable[[], httpx.AsyncBaseTransport] = lambda: FastTransport(  # noqa: E731
            timeout=spec.timeout, addresses=pinned.addresses, port=pinned.port)
    else:
        factory = transport_factory
    templates = _Templates(spec)
    run = _Run(spec, clock)
    lag = new_histogram(2)
    probe = asyncio.ensure_future(_lag_probe(run, lag))
    ticker = asyncio.ensure_future(_progress(run, progress, progress_every)) if progress else None
    stopper = asyncio.ensure_future(_stopper(run, stop, stop_every)) if stop is not None else None
    cpu0, thread0, sched0 = time.process_time(), time.thread_time(), schedstat()
    tasks = []
    try:
        for k in range(spec.concurrency):
            tasks.append(asyncio.ensure_future(_connection(run, templates, factory(), verify, k, process)))
    except Exception as exc:  # a transport factory that fails: the tasks already started end at once
        run.fail(f"transport_factory failed for connection {len(tasks)}", exc)
    done, pending = await asyncio.wait(tasks, timeout=spec.duration + spec.drain) if tasks else (set(), set())
    for k, task in enumerate(tasks):  # a task can only die here through a bug; never let it pass unseen
        if task in done and not task.cancelled() and task.exception() is not None:
            run.fail(f"connection task {k} died", task.exception())  # type: ignore[arg-type]
    for _ in pending:  # stuck past the drain window: a timeout, counted, then cancelled
        run.stats.record(None, 0.0, time.time(), "timeout")
    helpers = [t for t in (probe, ticker, stopper) if t is not None]
    for name, helper in (("event-loop lag probe", probe), ("progress reporter", ticker), ("stop rule", stopper)):
        if helper is not None and helper.done() and not helper.cancelled() and helper.exception() is not None:
            run.fail(f"{name} died", helper.exception())  # type: ignore[arg-type]
    for task in (*pending, *helpers):
        task.cancel()
    await asyncio.gather(*pending, *helpers, return_exceptions=True)
    wall = clock() - run.t0
    run.stats.ended = run.wall0 + wall
    sched1 = schedstat()
    wait_s = sched1[1] - sched0[1] if sched0 is not None and sched1 is not None else None
    loop_cpu_s = time.thread_time() - thread0  # the event loop's own thread: what the engine's work cost
    engine = {
        "cpu_percent": round(100 * (time.process_time() - cpu0) / wall, 1) if wall else 0.0,
        "loop_lag_p99_ms": lag.get_value_at_percentile(99) / 1000 if lag.get_total_count() else 0.0,
        "send_lag_p99_ms": run.send_lag.get_value_at_percentile(99) / 1000 if run.send_lag.get_total_count() else None,
        "aborted": run.abort_reason,
        "engine_error": run.engine_error,
        "stopped": run.stopped,
        "cpu_s": time.process_time() - cpu0,
        "loop_cpu_percent": round(100 * loop_cpu_s / wall, 1) if wall else 0.0,
        "runqueue_wait_ms": round(1000 * wait_s, 1) if wait_s is not None else None,
        "runqueue_wait_percent": round(100 * wait_s / wall, 1) if wait_s is not None and wall else None,
        "wall_s": round(wall, 3),
        "spin_s": run.spin_s,
        "requests": run.stats.requests,
        # the CPUs this process could run on, of the machine's: fewer means isolation pinned it (see _explained)
        "cpus": sorted(os.sched_getaffinity(0)),
        "machine_cpus": os.cpu_count(),
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


START_S = 60.0  # a spawned engine process imports and reports ready within this
LOST_S = 3.0  # a process that exited without a result this long ago will not send one


LIVE_EVERY_S = 1.0  # a process with a stop rule sends its live stats this often
HALT_POLL_S = 0.2  # and looks this often whether the parent's rule said stop


def _child(spec: LoadSpec, process: int, go: Any, out: Any, target: ConnectTarget, halt: Any = None) -> None:
    """Engine process body (spawned): wait for the common start, drive, send stats back over the queue.
    ``halt`` (duration=auto): send live stats every second; end the load when the parent sets it."""
    try:
        out.put(("ready", process, None, None, None))
        if not go.wait(START_S):  # the parent gave up on the start (it kills us too): send nothing
            return
        rule: StopRule | None = None
        if halt is not None:
            sent = [time.monotonic()]

            def rule(stats: Stats) -> str | None:
                if time.monotonic() - sent[0] >= LIVE_EVERY_S:
                    sent[0] = time.monotonic()
                    out.put(("live", process, stats.to_wire(live=True), None, None))
                return HALTED if halt.is_set() else None

        with _no_gc_pauses(), asyncio.Runner(loop_factory=_loop_factory()) as runner:
            stats, engine = runner.run(drive(spec, process=process, target=target, stop=rule, stop_every=HALT_POLL_S))
        out.put(("result", process, stats.to_wire(), engine, None))
    except BaseException as exc:  # reported to the parent, which decides
        out.put(("result", process, None, None, one_line(exc)))


HALTED = "halted by the parent's stop rule"


def _run_processes(spec: LoadSpec, target: ConnectTarget, stop: StopRule | None = None,
                   ) -> tuple[Stats, list[dict[str, Any]], str | None, str | None]:
    """Run the shares in spawned processes and merge. Returns (stats, per-process engine reports, the first engine
    error or None, the stop rule's reason or None): a process that raised, died or never answered is an engine
    error, never an exception here, and every process is joined or killed whatever happened.

    ``stop``: each process sends its live stats every second; the rule sees their merge (exact: counts and
    histograms add) once every process has sent one, and its reason halts them all (within ~0.2 s + a second's
    snapshot). The merged counts at any look are those of some prefix of each process's requests, so an
    always-valid test stays valid."""
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")  # the parent has threads (samplers): fork would copy their locks
    go, out = ctx.Event(), ctx.Queue()
    halt = ctx.Event() if stop is not None else None
    procs = [ctx.Process(target=_child, args=(spec.share(p), p, go, out, target, halt), daemon=True,
                         name=f"wsgi502-engine-{p}") for p in range(spec.processes)]
    stats, errors = Stats(), list[str]()
    live: dict[int, dict[str, Any]] = {}
    reason: str | None = None
    engines: list[dict[str, Any]] = [{} for _ in procs]
    ready: set[int] = set()
    reported: set[int] = set()
    exited_at: dict[int, float] = {}
    try:
        for p in procs:
            p.start()
        until = time.monotonic() + START_S
        while len(reported) < len(procs) and not (errors and not go.is_set()):
            now = time.monotonic()
            if now > until:
                waiting = sorted(set(range(len(procs))) - (reported if go.is_set() else ready))
                errors.append(f"engine process {waiting[0]} " + ("sent no result by the run's deadline"
                              if go.is_set() else f"did not start within {START_S:.0f}s"))
                break
            try:
                kind, p_idx, wire, engine, err = out.get(timeout=0.5)
            except queue.Empty:
                for i, proc in enumerate(procs):
                    if i not in reported and proc.exitcode is not None and now - exited_at.setdefault(i, now) > LOST_S:
                        errors.append(f"engine process {i} exited with code {proc.exitcode} and no result")
                        reported.add(i)
                continue
            if kind == "live":
                live[p_idx] = wire
                if halt is not None and stop is not None and reason is None and len(live) == len(procs):
                    merged = Stats()
                    for w in live.values():
                        merged.merge(Stats.from_wire(w))
                    try:
                        reason = stop(merged)
                    except Exception as exc:  # the caller's rule: its failure is the engine's error, never silent
                        errors.append(f"the stop rule failed: {one_line(exc)}")
                        reason = "the stop rule failed"
                    if reason:
                        halt.set()
                continue
            if kind == "ready":
                ready.add(p_idx)
                if len(ready) == len(procs):  # every process imported and ready: start together
                    go.set()
                    until = time.monotonic() + spec.duration + spec.drain + START_S
                continue
            reported.add(p_idx)
            if err:
                errors.append(f"engine process {p_idx}: {err}")
                continue
            stats.merge(Stats.from_wire(wire))
            engines[p_idx] = engine
            if engine.get("engine_error"):
                errors.append(f"engine process {p_idx}: {engine['engine_error']}")
    except Exception as exc:
        errors.append(f"engine processes: {one_line(exc)}")
    finally:
        for i, proc in enumerate(procs):
            if proc.pid is None:  # never started
                continue
            if i not in reported:  # still running (or unresponsive) after a failure: no result will be used
                proc.kill()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    error = None
    if errors:
        error = errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    for e in engines:
        if e.get("stopped") == HALTED:
            e["stopped"] = reason
    return stats, engines, error, reason


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


def bound_kind(e: dict[str, Any], lag_ms: float | None = None) -> str:
    """Why an engine process that distorted the measurement did: ``limit`` (its loop thread used about a core
    itself: it could not do more), ``starved`` (it was runnable but waited for a CPU another process held:
    the server under test, on one machine), or ``blocked`` (neither: the loop waited on something else, e.g.
    a slow disk write or page faults).

    Starved: it waited >= 5 % of the run for a CPU, or (``lag_ms``: the p99 lag the symptom shows) at least
    1 % of the run plus that lag. That is the least wait that can make 1 % of evenly spread sends or lag samples
    that late: a wait of w ms delays by >= lag only what falls in its first w - lag ms. Less wait than that
    cannot explain the lag, and the loop was blocked on something else."""
    cpu = (e.get("loop_cpu_percent") if e.get("loop_cpu_percent") is not None else e.get("cpu_percent", 0.0)) or 0.0
    wait = e.get("runqueue_wait_percent")
    if cpu >= 100 * LIMIT_CPU:
        return "limit"
    if wait is None:
        return "starved"
    if wait >= 100 * STARVED_WAIT:
        return "starved"
    wait_ms, wall_s = e.get("runqueue_wait_ms"), e.get("wall_s")
    if lag_ms is not None and wait_ms is not None and wall_s:
        return "starved" if wait_ms >= 10 * wall_s + lag_ms else "blocked"  # 1 % of the run, in ms: 10 x s
    return "blocked"


def _measured(e: dict[str, Any]) -> str:
    cpu = e.get("loop_cpu_percent", e.get("cpu_percent", 0.0))
    wait = e.get("runqueue_wait_ms")
    text = f"its event loop used {cpu:.0f}% of a core"
    if wait is not None:
        text += f" and waited {wait:.0f} ms for a CPU ({e.get('runqueue_wait_percent', 0.0):.1f}% of the run)"
    return text


def _explained(p: int, symptom: str, e: dict[str, Any], kind: str | None = None,
               lag_ms: float | None = None) -> tuple[str, str]:
    kind = kind or bound_kind(e, lag_ms)
    if kind == "limit":
        return kind, f"engine process {p} was the limit: {symptom}; {_measured(e)}: {ADVICE_LIMIT}"
    if kind == "starved":
        cpus, machine = e.get("cpus"), e.get("machine_cpus")
        if cpus and machine and len(cpus) < machine:  # pinned: the servers were kept off these CPUs
            on = ",".join(str(c) for c in cpus)
            return kind, (f"engine process {p} was starved on CPU {on} of {machine}: {symptom}; {_measured(e)}: "
                          f"{ADVICE_STARVED_ISOLATED}")
        return kind, f"engine process {p} was starved: {symptom}; {_measured(e)}: {ADVICE_STARVED}"
    return kind, (f"engine process {p} was blocked: {symptom}; {_measured(e)}, so it neither ran out of CPU nor "
                  "waited for one: look for blocking calls in a custom transport/verify, or a slow disk")


def generator_classified(spec: LoadSpec, engines: Sequence[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(kind, reason) of the first engine process that distorted the measurement, else (None, None).

    Distorted (thresholds unchanged): it needed >= 0.9 cores for the intended rate, used >= 90 % of a core,
    its event loop lagged >= 25 ms at p99, or (open/ramp) it sent >= 10 ms late at p99 with free connections.
    ``kind`` (``bound_kind``) says which: ``limit``, ``starved`` or ``blocked``, and the reason what to change."""
    for p, e in enumerate(engines):
        if spec.mode != "closed" and e.get("requests"):
            # CPU the intended rate needs at the measured cost per request (spinning excluded): robust even
            # when other processes starve the engine, which then never shows 90 % itself
            work_us = 1e6 * max(0.0, e.get("cpu_s", 0.0) - e.get("spin_s", 0.0)) / e["requests"]
            need = work_us * intended_rate(spec) / spec.processes / 1e6
            if need >= 0.9:
                return _explained(p, f"it needs {need:.2f} cores for {intended_rate(spec):.0f} req/s at {work_us:.0f} "
                                     "us of CPU per request", e, "limit")
        if e.get("cpu_percent", 0) >= 90:
            return _explained(p, f"it used {e['cpu_percent']:.0f}% of a core", e, "limit")
        if e.get("loop_lag_p99_ms", 0) >= LOOP_LAG_MS:
            return _explained(p, f"event loop lagged {e['loop_lag_p99_ms']:.0f} ms (p99)", e,
                              lag_ms=e["loop_lag_p99_ms"])
        if spec.mode != "closed" and (e.get("send_lag_p99_ms") or 0) >= SEND_LAG_MS:
            return _explained(p, f"it sent {e['send_lag_p99_ms']:.0f} ms late (p99) with free connections", e,
                              lag_ms=e["send_lag_p99_ms"])
    return None, None


def generator_verdict(spec: LoadSpec, stats: Stats, engines: Sequence[dict[str, Any]]) -> tuple[bool, str | None]:
    """Was the engine, not the server, the bottleneck? (True, reason) when any process was saturated, starved
    or, in open/ramp mode, sent late on its own account; the reason says which and what to change."""
    kind, reason = generator_classified(spec, engines)
    return kind is not None, reason


def run(spec: LoadSpec, transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
        verify: Callable[[httpx.Response], bool] | None = None, progress: Progress | None = None,
        progress_every: float = 1.0, stop: StopRule | None = None) -> dict[str, Any]:
    """Run a load on fresh event loops (uvloop), in ``spec.processes`` processes; merge; judge the engine.

    ``stop``: called about once a second with the live ``Stats`` (with several processes: the merge of their
    latest snapshots, in this process); a reason it returns ends the load early (``stopped`` in the result), e.g.
    ``metrics.sequential.AutoStop.update`` for duration=auto.

    ``progress`` (one process only) is called every ``progress_every`` seconds with elapsed, duration, requests,
    children until the end).

    A bad spec or a target that is not loopback raises ``ConfigError`` before anything is sent. Once load runs,
    nothing raises: ``engine_error`` in the result says why the engine itself failed (a connection task or an
    engine process died, or no request was sent at all), and such a run measured nothing."""
    spec.validate()
    if spec.processes > 1 and (transport_factory is not None or verify is not None):
        raise ConfigError("a custom transport or verify callable runs in one process only (processes=1)")
    target = resolve_target(spec.base_url, spec.allow_remote)  # once: every process connects to these addresses
    if spec.processes > 1:
        with _elapsed_ticker(spec, progress, progress_every):
            stats, engines, engine_error, _ = _run_processes(spec, target, stop)
    else:
        with _no_gc_pauses(), asyncio.Runner(loop_factory=_loop_factory()) as runner:
            stats, engine = runner.run(drive(spec, transport_factory, verify, progress=progress,
                                             progress_every=progress_every, target=target, stop=stop))
        engines, engine_error = [engine], engine.get("engine_error")
    aborted = next((e["aborted"] for e in engines if e.get("aborted")), None)
    if not stats.requests:
        engine_error = f"no request was sent: {engine_error or aborted or 'the engine ended before its first send'}"
    kind, reason = generator_classified(spec, engines)
    bound = kind is not None
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
            "cpu_percent": max((e.get("cpu_percent", 0.0) for e in engines), default=0.0),
            "cpu_us_per_request": round(1e6 * sum(e.get("cpu_s", 0.0) for e in engines) / stats.requests, 1)
            if stats.requests else None,
            "loop_lag_p99_ms": max((e.get("loop_lag_p99_ms", 0.0) for e in engines), default=0.0),
            "loop_cpu_percent": max((e.get("loop_cpu_percent", 0.0) for e in engines), default=0.0),
            "runqueue_wait_ms": max((e["runqueue_wait_ms"] for e in engines if e.get("runqueue_wait_ms") is not None),
                                    default=None),
            "runqueue_wait_percent": max((e["runqueue_wait_percent"] for e in engines
                                          if e.get("runqueue_wait_percent") is not None), default=None),
            "bound_kind": kind,  # None, or limit / starved / blocked (generator_classified)
            "send_lag_p99_ms": None if spec.mode == "closed"
            else max((e.get("send_lag_p99_ms") or 0.0 for e in engines), default=0.0),
            "per_process": list(engines),
            "pid": os.getpid(),
        },
        "generator_bound": bound,
        "generator_bound_reason": reason,
        "aborted": aborted,
        "engine_error": engine_error,
        "stopped": next((e["stopped"] for e in engines if e.get("stopped")), None),
    }
