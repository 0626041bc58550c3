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
from pytest_wsgi502.load.engine import Endpoint, LoadSpec
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
    mode: str = "closed"
    rate: float | None = None
    start_rate: float | None = None
    think_time: float = 0.0
    processes: int = 1


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


def load_spec(cell: Cell, ctx: CellContext, base_url: str) -> LoadSpec:
    """The cell's load: its own load keys win over the session's settings."""
    mode = cell.load_mode or ctx.mode
    rate = cell.rate if cell.rate is not None else ctx.rate
    if mode != "closed" and not rate:
        raise ValueError(f"cell {cell.name}: {mode} load needs a rate (--wsgi-rate or the cell's rate)")
    mix = tuple(Endpoint(m["path"], float(m.get("weight", 1)), m.get("verify_contains", ""), m.get("method", "GET"))
                for m in cell.mix)
    return LoadSpec(
        base_url=base_url, path=cell.path, n_max=cell.n_max, verify_contains=cell.verify_contains, mix=mix,
        mode=mode, rate=rate or 0.0,
        start_rate=(cell.start_rate if cell.start_rate is not None else ctx.start_rate) or 0.0,
        think_time=cell.think_time if cell.think_time is not None else ctx.think_time,
        concurrency=cell.concurrency or ctx.concurrency, duration=ctx.duration, max_requests=ctx.max_requests,
        timeout=ctx.timeout, processes=ctx.processes,
    )


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
        load = run_load(load_spec(cell, ctx, proxy.url))
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
    result["generator_bound"] = load["generator_bound"]
    result["generator_bound_reason"] = load["generator_bound_reason"]
    result["aborted"] = load["aborted"]
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
    result["slo"] = verdict = slo_mod.verdict(slos, result)
    # a run the engine could not drive, or that ended early, says nothing about the server: never a pass
    for flag, why in (("generator_bound", result["generator_bound_reason"]), ("aborted", result["aborted"])):
        if result[flag]:
            verdict["passed"] = False
            verdict["failures"].append(f"{flag}: {why}")
    return result
