"""Local processes that are always released: on success, failure, Ctrl-C, and a crashed pytest process.

Three layers, because each covers a case the others miss:
1. ``LocalProcess.stop()`` — the normal path, called by fixture teardown (graceful signal, then SIGKILL of
   the whole process group while its leader is still unreaped, so the group id cannot have been reused).
2. ``stop_all()`` — every process still alive, from ``pytest_unconfigure`` and ``atexit`` (Ctrl-C, errors).
3. ``PR_SET_PDEATHSIG`` (set by ``setpriv --pdeathsig KILL`` in the child, no ``preexec_fn``: forking a threaded
   Python and running Python code before exec can deadlock) + a ledger — if the pytest process (or an xdist
   worker) is SIGKILLed, the kernel kills each direct child; the ledger (pid, start time, process group, uid)
   lets the next session kill the members of each group that outlived it, leader dead or not.

Ledgers are only read from a per-user base directory (``base_dir()``) whose owner and mode are verified: a
shared, world-writable one let anybody plant a ledger naming another user's process. The reaper also refuses
any process whose uid is not ours (or, when root, the service account we started it as).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol, TypeVar

T = TypeVar("T")
_LIVE: list[LocalProcess] = []
_LEDGER_NAME = "pids"
_DIRS_NAME = "dirs"  # private directories outside the run dir (MariaDB's, owned by `mysql`), one path a line
_CGROUPS_NAME = "cgroups"  # cgroup directories this session made (services/isolation.py), one path a line
CGROUP_PREFIX = "wsgi502-"  # every cgroup the harness makes is named so; the reaper removes no other
CGROUP_FS = Path("/sys/fs/cgroup")
_KEPT_NAME = "kept"  # in a session's record: where its --wsgi-keep-dir run dir is
_LEDGERS: dict[Path, Path] = {}  # a kept run dir -> its ledger, which stays in the private base
SERVICE_USERS = ("mysql",)  # accounts a root session runs services as; the reaper may kill those it recorded
PRIVATE_PREFIX = "wsgi502-"  # private directories made next to the base (tempdir) start with this


class CpuPlace(Protocol):
    """Where a started process runs (``services.isolation.Side``): ``spawning()`` wraps the fork so the child
    inherits the CPUs, ``adopt(pid)`` moves it (into a cgroup) right after."""

    def spawning(self) -> contextlib.AbstractContextManager[None]: ...

    def adopt(self, pid: int) -> None: ...

    def adopt_group(self, pgid: int) -> list[int]: ...


class ServiceError(RuntimeError):
    """A service failed to start or answer; the message is one line plus the service's last log lines."""


@functools.cache
def setpriv() -> str | None:
    """util-linux ``setpriv`` when it knows ``--pdeathsig`` (2.33+; Debian 12 has 2.38), else None."""
    binary = find_binary("setpriv")
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return binary if "--pdeathsig" in out else None


def service_account(user: str) -> tuple[int, int]:
    """(uid, gid) of a local account a root session runs a service as; a one-line error when it is missing."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ServiceError(f"running as root needs the unprivileged '{user}' account to run services as "
                           f"(Debian's mariadb-server package creates it): create it, or run pytest as a "
                           f"non-root user") from None
    return pw.pw_uid, pw.pw_gid


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


def wait_until(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    alive: Callable[[], str | None] | None = None,
    *,
    name: str = "service",
    details: Callable[[], str] | None = None,
    on_timeout: Callable[[], object] | None = None,
    interval: float = 0.05,
) -> T:
    """Poll ``check`` until it returns a true value, and return that value: the one readiness loop.

    ``check`` raising counts as "not yet" (its last error is shown on timeout when there is no ``details``).
    ``alive`` is asked before every poll: None while the service runs, else how it ended ("exited (code 1)"),
    which fails at once. ``details`` adds the service's last log lines to either error; ``on_timeout`` runs
    before the timeout error is raised (stop what was started). Every failure is a ``ServiceError``:
    ``<name> <how it ended> before <what>`` or ``<name> not ready after <timeout>s (<what>)``."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        gone = alive() if alive is not None else None
        if gone is not None:
            raise ServiceError(f"{name} {gone} before {what}" + (f"; {details()}" if details else ""))
        try:
            value = check()
        except Exception as exc:
            last, value = str(exc), None
        if value:
            return value
        if time.monotonic() > deadline:
            if on_timeout is not None:
                on_timeout()
            why = details() if details else last or "no answer"
            raise ServiceError(f"{name} not ready after {timeout:.0f}s ({what}); {why}")
        time.sleep(interval)


