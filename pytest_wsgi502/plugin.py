"""pytest glue only: hooks and options, the header, parametrization; the ``ConfigError -> UsageError`` edge.
Logic lives elsewhere: run state in state.py, fixtures in fixtures.py, results and the reporter in results.py,
the hooks a project implements in hookspec.py.

Imports here stay cheap (no Django, gevent, httpx, testcontainers): this module loads in every pytest run of
every project that has the plugin installed.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pytest_wsgi502.config.duration import Auto
from pytest_wsgi502.config.settings import SETTINGS, env_snapshot, resolve
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.results import MatrixReporter
from pytest_wsgi502.state import (
    BACKEND,
    LOCAL_FIXTURES,
    REPORT_ATTR,
    RESULTS,
    SERVER_METRICS,
    SERVICE_FIXTURES,
    SKIP_CELL,
    STATE,
    State,
    skip_reason,
    target_skip_reason,
)

pytest_plugins = ["pytest_wsgi502.fixtures"]


@contextmanager
def _usage() -> Iterator[None]:
    """The pytest edge: the core's ConfigError (one line) becomes pytest's usage error (exit 4, ``ERROR: ...``)."""
    try:
        yield
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_wsgi502 import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wsgi502", "WSGI 502 matrix (pytest-wsgi502)")
    group.addoption("--wsgi-matrix", action="store_true", dest="wsgi502_matrix",
                    help="run the server matrix: MySQL + each server cell behind an ELB-like proxy, under load")
    for s in SETTINGS:
        default = f"; default {s.default}" if s.default else ""
        extra: dict[str, Any] = {"nargs": "?", "const": s.const} if s.const is not None else {}
        text = f"{s.help} [env {s.env}, ini {s.ini}{default}]".replace("%", "%%")  # argparse formats help with %
        group.addoption(s.option, dest=s.dest, metavar=s.metavar, default=None, help=text, **extra)
        parser.addini(s.ini, s.help, default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "wsgi_matrix: runs services and load (a matrix cell, or a test that uses wsgi_server/wsgi_load); "
        "set by the plugin, which skips these without --wsgi-matrix"
    )
    config.addinivalue_line(
        "markers", "wsgi_slo(*slos): SLOs ('p99<200ms', 'error_rate<1e-4') for wsgi_cell_run/wsgi_load in this test"
    )
    rootdir = config.inipath.parent if config.inipath else config.rootpath
    if config.getoption("help", False) or config.getoption("version", False):
        # --help always works: a bad WSGI502_* value or matrix must not hide the help that explains it, and
        # nothing is checked or started (no preflight, no backend probe)
        config.stash[STATE] = State(resolve({}, {}, {}), False, rootdir)
        return
    _check_path_options(list(config.invocation_params.args))
    ini = {s.ini: config.getini(s.ini) for s in SETTINGS}
    options = {s.dest: config.getoption(s.dest) for s in SETTINGS}
    with _usage():
        settings = resolve(options, env_snapshot(), ini)
    # --wsgi-target runs the load too (at the running service): it needs no --wsgi-matrix, and starts nothing here
    state = State(settings, bool(config.getoption("wsgi502_matrix")) or settings.target is not None, rootdir)
    config.stash[STATE] = state
    _check_distributed(state)
    if state.target is not None:
        _check_target(state)
    elif state.enabled:
        from pytest_wsgi502.preflight import check
        from pytest_wsgi502.services.backend import choose

        with _usage():  # a forced engine that is down is a usage error (choose raises ValueError)
            config.stash[BACKEND] = choice = choose(settings.backend, os.environ)
            check(state.settings, state.cells, state.path("chdir"), backend=choice.name)
    _check_reports(state)
    config.pluginmanager.register(MatrixReporter(config, state), "wsgi502-reporter")
    if state.enabled:
        _term_as_interrupt(config)


_TERM_HANDLER = pytest.StashKey[Any]()


def _interrupted_by_term(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, signal.SIG_DFL, None):
        # exactly what Ctrl-C does: during the load asyncio's runner handles SIGINT (it cancels the load, then
        # raises KeyboardInterrupt); a KeyboardInterrupt raised here instead can land inside an event-loop callback,
        # be logged there and let the load run on (seen: a 60 s cell ran to its end after SIGTERM)
        signal.raise_signal(signal.SIGINT)
        return
    raise KeyboardInterrupt("SIGTERM: stopping as for Ctrl-C (services, cgroups and private directories released)")


def _term_as_interrupt(config: pytest.Config) -> None:
    """SIGTERM (``timeout``, a CI runner cancelling a job, ``kill``) releases what the run started as Ctrl-C does:
    Python's default for SIGTERM ends the process without fixture teardown or ``atexit``, so the services died
    with their parent (PR_SET_PDEATHSIG) but the private MariaDB directory and the CPU split's cgroups stayed.
    Only when nobody else handles SIGTERM (a handler the user or another plugin installed is left alone), and
    only from the main thread (the only one that may set a handler)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return
    signal.signal(signal.SIGTERM, _interrupted_by_term)
    config.stash[_TERM_HANDLER] = _interrupted_by_term


