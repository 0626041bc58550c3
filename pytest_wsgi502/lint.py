"""Config lint: the traps behind the 502 mechanisms, found before a cell starts (pure but for two probes).

Each finding is {"code", "message"}; ``--wsgi-strict`` turns findings into a failed cell, otherwise they are
listed once in the terminal summary, the JSON and the HTML report (never as Python warnings) and kept in the
cell's JSON (``lint``).
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pytest_wsgi502.config.matrix import Cell

_OPT = re.compile(r"^\s+(?:-\w\|)?--([a-z0-9][a-z0-9-]*)", re.M)
_SLOW = re.compile(r"[?&]ms=(\d{1,9})(?!\d)")


@cache
def uwsgi_options(binary: str) -> frozenset[str]:
    """Every option the installed uWSGI knows (from ``uwsgi --help``)."""
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(_OPT.findall(out))


def _release(version: str) -> tuple[int, ...]:
    """``"2.0.24"`` -> (2, 0, 24); an unknown version sorts last (no finding from a version we cannot read)."""
    try:
        return tuple(int(p) for p in version.split(".")[:3])
    except ValueError:
        return (9999,)


def _num(value: Any, default: float | None = None) -> float | None:
    """A setting read as a number (the servers parse "30" too); ``default`` when absent, and None when it is
    not a finite number: lint judges what it can read and never fails on a value the renderer accepted."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def somaxconn() -> int | None:
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return None


# A load engine process never sends more than this many requests a second (measured: 67,147 req/s for one
# process against nginx's bare `return 200` on a 2-core VM, docs/load.md): a closed loop's request bound when
# only its duration limits it. Generous on purpose: a finding is dropped only when recycling cannot happen.
ENGINE_CEILING_RPS = 250_000
# Without a request bound (the caller did not say), max_requests this high is no recycling in practice: with
# two workers lockstep needs 2,000,000 requests, hours at the rates a WSGI app under test serves.
NO_RECYCLE_IN_PRACTICE = 1_000_000


def request_bound(spec: Any) -> int:
    """The most requests a run of ``spec`` (a ``LoadSpec``) can send: its request cap, and for open/ramp load
    the rate times the duration, for a closed loop the duration at ``ENGINE_CEILING_RPS`` per engine process
    (or each user's think time, whichever bounds it more)."""
    cap = int(spec.max_requests)
    duration = float(spec.duration)
    if spec.mode in ("open", "ramp"):  # ramp rises to rate: rate bounds every second of it
        return min(cap, math.ceil(float(spec.rate) * duration) + 1)
    ceiling = ENGINE_CEILING_RPS * max(1, int(spec.processes))
    if float(spec.think_time) > 0:
        ceiling = min(ceiling, math.ceil(int(spec.concurrency) / float(spec.think_time)))
    return min(cap, math.ceil(ceiling * duration))


def _lockstep_reachable(max_requests: float, workers: int, bound: int | None) -> bool:
    """Can every worker reach ``max_requests`` within the run? All recycling together needs each of the
    ``workers`` to serve ``max_requests``, so the run must send at least their product. Without a bound,
    only ``max_requests`` below ``NO_RECYCLE_IN_PRACTICE`` counts."""
    if bound is None:
        return max_requests < NO_RECYCLE_IN_PRACTICE
    return max_requests * workers <= bound


def _slowest_ms(cell: Cell, default_path: str) -> int:
    paths = [m["path"] for m in cell.mix] or [cell.path or default_path]
    return max((int(m[1]) for p in paths if (m := _SLOW.search(p))), default=0)