def copy_stamped(chunks: Iterable[bytes], out: IO[bytes], clock: Callable[[], float] = time.time) -> None:
    """Copy a byte stream (a pipe's lines, an engine's log chunks) to ``out`` line by line, each line prefixed
    with its arrival time (unix seconds, 6 decimals): the one log-line stamp the telemetry parsers read. A read
    error ends the copy; a last line without a newline is written with one."""
    buf = b""
    with contextlib.suppress(Exception):
        for chunk in chunks:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            now = clock()
            for line in lines:
                out.write(b"%.6f " % now + line + b"\n")
    if buf:
        out.write(b"%.6f " % clock() + buf + b"\n")


def start_time(pid: int) -> str | None:
    """A process's start time (clock ticks after boot, as text) from /proc, or None when it is gone: with the
    pid it names one process for good (pids are reused, pid + start time are not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]; index 19 is the start time."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _uids(pid: int) -> tuple[int, int] | None:
    """(real, effective) uid of a process, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                real, effective = line.split()[1:3]
                return int(real), int(effective)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _allowed_uids(recorded: int) -> set[int]:
    """Whose processes the reaper may kill: ours; when root, also a service account the ledger recorded."""
    allowed = {os.geteuid()}
    if os.geteuid() == 0:
        for user in SERVICE_USERS:
            with contextlib.suppress(KeyError):
                if pwd.getpwnam(user).pw_uid == recorded:
                    allowed.add(recorded)
    return allowed


def group_members(pgid: int, leader_start: int, allowed: set[int]) -> list[int]:
    """The live members of process group ``pgid`` that we may kill: the group is the one we recorded (its
    leader, if it still exists, has the recorded start time; a pid stays allocated while its group has
    members, so a leaderless group cannot be a reused id), each member started no earlier than the leader
    and runs as an allowed uid. Anything else is not ours: empty list, or that member left out."""
    if pgid <= 1:
        return []
    leader = _stat_fields(pgid)
    if leader is not None and (len(leader) < 20 or leader[19] != str(leader_start)):
        return []  # pid reused by another process: the recorded group is gone
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = _stat_fields(pid)
        if fields is None or len(fields) < 20 or fields[2] != str(pgid) or fields[0] in ("Z", "X"):
            continue
        try:
            if int(fields[19]) < leader_start:
                continue
        except ValueError:
            continue
        uids = _uids(pid)
        if uids is not None and uids[0] in allowed and uids[1] in allowed:
            members.append(pid)
    return members


def _kill_members(pgid: int, leader_start: int, allowed: set[int]) -> list[int]:
    killed = []
    for pid in group_members(pgid, leader_start, allowed):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


