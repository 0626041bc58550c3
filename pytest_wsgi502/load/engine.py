"""Closed-loop load: N virtual users, each with its own connection, bounded by a request budget and a deadline.

Users write requests with the httpx API; the engine sends them through any ``httpx.AsyncBaseTransport``
(``FastTransport`` by default, ``httpx.MockTransport`` in tests) and never lets a failure escape: every
attempt ends as a status and/or an error class in ``Stats``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from pytest_wsgi502.load.transport import FastTransport
from pytest_wsgi502.metrics.stats import Stats


@dataclass(frozen=True)
class LoadSpec:
    base_url: str
    path: str = "/"  # may contain {n}: a random integer in 1..n_max per request
    n_max: int = 1000
    verify_contains: str = ""  # a 2xx whose body lacks this (after {n} substitution) is a "verify" error
    concurrency: int = 32
    duration: float = 10.0
    max_requests: int = 1_000_000
    timeout: float = 65.0
    drain: float = 10.0  # after the deadline, wait this long for in-flight requests, then count them as timeouts
    allow_remote: bool = False
    seed: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class RemoteTargetError(ValueError):
    pass


def check_loopback(url: str) -> None:
    """Load is only ever aimed at this machine unless the caller opts in explicitly."""
    host = httpx.URL(url).host
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise RemoteTargetError(f"cannot resolve load target host {host!r}: {exc}") from None
    remote = [a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if remote:
        raise RemoteTargetError(
            f"load target {url} resolves to non-loopback {', '.join(sorted(remote))}; "
            "pass allow_remote=True to aim load at another machine"
        )


def classify(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "reset"
    return "protocol"


class _Templates:
    """httpx.Request objects built once per distinct path and reused (the transport caches their bytes)."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.base = httpx.URL(spec.base_url)
        self.templated = "{n}" in spec.path or "{n}" in spec.verify_contains
        self._cache: dict[int, tuple[httpx.Request, bytes]] = {}
        self._rng = random.Random(spec.seed)

    def pick(self) -> tuple[httpx.Request, bytes]:
        n = self._rng.randint(1, self.spec.n_max) if self.templated else 0
        hit = self._cache.get(n)
        if hit is None:
            path = self.spec.path.replace("{n}", str(n))
            req = httpx.Request("GET", self.base.join(path), headers=self.spec.headers)
            hit = self._cache[n] = (req, self.spec.verify_contains.replace("{n}", str(n)).encode())
        return hit


async def run_closed_loop(
    spec: LoadSpec,
    transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Stats:
    if not spec.allow_remote:
        check_loopback(spec.base_url)
    factory = transport_factory or (lambda: FastTransport(timeout=spec.timeout))
    templates = _Templates(spec)
    stats = Stats(started=time.time())
    t0 = clock()
    deadline = t0 + spec.duration
    budget = [spec.max_requests]
    wall0 = stats.started

    async def user() -> None:
        transport = factory()
        try:
            while budget[0] > 0 and clock() < deadline:
                budget[0] -= 1
                request, expect = templates.pick()
                start = clock()
                try:
                    response = await transport.handle_async_request(request)
                    await response.aread()
                except Exception as exc:  # every failure is data, never raised out of the engine
                    end = clock()
                    stats.record(None, end - start, wall0 + end - t0, classify(exc))
                    continue
                end = clock()
                status = response.status_code
                bad = expect and status < 300 and expect not in response.content
                stats.record(status, end - start, wall0 + end - t0, "verify" if bad else None)
        finally:
            await transport.aclose()

    tasks = [asyncio.ensure_future(user()) for _ in range(spec.concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=spec.duration + spec.drain)
    for task in pending:  # stuck past the drain window: a timeout, counted, then cancelled
        task.cancel()
        stats.record(None, clock() - t0, time.time(), "timeout")
    if pending:
        await asyncio.wait(pending)
    stats.ended = wall0 + (clock() - t0)
    return stats


def run(spec: LoadSpec, transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None) -> dict[str, Any]:
    """Run the load on a fresh event loop (uvloop when available); return stats plus the engine's own cost."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None
    cpu0, wall0 = time.process_time(), time.monotonic()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        stats = runner.run(run_closed_loop(spec, transport_factory))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return {
        "stats": stats,
        "engine": {
            "mode": "closed",
            "concurrency": spec.concurrency,
            "cpu_percent": round(100 * cpu / wall, 1) if wall else 0.0,
            "cpu_us_per_request": round(1e6 * cpu / stats.requests, 1) if stats.requests else None,
        },
    }
