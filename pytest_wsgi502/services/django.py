"""The Django settings overlay: the user's settings module with DATABASES pointed at the session's MySQL; and the
check, before anything starts, that the named settings module is one (``resolve_settings``).

``--wsgi-django-settings=project.settings`` makes the harness write ``wsgi502_settings.py`` (which imports the
user's module and overrides the database) into ``<run dir>/django-overlay``; the servers import it from there
(a container mounts that directory; ``ServerSpec.settings_overlay`` says which one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_wsgi502.config.values import ConfigError, dotted

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
if _env("WSGI502_DB_HOST"):  # wsgi_db = none: the settings keep their own DATABASES
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


# Run in a child with the servers' cwd and env (the harness's own imports must not hide a missing module): import
# the named module, and read (not import) the settings module the wsgi_app module and manage.py set.
_CHECK = r"""
import ast, importlib, importlib.util, json, os, pkgutil, sys

def named_in(path):
    try:
        tree = ast.parse(open(path, "rb").read())
    except (OSError, SyntaxError, ValueError):
        return None
    def text(node):
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "setdefault" and len(node.args) == 2:
            if text(node.args[0]) == "DJANGO_SETTINGS_MODULE" and text(node.args[1]):
                return text(node.args[1])
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript):
            if text(node.targets[0].slice) == "DJANGO_SETTINGS_MODULE" and text(node.value):
                return text(node.value)
    return None

def probe(name):
    try:
        m = importlib.import_module(name)
    except BaseException as exc:
        return {"error": (type(exc).__name__ + ": " + str(exc)).splitlines()[0]}
    return {"package": hasattr(m, "__path__"),
            "missing": [k for k in ("ROOT_URLCONF", "INSTALLED_APPS") if not hasattr(m, k)],
            "submodules": [name + "." + i.name for i in pkgutil.iter_modules(getattr(m, "__path__", []))]}

name, app = sys.argv[1], sys.argv[2]
out = {"named": probe(name), "wsgi_file": None, "wsgi": None, "manage": None}
try:
    spec = importlib.util.find_spec(app.partition(":")[0])
    out["wsgi_file"] = spec.origin if spec else None
except BaseException:
    pass
if out["wsgi_file"]:
    out["wsgi"] = named_in(out["wsgi_file"])
if os.path.exists("manage.py"):
    out["manage"] = named_in("manage.py")
for key in ("wsgi", "manage"):
    if out[key] and out[key] != name:
        out[key + "_probe"] = probe(out[key])
print("WSGI502-CHECK " + json.dumps(out))
"""
_MARK = "WSGI502-CHECK "


@dataclass(frozen=True)
class SettingsChoice:
    """The settings module the servers and the setup command run, and a line saying why, when it is not the
    named one ("" otherwise)."""

    module: str
    note: str = ""


def resolve_settings(named: str, app: str, chdir: Path, env: Mapping[str, str], python: str = sys.executable,
                     timeout: float = 60.0) -> SettingsChoice:
    """Check ``wsgi_django_settings`` the way a server will import it (a child Python in ``chdir`` with ``env``):
    importable, and a settings module (ROOT_URLCONF and INSTALLED_APPS). A package without them (``mysite.settings``
    holding base/dev/production) resolves to the module the ``wsgi_app`` module sets as DJANGO_SETTINGS_MODULE
    (what the servers run; manage.py's is named as the alternative). Anything else: ConfigError, one line."""
    named = dotted(named, "wsgi_django_settings")
    what = f"wsgi_django_settings={named}"
    try:
        r = subprocess.run([python, "-c", _CHECK, named, app], cwd=chdir, env=dict(env), capture_output=True,
                           text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{what}: could not check it ({_one_line(str(exc))})") from None
    found = [line[len(_MARK):] for line in r.stdout.splitlines() if line.startswith(_MARK)]
    if not found:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"{what}: importing it in {chdir} ended the check (exit {r.returncode}): {last}")
    return choose(named, app, json.loads(found[-1]))


def choose(named: str, app: str, seen: Mapping[str, Any]) -> SettingsChoice:
    """The decision of ``resolve_settings`` from what the child saw (pure: unit-tested without Django)."""
    what = f"wsgi_django_settings={named}"
    wsgi_mod = app.partition(":")[0]
    wsgi_file = f"{wsgi_mod.replace('.', '/')}.py"
    by_wsgi, by_manage = str(seen.get("wsgi") or ""), str(seen.get("manage") or "")
    hint = f" ({wsgi_file} sets {by_wsgi})" if by_wsgi and by_wsgi != named else ""
    info = seen.get("named") or {}
    if "error" in info:
        raise ConfigError(f"{what} cannot be imported from wsgi_chdir: {info['error']}{hint}")
    if not info.get("missing"):
        return SettingsChoice(named)
    missing = " and ".join(info["missing"])
    if not info.get("package"):
        raise ConfigError(f"{what} is not a Django settings module (no {missing}){hint}")

    def works(key: str) -> bool:
        probe = seen.get(f"{key}_probe") or {}
        return bool(seen.get(key)) and seen.get(key) != named and "error" not in probe and not probe.get("missing")

    if works("wsgi"):
        other = f"; manage.py sets {by_manage}" if by_manage and by_manage != by_wsgi else ""
        return SettingsChoice(by_wsgi, f"{what} is a package; using {by_wsgi}, which {wsgi_file} sets for the "
                                       f"servers{other} (set wsgi_django_settings to choose)")
    if works("manage"):
        return SettingsChoice(by_manage, f"{what} is a package; using {by_manage}, which manage.py sets "
                                         f"({wsgi_file} sets {by_wsgi or 'none'}; set wsgi_django_settings to choose)")
    subs = ", ".join(info.get("submodules") or []) or "none found"
    raise ConfigError(f"{what} is a package, not a settings module (no {missing}), and neither {wsgi_file} nor "
                      f"manage.py names one that imports; name one of its modules: {subs}")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300] or "no detail"

