"""CPU isolation on a real cell (issue 14 item 1): the server's master and workers and MariaDB run on the inside
CPUs, nginx and the engine on the outside ones, the mechanism is reported, and no cgroup is left afterwards."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pytest_wsgi502.services.isolation import CGROUP_ROOT, cpus_allowed
from tests.integration.conftest import ROOT, Matrix, processes_under, wait_gone

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="isolation needs 2 CPUs")


def _cgroup_leftovers(pid: int) -> list[str]:
    return [str(p) for p in CGROUP_ROOT.glob(f"*/**/wsgi502-{pid}-*")] if CGROUP_ROOT.is_dir() else []


def _role(cmdline: str) -> str | None:
    for word, role in (("mariadbd", "inside"), ("mysqld", "inside"), ("uwsgi", "inside"), ("nginx", "outside")):
        if word in cmdline.split(" ", 2)[0] or f"/{word} " in cmdline:
            return role
    return None


def test_cell_processes_are_placed_and_released(tmp_path: Path) -> None:
    matrix = Matrix(tmp_path)
    described = tmp_path / "isolation.json"
    env = dict(os.environ, WSGI502_BENCH_ISOLATION="auto", WSGI502_BENCH_ISOLATION_OUT=str(described))
    argv = matrix.argv("--wsgi-cells=uwsgi-2w", "--wsgi-duration=3s", "-p", "pytest_wsgi502.bench.isolate")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        matrix.wait_for_load(proc, "uwsgi-2w")
        iso = json.loads(described.read_text())
        seen: dict[str, list[tuple[int, tuple[int, ...]]]] = {"inside": [], "outside": []}
        for line in processes_under(matrix.keep):
            pid, cmd = line.split(" ", 1)
            role = _role(cmd)
            if role is not None:
                seen[role].append((int(pid), cpus_allowed(int(pid))))
        engine = cpus_allowed(proc.pid)
    finally:
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert iso["mechanism"] in ("cgroup-v1", "cgroup-v2", "affinity"), iso
    inside, outside = tuple(iso["inside"]), tuple(iso["outside"])
    assert inside and outside and not set(inside) & set(outside)
    # master + 2 workers of uWSGI, and mysqld; nginx (master_process off: one process)
    assert len(seen["inside"]) >= 4 and all(c == inside for _, c in seen["inside"]), seen
    assert seen["outside"] and all(c == outside for _, c in seen["outside"]), seen
    assert engine == outside  # the engine's event loop runs in the pytest process
    assert not wait_gone(matrix.keep)
    assert not _cgroup_leftovers(proc.pid)
    result = json.loads(matrix.json.read_text())["cells"][0]
    assert result["engine"]["loop_cpu_percent"] > 0 and result["engine"]["runqueue_wait_ms"] is not None
