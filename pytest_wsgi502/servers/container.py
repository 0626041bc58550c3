"""A cell's uWSGI or gunicorn in a container: the same interface as ``LocalServer`` (start, stop, telemetry,
events, sample, address, log), so ``cellrun.Target`` and the proxy on the host do not know the difference.

The config is rendered by the local server class's renderer from the container's settings (listen on 0.0.0.0,
paths of the image); the cell's directory is mounted at ``/wsgi502/cell`` (config in, gunicorn's hook events out); the
server's output is followed from the engine's log stream into ``server.log``, each line stamped on arrival as
the local backend does, so the same telemetry parsers and attribution read it. Ports are published on
127.0.0.1 only, on the ports the harness chose: ``address`` is the same string as for a local server.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from pytest_wsgi502.servers.base import LocalServer, ServerSpec
from pytest_wsgi502.servers.gunicorn import Gunicorn, render_config
from pytest_wsgi502.servers.uwsgi import UWSGI
from pytest_wsgi502.services.containers import (
    APP_DIR,
    APP_PORT,
    CELL_DIR,
    STATS_PORT,
    VENV,
    ContainerSession,
    pinned_binary_in_image,
)
from pytest_wsgi502.services.process import ServiceError, tail

_PASS_ENV = ("DJANGO_SETTINGS_MODULE", "PYTHONUNBUFFERED")
_HOST_ONLY = ("WSGI502_DB_SOCKET", "WSGI502_DB_ROOT_PASSWORD")
OVERLAY_DIR = "/wsgi502/overlay"


def mem_bytes(text: str) -> int:
    """'256m' -> bytes (k, m, g; plain digits are bytes), as Docker reads mem_limit."""
    text = text.strip().lower().rstrip("b")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("kmg")) * mult)


def container_env(env: dict[str, str], cell_env: dict[str, str], db_host: str) -> dict[str, str]:
    """The server's environment inside the container: the app's WSGI502_* settings with the database at its
    address on the session network; nothing of the host's own environment (PATH, HOME, venv) leaks in."""
    out = {k: v for k, v in env.items() if (k.startswith("WSGI502_") or k in _PASS_ENV) and k not in _HOST_ONLY}
    out.update(cell_env)
    out.update({"WSGI502_DB_HOST": db_host, "WSGI502_DB_PORT": "3306", "PYTHONUNBUFFERED": "1"})
    if "django-overlay" in env.get("PYTHONPATH", ""):
        out["PYTHONPATH"] = OVERLAY_DIR
    return out


