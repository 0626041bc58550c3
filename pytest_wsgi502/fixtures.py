"""Fixtures: the session's database and run directory, and one cell run per parametrized test.

    def test_cell(wsgi_cell_run):          # parametrized over the matrix by the plugin
        wsgi_cell_run.assert_slo()

Typed for users (``WsgiServerFactory``, ``WsgiLoadFactory`` and the types they return are exported by
``pytest_wsgi502``); the heavy modules behind them load only when a fixture runs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import pytest

from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.config.settings import EffectiveSettings
from pytest_wsgi502.results import CellRun, Result, record
from pytest_wsgi502.state import State
from pytest_wsgi502.state import get_state as _state

if TYPE_CHECKING:  # annotations only: these modules load heavy dependencies (httpx, docker)
    import httpx

    from pytest_wsgi502.cellrun import CellContext, Target
    from pytest_wsgi502.report.progress import LiveProgress
    from pytest_wsgi502.schedule import Schedule
    from pytest_wsgi502.servers.factory import ServerFactory
    from pytest_wsgi502.services.containers.session import ContainerSession
    from pytest_wsgi502.services.django import SettingsChoice
    from pytest_wsgi502.services.isolation import Isolation
    from pytest_wsgi502.services.mysql import MySQLInfo

T = TypeVar("T")


class WsgiServerFactory(Protocol):
    """What ``wsgi_server`` gives a test: call it with a ``Cell``, a matrix cell name or a table of matrix keys
    (plus keyword overrides) to start that server behind the ELB-like proxy."""

    def __call__(self, config: Cell | str | Mapping[str, Any] | None = None, *, name: str | None = None,
                 **overrides: Any) -> Target: ...

    def rolling(self, config: Cell | str | Mapping[str, Any] | None = None, *, at: str | float = "2s",
                instances: int = 2, lag: str | float = "1s", prestop: str | float = "2s",
                deregistration_delay: str | float | None = None, name: str | None = None,
                **overrides: Any) -> Target:
        """Start ``instances`` servers of ``config`` behind HAProxy, with a rolling deploy ``at`` into the next
        load: each instance in turn deregistered (the LB routes to it ``lag`` more), stopped gracefully after its
        ``prestop`` sleep, drained, replaced on its port and put back (config/matrix.ROLLING_KEYS: the defaults
        are a safe deploy, preStop sleep longer than the lag; the deregistration delay is AWS's 300 s)."""
        ...


class WsgiLoadFactory(Protocol):
    """What ``wsgi_load`` gives a test: drive load through a started ``Target`` and get its ``Result``."""

    def __call__(self, target: Target | RemoteTarget, *, slo: str | Iterable[str] = (),
                 verify: Callable[[httpx.Response], bool] | None = None, **profile: Any) -> Result: ...


def _fail(exc: Exception) -> NoReturn:
    """Fail the test with the error's message only: no traceback, and ``from None`` so pytest does not print
    the message a second time as "During handling of the above exception"."""
    raise pytest.fail.Exception(str(exc), pytrace=False) from None


def _started(start: Callable[[], T], stop: Callable[[], object]) -> Iterator[T]:
    """The body of a session fixture around one service: yield what ``start`` returns and ``stop`` at the end;
    a ``ServiceError`` from ``start`` stops what it left half-started and fails with its one-line message."""
    from pytest_wsgi502.services import ServiceError

    try:
        value = start()
    except ServiceError as exc:
        stop()
        _fail(exc)
    yield value
    stop()


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="session")
def wsgi_settings(pytestconfig: pytest.Config) -> EffectiveSettings:
    """The effective pytest-wsgi502 settings (each value with the source it came from)."""
    return _state(pytestconfig).settings


@pytest.fixture(scope="session")
def wsgi_run_dir(pytestconfig: pytest.Config) -> Iterator[Path]:
    """This session's private directory (0700): every config, log and socket of every cell. It lives in a
    per-user base (``<tempdir>/pytest-wsgi502-<uid>``, 0700, its owner and mode checked before use), or under
    --wsgi-keep-dir, which keeps it after the session. Leftovers of crashed sessions are reaped first."""
    from pytest_wsgi502.services.process import (
        ServiceError,
        base_dir,
        new_run_dir,
        reap_orphans,
        release_run_dir,
    )

    state = _state(pytestconfig)
    try:
        base = base_dir()
        reap_orphans(base)
        run = new_run_dir(base, keep=state.path("keep_dir") if state.settings.keep_dir else None)
    except (ServiceError, OSError) as exc:
        _fail(exc)
    yield run
    release_run_dir(run)


@pytest.fixture(scope="session")
def wsgi_containers(pytestconfig: pytest.Config, wsgi_run_dir: Path) -> Iterator[ContainerSession | None]:
    """The containers backend's session (engine client, network, images; ``.timings``), or None when the
    backend is local. Every container and network it made is removed at the end (README "Containers backend")."""
    from pytest_wsgi502.services.backend import choose
    from pytest_wsgi502.state import BACKEND

    state = _state(pytestconfig)
    choice = pytestconfig.stash.get(BACKEND, None)
    if choice is None:
        try:
            choice = choose(state.settings.backend, os.environ)
        except ValueError as exc:
            _fail(exc)
    if choice.name != "containers" or not choice.docker_host:
        yield None
        return
    from pytest_wsgi502.services.containers.session import ContainerSession

    session = ContainerSession(choice.docker_host, wsgi_run_dir, state.settings, state.path("chdir"))
    yield from _started(session.open, session.close)


