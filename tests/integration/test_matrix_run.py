"""End to end: pytest --wsgi-matrix on the sample project with real services."""

import os
import re
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import pytest

from pytest_wsgi502.services.process import reap_orphans

from .conftest import processes_under, wait_gone


def test_two_cells_end_to_end(matrix):
    r = matrix.run("--wsgi-cells=uwsgi-2w,gunicorn-sync", "--wsgi-duration=3s", "--wsgi-slo=error_rate<0.01")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    cells = matrix.cells()
    assert list(cells) == ["uwsgi-2w", "gunicorn-sync"]
    for name, c in cells.items():
        # real requests through the proxy, every one verified by its body
        assert c["requests"] > 300, (name, c["requests"])
        assert c["status_counts"].get("200", 0) + c["error_count"] >= c["requests"]
        assert c["proxy"]["status_counts"] == c["status_counts"], "the proxy saw what the client saw"
        assert c["latency_ms"]["p50"] > 0 and c["rps"] > 0
        assert set(c["slo"]) >= {"passed", "failures"}
        # one precedence rule: the session's option beats the seed matrix's [defaults], on SLOs as on load keys
        assert c["slo"]["sources"] == {"error_rate": "option", "kills": "matrix-defaults"}, c["slo"]
        assert c["load"]["sources"]["duration"] == "option" and c["load"]["spec"]["duration"] == 3
        assert c["load"]["sources"]["concurrency"] == "default"
        assert {"uwsgi.ini", "nginx.conf", "server.log", "proxy-access.log"} <= set(c["files"]) or \
            {"gunicorn.conf.py", "nginx.conf", "server.log", "proxy-access.log"} <= set(c["files"])
    assert re.search(r"uwsgi-2w\s+\d+\s+0\s+0", out), out
    assert "gunicorn-sync" in out and "wsgi502 matrix" in out


def test_respawn_counts_agree_with_the_servers_own_logs(matrix, tmp_path):
    m = tmp_path / "m.toml"
    m.write_text("""
[defaults]
max_requests = 40
[cells.uwsgi-recycle]
server = "uwsgi"
[cells.uwsgi-recycle.options]
min-worker-lifetime = 1
[cells.gunicorn-recycle]
server = "gunicorn"
""")
    r = matrix.run(f"--wsgi-matrix-file={m}", "--wsgi-duration=4s", "--wsgi-concurrency=8",
                   "--wsgi-slo=error_rate<=1")
    assert r.returncode == 0, r.stdout + r.stderr
    cells = matrix.cells()

    def lines(cell: str, pattern: str) -> int:
        """Lines of the server's own log that match, up to the harness's own stop signal (the harness stamps each
        line with its arrival time; what the server does while being stopped is not counted)."""
        until = cells[cell]["telemetry"]["until"]
        assert cells[cell]["ended_at"] < until  # the server had time to report the end of the load
        log = (matrix.cell_dir(cell) / "server.log").read_text().splitlines()
        return sum(1 for line in log if re.search(pattern, line) and float(line.split()[0]) <= until)

    respawned = lines("uwsgi-recycle", r"Respawned uWSGI worker \d+ \(new pid: \d+\)")
    assert respawned >= 2
    assert cells["uwsgi-recycle"]["respawns"] == respawned
    booted = lines("gunicorn-recycle", r"Booting worker with pid: \d+")
    assert booted - 2 >= 2
    assert cells["gunicorn-recycle"]["respawns"] == booted - 2
    assert cells["gunicorn-recycle"]["telemetry"]["respawns_from_log"] == booted - 2


def test_server_that_never_starts_is_one_error_with_its_log(matrix, tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[cells.broken]\nserver = "uwsgi"\n[cells.broken.options]\nmodule = "no_such_module:app"\n')
    r = matrix.run(f"--wsgi-matrix-file={m}", "--wsgi-duration=1s")
    out = r.stdout + r.stderr
    assert r.returncode == 1
    assert re.search(r"uwsgi \(broken\) exited \(code \d+\) before answering HTTP on 127\.0\.0\.1:\d+", out), out
    assert "no_such_module" in out  # the server's own last log lines are in the message
    assert "pytest_wsgi502/" not in out  # and no traceback of ours
    assert "During handling of the above exception" not in out  # nor the message printed twice


def test_port_in_use_is_reported_by_the_server(matrix, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        m = tmp_path / "m.toml"
        m.write_text(f'[cells.clash]\nserver = "gunicorn"\n[cells.clash.options]\nbind = ["127.0.0.1:{port}"]\n')
        r = matrix.run(f"--wsgi-matrix-file={m}", "--wsgi-duration=1s", timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1
    assert "gunicorn (clash) exited" in out or "gunicorn (clash) not ready" in out, out
    assert "Address already in use" in out, out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "term", "killed"])
def test_interrupted_run_leaves_nothing_running(matrix, sig, request):
    # where the private MariaDB directory goes (tempfile.gettempdir()): under /tmp, as pytest's own tmp_path is 0700
    # and the mysql user must reach its directory inside
    tmp = Path(tempfile.mkdtemp(prefix="wsgi502-test-tmp-"))
    tmp.chmod(0o711)
    base = tmp / f"pytest-wsgi502-{os.geteuid()}"  # the session's records (ledger, cgroups) under that TMPDIR

    def cleanup() -> None:  # a killed session's record is the reaper's to finish before the directory goes
        if base.exists():
            reap_orphans(base)
        shutil.rmtree(tmp, ignore_errors=True)

    request.addfinalizer(cleanup)
    proc = matrix.popen("--wsgi-cells=uwsgi-2w", "--wsgi-duration=60s", env={"TMPDIR": str(tmp)})
    try:
        matrix.wait_for_load(proc, timeout=120)  # services up, load flowing
        assert len(processes_under(matrix.keep)) >= 4  # mariadbd, uwsgi master + workers, nginx
        proc.send_signal(sig)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM (timeout, a cancelled CI job) is released as Ctrl-C is
        assert proc.returncode == 2  # pytest's "interrupted"
        assert not wait_gone(matrix.keep, 10)
        assert not list(tmp.glob("wsgi502-mysql-*"))  # the private MariaDB directory is removed
    else:
        # the kernel (PR_SET_PDEATHSIG) stops the services; uWSGI workers follow their master (no-orphans)
        left = wait_gone(matrix.keep, 15)
        assert not left, left
        # and the next session's reaper removes the CPU split's groups the killed one left (session 9: with the
        # record deleted along with this test's TMPDIR, 8 empty groups piled up over a day of runs)
        groups = list(Path("/sys/fs/cgroup").glob(f"*/wsgi502-{proc.pid}-*"))
        reap_orphans(base)
        assert not [g for g in groups if g.exists()], groups
