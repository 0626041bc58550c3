"""Local processes that are always released: on success, failure, Ctrl-C, and a crashed pytest process.

Three layers, because each covers a case the others miss:
1. ``LocalProcess.stop()`` — the normal path, called by fixture teardown (graceful signal, then SIGKILL of
   the whole process group).
2. ``stop_all()`` — every process still alive, from ``pytest_unconfigure`` and ``atexit`` (Ctrl-C, errors).
3. ``PR_SET_PDEATHSIG`` + a pid ledger — if the pytest process (or an xdist worker) is SIGKILLed, the kernel
   kills each direct child; the ledger lets the next session kill any grandchildren that outlived it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_LIVE: list[LocalProcess] = []
_LEDGER_NAME = "pids"


class ServiceError(RuntimeError):
    """A service failed to start or answer; the message is one line plus the service's last log lines."""


def _pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def cache_dir() -> Path:
    """Where builds are kept between sessions (wheels and images' inputs, pinned server releases):
    ``$WSGI502_CACHE``, else ``$XDG_CACHE_HOME/pytest-wsgi502``, else ``~/.cache/pytest-wsgi502``."""
    if explicit := os.environ.get("WSGI502_CACHE"):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-wsgi502"


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free ports. All are held open together while choosing: asked one at a time, the kernel
    can hand out the same port twice (seen here: a proxy given its server's stats port)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_binary(name: str | Sequence[str], explicit: str | None = None, venv: bool = False) -> str | None:
    """An explicit path, else the first name found next to this Python (venv), on PATH, or in sbin."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else shutil.which(explicit)
    names = [name] if isinstance(name, str) else list(name)
    for n in names:
        if venv and (candidate := Path(sys.executable).parent / n).exists():
            return str(candidate)
        path = os.environ.get("PATH", "") + os.pathsep + "/usr/local/sbin:/usr/sbin:/sbin"
        if found := shutil.which(n, path=path):
            return found
    return None


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:]) or "    (log is empty)"


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class LocalProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
        ledger: Path | None = None,
        stamp: bool = False,
    ) -> None:
        self.name, self.argv, self.log, self.cwd = name, list(argv), log, cwd
        self.env = dict(env) if env is not None else None
        self.stop_signal = stop_signal
        self.ledger = ledger
        self.stamp = stamp  # prefix every output line with its arrival time (unix s, 6 decimals)
        self._pump: threading.Thread | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> LocalProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            try:
                self.proc = subprocess.Popen(
                    self.argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE if self.stamp else out,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                    preexec_fn=_pdeathsig,
                )
            except OSError as exc:
                raise ServiceError(f"{self.name}: cannot run {self.argv[0]}: {exc.strerror}") from None
        if self.stamp:
            self._pump = threading.Thread(target=self._stamp_lines, daemon=True, name=f"wsgi502-log-{self.name}")
            self._pump.start()
        _LIVE.append(self)
        if self.ledger is not None:
            with open(self.ledger, "a") as fh:
                fh.write(f"{self.proc.pid} {_start_time(self.proc.pid)}\n")
        return self

    def _stamp_lines(self) -> None:
        """Copy the child's output to its log, each line prefixed with when it arrived. Servers stamp their
        lines in whole seconds (gunicorn) or late (uWSGI's log-master stamps when the master drains its
        pipe, seen 2 s after the event); arrival time is what attribution needs."""
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log, "ab", buffering=0) as out:
            for line in self.proc.stdout:
                out.write(b"%.6f " % time.time() + line)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` until it is true; fail fast if the process exits, with its last log lines."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                rc = self.proc.returncode if self.proc else None
                raise ServiceError(
                    f"{self.name} exited (code {rc}) before {what}; last lines of {self.log}:\n{tail(self.log)}"
                )
            with contextlib.suppress(Exception):
                if check():
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(
                    f"{self.name} not ready after {timeout:.0f}s ({what}); last lines of {self.log}:\n"
                    f"{tail(self.log)}"
                )
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Graceful signal to the leader, then SIGKILL to the whole group. Idempotent."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers the leader left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self._pump is not None:
            self._pump.join(5)
        if self in _LIVE:
            _LIVE.remove(self)
        return self.proc.returncode


def stop_all() -> None:
    for p in list(reversed(_LIVE)):
        with contextlib.suppress(Exception):
            p.stop(timeout=5)


atexit.register(stop_all)


def reap_orphans(base: Path) -> list[int]:
    """Kill process groups recorded by earlier sessions whose pytest process is gone; remove their dirs."""
    killed: list[int] = []
    if not base.is_dir():
        return killed
    for run in base.iterdir():
        try:
            fields = (run / "owner.pid").read_text().split()
            owner_pid, owner_start = int(fields[0]), fields[1]
        except (OSError, ValueError, IndexError):
            continue
        if _start_time(owner_pid) == owner_start:
            continue  # the owner is alive: not ours to touch
        ledger = run / _LEDGER_NAME
        if ledger.exists():
            for line in ledger.read_text().splitlines():
                pid_s, _, started = line.partition(" ")
                pid = int(pid_s)
                if _start_time(pid) == started:  # same process, not a reused pid
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
                        killed.append(pid)
        if not (run / "keep").exists():
            shutil.rmtree(run, ignore_errors=True)
    return killed


def new_run_dir(base: Path) -> Path:
    """A private directory for this session: configs, logs, sockets. Records the owner for the reaper."""
    base.mkdir(parents=True, exist_ok=True)
    run = base / f"run-{os.getpid()}-{int(time.time() * 1000)}"
    run.mkdir()
    (run / "owner.pid").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    return run


def ledger_path(run: Path) -> Path:
    return run / _LEDGER_NAME
