"""One cell, start to verdict: server + proxy up, load through the proxy, telemetry, result dict, SLO verdict.

This is the whole data path of the design in one place, so a reader can follow a cell from the matrix to the
table: ``run_cell`` (the ``wsgi_cell_run`` fixture) starts a ``Target``, drives the load, stops it and returns a
plain, JSON-ready dict. ``wsgi_server`` / ``wsgi_load`` use the same two steps separately.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_wsgi502 import slo as slo_mod
from pytest_wsgi502.attribution import attribute_cell
from pytest_wsgi502.config.duration import split as split_duration
from pytest_wsgi502.config.layers import merge_keyed, pick
from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.events import ACTION, ACTION_PHASE
from pytest_wsgi502.haproxy import HAProxyLB, find_haproxy
from pytest_wsgi502.load.engine import Endpoint, LoadSpec
from pytest_wsgi502.load.engine import run as run_load
from pytest_wsgi502.metrics.machine import PROBE_ITERATIONS, probe_ms
from pytest_wsgi502.metrics.sequential import AutoStop, horizon
from pytest_wsgi502.metrics.sequential import apply as apply_sequential
from pytest_wsgi502.nginxlog import haproxy_reasons, parse_access_log, parse_error_log, read_access_log
from pytest_wsgi502.proxy import LocalProxy
from pytest_wsgi502.servers import Server, ServerFactory, ServerSpec, make_server
from pytest_wsgi502.servers.base import Readiness
from pytest_wsgi502.servers.fleet import Fleet, merged_telemetry, rolling
from pytest_wsgi502.servers.local import placed_runner
from pytest_wsgi502.services.django import overlay_env, write_overlay
from pytest_wsgi502.services.isolation import Isolation
from pytest_wsgi502.services.mysql import MySQLInfo
from pytest_wsgi502.services.process import ServiceError, free_ports
from pytest_wsgi502.services.programs import program_version


@dataclass(frozen=True)
class CellContext:
    """What a cell run needs from the session: settings, where the binaries are, the database."""

    run_dir: Path
    ledger: Path
    app: str
    chdir: Path
    server_binaries: dict[str, str]
    nginx: str
    db_env: dict[str, str]
    duration: float
    max_requests: int
    concurrency: int
    timeout: float
    idle_timeout: float
    session_slos: tuple[str, ...] = ()
    mode: str = "closed"
    rate: float | None = None
    start_rate: float | None = None
    think_time: float = 0.0
    warmup: float = 0.0  # seconds sent but not measured (--wsgi-warmup); at most half the load's duration
    processes: int = 1
    path: str = "/"
    verify_contains: str = ""
    django_settings: str | None = None
    strict: bool = False
    db_version: str = ""
    db: MySQLInfo | None = None  # the session's database (``set_max_connections`` logs in as root)
    server_factory: ServerFactory | None = None  # containers backend: servers that run in containers (default: local)
    say: Callable[[str], None] | None = None  # a one-line message to the terminal (a pinned server being built)
    # the layer each session setting came from ("option", "env", "ini", "default"): config/layers.py
    sources: Mapping[str, str] = field(default_factory=dict)
    isolation: Isolation | None = None  # the session's CPU split (services/isolation.py); None: not isolated
    verify_status: str = "2xx"  # statuses below 400 a response may have (wsgi_verify_status)
    ready_path: str = "/health"  # what readiness GETs on each server (wsgi_ready_path)
    proxy_profile: str = "alb"  # the session's --wsgi-proxy-profile (a cell's own proxy_profile wins)
    # where the load runs (--wsgi-distributed): "none" = this process's engine; "locust" = generators on Locust's
    # runtime (load/distributed.py), local ones (generators) or started elsewhere (locust_master, expect_generators)
    distributed: str = "none"
    generators: int = 2
    locust_master: str | None = None
    expect_generators: int | None = None
    haproxy: str | None = None  # the load balancer of a cell with instances > 1 (None: found on PATH when needed)

    def note(self, message: str) -> None:
        """A line for the terminal, once per session (run directory): notices that hold for every cell."""
        key = (str(self.run_dir), message)
        if key not in _NOTED:
            _NOTED.add(key)
            if self.say is not None:
                self.say(f"wsgi502: {message}")

    def server_binary(self, cell: Cell) -> str:
        """The cell's server binary: the installed one, or the release its ``server_version`` pins (built once
        into the cache on first use; see servers/versions.py; the containers backend copies that build into
        the cell's image)."""
        default = self.server_binaries.get(cell.server)
        if not cell.server_version:
            return default or cell.server
        from pytest_wsgi502.servers.versions import BuildError, ensure

        try:
            return ensure(cell.server, cell.server_version, default, say=self.say)
        except BuildError as exc:
            raise ServiceError(f"cell {cell.name}: {exc}") from None


_NOTED: set[tuple[str, str]] = set()  # (run dir, notice) already printed: CellContext.note

