"""Labels and cleanup: which containers and networks belong to which session, and removing those of sessions
whose owner process is gone. Pure over a docker-like client (tests pass a fake); the watchdog process too."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any

from pytest_wsgi502.services.process import start_time

LABEL = "org.pytest-wsgi502.session"
OWNER_LABEL = "org.pytest-wsgi502.owner"
ROLE_LABEL = "org.pytest-wsgi502.role"


def owner_id(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()} {pid} {start_time(pid)}"


def owner_alive(owner: str, hostname: str | None = None) -> bool:
    """Whether the process named by an owner label still runs. Another host's owner counts as alive: we
    cannot tell, so we never touch its containers."""
    try:
        host, pid_s, started = owner.rsplit(" ", 2)
        pid = int(pid_s)
    except ValueError:
        return False  # not a label we wrote in this form: treat as an orphan of ours
    if host != (hostname or socket.gethostname()):
        return True
    return start_time(pid) == started


def session_labels(session_id: str, owner: str) -> dict[str, str]:
    return {LABEL: session_id, OWNER_LABEL: owner}


def remove_session(client: Any, session_id: str) -> list[str]:
    """Remove every container, then every network, labelled with this session. Returns what was removed.

    Low-level list calls (one request, no per-container inspect): a container that disappears meanwhile (the
    watchdog and a teardown racing) is not an error."""
    removed: list[str] = []
    flt = {"label": f"{LABEL}={session_id}"}
    for c in client.api.containers(all=True, filters=flt):
        with contextlib.suppress(Exception):
            client.api.remove_container(c["Id"], force=True, v=True)
            removed.append(f"container {_name(c)}")
    for n in client.api.networks(filters=flt):
        with contextlib.suppress(Exception):
            client.api.remove_network(n["Id"])
            removed.append(f"network {_name(n)}")
    return removed


def reap_leftovers(client: Any, alive: Callable[[str], bool] = owner_alive) -> list[str]:
    """Remove the containers and networks of sessions whose owner process is gone (killed sessions)."""
    sessions: dict[str, str] = {}
    flt = {"label": LABEL}
    for obj in [*client.api.containers(all=True, filters=flt), *client.api.networks(filters=flt)]:
        labels = obj.get("Labels") or {}
        sessions.setdefault(labels.get(LABEL, ""), labels.get(OWNER_LABEL, ""))
    removed: list[str] = []
    for session_id, owner in sessions.items():
        if session_id and not alive(owner):
            removed += remove_session(client, session_id)
    return removed


def session_objects(client: Any, session_id: str) -> list[str]:
    """What the engine still has of a session (containers with their state, networks): `podman ps -a` by label."""
    flt = {"label": f"{LABEL}={session_id}"}
    return ([f"container {_name(c)} ({c.get('State')})" for c in client.api.containers(all=True, filters=flt)]
            + [f"network {_name(n)}" for n in client.api.networks(filters=flt)])


def _name(obj: Mapping[str, Any]) -> str:
    names = obj.get("Names") or [obj.get("Name") or obj.get("Id", "?")[:12]]
    return str(names[0]).lstrip("/")


def watchdog(docker_host: str, session_id: str) -> None:
    """Block until the parent's pipe closes (it exited, however), then remove the session's leftovers."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):
        sys.stdin.buffer.read()
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=60)
    removed = remove_session(client, session_id)
    if removed:
        print(f"wsgi502 watchdog: removed {', '.join(removed)}", file=sys.stderr)
