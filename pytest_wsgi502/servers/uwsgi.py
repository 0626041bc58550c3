"""uWSGI: an ini file rendered from the cell; telemetry from its stats server and its log lines."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from typing import Any

from pytest_wsgi502.servers.base import LocalServer
from pytest_wsgi502.servers.telemetry import UWSGI_PATTERNS, summarize


def _ini_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class UWSGI(LocalServer):
    kind = "uwsgi"
    config_name = "uwsgi.ini"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats_samples: list[dict[str, Any]] = []

    def settings(self) -> dict[str, Any]:
        cell, spec = self.spec.cell, self.spec
        s: dict[str, Any] = {
            # strict: an unknown key is an error. Without it uWSGI silently ignores e.g. max-requests-delta on
            # versions that lack it, which is how the seed's "delta had no effect" can happen.
            "strict": True,
            "master": True,
            "processes": cell.workers,
            "http-socket": self.address,
            "stats": f"127.0.0.1:{spec.stats_port}",
            "stats-http": True,
            "chdir": str(spec.chdir),
            # the venv of this Python (uWSGI embeds libpython and would otherwise miss its site-packages)
            **({"virtualenv": sys.prefix} if sys.prefix != sys.base_prefix else {}),
            "module": spec.app,
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
        s.update(cell.options)  # raw options win
        return s

    def render(self) -> str:
        lines = [f"; rendered by pytest-wsgi502 for cell {self.spec.cell.name}", "[uwsgi]"]
        for key, value in self.settings().items():
            values = value if isinstance(value, list) else [value]
            lines += [f"{key} = {_ini_value(v)}" for v in values]
        return "\n".join(lines) + "\n"

    def argv(self) -> list[str]:
        return [self.binary, "--ini", str(self.config_path)]

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
