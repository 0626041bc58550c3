"""Integration tests drive the real plugin in a child pytest on the sample project: real MariaDB, uWSGI,
gunicorn and nginx. Each child keeps its run directory under tmp_path so logs can be checked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_project"

# The two-server matrix docs/getting-started.md shows (test_downstream checks the page has it verbatim);
# test_own_app runs the same cells with a secret in [defaults.env].
TWO_SERVER_MATRIX = """\
[defaults]
slo = ["error_rate<0.02", "p99<1s"]
[cells.gunicorn]
server = "gunicorn"
workers = 2
[cells.uwsgi]
server = "uwsgi"
workers = 2
[cells.uwsgi.options]
add-header = "Connection: close"
"""
SECRET_ENV = '[defaults.env]\nDJANGO_SECRET_KEY = "not-a-secret-for-load-tests"\n'


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


def processes_under(path: Path) -> list[str]:
    """Live processes whose command line mentions ``path`` (every service we start names its run dir)."""
    found = []
    needle = str(path).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmd and state != "Z":
            shown = cmd.replace(b"\0", b" ").decode(errors="replace")[:160]
            found.append(f"{pid} {shown}")
    return found


def wait_gone(path: Path, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := processes_under(path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


class Matrix:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.keep = tmp_path / "run"
        self.json = tmp_path / "out.json"

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pytest", str(SAMPLE / "test_matrix.py"), "--wsgi-matrix",
                f"--wsgi-keep-dir={self.keep}", f"--wsgi-json={self.json}", "-p", "no:cacheprovider", "-rA", *args]

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def run_unstarved(self, *args: str, attempts: int = 3, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``run``, again (at most ``attempts`` times, from a fresh keep dir) while it failed because the machine
        took the engine's CPU ("was starved"): such a run is rightly ``invalid`` and says nothing of the setting a
        test checks. The check that refuses it has its own tests (tests/unit/test_isolation.py)."""
        for _ in range(attempts):
            r = self.run(*args, timeout=timeout)
            if r.returncode == 0 or "was starved" not in r.stdout:
                break
            shutil.rmtree(self.keep, ignore_errors=True)
        return r

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        # SIGINT handled as from a terminal even when this suite runs as a background job of a non-interactive
        # shell: such jobs inherit SIG_IGN for SIGINT, and Python then never raises KeyboardInterrupt
        return subprocess.Popen(self.argv(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                                env=None if env is None else {**os.environ, **env})

    def wait_for_load(self, proc: subprocess.Popen[str], cell: str = "uwsgi-2w", timeout: float = 120) -> None:
        """Wait until ``cell``'s services are up and load flows through its proxy (a non-empty access log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            logs = list(self.keep.glob(f"run-*/cells/{cell}/proxy-access.log"))
            if logs and logs[0].stat().st_size > 0:
                return
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else proc.returncode
            time.sleep(0.5)
        pytest.fail(f"the cell {cell} never started")

    def cells(self) -> dict[str, dict]:
        return {c["name"]: c for c in json.loads(self.json.read_text())["cells"]}

    def cell_dir(self, name: str) -> Path:
        (run,) = [p for p in self.keep.iterdir() if p.name.startswith("run-")]
        return run / "cells" / name


@pytest.fixture
def matrix(tmp_path: Path) -> Matrix:
    m = Matrix(tmp_path)
    yield m
    left = wait_gone(m.keep, timeout=5)
    assert not left, f"processes left behind: {left}"
