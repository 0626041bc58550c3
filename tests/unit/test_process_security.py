"""The process layer trusts nothing it did not write (issue 12, item 6 and the Low items): a per-user 0700 base
whose owner and mode are verified, ledgers read only from it, no kill of another user's process, garbled
ledgers tolerated, groups reaped after their leader died, no killpg on a reaped (reusable) pid, no
``preexec_fn``, kept sessions still reaped."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_wsgi502.services import process
from pytest_wsgi502.services.process import LocalProcess, ServiceError

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")


def _start(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_dead(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pid)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _plant(base: Path, ledger: str, name: str = "run-1-1") -> Path:
    """A run record whose owner is gone, with the given ledger text."""
    run = base / name
    run.mkdir(parents=True, mode=0o700)
    (run / "owner.pid").write_text(f"{_dead_pid()} 1\n")
    (run / "pids").write_text(ledger)
    return run


@pytest.fixture
def base(tmp_path: Path) -> Path:
    b = tmp_path / "base"
    b.mkdir(mode=0o700)
    return b


@pytest.fixture
def procs() -> Any:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


@ROOT_ONLY
def test_a_planted_ledger_naming_another_users_process_does_not_kill_it(base: Any, procs: Any) -> None:
    victim = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "sleep", "60"],
                              start_new_session=True)
    ours = subprocess.Popen(["sleep", "60"], start_new_session=True)
    procs += [victim, ours]
    time.sleep(0.2)  # setpriv has exec'd sleep
    nobody = pwd.getpwnam("nobody").pw_uid
    _plant(base, f"{victim.pid} {_start(victim.pid)}\n"  # the old two-field form
                 f"{victim.pid} {_start(victim.pid)} {victim.pid} {nobody}\n"  # even naming nobody's uid
                 f"{ours.pid} {_start(ours.pid)}\n")  # the control: our own orphan is reaped
    killed = process.reap_orphans(base)
    assert killed == [ours.pid]
    assert victim.poll() is None, "the reaper killed another user's process"
    assert ours.wait(5) == -signal.SIGKILL


@pytest.mark.parametrize("mode", [0o755, 0o770, 0o1777])
def test_a_base_open_to_others_is_refused(tmp_path: Path, mode: Any) -> None:
    b = tmp_path / "shared"
    b.mkdir()
    os.chmod(b, mode)
    _plant(b, "")
    with pytest.raises(ServiceError) as info:
        process.reap_orphans(b)
    assert "\n" not in str(info.value) and f"{mode:04o}" in str(info.value) and "chmod 700" in str(info.value)
    with pytest.raises(ServiceError):
        process.new_run_dir(b)


@ROOT_ONLY
def test_a_base_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    b = tmp_path / "theirs"
    b.mkdir(mode=0o700)
    os.chown(b, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(ServiceError, match=r"owned by uid \d+, not by you"):
        process.reap_orphans(b)


def test_a_symlinked_base_is_refused(tmp_path: Path, base: Any) -> None:
    link = tmp_path / "link"
    link.symlink_to(base)
    with pytest.raises(ServiceError, match="symlink"):
        process.reap_orphans(link)
    with pytest.raises(ServiceError, match="symlink"):
        process.new_run_dir(link)


def test_base_dir_is_per_user_private_and_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    b = process.base_dir()
    assert b == tmp_path / f"pytest-wsgi502-{os.geteuid()}"
    st = os.lstat(b)
    assert (st.st_uid, st.st_mode & 0o777) == (os.geteuid(), 0o700)
    os.chmod(b, 0o777)
    with pytest.raises(ServiceError, match="open to other users"):
        process.base_dir()


def test_blank_and_garbled_ledger_lines_do_not_raise(base: Any) -> None:
    run = _plant(base, "\n  \n12x 5\n42\n None None\n0 5\n1 1\n-5 3 -5 0\n")
    assert process.reap_orphans(base) == []
    assert not run.exists()


def test_a_group_whose_leader_died_is_still_reaped(base: Any, procs: Any) -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!"], stdout=subprocess.PIPE, start_new_session=True)
    procs.append(leader)
    assert leader.stdout is not None
    orphan = int(leader.stdout.readline())
    started = _start(leader.pid)
    leader.wait()  # the leader is gone (as after PR_SET_PDEATHSIG), its child lives on in the group
    try:
        assert _alive(orphan)
        _plant(base, f"{leader.pid} {started}\n")
        assert process.reap_orphans(base) == [orphan]
        assert _wait_dead(orphan)
    finally:
        if _alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_a_group_whose_id_was_reused_is_left_alone(base: Any, procs: Any) -> None:
    p = subprocess.Popen(["sleep", "60"], start_new_session=True)
    procs.append(p)
    _plant(base, f"{p.pid} {int(_start(p.pid)) - 1}\n")  # same pid, other start time: not the recorded process
    assert process.reap_orphans(base) == []
    assert p.poll() is None


def test_stop_never_killpgs_a_pid_it_already_reaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lp = LocalProcess("sleeper", ["sleep", "60"], tmp_path / "log").start()
    assert lp.proc is not None
    os.kill(lp.proc.pid, signal.SIGKILL)
    lp.proc.wait()  # reaped (e.g. by a poll() elsewhere): its pid may now belong to anybody
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: calls.append((pgid, sig)))
    lp.stop(timeout=1)
    assert calls == []


def test_stop_kills_the_group_and_records_when_it_asked(tmp_path: Path) -> None:
    lp = LocalProcess("sh", ["sh", "-c", "trap '' TERM; sleep 60 & echo $! > child; wait"], tmp_path / "log",
                      cwd=tmp_path).start()
    deadline = time.monotonic() + 5
    while not (tmp_path / "child").exists() or not (tmp_path / "child").read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int((tmp_path / "child").read_text())
    before = time.time()
    lp.stop(timeout=0.5)
    assert lp.stop_sent_at is not None and before <= lp.stop_sent_at <= time.time()
    assert _wait_dead(child), "the group's member outlived stop()"
    assert lp.proc is not None and lp.proc.returncode is not None


def test_children_start_without_preexec_fn_and_die_with_their_parent(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> Any:
    seen: list[dict[str, Any]] = []
    real = subprocess.Popen

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    lp = LocalProcess("sleeper", ["sleep", "60"], tmp_path / "log").start()
    lp.stop(timeout=1)
    assert seen and all(k.get("preexec_fn") is None for k in seen)
    if process.setpriv() is None:
        pytest.skip("no setpriv --pdeathsig here: the ledger alone covers a killed session")
    code = ("import sys, time; from pathlib import Path; from pytest_wsgi502.services.process import LocalProcess; "
            "p = LocalProcess('s', ['sleep', '60'], Path(sys.argv[1])).start(); print(p.pid, flush=True); "
            "time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "log2")], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.kill()
        parent.wait()
        assert _wait_dead(child), "the service outlived its killed parent"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_kept_sessions_processes_are_still_reaped(base: Any, tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    run = process.new_run_dir(base, keep=keep)
    assert run.parent == keep and (run / "owner.pid").exists() and run.stat().st_mode & 0o777 == 0o700
    ledger = process.ledger_path(run)
    assert ledger.parent.parent == base  # the ledger stays in the private base, not in the user's keep dir
    lp = LocalProcess("sleeper", ["sleep", "60"], run / "log", ledger=ledger).start()
    try:
        (ledger.parent / "owner.pid").write_text(f"{_dead_pid()} 1\n")  # the session "crashed"
        assert process.reap_orphans(base) == [lp.pid]
        assert lp.proc is not None and lp.proc.wait(5) == -signal.SIGKILL
        assert run.is_dir() and not ledger.parent.exists()  # kept files stay, the record goes
    finally:
        lp.stop(timeout=1)


def test_private_dirs_are_removed_by_the_reaper_but_nothing_outside_tempdir(base: Any, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = _plant(base, "")
    mine = process.private_tmpdir(run / "pids", prefix="test")
    victim = tmp_path / "victim"
    victim.mkdir()
    with open(run / "dirs", "a") as fh:
        fh.write(f"{victim}\n/etc\n\n")
    process.reap_orphans(base)
    assert not mine.exists() and victim.exists()


@ROOT_ONLY
def test_a_service_run_as_mysql_is_recorded_and_reaped_when_root(base: Any, tmp_path: Path) -> None:
    try:
        uid = pwd.getpwnam("mysql").pw_uid
    except KeyError:
        pytest.skip("no mysql account")
    if process.setpriv() is None or shutil.which("sleep") is None:
        pytest.skip("no setpriv")
    run = process.new_run_dir(base)
    lp = LocalProcess("sleeper", ["sleep", "60"], run / "log", ledger=process.ledger_path(run), user="mysql").start()
    try:
        time.sleep(0.2)
        assert lp.pid is not None and process._uids(lp.pid) == (uid, uid)
        assert process.ledger_path(run).read_text().split()[3] == str(uid)
        (run / "owner.pid").write_text(f"{_dead_pid()} 1\n")
        assert process.reap_orphans(base) == [lp.pid]
    finally:
        lp.stop(timeout=1)


def test_a_missing_program_is_still_a_clear_error_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"^x: cannot run /nonexistent/prog: not an executable file$"):
        LocalProcess("x", ["/nonexistent/prog"], tmp_path / "log").start()
    with pytest.raises(ServiceError, match="cannot run no-such-program-wsgi502"):
        LocalProcess("x", ["no-such-program-wsgi502"], tmp_path / "log").start()
