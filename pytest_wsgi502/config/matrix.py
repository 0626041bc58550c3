"""The cell matrix: a TOML file of named server configurations, expanded into frozen ``Cell`` values.

Format (see the built-in ``seed_matrix.toml``)::

    [defaults]            # applies to every cell
    max_requests = 500
    [cells.uwsgi-2w]      # the table key is the cell name, and the pytest id
    server = "uwsgi"
    workers = 2
    [cells.uwsgi-8w]
    extends = "uwsgi-2w"  # start from another cell, then override
    workers = 8
    [cells.uwsgi-8w.options]   # raw server settings, passed through (uWSGI ini keys / gunicorn settings)
    harakiri = 30

Unknown keys, wrong types, non-finite or out-of-range numbers and impossible combinations raise ``ConfigError``
(one line, naming the cell and key); the pytest edge shows it as a usage error.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_wsgi502.config import values
from pytest_wsgi502.config.duration import Auto
from pytest_wsgi502.config.duration import parse as parse_duration
from pytest_wsgi502.config.duration import parse_duration as seconds_of
from pytest_wsgi502.config.modes import load_mode
from pytest_wsgi502.config.values import DAY, MAX_CONCURRENCY, MAX_COUNT, MAX_RATE, ConfigError, shown

SEED_MATRIX = Path(__file__).resolve().parent.parent / "seed_matrix.toml"
BUILTIN = {"seed": SEED_MATRIX, "seed-unix": SEED_MATRIX.parent / "seed_unix.toml",
           "scenarios": SEED_MATRIX.parent / "scenarios.toml"}  # --wsgi-matrix-file=NAME

SERVERS = ("uwsgi", "gunicorn")
# what a cell's ``actions`` may do to its server during the load (servers/*.py map each to the server's signal):
# reload = hup = the server's graceful reload (SIGHUP for both; ``reload`` is the first name, kept), term = SIGTERM
# (uWSGI 2.0 without die-on-term: a brutal reload; gunicorn and uWSGI with die-on-term: a graceful stop, and the
# server does not come back), upgrade = gunicorn's binary upgrade (USR2, then WINCH + QUIT to the old master once
# the new one's workers are up), upgrade-graceful = the same with TERM to the old master (its workers finish what
# they accepted), chain-reload = uWSGI's worker-by-worker reload (master FIFO ``c``), rolling = a rolling deploy of
# the cell's ``instances`` behind the load balancer (servers/fleet.py; only with instances > 1, the only action there)
ACTIONS = ("reload", "hup", "term", "upgrade", "upgrade-graceful", "chain-reload", "rolling")
# each server's own actions (a signal or a FIFO command to its master); ``rolling`` is the fleet's, for both
SERVER_ACTIONS = {"uwsgi": ("reload", "hup", "term", "chain-reload"),
                  "gunicorn": ("reload", "hup", "term", "upgrade", "upgrade-graceful")}
_ACTION_KEYS = {"at", "do"}
# a rolling deploy's own keys (durations) and their defaults: ``lag`` = how long the load balancer keeps routing to
# an instance after it is deregistered (an LB's or Kubernetes endpoints' propagation lag), ``prestop`` = the
# instance's preStop sleep before its stop signal (counted from the deregistration, in parallel with the lag),
# ``deregistration_delay`` = how long the LB lets requests in flight on a draining instance finish before it cuts
# them (AWS target groups: 0-3600 s, 300 s by default)
ROLLING_KEYS = {"lag": 0.0, "prestop": 0.0, "deregistration_delay": 300.0}
MAX_ROLLING_SECONDS = 3600.0  # AWS's bound for the deregistration delay; the lag and preStop sleep get the same
MAX_INSTANCES = 64
WORKER_CLASSES = {"uwsgi": ("prefork", "gevent"), "gunicorn": ("sync", "gthread", "gevent")}
DRIVERS = ("mysqlclient", "pymysql")
POOLS = ("none", "sqlalchemy")
SOCKETS = ("tcp", "unix")
# how the proxy in front of a cell behaves (proxy.PROFILES; kept here so the config layer stays import-light)
PROXY_PROFILES = ("alb", "nginx")
SERVER_VERSION = re.compile(r"\d+\.\d+(\.\d+){0,2}")  # a uWSGI release: 2.0.24, 2.0.25.1
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")  # fullmatch: a trailing newline is not a name


@dataclass(frozen=True)
class Cell:
    name: str
    server: str
    description: str = ""
    workers: int = 2
    worker_class: str = ""  # "" = the server's default: prefork (uWSGI) / sync (gunicorn)
    threads: int = 1
    async_cores: int = 100  # gevent greenlets per worker (uWSGI gevent=N, gunicorn worker_connections)
    max_requests: int = 0  # 0 = never recycle
    max_requests_delta: int = 0  # uWSGI >= 2.0.29: worker k recycles at max_requests + (k-1)*delta
    max_requests_jitter: int = 0  # gunicorn: random 0..jitter added per worker
    keepalive: int | None = None  # gunicorn keep-alive seconds (None: gunicorn's default)
    listen: int | None = None  # listen backlog (None: the server's default, uWSGI 100, gunicorn 2048)
    socket: str = "tcp"  # how the proxy reaches the server: tcp (127.0.0.1:port) or unix (a socket file)
    server_version: str = ""  # uWSGI release to run, e.g. "2.0.24" ("" = the installed one); built once, cached
    driver: str = "mysqlclient"
    pool: str = "none"
    pool_size: int = 5
    max_overflow: int = 10
    conn_max_age: int = 0
    mysql_max_connections: int | None = None  # SET GLOBAL max_connections for this cell (restored after it)
    # load: a cell's own values win over the session's (--wsgi-mode, --wsgi-rate, ...)
    load_mode: str = ""  # closed | open | ramp ("" = the session's --wsgi-mode)
    rate: float | None = None
    start_rate: float | None = None
    think_time: float | None = None
    warmup: float | None = None  # seconds at the start sent but not measured (None: the session's --wsgi-warmup)
    concurrency: int | None = None
    duration: float | Auto | None = None  # seconds of load, or auto[:MAX] (config/duration.py); None: the session's
    mix: tuple[Mapping[str, Any], ...] = ()  # [{path, weight, verify_contains, method}], replaces path
    headers: Mapping[str, str] = field(default_factory=dict)  # request headers sent with every request of the load
    # how the proxy in front of this cell behaves: alb | nginx (None: the session's --wsgi-proxy-profile)
    proxy_profile: str | None = None
    # server instances of this cell behind one load balancer (HAProxy when > 1: it drains one at runtime), each
    # with its own port and directory; a rolling deploy replaces them one at a time (action ``rolling``)
    instances: int = 1
    # lifecycle actions sent to the server during the load: [{"at": seconds since the load started, "do": ACTIONS}]
    actions: tuple[Mapping[str, Any], ...] = ()
    path: str | None = None  # request path, {n}: a random integer in 1..n_max (None: the session's --wsgi-path)
    n_max: int = 1000
    verify_contains: str | None = None  # a 2xx body must contain this (None: the session's; "" = off)
    verify_status: str | None = None  # statuses below 400 accepted, e.g. "2xx", "200,302" (None: the session's)
    slo: tuple[str, ...] = ()
    baseline_cell: str | None = None  # compare with this cell of the same matrix, run side by side
    options: Mapping[str, Any] = field(default_factory=dict)  # raw server settings
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment for the server
    # containers backend only: the server container's CPU and memory limits (Docker's --cpus, --memory)
    cpus: float | None = None
    mem_limit: str | None = None  # e.g. "256m", "1g"
    # where each key set in the matrix came from: "cell" (the cell or a cell it extends) or "matrix-defaults"
    # ([defaults]); a key not listed is the built-in default. Precedence against the session: config/layers.py.
    origin: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def effective_worker_class(self) -> str:
        return self.worker_class or WORKER_CLASSES[self.server][0]

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("origin")
        if isinstance(self.duration, Auto):
            d["duration"] = str(self.duration)
        d["slo"] = list(self.slo)
        d["mix"] = [dict(m) for m in self.mix]
        d["headers"] = dict(self.headers)
        d["actions"] = [dict(a) for a in self.actions]
        d["options"] = dict(self.options)
        d["env"] = dict(self.env)
        return d


_FIELDS = {f.name: f for f in dataclasses.fields(Cell)}
_INT_FIELDS = {n for n, f in _FIELDS.items() if f.type in ("int", "int | None")}
_STR_FIELDS = {n for n, f in _FIELDS.items() if f.type in ("str", "str | None")}
_FLOAT_FIELDS = {n for n, f in _FIELDS.items() if f.type == "float | None"}
_MIX_KEYS = {"path", "weight", "verify_contains", "verify_status", "verify_content_type", "method"}
# (lo, hi) of every number a cell takes; beyond them a value is a typo that would overflow or hang a run
_BOUNDS: dict[str, tuple[float, float]] = {
    "workers": (1, MAX_CONCURRENCY), "threads": (0, MAX_CONCURRENCY), "async_cores": (0, MAX_CONCURRENCY),
    "max_requests": (0, MAX_COUNT), "max_requests_delta": (0, MAX_COUNT), "max_requests_jitter": (0, MAX_COUNT),
    "keepalive": (0, DAY), "listen": (0, MAX_CONCURRENCY), "pool_size": (0, MAX_CONCURRENCY),
    "max_overflow": (0, MAX_CONCURRENCY), "conn_max_age": (0, DAY), "mysql_max_connections": (1, MAX_CONCURRENCY),
    "concurrency": (1, MAX_CONCURRENCY), "n_max": (1, MAX_COUNT), "instances": (1, MAX_INSTANCES),
    "start_rate": (0, MAX_RATE), "think_time": (0, DAY), "warmup": (0, DAY),
}
_OPEN_BOUNDS: dict[str, tuple[float, float]] = {"rate": (0, MAX_RATE), "cpus": (0, 1024)}  # > lo, <= hi
_MAX_WEIGHT = 1e9
_OPTION_KEY = re.compile(r"[A-Za-z0-9_-]+")  # uWSGI ini keys (add-header) and gunicorn settings (preload_app)
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_INT_OPTION = 2**63 - 1  # what a TOML integer can hold; the servers read 64-bit values at most


def load_matrix(path: Path | None = None) -> list[Cell]:
    """Read and expand a matrix file. Every problem (missing, unreadable, a directory, not UTF-8, bad TOML, a
    NUL in the name) is one ConfigError line."""
    path = path or SEED_MATRIX
    where = _label(str(path))
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"matrix file not found: {where}") from None
    except IsADirectoryError:
        raise ConfigError(f"matrix file {where} is a directory; give a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"matrix file {where}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"matrix file {where}: invalid TOML: {_one_line(exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"matrix file {where}: not UTF-8 text (TOML files are UTF-8)") from None
    except ValueError as exc:  # a NUL in the path: open() refuses it
        raise ConfigError(f"matrix file {where}: {_one_line(exc)}") from None
    return expand(data, where)


def expand(data: Mapping[str, Any], where: str = "matrix") -> list[Cell]:
    """The cells of a parsed matrix, in file order. Raises ConfigError (one line, naming the cell and key)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: a matrix is a table with [defaults] and [cells.NAME], got {shown(data)}")
    unknown = set(data) - {"defaults", "cells"}
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {_keys(unknown)}; expected [defaults], [cells.NAME]")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"{where}: [defaults] must be a table, got {shown(defaults)}")
    cells_raw = data.get("cells", {})
    if not isinstance(cells_raw, Mapping) or not cells_raw:
        raise ConfigError(f"{where}: no cells defined; add at least one [cells.NAME] table")
    _check_table(defaults, f"{where} [defaults]", allow_extends=False)
    for name, raw in cells_raw.items():
        at = f"{where} cell {shown(name)}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{at}: names use a-z, 0-9, '-', '_', '.' (at most 100; they become pytest ids)")
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: cells.{name} must be a table, got {shown(raw)}")
        _check_table(raw, at, allow_extends=True)
        parent = raw.get("extends")
        if parent is not None and (not isinstance(parent, str) or parent not in cells_raw):
            raise ConfigError(f"{at}: extends unknown cell {shown(parent)}; known: {_keys(cells_raw, sort=False)}")

    resolved: dict[str, dict[str, Any]] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if name in resolved:
            return resolved[name]
        if name in chain:
            raise ConfigError(f"{where}: 'extends' cycle: {' -> '.join((*chain, name))}")
        raw = cells_raw[name]
        base: dict[str, Any] = {}
        parent = raw.get("extends")
        if parent is not None:
            base = {k: v for k, v in resolve(parent, (*chain, name)).items() if k != "description"}
        merged = {**base, **{k: v for k, v in raw.items() if k != "extends"}}
        for table in ("options", "env"):  # merge tables key by key instead of replacing them
            if table in raw and table in base:
                merged[table] = {**base[table], **raw[table]}
        resolved[name] = merged
        return merged

    cells = []
    for name in cells_raw:
        own = resolve(name, ())  # the cell and the cells it extends, without [defaults]
        merged = {**defaults, **own}
        for table in ("options", "env"):
            if table in own and table in defaults:
                merged[table] = {**defaults[table], **own[table]}
        origin = {k: "cell" if k in own else "matrix-defaults" for k in merged if k in _FIELDS}
        cells.append(dataclasses.replace(_make_cell(name, merged, where), origin=origin))
    for i, cell in enumerate(cells):
        if cell.baseline_cell == cell.name and cell.origin.get("baseline_cell") == "matrix-defaults":
            cells[i] = dataclasses.replace(cell, baseline_cell=None)  # [defaults] names the baseline for the others
        elif cell.baseline_cell is not None and (cell.baseline_cell == cell.name
                                                  or cell.baseline_cell not in cells_raw):
            raise ConfigError(f"{where} cell {shown(cell.name)}: baseline_cell {shown(cell.baseline_cell)} must name "
                              f"another cell of this matrix; known: {_keys(cells_raw, sort=False)}")
    return cells


