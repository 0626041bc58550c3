"""Which backend runs the services: ``local`` processes or ``containers`` on a Docker-compatible engine.

Cheap on purpose (stdlib only): ``auto`` is decided in ``pytest_configure`` of every run, before any
testcontainers or docker import. An engine "answers" when ``GET /_ping`` on its API returns OK.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pytest_wsgi502.config.values import ConfigError

# Docker's socket, then Podman's (rootful, then rootless): where an engine listens when DOCKER_HOST is unset
DEFAULT_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock", "{xdg}/podman/podman.sock",
                   "{home}/.docker/run/docker.sock")


@dataclass(frozen=True)
class BackendChoice:
    name: str  # "local" | "containers"
    reason: str  # one line for the header
    docker_host: str | None = None  # the engine's URL when name == "containers"




class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def ping(url: str, timeout: float = 2.0) -> str | None:
    """None when the engine at ``url`` (unix:///path or tcp://host:port) answers ``/_ping``; else why not."""
    try:
        if url.startswith("unix://"):
            conn: http.client.HTTPConnection = _UnixHTTPConnection(url[len("unix://"):], timeout)
        elif url.startswith(("tcp://", "http://")):
            hostport = url.split("://", 1)[1].rstrip("/")
            conn = http.client.HTTPConnection(hostport, timeout=timeout)
        else:
            return f"unsupported DOCKER_HOST scheme in {url!r} (unix:// or tcp:// without TLS)"
        try:
            conn.request("GET", "/_ping")
            resp = conn.getresponse()
            body = resp.read(64)
        finally:
            conn.close()
    except OSError as exc:
        return f"{exc.strerror or exc}".strip() or type(exc).__name__
    if resp.status != 200 or body.strip() != b"OK":
        return f"GET /_ping answered {resp.status} {body[:20]!r}"
    return None


def candidates(environ: Mapping[str, str]) -> list[str]:
    """DOCKER_HOST alone when set (the user chose), else the default sockets that exist."""
    if environ.get("DOCKER_HOST"):
        return [environ["DOCKER_HOST"]]
    xdg = environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    home = environ.get("HOME", "/root")
    return ["unix://" + p.format(xdg=xdg, home=home) for p in DEFAULT_SOCKETS]


def choose(setting: str, environ: Mapping[str, str],
           probe: Callable[[str], str | None] = ping,
           exists: Callable[[str], bool] = os.path.exists) -> BackendChoice:
    """Resolve --wsgi-backend. ``containers`` with no engine answering is an error (ValueError, one line)."""
    if setting == "local":
        return BackendChoice("local", "asked for")
    tried: list[str] = []
    for url in candidates(environ):
        if url.startswith("unix://") and not exists(url[len("unix://"):]) and not environ.get("DOCKER_HOST"):
            continue
        why = probe(url)
        if why is None:
            source = "DOCKER_HOST" if environ.get("DOCKER_HOST") else "default socket"
            verb = "auto: " if setting == "auto" else ""
            return BackendChoice("containers", f"{verb}engine at {url} ({source}) answered", url)
        tried.append(f"{url}: {why}")
    detail = "; ".join(tried) if tried else "DOCKER_HOST unset and no engine socket at " + ", ".join(
        u[len("unix://"):] for u in candidates(environ))
    if setting == "containers":
        raise ConfigError(f"--wsgi-backend=containers: no Docker-compatible engine answers ({detail}); start one "
                         "(e.g. `podman system service`) and set DOCKER_HOST, or use --wsgi-backend=local")
    return BackendChoice("local", f"auto: no engine answered ({detail})")


def close_containers() -> None:
    """Remove what container sessions of this process left (Ctrl-C); nothing when the backend was never used."""
    mod = sys.modules.get("pytest_wsgi502.services.containers.session")
    if mod is not None:
        mod.close_all()
