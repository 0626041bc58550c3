"""The containers backend on a real engine (Podman here, Docker on GitHub): the matrix in containers, its JSON,
and cleanup after a normal run, a failing run, Ctrl-C and SIGKILL.

Needs a Docker-compatible engine (`bash .ci/run` starts Podman when none answers). Without one these tests
skip with that reason, except where WSGI502_REQUIRE_CONTAINERS=1 (set by .ci/run): there they fail.
Images come from WSGI502_MYSQL_IMAGE / WSGI502_BASE_IMAGE (locally built ones in .ci/run; public ones on
GitHub), as for any user.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_wsgi502.services.backend import choose
from pytest_wsgi502.services.containers.reaper import LABEL, OWNER_LABEL, session_objects

from .conftest import SAMPLE, wait_gone

pytestmark = pytest.mark.containers

# the keys every cell has on the local backend (README "JSON output" plus what the local run writes)
LOCAL_CELL_KEYS = {"name", "server", "description", "config", "requests", "status_counts", "errors", "error_rate",
                   "latency_ms", "rps", "respawns", "kills", "slo", "engine", "telemetry", "proxy", "attribution",
                   "timeline", "dir", "files"}


@pytest.fixture(scope="module")
def engine() -> Any:
    """A docker SDK client on the engine the backend would use."""
    choice = choose("auto", os.environ)
    if choice.name != "containers":
        if os.environ.get("WSGI502_REQUIRE_CONTAINERS") == "1":
            pytest.fail(f"WSGI502_REQUIRE_CONTAINERS=1 but {choice.reason}")
        pytest.skip(f"no container engine ({choice.reason}); `bash .ci/run` sets up Podman")
    import docker

    client = docker.DockerClient(base_url=choice.docker_host)
    yield client
    client.close()


def session_id(matrix: Any) -> str:
    (f,) = list(matrix.keep.glob("run-*/container-session"))
    return str(f.read_text().strip())


def left_behind(engine: Any, session: str, timeout: float = 0.0) -> list[str]:
    """Containers and networks of ``session`` the engine still has (what `podman ps -a` would list)."""
    deadline = time.monotonic() + timeout
    while True:
        left = session_objects(engine, session)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.5)


def containers_run(matrix: Any, *args: str, timeout: float = 900) -> Any:
    return matrix.run("--wsgi-backend=containers", *args, timeout=timeout)


def test_two_cells_in_containers_same_json_keys_as_local_plus_container(matrix: Any, engine: Any,
                                                                        tmp_path: Path) -> None:
    r = containers_run(matrix, "--wsgi-cells=uwsgi-2w,gunicorn-sync", "--wsgi-duration=3s",
                       "--wsgi-concurrency=8", "--wsgi-slo=error_rate<0.01")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "wsgi502: backend containers: engine at" in out
    doc = json.loads(matrix.json.read_text())
    assert doc["environment"]["backend"] == "containers" and doc["environment"]["backend_used"] == "containers"
    assert doc["environment"]["container_engine"]["name"] in ("podman", "docker")
    cells = {c["name"]: c for c in doc["cells"]}
    assert list(cells) == ["uwsgi-2w", "gunicorn-sync"]
    for name, c in cells.items():
        assert set(c) >= LOCAL_CELL_KEYS, (name, LOCAL_CELL_KEYS - set(c))
        assert c["requests"] > 100 and c["status_counts"].get("200", 0) > 100, (name, c["status_counts"])
        assert c["proxy"]["status_counts"] == c["status_counts"], "the proxy on the host saw what the client saw"
        ctr = c["container"]
        assert ctr["image"].startswith("localhost/wsgi502-app:")
        assert ctr["engine"]["name"] in ("podman", "docker") and ctr["engine"]["version"]
        assert ctr["mysql_image"] and ctr["base_image"]
        assert {"engine", "mysql_ready"} <= set(ctr["session_phases_s"])
        assert ctr["exit_code"] in (0, 1, 2, 30), ctr  # stopped by its stop signal, not killed
    # the server really ran in the container: its log came from the engine's stream, stamped on arrival
    log = (matrix.cell_dir("uwsgi-2w") / "server.log").read_text()
    assert "getting INI configuration from /wsgi502/cell/uwsgi.ini" in log
    assert left_behind(engine, session_id(matrix)) == []

    # the same cell on the local backend writes the same keys, minus "container"
    import shutil
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="w5-"))  # MariaDB's socket path must stay under 108 bytes
    local = type(matrix)(short)
    r = local.run("--wsgi-backend=local", "--wsgi-cells=gunicorn-sync", "--wsgi-duration=1s",
                  "--wsgi-concurrency=4", "--wsgi-slo=error_rate<=1")
    assert r.returncode == 0, r.stdout + r.stderr
    local_doc = json.loads(local.json.read_text())
    assert set(cells["gunicorn-sync"]) - set(local_doc["cells"][0]) == {"container"}
    assert set(local_doc["cells"][0]) - set(cells["gunicorn-sync"]) == set()
    assert set(local_doc["environment"]) <= set(doc["environment"])
    assert not wait_gone(local.keep, 10)
    shutil.rmtree(short, ignore_errors=True)


def test_second_session_reuses_the_app_image(matrix: Any, engine: Any) -> None:
    r = containers_run(matrix, "--wsgi-cells=gunicorn-sync", "--wsgi-duration=1s", "--wsgi-concurrency=4",
                       "--wsgi-slo=error_rate<=1")
    assert r.returncode == 0, r.stdout + r.stderr
    first = matrix.cells()["gunicorn-sync"]["container"]
    matrix.json.unlink()
    r = containers_run(matrix, "--wsgi-cells=gunicorn-sync", "--wsgi-duration=1s", "--wsgi-concurrency=4",
                       "--wsgi-slo=error_rate<=1")
    assert r.returncode == 0, r.stdout + r.stderr
    second = matrix.cells()["gunicorn-sync"]["container"]
    assert second["image"] == first["image"]
    assert "app_image_cached" in second["session_phases_s"], second["session_phases_s"]
    assert "app_image_build" not in second["session_phases_s"]


def test_limits_are_applied_and_recorded(matrix: Any, engine: Any, tmp_path: Path) -> None:
    m = tmp_path / "m.toml"
    m.write_text('[cells.limited]\nserver = "gunicorn"\ncpus = 0.5\nmem_limit = "300m"\n')
    r = containers_run(matrix, f"--wsgi-matrix-file={m}", "--wsgi-duration=2s", "--wsgi-concurrency=4",
                       "--wsgi-slo=error_rate<=1")
    assert r.returncode == 0, r.stdout + r.stderr
    ctr = matrix.cells()["limited"]["container"]
    assert (ctr["cpus"], ctr["mem_limit"], ctr["mem_limit_bytes"]) == (0.5, "300m", 300 << 20)
    # read back from the engine's inspect of the running container
    assert ctr["applied"]["memory_bytes"] == 300 << 20 and ctr["applied"]["cpus"] == 0.5


def test_oom_kill_scenario_counts_the_kernels_kills(matrix: Any, engine: Any) -> None:
    r = containers_run(matrix, "--wsgi-matrix-file=scenarios", "--wsgi-cells=oom-kill,oom-kill-fixed",
                       "--wsgi-duration=6s", "--wsgi-concurrency=8")
    assert matrix.json.exists(), r.stdout + r.stderr
    cells = matrix.cells()
    broken, fixed = cells["oom-kill"], cells["oom-kill-fixed"]
    allocs = [json.loads(line) for line in (matrix.cell_dir("oom-kill") / "proxy-access.log").read_text().splitlines()
              if "/api/alloc" in line]
    assert allocs, "no allocating request was sent"
    # every allocating request was answered 502 because its worker was SIGKILLed by the OOM killer ...
    assert [a["status"] for a in allocs] == [502] * len(allocs)
    assert broken["kills"] == broken["status_counts"]["502"] == len(allocs), (broken["kills"], broken["status_counts"])
    # each 502 is attributed to the kill; 'unknown' only where uWSGI's "died" line came later than attribution's
    # window: the master notices dead workers in its 1 s cycle (seen: 1.03 s after the 502). Never another cause.
    att = broken["attribution"]
    assert att["worker_killed"] >= 1 and att["worker_killed"] + att["unknown"] == len(allocs), att
    deaths = [e["t"] for e in broken["telemetry"]["events"] if e["kind"] == "died_signal"]
    for m in broken["attribution_matches"]:
        if m["cause"] == "unknown":
            assert any(0 <= t - m["t"] <= 1.5 for t in deaths), (m, deaths)
    log = (matrix.cell_dir("oom-kill") / "server.log").read_text()
    assert "killed by signal 9" in log
    # ... while the uWSGI master (the container's process) survived until the harness stopped it. Its exit code
    # says nothing either way: a master sleeping in "respawning too fast" backoff may not finish within the
    # stop timeout, and the engine's SIGKILL then gives 137 (seen once here)
    assert "SIGINT/SIGTERM received" in log
    assert broken["container"]["exit_code"] is not None
    assert not broken["slo"]["passed"]
    assert fixed["kills"] == 0 and fixed["status_counts"].get("502", 0) == 0 and fixed["slo"]["passed"]
    assert r.returncode == 1  # the broken cell fails its SLO, as it should


def test_lifetime_pair_in_containers_runs_the_pinned_release(matrix: Any, engine: Any) -> None:
    """The `lifetime` scenario pins uWSGI 2.0.24: its image is the app image plus the host's build of that
    release (built for the same Python), and the mechanism shows in the container as it does locally."""
    r = containers_run(matrix, "--wsgi-matrix-file=scenarios", "--wsgi-cells=lifetime,lifetime-fixed")
    assert matrix.json.exists(), r.stdout + r.stderr
    cells = matrix.cells()
    broken, fixed = cells["lifetime"], cells["lifetime-fixed"]
    assert "Starting uWSGI 2.0.24 " in (matrix.cell_dir("lifetime") / "server.log").read_text()
    assert "Starting uWSGI 2.0.24 " not in (matrix.cell_dir("lifetime-fixed") / "server.log").read_text()
    assert broken["container"]["image"] != fixed["container"]["image"]
    n502 = broken["status_counts"].get("502", 0)
    assert n502 > 0 and broken["attribution"]["recycle"] >= 0.8 * n502, (broken["status_counts"],
                                                                           broken["attribution"])
    assert fixed["status_counts"].get("502", 0) == 0 and fixed["slo"]["passed"]
    assert r.returncode == 1  # the broken cell fails its SLO, as it should


def test_failing_run_leaves_no_container_and_reaps_a_dead_sessions_leftovers(matrix: Any, engine: Any,
                                                                             tmp_path: Path) -> None:
    # a leftover of a "killed" session: its owner pid does not exist
    base = os.environ.get("WSGI502_BASE_IMAGE") or "python:{}.{}-slim-bookworm".format(*sys.version_info[:2])
    try:
        engine.images.get(base)
    except Exception:
        engine.images.pull(base)
    stale = engine.containers.create(base, ["sleep", "600"], labels={LABEL: "stale-test",
                                                                     OWNER_LABEL: f"{os.uname().nodename} 999999999 1"})
    try:
        m = tmp_path / "m.toml"
        m.write_text('[cells.broken]\nserver = "uwsgi"\n[cells.broken.options]\nmodule = "no_such_module:app"\n')
        r = containers_run(matrix, f"--wsgi-matrix-file={m}", "--wsgi-duration=1s")
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        assert "uwsgi (broken) exited (code" in out and "in its container before answering HTTP" in out, out
        assert "no_such_module" in out  # the server's own last lines, from the container's log stream
        assert "pytest_wsgi502/" not in out  # no traceback of ours
        assert left_behind(engine, session_id(matrix)) == []
        assert left_behind(engine, "stale-test") == [], "a dead session's leftover survived the next session start"
    finally:
        import contextlib

        with contextlib.suppress(Exception):
            stale.remove(force=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_interrupted_run_leaves_no_container(matrix: Any, engine: Any, sig: Any) -> None:
    proc = matrix.popen("--wsgi-backend=containers", "--wsgi-cells=uwsgi-2w", "--wsgi-duration=60s",
                        "--wsgi-concurrency=4")
    try:
        matrix.wait_for_load(proc, timeout=300)  # services up, load flowing
        session = session_id(matrix)
        running = engine.api.containers(filters={"label": f"{LABEL}={session}"})
        assert len(running) >= 2, running  # MySQL and the server
        proc.send_signal(sig)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGINT:
        out = proc.stdout.read()
        assert proc.returncode == 2, out  # pytest's "interrupted"
        assert left_behind(engine, session, timeout=10) == []
    else:
        # nobody ran pytest's teardown: the session's watchdog saw the pipe close and removed everything
        assert left_behind(engine, session, timeout=60) == []


def test_auto_picks_the_engine_and_says_why(engine: Any) -> None:
    import subprocess

    r = subprocess.run([sys.executable, "-m", "pytest", str(SAMPLE / "test_matrix.py"), "--wsgi-matrix",
                        "--wsgi-backend=auto", "--collect-only", "-p", "no:cacheprovider"],
                       cwd=SAMPLE, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wsgi502: backend containers: auto: engine at" in r.stdout, r.stdout


def test_watchdog_is_gone_after_a_normal_session(matrix: Any, engine: Any) -> None:
    """The watchdog exits with its session (no process of the session is left, containers or not)."""
    r = containers_run(matrix, "--wsgi-cells=gunicorn-sync", "--wsgi-duration=1s", "--wsgi-concurrency=4",
                       "--wsgi-slo=error_rate<=1")
    assert r.returncode == 0, r.stdout + r.stderr
    session = session_id(matrix)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = [p for p in Path("/proc").iterdir() if p.name.isdigit() and session.encode() in _cmdline(p)]
        if not alive:
            break
        time.sleep(0.2)
    assert not alive, alive


def _cmdline(p: Path) -> bytes:
    try:
        return p.joinpath("cmdline").read_bytes()
    except OSError:
        return b""


def test_limited_cell_is_skipped_on_the_local_backend(matrix: Any, tmp_path: Path) -> None:
    """No engine needed: a cell with mem_limit says it needs containers instead of running unlimited."""
    m = tmp_path / "m.toml"
    m.write_text('[cells.limited]\nserver = "gunicorn"\nmem_limit = "256m"\n[cells.plain]\nserver = "gunicorn"\n')
    r = matrix.run("--wsgi-backend=local", f"--wsgi-matrix-file={m}", "--wsgi-duration=1s", "--wsgi-concurrency=4",
                   "--wsgi-slo=error_rate<=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cell limited sets mem_limit: it runs with --wsgi-backend=containers" in r.stdout
    assert list(matrix.cells()) == ["plain"]


def test_crashed_xdist_worker_leaves_no_container(matrix: Any, engine: Any) -> None:
    """An xdist worker SIGKILLed mid-cell: the controller carries on, the worker's watchdog removes its containers."""
    proc = matrix.popen("--wsgi-backend=containers", "--wsgi-cells=uwsgi-2w", "--wsgi-duration=60s",
                        "--wsgi-concurrency=4", "-n", "1")
    try:
        matrix.wait_for_load(proc, timeout=300)  # services up, load flowing
        (run,) = [p.parent for p in matrix.keep.glob("run-*/cells")]
        worker = int((run / "owner.pid").read_text().split()[0])
        assert worker != proc.pid  # the run directory belongs to the xdist worker
        session = (run / "container-session").read_text().strip()
        assert engine.api.containers(filters={"label": f"{LABEL}={session}"})
        os.kill(worker, signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "crashed" in out, out
    assert left_behind(engine, session, timeout=60) == []