@pytest.fixture(scope="session")
def wsgi_isolation(pytestconfig: pytest.Config, wsgi_settings: EffectiveSettings, wsgi_run_dir: Path,
                   wsgi_containers: ContainerSession | None) -> Iterator[Isolation]:
    """The session's CPU isolation (``--wsgi-isolation``, services/isolation.py): the load engine (this process)
    and the proxy on the outside CPUs, MariaDB and the servers under test inside. Released at the end, after the
    services that depend on it have stopped (a cgroup is removable once empty)."""
    from pytest_wsgi502.services import ServiceError, isolation
    from pytest_wsgi502.services.process import ledger_path

    mode = wsgi_settings.isolation
    if wsgi_containers is not None:  # the engine places containers: per-cell `cpus` limits them
        yield isolation.off(mode, "containers backend: services run in containers (per-cell cpus limits them)")
        return
    try:
        iso = isolation.start(mode, ledger=ledger_path(wsgi_run_dir))
    except ServiceError as exc:
        _fail(exc)
    from pytest_wsgi502.report.progress import LiveProgress

    LiveProgress(pytestconfig, "").say(f"wsgi502: isolation {isolation.describe_text(iso.describe())}")
    try:
        yield iso
    finally:
        if left := iso.release():
            import warnings

            warnings.warn(f"wsgi502: isolation groups left to the next session's reaper: {', '.join(left)}",
                          stacklevel=1)


def database_mode(settings: EffectiveSettings) -> tuple[str, str]:
    """("mysql" | "none", why): ``wsgi_db``, or for auto, none when the app is not Django (no
    wsgi_django_settings) and runs no setup command (``wsgi_setup_command = none``)."""
    chosen = settings.db or "auto"
    if chosen != "auto":
        return chosen, f"wsgi_db={chosen}"
    if not settings.django_settings and not settings.setup_command:
        return "none", "wsgi_db=auto: no wsgi_django_settings and wsgi_setup_command=none"
    return "mysql", "wsgi_db=auto"


def _matrix_env(state: State) -> dict[str, str]:
    """The env of the matrix's cells (``[defaults.env]``), for what runs the app's settings outside a cell: the
    settings check and the setup command (a production settings module may read its secret key from it)."""
    env: dict[str, str] = {}
    for cell in state.cells:
        env.update(cell.env)
    return env


@pytest.fixture(scope="session")
def wsgi_django(pytestconfig: pytest.Config) -> SettingsChoice | None:
    """The Django settings module the servers and the setup command run (None without wsgi_django_settings):
    checked before anything starts, in a child Python with the servers' directory and environment. A name
    that does not import, or is no settings module, fails every test that needs it in one line; a package
    resolves to the module the wsgi_app module sets, and the terminal says which and what the alternative was."""
    from pytest_wsgi502.services.django import resolve_settings

    state = _state(pytestconfig)
    named = state.settings.django_settings
    if not named or state.target is not None:  # --wsgi-target: the app runs elsewhere
        return None
    try:
        env = {**_base_env(), **_matrix_env(state)}
        choice = resolve_settings(named, state.settings.app, state.path("chdir"), env)
    except ValueError as exc:
        _fail(exc)
    if choice.note:
        from pytest_wsgi502.report.progress import LiveProgress

        LiveProgress(pytestconfig, "").say(f"wsgi502: django settings: {choice.note}")
    return choice


@pytest.fixture(scope="session")
def wsgi_mysql(wsgi_settings: EffectiveSettings, wsgi_run_dir: Path, wsgi_containers: ContainerSession | None,
               wsgi_isolation: Isolation) -> Iterator[MySQLInfo]:
    """A private MariaDB/MySQL server for this session (one per xdist worker): ``MySQLInfo``; on the inside CPUs
    with the servers under test when isolated."""
    from pytest_wsgi502.services.mysql import LocalMySQL, find_mysqld
    from pytest_wsgi502.services.process import ledger_path

    if wsgi_containers is not None:  # testcontainers' MySqlContainer, removed with the container session
        yield from _started(wsgi_containers.start_mysql, lambda: None)
        return
    binary = find_mysqld(wsgi_settings.mysqld)
    if binary is None:
        pytest.fail("mariadbd/mysqld not found: apt-get install mariadb-server, or pass --wsgi-mysqld", False)
    place = wsgi_isolation.inside if wsgi_isolation.active else None
    server = LocalMySQL(binary, wsgi_run_dir / "mysql", ledger_path(wsgi_run_dir), place=place)
    yield from _started(server.start, server.stop)