# After the last response the server still has to report what happened near the end of the load: uWSGI's master
# notices a dead worker on its next wake-up (about once a second; seen 1.03 s after the kill) and gunicorn's arbiter
# within its 1 s sleep. The harness waits this long before it sends its own stop signal, then counts every event
# the server logged before that signal (issue 12 item 7: the last kill of a run was lost with a 0.5 s window).
REPORT_GRACE = {"uwsgi": 1.5, "gunicorn": 1.2}
# uWSGI's master sleeps 2 s without reaping when a worker dies again soon after its respawn ("worker respawning too
# fast !!! i have to sleep a bit (2 seconds)..."): a worker killed during that sleep stays a zombie, its death
# unlogged, until the sleep and the next wake-up are over (up to ~2 s late). The harness waits while a worker is
# unreaped, up to this long after the grace (local servers: it needs the master's pid).
REAP_WAIT = 3.0


class _Sampler(threading.Thread):
    """Polls the servers' telemetry channels about once a second while the load runs (``servers``: the current
    ones: a rolling deploy replaces them)."""

    def __init__(self, servers: Callable[[], list[Server]]) -> None:
        super().__init__(daemon=True, name="wsgi502-sampler")
        self.servers, self.stopped = servers, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            for server in self.servers():
                with contextlib.suppress(Exception):
                    server.sample()
            self.stopped.wait(1.0)


# a rolling deploy, run by the actions thread: (action, emit(phase, line, pid, instance index), stopped)
Rolling = Callable[[Mapping[str, Any], Callable[[str, str, "int | None", int, str], None], threading.Event], None]


class _Actions(threading.Thread):
    """Sends the cell's lifecycle actions to the server at their times, counted from the start of the load, on
    its own thread (the load engine is never blocked), and records each as an event with the time it was sent;
    then polls the action's phases (new workers ready, old ones gone, ...: ``servers.base.Watch``) until they are
    all seen, the next action is due or the server has settled after the load (``load_over``, then ``finish``),
    each an ``action_phase`` event with the time it was seen.
    A rolling deploy (``rolling``, the cell's fleet: servers/fleet.py) runs its steps here too, each step an
    ``action_phase`` event with the instance it concerns."""

    POLL = 0.05  # seconds between phase checks (a /proc scan of the server's process tree)

    def __init__(self, server: Server, actions: Iterable[Mapping[str, Any]], t0: float,
                 rolling: Rolling | None = None) -> None:
        super().__init__(daemon=True, name="wsgi502-actions")
        self.server, self.actions, self.t0, self.rolling = server, list(actions), t0, rolling
        # the load ended: no more action is sent and no deploy step begins, while the phases of the last action
        # are still followed until ``stopped`` (the server settling: old workers leave when the load's connections
        # close, and that is seen too)
        self.load_over = threading.Event()
        self.stopped = threading.Event()
        self.events: list[dict[str, Any]] = []
        self.pending: list[str] = []  # phases of the last action not seen when the thread stopped

    def run(self) -> None:
        for i, action in enumerate(self.actions):
            if self.load_over.wait(max(0.0, self.t0 + float(action["at"]) - time.time())):
                return  # the load ended first: the rest are not sent
            do = str(action["do"])
            if do == "rolling":
                self.roll(action)
                continue
            t = time.time()
            watch = None
            try:
                make_watch = getattr(self.server, "watch", None)
                watch = make_watch(do) if make_watch is not None else None  # notes the old workers first
                t = time.time()
                sig, pid = self.server.act(do)
                what = sig if isinstance(sig, str) else sig.name
                line = f"wsgi502: {do} at {action['at']:g}s: {what} to the {self.server.kind} master" + (
                    f" (pid {pid})" if pid is not None else "")
            except Exception as exc:  # recorded, never raised into the load
                pid, watch = None, None
                line = f"wsgi502: {do} at {action['at']:g}s failed: {type(exc).__name__}: {exc}"
            self.events.append({"kind": ACTION, "t": t, "pid": pid, "worker": None, "line": line, "action": do,
                                "at": float(action["at"])})
            if watch is not None:
                due = self.t0 + float(self.actions[i + 1]["at"]) if i + 1 < len(self.actions) else float("inf")
                self.follow(watch, do, float(action["at"]), due)

    def roll(self, action: Mapping[str, Any]) -> None:
        """The rolling deploy: its ``action`` event, then one ``action_phase`` per step as it happens (a failed
        step is a ``failed`` phase, never raised into the load)."""
        at = float(action["at"])
        self.events.append({"kind": ACTION, "t": time.time(), "pid": None, "worker": None, "action": "rolling",
                            "at": at, "line": f"wsgi502: rolling at {at:g}s: lag {action['lag']:g}s, prestop "
                            f"{action['prestop']:g}s, deregistration delay {action['deregistration_delay']:g}s"})

        def emit(phase: str, line: str, pid: int | None, index: int, server: str) -> None:
            self.events.append({"kind": ACTION_PHASE, "t": time.time(), "pid": pid, "worker": None,
                                "line": f"wsgi502: {line}", "action": "rolling", "at": at, "phase": phase,
                                "instance": index + 1, "server": server})

        try:
            if self.rolling is None:
                raise RuntimeError("rolling needs instances > 1 (a fleet behind HAProxy)")
            self.rolling(action, emit, self.load_over)
        except Exception as exc:  # recorded, never raised into the load
            self.events.append({"kind": ACTION_PHASE, "t": time.time(), "pid": None, "worker": None,
                                "line": f"wsgi502: rolling at {at:g}s failed: {type(exc).__name__}: {exc}",
                                "action": "rolling", "at": at, "phase": "failed"})

    def follow(self, watch: Any, do: str, at: float, due: float) -> None:
        """Poll ``watch`` until its phases are all seen, ``due`` (the next action's time) or ``stopped``."""
        while True:
            try:
                reached = watch.poll()
            except Exception as exc:  # a step of the action failed (e.g. the old master already gone)
                reached = [("failed", f"wsgi502: {do} at {at:g}s: {type(exc).__name__}: {exc}", None)]
                watch.todo.clear()
            for phase, line, pid in reached:
                self.events.append({"kind": ACTION_PHASE, "t": time.time(), "pid": pid, "worker": None,
                                    "line": line, "action": do, "at": at, "phase": phase})
            if watch.done or time.time() >= due or self.stopped.wait(self.POLL):
                self.pending = list(watch.todo)
                return

    def finish(self) -> list[dict[str, Any]]:
        """Stop sending and following, and return the actions sent and the phases seen."""
        self.load_over.set()
        self.stopped.set()
        self.join(5)
        return list(self.events)


