"""Fixtures: the session's database and run directory, and one cell run per parametrized test.

    def test_cell(wsgi_cell_run):          # parametrized over the matrix by the plugin
        wsgi_cell_run.assert_slo()
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_wsgi502.config.matrix import Cell


def _state(config: pytest.Config) -> Any:
    from pytest_wsgi502.plugin import STATE

    return config.stash[STATE]


def _fail(exc: Exception) -> None:
    pytest.fail(str(exc), pytrace=False)


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="session")
def wsgi_settings(pytestconfig: pytest.Config) -> Any:
    """The effective pytest-wsgi502 settings (each value with the source it came from)."""
    return _state(pytestconfig).settings


@pytest.fixture(scope="session")
def wsgi_run_dir(pytestconfig: pytest.Config) -> Iterator[Path]:
    """This session's private directory: every config, log and socket of every cell. Removed at the end
    unless --wsgi-keep-dir is given; leftovers of crashed sessions are reaped first."""
    from pytest_wsgi502.services.process import new_run_dir, reap_orphans

    state = _state(pytestconfig)
    base = Path(tempfile.gettempdir()) / "pytest-wsgi502"
    reap_orphans(base)
    keep = state.settings.keep_dir
    run = new_run_dir(state.path("keep_dir") if keep else base)
    if keep:
        (run / "keep").touch()
    yield run
    if not keep:
        import shutil

        shutil.rmtree(run, ignore_errors=True)


@pytest.fixture(scope="session")
def wsgi_mysql(wsgi_settings: Any, wsgi_run_dir: Path) -> Iterator[Any]:
    """A private MariaDB/MySQL server for this session (one per xdist worker): ``MySQLInfo``."""
    from pytest_wsgi502.services import ServiceError
    from pytest_wsgi502.services.mysql import LocalMySQL, find_mysqld
    from pytest_wsgi502.services.process import ledger_path

    binary = find_mysqld(wsgi_settings.mysqld)
    if binary is None:
        pytest.fail("mariadbd/mysqld not found: apt-get install mariadb-server, or pass --wsgi-mysqld", False)
    server = LocalMySQL(binary, wsgi_run_dir / "mysql", ledger_path(wsgi_run_dir))
    try:
        info = server.start()
    except ServiceError as exc:
        server.stop()
        _fail(exc)
    yield info
    server.stop()


@pytest.fixture(scope="session")
def wsgi_database(pytestconfig: pytest.Config, wsgi_mysql: Any, wsgi_run_dir: Path) -> Any:
    """The database with the app's setup command (migrations) applied once."""
    state = _state(pytestconfig)
    command = state.settings.setup_command
    if command:
        argv = shlex.split(command)
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        log = wsgi_run_dir / "setup-command.log"
        env = {**_base_env(), **wsgi_mysql.env()}
        try:
            with open(log, "wb") as fh:
                rc = subprocess.run(argv, cwd=state.path("chdir"), env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    timeout=300).returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"setup command {command!r} could not run: {exc}", pytrace=False)
        if rc != 0:
            from pytest_wsgi502.services.process import tail

            pytest.fail(f"setup command {command!r} failed (exit {rc}); last lines of {log}:\n{tail(log)}", False)
    return wsgi_mysql


@dataclass
class CellRun:
    """The result of one cell: ``result`` is the JSON-ready dict also written by --wsgi-json."""

    cell: Cell
    result: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.result["slo"]["passed"])

    def assert_slo(self) -> None:
        """Fail the test with one line per breached SLO: the SLO, the measured value, the limit."""
        if not self.passed:
            lines = "\n".join("  " + f for f in self.result["slo"]["failures"])
            pytest.fail(f"cell {self.cell.name}: SLO breached\n{lines}", pytrace=False)


@pytest.fixture
def wsgi_cell_run(request: pytest.FixtureRequest, wsgi_cell: Cell, wsgi_database: Any, wsgi_run_dir: Path) -> CellRun:
    """Run one cell of the matrix (server + proxy + load) and return its ``CellRun``."""
    from pytest_wsgi502.cellrun import CellContext, run_cell
    from pytest_wsgi502.proxy import find_nginx
    from pytest_wsgi502.servers.base import binary_for
    from pytest_wsgi502.services import ServiceError
    from pytest_wsgi502.services.process import ledger_path

    state = _state(request.config)
    s = state.settings
    ctx = CellContext(
        run_dir=wsgi_run_dir, ledger=ledger_path(wsgi_run_dir), app=s.app, chdir=state.path("chdir"),
        server_binaries={k: b for k in ("uwsgi", "gunicorn") if (b := binary_for(k))},
        nginx=find_nginx(s.nginx) or "nginx", db_env=wsgi_database.env(), duration=s.duration,
        max_requests=s.requests, concurrency=s.concurrency, timeout=s.timeout, idle_timeout=s.idle_timeout,
        session_slos=s.slo or (), mode=s.mode, rate=s.rate, start_rate=s.start_rate, think_time=s.think_time,
        processes=s.processes,
    )
    try:
        result = run_cell(wsgi_cell, ctx, _base_env())
    except (ServiceError, ValueError) as exc:
        _fail(exc)
    from pytest_wsgi502.plugin import RESULT_KEY

    request.node.user_properties.append((RESULT_KEY, result))
    return CellRun(wsgi_cell, result)
