"""One cell, start to verdict: server + proxy up, load through the proxy, telemetry, result dict, SLO verdict.

This is the whole data path of the design in one place, so a reader can follow a cell from the matrix to the
table: ``run_cell`` is called by the ``wsgi_cell_run`` fixture and returns a plain, JSON-ready dict.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_wsgi502 import slo as slo_mod
from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.load.engine import LoadSpec
from pytest_wsgi502.load.engine import run as run_load
from pytest_wsgi502.proxy import LocalProxy, parse_access_log, parse_error_log
from pytest_wsgi502.servers.base import ServerSpec, make_server


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


class _Sampler(threading.Thread):
    """Polls the server's telemetry channel about once a second while the load runs."""

    def __init__(self, server: Any) -> None:
        super().__init__(daemon=True, name="wsgi502-sampler")
        self.server, self.stopped = server, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(Exception):
                self.server.sample()
            self.stopped.wait(1.0)


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


def run_cell(cell: Cell, ctx: CellContext, base_env: dict[str, str]) -> dict[str, Any]:
    import httpx

    workdir = ctx.run_dir / "cells" / cell.name
    workdir.mkdir(parents=True, exist_ok=True)
    spec = ServerSpec(cell, workdir, ctx.app, ctx.chdir)
    server = make_server(spec, ctx.server_binaries[cell.server], ctx.ledger)
    proxy = LocalProxy(workdir, server.address, ctx.idle_timeout, ctx.nginx, ctx.ledger)
    sampler = _Sampler(server)
    try:
        url = f"http://{server.address}/health"
        server.start(cell_env(cell, ctx, base_env), lambda: httpx.get(url, timeout=5).status_code < 500)
        proxy.start("/health")
        sampler.start()
        since = time.time()
        load = run_load(LoadSpec(
            base_url=proxy.url, path=cell.path, n_max=cell.n_max, verify_contains=cell.verify_contains,
            concurrency=ctx.concurrency, duration=ctx.duration, max_requests=ctx.max_requests,
            timeout=ctx.timeout,
        ))
    finally:
        sampler.stopped.set()
        if sampler.is_alive():
            sampler.join(5)
        proxy.stop()  # graceful: flushes the access log
        server.stop()
    result: dict[str, Any] = {"name": cell.name, "server": cell.server, "description": cell.description,
                              "config": cell.as_dict(), "dir": str(workdir)}
    result.update(load["stats"].to_dict())
    result["engine"] = load["engine"]
    telemetry = server.telemetry()
    result["respawns"], result["kills"] = telemetry.pop("respawns"), telemetry.pop("kills")
    result["telemetry"] = telemetry
    result["proxy"] = {**parse_access_log(workdir / "proxy-access.log", since),
                       "error_reasons": parse_error_log(workdir / "proxy-error.log")}
    result["files"] = sorted(p.name for p in workdir.iterdir() if p.is_file())
    # option/env/ini SLOs override the cell's own SLO on the same metric, and add the rest
    session = slo_mod.parse_slos(ctx.session_slos)
    overridden = {s.metric for s in session}
    slos = [s for s in slo_mod.parse_slos(cell.slo) if s.metric not in overridden] + session
    result["slo"] = slo_mod.verdict(slos, result)
    return result
