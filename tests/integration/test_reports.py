"""Reports end to end: saved runs and regression checks, the manifest of repeated runs, the HTML report as a
browser shows it (headless Chromium screenshot)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_wsgi502.report.html import RESPAWN_COLOR, render_html
from pytest_wsgi502.report.manifest import MEASURED_CELL_KEYS, comparable

# "steady" sleeps 40 ms a request at 2 connections on 2 workers (no queueing): p50 ~ 40-50 ms on a busy machine.
# "recycler" is a uWSGI cell whose workers recycle every 40 requests: it has respawns at known times.
MATRIX = """
[cells.steady]
server = "uwsgi"
workers = 2
max_requests = 100000
path = "/api/slow?ms={ms}"
verify_contains = ""
concurrency = 2
[cells.steady.options]
add-header = "Connection: close"

[cells.recycler]
server = "uwsgi"
workers = 2
max_requests = 40
concurrency = 4
[cells.recycler.options]
min-worker-lifetime = 1
add-header = "Connection: close"
"""


def _write_matrix(path: Path, ms: int) -> Path:
    path.write_text(MATRIX.replace("{ms}", str(ms)))
    return path


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:  # bin/dev installs Debian's chromium; a missing one is a broken setup, not a skip
        pytest.fail("chromium not found: run `bash bin/dev setup` (installs Debian's chromium)")
    return found


def screenshot(html: Path, out: Path, height: int) -> Path:
    profile = out.parent / f"{out.stem}-profile"
    subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size=1200,{height}",
         f"--screenshot={out}", html.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    assert out.is_file() and out.stat().st_size > 10_000, "chromium wrote no screenshot"
    return out


def marker_columns(png: Path, color: str) -> int:
    """How many pixel columns of the screenshot contain the marker colour (anti-aliasing tolerated)."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(png)[..., :3] * 255
    want = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
    hit = np.all(np.abs(img - want) < 40, axis=-1)
    return int(hit.any(axis=0).sum())


def test_save_compare_manifest_and_html(matrix, tmp_path):
    m = tmp_path / "m.toml"
    store = tmp_path / "store"
    common = (f"--wsgi-matrix-file={m}", "--wsgi-duration=4s", f"--wsgi-storage={store}",
              "--wsgi-slo=error_rate<=1")

    # run 1: saved as the baseline, with the HTML report
    _write_matrix(m, 40)
    html = tmp_path / "report.html"
    r1 = matrix.run(*common, "--wsgi-save=baseline", f"--wsgi-html={html}")
    assert r1.returncode == 0, r1.stdout + r1.stderr
    saved = list(store.glob("*/0001_baseline.json"))
    assert saved, f"no saved run in {store}: {r1.stdout}"
    doc1 = json.loads(matrix.json.read_text())

    # run 2: the same cells, unchanged: compared and within the limits
    r2 = matrix.run(*common, "--wsgi-compare=baseline", "--wsgi-compare-fail=p50:100%,error_rate:0.01")
    out2 = r2.stdout + r2.stderr
    assert r2.returncode == 0, out2
    assert "now vs 0001_baseline" in out2 and "regression" not in out2
    doc2 = json.loads(matrix.json.read_text())

    # the manifests of the two runs differ only in measurements and timestamps / run-local allocations
    assert doc1["schema"] == doc2["schema"] == 1
    a, b = comparable(doc1), comparable(doc2)
    for x, y in zip(a["cells"], b["cells"], strict=True):  # name the differing key (whole dicts do not fit)
        assert {k: v for k, v in x.items() if v != y.get(k)} == {k: v for k, v in y.items() if v != x.get(k)}
    assert a == b
    c1 = {c["name"]: c for c in doc1["cells"]}
    assert c1["steady"]["rendered"]["server"]["text"] == {c["name"]: c for c in doc2["cells"]}["steady"][
        "rendered"]["server"]["text"]
    assert "${PORT}" in c1["steady"]["rendered"]["server"]["text"]
    assert c1["steady"]["load"]["spec"]["seed"] == 0 and c1["steady"]["histogram"]
    assert doc1["environment"]["git"]["commit"] and doc1["environment"]["versions"]["nginx"]
    assert any(c1[n][k] != {c["name"]: c for c in doc2["cells"]}[n][k] for n in c1 for k in MEASURED_CELL_KEYS
               if k in c1[n]), "two real runs measured exactly the same: the comparison would be vacuous"

    # run 3: the steady cell made 5x slower on purpose: the session fails with a readable diff
    _write_matrix(m, 200)
    r3 = matrix.run(*common, "--wsgi-compare-fail=p50:100%,error_rate:0.01")
    out3 = r3.stdout + r3.stderr
    assert r3.returncode == 1, out3
    assert "now vs 0001_baseline" in out3
    line = next(x for x in out3.splitlines() if x.startswith("regression: steady: p50"))
    assert "limit p50:100%" in line and "->" in line, line
    assert "regression: recycler" not in out3  # the unchanged cell stays within its limits

    # the HTML report in a real browser: the recycling cell's timeline shows its respawn markers
    recycler = c1["recycler"]
    assert recycler["respawns"] >= 2, recycler["respawns"]
    shots = tmp_path / "shots"
    shots.mkdir()
    full = screenshot(html, shots / "report.png", 3000)
    assert marker_columns(full, RESPAWN_COLOR) >= 1
    only = {}
    for name in ("recycler", "steady"):
        page = shots / f"{name}.html"
        page.write_text(render_html({**doc1, "cells": [c1[name]]}))
        only[name] = marker_columns(screenshot(page, shots / f"{name}.png", 1400), RESPAWN_COLOR)
    assert only["recycler"] >= 2, only  # a dashed line a respawn, several pixels wide each
    assert c1["steady"]["respawns"] == 0 and only["steady"] == 0, only
    print(f"screenshots: {shots}")
