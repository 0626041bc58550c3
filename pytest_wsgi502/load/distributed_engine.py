"""One generator's engine process: the harness's own engine (uvloop, ``FastTransport``), started by a Locust worker.

Locust workers run under gevent's monkey patching; the engine needs a plain asyncio/uvloop process, so the worker
starts this module as a child and talks JSON lines over its pipes:

    stdin  {"g": G, "generators": N, "spec": {...}, "dump": PATH|null, "max_rate": R|null}
                                                                          -> stdout {"event": "ready"}
    stdin  {"start_at": WALL_SECONDS}                                     -> stdout {"event": "result", ...}

Generator ``G`` of ``N`` drives ``LoadSpec.share`` of a spec with ``processes=N`` as engine process ``G``: the
connections, the request budget and the open-loop slots are split exactly as ``--wsgi-processes`` splits them on
one machine (slot i is sent by generator i mod N), so N generators at a total rate R send the schedule one engine
would. ``max_rate`` (the generator's ``--wsgi502-max-rate``) caps what this generator sends: one that cannot keep
its share falls behind and the master marks the run. Every error is one JSON line (``{"event": "error"}``); the
child dies with its worker (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
CAP_BURST_S = 0.01  # a capped generator may send this much of its cap at once (send jitter), never more


class RateCap:
    """At most ``rate`` sends a second, shared by every connection of this generator (GCRA: a send waits, without
    spinning, until its turn; a burst of ``CAP_BURST_S`` of the rate is allowed). The wait counts in the
    latency (it is measured from the intended time), so a capped generator that cannot keep up shows it."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.tolerance = max(self.interval, CAP_BURST_S)
        self.tat = 0.0  # the theoretical arrival time of the next send

    async def take(self) -> None:
        now = time.monotonic()
        tat = max(self.tat, now)
        self.tat = tat + self.interval
        wait = tat - self.tolerance - now
        if wait > 0:
            await asyncio.sleep(wait)


def capped_factory(target: Any, timeout: float, rate: float) -> Any:
    """The engine's own transport (fast path kept), each send first taking a turn from one shared ``RateCap``."""
    from pytest_wsgi502.load.transport import FastTransport

    cap = RateCap(rate)

    class Capped(FastTransport):
        async def roundtrip(self, request: Any, raw: bytes) -> Any:
            await cap.take()
            return await super().roundtrip(request, raw)

    return lambda: Capped(timeout=timeout, addresses=target.addresses, port=target.port)


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its worker dies (a killed generator leaves nothing behind)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker's process group is still killed by the harness
        return
    if os.getppid() != parent:  # the worker died before the death signal was armed
        os._exit(1)


def _say(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def run(first: dict[str, Any], start: Any) -> dict[str, Any]:
    """Resolve, say ready, wait for the start time from ``start()`` (None: the worker is gone), drive, report."""
    from pytest_wsgi502.load import distributed_wire as wire
    from pytest_wsgi502.load.engine import _loop_factory, _no_gc_pauses, drive, resolve_target

    spec = wire.spec_from_json(first["spec"])
    g, n = int(first["g"]), int(first["generators"])
    share = replace(spec, processes=n).share(g)
    target = resolve_target(spec.base_url, spec.allow_remote)
    max_rate = first.get("max_rate")
    factory = capped_factory(target, share.timeout, float(max_rate)) if max_rate else None
    _say({"event": "ready"})
    start_at = start()
    if start_at is None:
        return {"event": "error", "error": "the worker closed the engine's input before the start"}
    delay = float(start_at) - time.time()
    if delay > 0:
        time.sleep(delay)
    with _no_gc_pauses(), asyncio.Runner(loop_factory=_loop_factory()) as runner:
        stats, engine = runner.run(drive(share, transport_factory=factory, process=g, target=target))
    engine["pid"] = os.getpid()
    engine["max_rate"] = float(max_rate) if max_rate else None
    engine["start_late_ms"] = round(1000 * max(0.0, stats.started - float(start_at)), 1)
    if first.get("dump"):  # the generator's own copy of its histogram, written here, not by the master
        Path(first["dump"]).write_bytes(stats.histogram.encode())
    return {"event": "result", "stats": wire.stats_to_json(stats), "engine": engine}


def main() -> int:
    parent = int(os.environ.get("WSGI502_GENERATOR_PARENT", os.getppid()))
    _die_with_parent(parent)

    def start() -> float | None:
        line = sys.stdin.readline()
        return float(json.loads(line)["start_at"]) if line.strip() else None

    try:
        line = sys.stdin.readline()
        if not line.strip():
            _say({"event": "error", "error": "no load spec on the engine's input"})
            return 1
        event = run(json.loads(line), start)
    except BaseException as exc:  # one line back to the worker, which forwards it to the master
        text = f"{type(exc).__name__}: {exc}".replace("\n", "\\n")[:300]
        _say({"event": "error", "error": text})
        return 1
    _say(event)
    return 0 if event["event"] == "result" else 1


if __name__ == "__main__":
    sys.exit(main())
