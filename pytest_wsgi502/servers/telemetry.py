"""Worker lifecycle events parsed from the servers' own logs (pure: text in, events out).

Respawns are counted from the lines a server prints when it starts a replacement worker; kills are workers
that died by SIGKILL (signal 9), whatever sent it: a reload-mercy timeout, harakiri, a worker timeout, or
the OOM killer. uWSGI 2.0.31 prints ``worker N killed successfully`` after every recycle, SIGKILL or not, so
that line alone is not a kill; the NO MERCY / signal 9 / HARAKIRI lines are.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pytest_wsgi502 import events as ev

_TS = r"^(?P<ts>\d{9,11}\.\d{6}) "  # the arrival stamp the harness writes on every server log line
_GUNICORN_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ([+-]\d{4})\]")  # gunicorn: whole seconds

UWSGI_PATTERNS: dict[str, re.Pattern[str]] = {
    ev.SPAWN: re.compile(r"spawned uWSGI worker (?P<worker>\d+) \(pid: (?P<pid>\d+)"),
    ev.RESPAWN: re.compile(r"Respawned uWSGI worker (?P<worker>\d+) \(new pid: (?P<pid>\d+)\)"),
    ev.RECYCLE: re.compile(r"\.\.\.The work of process (?P<pid>\d+) is done\. Seeya!"),
    ev.LIFETIME: re.compile(r"worker (?P<worker>\d+) lifetime reached"),
    ev.NO_MERCY: re.compile(r"worker (?P<worker>\d+) \(pid: (?P<pid>\d+)\) is taking too much time to die"),
    ev.HARAKIRI: re.compile(r"HARAKIRI ON WORKER (?P<worker>\d+) \(pid: (?P<pid>\d+)"),
    ev.DIED_SIGNAL: re.compile(
        r"DAMN ! worker (?P<worker>\d+) \(pid: (?P<pid>\d+)\) died, killed by signal (?P<signal>\d+)"
    ),
    ev.DIED: re.compile(r"DAMN ! worker (?P<worker>\d+) \(pid: (?P<pid>\d+)\) died(?!, killed)"),
    # uWSGI 2.0's own SIGSEGV/SIGFPE handlers log the crash and exit (measured on 2.0.31: the master then says
    # "died :(" without a signal); without them the master says "killed by signal 11" (DIED_SIGNAL -> CRASHED)
    ev.CRASHED: re.compile(r"!!! uWSGI process (?P<pid>\d+) got (?:Segmentation Fault|Floating Point Exception)"),
    ev.LISTEN_QUEUE_FULL: re.compile(r"listen queue of socket .* full"),
    ev.RESPAWNING_TOO_FAST: re.compile(r"worker respawning too fast"),
    ev.DB_ERROR: re.compile(r"django\.db\.utils\.OperationalError: \((?P<code>\d+)"),
    # SIGHUP (graceful) and, without die-on-term, SIGTERM (brutal) reloads; SIGINT/SIGQUIT/die-on-term stops
    ev.RELOAD: re.compile(r"\.\.\.(gracefully|brutally) killing workers\.\.\."),
    ev.SHUTDOWN: re.compile(r"SIGINT/SIGTERM received\.\.\.killing workers|SIGINT/SIGQUIT received"),
    # http-socket (2.0.31): "invalid HTTP request size (max 4096)...skip"; uwsgi protocol: "invalid request block
    # size: 5054 (max 4096)...skip"
    ev.HEADER_TOO_LARGE: re.compile(r"invalid (?:HTTP request size|request block size: \d+) \(max (?P<max>\d+)\)"),
}

GUNICORN_PATTERNS: dict[str, re.Pattern[str]] = {
    ev.SPAWN: re.compile(r"Booting worker with pid: (?P<pid>\d+)"),
    ev.RECYCLE: re.compile(r"Autorestarting worker after current request"),
    ev.EXIT: re.compile(r"Worker exiting \(pid: (?P<pid>\d+)\)"),
    ev.TIMEOUT: re.compile(r"WORKER TIMEOUT \(pid:(?P<pid>\d+)\)"),
    ev.DIED_SIGNAL: re.compile(r"Worker \(pid:(?P<pid>\d+)\) was sent (?P<signame>SIG[A-Z]+)"),
    ev.DIED_CODE: re.compile(r"Worker \(pid:(?P<pid>\d+)\) exited with code (?P<code>\d+)"),
    ev.DB_ERROR: UWSGI_PATTERNS[ev.DB_ERROR],
    # the worker's own pid is the line's second bracket; gunicorn 20+ logs the method before the URI
    ev.REQUEST_ERROR: re.compile(r"\[(?P<pid>\d+)\] \[ERROR\] Error handling request (?:[A-Z]+ )?(?P<uri>\S+)"),
    ev.RELOAD: re.compile(r"\[(?P<pid>\d+)\] \[INFO\] Hang up: Master"),
    ev.SHUTDOWN: re.compile(r"\[(?P<pid>\d+)\] \[INFO\] Handling signal: (term|int|quit)"),
}


@dataclass(frozen=True)
class Event:
    kind: str
    t: float | None  # unix seconds, when the line carries a timestamp
    pid: int | None
    worker: int | None
    line: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "t": self.t, "pid": self.pid, "worker": self.worker, "line": self.line}


def parse_events(text: str, patterns: dict[str, re.Pattern[str]]) -> list[Event]:
    events: list[Event] = []
    ts_re = re.compile(_TS)
    for line in text.splitlines():
        m_ts = ts_re.match(line)
        t = float(m_ts["ts"]) if m_ts else _gunicorn_time(line)
        for kind, pat in patterns.items():
            m = pat.search(line)
            if m is None:
                continue
            g = m.groupdict()
            if kind == ev.DIED_SIGNAL:
                kind = _died_kind(g.get("signal"), g.get("signame"))
            events.append(Event(kind, t, int(g["pid"]) if g.get("pid") else None,
                                int(g["worker"]) if g.get("worker") else None, line.strip()[:300]))
            break
    return events


def _died_kind(number: str | None, name: str | None) -> str:
    """A worker's death by signal: SIGKILL (``DIED_SIGNAL``, a kill), a crash (``CRASHED``: SIGSEGV and the other
    fatal signals a process raises itself) or another signal (``DIED_OTHER_SIGNAL``)."""
    if number is not None:
        return ev.DIED_SIGNAL if number == "9" else ev.CRASHED if int(number) in ev.CRASH_SIGNALS \
            else ev.DIED_OTHER_SIGNAL
    if name is None or name == "SIGKILL":
        return ev.DIED_SIGNAL
    return ev.CRASHED if name in ev.CRASH_SIGNALS.values() else ev.DIED_OTHER_SIGNAL


def _gunicorn_time(line: str) -> float | None:
    m = _GUNICORN_TS.match(line)
    if not m:
        return None
    from datetime import datetime

    # the line's second started at this instant; +0.5 puts it mid-second (attribution allows 1 s of slack)
    return datetime.strptime(f"{m[1]} {m[2]}", "%Y-%m-%d %H:%M:%S %z").timestamp() + 0.5


def summarize(events: list[Event], initial_workers: int) -> dict[str, Any]:
    """respawns: workers started after the initial set; kills: distinct worker pids that got SIGKILL."""
    counts = Counter(e.kind for e in events)
    spawns = sum(counts[kind] for kind in ev.SPAWNS)
    killed = {e.pid for e in events if e.kind in ev.SIGKILLED}
    return {
        "respawns": max(0, spawns - initial_workers),
        "kills": len(killed),
        "event_counts": dict(sorted(counts.items())),
    }
