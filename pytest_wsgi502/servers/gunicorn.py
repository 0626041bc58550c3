"""gunicorn: a Python config file rendered from the cell, with server hooks that write JSON-line events."""

from __future__ import annotations

import json
from typing import Any

from pytest_wsgi502.servers.base import LocalServer
from pytest_wsgi502.servers.telemetry import GUNICORN_PATTERNS, summarize

_HOOKS = '''
# --- telemetry hooks (pytest-wsgi502): one JSON line per worker lifecycle event ---
import json as _json, os as _os, time as _time

def _wsgi502_event(hook, worker):
    line = _json.dumps({"t": _time.time(), "hook": hook, "pid": worker.pid, "age": worker.age,
                        "requests": getattr(worker, "nr", None)})
    with open(_WSGI502_EVENTS, "a") as fh:
        fh.write(line + "\\n")

def post_fork(server, worker):
    _wsgi502_event("post_fork", worker)

def worker_exit(server, worker):
    _wsgi502_event("worker_exit", worker)

def child_exit(server, worker):
    _wsgi502_event("child_exit", worker)

def worker_abort(worker):
    _wsgi502_event("worker_abort", worker)

def worker_int(worker):
    _wsgi502_event("worker_int", worker)
'''


class Gunicorn(LocalServer):
    kind = "gunicorn"
    config_name = "gunicorn.conf.py"

    @property
    def events_path(self) -> Any:
        return self.spec.workdir / "gunicorn-events.jsonl"

    def settings(self) -> dict[str, Any]:
        cell, spec = self.spec.cell, self.spec
        s: dict[str, Any] = {
            "bind": [self.address],
            "wsgi_app": spec.app,
            "chdir": str(spec.chdir),
            "workers": cell.workers,
            "worker_class": cell.effective_worker_class,
            "errorlog": "-",
            "loglevel": "info",
            # gunicorn >= 24 opens a control socket at ~/.gunicorn/gunicorn.ctl, shared by every instance on
            # the machine (xdist workers would fight over it); we do not use it. Older versions ignore the name.
            "control_socket_disable": True,
        }
        if cell.effective_worker_class == "gthread":
            s["threads"] = cell.threads
        if cell.effective_worker_class == "gevent":
            s["worker_connections"] = cell.async_cores
        if cell.max_requests:
            s["max_requests"] = cell.max_requests
            s["max_requests_jitter"] = cell.max_requests_jitter
        if cell.keepalive is not None:
            s["keepalive"] = cell.keepalive
        if cell.listen is not None:
            s["backlog"] = cell.listen
        s.update(cell.options)
        return s

    def render(self) -> str:
        lines = [f"# rendered by pytest-wsgi502 for cell {self.spec.cell.name}"]
        lines += [f"{k} = {v!r}" for k, v in self.settings().items()]
        lines.append(f"_WSGI502_EVENTS = {str(self.events_path)!r}")
        return "\n".join(lines) + "\n" + _HOOKS

    def argv(self) -> list[str]:
        return [self.binary, "--config", str(self.config_path)]

    def hook_events(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in self.events_path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            return []

    def telemetry(self, until: float | None = None) -> dict[str, Any]:
        events = self.events(GUNICORN_PATTERNS, until)
        out = summarize(events, self.spec.cell.workers)
        hooks = [h for h in self.hook_events() if until is None or h["t"] <= until]
        forks = sum(1 for h in hooks if h["hook"] == "post_fork")
        out["respawns_from_log"] = out["respawns"]
        if hooks:  # the hooks are the primary channel; the log lines cross-check them
            out["respawns"] = max(0, forks - self.spec.cell.workers)
        out["hook_counts"] = {k: sum(1 for h in hooks if h["hook"] == k) for k in sorted({h["hook"] for h in hooks})}
        # hook events carry exact times: a worker_abort is gunicorn's timeout kill (SIGABRT, then SIGKILL)
        out["events"] = [e.as_dict() for e in events if e.kind != "spawn"] + [
            {"kind": h["hook"], "t": h["t"], "pid": h["pid"], "worker": None, "line": ""}
            for h in hooks if h["hook"] in ("worker_abort", "worker_exit")
        ] + [  # forks after the initial workers: respawns, with their exact time (for timelines)
            {"kind": "respawn", "t": h["t"], "pid": h["pid"], "worker": None, "line": ""}
            for h in [h for h in hooks if h["hook"] == "post_fork"][self.spec.cell.workers:]
        ]
        return out


def validate_options(options: dict[str, Any]) -> list[str]:
    """Names in a cell's ``options`` that gunicorn does not know (gunicorn would ignore them silently)."""
    from gunicorn.config import KNOWN_SETTINGS

    known = {s.name for s in KNOWN_SETTINGS}
    return sorted(k for k in options if k not in known)