@pytest.fixture(scope="session")
def wsgi_database(request: pytest.FixtureRequest, pytestconfig: pytest.Config, wsgi_django: SettingsChoice | None,
                  wsgi_run_dir: Path) -> MySQLInfo | None:
    """The database with the app's setup command (migrations) applied once; None when the session has no
    database (``wsgi_db = none``, or auto for a non-Django app without a setup command: MariaDB never starts).
    The Django settings are checked first (``wsgi_django``), before MariaDB starts."""
    state = _state(pytestconfig)
    if state.target is not None:  # --wsgi-target: the service has its own database; nothing starts here
        return None
    mode, why = database_mode(state.settings)
    from pytest_wsgi502.report.progress import LiveProgress

    LiveProgress(pytestconfig, "").say(f"wsgi502: database {mode} ({why})")
    database: MySQLInfo | None = request.getfixturevalue("wsgi_mysql") if mode == "mysql" else None
    command = state.settings.setup_command
    if command:
        argv = shlex.split(command)
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        log = wsgi_run_dir / "setup-command.log"
        env = {**_base_env(), **_matrix_env(state), **(database.env() if database is not None else {})}
        if wsgi_django is not None:
            from pytest_wsgi502.services.django import django_overlay

            env.update(django_overlay(wsgi_run_dir, wsgi_django.module, env))
        try:
            with open(log, "wb") as fh:
                rc = subprocess.run(argv, cwd=state.path("chdir"), env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    timeout=300).returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"setup command {command!r} could not run: {exc}", pytrace=False)
        if rc != 0:
            from pytest_wsgi502.services.process import tail

            pytest.fail(f"setup command {command!r} failed (exit {rc}); last lines of {log}:\n{tail(log)}", False)
    return database


def _context(request: pytest.FixtureRequest, run_dir: Path, database: MySQLInfo | None) -> CellContext:
    from pytest_wsgi502.cellrun import CellContext
    from pytest_wsgi502.proxy import find_nginx
    from pytest_wsgi502.servers import binary_for
    from pytest_wsgi502.services.process import ledger_path

    state = _state(request.config)
    s = state.settings
    return CellContext(
        run_dir=run_dir, ledger=ledger_path(run_dir), app=s.app, chdir=state.path("chdir"),
        server_binaries={k: b for k in ("uwsgi", "gunicorn") if (b := binary_for(k))},
        nginx=find_nginx(s.nginx) or "nginx", db_env=database.env() if database is not None else {},
        duration=s.duration,
        max_requests=s.requests, concurrency=s.concurrency, timeout=s.timeout, idle_timeout=s.idle_timeout,
        session_slos=s.slo or (), mode=s.mode, rate=s.rate, start_rate=s.start_rate, think_time=s.think_time,
        warmup=s.warmup or 0.0, processes=s.processes, path=s.path, verify_contains=s.verify_contains or "",
        django_settings=choice.module if (choice := request.getfixturevalue("wsgi_django")) else None,
        strict=s.strict, db_version=getattr(database, "version", ""), db=database,
        verify_status=s.verify_status or "2xx", ready_path=s.ready_path or "/health",
        proxy_profile=s.proxy_profile or "alb", **_generators(s),
        server_factory=_server_factory(request), say=_progress(request, "").say,
        isolation=request.getfixturevalue("wsgi_isolation"),
        sources={name: s.source(name) for name in s.values},
    )


def _server_factory(request: pytest.FixtureRequest) -> ServerFactory | None:
    session: ContainerSession | None = request.getfixturevalue("wsgi_containers")
    if session is None:
        return None
    from pytest_wsgi502.servers.in_container import server_factory

    return server_factory(session)


