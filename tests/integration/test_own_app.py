"""Issue 15 acceptance: a user's own app set up from docs/getting-started.md alone, run in a child pytest like a
user would: (a) Django with a settings *package* (named as the package, as the issue did), (b) a plain WSGI app
with no database; each one uWSGI and one gunicorn cell with a body check. And a wrong settings name fails in
under 5 s with the cause in one line, before MariaDB starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from .conftest import SECRET_ENV, TWO_SERVER_MATRIX, wait_gone

MATRIX = TWO_SERVER_MATRIX.replace("[cells.gunicorn]", SECRET_ENV + "[cells.gunicorn]", 1)
TEST = """\
def test_slo(wsgi_cell_run):
    wsgi_cell_run.assert_slo()
"""
BASE = """\
import os
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
USE_TZ = True
"""
PRODUCTION = """\
from .base import *  # noqa: F403
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]  # from the matrix's [defaults.env]
DEBUG = False
ALLOWED_HOSTS = ["example.com"]
"""
URLS = """\
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.urls import path

def hello(request):
    return HttpResponse(f"Hello from mysite: {User.objects.count()} users")

urlpatterns = [path("hello/", hello)]
"""
PLAIN_APP = """\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, plain WSGI"]
"""


def pytest_in(project: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    keep = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", f"--wsgi-keep-dir={keep}",
                        *args], cwd=project, capture_output=True, text=True, timeout=600)
    assert not wait_gone(keep, 10), "processes left behind"
    return r, keep


def django_package_project(root: Path, settings: str = "mysite.settings") -> Path:
    """mysite/settings/{base,dev,production}.py; wsgi.py runs production, manage.py dev (as many templates do)."""
    pkg = root / "mysite"
    (pkg / "settings").mkdir(parents=True)
    for name, text in (("__init__.py", ""), ("urls.py", URLS), ("settings/__init__.py", ""),
                       ("settings/base.py", BASE), ("settings/production.py", PRODUCTION),
                       ("settings/dev.py", 'from .base import *  # noqa: F403\nSECRET_KEY = "dev"\nDEBUG = True\n')):
        (pkg / name).write_text(text)
    (pkg / "wsgi.py").write_text('import os\nfrom django.core.wsgi import get_wsgi_application\n'
                                 'os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings.production")\n'
                                 "application = get_wsgi_application()\n")
    (root / "manage.py").write_text(
        'import os, sys\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings.dev")\n'
        "from django.core.management import execute_from_command_line\nexecute_from_command_line(sys.argv)\n")
    (root / "pytest.ini").write_text("[pytest]\nwsgi_app = mysite.wsgi:application\n"
                                     f"wsgi_django_settings = {settings}\n"
                                     "wsgi_matrix_file = wsgi-matrix.toml\nwsgi_path = /hello/\n"
                                     "wsgi_verify_contains = Hello from mysite\n")
    (root / "wsgi-matrix.toml").write_text(MATRIX)
    (root / "test_slo.py").write_text(TEST)
    return root


def test_django_settings_package_named_as_the_package(tmp_path):
    project = django_package_project(tmp_path / "site")
    r, keep = pytest_in(project, tmp_path, "--wsgi-matrix", "--wsgi-duration=2s", f"--wsgi-json={tmp_path}/o.json")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "2 passed" in out, out
    # which module was used, and the alternative, in one line
    assert re.search(r"wsgi502: django settings: wsgi_django_settings=mysite.settings is a package; using "
                     r"mysite.settings.production, which mysite/wsgi.py sets for the servers; manage.py sets "
                     r"mysite.settings.dev", out), out
    # no /health in this app: a 404 is up, and noted once
    assert out.count("readiness: GET /health answered 404, counted as up") == 1, out
    cells = {c["name"]: c for c in json.loads((tmp_path / "o.json").read_text())["cells"]}
    for name in ("uwsgi", "gunicorn"):
        assert cells[name]["verify"][0]["contains"] == "Hello from mysite", cells[name]["verify"]
        assert cells[name]["status_counts"].keys() == {"200"} and cells[name]["requests"] > 50
        assert cells[name]["readiness"]["status"] == 404
    assert list(keep.glob("run-*/mysql")), "Django with migrations: the private MariaDB ran"


def test_wrong_settings_name_fails_fast_in_one_line(tmp_path):
    project = django_package_project(tmp_path / "site", settings="mysite.settngs")
    t0 = time.monotonic()
    r, keep = pytest_in(project, tmp_path, "--wsgi-matrix", "--wsgi-duration=2s")
    elapsed = time.monotonic() - t0
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    # the proof that nothing was started is the MariaDB check below; the bound only catches a wait for a readiness
    # timeout (20 s for the proxy), with room for a busy machine's child pytest and Django start-up
    assert elapsed < 15, f"{elapsed:.1f}s\n{out}"
    line = ("wsgi_django_settings=mysite.settngs cannot be imported from wsgi_chdir: ModuleNotFoundError: No module "
            "named 'mysite.settngs' (mysite/wsgi.py sets mysite.settings.production)")
    assert re.search(rf"^(E\s+)?{re.escape(line)}$", out, re.M), out
    assert "Traceback" not in out, out
    assert not list(keep.glob("run-*/mysql")), "MariaDB started before the settings were checked"


PLAIN_INI = """\
[pytest]
wsgi_app = myapp:application
wsgi_setup_command = none
wsgi_matrix_file = wsgi-matrix.toml
wsgi_path = /
wsgi_verify_contains = Hello, plain WSGI
"""


def test_getting_started_shows_what_these_projects_use():
    """Set up "from the docs' text alone": the plain app's ini, the package's settings line and its
    [defaults.env] are the page's own blocks."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "getting-started.md").read_text()
    assert PLAIN_INI.strip() in page
    assert "wsgi_django_settings = mysite.settings\n" in page  # naming the package works, as the test does
    assert SECRET_ENV.strip() in page
    assert TWO_SERVER_MATRIX.strip() in page


