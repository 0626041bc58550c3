"""The container runner: a cell's uWSGI or gunicorn in a container of the session's app image, behind the same
``Runner`` protocol as a local process, so ``cellrun.Target`` and the proxy on the host do not know the difference.

The config is rendered by the same pure renderers, from the container's ``Placement`` (listen on 0.0.0.0 inside,
the image's paths); the cell's directory is mounted at ``/wsgi502/cell`` (config in, gunicorn's hook events out);
the server's output is followed from the engine's log stream into ``server.log``, each line stamped on arrival
as the local backend does, so the same telemetry parsers and attribution read it. Ports are published on
127.0.0.1 only, on the ports the harness chose: the server's ``address`` is the same string as for a local one.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_wsgi502.servers.base import Placement, RunnerFactory, Server, ServerSpec, fatal_or
from pytest_wsgi502.servers.factory import ServerFactory, make_server
from pytest_wsgi502.services.containers.images import (
    APP_DIR,
    APP_PORT,
    CELL_DIR,
    STATS_PORT,
    VENV,
    pinned_binary_in_image,
)
from pytest_wsgi502.services.process import ServiceError, copy_stamped, tail, wait_until

if TYPE_CHECKING:
    from pytest_wsgi502.services.containers.session import ContainerSession

_PASS_ENV = ("DJANGO_SETTINGS_MODULE", "PYTHONUNBUFFERED")
_HOST_ONLY = ("WSGI502_DB_SOCKET", "WSGI502_DB_ROOT_PASSWORD")
OVERLAY_DIR = "/wsgi502/overlay"  # where a cell's settings overlay (ServerSpec.settings_overlay) is mounted
_STOP_SIGNALS = {"uwsgi": "SIGINT"}  # uWSGI 2.0 reads SIGTERM as "reload"; the engine's default otherwise


def mem_bytes(text: str) -> int:
    """'256m' -> bytes (k, m, g; plain digits are bytes), as Docker reads mem_limit."""
    text = text.strip().lower().rstrip("b")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("kmg")) * mult)


def container_env(env: dict[str, str], cell_env: dict[str, str], db_host: str, overlay: bool = False) -> dict[str, str]:
    """The server's environment inside the container: the app's WSGI502_* settings with the database at its
    address on the session network; nothing of the host's own environment (PATH, HOME, venv) leaks in. With
    ``overlay`` the settings overlay's mount point is the app's PYTHONPATH."""
    out = {k: v for k, v in env.items() if (k.startswith("WSGI502_") or k in _PASS_ENV) and k not in _HOST_ONLY}
    out.update(cell_env)
    out.update({"WSGI502_DB_HOST": db_host, "WSGI502_DB_PORT": "3306", "PYTHONUNBUFFERED": "1"})
    if overlay:
        out["PYTHONPATH"] = OVERLAY_DIR
    return out


def container_placement(kind: str, server_version: str) -> Placement:
    """Where a server finds things in the app image, and listens inside its container."""
    binary = pinned_binary_in_image(kind, server_version) if server_version else f"{VENV}/bin/{kind}"
    return Placement(address=f"0.0.0.0:{APP_PORT}", stats=f"0.0.0.0:{STATS_PORT}", chdir=APP_DIR,
                     config_dir=CELL_DIR, binary=binary, virtualenv=VENV, fixed=True)


class ContainerRunner:
    """``Runner`` for a container of ``session``: runs the server's argv in its image, follows its output."""

    start_timeout = 120.0

    def __init__(self, server: Server, session: ContainerSession) -> None:
        self.server, self.session = server, session
        self.container: Any = None
        self.image = ""
        self.state: dict[str, Any] = {}
        self.start_s: float | None = None
        self._follower: threading.Thread | None = None

    @property
    def placement(self) -> Placement:
        return container_placement(self.server.kind, self.server.spec.cell.server_version)

    def run_kwargs(self, env: dict[str, str]) -> dict[str, Any]:
        """What ``containers.run`` gets: the command, labels, published ports, mounts, environment, limits."""
        s, cell = self.server, self.server.spec.cell
        ports = {f"{APP_PORT}/tcp": ("127.0.0.1", s.spec.port)}
        if s.kind == "uwsgi":
            ports[f"{STATS_PORT}/tcp"] = ("127.0.0.1", s.spec.stats_port)
        volumes = {str(s.spec.workdir): {"bind": CELL_DIR, "mode": "rw"}}
        overlay = s.spec.settings_overlay
        if overlay is not None:
            volumes[str(overlay)] = {"bind": OVERLAY_DIR, "mode": "ro"}
        kwargs: dict[str, Any] = {
            "command": s.argv(), "detach": True, "labels": self.session.new_labels(f"server:{cell.name}"),
            "name": f"wsgi502-{self.session.id}-{s.spec.workdir.name}", "network": self.session.network.name,
            "ports": ports, "volumes": volumes, "stop_signal": _STOP_SIGNALS.get(s.kind, "SIGTERM"),
            "environment": container_env(env, dict(cell.env), self.session.mysql_ip, overlay is not None),
            "working_dir": APP_DIR,
        }
        if cell.cpus:
            kwargs["nano_cpus"] = int(cell.cpus * 1e9)
        if cell.mem_limit:
            kwargs["mem_limit"] = cell.mem_limit
            kwargs["memswap_limit"] = cell.mem_limit  # no swap: the limit is the limit
        return kwargs

    def start(self, env: dict[str, str], ready: Callable[[], bool], timeout: float) -> None:
        s = self.server
        self.image = self.session.server_image(s.kind, s.spec.cell.server_version, s.binary)
        t0 = time.monotonic()
        try:
            self.container = self.session.client.containers.run(self.image, **self.run_kwargs(env))
        except Exception as exc:
            raise ServiceError(f"{s.name}: the container did not start: {str(exc).splitlines()[0]}") from None
        self._follower = threading.Thread(target=self._follow, daemon=True, name=f"wsgi502-log-{s.spec.cell.name}")
        self._follower.start()
        wait_until(ready, timeout, f"answering HTTP on {s.address}", fatal_or(ready, self._gone), name=s.name,
                   details=lambda: f"last lines of {s.log}:\n{tail(s.log)}", interval=0.1)
        self.start_s = round(time.monotonic() - t0, 2)
        self._record_applied()

    def _gone(self) -> str | None:
        """None while the container runs; else how it ended (its output followed to the end first)."""
        self.container.reload()
        if self.container.status not in ("exited", "dead", "stopped"):
            return None
        self._join_follower()
        return f"exited (code {self.container.attrs.get('State', {}).get('ExitCode')}) in its container"

    def _record_applied(self) -> None:
        """The limits as the engine applied them (read back, not what we asked for)."""
        with contextlib.suppress(Exception):
            self.container.reload()
            hc = self.container.attrs.get("HostConfig", {})
            nano = hc.get("NanoCpus") or 0
            self.state["applied"] = {"memory_bytes": hc.get("Memory") or None,
                                     "cpus": nano / 1e9 if nano else None, "id": self.container.short_id}

    def _follow(self) -> None:
        """The container's output into server.log, each line stamped with its arrival time."""
        with open(self.server.log, "ab", buffering=0) as out:
            copy_stamped(self.container.logs(stream=True, follow=True, stdout=True, stderr=True), out)

    def _join_follower(self) -> None:
        if self._follower is not None:
            self._follower.join(5)

    def stop(self) -> None:
        if self.container is None:
            return
        c, self.container = self.container, None
        with contextlib.suppress(Exception):
            c.stop(timeout=10)  # the server's stop signal, SIGKILL after 10 s
        self._join_follower()
        with contextlib.suppress(Exception):
            c.reload()
            st = c.attrs.get("State", {})
            # Podman reports OOMKilled false even when the kernel OOM killer acted: exit 137 / signal 9 lines
            # in the log are the evidence (telemetry counts those as kills)
            self.state.update({"exit_code": st.get("ExitCode"), "oom_killed_flag": st.get("OOMKilled")})
        with contextlib.suppress(Exception):
            c.remove(force=True, v=True)

    def signal(self, sig: signal.Signals) -> int | None:
        """``sig`` to the container's main process: the server's master is its command (pid 1 inside)."""
        if self.container is not None:
            with contextlib.suppress(Exception):  # the container already ended (a term action before)
                self.container.kill(signal=sig.name)
        return None

    def describe(self) -> dict[str, Any]:
        """The container part of the cell's JSON: image, limits, engine, phase timings, exit state."""
        cell = self.server.spec.cell
        return {"container": {
            "image": self.image, "base_image": self.session.images.get("base"),
            "mysql_image": self.session.images.get("mysql"), "cpus": cell.cpus, "mem_limit": cell.mem_limit,
            "mem_limit_bytes": mem_bytes(cell.mem_limit) if cell.mem_limit else None,
            "engine": self.session.engine, "session": self.session.id, "start_s": self.start_s,
            "session_phases_s": dict(self.session.timings), **self.state,
        }}


def container_runner(session: ContainerSession) -> RunnerFactory:
    """A ``RunnerFactory`` whose servers run in containers of ``session``."""
    return lambda server: ContainerRunner(server, session)


def server_factory(session: ContainerSession) -> ServerFactory:
    """A ``make_server``-compatible factory whose servers run in containers of ``session``."""
    runner = container_runner(session)

    def make(spec: ServerSpec, binary: str, ledger: Path | None = None) -> Server:
        return make_server(spec, binary, ledger, runner)

    return make