def _marker_slos(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """SLOs from ``@pytest.mark.wsgi_slo("p99<200ms", ...)`` on the test, its class or module."""
    out: list[str] = []
    for mark in reversed(list(request.node.iter_markers("wsgi_slo"))):
        out.extend(mark.args)
    return tuple(out)


def _progress(request: pytest.FixtureRequest, name: str) -> LiveProgress:
    from pytest_wsgi502.report.progress import LiveProgress

    return LiveProgress(request.config, name)


@pytest.fixture
def wsgi_cell_run(request: pytest.FixtureRequest, wsgi_cell: Cell, wsgi_database: MySQLInfo | None,
                  wsgi_run_dir: Path) -> CellRun:
    """Run one cell of the matrix (server + proxy + load) and return its ``CellRun``. The cell is the one
    ``pytest_wsgi502_modify_cell`` returns, if a hook changes it."""
    from pytest_wsgi502.cellrun import run_cell
    from pytest_wsgi502.services import ServiceError

    if _state(request.config).target is not None:  # --wsgi-target: the one target cell, nothing started
        return _remote_cell_run(request, wsgi_cell, wsgi_run_dir)
    wsgi_cell = _modified(request.config, wsgi_cell)
    if reason := _skip_reason(wsgi_cell, request.getfixturevalue("wsgi_containers") is not None,
                              request.getfixturevalue("wsgi_isolation")):
        pytest.skip(reason)
    ctx = _context(request, wsgi_run_dir, wsgi_database)
    state = _state(request.config)
    baseline = _baseline(wsgi_cell, ctx, state)
    # a baseline cell runs in the schedule too, once: its own item and the cells comparing with it share that run
    # (run apart, it ran twice and the table showed one run while the comparisons used another)
    compared = state.settings.baseline_cell is not None or any(c.baseline_cell for c in state.matrix)
    if state.settings.repeat > 1 or baseline or compared:
        result = _scheduled(request, wsgi_cell, ctx, baseline)
    else:
        live = _progress(request, wsgi_cell.name)
        try:
            result = Result(run_cell(wsgi_cell, ctx, _base_env(), _marker_slos(request), progress=live.callback))
        except (ServiceError, ValueError) as exc:  # ValueError: ConfigError (e.g. --wsgi-strict's lint), one line
            _fail(exc)
        finally:
            live.finish()
    record(request, result)  # lint findings travel in the result: the summary lists each once
    return CellRun(wsgi_cell, result)


class RemoteTarget:
    """A service that is already running (--wsgi-target): the harness starts and stops nothing, so it sees only
    what the client sees. ``measure`` drives the load at ``url`` and judges it: statuses, transport and verify
    errors and latency; ``attribution`` counts client-side classes (``attribution_scope: client``), not causes."""

    def __init__(self, url: str, cell: Cell, ctx: CellContext, allow_remote: bool,
                 addresses: tuple[str, ...] = ()) -> None:
        self.url, self.cell, self.ctx, self.allow_remote, self.addresses = url, cell, ctx, allow_remote, addresses
        self.dir = ctx.run_dir
        self.runs = 0

    def measure(self, spec: Any, slos: list[Any], verify: Any = None, progress: Any = None,
                via: CellContext | None = None) -> dict[str, Any]:
        import dataclasses
        import time

        from pytest_wsgi502.cellrun import checked, drive_load, judge, spec_dict
        from pytest_wsgi502.report.table import REMOTE_NOTE, client_classes
        from pytest_wsgi502.slo import verdict

        server_side = [s.text for s in slos if s.metric in _server_metrics()]
        if server_side:
            from pytest_wsgi502.config.values import ConfigError

            raise ConfigError(f"SLO {', '.join(server_side)} is measured from the server's own logs, which a remote "
                              "target does not expose (--wsgi-target judges what the client sees)")
        spec = checked(dataclasses.replace(spec, base_url=self.url, allow_remote=self.allow_remote), self.ctx, verify,
                       "set wsgi_verify_contains or verify= to check bodies")
        since = time.time()
        self.runs += 1  # each run's Locust logs apart (a test may call wsgi_load several times)
        load = drive_load(spec, via or self.ctx, self.dir / f"locust-{os.getpid()}-{self.runs}", verify=verify,
                          progress=progress)
        cell = self.cell
        result: dict[str, Any] = {"name": cell.name, "server": "remote", "description": cell.description,
                                  "config": {"target": self.url}, "dir": str(self.dir)}
        result.update(load["stats"].to_dict())
        result["load"] = {"mode": load["engine"]["mode"], "intended_rps": load["engine"]["intended_rps"],
                          "spec": spec_dict(spec), "distributed": load.get("distributed")}
        result["verify"] = [{**ep.checks(), "callable": getattr(verify, "__qualname__", None) if verify else None}
                            for ep in spec.endpoints()]
        result["engine"] = load["engine"]
        result["generator_bound"] = load["generator_bound"]
        result["generator_bound_reason"] = load["generator_bound_reason"]
        result["aborted"] = load["aborted"]
        result["target"] = {"url": self.url, "addresses": list(self.addresses), "allow_remote": self.allow_remote,
                            "since": since, "note": REMOTE_NOTE}
        result["attribution"], result["attribution_scope"] = client_classes(result), "client"
        result["histogram"] = load["stats"].histogram.encode().decode("ascii")  # HdrHistogram V2, base64
        result["slo"] = verdict(slos, result)
        judge(result, load.get("engine_error"))
        return result


def _server_metrics() -> tuple[str, ...]:
    from pytest_wsgi502.state import SERVER_METRICS

    return SERVER_METRICS


def _remote_context(request: pytest.FixtureRequest, run_dir: Path) -> CellContext:
    """The session's load settings for a remote target: no binaries, database, isolation or containers."""
    from pytest_wsgi502.cellrun import CellContext
    from pytest_wsgi502.services.process import ledger_path

    state = _state(request.config)
    s = state.settings
    return CellContext(
        run_dir=run_dir, ledger=ledger_path(run_dir), app=s.app, chdir=state.path("chdir"), server_binaries={},
        nginx="", db_env={}, duration=s.duration, max_requests=s.requests, concurrency=s.concurrency,
        timeout=s.timeout, idle_timeout=s.idle_timeout, session_slos=s.slo or (), mode=s.mode, rate=s.rate,
        start_rate=s.start_rate, think_time=s.think_time, warmup=s.warmup or 0.0, processes=s.processes, path=s.path,
        verify_contains=s.verify_contains or "", verify_status=s.verify_status or "2xx", **_generators(s),
        say=_progress(request, "").say, sources={name: s.source(name) for name in s.values},
    )


def _generators(s: EffectiveSettings) -> dict[str, Any]:
    """The CellContext fields of --wsgi-distributed (checked at configure time: plugin._check_distributed)."""
    return {"distributed": s.distributed or "none", "generators": s.generators or 2,
            "locust_master": s.locust_master, "expect_generators": s.expect_generators}


def _remote(request: pytest.FixtureRequest, cell: Cell, run_dir: Path) -> RemoteTarget:
    state = _state(request.config)
    assert state.target is not None
    return RemoteTarget(state.target, cell, _remote_context(request, run_dir), bool(state.settings.allow_remote),
                        state.target_addresses)


def _remote_cell_run(request: pytest.FixtureRequest, cell: Cell, run_dir: Path) -> CellRun:
    """``wsgi_cell_run`` with --wsgi-target: the session's load profile at the running service, judged with the
    session's, the marker's SLOs (one per metric, the most specific layer wins)."""
    from pytest_wsgi502.cellrun import effective_slos, load_sources, load_spec

    target = _remote(request, cell, run_dir)
    live = _progress(request, cell.name)
    try:
        slos, slo_sources = effective_slos(cell, target.ctx, marker=_marker_slos(request))
        measured = target.measure(load_spec(cell, target.ctx, target.url), slos, progress=live.callback)
    except ValueError as exc:  # ConfigError (a server-side SLO, a bad profile) or the guard: one line
        _fail(exc)
    finally:
        live.finish()
    measured["load"]["sources"] = load_sources(cell, target.ctx)
    measured["slo"]["sources"] = slo_sources
    result = Result(measured)
    record(request, result)
    return CellRun(cell, result)


@pytest.fixture
def wsgi_target(request: pytest.FixtureRequest, pytestconfig: pytest.Config, wsgi_run_dir: Path) -> RemoteTarget:
    """--wsgi-target: the running service, for ``wsgi_load(wsgi_target, rate=..., slo=[...])``. Nothing is started
    or stopped; without --wsgi-target a test that uses it is skipped."""
    state = _state(pytestconfig)
    if state.target is None:
        pytest.skip("uses wsgi_target: runs only with --wsgi-target=URL (a running service)")
    return _remote(request, state.cells[0], wsgi_run_dir)


def _baseline(cell: Cell, ctx: CellContext, state: State) -> str | None:
    """The cell's baseline by the precedence rule (its own ``baseline_cell`` beats --wsgi-baseline-cell)."""
    from pytest_wsgi502.config.layers import pick
    from pytest_wsgi502.config.values import ConfigError, shown

    name, _ = pick((ctx.sources.get("baseline_cell", "default"), state.settings.baseline_cell),
                   (cell.origin.get("baseline_cell", "default"), cell.baseline_cell))
    if name is not None and name not in {c.name for c in state.matrix}:
        _fail(ConfigError(f"--wsgi-baseline-cell={shown(name)}: no such cell in the matrix"))
    return None if name == cell.name else name


def _skip_reason(cell: Cell, in_containers: bool, isolation: Isolation | None = None) -> str | None:
    """Why the cell cannot run on this backend, or None. ``cpus`` runs locally as a CPU quota when the session's
    isolation is a cgroup (``Isolation.quota``); ``mem_limit`` only in containers."""
    if cell.mem_limit and not in_containers:
        return f"cell {cell.name} sets mem_limit: it runs with --wsgi-backend=containers"
    mechanism = isolation.mechanism if isolation is not None else "off"
    if cell.cpus and not in_containers and not mechanism.startswith("cgroup"):
        return (f"cell {cell.name} sets cpus: a CPU quota needs a cgroup (run as root with --wsgi-isolation=auto or "
                f"cgroup; isolation here is {mechanism}) or --wsgi-backend=containers")
    if cell.socket == "unix" and in_containers:
        return f"cell {cell.name} uses a unix socket: local backend only (the proxy is on the host)"
    return None


def _schedule(request: pytest.FixtureRequest, ctx: CellContext) -> Schedule:
    """This process's interleaved runs: its matrix items' cells in item order, and their baselines."""
    from pytest_wsgi502.cellrun import run_cell
    from pytest_wsgi502.schedule import Schedule

    state = _state(request.config)
    if state.schedule is not None:
        return state.schedule
    in_containers = request.getfixturevalue("wsgi_containers") is not None
    by_name = {c.name: c for c in state.matrix}
    cells = [cell for item in request.session.items
             if isinstance(cell := getattr(getattr(item, "callspec", None), "params", {}).get("wsgi_cell"), Cell)
             and _skip_reason(cell, in_containers, ctx.isolation) is None]
    baselines = {cell.name: base for cell in cells if (base := _baseline(cell, ctx, state)) is not None}
    counts: dict[str, int] = {}

    def run(name: str) -> dict[str, Any]:
        counts[name] = counts.get(name, 0) + 1
        live = _progress(request, f"{name} #{counts[name]}")
        base = baselines.get(name)
        done = state.schedule.done.get(base, []) if state.schedule is not None and base is not None else []
        try:
            return run_cell(_modified(request.config, by_name[name]), ctx, _base_env(), progress=live.callback,
                            baseline_counts=baseline_counts(done), reference=name in baselines.values())
        finally:
            live.finish()

    state.schedule = Schedule(schedule_names([c.name for c in cells], baselines), state.settings.repeat, run)
    return state.schedule


def schedule_names(cells: Iterable[str], baselines: Mapping[str, str]) -> list[str]:
    """The cells to interleave, each baseline before the first cell that compares with it: with duration=auto a
    candidate's load runs until its comparison with the baseline's finished counts is decided, so the baseline's
    first run must be done first."""
    names: list[str] = []
    for name in cells:
        if (base := baselines.get(name)) is not None and base not in names:
            names.append(base)
        if name not in names:
            names.append(name)
    return names


def baseline_counts(runs: Iterable[Mapping[str, Any]]) -> tuple[int, int, float | None] | None:
    """(errors, requests, dispersion) over the baseline's finished runs (a fixed sample once the candidate
    starts), or None: none finished yet (with repeats the schedule runs some candidates before the baseline's
    later runs). The dispersion is that of the runs' per-second error counts (bursts: see
    ``metrics.sequential.BaselineStop``), None when they show nothing."""
    from pytest_wsgi502.metrics.comparison import window_dispersion

    runs = [r for r in runs if r.get("requests")]
    if not runs:
        return None
    return (sum(int(r.get("error_count") or 0) for r in runs), sum(int(r["requests"]) for r in runs),
            window_dispersion({"repeats": runs}))


def _scheduled(request: pytest.FixtureRequest, cell: Cell, ctx: CellContext, baseline: str | None) -> Result:
    """The cell's pooled result over its repeats, judged with this test's SLOs, and its comparison."""
    from pytest_wsgi502.cellrun import effective_slos, judge
    from pytest_wsgi502.metrics.comparison import compare
    from pytest_wsgi502.metrics.repeats import pool
    from pytest_wsgi502.services import ServiceError
    from pytest_wsgi502.slo import verdict

    schedule = _schedule(request, ctx)
    try:
        runs = schedule.runs(cell.name)
    except (ServiceError, ValueError) as exc:
        _fail(exc)
    pooled = pool(runs)
    base: dict[str, Any] | None = None
    if baseline is not None:
        try:
            base = pool(schedule.runs(baseline))
            pooled["comparison"] = compare(pooled, base, family=_family(request, ctx, baseline))
        except (ServiceError, ValueError) as exc:
            pooled["comparison"] = {"baseline": baseline, "error": str(exc).splitlines()[0]}
    slos, sources = effective_slos(cell, ctx, marker=_marker_slos(request))
    pooled["slo"] = verdict(slos, pooled, baseline=base)
    pooled["slo"]["sources"] = sources
    judge(pooled, reasons=[f"repeat {i}: {why}" for i, r in enumerate(runs, 1) for why in r["slo"]["invalid"]])
    return Result(pooled)


def _family(request: pytest.FixtureRequest, ctx: CellContext, baseline: str) -> int:
    """How many cells of the matrix are compared with ``baseline`` on this backend: the whole matrix, not this
    process's items, so that -k, xdist and shards judge each comparison at the same confidence."""
    state = _state(request.config)
    in_containers = request.getfixturevalue("wsgi_containers") is not None
    return sum(1 for cell in state.matrix if _skip_reason(cell, in_containers, ctx.isolation) is None
               and _baseline(cell, ctx, state) == baseline)


def _modified(config: pytest.Config, cell: Cell) -> Cell:
    """The cell as the project's ``pytest_wsgi502_modify_cell`` hooks leave it (the first answer wins), checked
    like a matrix file's cell: a hook cannot bring a value the matrix would refuse."""
    import dataclasses

    from pytest_wsgi502.config.matrix import expand
    from pytest_wsgi502.config.values import ConfigError

    changed: object = config.hook.pytest_wsgi502_modify_cell(cell=cell, config=config)
    if changed is None:
        return cell
    if not isinstance(changed, Cell):
        raise pytest.fail.Exception(
            f"pytest_wsgi502_modify_cell returned {type(changed).__name__} for cell {cell.name}: return a Cell "
            "(dataclasses.replace(cell, ...)) or None", pytrace=False)
    table = {k: v for k, v in changed.as_dict().items() if k != "name" and v is not None}
    try:
        checked = expand({"cells": {changed.name: table}}, "pytest_wsgi502_modify_cell")[0]
    except (ConfigError, TypeError) as exc:
        _fail(exc)
    # a key the hook changed is the cell's own; the others keep the layer they came from
    before, after = cell.as_dict(), checked.as_dict()
    origin = {**cell.origin, **{k: "cell" for k in after if after[k] != before.get(k)}}
    return dataclasses.replace(checked, origin=origin)


_AD_HOC_NAMES = pytest.StashKey[set[str]]()  # names wsgi_server gave ad-hoc targets this session


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base-2``, ``base-3``, ... : the first not in ``taken`` (which it joins)."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def _as_cell(config: Cell | str | Mapping[str, Any] | None, state: State, overrides: dict[str, Any],
             name: str | None = None, taken: set[str] | None = None) -> Cell:
    """A Cell from a Cell, a matrix cell name, or a table of matrix keys (validated like the matrix file).
    ``name`` names the target (its row in the table); a table without one gets a name made of server, worker
    class and workers, made unique in the session (``taken``) with -2, -3, ..."""
    import dataclasses

    from pytest_wsgi502.config.matrix import cell_name, expand
    from pytest_wsgi502.config.values import ConfigError, shown

    taken = set() if taken is None else taken
    if isinstance(config, str):
        by_name = {c.name: c for c in state.cells}
        if config not in by_name:
            raise ConfigError(f"wsgi_server: no cell {shown(config)} in the matrix; known: {', '.join(by_name)}")
        config = by_name[config]
    if isinstance(config, Cell):  # keyword overrides are the cell's own keys (config/layers.py)
        if name is not None:
            overrides = {**overrides, "name": cell_name(name, "wsgi_server(name=)")}
        origin = {**config.origin, **{k: "cell" for k in overrides if k != "name"}}
        return dataclasses.replace(config, **overrides, origin=origin) if overrides else config
    table = {**dict(config or {}), **overrides}
    given = name or table.pop("name", None)
    table.pop("name", None)
    if given is not None:
        taken.add(cell_name(given, "wsgi_server(name=)"))
    else:
        base = "-".join(str(p) for p in (table.get("server", "server"), table.get("worker_class"),
                                         f"{table.get('workers', 2)}w") if p)
        given = unique_name(base, taken | {c.name for c in state.cells})
        taken.add(given)
    return expand({"cells": {given: table}}, "wsgi_server()")[0]


