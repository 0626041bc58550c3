"""Issue 12 item 7: a worker killed in the last second of the load is counted, and its 502 gets its true cause.

A plain WSGI app kills its own worker (SIGKILL) once, 0.3 s before the load ends, and tallies it on disk. The
harness must count exactly that kill (uWSGI's master logs a death up to ~1 s late: with a 0.5 s window after the
load the last kill was lost) and attribute the 502 to ``worker_killed`` — never ``keepalive_race``, which cannot
happen when every response closes its connection (gunicorn sync, uWSGI with ``Connection: close``).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import wait_gone

APP = Path(__file__).parent / "apps" / "killer.py"
DURATION = 4.0
MATRIX = """\
[defaults]
load_mode = "open"
rate = 200
concurrency = 16
workers = 2
mix = [{path = "/", weight = 19}, {path = "/kill", weight = 1}]
[cells.uwsgi-close]
server = "uwsgi"
[cells.uwsgi-close.options]
add-header = "Connection: close"
[cells.gunicorn-sync]
server = "gunicorn"
"""
TEST = """\
def test_cell(wsgi_cell_run):
    pass  # the verdict is read from the JSON by the outer test
"""


def test_a_kill_in_the_last_second_is_counted_and_attributed(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    shutil.copy(APP, project / "killer.py")
    (project / "wsgi-matrix.toml").write_text(MATRIX)
    (project / "test_cell.py").write_text(TEST)
    (project / "pytest.ini").write_text("[pytest]\nwsgi_app = killer:application\nwsgi_matrix_file = wsgi-matrix.toml\n"
                                        "wsgi_setup_command = true\nwsgi_path = /\n")
    keep, out = tmp_path / "run", tmp_path / "out.json"
    results = {}
    for cell in ("uwsgi-close", "gunicorn-sync"):
        tally = tmp_path / f"tally-{cell}"
        tally.mkdir()
        env = {**os.environ, "KILLER_TALLY": str(tally), "KILLER_KILL_AFTER": str(DURATION - 0.3)}
        r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--wsgi-matrix",
                            f"--wsgi-duration={DURATION:g}s", f"--wsgi-cells={cell}", f"--wsgi-keep-dir={keep}",
                            f"--wsgi-json={out}"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        (res,) = json.loads(out.read_text())["cells"]
        killed = (tally / "killed").read_text().split()
        began = float((tally / "began").read_text())
        assert res["ended_at"] - float(killed[1]) < 1.0, "the fault fell in the last second of the load"
        assert float(killed[1]) - began >= DURATION - 0.3
        results[cell] = res
    assert not wait_gone(keep, 10), "processes left behind"
    for cell, res in results.items():
        assert res["kills"] == 1, (cell, res["kills"], res["telemetry"].get("event_counts"))
        causes = res["attribution"]
        n502 = res["status_counts"].get("502", 0)
        assert n502 >= 1, (cell, res["status_counts"])  # the killed worker's own request
        assert causes["worker_killed"] == n502, (cell, causes, res["attribution_matches"])
        assert causes["keepalive_race"] == 0 and causes["unknown"] == 0, (cell, causes)
        assert res["attribution_keepalive_reuse"] is False, cell  # every response closed its connection
