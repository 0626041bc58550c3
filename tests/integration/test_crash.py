"""The ``crashed`` cause, checked like the injected kill: a known number of requests crash their worker with a real
SIGSEGV (the sample app's /api/segv, a NULL read through ctypes), and every resulting 502 is attributed to the
crash the server logged, on uWSGI and gunicorn."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory):
    from .conftest import Matrix, wait_gone

    m = Matrix(tmp_path_factory.mktemp("crash"))
    r = m.run("--wsgi-matrix-file=scenarios", "--wsgi-cells=segfault,segfault-gunicorn", "--wsgi-duration=6s",
              timeout=300)
    assert not wait_gone(m.keep, 10)
    assert m.json.exists(), r.stdout + r.stderr
    return m, m.cells()


@pytest.mark.parametrize("cell", ["segfault", "segfault-gunicorn"])
def test_each_native_crash_is_one_502_attributed_to_the_crash(crash_run, cell):
    m, cells = crash_run
    result = cells[cell]
    access = (m.cell_dir(cell) / "proxy-access.log").read_text().splitlines()
    injected = sum(1 for line in access if json.loads(line)["uri"] == "/api/segv")
    assert injected > 0
    assert result["status_counts"].get("502", 0) == injected, result["status_counts"]
    assert result["attribution"]["crashed"] == injected, result["attribution"]
    assert result["telemetry"]["event_counts"].get("crashed", 0) == injected, result["telemetry"]["event_counts"]
    assert result["kills"] == 0  # a crash is not a SIGKILL: the seed's signal-9 count stays clean
    crashes = [e["line"] for e in result["telemetry"]["events"] if e["kind"] == "crashed"]
    proof = ("Segmentation Fault", "signal 11", "SIGSEGV")  # uWSGI's handler, its master, gunicorn's arbiter
    assert crashes and all(any(k in line for k in proof) for line in crashes), crashes[:3]