@pytest.fixture
def wsgi_server(request: pytest.FixtureRequest, wsgi_database: MySQLInfo | None,
                wsgi_run_dir: Path) -> Iterator[WsgiServerFactory]:
    """Factory: ``wsgi_server({"server": "gunicorn", "workers": 4})`` (matrix keys), a cell name, or a ``Cell``
    starts that server behind the ELB-like proxy and returns a ``Target`` (``.url``, ``.cell``, ``.dir``).
    ``name=`` names it (its row in the table); unnamed tables get ``gunicorn-4w``, ``gunicorn-4w-2``, ... unique
    in the session. The cell passes through ``pytest_wsgi502_modify_cell`` first. Everything it started stops at
    the end of the test."""
    from pytest_wsgi502.cellrun import Target
    from pytest_wsgi502.services import ServiceError

    ctx = _context(request, wsgi_run_dir, wsgi_database)
    state = _state(request.config)
    started: list[Target] = []

    taken = request.config.stash.setdefault(_AD_HOC_NAMES, set())

    def _start(config: Cell | str | Mapping[str, Any] | None = None, *, name: str | None = None,
               **overrides: Any) -> Target:
        try:
            cell = _as_cell(config, state, overrides, name, taken)
        except (ValueError, TypeError) as exc:  # ConfigError: a bad key or value, one line
            _fail(exc)
        cell = _modified(request.config, cell)
        if cell.server not in ctx.server_binaries and ctx.server_factory is None:  # containers bring their own
            pytest.fail(f"{cell.server} is not installed: pip install {cell.server} (or the plugin with its servers "
                        "extra: pip install '/path/to/pytest-wsgi502[servers]')", pytrace=False)
        try:
            target = Target(cell, ctx, _base_env())
            started.append(target)
            return target.start()
        except (ServiceError, ValueError) as exc:  # ValueError: ConfigError from a renderer, one line
            _fail(exc)
            raise  # unreachable: pytest.fail raises

    yield _ServerFactory(_start)
    for target in reversed(started):
        target.stop()


