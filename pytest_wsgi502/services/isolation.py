"""CPU isolation on the local backend: the "outside world" (the load engine, the ELB-like proxy) on its own
CPUs, the servers under test and MariaDB on the rest, so the generator is not starved by what it measures.

In production the load balancer and the clients are other machines; on one box the server under test (16
uWSGI workers, MariaDB) otherwise takes the engine's CPU and the cell is refused as ``generator_bound``.

``layout()`` is the pure part: which CPUs go where, from the CPUs this process may use
(``os.sched_getaffinity(0)``): 1 CPU no split (said in the reason); 2 CPUs 1 outside / 1 inside; N CPUs
ceil(N / 4) outside (at least 1; ``outside=`` overrides), the rest inside.

``start(mode)`` applies it. Modes: ``cgroup`` (a split through cgroups or a one-line error), ``affinity`` (a split
through ``sched_setaffinity``), ``nice`` (no split: every CPU for everyone, the inside at nice 10 and, as root, the
outside at nice -5), ``off``, and ``auto``: a split by the best mechanism available (below) from 2 CPUs up; 1 CPU
off (nothing to split; says so); xdist workers that cannot each get 2 CPUs weigh (``nice``).

Measured here (2-core AMD EPYC VM; ``python -m pytest_wsgi502.bench.isolation``; 10 s cells, closed loop 32
users, runs interleaved A B C C B A; every number in issue 14's note):

- quiet machine, uwsgi-2w / uwsgi-16w / gunicorn-sync: a 1/1 split (cgroup-v1) leaves the server under test one
  core: req/s x0.89 / x0.62 / x0.72 of off (3 runs each) and x0.88 / x0.64 / x0.81 (2 runs each), gunicorn-sync
  p99 x2.1-2.5, req/s CV no lower (2.2-11.9 % against 2.6-10.3 %); ``nice`` x0.98-1.13 of off. No run of any mode
  was generator-bound (loop lag p99 <= 18.6 ms off, <= 4.5 ms split, <= 2.0 ms nice).
- busy machine (two foreign busy loops, issue 14's newcomer case), uwsgi-16w: generator-bound (starved: 3.7-6.5 s
  of 10 s waiting for a CPU) in 3 of 4 runs off, 2 of 6 with ``nice`` (1/4 inside-only, 1/2 with the outside at
  -5), 0 of 4 with the split (loop lag p99 3.8-4.6 ms; req/s 510-550, x0.77 of off).

The split is the default because a starved engine makes the verdict invalid, which is what issue 14 is about;
its price is the server's capacity on a 2-core box (the table's req/s are those of a 1-core server). ``nice``
keeps the capacity and protects the engine from the server under test, less so from other work on the machine.
A 2-core box cannot tell 1/4 from 1/3 of a larger machine: the N > 2 rule is the engine (one event loop, about a
core at most) plus nginx (a fraction of one at these rates), and is configurable.

Split mechanisms, best first:

1. ``cgroup-v1``: a cpuset group per side under this process's own cpuset cgroup (root only; nothing is
   written to that cgroup or its ancestors), removed (rmdir) at the end;
2. ``cgroup-v2``: the same on the unified hierarchy, when cpuset can be enabled in our own
   ``cgroup.subtree_control`` (GitHub's runners as root; not in a cgroup that holds processes itself);
3. ``affinity``: ``os.sched_setaffinity`` (unprivileged containers): no quota, and a server could undo it.

Under pytest-xdist each worker runs its own MariaDB, servers and engine: with W workers and at least 2W CPUs
worker i splits its own slice of the CPUs; with fewer, ``auto`` weighs (nice, over every CPU:
each worker's inside yields to every engine) and a split mode is off for every worker (the reason says how many
workers would fit).

Placing a process: the thread that starts it switches its own affinity to the side's CPUs for the fork (a
child inherits the forking thread's affinity, so the server's master and every worker it forks are on the
right CPUs from their first instruction, with no ``preexec_fn``), then the new pid is moved into the side's
cgroup (``cgroup.procs``; its children follow it). The harness process itself (the engine's event loop, or
the engine processes it spawns, which inherit it) runs on the outside CPUs by affinity, restored at release:
the harness never has to move itself between cgroups.

A crashed run's groups are listed in the run's record (``services.process.record_cgroup``) and removed by
``reap_orphans``.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_wsgi502.config.settings import ISOLATION_MODES
from pytest_wsgi502.metrics.machine import parse_probe
from pytest_wsgi502.services.process import CGROUP_PREFIX, ServiceError, record_cgroup, remove_cgroup, stop_all

MODES = ISOLATION_MODES  # the --wsgi-isolation values (config/settings.py validates them)
NICE = 10  # mode "nice": the inside's niceness (CFS weight 110 against the engine's 1024)
OUTSIDE_NICE = -5  # mode "nice", root only: the engine and the proxy ahead of other work on the machine
AUTO_SPLIT_MIN = 2  # auto splits from this many CPUs up (measured on 2: see the module docstring)
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Layout:
    """Which CPUs the outside world (engine, proxy) and the inside (servers under test, MariaDB) get."""

    outside: tuple[int, ...]
    inside: tuple[int, ...]
    reason: str = ""  # why there is no split (empty when there is one)

    @property
    def split(self) -> bool:
        return bool(self.outside) and bool(self.inside) and not set(self.outside) & set(self.inside)


def layout(cpus: int | Iterable[int], outside: int | None = None) -> Layout:
    """The split of ``cpus`` (a count, meaning CPUs 0..n-1, or the CPU ids this process may use).

    ``outside``: how many CPUs the outside gets (default ceil(N/4), at least 1); the highest-numbered CPUs go
    outside (CPU 0 takes most of the machine's housekeeping). Fewer than 2 CPUs, or an ``outside`` that would
    leave no CPU inside, gives no split (both sides get every CPU) and says why."""
    ids = tuple(range(cpus)) if isinstance(cpus, int) else tuple(sorted(set(cpus)))
    if not ids:
        raise ValueError("layout needs at least one CPU")
    n = len(ids)
    if outside is not None and (not isinstance(outside, int) or isinstance(outside, bool) or outside < 0):
        raise ValueError(f"outside must be a whole number of CPUs >= 0, got {outside!r}")
    if n < 2:
        return Layout(ids, ids, f"1 CPU ({ids[0]}): nothing to split, the engine shares it with the server")
    k = max(1, math.ceil(n / 4)) if outside is None else outside
    if k == 0:
        return Layout(ids, ids, "outside=0: no CPUs set aside for the engine and proxy")
    if k >= n:
        return Layout(ids, ids, f"outside={k} of {n} CPUs leaves none for the servers under test")
    return Layout(outside=ids[n - k:], inside=ids[: n - k])


def xdist_share(cpus: Sequence[int], env: Mapping[str, str]) -> tuple[tuple[int, ...], str]:
    """This xdist worker's CPUs (all of them outside xdist) and what was decided, for the manifest.

    W workers each run their own MariaDB, servers and engine. When the CPUs split into W slices of at least 2,
    worker i gets slice i (contiguous) and isolates inside it; otherwise isolation is off for every worker
    (stacking each worker's inside and outside on the same CPUs would only pretend to isolate)."""
    worker = env.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(env.get("PYTEST_XDIST_WORKER_COUNT", "0"))
        index = int(worker[2:]) if worker.startswith("gw") else -1
    except ValueError:
        count, index = 0, -1
    ids = tuple(sorted(cpus))
    if count <= 1 or index < 0:
        return ids, ""
    if len(ids) < 2 * count:
        return (), (f"xdist: {count} workers on {len(ids)} CPUs cannot each get 2; isolation off for every "
                    f"worker (run with -n {len(ids) // 2 or 1} or fewer to isolate)")
    per = len(ids) // count
    share = ids[index * per:(index + 1) * per]
    return share, f"xdist worker {worker} of {count}: CPUs {_cpulist(share)} of {_cpulist(ids)}"


def _cpulist(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def _thread_affinity(cpus: Iterable[int]) -> None:
    os.sched_setaffinity(0, set(cpus))  # 0: the calling thread (Linux)


def _tasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


@dataclass
class Side:
    """One side of the split: its CPUs and, with a cgroup mechanism, its group directory."""

    name: str
    cpus: tuple[int, ...]
    cgroup: Path | None = None
    active: bool = True  # False: placement is a no-op (isolation off)
    nice: int = 0  # > 0: the side's processes run at this niceness (mode "nice": a weight, not CPUs of its own)
    extra: tuple[Path, ...] = ()  # cgroup v1: groups of other hierarchies a process joins too (a cell's cpu quota)

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """Around a fork/exec in this thread: the child inherits this side's CPUs from its first instruction."""
        if not self.active or self.nice:
            yield
            return
        before = os.sched_getaffinity(0)
        _thread_affinity(self.cpus)
        try:
            yield
        finally:
            _thread_affinity(before)

    def adopt(self, pid: int) -> None:
        """Move a started process (and every thread of it) to this side; children it forks later follow it.
        A process that already exited is no error."""
        if not self.active:
            return
        if self.nice:
            for tid in _tasks(pid) or [pid]:  # Linux niceness is per thread; threads and children made later inherit
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.setpriority(os.PRIO_PROCESS, tid, self.nice)
            return
        if self.cgroup is not None:
            for group in (self.cgroup, *self.extra):
                try:
                    (group / "cgroup.procs").write_text(f"{pid}\n")
                except ProcessLookupError:
                    return
                except OSError as exc:
                    if exc.errno != 3:  # ESRCH: gone already
                        raise ServiceError(f"cannot move pid {pid} into {group}: {exc.strerror}") from None
                    return
            return
        for tid in _tasks(pid) or [pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(tid, set(self.cpus))

    def adopt_group(self, pgid: int) -> list[int]:
        """Move every live member of process group ``pgid`` (a server's master and workers) here; the pids."""
        moved = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 2 and fields[2] == str(pgid):
                self.adopt(int(entry.name))
                moved.append(int(entry.name))
        return moved


class Isolation:
    """The session's split, applied: ``inside``/``outside`` sides, ``describe()`` for the manifest, ``release()``.

    Use ``start()``; ``release()`` is idempotent and also runs from ``atexit`` through the caller's teardown."""

    def __init__(self, requested: str, mechanism: str, lay: Layout, note: str, inside: Side, outside: Side,
                 groups: Sequence[Path] = ()) -> None:
        self.requested, self.mechanism, self.layout, self.note = requested, mechanism, lay, note
        self.inside, self.outside = inside, outside
        self.groups = list(groups)
        self._saved: dict[int, set[int]] = {}
        self._saved_nice: dict[int, int] = {}
        self._lock = threading.Lock()
        self.released = False
        self.tag = ""  # cgroup mechanisms: the name part of this session's groups (start() sets it)
        self.base: Path | None = None  # cgroup mechanisms: our own cgroup, the parent of the groups
        self.ledger: Path | None = None
        self._quotas = 0
        if self.groups:
            _LIVE.append(self)

    @property
    def active(self) -> bool:
        return self.mechanism != "off"

    def enter_outside(self) -> None:
        """Put this (harness) process, every thread of it, on the outside CPUs; threads and engine processes
        started from here on inherit it. Undone by ``release()``."""
        if not self.active or not self.outside.active:
            return
        with self._lock:
            for tid in _tasks(os.getpid()):
                with contextlib.suppress(OSError):
                    if self.outside.nice:
                        self._saved_nice.setdefault(tid, os.getpriority(os.PRIO_PROCESS, tid))
                        os.setpriority(os.PRIO_PROCESS, tid, self.outside.nice)
                        continue
                    self._saved.setdefault(tid, os.sched_getaffinity(tid))
                    os.sched_setaffinity(tid, set(self.outside.cpus))

    def probe_inside(self, timeout: float = 30.0) -> float | None:
        """The machine probe (``metrics.machine.probe_ms``) on the servers' CPUs, in a short child process placed
        there like a server; None when the split gives the servers no CPUs of their own (off, nice) or the child
        did not answer. The child is gone when this returns, whatever happened."""
        if not self.active or not self.inside.active or self.inside.nice \
                or set(self.inside.cpus) == set(self.outside.cpus):
            return None
        code = "from pytest_wsgi502.metrics.machine import probe_ms; print(probe_ms())"
        with self.inside.spawning():
            proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
        try:
            self.inside.adopt(proc.pid)  # it is still starting its interpreter: the loop runs there
            out, _ = proc.communicate(timeout=timeout)
        except (ServiceError, subprocess.TimeoutExpired):
            return None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return parse_probe(out) if proc.returncode == 0 else None

    def quota(self, cpus: float, name: str = "cell") -> tuple[Side | None, str]:
        """A side for one server limited to ``cpus`` CPUs of CPU time (the matrix key ``cpus``, as Docker's
        ``--cpus``: a CFS bandwidth quota of ``cpus`` x 100 ms every 100 ms) on the inside CPUs, and a line saying
        what enforces it. With no cgroup mechanism the limit cannot be enforced: ``(None, why)``.

        cgroup v1: a group in the ``cpu`` hierarchy (``cpu.cfs_quota_us``) that the server joins besides the inside
        cpuset group. cgroup v2: a sibling of the inside group with its CPUs and ``cpu.max``. Recorded for the
        reaper before anything joins; ``release_quota`` removes it after the server stopped (``release`` too)."""
        quota_us, period_us = quota_settings(cpus)
        if not self.mechanism.startswith("cgroup") or self.base is None or self.inside.cgroup is None:
            return None, (f"cpus = {cpus:g} not enforced: isolation is {self.mechanism}, a CPU quota needs a cgroup "
                          "(run as root with --wsgi-isolation=auto or cgroup)")
        self._quotas += 1
        group_name = f"{CGROUP_PREFIX}{self.tag}-{_slug(name)}-{self._quotas}"
        try:
            if self.mechanism == "cgroup-v1":
                cpu_base = own_cgroup_dir(1, Path("/proc/self/cgroup").read_text(),
                                          Path("/proc/self/mountinfo").read_text(), controller="cpu")
                if cpu_base is None or not cpu_base.is_dir():
                    return None, f"cpus = {cpus:g} not enforced: no cgroup v1 cpu controller mounted"
                group = self._new_group(cpu_base / group_name)
                _write(group / "cpu.cfs_period_us", str(period_us))
                _write(group / "cpu.cfs_quota_us", str(quota_us))
                side = Side("inside", self.inside.cpus, self.inside.cgroup, extra=(group,))
                how = f"cgroup-v1 cpu.cfs_quota_us={quota_us} cpu.cfs_period_us={period_us}"
            else:
                if "cpu" not in (self.base / "cgroup.subtree_control").read_text().split():
                    _write(self.base / "cgroup.subtree_control", "+cpu")
                group = self._new_group(self.base / group_name)
                _write(group / "cpuset.cpus", _cpulist(self.inside.cpus))
                _write(group / "cpu.max", f"{quota_us} {period_us}")
                side = Side("inside", self.inside.cpus, group)
                how = f"cgroup-v2 cpu.max={quota_us} {period_us}"
        except OSError as exc:
            return None, f"cpus = {cpus:g} not enforced: {exc.strerror or exc}"
        return side, f"{cpus:g} CPUs of time on CPU {_cpus(self.inside.cpus)} ({how})"

    def _new_group(self, group: Path) -> Path:
        group.mkdir()
        if self.ledger is not None:
            record_cgroup(self.ledger, group)
        self.groups.append(group)
        return group

    def release_quota(self, side: Side | None) -> bool:
        """Remove a quota side's own group once its server has stopped; True when gone (else ``release`` or the
        reaper retries it)."""
        if side is None:
            return True
        own = [g for g in (*side.extra, side.cgroup) if g is not None and g not in (self.inside.cgroup,)]
        gone = all([remove_cgroup(g) for g in own])
        if gone:
            self.groups = [g for g in self.groups if g not in own]
        return gone

    def release(self) -> list[str]:
        """Restore this process's CPUs and remove the groups (the processes in them must have been stopped).
        Returns the groups that could not be removed (left to the orphan reaper: they stay recorded)."""
        with self._lock:
            if self.released:
                return []
            for tid, cpus in self._saved.items():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(tid, cpus)
            self._saved.clear()
            for tid, nice in self._saved_nice.items():
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
            self._saved_nice.clear()
            # released only once the removal has run: a second Ctrl-C during it (remove_cgroup waits up to 2 s for
            # a group's killed processes to exit) leaves this isolation live, and atexit's release_all tries again
            # (seen: a double Ctrl-C 1.5 s apart left an empty inside group whose record went with the run dir)
            left = [str(g) for g in self.groups if not remove_cgroup(g)]
            self.released = True
            if self in _LIVE:
                _LIVE.remove(self)
        return left

    def describe(self) -> dict[str, Any]:
        """For the manifest: what was asked, what was used, which CPUs went where, and why. The cgroup paths
        (``groups``) are a run-local allocation like a port: left out, so two runs describe alike."""
        return {
            "requested": self.requested,
            "mechanism": self.mechanism,
            "outside": list(self.outside.cpus) if self.active else [],
            "inside": list(self.inside.cpus) if self.active else [],
            "cpus": sorted(set(self.outside.cpus) | set(self.inside.cpus)),
            "placed": {"outside": ["load engine", "nginx proxy"], "inside": ["server under test", "mysqld"]}
            if self.active else {},
            "inside_nice": self.inside.nice,
            "outside_nice": self.outside.nice,
            "note": self.note,
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),  # under xdist each worker has its own split
        }


_LIVE: list[Isolation] = []


def may_lower_nice(to: int, status: str | None = None) -> bool:
    """Whether this process may set a thread's nice value down to ``to``: with CAP_SYS_NICE (bit 23 of CapEff in
    /proc/self/status), or when RLIMIT_NICE allows it (ceiling 20 - rlim_cur). Root in an unprivileged container
    has no CAP_SYS_NICE: there setpriority(-5) fails, and the split must not claim it (seen in the newcomer check:
    the manifest said outside at nice -5 while the engine ran at 0). ``status``: the file's text, for tests."""
    import resource

    try:
        text = status if status is not None else Path("/proc/self/status").read_text()
        caps = next(int(line.split()[1], 16) for line in text.splitlines() if line.startswith("CapEff:"))
        if caps >> 23 & 1:
            return True
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    soft = resource.getrlimit(resource.RLIMIT_NICE)[0]
    return soft == resource.RLIM_INFINITY or 20 - soft <= to


def _nice(requested: str, why: str, cpus: Sequence[int]) -> Isolation:
    """Every CPU for everyone, the inside at nice ``NICE``: when the engine or the proxy wants a CPU, CFS gives it
    to them first (weight 1024 against 110), and the servers keep every cycle the outside does not use. As root the
    outside (this process, the engine processes it starts, nginx) also runs at ``OUTSIDE_NICE``, ahead of other
    work on the machine (weight 3121 against 1024)."""
    ids = tuple(sorted(cpus))
    up = OUTSIDE_NICE if may_lower_nice(OUTSIDE_NICE) else 0
    if not up and os.geteuid() == 0:
        why += " (root without CAP_SYS_NICE, e.g. in a container: the outside stays at nice 0)"
    iso = Isolation(requested, "nice", Layout(ids, ids), f"{why}; inside at nice {NICE}, outside at nice {up}",
                    Side("inside", ids, nice=NICE), Side("outside", ids, active=bool(up), nice=up))
    iso.enter_outside()
    return iso


def release_all() -> list[str]:
    """Release every isolation still held (Ctrl-C, an error before teardown): stop the services first, since a
    cgroup can only be removed once empty. Returns the groups left to the reaper (they stay recorded)."""
    left: list[str] = []
    if _LIVE:
        stop_all()
    for iso in list(_LIVE):
        left += iso.release()
    return left


atexit.register(release_all)  # registered after process.stop_all, so it runs first and stops services itself


def off(requested: str = "off", note: str = "", cpus: Iterable[int] | None = None) -> Isolation:
    """No isolation: both sides are every CPU and placement does nothing."""
    ids = tuple(sorted(cpus if cpus is not None else os.sched_getaffinity(0)))
    return Isolation(requested, "off", Layout(ids, ids, note), note,
                     Side("inside", ids, active=False), Side("outside", ids, active=False))


def _own_cgroups(text: str) -> dict[str, str]:
    """/proc/self/cgroup as {controller or '' (v2): path}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctrl in parts[1].split(",") if parts[1] else [""]:
                out[ctrl] = parts[2]
    return out


def _mounts(text: str) -> list[tuple[str, str, str, str]]:
    """/proc/self/mountinfo as (mount root, mount point, fstype, super options) of cgroup filesystems."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) >= 5 and len(rf) >= 3 and rf[0] in ("cgroup", "cgroup2"):
            out.append((lf[3], lf[4], rf[0], rf[2]))
    return out


def own_cgroup_dir(version: int, cgroup_text: str, mountinfo_text: str, controller: str = "cpuset") -> Path | None:
    """The directory of this process's own cgroup of ``controller`` (v1) or its unified cgroup (v2), or None."""
    own = _own_cgroups(cgroup_text)
    path = own.get(controller if version == 1 else "")
    if path is None:
        return None
    for root, point, fstype, opts in _mounts(mountinfo_text):
        if version == 1 and (fstype != "cgroup" or controller not in opts.split(",")):
            continue
        if version == 2 and fstype != "cgroup2":
            continue
        rel = path if root == "/" else (path[len(root):] if path.startswith(root) else None)
        if rel is None:
            continue
        return Path(point) / rel.lstrip("/")
    return None


def _write(path: Path, text: str) -> None:
    path.write_text(text)


QUOTA_PERIOD_US = 100_000  # Docker's --cpus uses the same 100 ms CFS period


def quota_settings(cpus: float, period_us: int = QUOTA_PERIOD_US) -> tuple[int, int]:
    """(quota, period) in microseconds for ``cpus`` CPUs of CPU time: ``cpus`` x period, at least the kernel's
    1 ms minimum. ``cpus`` must be finite and > 0 (the matrix checks it)."""
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not math.isfinite(cpus) or cpus <= 0:
        raise ValueError(f"cpus must be a number > 0, got {cpus!r}")
    return max(1000, round(cpus * period_us)), period_us


def _slug(name: str) -> str:
    """A cell name as part of a cgroup directory name (the matrix allows [a-z0-9_.-]; anything else becomes _)."""
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)[:60] or "cell"


def _make_groups(version: int, base: Path, lay: Layout, tag: str, ledger: Path | None) -> tuple[Path, Path]:
    """Two sibling groups ``wsgi502-<tag>-inside/outside`` under ``base`` (our own cgroup): created, recorded for
    the reaper before anything is moved in, and given their CPUs. Removed again on any failure."""
    made: list[Path] = []
    try:
        if version == 2:
            controllers = (base / "cgroup.controllers").read_text().split()
            if "cpuset" not in controllers:
                raise OSError(0, "cpuset is not available to our cgroup")
            if "cpuset" not in (base / "cgroup.subtree_control").read_text().split():
                _write(base / "cgroup.subtree_control", "+cpuset")  # our own cgroup; EBUSY when it holds processes
        mems = ""
        if version == 1:
            mems = (base / "cpuset.effective_mems").read_text().strip() or (base / "cpuset.mems").read_text().strip()
        groups = []
        for side, cpus in (("inside", lay.inside), ("outside", lay.outside)):
            g = base / f"{CGROUP_PREFIX}{tag}-{side}"
            g.mkdir()
            made.append(g)
            if ledger is not None:
                record_cgroup(ledger, g)
            _write(g / "cpuset.cpus", _cpulist(cpus))
            if version == 1:
                _write(g / "cpuset.mems", mems)
            groups.append(g)
        return groups[0], groups[1]
    except BaseException:
        for g in made:
            remove_cgroup(g)
        raise


def start(mode: str = "auto", *, outside: int | None = None, ledger: Path | None = None,
          env: Mapping[str, str] | None = None, cpus: Iterable[int] | None = None,
          cgroup_text: str | None = None, mountinfo_text: str | None = None) -> Isolation:
    """Choose the split and the mechanism, make the groups, put this process on the outside CPUs.

    ``mode``: auto (best available), cgroup (a cgroup or a one-line ServiceError), affinity, off. ``ledger``: the
    session's ledger (``services.process.ledger_path``): the groups are recorded next to it for the reaper.
    ``env`` (xdist's PYTEST_XDIST_WORKER*) and ``cpus`` default to this process's."""
    if mode not in MODES:
        raise ValueError(f"isolation must be one of {', '.join(MODES)}, got {mode!r}")
    env = os.environ if env is None else env
    allowed = tuple(sorted(cpus if cpus is not None else os.sched_getaffinity(0)))
    if mode == "off":
        return off(mode, "isolation off (asked for)", allowed)
    if mode == "nice":
        return _nice(mode, "asked for", allowed)
    share, xnote = xdist_share(allowed, env)
    if not share:  # xdist workers that cannot each get 2 CPUs: auto weighs instead (nice over every CPU)
        return _nice(mode, xnote, allowed) if mode == "auto" and len(allowed) > 1 else off(mode, xnote, allowed)
    if mode == "auto" and len(share) < AUTO_SPLIT_MIN:
        why = "; ".join(n for n in (xnote, f"{len(share)} CPU: nothing to split") if n)
        return off(mode, why, allowed)
    lay = layout(share, outside)
    note = "; ".join(n for n in (xnote, lay.reason) if n)
    if not lay.split:
        if mode == "cgroup":
            raise ServiceError(f"--wsgi-isolation=cgroup: {lay.reason}")
        return off(mode, note, allowed)
    tag = f"{os.getpid()}-{env.get('PYTEST_XDIST_WORKER', 'main')}"
    errors = []
    if mode in ("auto", "cgroup"):
        if os.geteuid() == 0:
            try:
                cg_text = cgroup_text if cgroup_text is not None else Path("/proc/self/cgroup").read_text()
                mi_text = mountinfo_text if mountinfo_text is not None else Path("/proc/self/mountinfo").read_text()
            except OSError as exc:
                cg_text, mi_text = "", ""
                errors.append(f"/proc: {exc.strerror}")
            for version in (1, 2):
                base = own_cgroup_dir(version, cg_text, mi_text)
                if base is None or not base.is_dir():
                    continue
                try:
                    inside, outside_dir = _make_groups(version, base, lay, tag, ledger)
                except OSError as exc:
                    errors.append(f"cgroup v{version} at {base}: {exc.strerror or exc}")
                    continue
                iso = Isolation(mode, f"cgroup-v{version}", lay, note, Side("inside", lay.inside, inside),
                                Side("outside", lay.outside, outside_dir), [inside, outside_dir])
                iso.tag, iso.base, iso.ledger = tag, base, ledger
                iso.enter_outside()
                return iso
        else:
            errors.append("cgroups need root")
        if mode == "cgroup":
            raise ServiceError("--wsgi-isolation=cgroup: no writable cpuset cgroup ("
                               + "; ".join(errors or ["none mounted"]) + "); use --wsgi-isolation=affinity or auto")
    iso = Isolation(mode, "affinity", lay, "; ".join(n for n in (note, *(f"no cgroup: {e}" for e in errors)) if n),
                    Side("inside", lay.inside), Side("outside", lay.outside))
    iso.enter_outside()
    return iso


def describe_text(d: Mapping[str, Any]) -> str:
    """One line for the terminal: what was asked, what was used, which CPUs went where."""
    used = d["mechanism"]
    if used == "off":
        where = d.get("note") or "off"
    elif used == "nice":
        where = f"every CPU for everyone, servers and mysqld at nice {d['inside_nice']}"
    else:
        where = (f"engine and proxy on CPU {_cpus(d['outside'])}, servers and mysqld on CPU {_cpus(d['inside'])}"
                 + (f" ({d['note']})" if d.get("note") else ""))
    return f"{d['requested']} -> {used}: {where}"


def _cpus(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in ids)


def cpus_allowed(pid: int) -> tuple[int, ...]:
    """A process's allowed CPUs (``Cpus_allowed_list`` in /proc/PID/status), for checks and tests."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            out: list[int] = []
            for part in line.split(":", 1)[1].strip().split(","):
                lo, _, hi = part.partition("-")
                out.extend(range(int(lo), int(hi or lo) + 1))
            return tuple(out)
    return ()

