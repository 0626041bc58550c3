"""pytest-wsgi502: reproduce and measure WSGI 502s (MySQL + uWSGI/gunicorn + an ELB-like proxy, under load).

The public API is below (pinned by tests/unit/test_public_api.py); names resolve lazily so that
``import pytest_wsgi502`` and loading the plugin stay cheap (no httpx, Django or docker until a name is used).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from pytest_wsgi502.cellrun import Target
    from pytest_wsgi502.config.matrix import Cell, load_matrix
    from pytest_wsgi502.config.values import ConfigError
    from pytest_wsgi502.fixtures import WsgiLoadFactory, WsgiServerFactory
    from pytest_wsgi502.load.engine import Endpoint, LoadSpec
    from pytest_wsgi502.load.transport import FastTransport
    from pytest_wsgi502.metrics.stats import Stats
    from pytest_wsgi502.results import CellRun, Result
    from pytest_wsgi502.services.mysql import MySQLInfo
    from pytest_wsgi502.slo import SLO, parse_slos, verdict

__version__ = "0.1.0"

_API = {
    # the matrix and its errors
    "Cell": "pytest_wsgi502.config.matrix",
    "load_matrix": "pytest_wsgi502.config.matrix",
    "ConfigError": "pytest_wsgi502.config.values",
    # what the fixtures give a test
    "CellRun": "pytest_wsgi502.results",
    "Result": "pytest_wsgi502.results",
    "Target": "pytest_wsgi502.cellrun",
    "MySQLInfo": "pytest_wsgi502.services.mysql",
    "WsgiServerFactory": "pytest_wsgi502.fixtures",
    "WsgiLoadFactory": "pytest_wsgi502.fixtures",
    # load
    "Endpoint": "pytest_wsgi502.load.engine",
    "LoadSpec": "pytest_wsgi502.load.engine",
    "FastTransport": "pytest_wsgi502.load.transport",
    # statistics and verdicts
    "Stats": "pytest_wsgi502.metrics.stats",
    "SLO": "pytest_wsgi502.slo",
    "parse_slos": "pytest_wsgi502.slo",
    "verdict": "pytest_wsgi502.slo",
}
__all__ = [
    "SLO", "Cell", "CellRun", "ConfigError", "Endpoint", "FastTransport", "LoadSpec", "MySQLInfo", "Result", "Stats",
    "Target", "WsgiLoadFactory", "WsgiServerFactory", "__version__", "load_matrix", "parse_slos", "verdict",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value  # resolve once
        return value
    raise AttributeError(f"module 'pytest_wsgi502' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