class _InContainer(LocalServer):
    """Mixed in before UWSGI / Gunicorn."""

    session: ContainerSession

    def __init__(self, spec: ServerSpec, binary: str, ledger: Path | None = None, *,
                 session: ContainerSession) -> None:
        super().__init__(spec, binary, ledger)
        self.session = session
        self.container: Any = None
        self.image = ""
        self.state: dict[str, Any] = {}
        self.start_s: float | None = None
        self._follower: threading.Thread | None = None

    def container_argv(self) -> list[str]:
        raise NotImplementedError

    def _run_kwargs(self, env: dict[str, str]) -> dict[str, Any]:
        cell = self.spec.cell
        ports = {f"{APP_PORT}/tcp": ("127.0.0.1", self.spec.port)}
        if self.kind == "uwsgi":
            ports[f"{STATS_PORT}/tcp"] = ("127.0.0.1", self.spec.stats_port)
        volumes = {str(self.spec.workdir): {"bind": CELL_DIR, "mode": "rw"}}
        overlay = [p for p in env.get("PYTHONPATH", "").split(":") if p.endswith("django-overlay")]
        if overlay:
            volumes[overlay[0]] = {"bind": OVERLAY_DIR, "mode": "ro"}
        kwargs: dict[str, Any] = {
            "command": self.container_argv(), "detach": True, "labels": self.session.new_labels(f"server:{cell.name}"),
            "name": f"wsgi502-{self.session.id}-{self.spec.workdir.name}", "network": self.session.network.name,
            "ports": ports, "volumes": volumes, "stop_signal": "SIGINT" if self.kind == "uwsgi" else "SIGTERM",
            "environment": container_env(env, dict(cell.env), self.session.mysql_ip), "working_dir": APP_DIR,
        }
        if cell.cpus:
            kwargs["nano_cpus"] = int(cell.cpus * 1e9)
        if cell.mem_limit:
            kwargs["mem_limit"] = cell.mem_limit
            kwargs["memswap_limit"] = cell.mem_limit  # no swap: the limit is the limit
        return kwargs

    def start(self, env: dict[str, str], ready: Any, timeout: float = 120.0) -> LocalServer:
        text = self.render()  # ConfigError before anything is created
        self.spec.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(text, encoding="utf-8")
        self.image = self.session.server_image(self.kind, self.spec.cell.server_version, self.binary)
        t0 = time.monotonic()
        try:
            self.container = self.session.client.containers.run(self.image, **self._run_kwargs(env))
        except Exception as exc:
            raise ServiceError(f"{self.kind} ({self.spec.cell.name}): the container did not start: "
                               f"{str(exc).splitlines()[0]}") from None
        self._follower = threading.Thread(target=self._follow, daemon=True, name=f"wsgi502-log-{self.spec.cell.name}")
        self._follower.start()
        deadline = time.monotonic() + timeout
        what = f"answering HTTP on {self.address}"
        while True:
            with contextlib.suppress(Exception):
                if ready():
                    self.start_s = round(time.monotonic() - t0, 2)
                    self._record_applied()
                    return self
            self.container.reload()
            if self.container.status in ("exited", "dead", "stopped"):
                rc = self.container.attrs.get("State", {}).get("ExitCode")
                self._join_follower()
                raise ServiceError(f"{self.kind} ({self.spec.cell.name}) exited (code {rc}) in its container before "
                                   f"{what}; last lines of {self.log}:\n{tail(self.log)}")
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.kind} ({self.spec.cell.name}) not ready after {timeout:.0f}s ({what}); "
                                   f"last lines of {self.log}:\n{tail(self.log)}")
            time.sleep(0.1)

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
        buf = b""
        with open(self.log, "ab", buffering=0) as out:
            with contextlib.suppress(Exception):
                for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    now = time.time()
                    for line in lines:
                        out.write(b"%.6f " % now + line + b"\n")
            if buf:
                out.write(b"%.6f " % time.time() + buf + b"\n")

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

    def describe(self) -> dict[str, Any]:
        """The container part of the cell's JSON: image, limits, engine, phase timings, exit state."""
        cell = self.spec.cell
        return {
            "image": self.image, "base_image": self.session.images.get("base"),
            "mysql_image": self.session.images.get("mysql"), "cpus": cell.cpus, "mem_limit": cell.mem_limit,
            "mem_limit_bytes": mem_bytes(cell.mem_limit) if cell.mem_limit else None,
            "engine": self.session.engine, "session": self.session.id, "start_s": self.start_s,
            "session_phases_s": dict(self.session.timings), **self.state,
        }


class ContainerUWSGI(_InContainer, UWSGI):
    def settings(self) -> dict[str, Any]:
        s = super().settings()
        s.update({"http-socket": f"0.0.0.0:{APP_PORT}", "stats": f"0.0.0.0:{STATS_PORT}", "chdir": APP_DIR,
                  "virtualenv": VENV})
        return s

    def container_argv(self) -> list[str]:
        version = self.spec.cell.server_version
        binary = pinned_binary_in_image("uwsgi", version) if version else f"{VENV}/bin/uwsgi"
        return [binary, "--ini", f"{CELL_DIR}/{self.config_name}"]


class ContainerGunicorn(_InContainer, Gunicorn):
    def settings(self) -> dict[str, Any]:
        s = super().settings()
        s.update({"bind": [f"0.0.0.0:{APP_PORT}"], "chdir": APP_DIR})
        return s

    def render(self) -> str:
        # the hooks write into the mounted cell directory; the host reads the same file at events_path
        return render_config(self.spec.cell.name, self.settings(), f"{CELL_DIR}/{self.events_path.name}")

    def container_argv(self) -> list[str]:
        return [f"{VENV}/bin/gunicorn", "--config", f"{CELL_DIR}/{self.config_name}"]


def server_factory(session: ContainerSession) -> Any:
    """A ``make_server``-compatible factory whose servers run in containers of ``session``."""
    from pytest_wsgi502.servers.base import make_server

    def make(spec: ServerSpec, binary: str, ledger: Path | None = None) -> LocalServer:
        local = make_server(spec, binary, ledger)  # chooses the free ports like the local backend
        cls = {"uwsgi": ContainerUWSGI, "gunicorn": ContainerGunicorn}[spec.cell.server]
        return cls(local.spec, binary, ledger, session=session)

    return make
