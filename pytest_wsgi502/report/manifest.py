"""The JSON output contract (README "JSON output"). Later versions add keys; they never remove these."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

SCHEMA_VERSION = 1


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(config: pytest.Config) -> dict[str, Any]:
    from pytest_wsgi502.plugin import STATE

    settings = config.stash[STATE].settings
    return {
        "schema_version": SCHEMA_VERSION,
        "backend": settings.backend,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": {d: _version(d) for d in ("pytest-wsgi502", "pytest", "uwsgi", "gunicorn", "django", "httpx",
                                              "gevent", "mysqlclient", "pymysql", "sqlalchemy")},
        "settings": {name: {"value": r.raw, "source": r.source} for name, r in settings.values.items()},
    }


def write_json(path: Path, results: list[dict[str, Any]], config: pytest.Config) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"environment": environment(config), "cells": results}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)