class _ServerFactory:
    """``wsgi_server``'s value: a call starts a target (``WsgiServerFactory``), ``rolling`` one with a deploy."""

    def __init__(self, start: Callable[..., Target]) -> None:
        self._start = start

    def __call__(self, config: Cell | str | Mapping[str, Any] | None = None, *, name: str | None = None,
                 **overrides: Any) -> Target:
        return self._start(config, name=name, **overrides)

    def rolling(self, config: Cell | str | Mapping[str, Any] | None = None, *, at: str | float = "2s",
                instances: int = 2, lag: str | float = "1s", prestop: str | float = "2s",
                deregistration_delay: str | float | None = None, name: str | None = None,
                **overrides: Any) -> Target:
        from pytest_wsgi502.config.matrix import expand

        action = {"at": at, "do": "rolling", "lag": lag, "prestop": prestop,
                  **({"deregistration_delay": deregistration_delay} if deregistration_delay is not None else {})}
        try:  # checked and put in its matrix form like a matrix cell's, so a Cell given as config takes it too
            actions = expand({"cells": {"rolling": {"server": "gunicorn", "instances": instances,
                                                    "actions": [action]}}}, "wsgi_server.rolling()")[0].actions
        except (ValueError, TypeError) as exc:  # ConfigError: one line
            _fail(exc)
        return self._start(config, name=name, instances=instances, actions=actions, **overrides)


