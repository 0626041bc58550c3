"""The Django settings overlay: the user's settings module with DATABASES pointed at the session's MySQL.

``--wsgi-django-settings=project.settings`` makes the harness write ``wsgi502_settings.py`` (which imports the
user's module and overrides the database) into ``<run dir>/django-overlay``; the servers import it from there
(a container mounts that directory; ``ServerSpec.settings_overlay`` says which one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pytest_wsgi502.config.values import dotted

SETTINGS_MODULE = "wsgi502_settings"

_OVERLAY = '''"""Rendered by pytest-wsgi502: {module} with its database pointed at the harness's MySQL.

Values come from the WSGI502_DB_* environment of each cell (driver, pool, CONN_MAX_AGE).
"""
import os as _os

if _os.environ.get("WSGI502_DB_DRIVER") == "pymysql":
    import pymysql as _pymysql

    _pymysql.install_as_MySQLdb()

from {module} import *  # noqa: F403

_env = _os.environ.get
_pool = _env("WSGI502_DB_POOL") == "sqlalchemy"
DATABASES = {{**globals().get("DATABASES", {{}}), "default": {{
    "ENGINE": "dj_db_conn_pool.backends.mysql" if _pool else "django.db.backends.mysql",
    "HOST": _env("WSGI502_DB_HOST"), "PORT": int(_env("WSGI502_DB_PORT")), "NAME": _env("WSGI502_DB_NAME"),
    "USER": _env("WSGI502_DB_USER"), "PASSWORD": _env("WSGI502_DB_PASSWORD"),
    "CONN_MAX_AGE": int(_env("WSGI502_CONN_MAX_AGE", "0")), "OPTIONS": {{"charset": "utf8mb4"}},
    **({{"POOL_OPTIONS": {{"POOL_SIZE": int(_env("WSGI502_DB_POOL_SIZE", "5")),
                          "MAX_OVERFLOW": int(_env("WSGI502_DB_MAX_OVERFLOW", "10")), "RECYCLE": 3600}}}}
       if _pool else {{}}),
}}}}
ALLOWED_HOSTS = [*globals().get("ALLOWED_HOSTS", []), "127.0.0.1", "localhost"]
'''


def write_overlay(run_dir: Path, module: str) -> Path:
    """Write a settings module that imports the user's and points DATABASES at our MySQL, into a directory of
    its own (returned: it goes first on the app's import path). The user's files stay untouched."""
    module = dotted(module, "--wsgi-django-settings")  # pasted into Python source below: a dotted name only
    overlay = run_dir / "django-overlay"
    overlay.mkdir(exist_ok=True)
    (overlay / f"{SETTINGS_MODULE}.py").write_text(_OVERLAY.format(module=module))
    return overlay


def overlay_env(overlay: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The env that makes Django (servers and the setup command) use the overlay in ``overlay``."""
    pythonpath = os.pathsep.join(p for p in (str(overlay), env.get("PYTHONPATH", "")) if p)
    return {"DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, "PYTHONPATH": pythonpath}


def django_overlay(run_dir: Path, module: str, env: Mapping[str, str]) -> dict[str, str]:
    """``write_overlay`` and the env that uses it (for a command run on this host, e.g. the app's setup)."""
    return overlay_env(write_overlay(run_dir, module), env)