def _check_table(raw: Mapping[str, Any], where: str, allow_extends: bool) -> None:
    """Known keys only; ``options`` and ``env`` are tables of safe keys and one-line scalar values (checked here,
    before they are merged through ``extends``)."""
    allowed = set(_FIELDS) - {"name", "origin"} | ({"extends"} if allow_extends else set())
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {_keys(unknown)}; allowed: {', '.join(sorted(allowed))}")
    if "options" in raw:
        _check_options(raw["options"], where)
    if "env" in raw:
        _check_env(raw["env"], where)


def _check_options(options: Any, where: str) -> None:
    """Raw server settings: ``[A-Za-z0-9_-]+`` keys; values a string (one line), integer, finite number, boolean
    or a list of those (a repeated uWSGI key). The renderers quote them again; this refuses what no quoting can
    make safe (a newline adding an ini line, nan as a timeout)."""
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: options must be a table of server settings, got {shown(options)}")
    for key, value in options.items():
        if not isinstance(key, str) or not _OPTION_KEY.fullmatch(key):
            raise ConfigError(f"{where}: options key {shown(key)} must be letters, digits, '_' or '-'")
        for item in value if isinstance(value, list) else [value]:
            _option_scalar(item, f"{where}: options.{key}")


def _option_scalar(value: Any, what: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        values.number(value, what, -_MAX_INT_OPTION, _MAX_INT_OPTION, integer=True)
    elif isinstance(value, float):
        values.number(value, what, -float(_MAX_INT_OPTION), float(_MAX_INT_OPTION))
    elif isinstance(value, str):
        values.single_line(value, what)
    else:
        raise ConfigError(f"{what} must be a string, number, boolean or a list of them, got {shown(value)}")


def _check_env(env: Any, where: str) -> None:
    if not isinstance(env, Mapping):
        raise ConfigError(f"{where}: env must be a table of NAME = value, got {shown(env)}")
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise ConfigError(f"{where}: env name {shown(key)} must be letters, digits and '_' (not first a digit)")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: env.{key} must be a string or a number, got {shown(value)}")
        if isinstance(value, float):
            values.number(value, f"{where}: env.{key}", -float(_MAX_INT_OPTION), float(_MAX_INT_OPTION))
        values.single_line(str(value), f"{where}: env.{key}")


def _make_cell(name: str, raw: dict[str, Any], where: str) -> Cell:
    at = f"{where} cell {shown(name)}"
    for key, value in raw.items():
        if value is None and key in _FIELDS and _FIELDS[key].default is not None:
            raise ConfigError(f"{at}: {key} must be set to a value, got None")
        if key in _INT_FIELDS and value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{at}: {key} must be an integer, got {shown(value)}")
            lo, hi = _BOUNDS[key]
            values.number(value, f"{at}: {key}", lo, hi, integer=True)
        if key in _STR_FIELDS and value is not None and not isinstance(value, str):
            raise ConfigError(f"{at}: {key} must be a string, got {shown(value)}")
        if key in _FLOAT_FIELDS and value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{at}: {key} must be a number, got {shown(value)}")
            if key in _OPEN_BOUNDS:
                lo, hi = _OPEN_BOUNDS[key]
                values.number(value, f"{at}: {key}", lo, hi, lo_open=True)
            else:
                lo, hi = _BOUNDS[key]
                values.number(value, f"{at}: {key}", lo, hi)
    if "server" not in raw:
        raise ConfigError(f"{at}: missing 'server' (one of {', '.join(SERVERS)})")
    server = raw["server"]
    if server not in SERVERS:
        raise ConfigError(f"{at}: server {shown(server)} unknown; choose one of {', '.join(SERVERS)}")
    wc = raw.get("worker_class", "")
    if wc and wc not in WORKER_CLASSES[server]:
        choices = ", ".join(WORKER_CLASSES[server])
        raise ConfigError(f"{at}: worker_class {shown(wc)} is not a {server} worker; choose one of {choices}")
    for key, allowed in (("driver", DRIVERS), ("pool", POOLS), ("socket", SOCKETS)):
        if key in raw and raw[key] not in allowed:
            raise ConfigError(f"{at}: {key} {shown(raw[key])} unknown; choose one of {', '.join(allowed)}")
    if raw.get("proxy_profile") is not None and raw["proxy_profile"] not in PROXY_PROFILES:
        raise ConfigError(f"{at}: proxy_profile {shown(raw['proxy_profile'])} unknown; choose one of "
                          f"{', '.join(PROXY_PROFILES)} (or leave it out: the session's --wsgi-proxy-profile)")
    if raw.get("workers", 1) < 1:
        raise ConfigError(f"{at}: workers must be >= 1")
    only = {"max_requests_delta": "uwsgi", "max_requests_jitter": "gunicorn", "keepalive": "gunicorn"}
    for key, srv in only.items():
        if raw.get(key) and server != srv:
            raise ConfigError(f"{at}: {key} is a {srv} setting; this cell runs {server}")
    if raw.get("server_version") and server != "uwsgi":
        raise ConfigError(f"{at}: server_version is for uwsgi cells (pin gunicorn with pip in the environment)")
    if raw.get("server_version") and not SERVER_VERSION.fullmatch(raw["server_version"]):
        raise ConfigError(f"{at}: server_version must be a release like 2.0.24, got {shown(raw['server_version'])}")
    if raw.get("mem_limit") is not None and not _mem_limit_ok(raw["mem_limit"]):
        raise ConfigError(f"{at}: mem_limit must look like 256m, 1g or 512k (at most 1024g), "
                          f"got {shown(raw['mem_limit'])}")
    if raw.get("cpus") is not None and raw["cpus"] == 0:
        raise ConfigError(f"{at}: cpus must be > 0")
    if raw.get("path") is not None:
        values.origin_form(raw["path"], f"{at}: path")
    if raw.get("verify_contains") is not None:
        _text(raw["verify_contains"], f"{at}: verify_contains")
    if raw.get("verify_status") is not None:
        parse_statuses(raw["verify_status"], f"{at}: verify_status")
    if raw.get("load_mode", "") != "":
        load_mode(raw["load_mode"], f"{at}: load_mode")
    mix = raw.get("mix", [])
    if not isinstance(mix, list | tuple) or not all(isinstance(m, Mapping) for m in mix):
        raise ConfigError(f"{at}: mix must be a list of tables, e.g. mix = [{{path = \"/a\", weight = 3}}]")
    for i, m in enumerate(mix):
        bad = set(m) - _MIX_KEYS
        if bad or "path" not in m:
            raise ConfigError(f"{at}: each mix entry needs path (starting with '/') and may have "
                              f"{', '.join(sorted(_MIX_KEYS - {'path'}))}; got {shown(dict(m))}")
        values.origin_form(m["path"], f"{at}: mix[{i}].path")
        weight = m.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ConfigError(f"{at}: mix weight must be a number > 0, got {shown(weight)}")
        values.number(weight, f"{at}: mix[{i}].weight", 0, _MAX_WEIGHT, lo_open=True)
        if "method" in m:
            values.method(m["method"], f"{at}: mix[{i}].method")
        if "verify_contains" in m:
            _text(m["verify_contains"], f"{at}: mix[{i}].verify_contains")
        if "verify_status" in m:
            parse_statuses(m["verify_status"], f"{at}: mix[{i}].verify_status")
        if "verify_content_type" in m:
            content_type(m["verify_content_type"], f"{at}: mix[{i}].verify_content_type")
    actions = _actions(raw.get("actions", []), at, raw.get("duration"), server, raw.get("instances", 1))
    if raw.get("instances", 1) > 1:
        _fleet(raw, at)
    headers = _headers(raw.get("headers", {}), at)
    slo = raw.get("slo", ())
    if isinstance(slo, str):
        slo = [slo]
    if not isinstance(slo, list | tuple):
        raise ConfigError(f"{at}: slo must be a string or a list of strings like [\"p99<500ms\"], got {shown(slo)}")
    from pytest_wsgi502.slo import parse_slos

    try:
        slos = tuple(s.text for s in parse_slos(list(slo)))
    except ConfigError as exc:
        raise ConfigError(f"{at}: {exc}") from None
    values_ = {k: v for k, v in raw.items() if k in _FIELDS}
    if raw.get("duration") is not None:
        values_["duration"] = parse_duration(raw["duration"], f"{at}: duration")
    values_.update(name=name, slo=slos, options=dict(raw.get("options", {})), mix=tuple(dict(m) for m in mix),
                   actions=actions, headers=headers,
                   env={k: str(v) for k, v in raw.get("env", {}).items()})
    return Cell(**values_)


def _fleet(raw: Mapping[str, Any], at: str) -> None:
    """What instances > 1 needs: a load balancer that drains one instance at runtime (HAProxy; nginx 1.22 has none)
    and a TCP port per instance that its replacement takes over."""
    n = raw["instances"]
    if raw.get("proxy_profile") == "nginx":
        raise ConfigError(f"{at}: instances = {n} needs a load balancer that drains one instance at runtime (HAProxy); "
                          "proxy_profile nginx has no runtime drain: drop proxy_profile or use instances = 1")
    if raw.get("socket", "tcp") != "tcp":
        raise ConfigError(f"{at}: instances = {n} needs socket = \"tcp\" (a replacement instance listens on its "
                          "predecessor's port)")


def _rolling(a: Mapping[str, Any], where: str) -> dict[str, float]:
    """A rolling action's own keys (``ROLLING_KEYS``), each a duration of 0 to ``MAX_ROLLING_SECONDS``."""
    out = {}
    for key, default in ROLLING_KEYS.items():
        if key not in a:
            out[key] = default
            continue
        seconds = a[key]
        if isinstance(seconds, str):
            try:
                seconds = seconds_of(seconds)
            except ConfigError as exc:
                raise ConfigError(f"{where}.{key}: {exc}") from None
        out[key] = float(values.number(seconds, f"{where}.{key}", 0, MAX_ROLLING_SECONDS))
    return out


def _actions(value: Any, at: str, duration: Any, server: str = "uwsgi",
             instances: int = 1) -> tuple[dict[str, Any], ...]:
    """``actions = [{at = "5s", do = "reload"}]``: each ``at`` a duration within the cell's own duration (when it
    has one; the run checks it against the session's), each ``do`` one of the server's ``SERVER_ACTIONS``; sorted
    by time. ``rolling`` takes its own keys (``ROLLING_KEYS``) and needs instances > 1, where it is the only
    action (the others signal one server)."""
    if not isinstance(value, list | tuple) or not all(isinstance(a, Mapping) for a in value):
        raise ConfigError(f"{at}: actions must be a list of tables, e.g. actions = [{{at = \"5s\", do = \"reload\"}}]")
    length: float | None = None
    if duration is not None:
        parsed = parse_duration(duration, f"{at}: duration")
        length = parsed.cap if isinstance(parsed, Auto) else parsed
    out = []
    for i, a in enumerate(value):
        rolling = a.get("do") == "rolling"
        if rolling and (not set(a) >= _ACTION_KEYS or set(a) - _ACTION_KEYS - set(ROLLING_KEYS)):
            raise ConfigError(f"{at}: actions[{i}] (rolling) needs at and do and may have "
                              f"{', '.join(ROLLING_KEYS)} (durations like \"1s\"); got {shown(dict(a))}")
        if not rolling and set(a) != _ACTION_KEYS:
            raise ConfigError(f"{at}: actions[{i}] needs exactly at (a duration like \"5s\") and do (one of "
                              f"{', '.join(ACTIONS)}); got {shown(dict(a))}")
        when = parse_duration(a["at"], f"{at}: actions[{i}].at")
        if isinstance(when, Auto):
            raise ConfigError(f"{at}: actions[{i}].at must be a time like \"5s\", not auto")
        if length is not None and when >= length:
            raise ConfigError(f"{at}: actions[{i}].at = {when:g}s is not within the cell's duration ({length:g}s)")
        if a["do"] not in ACTIONS:
            raise ConfigError(f"{at}: actions[{i}].do {shown(a['do'])} unknown; choose one of {', '.join(ACTIONS)}")
        if not rolling and a["do"] not in SERVER_ACTIONS[server]:
            raise ConfigError(f"{at}: actions[{i}].do {shown(a['do'])} is not a {server} action; choose one of "
                              f"{', '.join(SERVER_ACTIONS[server])}")
        if rolling and instances < 2:
            raise ConfigError(f"{at}: actions[{i}].do rolling replaces instances one at a time: set instances >= 2 "
                              f"(got {instances})")
        if not rolling and instances > 1:
            raise ConfigError(f"{at}: actions[{i}].do {shown(a['do'])} signals one server; with instances = "
                              f"{instances} the only action is rolling")
        out.append({"at": when, "do": a["do"], **(_rolling(a, f"{at}: actions[{i}]") if rolling else {})})
    return tuple(sorted(out, key=lambda a: a["at"]))


def _headers(value: Any, at: str) -> dict[str, str]:
    """``headers = {Cookie = "..."}``: request headers for every request of the cell's load (names are tokens,
    values one line of printable text; Host, Content-Length and Transfer-Encoding are the engine's)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{at}: headers must be a table of Name = \"value\", got {shown(value)}")
    out = {}
    for name, text in value.items():
        name, text = values.header(name, text, f"{at}: headers")
        if name.lower() in ("host", "content-length", "transfer-encoding"):
            raise ConfigError(f"{at}: headers: {name} is set by the load engine, not by the cell")
        if len(text) > 1_000_000:
            raise ConfigError(f"{at}: headers {name}: value longer than 1,000,000 characters")
        out[name] = text
    return out


_STATUS = re.compile(r"([1-3])(xx|[0-9][0-9])")


def parse_statuses(value: Any, what: str = "verify_status") -> frozenset[int]:
    """The statuses below 400 a response may have: ``2xx`` (the default), ``200``, ``200,302``, ``2xx,3xx``.
    4xx and 5xx are errors whatever this says (they count in error_rate), so they are refused here."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be statuses like 2xx, 200 or '200,302', got {shown(value)}")
    out: set[int] = set()
    for part in value.split(","):
        m = _STATUS.fullmatch(part.strip().lower())
        if m is None:
            raise ConfigError(f"{what} must be statuses below 400 like 2xx, 200 or '200,302' (4xx and 5xx are "
                              f"always errors), got {shown(value)}")
        lo = int(m[1]) * 100
        out.update(range(lo, lo + 100) if m[2] == "xx" else {lo + int(m[2])})
    return frozenset(out)