def lint(cell: Cell, settings: dict[str, Any], *, idle_timeout: float, default_path: str = "/",
         known_uwsgi: Iterable[str] = (), max_backlog: int | None = None,
         uwsgi_version: str = "", request_bound: int | None = None,
         proxy_profile: str = "") -> list[dict[str, str]]:
    """Findings for one cell. ``settings`` are the server settings as rendered (uWSGI ini keys or gunicorn
    settings), so defaults the harness adds are judged too. ``request_bound``: the most requests the run can
    send (``request_bound(spec)``); recycling findings need recycling to be reachable within it.
    ``proxy_profile``: the session's (a cell's own ``proxy_profile`` wins)."""
    out: list[dict[str, str]] = []

    def add(code: str, message: str) -> None:
        out.append({"code": code, "message": f"{cell.name}: {message}"})

    known = set(known_uwsgi)
    if cell.server == "uwsgi" and known:
        for key in sorted(k for k in settings if k not in known):
            add("uwsgi-unknown-option",
                f"this uWSGI does not know '{key}' (without strict = true uWSGI silently ignores unknown ini "
                "keys: max-requests-delta needs >= 2.0.29)")
    if cell.server == "uwsgi" and (_num(settings.get("threads"), 1) or 1) > 1 and settings.get("max-worker-lifetime") \
            and _release(uwsgi_version) < (2, 0, 25):
        add("lifetime-drops-threads",
            f"uWSGI {uwsgi_version} with threads: a max-worker-lifetime recycle ends the worker process as soon as "
            "its first thread finishes its request, so requests in flight in the other threads get no response "
            "(502); 2.0.25 joins the threads first. Upgrade, or run without threads")
    if cell.server == "uwsgi" and "http-socket" in settings:
        header = settings.get("add-header", "")
        headers = header if isinstance(header, list) else [header]
        if not any("connection: close" in str(h).lower() for h in headers):
            add("keepalive-race",
                "uWSGI http-socket closes every connection after the response without 'Connection: close'; behind a "
                "keep-alive proxy, responses with Content-Length race and get 502 (add-header = Connection: close)")
    if cell.server == "gunicorn" and settings.get("worker_class") in ("gthread", "gevent"):
        keepalive = _num(settings.get("keepalive"), 2)
        if keepalive is not None and 0 < keepalive <= idle_timeout:
            add("keepalive-shorter-than-lb",
                f"gunicorn keep-alive {keepalive:g}s <= the proxy's idle timeout {idle_timeout:g}s: the backend may "
                "close a connection the proxy is about to reuse (keep-alive race); set keepalive above it")
    listen = _num(settings.get("listen", settings.get("backlog")))
    if listen is not None and max_backlog is not None and listen > max_backlog:
        add("listen-above-somaxconn",
            f"listen backlog {listen:g} > net.core.somaxconn {max_backlog}: the kernel silently caps it")
    workers = int(_num(settings.get("processes", settings.get("workers")), 1) or 1)
    recycle = _num(settings.get("max-requests" if cell.server == "uwsgi" else "max_requests"))
    reachable = recycle is not None and recycle > 0 and _lockstep_reachable(recycle, workers, request_bound)
    if cell.server == "uwsgi" and reachable and workers > 1 and not settings.get("max-requests-delta"):
        add("recycle-lockstep",
            f"max-requests {settings['max-requests']} and no max-requests-delta on more than one worker: workers "
            "spawned together recycle together (min-worker-lifetime, default 10 s, holds each one that reached "
            "max-requests until it is that old), and while all are down nobody accepts")
    if cell.server == "gunicorn" and reachable and workers > 1 and not settings.get("max_requests_jitter"):
        add("recycle-lockstep",
            f"max_requests {settings['max_requests']} and no max_requests_jitter on more than one worker: workers "
            "spawned together can recycle together")
    queue = listen if listen is not None else (100 if cell.server == "uwsgi" else 2048)
    if cell.socket == "unix" and queue <= 128:
        add("unix-listen-queue",
            f"listen queue {queue:g} on a unix socket: when it is full a connect fails at "
            "once (EAGAIN, a 502 at the proxy) instead of waiting; size it for the peak of concurrent requests")
    if cell.effective_worker_class == "gevent" and cell.driver == "mysqlclient":
        add("gevent-mysqlclient",
            "gevent workers with mysqlclient (a C extension gevent cannot patch): one slow query blocks the worker")
    if (cell.proxy_profile or proxy_profile) == "nginx" and cell.socket != "unix":
        add("nginx-passive-health",
            "nginx in front with its defaults (max_fails=1 fail_timeout=10s) and the app named like localhost "
            "(127.0.0.1 and ::1, the app on 127.0.0.1 only): one failed request marks the app down and every "
            "request of the next 10 s gets 502 'no live upstreams'; set max_fails=0 on the upstream's servers "
            "(fail_timeout=0 still refuses everything until the clock's next second, measured on nginx 1.22) or "
            "name the app by one address")
    slowest = _slowest_ms(cell, default_path)
    _lifecycle(cell, settings, slowest, uwsgi_version, add)
    limit_s = _num(settings.get("harakiri")) if cell.server == "uwsgi" else (
        _num(settings.get("timeout"), 30) if cell.effective_worker_class == "sync" else None)
    if slowest and limit_s and limit_s * 1000 < slowest:
        what = "harakiri" if cell.server == "uwsgi" else "timeout"
        add(f"{what}-below-slowest",
            f"{what} {limit_s:g}s is below the slowest request ({slowest} ms): workers die mid-request (502)")
    return out


# what the load engine and nginx add to a request's header block besides the cell's own headers (request line
# overhead, Host, User-Agent, Accept, Connection, X-Forwarded-*): generous, so a finding is never a near miss
_HEADER_OVERHEAD = 256
_FALSE = (False, "false", "False", 0, "0", "no", "off")


def header_block_size(cell: Cell, default_path: str = "/") -> int:
    """The size in bytes of the largest request header block the cell's load sends (request line, the cell's
    ``headers`` as ``Name: value\\r\\n``, plus ``_HEADER_OVERHEAD``), as the server reads it."""
    paths = [m["path"] for m in cell.mix] or [cell.path or default_path]
    line = max(len(f"GET {p} HTTP/1.1\r\n".encode()) for p in paths)
    return line + sum(len(f"{k}: {v}\r\n".encode()) for k, v in cell.headers.items()) + _HEADER_OVERHEAD


