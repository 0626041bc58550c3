"""Which class serves a cell (``uwsgi``, ``gunicorn``), its ports, and where the installed servers are."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from pytest_wsgi502.servers.base import RunnerFactory, Server, ServerSpec
from pytest_wsgi502.servers.gunicorn import Gunicorn
from pytest_wsgi502.servers.local import LocalRunner
from pytest_wsgi502.servers.uwsgi import UWSGI
from pytest_wsgi502.services.process import find_binary, free_ports

SERVERS: dict[str, type[Server]] = {"uwsgi": UWSGI, "gunicorn": Gunicorn}

ServerFactory = Callable[[ServerSpec, str, Path | None], Server]  # make_server with its runner chosen


def binary_for(server: str) -> str | None:
    return find_binary(server, venv=True)


def with_ports(spec: ServerSpec) -> ServerSpec:
    """``spec`` with its server and stats ports chosen (free ones on 127.0.0.1) where it has none."""
    if spec.port and spec.stats_port:
        return spec
    port, stats_port = free_ports(2)
    return dataclasses.replace(spec, port=spec.port or port, stats_port=spec.stats_port or stats_port)


def make_server(spec: ServerSpec, binary: str, ledger: Path | None = None,
                runner: RunnerFactory = LocalRunner) -> Server:
    """The server of ``spec.cell``, run by ``runner`` (a process on this host unless told otherwise)."""
    return SERVERS[spec.cell.server](with_ports(spec), binary, ledger, runner=runner)
