"""Distributed load on Locust's master/worker runtime: the same ``LoadSpec``, N *generators*, one exact result.

``run_distributed(spec, generators=N)`` returns what ``engine.run(spec)`` returns (``stats``, ``engine``,
``generator_bound``, ``aborted``, ``engine_error``, ...), so the table, JSON and SLO verdicts do not change.

How (``pip install "pytest-wsgi502[distributed]"``):
- Locust needs gevent's monkey patching, so nothing of Locust runs in the calling (pytest) process: the master
  is a subprocess (``distributed_master``), each generator a ``locust --worker`` process with this package's
  locustfile (``distributed_locustfile``); on other machines, ``wsgi502-generator --master-host ...``.
- Inside each generator, the harness's own engine runs in a child process (it measured faster than Locust's
  FastHttpUser per generator: docs) and drives generator G's share of the profile exactly as engine process G
  of ``processes=N`` would: closed-loop users split, the open/ramp schedule interleaved (slot i is sent by
  generator i mod N, so the total rate is the spec's), the mix and verification unchanged, one common start.
- Each generator records into its own HdrHistogram (``Stats``: 1 us..60 s, 3 digits) and ships it with Locust's
  custom messages; the master merges exactly (bucket counts add), unlike Locust's own rounded percentiles.
- Faults end the run with a reason in ``engine_error``, never a silent partial result: a generator that dies
  ("generator N lost at t=..s"), never connects, or fails; ``generator_bound`` judges every generator.
  Every process started here is stopped (process groups, death signal) whatever happened.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_wsgi502.config import values
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.load import distributed_wire as wire
from pytest_wsgi502.load.engine import (
    ADVICE_LIMIT,
    LoadSpec,
    Progress,
    generator_classified,
    intended_rate,
    resolve_target,
    slot_time,
)
from pytest_wsgi502.metrics.stats import Stats
from pytest_wsgi502.services.process import LocalProcess, ServiceError

INSTALL_HINT = 'distributed load needs Locust: pip install "pytest-wsgi502[distributed]"'
ADVICE_GENERATORS = "add generators (--wsgi-generators) or lower the concurrency/rate"
START_S = 60.0  # the master listening, the generators connected and each engine process ready, each within this
MASTER_SLACK_S = 15.0  # the master's interpreter and Locust's imports, on a busy machine
STOP_S = 5.0  # graceful stop of a Locust process before its process group is killed
_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>[0-9]{1,5})$")


def locust_missing() -> str | None:
    """The install hint when Locust is not importable here, else None."""
    return INSTALL_HINT if importlib.util.find_spec("locust") is None else None


def parse_master(text: Any) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) where the master listens for generators on other machines."""
    values.single_line(text, "locust master")
    m = _HOSTPORT.match(text)
    if not m:
        raise ConfigError(f"locust master must be HOST:PORT, got {values.shown(text)}")
    port = int(m["port"])
    if not 1 <= port <= 65535:
        raise ConfigError(f"locust master port must be 1..65535, got {port}")
    return m["v6"] or m["host"], port


def check(spec: LoadSpec, generators: int) -> None:
    """Everything that can be refused before a process starts (``ConfigError``, one line)."""
    spec.validate()
    values.number(generators, "generators", 1, values.MAX_CONCURRENCY, integer=True)
    if spec.processes != 1:
        raise ConfigError("--wsgi-processes and --wsgi-generators do not combine: each generator is one engine "
                          "process; raise --wsgi-generators instead")
    if spec.concurrency < generators:
        raise ConfigError(f"{generators} generators need at least as many connections (got {spec.concurrency})")
    if (hint := locust_missing()) is not None:
        raise ConfigError(hint)


