"""WSGI servers under test: config rendering, start/stop, and telemetry (respawns, kills, log events)."""

from __future__ import annotations

from pytest_wsgi502.servers.base import LocalServer, ServerSpec, binary_for, make_server

__all__ = ["LocalServer", "ServerSpec", "binary_for", "make_server"]