# What a test may set through ``wsgi_load(...)``: the load profile. Not the target (``base_url``: load goes to the
# target's own proxy) and not ``allow_remote``: opting out of loopback is never a side effect of a keyword here.
PROFILE_KEYS = ("mode", "rate", "start_rate", "concurrency", "duration", "max_requests", "think_time", "processes",
                "path", "mix", "n_max", "verify_contains", "verify_status", "verify_content_type", "timeout", "drain",
                "seed", "headers", "warmup")


# ``wsgi_load`` keywords that choose where the load runs (--wsgi-distributed and its options), not the profile
RUNTIME_KEYS = ("distributed", "generators", "locust_master", "expect_generators")


def _runtime(ctx: CellContext, given: dict[str, Any]) -> CellContext | None:
    """The context with ``wsgi_load``'s runtime keywords applied (checked like the options), or None: none given."""
    import dataclasses

    from pytest_wsgi502.config import values
    from pytest_wsgi502.config.settings import DISTRIBUTED, MAX_GENERATORS
    from pytest_wsgi502.load.distributed import parse_master

    if not given:
        return None
    if given.get("distributed", "locust") not in DISTRIBUTED:
        raise values.ConfigError(f"distributed must be one of {', '.join(DISTRIBUTED)}, got "
                                 f"{values.shown(given['distributed'])}")
    for key in ("generators", "expect_generators"):
        if given.get(key) is not None:
            values.number(given[key], key, 1, MAX_GENERATORS, integer=True)
    if given.get("locust_master") is not None:
        parse_master(given["locust_master"])
    if "distributed" not in given and ctx.distributed != "locust":  # generators=2 alone asks for Locust
        given = {**given, "distributed": "locust"}
    return dataclasses.replace(ctx, **given)


