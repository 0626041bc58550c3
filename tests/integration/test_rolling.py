"""A rolling deploy's processes (issue 16 item 1): every instance it started, old and new, is released when the
run is interrupted in the middle of the deploy (Ctrl-C), not only when it ends."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from .conftest import Matrix, wait_gone

# a deploy slow enough to be caught mid-way: each instance waits 3 s (preStop) before its stop
MATRIX = """\
[cells.rolling]
server = "gunicorn"
workers = 2
instances = 2
duration = 30
concurrency = 4
think_time = 0.05
actions = [{at = "2s", do = "rolling", lag = "0.5s", prestop = "3s", deregistration_delay = "30s"}]
"""


def running(needle: str) -> list[int]:
    """Live processes whose whole command line has ``needle`` (conftest's listing cuts long lines)."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle.encode() in cmd and state != "Z":
            found.append(int(pid))
    return found


def test_ctrl_c_during_a_rolling_deploy_releases_every_instance_and_the_load_balancer(tmp_path: Path) -> None:
    m = Matrix(tmp_path)
    (tmp_path / "m.toml").write_text(MATRIX)
    proc = m.popen(f"--wsgi-matrix-file={tmp_path / 'm.toml'}")
    try:
        deadline = time.monotonic() + 180
        # the first instance has been replaced (its successor's directory) and the second is being deregistered
        while not list(m.keep.glob("run-*/cells/rolling/instance-1.2/server.log")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        time.sleep(1.0)
        assert running("haproxy.cfg") and running("instance-1.2/gunicorn.conf.py")  # the LB, the new instance 1
        assert running("instance-2/gunicorn.conf.py")  # the old second instance, still up
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 2, out  # pytest's "interrupted"
    assert wait_gone(m.keep, 15) == []


CHILD_TEST = '''\
import os
from pathlib import Path


def alive_under(path):
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path).encode() in cmd and state != "Z":
            found.append(cmd.replace(b"\\\\0", b" ").decode(errors="replace"))
    return found


def test_stop_releases_every_instance(wsgi_server, wsgi_load):
    target = wsgi_server.rolling({"server": "gunicorn", "workers": 1}, at="1s", lag="0.2s", prestop="0.5s")
    # each replacement is lag + preStop + gunicorn's boot (a review read 1.6-1.8 s in kept runs): 10 s leaves the two
    # of them room
    result = wsgi_load(target, mode="open", rate=20, duration=10)
    assert [p["phase"] for p in result.telemetry["action_phases"]].count("ready") == 2  # both replaced
    running = alive_under(target.dir)
    assert sum("instance-1.2/" in p for p in running) and sum("instance-2.2/" in p for p in running), running
    assert not [p for p in running if "instance-1/" in p or "instance-2/" in p], running  # the old ones exited
    target.stop()
    assert alive_under(target.dir) == []  # the load balancer and every instance, right at stop
'''


def test_stopping_a_target_after_its_rolling_deploy_releases_the_new_instances_at_once(tmp_path: Path) -> None:
    """While the session still runs (no death signal from an exiting pytest helps here): the instances a deploy
    started are stopped with their target, the ones it replaced are already gone."""
    import subprocess
    import sys

    from .conftest import SAMPLE

    (tmp_path / "test_child.py").write_text(CHILD_TEST)
    r = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_child.py"), "--wsgi-matrix",
                        "-c", str(SAMPLE / "pytest.ini"), "--rootdir", str(SAMPLE), "-p", "no:cacheprovider",
                        f"--wsgi-keep-dir={tmp_path / 'run'}"], cwd=SAMPLE, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
