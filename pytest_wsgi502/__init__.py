"""pytest-wsgi502: reproduce and measure WSGI 502s (MySQL + uWSGI/gunicorn + an ELB-like proxy, under load).

The public API is below; names resolve lazily so that loading the plugin stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "Cell": "pytest_wsgi502.config.matrix",
    "load_matrix": "pytest_wsgi502.config.matrix",
    "CellRun": "pytest_wsgi502.fixtures",
    "Result": "pytest_wsgi502.fixtures",
    "Target": "pytest_wsgi502.cellrun",
    "Endpoint": "pytest_wsgi502.load.engine",
    "LoadSpec": "pytest_wsgi502.load.engine",
    "FastTransport": "pytest_wsgi502.load.transport",
    "Stats": "pytest_wsgi502.metrics.stats",
    "SLO": "pytest_wsgi502.slo",
    "parse_slos": "pytest_wsgi502.slo",
    "verdict": "pytest_wsgi502.slo",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'pytest_wsgi502' has no attribute {name!r}")