def _profile(profile: dict[str, Any]) -> dict[str, Any]:
    """The ``wsgi_load`` keyword arguments as LoadSpec fields: known keys only, mix entries as Endpoints."""
    from pytest_wsgi502.config.values import ConfigError
    from pytest_wsgi502.load.engine import Endpoint

    unknown = sorted(set(profile) - set(PROFILE_KEYS))
    if unknown:
        raise ConfigError(f"unknown profile key(s) {', '.join(map(repr, unknown))}; known: {', '.join(PROFILE_KEYS)}")
    out = dict(profile)
    if "mix" in out:
        fields = {"path", "weight", "verify_contains", "verify_status", "verify_content_type", "method"}
        mix = []
        for m in out["mix"]:
            if not isinstance(m, Endpoint):
                if not isinstance(m, dict) or set(m) - fields or "path" not in m:
                    raise ConfigError(f"each mix entry is a dict with path and optionally {', '.join(sorted(fields))}")
                m = Endpoint(**m)
            mix.append(m)
        out["mix"] = tuple(mix)
    if "headers" in out:
        out["headers"] = dict(out["headers"])
    return out


@pytest.fixture
def wsgi_load(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> WsgiLoadFactory:
    """Factory: ``wsgi_load(target, rate=300, mode="open", duration=10, slo=["p99<200ms"])`` drives load through
    the target's proxy (or at ``wsgi_target``, the running service of --wsgi-target) and returns a ``Result`` (the
    JSON contract) whose SLO verdict includes the test's ``wsgi_slo`` marker, the session's --wsgi-slo and ``slo``.
    Profile keys: those of ``LoadSpec`` (mode, rate, start_rate, concurrency, duration, path, mix, verify_contains,
    think_time, warmup, processes, ...); ``distributed="locust"``, ``generators=N``, ``locust_master="HOST:PORT"``,
    ``expect_generators=N`` run it on Locust generators instead of this process's engine (like the options)."""
    import dataclasses

    from pytest_wsgi502.cellrun import effective_slos, layered, load_sources, load_spec, warmup_within

    def load(target: Target | RemoteTarget, *, slo: str | Iterable[str] = (),
             verify: Callable[[httpx.Response], bool] | None = None, **profile: Any) -> Result:
        try:
            via = _runtime(target.ctx, {k: profile.pop(k) for k in RUNTIME_KEYS if k in profile})
            overrides = _profile(profile)
            spec = dataclasses.replace(load_spec(target.cell, target.ctx, target.url), **overrides)
            if "duration" in overrides and "warmup" not in overrides:  # the layered warm-up, within this duration
                warmup = layered(target.cell, target.ctx, "warmup")[0]
                spec = dataclasses.replace(spec, warmup=warmup_within(warmup, spec.duration))
            spec.validate()
            slos, slo_sources = effective_slos(target.cell, target.ctx, _marker_slos(request),
                                               [slo] if isinstance(slo, str) else slo)
        except (ValueError, TypeError) as exc:  # a bad profile fails this test with one line, no traceback
            _fail(ValueError(f"wsgi_load: {exc}"))
        live = _progress(request, target.cell.name)
        try:
            measured = target.measure(spec, slos, verify, progress=live.callback, via=via)
        except ValueError as exc:  # ConfigError: e.g. a server-side SLO on a remote target, one line
            _fail(ValueError(f"wsgi_load: {exc}"))
        finally:
            live.finish()
        sources = load_sources(target.cell, target.ctx)
        measured["load"]["sources"] = {**sources, **{k: "argument" for k in overrides if k in sources}}
        measured["slo"]["sources"] = slo_sources
        result = Result(measured)
        record(request, result)
        return result

    return load
