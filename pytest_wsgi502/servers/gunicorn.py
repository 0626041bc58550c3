"""gunicorn: a Python config file rendered from the cell, with server hooks that write JSON-line events."""

from __future__ import annotations

import json
import keyword
import math
import signal
from pathlib import Path
from typing import Any

from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.config.values import ConfigError, shown, wsgi_app
from pytest_wsgi502.servers.base import Placement, Server, comment_label, loopback_listeners
from pytest_wsgi502.servers.telemetry import GUNICORN_PATTERNS, summarize

HOOKS = ("post_fork", "post_worker_init", "worker_exit", "child_exit", "worker_abort",
         "worker_int")  # defined by _HOOKS below
_INT_LIMIT = 2**63

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

def post_worker_init(worker):
    _wsgi502_event("post_worker_init", worker)

def worker_exit(server, worker):
    _wsgi502_event("worker_exit", worker)

def child_exit(server, worker):
    _wsgi502_event("child_exit", worker)

def worker_abort(worker):
    _wsgi502_event("worker_abort", worker)

def worker_int(worker):
    _wsgi502_event("worker_int", worker)
'''


def py_literal(cell: str, key: str, value: Any) -> str:
    """``value`` as a Python literal that evaluates back to it: plain data only (str, int, bool, finite float,
    None, or a list/tuple of those). Exact types: a subclass could bring its own ``__repr__`` into the file."""
    if type(value) in (list, tuple):
        for v in value:
            _scalar(cell, key, v)
        return repr(value)  # the repr of a list/tuple of checked exact-type scalars
    return _scalar(cell, key, value)


def _scalar(cell: str, key: str, value: Any) -> str:
    if value is None or type(value) in (bool, str):
        return repr(value)
    if type(value) is int:
        if abs(value) >= _INT_LIMIT:
            raise ConfigError(f"cell {shown(cell)}: gunicorn setting {key} is out of range, got {shown(value)}")
        return repr(value)
    if type(value) is float:
        if not math.isfinite(value):
            raise ConfigError(f"cell {shown(cell)}: gunicorn setting {key} must be a finite number, got {shown(value)}")
        return repr(value)
    raise ConfigError(f"cell {shown(cell)}: gunicorn setting {key} must be a string, number, boolean, None or a "
                      f"list of those, got {shown(value)}")


def check_option_names(cell: str, options: Any) -> None:
    """The cell's ``options`` keys: Python identifiers that gunicorn knows (it ignores unknown names in a config
    file silently), and not one of the telemetry hooks the rendered file defines."""
    for key in options:
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise ConfigError(f"cell {shown(cell)}: gunicorn setting name {shown(key)} is not a Python identifier")
        if key in HOOKS:
            raise ConfigError(f"cell {shown(cell)}: gunicorn setting {key} is a server hook the harness defines for "
                              "its telemetry; it cannot be set in options")
    try:
        unknown = validate_options(dict(options))
    except ImportError:  # containers backend without gunicorn on the host: the server reports it
        return
    if unknown:
        raise ConfigError(f"cell {shown(cell)}: unknown gunicorn setting(s) {', '.join(map(shown, unknown))} in "
                          "options (see gunicorn's settings list)")


def checked_settings(cell: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` if every name is an identifier and every value a plain literal; else ConfigError."""
    for key, value in settings.items():
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise ConfigError(f"cell {shown(cell)}: gunicorn setting name {shown(key)} is not a Python identifier")
        py_literal(cell, key, value)
    return settings


def render_config(cell: str, settings: dict[str, Any], events_file: str) -> str:
    """The config file: one assignment per setting, the path the hooks write events to (as the server sees
    it: the cell's directory on the host, its mount point in a container), then the hooks."""
    lines = [f"# rendered by pytest-wsgi502 for cell {comment_label(cell)}"]
    lines += [f"{k} = {py_literal(cell, k, v)}" for k, v in checked_settings(cell, settings).items()]
    lines.append(f"_WSGI502_EVENTS = {_scalar(cell, '_WSGI502_EVENTS', events_file)}")
    return "\n".join(lines) + "\n" + _HOOKS


CONFIG_NAME = "gunicorn.conf.py"
EVENTS_NAME = "gunicorn-events.jsonl"  # in the cell's directory: the hooks write it, telemetry reads it


def settings_for(cell: Cell, app: str, where: Placement) -> dict[str, Any]:
    """The gunicorn settings of ``cell`` serving ``app``, placed ``where`` (a pure function: lint and render
    read it). The cell's options win, except over a fixed placement (a container's port and paths)."""
    bind = [f"unix:{where.address}" if where.unix else where.address]
    s: dict[str, Any] = {
        "bind": bind,
        "wsgi_app": wsgi_app(app, f"cell {cell.name}: app (--wsgi-app)"),
        "chdir": where.chdir,
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
    check_option_names(cell.name, cell.options)
    loopback_listeners(cell.name, "gunicorn", cell.options)
    s.update(cell.options)
    checked_settings(cell.name, s)
    if where.fixed:
        s.update({"bind": bind, "chdir": where.chdir})
    return s


def render_for(cell: Cell, app: str, where: Placement) -> str:
    """The config file as the server at ``where`` reads it: its hooks write events into the cell's directory."""
    return render_config(cell.name, settings_for(cell, app, where), f"{where.config_dir}/{EVENTS_NAME}")


def argv_for(where: Placement) -> list[str]:
    return [where.binary, "--config", f"{where.config_dir}/{CONFIG_NAME}"]


class Gunicorn(Server):
    kind = "gunicorn"
    config_name = CONFIG_NAME

    @property
    def events_path(self) -> Path:
        """The hooks' events file on this host."""
        return self.spec.workdir / EVENTS_NAME

    def settings(self) -> dict[str, Any]:
        return settings_for(self.spec.cell, self.spec.app, self.placement)

    def render(self) -> str:
        return render_for(self.spec.cell, self.spec.app, self.placement)

    def argv(self) -> list[str]:
        return argv_for(self.placement)

    def act(self, do: str) -> tuple[signal.Signals | str, int | None]:
        """``upgrade``: USR2 (the master re-executes itself as a child that shares the listeners); its ``Watch``
        sends WINCH and QUIT to the old master once the new one's workers are ready, as gunicorn's docs say
        (``upgrade-graceful``: TERM instead, a graceful stop of the old master and its workers)."""
        if do in ("upgrade", "upgrade-graceful"):
            if self.master_pid() is None:
                raise RuntimeError("upgrade needs the server's master pid (the local backend)")
            return signal.SIGUSR2, self.runner.signal(signal.SIGUSR2)
        return super().act(do)

    def stop_grace(self) -> float:
        """How long a graceful stop may take: graceful_timeout (gunicorn's default 30 s)."""
        grace = self.settings().get("graceful_timeout", 30)
        return float(grace) if isinstance(grace, int | float) and not isinstance(grace, bool) else 30.0

    def phases(self, do: str) -> tuple[str, ...]:
        if do in ("upgrade", "upgrade-graceful"):
            return ("new_master", "workers_ready", "old_told", "old_gone", "master_gone")
        return super().phases(do)

    def worker_ready(self, pid: int) -> bool:
        """A worker is ready once its app is loaded: the post_worker_init hook ran in it."""
        return any(h.get("pid") == pid and h.get("hook") == "post_worker_init" for h in self.hook_events())

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