def drive_load(spec: LoadSpec, ctx: CellContext, workdir: Path, **kwargs: Any) -> dict[str, Any]:
    """Run ``spec`` on the engine (``engine.run``) or, with ``ctx.distributed == "locust"``, on Locust generators
    (``run_distributed``, the same result shape; its logs in ``workdir``). The same keywords: a custom verify
    callable or a stop rule (duration=auto) needs one engine process and is refused there (ConfigError)."""
    if ctx.distributed != "locust":
        return run_load(spec, **kwargs)
    from pytest_wsgi502.load.distributed import run_distributed

    load = run_distributed(spec, ctx.generators, master=ctx.locust_master, expect_generators=ctx.expect_generators,
                           workdir=workdir, **kwargs)
    load["distributed"] = distributed_dict(ctx, load["engine"].get("distributed", {}))
    return load


def distributed_dict(ctx: CellContext, info: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON's ``load.distributed``: the runtime, the generators that ran the load and where its master was."""
    return {"runtime": "locust", "generators": int(info.get("generators") or ctx.generators),
            "master": info.get("master"), "remote_generators": ctx.locust_master is not None,
            "client": info.get("client"), "locust_version": info.get("locust_version")}


def cell_env(cell: Cell, ctx: CellContext, base_env: dict[str, str]) -> dict[str, str]:
    env = dict(base_env)
    env.update(ctx.db_env)
    env.update({
        "WSGI502_DB_DRIVER": cell.driver, "WSGI502_DB_POOL": cell.pool,
        "WSGI502_DB_POOL_SIZE": str(cell.pool_size), "WSGI502_DB_MAX_OVERFLOW": str(cell.max_overflow),
        "WSGI502_CONN_MAX_AGE": str(cell.conn_max_age), "PYTHONUNBUFFERED": "1",
    })
    env.update(cell.env)
    return env


# a cell's load key -> the session setting (and CellContext field) it overrides
SESSION_KEYS = {"load_mode": "mode", "rate": "rate", "start_rate": "start_rate", "think_time": "think_time",
                "concurrency": "concurrency", "duration": "duration", "path": "path",
                "verify_contains": "verify_contains", "verify_status": "verify_status",
                "proxy_profile": "proxy_profile", "warmup": "warmup"}


def _durations(cell: Cell, ctx: CellContext) -> list[tuple[str, Any]]:
    return [(ctx.sources.get("duration", "default"), ctx.duration),
            (cell.origin.get("duration", "default"), cell.duration)]


def stop_rule(cell: Cell, ctx: CellContext) -> tuple[str | None, str]:
    """("auto", layer) when the most specific layer that names a stopping rule says auto (config/duration.py),
    else (None, "default"): a fixed length."""
    return pick(*[(layer, rule) for layer, value in _durations(cell, ctx) if (rule := split_duration(value)[0])])


def layered(cell: Cell, ctx: CellContext, key: str) -> tuple[Any, str]:
    """(value, layer) of one load key: the cell's own value against the session's, by config/layers.py."""
    setting = SESSION_KEYS[key]
    if key == "duration":  # a number or auto's cap: the length, layered on its own (config/duration.py)
        return pick(*[(layer, split_duration(value)[1]) for layer, value in _durations(cell, ctx)])
    own = getattr(cell, key)
    return pick((ctx.sources.get(setting, "default"), getattr(ctx, setting)),
                (cell.origin.get(key, "default"), None if own == "" and key == "load_mode" else own))


def load_sources(cell: Cell, ctx: CellContext) -> dict[str, str]:
    """Which layer each load setting of the cell came from (the JSON's ``load.sources``; ``stop``: the layer
    that asked for duration=auto, absent for a fixed length)."""
    out = {SESSION_KEYS[k]: layered(cell, ctx, k)[1] for k in SESSION_KEYS}
    rule, layer = stop_rule(cell, ctx)
    if rule:
        out["stop"] = layer
    return out


def warmup_within(warmup: float | None, duration: float) -> float:
    """The warm-up a load of ``duration`` seconds gets: at most half of it, so the other half is measured. With
    duration=auto the duration is the cap: the warm-up is part of it, as of a fixed length."""
    return min(float(warmup or 0.0), duration / 2)


def load_spec(cell: Cell, ctx: CellContext, base_url: str) -> LoadSpec:
    """The cell's load: each key from the most specific layer that sets it (config/layers.py)."""
    value = {SESSION_KEYS[k]: layered(cell, ctx, k)[0] for k in SESSION_KEYS if k != "proxy_profile"}
    duration = value["duration"]
    mode, rate = value["mode"] or "closed", value["rate"]
    if mode != "closed" and not rate:
        raise ValueError(f"cell {cell.name}: {mode} load needs a rate (--wsgi-rate or the cell's rate)")
    statuses = value["verify_status"] or "2xx"
    mix = tuple(Endpoint(m["path"], float(m.get("weight", 1)), m.get("verify_contains", ""), m.get("method", "GET"),
                         m.get("verify_status", statuses), m.get("verify_content_type", ""))
                for m in cell.mix)
    return LoadSpec(
        base_url=base_url, path=value["path"] or "/", n_max=cell.n_max, mix=mix,
        verify_contains=value["verify_contains"] or "", verify_status=statuses, mode=mode, rate=rate or 0.0,
        start_rate=value["start_rate"] or 0.0, think_time=value["think_time"] or 0.0,
        concurrency=value["concurrency"], duration=duration, warmup=warmup_within(value["warmup"], duration),
        max_requests=ctx.max_requests, timeout=ctx.timeout, processes=ctx.processes, headers=dict(cell.headers),
    )


BODY_CHECK_HINT = "set wsgi_verify_contains, a cell's verify_contains, or verify= to check bodies"


def checked(spec: LoadSpec, ctx: CellContext, verify: Any = None, hint: str = BODY_CHECK_HINT) -> LoadSpec:
    """``spec`` with a Content-Type check on every GET endpoint that has no body check (``auto``: every 2xx must
    have the media type of the endpoint's first 2xx), and a notice, once, that those bodies are not verified. No
    probe request: a path with side effects (a fault-injection path) would be hit unmeasured. The same for a
    local target and a running service (--wsgi-target)."""
    import dataclasses

    if verify is not None:
        return spec
    endpoints = []
    for ep in spec.endpoints():
        if not ep.verify_contains and not ep.verify_content_type and ep.method == "GET":
            ep = dataclasses.replace(ep, verify_content_type="auto")
            ctx.note(f"GET {ep.path}: no body check, only status {ep.verify_status} and the Content-Type of its "
                     f"first 2xx verified ({hint})")
        endpoints.append(ep)
    if spec.mix:
        return dataclasses.replace(spec, mix=tuple(endpoints))
    return dataclasses.replace(spec, verify_content_type=endpoints[0].verify_content_type)


class Target:
    """A cell's server and the ELB-like proxy in front of it, started; ``url`` is where load goes."""

    def __init__(self, cell: Cell, ctx: CellContext, base_env: dict[str, str]) -> None:
        self.cell, self.ctx = cell, ctx
        self.dir = ctx.run_dir / "cells" / cell.name
        n = 1
        while self.dir.exists():  # the same config started again (another test): keep both sets of logs
            n += 1
            self.dir = ctx.run_dir / "cells" / f"{cell.name}-{n}"
        self.dir.mkdir(parents=True)
        n = cell.instances
        ports = free_ports(2 * n + 1)
        port, stats_port, proxy_port = ports[0], ports[1], ports[-1]
        self.env = cell_env(cell, ctx, base_env)
        overlay = write_overlay(ctx.run_dir, ctx.django_settings) if ctx.django_settings else None
        if overlay is not None:
            self.env.update(overlay_env(overlay, self.env))
        iso = ctx.isolation if ctx.isolation is not None and ctx.isolation.active else None
        # the cell's ``cpus`` on the local backend: a CFS quota on the inside CPUs, as Docker's --cpus (containers:
        # the engine limits the container); released in stop() once the server has stopped
        self.quota: dict[str, Any] | None = None
        self._quota_side: Any = None
        if cell.cpus is not None and ctx.server_factory is None:
            self._quota_side, how = iso.quota(cell.cpus, cell.name) if iso is not None else (
                None, f"cpus = {cell.cpus:g} not enforced: isolation is off (a CPU quota needs a cgroup)")
            if self._quota_side is None:
                raise ServiceError(f"cell {cell.name}: {how}")
            self.quota = {"cpus": cell.cpus, "enforced": how}
        place = self._quota_side or (iso.inside if iso is not None else None)
        factory = ctx.server_factory or (functools.partial(make_server, runner=placed_runner(place)) if place
                                         else make_server)
        self.proxy_profile = str(layered(cell, ctx, "proxy_profile")[0] or "alb")
        outside = iso.outside if iso and ctx.server_factory is None else None
        self.fleet: Fleet | None = None
        self.proxy: LocalProxy | HAProxyLB
        if n == 1:
            self.server = factory(
                ServerSpec(cell, self.dir, ctx.app, ctx.chdir, port=port, stats_port=stats_port,
                           settings_overlay=overlay),
                ctx.server_binary(cell), ctx.ledger)
            self.proxy = LocalProxy(self.dir, self.server.upstream, ctx.idle_timeout, ctx.nginx, ctx.ledger,
                                    proxy_port, place=outside, profile=self.proxy_profile)
        else:
            haproxy = self._fleet_checks(cell, ctx)
            binary = ctx.server_binary(cell)

            def make(index: int, generation: int) -> Server:  # instance-K; its replacements instance-K.2, ...
                where = self.dir / (f"instance-{index + 1}" + (f".{generation}" if generation > 1 else ""))
                return factory(ServerSpec(cell, where, ctx.app, ctx.chdir, port=ports[2 * index],
                                          stats_port=ports[2 * index + 1], settings_overlay=overlay),
                               binary, ctx.ledger)

            self.fleet = Fleet(make, n)
            self.server = self.fleet.current[0]  # lint, the rendered config: every instance renders the same
            self.proxy = HAProxyLB(self.dir, [s.upstream for s in self.fleet.current], ctx.idle_timeout, haproxy,
                                   ctx.ledger, proxy_port, place=outside)
        self._sampler: _Sampler | None = None
        self.readiness: dict[str, Any] | None = None
        self._restore_max_connections: int | None = None
        self.stopped = False
        self.stop_sent_at: float | None = None
        self.actions: list[dict[str, Any]] = []  # the lifecycle actions sent during the load (events)
        self._timer: _Actions | None = None  # their thread, still following the last one's phases until settled

    def _fleet_checks(self, cell: Cell, ctx: CellContext) -> str:
        """What a cell with instances > 1 needs from the session (the matrix checked the cell's own keys): the
        local backend, no nginx profile from the session, HAProxy. Returns HAProxy's binary."""
        what = f"cell {cell.name}: instances = {cell.instances}"
        if ctx.server_factory is not None:
            raise ServiceError(f"{what} runs on the local backend only (--wsgi-backend=local)")
        if self.proxy_profile == "nginx":
            raise ServiceError(f"{what} needs a load balancer that drains one instance at runtime (HAProxy); the "
                               "session's proxy profile nginx has none: use --wsgi-proxy-profile=alb or instances = 1")
        haproxy = ctx.haproxy or find_haproxy(None)
        if not haproxy:
            raise ServiceError(f"{what} needs HAProxy (2.6 or later) on PATH: apt-get install haproxy")
        return haproxy

    def servers(self) -> list[Server]:
        """The servers running now: the cell's one server, or each instance's current one."""
        return list(self.fleet.current) if self.fleet is not None else [self.server]

    def rolling(self, action: Mapping[str, Any], emit: Any, stopped: threading.Event) -> None:
        """The cell's rolling deploy (servers/fleet.py) through its HAProxy, on the actions thread."""
        if self.fleet is None or not isinstance(self.proxy, HAProxyLB):
            raise RuntimeError("rolling needs instances > 1")
        rolling(self.fleet, self.proxy, action, emit, stopped, self.env,
                lambda server: Readiness(server, self.ctx.ready_path))

    def settle(self) -> None:
        """Give the server the time it needs to log what happened at the end of the load (``REPORT_GRACE``), and
        longer, up to ``REAP_WAIT``, while a worker that died is not reaped yet (so not logged)."""
        time.sleep(REPORT_GRACE.get(self.cell.server, 1.5))
        deadline = time.monotonic() + REAP_WAIT
        while time.monotonic() < deadline and any(s.unreaped_workers() for s in self.servers()):
            time.sleep(0.1)
        self._end_actions()

    def _end_actions(self) -> None:
        """Stop the actions thread (the phases not seen by now stay unseen) and keep what it recorded."""
        if self._timer is not None:
            self.actions.extend(self._timer.finish())
            self._timer = None

    @property
    def url(self) -> str:
        return self.proxy.url

    def start(self) -> Target:
        try:
            if self.cell.mysql_max_connections is not None:
                self._restore_max_connections = self._database().set_max_connections(self.cell.mysql_max_connections)
            # below 500 is up (a 4xx too: a user's app need not have the path); a 5xx or a traceback fails now
            ready = Readiness(self.server, self.ctx.ready_path)
            t0 = time.monotonic()
            self.server.start(self.env, ready)
            self.readiness = {"path": ready.path, "status": ready.status, "seconds": round(time.monotonic() - t0, 2)}
            if self.fleet is not None:  # instance 1 is up: the others, each with its own probe
                for server in self.fleet.current[1:]:
                    server.start(self.env, Readiness(server, self.ctx.ready_path))
                self.readiness["instances"] = len(self.fleet)
            if ready.status is not None and ready.status >= 400:
                self.ctx.note(f"readiness: GET {ready.path} answered {ready.status}, counted as up (set "
                              "wsgi_ready_path to a page of your app that answers 200)")
            self.proxy.start(self.ctx.ready_path)
        except BaseException:
            self.stop()
            raise
        self._sampler = _Sampler(self.servers)
        self._sampler.start()
        return self

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._end_actions()
        if self._sampler is not None:
            self._sampler.stopped.set()
            self._sampler.join(5)
        self.proxy.stop()  # graceful: flushes the access log
        self.stop_sent_at = time.time()  # server events logged after this are the harness's own stop
        if self.fleet is not None:
            self.fleet.stop()  # every instance, replaced ones included (a deploy still running starts no more)
        else:
            self.server.stop()
        if self._quota_side is not None and self.ctx.isolation is not None:
            self.ctx.isolation.release_quota(self._quota_side)  # if it cannot yet, the session's release() will
            self._quota_side = None
        if self._restore_max_connections is not None:
            self._database().set_max_connections(self._restore_max_connections)

    def _database(self) -> MySQLInfo:
        if self.ctx.db is None:
            raise ServiceError(f"cell {self.cell.name}: mysql_max_connections needs the session's MySQL "
                               "(the wsgi_mysql fixture), which this run does not have")
        return self.ctx.db

    def lint(self) -> list[dict[str, str]]:
        from pytest_wsgi502.lint import lint, request_bound, somaxconn, uwsgi_options

        uwsgi = self.cell.server == "uwsgi"
        known = uwsgi_options(self.server.binary) if uwsgi else ()
        version = (program_version(self.server.binary) or "") if uwsgi else ""
        try:  # the most requests this cell's load can send: a recycling finding needs recycling within it
            bound: int | None = request_bound(load_spec(self.cell, self.ctx, "http://127.0.0.1"))
        except ValueError:  # e.g. open load without a rate: run_cell reports it when it builds the load
            bound = None
        return lint(self.cell, self.server.settings(), idle_timeout=self.ctx.idle_timeout,
                    default_path=self.ctx.path, known_uwsgi=known, max_backlog=somaxconn(), uwsgi_version=version,
                    request_bound=bound, proxy_profile=self.ctx.proxy_profile)

    def measure(self, spec: LoadSpec, slos: list[slo_mod.SLO], verify: Any = None,
                progress: Any = None, via: CellContext | None = None) -> dict[str, Any]:
        """Drive ``spec`` through the proxy; return the JSON-ready result with telemetry and SLO verdict.
        ``via``: the context whose load runtime drives it (``wsgi_load(..., distributed=...)``), default the cell's."""
        spec = self.checked(spec, verify)
        since = time.time()
        load = self.drive(spec, via=via, verify=verify, progress=progress)
        self.settle()  # the server reports the end of the load; the proxy flushes its access log (flush=1s)
        return self.result(load, since, slos, spec, verify=verify)

    def drive(self, spec: LoadSpec, via: CellContext | None = None, **kwargs: Any) -> dict[str, Any]:
        """Run the load, with the cell's lifecycle actions sent at their times on a timer thread; the phases of
        the last one are followed until ``settle`` ends."""
        self._end_actions()
        actions = self.cell.actions
        if actions and actions[-1]["at"] >= spec.duration:
            raise ValueError(f"cell {self.cell.name}: action {actions[-1]['do']} at {actions[-1]['at']:g}s is not "
                             f"within the load's duration ({spec.duration:g}s)")
        timer = _Actions(self.server, actions, time.time(), self.rolling if self.fleet else None) if actions else None
        if timer is not None:
            timer.start()
        try:
            return drive_load(spec, via or self.ctx, self.dir / "locust", **kwargs)
        finally:
            if timer is not None:
                timer.load_over.set()
                self._timer = timer

    def checked(self, spec: LoadSpec, verify: Any = None) -> LoadSpec:
        return checked(spec, self.ctx, verify)

    def rendered(self) -> dict[str, Any]:
        """The server's and the proxy's config files as rendered, with this run's directory and ports replaced
        by placeholders (${RUN_DIR}, ${PORT}, ${STATS_PORT}, ${PROXY_PORT}): two runs of a cell render the same
        text, and the text says how to reproduce the cell by hand."""
        subst = [(str(self.ctx.run_dir), "${RUN_DIR}"), (f":{self.server.spec.port}", ":${PORT}"),
                 (f":{self.server.spec.stats_port}", ":${STATS_PORT}"), (f" {self.proxy.port}", " ${PROXY_PORT}"),
                 (f":{self.proxy.port}", ":${PROXY_PORT}")]
        for k, server in enumerate(self.fleet.current[1:] if self.fleet else [], start=2):  # the other instances
            subst += [(f":{server.spec.port}", f":${{PORT_{k}}}"),
                      (f":{server.spec.stats_port}", f":${{STATS_PORT_{k}}}")]
        proxy_conf = self.dir / ("haproxy.cfg" if self.fleet else "nginx.conf")
        out: dict[str, Any] = {}
        for role, path in (("server", self.server.config_path), ("proxy", proxy_conf)):
            if path.is_file():
                text = path.read_text()
                for old, new in subst:
                    text = text.replace(old, new)
                out[role] = {"file": path.name, "text": text}
        return out

    def result(self, load: dict[str, Any], since: float, slos: list[slo_mod.SLO], spec: LoadSpec,
               auto: dict[str, Any] | None = None, verify: Any = None) -> dict[str, Any]:
        cell = self.cell
        result: dict[str, Any] = {"name": cell.name, "server": cell.server, "description": cell.description,
                                  "config": cell.as_dict(), "dir": str(self.dir)}
        result.update(load["stats"].to_dict())
        result["load"] = {"mode": load["engine"]["mode"], "intended_rps": load["engine"]["intended_rps"],
                          "spec": spec_dict(spec), "distributed": load.get("distributed")}
        # what every response was checked for, per endpoint (a "verify" error is a response that failed it)
        result["verify"] = [{**ep.checks(), "callable": getattr(verify, "__qualname__", None) if verify else None}
                            for ep in spec.endpoints()]
        result["readiness"] = self.readiness
        result["engine"] = load["engine"]
        result["generator_bound"] = load["generator_bound"]
        result["generator_bound_reason"] = load["generator_bound_reason"]
        result["aborted"] = load["aborted"]
        # every event the server logged before the harness's own stop signal (or until now, while it still runs)
        until = self.stop_sent_at or time.time()
        if self.fleet is not None:  # every instance's, replaced ones included, on one timeline
            telemetry = merged_telemetry([(i, g, s.telemetry(until=until)) for i, g, s in self.fleet.every])
        else:
            telemetry = self.server.telemetry(until=until)
        telemetry["until"] = until
        if self.actions:  # the harness's own lifecycle actions, on the same timeline as the server's events
            telemetry["events"] = sorted([*telemetry.get("events", []), *self.actions], key=lambda e: e.get("t") or 0)
            telemetry["actions"] = [e for e in self.actions if e["kind"] == ACTION]
            telemetry["action_phases"] = [e for e in self.actions if e["kind"] == ACTION_PHASE]
        result["respawns"], result["kills"] = telemetry.pop("respawns"), telemetry.pop("kills")
        result["telemetry"] = telemetry
        result["proxy"] = {"profile": self.proxy_profile, **parse_access_log(self.dir / "proxy-access.log", since),
                           "error_reasons": parse_error_log(self.dir / "proxy-error.log")}
        if self.fleet is not None:  # HAProxy: no error log; each failure's reason is its termination state
            records = read_access_log(self.dir / "proxy-access.log", since)
            result["proxy"].update(balancer="haproxy", instances=len(self.fleet),
                                   error_reasons=dict(Counter(r.name for reasons in haproxy_reasons(records).values()
                                                              for r in reasons)))
        attributed = attribute_cell(self.dir, telemetry.get("events", []), since,
                                    http_500=int(result["status_counts"].get("500", 0)))
        result["attribution"], result["attribution_matches"] = attributed["counts"], attributed["matches"]
        result["attribution_keepalive_reuse"] = attributed["keepalive_reuse"]  # False: no keepalive_race possible
        result["files"] = sorted(p.name for p in self.dir.iterdir() if p.is_file())
        result["services"] = {"mysql": self.ctx.db_version or None, "nginx": program_version(self.ctx.nginx),
                              cell.server: program_version(self.server.binary)}
        if isinstance(self.proxy, HAProxyLB):
            result["services"]["haproxy"] = program_version(self.proxy.binary)
        result["isolation"] = self.ctx.isolation.describe() if self.ctx.isolation is not None else None
        if self.quota is not None and result["isolation"] is not None:
            result["isolation"]["quota"] = self.quota
        result["histogram"] = load["stats"].histogram.encode().decode("ascii")  # HdrHistogram V2, base64
        result["rendered"] = self.rendered()
        result["ports"] = {"server": self.server.spec.port, "stats": self.server.spec.stats_port,
                           "proxy": self.proxy.port}
        if self.fleet is not None:
            result["ports"]["instances"] = [s.spec.port for s in self.fleet.current]
        result.update(self.server.describe())  # where it ran: {} locally; containers: image, limits, engine
        result["slo"] = slo_mod.verdict(slos, result)
        if auto is not None:  # duration=auto: the sequential decisions replace the fixed-n checks they made
            result["auto"] = auto
            apply_sequential(result["slo"], auto)
        judge(result, load.get("engine_error"))
        return result


def machine_probes(ctx: CellContext) -> tuple[float, float | None]:
    """The fixed CPU probe on the engine's CPU (this process) and, when isolation gave the servers CPUs of their
    own, on those (metrics/machine.py)."""
    return probe_ms(), (ctx.isolation.probe_inside() if ctx.isolation is not None else None)


# a cell's outcome, the same word in the table, the JSON and pytest: undecided = duration=auto reached its cap
# with an SLO neither proven nor disproven (a failure, never a pass)
OUTCOMES = ("pass", "fail", "invalid", "undecided")


def invalid_reasons(result: dict[str, Any], engine_error: str | None = None) -> list[str]:
    """Why a run says nothing about the server (never a pass): nothing answered, the engine failed or was the
    bottleneck, or the load ended early."""
    reasons = []
    if engine_error:
        reasons.append(f"engine_error: {engine_error}")
    if not result.get("responses"):
        sent = int(result.get("requests") or 0)
        reasons.append(f"no_responses: {sent} request(s) sent, 0 responses received" if sent else
                       "no_responses: no request was sent")
    for flag, why in (("generator_bound", result.get("generator_bound_reason")), ("aborted", result.get("aborted"))):
        if result.get(flag):
            reasons.append(f"{flag}: {why}")
    return reasons


def judge(result: dict[str, Any], engine_error: str | None = None, reasons: list[str] | None = None) -> None:
    """Set ``result["slo"]["outcome"]``: ``invalid`` (with its reasons, listed as failures too) beats the SLOs.
    ``reasons``: given instead of read from the result (a pooled result: the reasons of its repeats)."""
    verdict = result["slo"]
    reasons = invalid_reasons(result, engine_error) if reasons is None else reasons
    verdict["invalid"] = reasons
    if reasons:
        verdict["passed"] = False
        verdict["failures"].extend(r for r in reasons if r not in verdict["failures"])
    undecided = verdict.get("undecided") or []
    breached = [f for f in verdict["failures"] if f not in undecided]
    verdict["outcome"] = ("invalid" if reasons else "pass" if verdict["passed"] else "fail" if breached
                          else "undecided")


def effective_slos(cell: Cell, ctx: CellContext, marker: Iterable[str] = (),
                   argument: Iterable[str] = ()) -> tuple[list[slo_mod.SLO], dict[str, str]]:
    """The cell's SLOs, one per metric from the most specific layer (config/layers.py): the cell's own (or its
    matrix's [defaults]) against the session's --wsgi-slo, the ``wsgi_slo`` marker and ``slo=``. Returns the SLOs
    and the layer of each metric."""
    layers = [(cell.origin.get("slo", "default"), slo_mod.parse_slos(list(cell.slo))),
              (ctx.sources.get("slo", "default"), slo_mod.parse_slos(list(ctx.session_slos))),
              ("marker", slo_mod.parse_slos(list(marker))), ("argument", slo_mod.parse_slos(list(argument)))]
    chosen = merge_keyed(layers, key=lambda s: s.metric)
    return [s for s, _ in chosen], {s.metric: layer for s, layer in chosen}


def spec_dict(spec: LoadSpec) -> dict[str, Any]:
    """The load profile as run (seed included), minus the run-local target URL."""
    import dataclasses

    out = dataclasses.asdict(spec)
    out.pop("base_url")
    return out


def run_cell(
    cell: Cell, ctx: CellContext, base_env: dict[str, str], extra_slos: tuple[str, ...] = (), progress: Any = None,
    baseline_counts: tuple[int, int] | tuple[int, int, float | None] | None = None, reference: bool = False,
) -> dict[str, Any]:
    """``baseline_counts``: (errors, requests[, dispersion]) of the finished runs of the cell's baseline cell:
    with duration=auto the load also runs until the error-rate comparison with it is decided
    (``metrics.sequential.BaselineStop``). ``reference``: other cells compare with this one; with duration=auto
    it runs until its errors are enough to compare with (``AutoStop.reference``)."""
    if ctx.distributed == "locust" and stop_rule(cell, ctx)[0] == "auto":
        raise ValueError(f"cell {cell.name}: duration=auto does not go with --wsgi-distributed=locust (auto decides "
                         "from one engine's live stats, which generators do not send): give a fixed duration")
    target = Target(cell, ctx, base_env)
    findings = target.lint()
    if findings and ctx.strict:
        raise ValueError("config lint (--wsgi-strict): " + "; ".join(f"[{f['code']}] {f['message']}" for f in findings))
    try:
        target.start()
    except ServiceError as exc:  # the lint may already say why (e.g. a key this uWSGI release does not know)
        if not findings:
            raise
        lines = [f"    lint [{f['code']}] {f['message']}" for f in findings]
        raise ServiceError("\n".join([str(exc), *lines])) from None
    try:
        slos, slo_sources = effective_slos(cell, ctx, marker=extra_slos)
        hold = horizon(cell.server, cell.workers, cell.max_requests, cell.max_requests_jitter, cell.options,
                       cell.actions)
        baseline = baseline_counts if baseline_counts is not None and baseline_counts[1] > 0 else None
        auto = AutoStop(slos, hold=hold, baseline=baseline, reference=reference) \
            if stop_rule(cell, ctx)[0] == "auto" else None
        spec = target.checked(load_spec(cell, ctx, target.url))
        probes = [machine_probes(ctx)]  # how fast the machine itself was, before and after the load
        since = time.time()
        load = target.drive(spec, progress=progress, stop=auto.update if auto else None)
        target.settle()
        probes.append(machine_probes(ctx))
    finally:
        target.stop()  # telemetry is read after the stop: logs complete, access log flushed
    result = target.result(load, since, slos, spec, auto=auto.report() if auto else None)
    result["load"]["sources"] = load_sources(cell, ctx)
    result["slo"]["sources"] = slo_sources
    result["lint"] = findings
    result["machine_speed"] = {"probe_ms": [p[0] for p in probes],
                               "servers_probe_ms": [p[1] for p in probes if p[1] is not None],
                               "iterations": PROBE_ITERATIONS}
    return result