def _rolling(action: Mapping[str, Any], slowest_ms: int, add: Any) -> None:
    """A rolling deploy's timings: an instance that stops before its load balancer stops routing to it, or a
    deregistration delay shorter than the slowest request."""
    lag, prestop, delay = (float(action.get(k, 0.0)) for k in ("lag", "prestop", "deregistration_delay"))
    if prestop < lag:
        add("rolling-stop-before-drain",
            f"the rolling deploy at {action['at']:g}s stops each instance {prestop:g}s after deregistering it while "
            f"the load balancer keeps routing to it for {lag:g}s (propagation lag): requests sent in between are "
            "refused (502); sleep longer than the lag before the stop (a preStop hook)")
    if slowest_ms and delay * 1000 < slowest_ms:
        add("deregistration-below-slowest",
            f"deregistration_delay {delay:g}s is below the slowest request ({slowest_ms} ms): the load balancer "
            "cuts requests still in flight on a deregistered instance when it ends (502); raise it above the "
            "slowest request")


def _lifecycle(cell: Cell, settings: dict[str, Any], slowest_ms: int, uwsgi_version: str,
               add: Any) -> None:
    """The traps behind the lifecycle pairs (issue 16): SIGTERM semantics, header size, grace periods, drains."""
    does = [str(a["do"]) for a in cell.actions]
    if cell.server == "uwsgi":
        if settings.get("die-on-term") in _FALSE and _release(uwsgi_version) < (2, 1):
            add("uwsgi-term-reloads",
                f"uWSGI {uwsgi_version} without die-on-term treats SIGTERM as a brutal reload: a deploy or container "
                "stop (docker stop, Kubernetes) that sends SIGTERM cuts every request in flight (502: upstream "
                "prematurely closed) and the server comes back; set die-on-term = true (2.1's default), and send "
                "SIGHUP for a graceful reload")
        buffer = _num(settings.get("buffer-size"), 4096)
        size = header_block_size(cell)
        if cell.headers and buffer is not None and size > buffer:
            add("buffer-size-below-headers",
                f"buffer-size {buffer:g} is below the request headers this cell sends (about {size} bytes): uWSGI "
                "logs 'invalid request block size' / 'invalid HTTP request size' and closes the connection, the "
                "proxy answers 502; set buffer-size above it (32768 or 65535)")
        mercy = _num(settings.get("worker-reload-mercy"), 60)
        if slowest_ms and mercy is not None and mercy * 1000 < slowest_ms and set(does) & {"reload", "hup",
                                                                                        "chain-reload"}:
            add("reload-mercy-below-slowest",
                f"worker-reload-mercy {mercy:g}s is below the slowest request ({slowest_ms} ms): a graceful reload "
                "kills workers still serving it (502)")
        if "chain-reload" in does and settings.get("lazy-apps") in (None, *_FALSE) and \
                settings.get("lazy") in (None, *_FALSE):
            add("chain-reload-without-lazy-apps",
                "chain-reload without lazy-apps: each new worker is forked from the master, which loaded the app "
                "at start, so no new code is loaded; set lazy-apps = true")
    if cell.server == "gunicorn":
        field = _num(settings.get("limit_request_field_size"), 8190)
        longest = max((len(f"{k}: {v}".encode()) for k, v in cell.headers.items()), default=0)
        if field and longest > field:
            add("header-field-above-limit",
                f"a request header of {longest} bytes is above gunicorn's limit_request_field_size {field:g}: "
                "gunicorn answers 400; raise limit_request_field_size")
        grace = _num(settings.get("graceful_timeout"), 30)
        if slowest_ms and grace is not None and grace * 1000 < slowest_ms:
            add("graceful-timeout-below-slowest",
                f"graceful_timeout {grace:g}s is below the slowest request ({slowest_ms} ms): a reload (HUP) or stop "
                "(TERM) kills workers still serving it (502); set graceful_timeout above the slowest request")
        if "upgrade" in does and not settings.get("daemon"):
            add("upgrade-quits-old-workers",
                "binary upgrade without daemon: gunicorn ignores WINCH ('SIGWINCH ignored. Not daemonized'), so the "
                "QUIT that follows is a quick shutdown: requests in flight on the old workers end as 500 "
                "(sync) or 502 (gthread: accepted, unread connections reset), measured on 27.0.1; after USR2, send "
                "TERM to the old master instead (action upgrade-graceful)")
    for a in cell.actions:
        if a["do"] == "rolling":
            _rolling(a, slowest_ms, add)
    for when, do in ((a["at"], str(a["do"])) for a in cell.actions):
        if do == "term":
            add("stop-without-drain",
                f"the term action at {when:g}s stops (or, uWSGI 2.0 without die-on-term, reloads) the only server "
                "while the proxy still routes to it: queued connections are reset and new ones refused or cut "
                "(502); take it out of the load balancer first and wait for the propagation lag (a drain), or "
                "reload with hup")
