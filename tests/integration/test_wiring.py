"""Settings wired through a real cell (issues 14, 16, 17): each a short matrix run on the sample app."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from .conftest import processes_under

OPEN_CELL = """
[cells.w]
server = "gunicorn"
workers = 2
load_mode = "open"
rate = 100
concurrency = 8
duration = 3
slo = ["error_rate<0.05"]
"""


def test_warm_up_requests_are_sent_and_counted_but_not_measured(matrix, tmp_path):
    """--wsgi-warmup=1s: the proxy logged every request the result counts (the warm-up included); the latency
    histogram and req/s hold only those sent after the first second."""
    m = tmp_path / "w.toml"
    m.write_text(OPEN_CELL)
    r = matrix.run_unstarved(f"--wsgi-matrix-file={m}", "--wsgi-warmup=1s")
    assert r.returncode == 0, r.stdout + r.stderr
    cell = matrix.cells()["w"]
    assert cell["load"]["spec"]["warmup"] == 1.0 and cell["load"]["sources"]["warmup"] == "option"
    assert cell["proxy"]["profile"] == "alb" and cell["load"]["sources"]["proxy_profile"] == "default"
    warm = cell["warmup"]["requests"]
    assert 80 <= warm <= 120, cell["warmup"]  # 1 s at 100 req/s
    assert cell["requests"] == sum(cell["proxy"]["status_counts"].values()) == cell["responses"]
    measured = HdrHistogram.decode(cell["histogram"].encode())  # HdrHistogram V2, base64
    assert measured.get_total_count() == cell["requests"] - warm
    assert 85 <= cell["rps"] <= 115, cell["rps"]  # (requests - warm-up) / (end - warm-up end)


def test_a_matrix_cell_on_two_locust_generators(matrix, tmp_path):
    """--wsgi-distributed=locust --wsgi-generators=2 (issue 17 item 2): the cell's load runs on Locust's runtime,
    the result is the usual one (a pass, every request in the proxy's log) and the JSON says it was distributed."""
    m = tmp_path / "w.toml"
    m.write_text(OPEN_CELL)
    r = matrix.run_unstarved(f"--wsgi-matrix-file={m}", "--wsgi-distributed=locust", "--wsgi-generators=2",
                   "--wsgi-proxy-profile=nginx")
    assert r.returncode == 0, r.stdout + r.stderr
    cell = matrix.cells()["w"]
    assert cell["slo"]["outcome"] == "pass", cell["slo"]
    dist = cell["load"]["distributed"]
    assert (dist["runtime"], dist["generators"]) == ("locust", 2), dist
    assert cell["engine"]["processes"] == 2 and len(cell["engine"]["per_process"]) == 2
    assert 250 <= cell["requests"] == sum(cell["proxy"]["status_counts"].values()), cell["requests"]
    assert (matrix.cell_dir("w") / "locust" / "master.log").is_file()
    assert cell["proxy"]["profile"] == "nginx" and cell["load"]["sources"]["proxy_profile"] == "option"


def _cpu_group(pid: int) -> Path | None:
    """The cgroup v1 ``cpu`` hierarchy directory of ``pid`` (None on cgroup v2 or when it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            for mount in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct")):
                if mount.is_dir():
                    return mount / path.lstrip("/")
    return None


def test_a_cells_cpus_is_a_cpu_quota_on_the_local_backend(matrix, tmp_path):
    """The matrix key cpus on the local backend (issue 14 item 1): the server runs in a CFS quota group of
    cpus x 100 ms per 100 ms while the load runs, the JSON says so, and the group is gone afterwards."""
    cpu = Path("/sys/fs/cgroup/cpu")
    if not (cpu / "cpu.cfs_quota_us").exists() or os.geteuid() != 0 or not os.access(cpu, os.W_OK):
        # an unprivileged container mounts it read-only: there the cell is skipped with the reason (test_isolation)
        pytest.skip("needs root and a writable cgroup v1 cpu controller (the machine this was built on)")
    m = tmp_path / "w.toml"
    m.write_text(OPEN_CELL.replace("duration = 3", "duration = 4\ncpus = 0.5"))
    proc = matrix.popen(f"--wsgi-matrix-file={m}", "--wsgi-isolation=cgroup")
    try:
        matrix.wait_for_load(proc, "w")
        servers = [line.split()[0] for line in processes_under(matrix.keep) if "gunicorn" in line]
        assert servers, processes_under(matrix.keep)
        groups = {_cpu_group(int(pid)) for pid in servers}
        quotas = {(g / "cpu.cfs_quota_us").read_text().strip() for g in groups if g is not None}
        assert quotas == {"50000"}, (groups, quotas)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    cell = matrix.cells()["w"]
    quota = cell["isolation"]["quota"]
    assert quota["cpus"] == 0.5 and "cpu.cfs_quota_us=50000" in quota["enforced"], quota
    assert cell["requests"] > 0 and cell["slo"]["outcome"] == "pass"
    assert not any(g.exists() for g in groups if g is not None)  # released after the cell
