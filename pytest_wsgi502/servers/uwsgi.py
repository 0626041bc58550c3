"""uWSGI: an ini file rendered from the cell; telemetry from its stats server and its log lines."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.config.values import ConfigError, shown, wsgi_app
from pytest_wsgi502.servers.base import Placement, Server, comment_label, loopback_listeners
from pytest_wsgi502.servers.telemetry import UWSGI_PATTERNS, summarize

_KEY = re.compile(r"[A-Za-z0-9_-]+")
# uWSGI expands these in every option value after reading the file (core/uwsgi.c uwsgi_setup, the three
# uwsgi_apply_config_pass calls): $(VAR) from the environment, @(file) from a file or any of its schemes
# (@(exec://cmd) runs a command while the config is read, even with --show-config), %(option) from another
# option. None of them has an escape: doubling the sign is read as the sign followed by the expansion.
_EXPANSION = re.compile(r"[$@%]\(")
_INT_LIMIT = 2**63


def ini_value(cell: str, key: str, value: Any) -> str:
    """One value as it goes into the ini, such that uWSGI reads back exactly ``value``.

    uWSGI reads an ini line by line (split on ``\\n`` only), strips spaces, tabs and CR around the value, and
    first runs its "magic" pass over the whole file: ``%X`` becomes a magic value (``%n`` the file name, ``%d``
    its directory, unknown letters nothing, ``%`` before a newline joins two lines) and ``%%`` becomes ``%``
    (core/io.c uwsgi_open_and_read, core/utils.c magic_sub). So ``%`` is escaped as ``%%``; newlines and other
    control characters, surrounding spaces and the ``$(``/``@(``/``%(`` expansions (no escape) are refused."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        if abs(value) >= _INT_LIMIT:
            raise _refused(cell, key, "is out of range for a uWSGI option", value)
        return str(value)
    if type(value) is float:
        if not math.isfinite(value):
            raise _refused(cell, key, "must be a finite number", value)
        return repr(value)
    if type(value) is not str:
        raise _refused(cell, key, "must be a string, a number, a boolean or a list of those", value)
    if not value.isprintable():
        raise _refused(cell, key, "must be one line of printable text (a newline would add ini lines)", value)
    if value != value.strip(" "):
        raise _refused(cell, key, "must not start or end with a space (uWSGI strips it)", value)
    m = _EXPANSION.search(value)
    if m:
        raise _refused(cell, key, f"contains {m.group()!r}, which uWSGI expands ($(ENV), @(file or exec://), "
                                  "%(option)) and cannot escape", value)
    return value.replace("%", "%%")


def _refused(cell: str, key: str, why: str, value: Any) -> ConfigError:
    return ConfigError(f"cell {shown(cell)}: uWSGI option {shown(key)} {why}, got {shown(value)}")


def checked_settings(cell: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` if every key and value can be written to an ini and read back unchanged; else ConfigError."""
    for key, value in settings.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ConfigError(f"cell {shown(cell)}: uWSGI option name {shown(key)} must be letters, digits, '-', '_'")
        for v in value if type(value) is list else [value]:
            ini_value(cell, key, v)
    return settings


def render_ini(cell: str, settings: dict[str, Any]) -> str:
    """The ini text: one ``key = value`` line per value (a list repeats the key), validated and escaped."""
    lines = [f"; rendered by pytest-wsgi502 for cell {comment_label(cell).replace('%', '%%')}", "[uwsgi]"]
    for key, value in checked_settings(cell, settings).items():
        lines += [f"{key} = {ini_value(cell, key, v)}" for v in (value if type(value) is list else [value])]
    return "\n".join(lines) + "\n"


CONFIG_NAME = "uwsgi.ini"
FIFO_NAME = "master.fifo"  # in the cell's directory: the master FIFO of a cell with a chain-reload action
# "WSGI app 0 (mountpoint='') ready in 1 seconds on interpreter 0x55d0 pid: 1234 (default app)"
_APP_READY = re.compile(r"WSGI app \d+ \(mountpoint='[^']*'\) ready in .* pid: (\d+)")


def settings_for(cell: Cell, app: str, where: Placement) -> dict[str, Any]:
    """The uWSGI settings of ``cell`` serving ``app``, placed ``where`` (a pure function: lint and render
    read it). The cell's raw options win, except over a fixed placement (a container's ports and paths)."""
    placed: dict[str, Any] = {"http-socket": where.address, "stats": where.stats, "chdir": where.chdir}
    if where.virtualenv:
        placed["virtualenv"] = where.virtualenv
    s: dict[str, Any] = {
        # strict: an unknown key is an error. Without it uWSGI silently ignores e.g. max-requests-delta on
        # versions that lack it, which is how the seed's "delta had no effect" can happen.
        "strict": True,
        "master": True,
        "processes": cell.workers,
        "http-socket": where.address,
        "stats": where.stats,
        "stats-http": True,
        "chdir": where.chdir,
        **({"virtualenv": where.virtualenv} if where.virtualenv else {}),
        "module": wsgi_app(app, f"cell {cell.name}: app (--wsgi-app)"),
        "need-app": True,
        "die-on-term": True,
        "no-orphans": True,  # workers die with the master
        "disable-logging": True,  # no per-request lines; the proxy's access log has them
        # no log-master: with it, lines are written (and stamped) when the master drains its log pipe, up
        # to 2 s after the event; the harness stamps each line as it arrives instead
    }
    if cell.max_requests:
        s["max-requests"] = cell.max_requests
    if cell.max_requests_delta:
        s["max-requests-delta"] = cell.max_requests_delta
    if cell.threads > 1:
        s["threads"] = cell.threads
        s["enable-threads"] = True
    if cell.effective_worker_class == "gevent":
        s["gevent"] = cell.async_cores
        # patch before the app is imported in the master: with plain gevent-monkey-patch the patch comes
        # after Django created its thread-locals, every greenlet shares one DB connection and ~all requests
        # fail (measured: 99.96 % 502). A cell can still ask for the late patch through options.
        s["gevent-early-monkey-patch"] = True
    if cell.listen is not None:
        s["listen"] = cell.listen
    if any(a["do"] in ("chain-reload", "rolling") for a in cell.actions):
        # the chain-reload action writes "c" to it (the touch-chain-reload file waits for the master's next check);
        # a rolling deploy's graceful stop writes "q" (see graceful_stop)
        s["master-fifo"] = f"{where.config_dir}/{FIFO_NAME}"
    loopback_listeners(cell.name, "uwsgi", cell.options)
    s.update(cell.options)  # raw options win
    checked_settings(cell.name, s)
    if where.fixed:
        s.update(placed)
    return s


def argv_for(where: Placement) -> list[str]:
    return [where.binary, "--ini", f"{where.config_dir}/{CONFIG_NAME}"]


class UWSGI(Server):
    kind = "uwsgi"
    config_name = CONFIG_NAME

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats_samples: list[dict[str, Any]] = []

    def settings(self) -> dict[str, Any]:
        return settings_for(self.spec.cell, self.spec.app, self.placement)

    def render(self) -> str:
        return render_ini(self.spec.cell.name, self.settings())

    def argv(self) -> list[str]:
        return argv_for(self.placement)

    def act(self, do: str) -> tuple[signal.Signals | str, int | None]:
        """``chain-reload``: ``c`` to the master FIFO (uWSGI replaces its workers one at a time, each after the
        previous one is up); the others are signals (``Server.action_signals``)."""
        if do != "chain-reload":
            return super().act(do)
        self._fifo(b"c")
        return "'c' via the master FIFO", self.master_pid()

    def _fifo(self, command: bytes) -> None:
        """Write ``command`` to the master FIFO (ENXIO when nobody reads it: the master is gone)."""
        fifo = self.spec.workdir / FIFO_NAME
        if not self.placement.fixed and "master-fifo" in self.spec.cell.options:
            fifo = Path(str(self.spec.cell.options["master-fifo"]))
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, command)
        finally:
            os.close(fd)

    def graceful_stop(self) -> tuple[str, int | None]:
        """``q`` to the master FIFO: uWSGI's graceful shutdown (workers finish their requests within
        worker-reload-mercy, then the master exits). Not SIGTERM: uWSGI 2.0 without die-on-term reloads on it
        (brutally), and with die-on-term (the harness sets it) it kills the workers at once, cutting what they
        serve; SIGINT and SIGQUIT are immediate kills too."""
        self._fifo(b"q")
        return "'q' via the master FIFO (graceful shutdown)", self.master_pid()

    def stop_grace(self) -> float:
        """How long a graceful stop may take: worker-reload-mercy (uWSGI's default 60 s)."""
        mercy = self.settings().get("worker-reload-mercy", 60)
        return float(mercy) if isinstance(mercy, int | float) and not isinstance(mercy, bool) else 60.0

    def phases(self, do: str) -> tuple[str, ...]:
        """uWSGI stops its old workers before the new ones start (reload: graceful, term without die-on-term:
        brutal, re-executing the master); with die-on-term, term is a stop."""
        if do == "term" and self.settings().get("die-on-term") not in (False, "false", 0, "0"):
            return ("old_gone", "master_gone")
        return ("old_gone", "workers_ready")

    def worker_ready(self, pid: int) -> bool:
        """Forked from a loaded app = ready; with lazy-apps a worker loads the app itself: its "WSGI app ...
        ready ... pid: N" line."""
        settings = self.settings()
        if not any(settings.get(k) not in (None, False, "false", 0, "0") for k in ("lazy-apps", "lazy")):
            return True
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return str(pid) in {m[1] for m in _APP_READY.finditer(text)}

    def stats(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.spec.stats_port}/", timeout=1) as resp:
                data: dict[str, Any] = json.load(resp)
                return data
        except (OSError, ValueError):
            return None

    def sample(self) -> None:
        data = self.stats()
        if data is None:
            return
        self.stats_samples.append({
            "t": time.time(),
            "listen_queue": data.get("listen_queue"),
            "workers": [
                {k: w.get(k) for k in ("id", "pid", "requests", "status", "respawn_count", "harakiri_count")}
                for w in data.get("workers", [])
            ],
        })

    def telemetry(self, until: float | None = None) -> dict[str, Any]:
        events = self.events(UWSGI_PATTERNS, until)
        out = summarize(events, self.spec.cell.workers)
        out["events"] = [e.as_dict() for e in events if e.kind != "spawn"]
        if self.stats_samples:
            last = self.stats_samples[-1]
            out["stats"] = {
                "max_listen_queue": max((s["listen_queue"] or 0) for s in self.stats_samples),
                # respawn_count starts at 1 for a worker's first spawn: respawns are the excess
                "respawns_from_stats": sum(max(0, (w["respawn_count"] or 1) - 1) for w in last["workers"]),
                "harakiri_count": sum(w["harakiri_count"] or 0 for w in last["workers"]),
                "samples": len(self.stats_samples),
            }
        return out