def _check_target(state: State) -> None:
    """--wsgi-target: the URL resolves now (the engine resolves again and connects only to what it checked); any
    non-loopback address without --wsgi-allow-remote, and options that need local services, are usage errors."""
    from pytest_wsgi502.load.engine import resolve_target

    s = state.settings
    with _usage():
        found = resolve_target(s.target, allow_remote=True)  # resolves the name only: nothing is connected
    remote = [a for a in found.addresses if not _loopback(a)]
    if remote and not s.allow_remote:
        raise pytest.UsageError(
            f"{_given('target', s.values['target'].raw, s.source('target'))} resolves to non-loopback "
            f"{', '.join(sorted(remote))}: load would leave this machine; pass --wsgi-allow-remote (ini "
            "wsgi_allow_remote, env WSGI502_ALLOW_REMOTE) to allow it")
    state.target_addresses = found.addresses
    for name, why in (("shard", "there is one target, no matrix to split"),
                      ("baseline_cell", "a target has no baseline cell to run side by side"),
                      ("repeat", "repeats of a target are not supported yet")):
        raw = s.values[name]
        if raw.value is not None and raw.source != "default" and (name != "repeat" or raw.value > 1):
            raise pytest.UsageError(f"{_given(name, raw.raw, raw.source)} does not go with --wsgi-target: {why}")
    from pytest_wsgi502.slo import parse_slos

    server_side = [slo.text for slo in parse_slos(list(s.slo or ())) if slo.metric in SERVER_METRICS]
    if server_side:
        raise pytest.UsageError(f"--wsgi-slo {', '.join(server_side)}: measured from the server's own logs, which a "
                                "remote target does not expose (--wsgi-target judges what the client sees)")


def _check_distributed(state: State) -> None:
    """--wsgi-distributed=locust and its options (issue 17): Locust installed, a master address that is valid and
    loopback unless the load may leave this machine, and nothing the generators cannot do (duration=auto,
    --wsgi-processes); the generator options without the runtime are a mistake, said now."""
    s = state.settings
    given = {name: s.values[name] for name in ("generators", "locust_master", "expect_generators")
             if s.values[name].value is not None and s.source(name) != "default"}
    if s.distributed != "locust":
        if given:
            name, r = next(iter(given.items()))
            raise pytest.UsageError(f"{_given(name, r.raw, r.source)} needs --wsgi-distributed=locust (ini "
                                    "wsgi_distributed, env WSGI502_DISTRIBUTED)")
        return
    from pytest_wsgi502.load.distributed import locust_missing, parse_master

    runtime = _given("distributed", s.values["distributed"].raw, s.source("distributed"))
    if (hint := locust_missing()) is not None:
        raise pytest.UsageError(f"{runtime}: {hint}")
    if s.processes > 1:
        processes = _given("processes", s.values["processes"].raw, s.source("processes"))
        raise pytest.UsageError(f"{runtime} does not combine with {processes}: each generator is one engine "
                                "process; raise --wsgi-generators instead")
    if "expect_generators" in given and "locust_master" not in given:
        r = given["expect_generators"]
        raise pytest.UsageError(f"{_given('expect_generators', r.raw, r.source)} counts generators started elsewhere: "
                                "it needs --wsgi-locust-master=HOST:PORT (local generators: --wsgi-generators)")
    if s.locust_master is not None:
        r = s.values["locust_master"]
        with _usage():
            try:
                host, _ = parse_master(s.locust_master)
            except ConfigError as exc:
                raise ConfigError(f"{_given('locust_master', r.raw, r.source)}: {exc}") from None
        if not _loopback_name(host):
            if state.target is None:
                raise pytest.UsageError(
                    f"{_given('locust_master', r.raw, r.source)}: generators on other machines cannot reach this "
                    "run's proxy (services listen on loopback only); use a loopback master, or --wsgi-target for a "
                    "service they can reach")
            if not s.allow_remote:
                raise pytest.UsageError(
                    f"{_given('locust_master', r.raw, r.source)} listens beyond this machine: pass "
                    "--wsgi-allow-remote (ini wsgi_allow_remote, env WSGI502_ALLOW_REMOTE) to allow it")
    auto = [c.name for c in _cells_or_none(state) if isinstance(c.duration, Auto)]
    if isinstance(s.duration, Auto) or auto:
        where = (_given("duration", s.values["duration"].raw, s.source("duration")) if isinstance(s.duration, Auto)
                 else f"cell {auto[0]}'s duration = auto")
        raise pytest.UsageError(f"{where} does not go with {runtime}: auto decides from one engine's live stats, "
                                "which generators do not send; give a fixed duration")