def scheduled(spec: LoadSpec, generators: int, g: int) -> int:
    """Open/ramp: how many requests generator ``g`` of ``generators`` is scheduled to send within the duration
    (slot i is generator i mod N's; slots due at or after the duration are never sent), within its budget share."""
    lo, hi = 0, 1
    while slot_time(hi, spec) < spec.duration:  # the first slot due at or after the end: exponential, then bisect
        lo, hi = hi, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if slot_time(mid, spec) < spec.duration:
            lo = mid + 1
        else:
            hi = mid
    slots = max(0, (lo - g + generators - 1) // generators)
    budget = spec.max_requests // generators + (1 if g < spec.max_requests % generators else 0)
    return min(slots, max(1, budget))


def behind(spec: LoadSpec, generators: int, engines: list[dict[str, Any]]) -> str | None:
    """The first generator that sent clearly fewer requests than its share of the schedule (it fell behind the
    rate: late sends past the end are never made), else None. Tolerance: one request per connection or 2 %."""
    if spec.mode == "closed":
        return None
    for g, e in enumerate(engines):
        if not e or e.get("aborted") or e.get("engine_error") or e.get("stopped"):
            continue
        want = scheduled(spec, generators, g)
        conns = spec.concurrency // generators + (1 if g < spec.concurrency % generators else 0)
        sent = int(e.get("requests", 0))
        if want - sent > max(conns, 0.02 * want):
            cap = f" (capped at {e['max_rate']:g} req/s)" if e.get("max_rate") else ""
            return (f"generator {g} fell behind its share of the rate: sent {sent} of its {want} scheduled "
                    f"requests{cap}; {ADVICE_GENERATORS}")
    return None


def judged(spec: LoadSpec, generators: int, stats: Stats, engines: list[dict[str, Any]], error: str | None,
           info: dict[str, Any]) -> dict[str, Any]:
    """The merged run in ``engine.run``'s result shape; per-process entries are per generator."""
    per = replace(spec, processes=generators)  # each generator is engine process g of N: the same judgement
    kind, reason = generator_classified(per, [e for e in engines if e])
    if reason:
        reason = reason.replace("engine process ", "generator ", 1).replace(ADVICE_LIMIT, ADVICE_GENERATORS)
    if kind is None and (late := behind(spec, generators, engines)):
        kind, reason = "limit", late
    aborted = next((e["aborted"] for e in engines if e.get("aborted")), None)
    if error is None:
        error = next((f"generator {g}: {e['engine_error']}" for g, e in enumerate(engines) if e.get("engine_error")),
                     None)
    if not stats.requests and error is None:
        error = f"no request was sent: {aborted or 'the generators ended before their first send'}"
    achieved = stats.requests / stats.duration if stats.duration else 0.0
    live = [e for e in engines if e]
    return {
        "stats": stats,
        "engine": {
            "mode": spec.mode,
            "concurrency": spec.concurrency,
            "processes": generators,
            "intended_rps": intended_rate(spec) or None,
            "achieved_rps": round(achieved, 1),
            "cpu_percent": max((e.get("cpu_percent", 0.0) for e in live), default=0.0),
            "cpu_us_per_request": round(1e6 * sum(e.get("cpu_s", 0.0) for e in live) / stats.requests, 1)
            if stats.requests else None,
            "loop_lag_p99_ms": max((e.get("loop_lag_p99_ms", 0.0) for e in live), default=0.0),
            "loop_cpu_percent": max((e.get("loop_cpu_percent", 0.0) for e in live), default=0.0),
            "runqueue_wait_ms": max((e["runqueue_wait_ms"] for e in live if e.get("runqueue_wait_ms") is not None),
                                    default=None),
            "runqueue_wait_percent": max((e["runqueue_wait_percent"] for e in live
                                          if e.get("runqueue_wait_percent") is not None), default=None),
            "bound_kind": kind,
            "send_lag_p99_ms": None if spec.mode == "closed"
            else max((e.get("send_lag_p99_ms") or 0.0 for e in live), default=0.0),
            "per_process": list(engines),
            "pid": info.get("master_pid"),
            "distributed": {"runtime": "locust", "generators": generators, "client": "engine", **info},
        },
        "generator_bound": kind is not None,
        "generator_bound_reason": reason,
        "aborted": aborted,
        "engine_error": error,
        "stopped": None,
    }


class _Events:
    """The master's JSON-lines events file, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, ""

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path) as fh:
                fh.seek(self.offset)
                text = fh.read()
                self.offset = fh.tell()
        except FileNotFoundError:
            return []
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        return [json.loads(line) for line in lines if line.strip()]


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return (lines[-1][:200] if lines else "(log is empty)")


@contextlib.contextmanager
def _run_dir(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix="wsgi502-locust-") as tmp:
        yield Path(tmp)


def _exit_text(proc: LocalProcess) -> str:
    code = proc.proc.returncode if proc.proc is not None else None
    if code is not None and code < 0:
        import signal

        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def run_distributed(spec: LoadSpec, generators: int = 2, *, master: str | None = None,
                    expect_generators: int | None = None, workdir: Path | None = None,
                    dump_dir: Path | None = None, start_timeout: float = START_S,
                    transport_factory: Any = None, verify: Any = None, stop: Any = None,
                    progress: Progress | None = None, progress_every: float = 1.0,
                    generator_max_rate: float | None = None) -> dict[str, Any]:
    """Run ``spec`` on ``generators`` local Locust worker processes (or, with ``master="HOST:PORT"``, on
    ``expect_generators`` workers started elsewhere with ``wsgi502-generator``) and merge exactly.

    Raises ``ConfigError`` before anything starts (bad spec, non-loopback target without ``allow_remote``, Locust
    not installed). Once processes run, nothing raises: ``engine_error`` says why the run failed. ``workdir``
    keeps the master's and generators' logs; ``dump_dir`` makes each generator write its own histogram
    (``generator-G.hdr``, HdrHistogram V2 base64) for checking the merge. ``progress`` gets elapsed/duration every
    ``progress_every`` seconds of the load (the live counts stay in the generators). The same keywords as
    ``engine.run``, so a caller can switch: a custom transport, verify callable or stop rule needs one process
    and is refused here. ``generator_max_rate`` caps each local generator at that many requests/s (remote
    generators take ``--wsgi502-max-rate`` on their own command line): one that cannot keep its share of the
    rate marks the run generator-bound."""
    n = expect_generators if master is not None and expect_generators is not None else generators
    if transport_factory is not None or verify is not None:
        raise ConfigError("a custom transport or verify callable runs in one process only: not with generators "
                          "(check responses with verify_contains/verify_status/verify_content_type)")
    if stop is not None:
        raise ConfigError("duration=auto needs the live stats of one engine process: give generators a fixed duration")
    check(spec, n)
    if generator_max_rate is not None:
        if master is not None:
            raise ConfigError("a remote generator's rate cap is its own: start it with --wsgi502-max-rate R")
        values.number(generator_max_rate, "generator max rate", 0, values.MAX_RATE, lo_open=True)
    resolve_target(spec.base_url, spec.allow_remote)  # the loopback guard, before any process starts
    bind, port = parse_master(master) if master is not None else ("127.0.0.1", 0)
    if master is not None and not spec.allow_remote and bind not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(f"a Locust master on {bind} listens beyond this machine: that needs allow_remote")
    with _run_dir(workdir) as run_dir:
        return _run(spec, n, bind, port, master is None, run_dir, dump_dir, start_timeout, progress, progress_every,
                    generator_max_rate)


def _run(spec: LoadSpec, n: int, bind: str, port: int, local: bool, run_dir: Path, dump_dir: Path | None,
         start_timeout: float, progress: Progress | None, progress_every: float,
         max_rate: float | None = None) -> dict[str, Any]:
    spec_file, events_file = run_dir / "spec.json", run_dir / "events.jsonl"
    spec_file.write_text(json.dumps(wire.spec_to_json(spec)))
    events_file.write_text("")
    argv = [sys.executable, "-m", "pytest_wsgi502.load.distributed_master", "--bind", bind, "--port", str(port),
            "--expect", str(n), "--spec", str(spec_file), "--events", str(events_file),
            "--start-timeout", str(start_timeout)]
    if dump_dir is not None:
        argv += ["--dump-dir", str(dump_dir)]
    procs: list[LocalProcess] = []
    gens: list[LocalProcess] = []
    events = _Events(events_file)
    error: str | None = None
    result: dict[str, Any] | None = None
    info: dict[str, Any] = {}
    try:
        master_proc = LocalProcess("locust-master", argv, run_dir / "master.log", cwd=run_dir).start()
        procs.append(master_proc)
        info["master_pid"] = master_proc.pid
        by_pid: dict[int, int] = {}
        next_tick = 0.0
        start_at: float | None = None
        # the master's own timeouts (connect, then ready: start_timeout each) come first and say more
        patience = 2 * start_timeout + MASTER_SLACK_S
        until = time.monotonic() + patience
        while result is None and error is None:
            for event in events.poll():
                kind = event.get("event")
                if kind == "listening":
                    info["master"] = f"{event['bind']}:{event['port']}"
                    if local:
                        locustfile = str(Path(__file__).with_name("distributed_locustfile.py"))
                        cap = ["--wsgi502-max-rate", repr(float(max_rate))] if max_rate else []
                        for g in range(n):
                            gens.append(LocalProcess(
                                f"generator-{g}", [sys.executable, "-m", "locust", "--worker", "-f", locustfile,
                                                   "--master-host", event["bind"], "--master-port",
                                                   str(event["port"]), "--loglevel", "WARNING", *cap],
                                run_dir / f"generator-{g}.log", cwd=run_dir).start())
                        procs.extend(gens)
                elif kind == "started":
                    start_at = float(event["start_at"])
                    by_pid = {int(gen["pid"]): int(gen["g"]) for gen in event["generators"]}
                    info["members"] = event["generators"]
                    until = time.monotonic() + (start_at - time.time()) + spec.duration + spec.drain + 60
                elif kind == "result":
                    result = event
                elif kind == "error":
                    error = event["error"]
            if result is not None or error is not None:
                break
            if progress is not None and start_at is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + progress_every
                with contextlib.suppress(Exception):  # the caller's code never breaks the run
                    progress({"elapsed": max(0.0, time.time() - start_at), "duration": spec.duration})
            for proc in gens:  # a local generator that exited: lost now, not after Locust's heartbeat timeout
                if proc.proc is not None and proc.proc.poll() is not None:
                    lost = by_pid.get(proc.pid or -1)
                    at = (f"at t={time.time() - start_at:.1f}s" if start_at is not None and time.time() >= start_at
                          else "before the load started")
                    name = f"generator {lost}" if lost is not None else f"generator process {proc.pid}"
                    error = f"{name} lost {at} ({_exit_text(proc)})"
                    break
            if error is None and master_proc.exited():
                error = (f"the Locust master exited ({_exit_text(master_proc)}) "
                         f"{'before listening' if 'master' not in info else 'without a result'}: "
                         f"{_last_line(run_dir / 'master.log')}")
            if error is None and time.monotonic() > until:
                error = (f"the Locust master did not start the load within {patience:.0f}s" if start_at is None
                         else "the Locust master sent no result by the run's deadline")
            time.sleep(0.05)
    except ServiceError as exc:
        error = str(exc).splitlines()[0]
    finally:
        for proc in reversed(procs):  # generators first, then the master; each one's whole process group
            with contextlib.suppress(Exception):
                proc.stop(STOP_S)
    if result is None:
        return judged(spec, n, Stats(), [], error, info)
    info["locust_version"] = result.get("locust_version")
    stats = wire.stats_from_json(result["stats"])
    return judged(spec, n, stats, list(result["engines"]), error or result.get("error"), info)