_MEDIA = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")


def content_type(value: Any, what: str = "verify_content_type") -> str:
    """A media type a 2xx's Content-Type must start with (``text/html``, ``application/json``); "" = unchecked;
    ``auto``: the media type of the endpoint's first 2xx in the run (no probe request: a probe of a path with side
    effects, such as a fault-injection path, would change what is measured)."""
    if value in ("", "auto"):
        return str(value)
    if not isinstance(value, str) or not _MEDIA.fullmatch(value):
        raise ConfigError(f"{what} must be a media type like text/html or application/json, got {shown(value)}")
    return value.lower()


def cell_name(value: Any, what: str = "name") -> str:
    """A cell's name (it becomes a pytest id, a directory and a table row): a-z, 0-9, '-', '_', '.'."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(f"{what} {shown(value)}: names use a-z, 0-9, '-', '_', '.' (at most 100)")
    return value


def _text(value: Any, what: str) -> None:
    if not isinstance(value, str) or len(value) > 8000:
        raise ConfigError(f"{what} must be a string of at most 8000 characters, got {shown(value)}")


def _mem_limit_ok(value: Any) -> bool:
    m = re.fullmatch(r"([0-9]{1,12})(\.[0-9]{1,6})?([kmg]?)", value.lower()) if isinstance(value, str) else None
    if not m:
        return False
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m[3]]
    return float(m[1] + (m[2] or "")) * scale <= 1024 * 2**30


def _label(path: str) -> str:
    """A file name as it can appear in a one-line message (``repr`` only when it has odd characters)."""
    return path if path.isprintable() else shown(path, 200)


def _keys(keys: Iterable[Any], sort: bool = True) -> str:
    """Keys for a message: plain when they are plain names, else ``repr`` (a newline never splits the line)."""
    shown_keys = [k if isinstance(k, str) and re.fullmatch(r"[\w.-]{1,60}", k, re.ASCII) else shown(k)
                  for k in keys]
    return ", ".join(sorted(shown_keys) if sort else shown_keys)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def select(cells: list[Cell], names: str | None) -> list[Cell]:
    """Keep the cells named in a comma-separated list, in the list's order; unknown names are an error."""
    if not names:
        return cells
    by_name = {c.name: c for c in cells}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise ConfigError(f"--wsgi-cells: unknown cell(s) {_keys(unknown, sort=False)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in wanted]
