"""One pytest process's containers: the engine client, the session network, MySQL and the images, created
lazily and removed by ``close`` (idempotent; also at exit and by the watchdog when this process dies)."""

from __future__ import annotations

import atexit
import contextlib
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pytest_wsgi502.services.containers import db, images
from pytest_wsgi502.services.containers.reaper import (
    ROLE_LABEL,
    owner_id,
    reap_leftovers,
    remove_session,
    session_labels,
)
from pytest_wsgi502.services.mysql import MySQLInfo
from pytest_wsgi502.services.process import ServiceError, free_port

_SESSIONS: list[ContainerSession] = []


class ContainerSession:
    """One pytest process's containers: created lazily, removed by ``close`` (idempotent)."""

    def __init__(self, docker_host: str, run_dir: Path, settings: Any, project: Path) -> None:
        self.docker_host, self.run_dir, self.settings, self.project = docker_host, run_dir, settings, project
        self.id = uuid.uuid4().hex[:12]
        self.labels = session_labels(self.id, owner_id())
        self.timings: dict[str, float] = {}
        self.images: dict[str, str] = {}
        self.engine: dict[str, Any] = {}
        self.client: Any = None
        self.network: Any = None
        self.mysql: Any = None
        self.mysql_ip = ""
        self.reaped: list[str] = []
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._lock = threading.Lock()

    def _timed(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.monotonic() - t0, 2)

    def open(self) -> ContainerSession:
        import docker

        t0 = time.monotonic()
        try:
            self.client = docker.DockerClient(base_url=self.docker_host, timeout=300)
            self.engine = self._engine_info()
        except Exception as exc:
            raise ServiceError(f"container engine at {self.docker_host}: {str(exc).splitlines()[0]}") from None
        _SESSIONS.append(self)
        (self.run_dir / "container-session").write_text(self.id + "\n")  # for tests and humans: the label value
        self.reaped = reap_leftovers(self.client)
        self._start_watchdog()
        self.network = self.client.networks.create(f"wsgi502-{self.id}", labels=self.labels)
        self._timed("engine", t0)
        return self

    def _engine_info(self) -> dict[str, Any]:
        v = self.client.version()
        comps = {c.get("Name"): c.get("Version") for c in v.get("Components", [])}
        name = "podman" if any("podman" in str(k).lower() for k in comps) else "docker"
        return {"name": name, "version": comps.get("Podman Engine") or v.get("Version"),
                "api_version": v.get("ApiVersion"), "host": self.docker_host}

    def _start_watchdog(self) -> None:
        """A child that removes this session's containers when this process dies without doing it (SIGKILL,
        a crashed xdist worker): it waits for EOF on a pipe only this process holds."""
        with open(self.run_dir / "watchdog.log", "ab") as err:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "pytest_wsgi502.services.containers", "watchdog", self.docker_host, self.id],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True,  # Ctrl-C in the terminal must not kill it before it cleans up
            )

    def new_labels(self, role: str) -> dict[str, str]:
        return {**self.labels, ROLE_LABEL: role}

    def start_mysql(self, timeout: float = 180.0) -> MySQLInfo:
        image = self.settings.mysql_image
        t0 = time.monotonic()
        images.image_id(self.client, image)  # pulls it (or says clearly that it cannot)
        self.mysql, info = db.start(self.docker_host, image, f"wsgi502-{self.id}-mysql", self.new_labels("mysql"),
                                    self.network.name, free_port(), timeout)
        self.mysql_ip = db.network_ip(self.mysql, self.network.name)
        self._timed("mysql_ready", t0)
        self.images["mysql"] = image
        return info

    def app_image(self) -> str:
        with self._lock:
            if "app" not in self.images:
                t0 = time.monotonic()
                tag, built = images.app_image(self.client, self.settings.base_image, self.project, self.run_dir)
                self._timed("app_image_build" if built else "app_image_cached", t0)
                self.images["app"], self.images["base"] = tag, self.settings.base_image
            return self.images["app"]

    def server_image(self, server: str, version: str, host_binary: str) -> str:
        """The image a cell's server runs in: the app image, plus the pinned release when the cell has one."""
        app = self.app_image()
        if not version:
            return app
        key = f"{server}-{version}"
        with self._lock:
            if key not in self.images:
                t0 = time.monotonic()
                tag, built = images.pinned_image(self.client, app, server, version, Path(host_binary).parent.parent,
                                                 self.run_dir / f"{key}-image-build.log")
                self._timed(f"{key}_image_build" if built else f"{key}_image_cached", t0)
                self.images[key] = tag
            return self.images[key]

    def close(self) -> list[str]:
        if self._closed or self.client is None:
            return []
        self._closed = True
        removed = remove_session(self.client, self.id)
        if self._watchdog is not None:
            with contextlib.suppress(Exception):
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()
                self._watchdog.wait(30)
        with contextlib.suppress(Exception):
            self.client.close()
        if self in _SESSIONS:
            _SESSIONS.remove(self)
        return removed


def close_all() -> None:
    for s in list(_SESSIONS):
        with contextlib.suppress(Exception):
            s.close()


atexit.register(close_all)
