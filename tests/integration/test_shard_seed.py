"""Issue 17 item 1 acceptance, small: a 3-cell matrix run as ``--wsgi-shard=1/3``, ``2/3``, ``3/3``, merged with
``python -m pytest_wsgi502.report merge`` into one JSON and one HTML, and the merged HTML opened in headless
Chromium: the page renders (a non-blank screenshot), its DOM holds the table with every cell and the merged-runs
section, and the browser logs no JavaScript error.

A plain WSGI app without a database keeps it short (no MariaDB; 1 s of load per cell). The seed matrix itself,
sharded and merged against an unsharded run, is a measurement (the issue note), not a test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

APP = '''
def application(environ, start_response):
    body = b'{"ok": true}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''

INI = """\
[pytest]
wsgi_app = plainapp:application
wsgi_chdir = .
wsgi_db = none
wsgi_setup_command = none
wsgi_ready_path = /
wsgi_verify_contains = "ok": true
wsgi_duration = 1s
wsgi_concurrency = 4
wsgi_matrix_file = matrix.toml
"""

MATRIX = """\
[defaults]
slo = ["error_rate<1e-2"]
[cells.uwsgi-2w]
server = "uwsgi"
workers = 2
[cells.uwsgi-2w.options]
add-header = "Connection: close"  # a plain app behind the keep-alive proxy: no keepalive race (config lint)
[cells.gunicorn-sync]
server = "gunicorn"
workers = 2
[cells.gunicorn-gthread]
server = "gunicorn"
workers = 2
worker_class = "gthread"
threads = 4
"""

CELLS = ["uwsgi-2w", "gunicorn-sync", "gunicorn-gthread"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:  # bin/dev installs Debian's chromium; a missing one is a broken setup, not a skip
        pytest.fail("chromium not found: run `bash bin/dev setup` (installs Debian's chromium)")
    return found


def _browser(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )


def test_three_shards_merge_and_the_merged_html_opens_in_chromium(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makefile(".toml", matrix=MATRIX)
    pytester.makepyfile(plainapp=APP, test_cells="def test_cell(wsgi_cell_run):\n    wsgi_cell_run.assert_slo()\n")
    unsharded = re.findall(r"test_cell\[([^\]]+)\]", pytester.runpytest("--collect-only", "-q").stdout.str())
    assert unsharded == CELLS

    for i in (1, 2, 3):
        r = pytester.runpytest_subprocess("--wsgi-matrix", "--wsgi-backend=local", f"--wsgi-shard={i}/3",
                                          f"--wsgi-json=shard{i}.json", "-p", "no:cacheprovider", timeout=300)
        out = r.stdout.str() + r.stderr.str()
        assert r.ret == 0, out
        assert f"wsgi502: shard {i}/3: 1 of 3 cells ({CELLS[i - 1]})" in out  # equal cells: one each, in order

    done = subprocess.run([sys.executable, "-m", "pytest_wsgi502.report", "merge", "shard1.json", "shard2.json",
                           "shard3.json", "--json=merged.json", "--html=merged.html"],
                          cwd=pytester.path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: pass (3 pass, 0 fail, 0 invalid)" in done.stdout
    merged = json.loads((pytester.path / "merged.json").read_text())
    assert [c["name"] for c in merged["cells"]] == unsharded
    for i, cell in enumerate(merged["cells"], 1):  # each cell as its shard wrote it, histogram included
        (own,) = json.loads((pytester.path / f"shard{i}.json").read_text())["cells"]
        assert cell["histogram"] == own["histogram"] and cell["requests"] == own["requests"] > 0

    page = pytester.path / "merged.html"
    png = pytester.path / "merged.png"
    shot = _browser(page, pytester.path / "profile-shot", "--hide-scrollbars", "--window-size=1200,1600",
                    f"--screenshot={png}")
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    import matplotlib.image as mpimg
    import numpy as np

    pixels = mpimg.imread(png)[..., :3]
    ink = np.any(pixels < 0.9, axis=-1)  # anything darker than near-white: text, table borders, charts
    assert ink.mean() > 0.01, f"the screenshot is blank ({ink.mean():.4f} of the pixels are not white)"
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 20  # text and charts, not a fill

    dom = _browser(page, pytester.path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = re.findall(r"<tr[^>]*>\s*<td>([^<]+)</td>", dom.stdout)
    assert rows == CELLS, dom.stdout[:2000]  # the browser parsed the table: one row per cell, in matrix order
    assert "<section id=\"merge\">" in dom.stdout and "verdict: pass (3 pass, 0 fail, 0 invalid)" in dom.stdout
    assert all(f"id=\"cell-{name}\"" in dom.stdout for name in CELLS)
    console = [line for line in dom.stderr.splitlines() + shot.stderr.splitlines()
               if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console  # no script error (the report has no script at all)
