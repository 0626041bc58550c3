"""What every server has: a config rendered from the cell into the cell's directory, a process, telemetry."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.services.process import LocalProcess, find_binary, free_ports


@dataclass(frozen=True)
class ServerSpec:
    """Everything needed to render a server config, beyond the cell itself."""

    cell: Cell
    workdir: Path  # the cell's directory: config, logs, telemetry files
    app: str  # module:callable
    chdir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    stats_port: int = 0


class LocalServer:
    """A WSGI server process rendered from a cell. Subclasses: ``render`` and ``telemetry``."""

    kind = ""
    stop_signal = signal.SIGINT  # uWSGI 2.0 treats SIGTERM as "reload", not "stop"
    config_name = ""

    def __init__(self, spec: ServerSpec, binary: str, ledger: Path | None = None) -> None:
        self.spec, self.binary, self.ledger = spec, binary, ledger
        self.process: LocalProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.spec.port}"

    @property
    def log(self) -> Path:
        return self.spec.workdir / "server.log"

    @property
    def config_path(self) -> Path:
        return self.spec.workdir / self.config_name

    def settings(self) -> dict[str, Any]:
        """The server's settings as rendered (uWSGI ini keys / gunicorn settings), for the config and lint."""
        raise NotImplementedError

    def render(self) -> str:
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, env: dict[str, str], ready: Any, timeout: float = 60.0) -> LocalServer:
        self.spec.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render())
        self.process = LocalProcess(
            f"{self.kind} ({self.spec.cell.name})", self.argv(), self.log, cwd=self.spec.chdir, env=env,
            stop_signal=self.stop_signal, ledger=self.ledger, stamp=True,
        ).start()
        self.process.wait_ready(ready, timeout, f"answering HTTP on {self.address}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def telemetry(self, until: float | None = None) -> dict[str, Any]:
        """{"respawns": int, "kills": int, "events": [...], ...} from the server's own logs/stats, counting
        only events up to ``until`` (the end of the load: the harness's own stop is not the server's doing)."""
        raise NotImplementedError

    def events(self, patterns: Any, until: float | None) -> list[Any]:
        from pytest_wsgi502.servers.telemetry import parse_events

        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [e for e in parse_events(text, patterns) if until is None or e.t is None or e.t <= until]

    def sample(self) -> None:
        """Called about once a second during load (e.g. to poll a stats server). Default: nothing."""


def binary_for(server: str) -> str | None:
    return find_binary(server, venv=True)


def make_server(spec: ServerSpec, binary: str, ledger: Path | None = None) -> LocalServer:
    from pytest_wsgi502.servers.gunicorn import Gunicorn
    from pytest_wsgi502.servers.uwsgi import UWSGI

    cls = {"uwsgi": UWSGI, "gunicorn": Gunicorn}[spec.cell.server]
    if not (spec.port and spec.stats_port):
        port, stats_port = free_ports(2)
        spec = ServerSpec(spec.cell, spec.workdir, spec.app, spec.chdir, spec.env, spec.port or port,
                          spec.stats_port or stats_port)
    return cls(spec, binary, ledger)