def plain_project(root: Path, matrix: str = MATRIX) -> Path:
    root.mkdir()
    (root / "myapp.py").write_text(PLAIN_APP)
    (root / "pytest.ini").write_text(PLAIN_INI)
    (root / "wsgi-matrix.toml").write_text(matrix)
    (root / "test_slo.py").write_text(TEST)
    return root


def test_plain_wsgi_app_runs_without_a_database(tmp_path):
    project = plain_project(tmp_path / "plain")
    r, keep = pytest_in(project, tmp_path, "--wsgi-matrix", "--wsgi-duration=2s", f"--wsgi-json={tmp_path}/o.json")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "2 passed" in out, out
    assert "wsgi502: database none (wsgi_db=auto: no wsgi_django_settings and wsgi_setup_command=none)" in out, out
    (run,) = keep.glob("run-*")
    assert (run / "cells" / "uwsgi").is_dir() and not (run / "mysql").exists(), sorted(p.name for p in run.iterdir())
    cells = json.loads((tmp_path / "o.json").read_text())["cells"]
    assert [c["services"]["mysql"] for c in cells] == [None, None]
    assert all(c["verify"][0]["contains"] == "Hello, plain WSGI" for c in cells)


NO_CHECK = MATRIX + """\
[cells.nocheck]
server = "gunicorn"
verify_contains = ""
[cells.wrongbody]
server = "gunicorn"
verify_contains = "Goodbye"
"""


def test_no_body_check_is_announced_and_a_wrong_body_fails(tmp_path):
    project = plain_project(tmp_path / "plain", NO_CHECK)
    r, _ = pytest_in(project, tmp_path, "--wsgi-matrix", "--wsgi-duration=2s", "-k", "nocheck or wrongbody",
                     f"--wsgi-json={tmp_path}/o.json")
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "1 passed" in out and "1 failed" in out, out
    assert ("wsgi502: GET /: no body check, only status 2xx and the Content-Type of its first 2xx verified (set "
            "wsgi_verify_contains, a cell's verify_contains, or verify= to check bodies)") in out, out
    cells = {c["name"]: c for c in json.loads((tmp_path / "o.json").read_text())["cells"]}
    assert cells["nocheck"]["verify"][0] | {"callable": None} == {
        "path": "/", "method": "GET", "status": "2xx", "contains": None, "content_type": "auto",
        "body_checked": False, "callable": None}
    wrong = cells["wrongbody"]
    assert wrong["status_counts"].keys() == {"200"} and wrong["errors"]["verify"] == wrong["requests"] > 0
    assert wrong["verify"][0]["contains"] == "Goodbye"
