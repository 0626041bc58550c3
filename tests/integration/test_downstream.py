"""Downstream use: the plugin in other Django projects, the way a user would run it."""

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from .conftest import ROOT, TWO_SERVER_MATRIX, wait_gone

EXAMPLE = ROOT / "examples" / "mysite"


def pytest_in(project: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    keep = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", f"--wsgi-keep-dir={keep}",
                        *args], cwd=project, capture_output=True, text=True, timeout=600)
    assert not wait_gone(keep, 10), "processes left behind"
    return r


def test_example_project_passes_its_slos(tmp_path):
    r = pytest_in(EXAMPLE, tmp_path, "--wsgi-matrix", "--wsgi-duration=2s")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "5 passed" in out  # the 2 matrix cells, the open-loop test, the reload and the rolling deploy tests
    assert re.search(r"gunicorn-sync-4w\s+\d+\s+0\s+0", out) and re.search(r"uwsgi-4w\s+\d+\s+0\s+0", out), out


def test_example_breached_slo_fails_with_the_measured_value(tmp_path):
    r = pytest_in(EXAMPLE, tmp_path, "--wsgi-matrix", "--wsgi-duration=1s", "--wsgi-slo=rps>1000000",
                  "-k", "gunicorn-sync-4w")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    # one line per breached SLO under the header (a 1 s cell may also not prove its error rate: any order)
    pattern = r"cell gunicorn-sync-4w: SLO breached\n(\s+.+\n)*?\s+rps>1000000: measured \d+(\.\d+)?, limit > 1000000"
    assert re.search(pattern, out), out


DOCS_INI = """\
[pytest]
wsgi_app = {project}.wsgi:application
wsgi_django_settings = {project}.settings
wsgi_matrix_file = wsgi-matrix.toml
wsgi_path = /admin/login/
wsgi_verify_contains = Log in
"""
DOCS_TEST = """\
def test_slo(wsgi_cell_run):
    wsgi_cell_run.assert_slo()
"""


def test_fresh_startproject_with_the_documented_lines(tmp_path):
    """`django-admin startproject`, then only the files docs/getting-started.md shows: one SLO test per server."""
    django_admin = Path(sys.executable).parent / "django-admin"
    subprocess.run([str(django_admin), "startproject", "shop"], cwd=tmp_path, check=True)
    project = tmp_path / "shop"
    (project / "pytest.ini").write_text(DOCS_INI.format(project="shop"))
    (project / "wsgi-matrix.toml").write_text(TWO_SERVER_MATRIX)
    (project / "test_slo.py").write_text(DOCS_TEST)
    r = pytest_in(project, tmp_path, "--wsgi-matrix", "--wsgi-duration=2s", f"--wsgi-json={tmp_path}/o.json")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "2 passed" in out and re.search(r"uwsgi\s+\d{3,}\s+0\s+0", out), out
    cells = json.loads((tmp_path / "o.json").read_text())["cells"]  # every 200 had the login page's text
    assert sorted(c["name"] for c in cells) == ["gunicorn", "uwsgi"]
    assert all(c["verify"][0]["contains"] == "Log in" and c["errors"]["verify"] == 0 for c in cells), cells
    # and a breach fails that test with the measured values
    r = pytest_in(project, tmp_path, "--wsgi-matrix", "--wsgi-duration=1s", "--wsgi-slo=p50<1us", "-k", "gunicorn")
    assert r.returncode == 1 and re.search(r"p50<1us: measured [\d.]+ms, limit < 0\.001ms", r.stdout), r.stdout
    shutil.rmtree(project)


def test_getting_started_shows_the_example_tests_as_they_are():
    """Every code line of the fixtures' example in docs/getting-started.md is a line of the example project's test
    file (run by test_example_project_passes_its_slos), so the page cannot show a test that does not run."""
    page = (ROOT / "docs" / "getting-started.md").read_text()
    block = page.split("## More than one test per cell", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    source = {line.split("  #")[0].strip() for line in (EXAMPLE / "tests" / "test_slo.py").read_text().splitlines()}
    shown = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert "def test_graceful_reload_loses_no_request(wsgi_server, wsgi_load):" in shown
    assert "def test_rolling_deploy_loses_no_request(wsgi_server, wsgi_load):" in shown
    assert [line for line in shown if line not in source] == []


def test_getting_started_shows_the_lines_this_test_uses():
    page = (ROOT / "docs" / "getting-started.md").read_text()
    for block in (DOCS_INI.format(project="mysite"), TWO_SERVER_MATRIX, DOCS_TEST):
        assert textwrap.dedent(block).strip() in page, block
