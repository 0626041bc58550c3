"""WSGI servers under test: config rendering, start/stop through a runner (local process or container), and
telemetry (respawns, kills, log events)."""

from __future__ import annotations

from pytest_wsgi502.servers.base import Placement, Runner, Server, ServerSpec
from pytest_wsgi502.servers.factory import ServerFactory, binary_for, make_server

__all__ = ["Placement", "Runner", "Server", "ServerFactory", "ServerSpec", "binary_for", "make_server"]
