"""Issue 15 items 1, 3, 5: the Django settings module is checked (and a package resolved) before anything starts;
no database when none is needed; ad-hoc wsgi_server targets get unique names."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pytest_wsgi502.config.matrix import Cell, parse_statuses
from pytest_wsgi502.config.settings import resolve
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.fixtures import _as_cell, database_mode
from pytest_wsgi502.load.engine import Endpoint, LoadSpec, MediaType, drive, judged
from pytest_wsgi502.services.django import choose, resolve_settings


def settings_package(root: Path, wsgi: str = "mysite.settings.production") -> Path:
    """The layout of the issue: mysite/settings/{base,dev,production}.py, an empty __init__, wsgi.py and
    manage.py naming different modules."""
    pkg = root / "mysite"
    (pkg / "settings").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "settings" / "__init__.py").write_text("")
    (pkg / "settings" / "base.py").write_text('ROOT_URLCONF = "mysite.urls"\nINSTALLED_APPS = []\nSECRET_KEY = "x"\n')
    (pkg / "settings" / "dev.py").write_text("from .base import *  # noqa\nDEBUG = True\n")
    (pkg / "settings" / "production.py").write_text("from .base import *  # noqa\nDEBUG = False\n")
    (pkg / "wsgi.py").write_text(f'import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "{wsgi}")\n'
                                 "from django.core.wsgi import get_wsgi_application\n"
                                 "application = get_wsgi_application()\n")
    (root / "manage.py").write_text('import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", '
                                    '"mysite.settings.dev")\n')
    return root


def env() -> dict[str, str]:
    return {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}


def test_a_settings_package_resolves_to_the_module_wsgi_py_sets(tmp_path):
    choice = resolve_settings("mysite.settings", "mysite.wsgi:application", settings_package(tmp_path), env())
    assert choice.module == "mysite.settings.production"
    assert "\n" not in choice.note
    assert "mysite/wsgi.py sets for the servers" in choice.note and "manage.py sets mysite.settings.dev" in choice.note


def test_a_settings_module_is_used_as_named(tmp_path):
    choice = resolve_settings("mysite.settings.dev", "mysite.wsgi:application", settings_package(tmp_path), env())
    assert choice.module == "mysite.settings.dev" and choice.note == ""


def test_a_wrong_settings_name_fails_fast_in_one_line(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        resolve_settings("mysite.settngs", "mysite.wsgi:application", settings_package(tmp_path), env())
    assert time.monotonic() - t0 < 5
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("wsgi_django_settings=mysite.settngs cannot be imported")
    assert "No module named 'mysite.settngs'" in message and "mysite/wsgi.py sets mysite.settings.production" in message


def test_a_package_nobody_names_lists_its_modules(tmp_path):
    root = settings_package(tmp_path, wsgi="mysite.settings")
    (root / "manage.py").unlink()
    with pytest.raises(ConfigError) as err:
        resolve_settings("mysite.settings", "mysite.wsgi:application", root, env())
    message = str(err.value)
    assert "is a package, not a settings module (no ROOT_URLCONF and INSTALLED_APPS)" in message
    assert "mysite.settings.base, mysite.settings.dev, mysite.settings.production" in message


def test_a_module_without_settings_is_refused(tmp_path):
    settings_package(tmp_path)
    (tmp_path / "mysite" / "urls.py").write_text("urlpatterns = []\n")
    with pytest.raises(ConfigError, match=r"mysite.urls is not a Django settings module \(no ROOT_URLCONF"):
        resolve_settings("mysite.urls", "mysite.wsgi:application", tmp_path, env())


def test_manage_py_is_the_fallback_when_wsgi_py_names_nothing_usable():
    seen = {"named": {"package": True, "missing": ["ROOT_URLCONF"], "submodules": []}, "wsgi": None,
            "manage": "mysite.settings.dev", "manage_probe": {"package": False, "missing": []}}
    choice = choose("mysite.settings", "mysite.wsgi:application", seen)
    assert choice.module == "mysite.settings.dev" and "manage.py sets" in choice.note


def test_the_overlay_keeps_the_apps_databases_without_a_harness_database(tmp_path):
    from pytest_wsgi502.services.django import write_overlay

    root = settings_package(tmp_path)
    (root / "mysite" / "settings" / "base.py").write_text(
        'ROOT_URLCONF = "x"\nINSTALLED_APPS = []\nDATABASES = {"default": {"ENGINE": "sqlite"}}\n')
    overlay = write_overlay(tmp_path, "mysite.settings.production")
    code = "import wsgi502_settings as s; print(s.DATABASES['default']['ENGINE'])"
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env={**env(), "PYTHONPATH": str(overlay)},
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "sqlite"


def settings(**ini: str):
    return resolve({}, {}, {f"wsgi_{k}": v for k, v in ini.items()})


@pytest.mark.parametrize(("ini", "expected"), [
    ({}, "mysql"),  # the sample app: migrations need the database
    ({"setup_command": "none"}, "none"),  # a plain WSGI app with no setup command
    ({"setup_command": "None"}, "none"),
    ({"setup_command": "none", "django_settings": "mysite.settings"}, "mysql"),  # Django: migrations elsewhere
    ({"setup_command": "./create-schema"}, "mysql"),
    ({"db": "none"}, "none"),
    ({"db": "mysql", "setup_command": "none"}, "mysql"),
])
def test_database_mode(ini, expected):
    assert database_mode(settings(**ini))[0] == expected


def test_setup_command_none_runs_none_and_bad_db_is_one_line():
    assert settings(setup_command="none").setup_command == ""
    with pytest.raises(ConfigError, match=r"^ini wsgi_db='sqlite': unknown database 'sqlite'; choose one of: "):
        settings(db="sqlite")


def test_verify_status_parsing():
    assert parse_statuses("2xx") == frozenset(range(200, 300))
    assert parse_statuses("200, 302") == {200, 302}
    with pytest.raises(ConfigError, match="4xx and 5xx are always errors"):
        parse_statuses("200,404")
    with pytest.raises(ConfigError):
        settings(verify_status="ok")


OK2 = frozenset(range(200, 300))


def _ok(ctype: str = "") -> tuple:
    return (b"", OK2, MediaType(ctype))


OK = _ok()


@pytest.mark.parametrize(("status", "headers", "body", "check", "error"), [
    (200, [], b"hello", OK, None),
    (200, [], b"wrong", (b"hello", OK2, MediaType("")), "verify"),  # a 200 with the wrong body
    (302, [], b"", OK, "verify"),  # a redirect where a page was expected
    (302, [], b"", (b"", parse_statuses("2xx,3xx"), MediaType("")), None),
    (200, [(b"Content-Type", b"text/html; charset=utf-8")], b"", _ok("text/html"), None),
    (200, [(b"content-type", b"application/json")], b"{}", _ok("text/html"), "verify"),
    (200, [], b"", _ok("text/html"), "verify"),  # no Content-Type at all
    (500, [], b"", OK, None),  # counted by its status, not twice
])
def test_every_response_is_judged(status, headers, body, check, error):
    assert judged(status, headers, body, check) == error


def test_auto_content_type_is_learned_from_the_first_2xx_without_a_probe():
    """``auto``: no probe request before the load (a probe of /api/die killed a worker unmeasured: the injected-kill
    scenario saw 11 kills for 10 client 502s); the first 2xx sets the media type, later ones must match."""
    check = _ok("auto")
    html = [(b"Content-Type", b"text/html; charset=utf-8")]
    assert judged(500, [(b"Content-Type", b"text/plain")], b"", check) is None  # an error page teaches nothing
    assert judged(200, html, b"", check) is None and check[2].value == b"text/html"
    assert judged(200, html, b"", check) is None
    assert judged(200, [(b"content-type", b"application/json")], b"{}", check) == "verify"


def test_a_200_with_a_wrong_body_is_a_verify_error_in_the_engine():
    wrong = httpx.MockTransport(lambda r: httpx.Response(200, text="Welcome to nginx", headers={"content-type":
                                                                                                 "text/html"}))
    spec = LoadSpec(base_url="http://127.0.0.1:9", concurrency=2, duration=5.0, max_requests=50,
                    mix=(Endpoint("/a", 1, "Hello"), Endpoint("/b", 1, "", "GET", "2xx", "application/json")))
    stats = asyncio.run(drive(spec, lambda: wrong))[0].to_dict()
    assert stats["errors"]["verify"] == 50 and stats["status_counts"] == {"200": 50}


def test_endpoint_checks_say_what_was_checked():
    assert Endpoint("/p", 1, "Hi").checks() == {"path": "/p", "method": "GET", "status": "2xx", "contains": "Hi",
                                                 "content_type": None, "body_checked": True}


class _State:
    cells = (Cell("gunicorn-8w", "gunicorn", workers=8),)


def test_ad_hoc_targets_get_unique_names():
    taken: set[str] = set()
    names = [_as_cell({"server": "gunicorn", "workers": 8}, _State(), {}, None, taken).name for _ in range(3)]
    assert names == ["gunicorn-8w-2", "gunicorn-8w-3", "gunicorn-8w-4"]  # the matrix has a gunicorn-8w
    named = _as_cell({"server": "gunicorn"}, _State(), {"workers": 4}, "checkout", taken)
    assert named.name == "checkout" and named.workers == 4
    assert _as_cell("gunicorn-8w", _State(), {}, "other", taken).name == "other"
    with pytest.raises(ConfigError, match="names use a-z"):
        _as_cell({"server": "gunicorn"}, _State(), {}, "Bad Name", taken)