def _cells_or_none(state: State) -> list[Any]:
    """The cells, or none when the matrix cannot be read (that error is reported once, at collection)."""
    if not state.enabled or state.target is not None:
        return []
    try:
        return state.cells
    except ConfigError:
        return []


def _loopback_name(host: str) -> bool:
    """``localhost`` or a loopback address (a master's host, not resolved: other names are not loopback)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _given(name: str, raw: str | None, source: str) -> str:
    """How the user wrote a setting, to name it in an error: --wsgi-x=V, WSGI502_X=V or ini wsgi_x=V."""
    where = {"option": f"--wsgi-{name.replace('_', '-')}", "env": f"WSGI502_{name.upper()}"}.get(source,
                                                                                              f"ini wsgi_{name}")
    return f"{where}={raw}"


def _loopback(address: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address.split("%")[0]).is_loopback


_PATH_OPTIONS = ("--wsgi-json", "--wsgi-matrix-file", "--wsgi-keep-dir", "--wsgi-mysqld", "--wsgi-nginx",
                 "--wsgi-chdir", "--wsgi-html", "--wsgi-png", "--wsgi-storage", "--wsgi-compare")


def _check_reports(state: State) -> None:
    """Report options that cannot work are usage errors now, not a lost report at the end of a long run."""
    s = state.settings
    if s.html or s.png:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            what = "--wsgi-html" if s.html else "--wsgi-png"
            raise pytest.UsageError(f"{what} draws with matplotlib: pip install 'pytest-wsgi502[report]'")
    if s.save or s.compare or s.compare_fail:
        from pytest_wsgi502.report.compare import require_storage

        option = "--wsgi-save" if s.save else "--wsgi-compare" if s.compare else "--wsgi-compare-fail"
        try:
            require_storage(option)  # pytest-benchmark is the optional [benchmark] extra
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
    if s.compare or s.compare_fail:
        from pytest_wsgi502.report.compare import find_run, storage

        try:
            find_run(storage(state.path("storage")), s.compare or "latest")
        except LookupError as exc:
            option = "--wsgi-compare" if s.compare else "--wsgi-compare-fail"
            raise pytest.UsageError(f"{option}: {exc}") from None


def _check_path_options(args: list[str]) -> None:
    """pytest picks its rootdir before plugins load, so in ``--wsgi-json /tmp/out.json`` an *existing* path
    is taken for a test path and moves the rootdir. Ask for the ``=`` form instead of running somewhere else."""
    for opt, value in itertools.pairwise(args):
        if opt in _PATH_OPTIONS and Path(value).exists():
            raise pytest.UsageError(
                f"write {opt}={value} (with '='): pytest reads an existing path after a plugin option as a test path"
            )


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(STATE, None)
    if state is None:
        return []
    s = state.settings
    if not state.enabled:
        # nothing to do: a plain run in a project that has the plugin installed says nothing. Asked for a --wsgi-*
        # option without --wsgi-matrix, say why it does not start anything.
        asked = [setting.option for setting in SETTINGS if s.source(setting.name) == "option"]
        return [f"wsgi502: matrix off (pass --wsgi-matrix to run it; given: {', '.join(asked)})"] if asked else []
    if state.target is not None:
        return _target_header(state)
    shown: tuple[str, ...] = ("backend", "matrix_file", "duration", "requests", "concurrency", "mode", "rate",
                              "processes", "timeout", "idle_timeout", "slo", "app", "chdir", "isolation")
    if s.distributed != "none":
        shown += ("distributed", "generators", "locust_master", "expect_generators")
    parts = []
    for name in shown:
        r = s.values[name]
        value = r.raw if r.raw is not None else ("seed" if name == "matrix_file" else "-")
        if name == "idle_timeout" and r.raw is not None and r.value != _seconds(r.raw):
            value = f"{r.raw} -> {r.value:g}s, rounded up to whole seconds"
        parts.append(f"{name}={value} ({r.source})")
    choice = config.stash.get(BACKEND, None)
    backend = [f"wsgi502: backend {choice.name}: {choice.reason}"] if choice is not None else []
    plan = state.shard
    shard = [f"wsgi502: {plan.header()}"] if plan is not None else []
    return ["wsgi502: " + ", ".join(parts), *backend,
            f"wsgi502: cells: {', '.join(c.name for c in state.cells)}", *shard]


def _target_header(state: State) -> list[str]:
    """--wsgi-target: the load settings, where the load goes, and what the report can and cannot say."""
    from pytest_wsgi502.report.table import REMOTE_NOTE

    s = state.settings
    parts = []
    names: tuple[str, ...] = ("duration", "requests", "concurrency", "mode", "rate", "processes", "timeout", "slo",
                              "path")
    if s.distributed != "none":
        names += ("distributed", "generators", "locust_master", "expect_generators")
    for name in names:
        r = s.values[name]
        parts.append(f"{name}={r.raw if r.raw is not None else '-'} ({r.source})")
    where = "loopback" if all(_loopback(a) for a in state.target_addresses) else "REMOTE (--wsgi-allow-remote)"
    return ["wsgi502: " + ", ".join(parts),
            f"wsgi502: target {s.target} ({s.source('target')}): {', '.join(state.target_addresses)}, {where}",
            f"wsgi502: {REMOTE_NOTE}"]


def _seconds(text: str) -> float:
    from pytest_wsgi502.config.duration import parse_duration

    return parse_duration(text)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "wsgi_cell" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[STATE]
    try:
        state.cells  # noqa: B018 (loads the matrix)
    except ConfigError as exc:  # raised here it would be a collection error with a traceback: report it once below
        state.error = str(exc)
        return
    skip = [] if state.enabled else [pytest.mark.skip(reason=SKIP_CELL)]
    metafunc.parametrize(
        "wsgi_cell", [pytest.param(c, id=c.name, marks=[pytest.mark.wsgi_matrix, *skip]) for c in state.cells]
    )


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the wsgi_matrix marker added here counts for -m
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.error:
        raise pytest.UsageError(state.error)
    mark_service_tests(items, state.enabled, remote=state.target is not None)
    if state.settings.shard is not None:
        deselect_other_shards(config, items, state)


def deselect_other_shards(config: pytest.Config, items: list[pytest.Item], state: State) -> None:
    """--wsgi-shard: matrix cells of other shards are deselected (not skipped: they are another job's work).
    A baseline pinned to this shard stays; tests that are not matrix cells are left alone."""
    with _usage():
        plan = state.shard
    if plan is None:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        cell = getattr(getattr(item, "callspec", None), "params", {}).get("wsgi_cell")
        (drop if cell is not None and getattr(cell, "name", None) not in plan.runs else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_wsgi502_cell_result(result: dict[str, Any], config: pytest.Config) -> None:
    """Each matrix cell's result says which shard ran it, and whether it belongs there or was pinned there as
    a baseline (the merge keeps a pinned baseline's run from the shard it belongs to)."""
    state = config.stash.get(STATE, None)
    plan = state.shard if state is not None else None
    if plan is None or result.get("name") not in plan.owner:
        return
    name = result["name"]
    result["shard"] = {"index": plan.shard.index, "count": plan.shard.count, "owner": plan.owner[name],
                       "pinned": name not in plan.own, "position": list(plan.owner).index(name),
                       "owners": dict(plan.owner)}  # every cell's shard: the merge knows what a full run has


def mark_service_tests(items: list[pytest.Item], enabled: bool, remote: bool = False) -> None:
    """The one rule for when services and load run, as for matrix cells: a test that uses a fixture that starts
    them (directly or through another fixture: ``item.fixturenames`` is the closure) is marked ``wsgi_matrix``
    and, without --wsgi-matrix, skipped with a reason that names the fixture. No marker or skipif in the test.
    With --wsgi-target (``remote``) nothing starts locally: a test that uses a local-service fixture is skipped."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "wsgi_cell" in names:  # a matrix cell: parametrized, marked and skipped in pytest_generate_tests
            continue
        local = next((f for f in LOCAL_FIXTURES if f in names), None) if remote else None
        if local is not None:
            item.add_marker(pytest.mark.wsgi_matrix)
            item.add_marker(pytest.mark.skip(reason=target_skip_reason(local)))
            continue
        used = next((f for f in SERVICE_FIXTURES if f in names), None)
        if used is None:
            continue
        item.add_marker(pytest.mark.wsgi_matrix)
        if not enabled:
            item.add_marker(pytest.mark.skip(reason=skip_reason(used)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "call" and item.stash.get(RESULTS, None):
        setattr(report, REPORT_ATTR, item.stash[RESULTS])
    return report


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_TERM_HANDLER, None) is not None and signal.getsignal(signal.SIGTERM) is _interrupted_by_term:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # pytester runs many sessions in one process
    from pytest_wsgi502.services.process import stop_all

    stop_all()  # anything a fixture could not tear down (Ctrl-C, internal errors)
    from pytest_wsgi502.services.isolation import release_all

    release_all()  # then the CPU split's cgroups (removable once empty) and this process's affinity
    from pytest_wsgi502.services.backend import close_containers

    close_containers()  # the same for containers (only if the containers backend was used)