class LocalProcess:
    """One service process in its own session and process group, killed with pytest (``setpriv --pdeathsig``)."""

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
        user: str | None = None,
        place: CpuPlace | None = None,
    ) -> None:
        self.name, self.argv, self.log, self.cwd = name, list(argv), log, cwd
        self.place = place  # CPU isolation (services/isolation.py): None runs it wherever this process may
        self.env = dict(env) if env is not None else None
        self.stop_signal = stop_signal
        self.ledger = ledger
        self.stamp = stamp  # prefix every output line with its arrival time (unix s, 6 decimals)
        self.user = user  # run as this account (root sessions only, needs setpriv): see service_account()
        self.stop_sent_at: float | None = None  # time.time() when stop() sent the graceful signal
        self._pump: threading.Thread | None = None
        self._start: int | None = None  # the leader's start time (clock ticks after boot), for group checks
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _command(self) -> tuple[list[str], int]:
        """The argv to exec (behind setpriv when there is one) and the uid the process will run as."""
        wrapper = setpriv()
        uid = os.geteuid()
        if self.user is not None and os.geteuid() == 0:
            if wrapper is None:
                raise ServiceError(f"{self.name}: running it as '{self.user}' needs setpriv (util-linux)")
            uid, gid = service_account(self.user)
            # setpriv changes the ids first and sets the death signal last (a later id change would clear it)
            return [wrapper, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--pdeathsig", "KILL", "--",
                    *self.argv], uid
        if wrapper is None:  # no death signal: stop_all() and the ledger still cover a crashed session
            return list(self.argv), uid
        return [wrapper, "--pdeathsig", "KILL", "--", *self.argv], uid

    def _check_runnable(self) -> None:
        """Behind setpriv a missing program is an exit 127 later, not an OSError now: keep the early, clear error."""
        target = self.argv[0] if self.argv else ""
        if os.sep in target:
            path: str | None = str(Path(self.cwd or ".") / target) if not os.path.isabs(target) else target
        else:
            path = shutil.which(target, path=(self.env if self.env is not None else os.environ).get("PATH"))
        if not target or path is None or not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise ServiceError(f"{self.name}: cannot run {target or '(empty command)'}: not an executable file")

    def _niced(self, argv: list[str]) -> list[str]:
        """``nice -n K argv`` when the process goes to a side of mode nice: the child starts at the side's
        niceness from its first instruction. ``adopt`` alone raced the uid switch: renicing a process of another
        user (mariadbd under setpriv, as ``mysql``) needs CAP_SYS_NICE, which root in an unprivileged container
        lacks, so MariaDB stayed at nice 0 there. ``nice -n`` is relative: K is the side's value minus this
        thread's own (the outside may run at -5); and the side's ``adopt`` is then skipped, since a renice landing
        before ``nice`` runs would be added to (seen: 10 + 15 = 19)."""
        want = getattr(self.place, "nice", 0) if self.place is not None and getattr(self.place, "active", False) else 0
        tool = shutil.which("nice") if want else None
        if not want or tool is None:
            return argv
        return [tool, "-n", str(want - os.getpriority(os.PRIO_PROCESS, 0)), *argv]

    def start(self) -> LocalProcess:
        self._check_runnable()
        argv, uid = self._command()
        prefixed = self._niced(argv)
        niced = prefixed is not argv  # started at the side's niceness: no renice after (it would race)
        argv = prefixed
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            try:
                # note: the death signal fires when the *thread* that started the child exits: start services
                # from a thread that lives as long as they do (pytest's main thread)
                with self.place.spawning() if self.place is not None else contextlib.nullcontext():
                    self.proc = subprocess.Popen(
                        argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE if self.stamp else out,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                    )
            except OSError as exc:
                raise ServiceError(f"{self.name}: cannot run {argv[0]}: {exc.strerror}") from None
        if self.place is not None and not niced:
            try:  # before it can fork workers (it is still starting its interpreter): they follow it
                self.place.adopt(self.proc.pid)
            except ServiceError:
                self.proc.kill()
                self.proc.wait(5)
                raise
        started = start_time(self.proc.pid)
        self._start = int(started) if started and started.isdigit() else None
        if self.stamp:
            self._pump = threading.Thread(target=self._stamp_lines, daemon=True, name=f"wsgi502-log-{self.name}")
            self._pump.start()
        _LIVE.append(self)
        if self.ledger is not None:
            with open(self.ledger, "a") as fh:  # pid, start time, process group (= pid: a new session), uid
                fh.write(f"{self.proc.pid} {started} {self.proc.pid} {uid}\n")
        return self

    def _stamp_lines(self) -> None:
        """Copy the child's output to its log, each line prefixed with when it arrived. Servers stamp their
        lines in whole seconds (gunicorn) or late (uWSGI's log-master stamps when the master drains its
        pipe, seen 2 s after the event); arrival time is what attribution needs."""
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log, "ab", buffering=0) as out:
            copy_stamped(self.proc.stdout, out)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` until it is true; fail fast if the process exits, with its last log lines."""
        wait_until(check, timeout, what, name=self.name, alive=self._gone, details=self._log_tail,
                   on_timeout=self.stop)

    def _gone(self) -> str | None:
        return self.exited()

    def exited(self) -> str | None:
        """None while the process runs; else how it ended, once its last output is in the log (the stamping
        thread may still be copying it: seen with CPU isolation, where the child exits on another CPU and the
        harness read an empty log under "exited (code 1)")."""
        if self.alive():
            return None
        if self._pump is not None:
            self._pump.join(2)
        return f"exited (code {self.proc.returncode if self.proc else None})"

    def _log_tail(self) -> str:
        return f"last lines of {self.log}:\n{tail(self.log)}"

    @contextlib.contextmanager
    def _unreaped(self) -> Iterator[bool]:
        """Hold off reaping of the leader (Popen's own waitpid lock) and say whether it is still unreaped: then
        its pid, and so its group id, cannot have been reused, and signalling them is safe."""
        assert self.proc is not None
        lock = getattr(self.proc, "_waitpid_lock", None) or self._lock
        with lock:
            yield self.proc.returncode is None and not self._reaped_elsewhere()

    def _reaped_elsewhere(self) -> bool:
        assert self.proc is not None
        try:
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True  # not our child any more (someone else's waitpid): the pid may be anybody's now
        return False

    def _exited(self) -> bool:
        """Whether the leader has exited, without reaping it (WNOWAIT): a zombie still holds its pid."""
        assert self.proc is not None
        if self.proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with self._unreaped() as safe:
            if safe:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Graceful signal to the leader, then SIGKILL to the whole group. Idempotent.

        The group is killed while the leader is unreaped (alive or a zombie): once reaped, its pid can be
        handed to an unrelated process that may lead a group of its own. If something else reaped it first,
        only the verified members of the recorded group are killed."""
        if self.proc is None:
            return None
        pid = self.proc.pid
        if not self._exited():
            self.stop_sent_at = time.time()
            self.signal(self.stop_signal)
            deadline = time.monotonic() + timeout
            while not self._exited() and time.monotonic() < deadline:
                time.sleep(0.02)
        with self._unreaped() as safe:
            if safe:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # workers the leader left behind
            elif self._start is not None:
                _kill_members(pid, self._start, {os.geteuid(), *_allowed_uids(self._uid())})
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self._pump is not None:
            self._pump.join(5)
        if self in _LIVE:
            _LIVE.remove(self)
        return self.proc.returncode

    def _uid(self) -> int:
        if self.user is not None and os.geteuid() == 0:
            with contextlib.suppress(ServiceError):
                return service_account(self.user)[0]
        return os.geteuid()


def stop_all() -> None:
    for p in list(reversed(_LIVE)):
        with contextlib.suppress(Exception):
            p.stop(timeout=5)


atexit.register(stop_all)


def _check_private(path: Path) -> None:
    """Refuse a directory anybody else could have written to: a symlink, not ours, or group/other bits set."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise ServiceError(f"cannot inspect {path}: {exc.strerror}") from None
    hint = "remove it, or point TMPDIR at a directory only you can write"
    if stat.S_ISLNK(st.st_mode):
        raise ServiceError(f"{path} is a symlink: refusing to keep session files there; {hint}")
    if not stat.S_ISDIR(st.st_mode):
        raise ServiceError(f"{path} is not a directory: refusing to keep session files there; {hint}")
    if st.st_uid != os.geteuid():
        raise ServiceError(f"{path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()}): refusing to "
                           f"trust it; {hint}")
    if st.st_mode & 0o077:
        raise ServiceError(f"{path} has mode {stat.S_IMODE(st.st_mode):04o}, open to other users: refusing to "
                           f"trust it; chmod 700 {path}, or {hint}")


def private_base(base: Path) -> Path:
    """``base`` created mode 0700 if missing, then verified: ours, not a symlink, no group/other bits."""
    base.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ServiceError(f"cannot create {base}: {exc.strerror}") from None
    _check_private(base)
    return base


def base_dir() -> Path:
    """This user's base for session run dirs and ledgers: ``<tempdir>/pytest-wsgi502-<euid>``, 0700, verified."""
    return private_base(Path(tempfile.gettempdir()) / f"pytest-wsgi502-{os.geteuid()}")


def _ledger_entries(ledger: Path) -> Iterator[tuple[int, int, int, int]]:
    """(pid, start time, process group, uid) per line; old two-field lines mean group = pid and uid = ours.
    A blank or garbled line is skipped, never raised on."""
    try:
        text = ledger.read_text(errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        parts = line.split()
        try:
            pid, started = int(parts[0]), int(parts[1])
            pgid = int(parts[2]) if len(parts) > 2 else pid
            uid = int(parts[3]) if len(parts) > 3 else os.geteuid()
        except (ValueError, IndexError):
            continue
        if pid > 1 and pgid > 1 and started >= 0:
            yield pid, started, pgid, uid


def _remove_private_dirs(listing: Path) -> None:
    """Remove the private directories a session recorded (only ``<tempdir>/wsgi502-*`` real directories)."""
    try:
        lines = listing.read_text(errors="replace").splitlines()
    except OSError:
        return
    tmp = Path(tempfile.gettempdir())
    for line in lines:
        path = Path(line.strip())
        if not line.strip() or path.parent != tmp or not path.name.startswith(PRIVATE_PREFIX):
            continue
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) and st.st_uid in _allowed_uids(st.st_uid):  # ours or our service's
                shutil.rmtree(path, ignore_errors=True)


def record_cgroup(ledger: Path, group: Path) -> None:
    """Note a cgroup this session made, next to its ledger, before anything is moved into it: a crashed
    session's groups are removed by ``reap_orphans``."""
    with open(ledger.parent / _CGROUPS_NAME, "a") as fh:
        fh.write(f"{group}\n")


def remove_cgroup(group: Path, wait: float = 2.0) -> bool:
    """rmdir a cgroup the harness made (under /sys/fs/cgroup, named ``wsgi502-*``); True when it is gone. A group
    still holding processes (just killed, not yet exited) is retried for ``wait`` seconds; any other path is
    refused (False) without touching it."""
    try:
        real = Path(os.path.realpath(group))
    except OSError:
        return False
    if CGROUP_FS not in real.parents or not real.name.startswith(CGROUP_PREFIX):
        return False
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(real)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def _remove_cgroups(listing: Path) -> None:
    with contextlib.suppress(OSError):
        for line in listing.read_text(errors="replace").splitlines():
            if line.strip():
                remove_cgroup(Path(line.strip()))


def reap_orphans(base: Path) -> list[int]:
    """Kill the process groups recorded by earlier sessions whose pytest process is gone; remove their dirs.

    ``base`` must be private (``private_base``): a ServiceError otherwise. Only processes of our uid (or, when
    root, a service account the ledger recorded) that belong to the recorded group are killed."""
    killed: list[int] = []
    if not os.path.lexists(base):
        return killed
    _check_private(base)
    for run in sorted(base.iterdir()):
        try:
            st = os.lstat(run)
            fields = (run / "owner.pid").read_text().split()
            owner_pid, owner_start = int(fields[0]), fields[1]
        except (OSError, ValueError, IndexError):
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            continue
        if start_time(owner_pid) == owner_start:
            continue  # the owner is alive: not ours to touch
        for _pid, started, pgid, uid in _ledger_entries(run / _LEDGER_NAME):
            killed += _kill_members(pgid, started, _allowed_uids(uid))
        _remove_private_dirs(run / _DIRS_NAME)
        _remove_cgroups(run / _CGROUPS_NAME)  # after the kills: a group is removable once its processes exited
        if not (run / "keep").exists():  # a kept session's files live elsewhere (``kept``): only its record is here
            shutil.rmtree(run, ignore_errors=True)
    return killed


def new_run_dir(base: Path, keep: Path | None = None) -> Path:
    """A private directory for this session: configs, logs, sockets. Its record (owner, ledger) is in ``base``
    (made private); with ``keep`` the run dir is made there instead and only the record stays in ``base``,
    so the reaper still finds a crashed kept session's processes."""
    private_base(base)
    name = f"run-{os.getpid()}-{int(time.time() * 1000)}"
    record = base / name
    record.mkdir(mode=0o700)
    owner = f"{os.getpid()} {start_time(os.getpid())}\n"
    (record / "owner.pid").write_text(owner)
    if keep is None:
        return record
    run = keep / name
    run.mkdir(parents=True)
    os.chmod(run, 0o700)  # sockets and configs live here too: other users must not reach them
    (run / "owner.pid").write_text(owner)  # for people reading the kept files: which process wrote them
    (record / _KEPT_NAME).write_text(f"{run}\n")
    _LEDGERS[run] = record / _LEDGER_NAME
    return run


def release_run_dir(run: Path) -> None:
    """End of session: remove the run dir, or, for a kept one, only its record in the base."""
    ledger = _LEDGERS.pop(run, None)
    target = ledger.parent if ledger is not None else run
    _remove_private_dirs(target / _DIRS_NAME)
    _remove_cgroups(target / _CGROUPS_NAME)  # normally removed already by Isolation.release()
    shutil.rmtree(target, ignore_errors=True)


def ledger_path(run: Path) -> Path:
    """Where this session records its processes: in the run dir, or for a kept run dir in its private record."""
    return _LEDGERS.get(run, run / _LEDGER_NAME)


def private_tmpdir(ledger: Path | None, owner: str | None = None, prefix: str = "tmp") -> Path:
    """A new ``<tempdir>/wsgi502-<prefix>-XXXX`` directory, mode 0700, owned by ``owner`` when given (root sessions: a
    service account that cannot enter our 0700 base), recorded next to the ledger so the reaper removes it
    if this session dies. Short on purpose: unix socket paths must stay under ~100 bytes."""
    path = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{prefix}-", dir=tempfile.gettempdir()))
    if ledger is not None:
        with open(ledger.parent / _DIRS_NAME, "a") as fh:
            fh.write(f"{path}\n")
    if owner is not None and os.geteuid() == 0:
        uid, gid = service_account(owner)
        os.chown(path, uid, gid)
    return path


_PORT, _STATE = re.compile(r"[0-9A-Fa-f]{4}"), re.compile(r"[0-9A-Fa-f]{2}")


def parse_proc_net_tcp(text: str) -> list[tuple[int, int, int]]:
    """``(local port, state, inode)`` for each socket line of ``/proc/net/tcp`` or ``tcp6`` (state as the kernel
    numbers it: 1 established, 10 listen, ...). The header and any line not in that shape are skipped."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or not fields[0].endswith(":"):
            continue
        port, state, inode = fields[1].rpartition(":")[2], fields[3], fields[9]
        if _PORT.fullmatch(port) and _STATE.fullmatch(state) and inode.isascii() and inode.isdigit():
            out.append((int(port, 16), int(state, 16), int(inode)))
    return out


_LISTEN = 10


def held_connections(pid: int, port: int) -> int:
    """How many TCP connections on local ``port`` process ``pid`` holds open (its listening socket not counted);
    0 once it has gone or cannot be inspected."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(fd.path)
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{pid}/net/{table}").read_text()
            count += sum(1 for p, state, inode in parse_proc_net_tcp(text)
                         if p == port and state != _LISTEN and inode in inodes)
    return count


def wait_connections_closed(pid: int, port: int, timeout: float) -> int:
    """Wait up to ``timeout`` s for ``pid`` to close its connections on ``port``; how many it still holds."""
    deadline = time.monotonic() + timeout
    while (held := held_connections(pid, port)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return held
