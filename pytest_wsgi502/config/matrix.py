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

Unknown keys, wrong types and impossible combinations raise ``pytest.UsageError`` naming the cell and key.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SEED_MATRIX = Path(__file__).resolve().parent.parent / "seed_matrix.toml"
BUILTIN = {"seed": SEED_MATRIX, "seed-unix": SEED_MATRIX.parent / "seed_unix.toml",
           "scenarios": SEED_MATRIX.parent / "scenarios.toml"}  # --wsgi-matrix-file=NAME

SERVERS = ("uwsgi", "gunicorn")
WORKER_CLASSES = {"uwsgi": ("prefork", "gevent"), "gunicorn": ("sync", "gthread", "gevent")}
DRIVERS = ("mysqlclient", "pymysql")
POOLS = ("none", "sqlalchemy")
SOCKETS = ("tcp", "unix")
SERVER_VERSION = re.compile(r"\d+\.\d+(\.\d+){0,2}")  # a uWSGI release: 2.0.24, 2.0.25.1
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


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
    concurrency: int | None = None
    duration: float | None = None  # seconds of load for this cell (None: the session's --wsgi-duration)
    mix: tuple[Mapping[str, Any], ...] = ()  # [{path, weight, verify_contains, method}], replaces path
    path: str | None = None  # request path, {n}: a random integer in 1..n_max (None: the session's --wsgi-path)
    n_max: int = 1000
    verify_contains: str | None = None  # a 2xx body must contain this (None: the session's; "" = off)
    slo: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)  # raw server settings
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment for the server
    # containers backend only: the server container's CPU and memory limits (Docker's --cpus, --memory)
    cpus: float | None = None
    mem_limit: str | None = None  # e.g. "256m", "1g"

    @property
    def effective_worker_class(self) -> str:
        return self.worker_class or WORKER_CLASSES[self.server][0]

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["slo"] = list(self.slo)
        d["mix"] = [dict(m) for m in self.mix]
        d["options"] = dict(self.options)
        d["env"] = dict(self.env)
        return d


_FIELDS = {f.name: f for f in dataclasses.fields(Cell)}
_INT_FIELDS = {n for n, f in _FIELDS.items() if f.type in ("int", "int | None")}
_STR_FIELDS = {n for n, f in _FIELDS.items() if f.type in ("str", "str | None")}
_FLOAT_FIELDS = {n for n, f in _FIELDS.items() if f.type == "float | None"}
LOAD_MODES = ("closed", "open", "ramp")
_MIX_KEYS = {"path", "weight", "verify_contains", "method"}


def load_matrix(path: Path | None = None) -> list[Cell]:
    path = path or SEED_MATRIX
    where = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise pytest.UsageError(f"matrix file not found: {where}") from None
    except tomllib.TOMLDecodeError as exc:
        raise pytest.UsageError(f"matrix file {where}: invalid TOML: {exc}") from None
    return expand(data, where)


def expand(data: Mapping[str, Any], where: str = "matrix") -> list[Cell]:
    unknown = set(data) - {"defaults", "cells"}
    if unknown:
        raise pytest.UsageError(
            f"{where}: unknown top-level key(s) {sorted(unknown)}; expected [defaults], [cells.NAME]"
        )
    defaults = data.get("defaults", {})
    cells_raw = data.get("cells", {})
    if not isinstance(cells_raw, Mapping) or not cells_raw:
        raise pytest.UsageError(f"{where}: no cells defined; add at least one [cells.NAME] table")
    _check_keys(defaults, f"{where} [defaults]", allow_extends=False)

    resolved: dict[str, dict[str, Any]] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if name in resolved:
            return resolved[name]
        if name in chain:
            raise pytest.UsageError(f"{where}: 'extends' cycle: {' -> '.join((*chain, name))}")
        raw = cells_raw[name]
        if not isinstance(raw, Mapping):
            raise pytest.UsageError(f"{where}: cells.{name} must be a table")
        _check_keys(raw, f"{where} cell {name!r}", allow_extends=True)
        base: dict[str, Any] = dict(defaults)
        parent = raw.get("extends")
        if parent is not None:
            if parent not in cells_raw:
                raise pytest.UsageError(
                    f"{where} cell {name!r}: extends unknown cell {parent!r}; known: {', '.join(cells_raw)}"
                )
            base = {k: v for k, v in resolve(parent, (*chain, name)).items() if k != "description"}
        merged = {**base, **{k: v for k, v in raw.items() if k != "extends"}}
        for table in ("options", "env"):  # merge tables key by key instead of replacing them
            if table in raw and table in base:
                merged[table] = {**base[table], **raw[table]}
        resolved[name] = merged
        return merged

    return [_make_cell(name, resolve(name, ()), where) for name in cells_raw]


def _check_keys(raw: Mapping[str, Any], where: str, allow_extends: bool) -> None:
    allowed = set(_FIELDS) - {"name"} | ({"extends"} if allow_extends else set())
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise pytest.UsageError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _make_cell(name: str, raw: dict[str, Any], where: str) -> Cell:
    at = f"{where} cell {name!r}"
    if not _NAME.match(name):
        raise pytest.UsageError(f"{at}: names use a-z, 0-9, '-', '_', '.' (they become pytest ids)")
    for key, value in raw.items():
        if key in _INT_FIELDS and not (isinstance(value, int) and not isinstance(value, bool)):
            raise pytest.UsageError(f"{at}: {key} must be an integer, got {value!r}")
        if key in _INT_FIELDS and value < 0:
            raise pytest.UsageError(f"{at}: {key} must be >= 0, got {value}")
        if key in _STR_FIELDS and not isinstance(value, str):
            raise pytest.UsageError(f"{at}: {key} must be a string, got {value!r}")
        if key in _FLOAT_FIELDS and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise pytest.UsageError(f"{at}: {key} must be a number >= 0, got {value!r}")
        if key in ("options", "env") and not isinstance(value, Mapping):
            raise pytest.UsageError(f"{at}: {key} must be a table")
    if "server" not in raw:
        raise pytest.UsageError(f"{at}: missing 'server' (one of {', '.join(SERVERS)})")
    server = raw["server"]
    if server not in SERVERS:
        raise pytest.UsageError(f"{at}: server {server!r} unknown; choose one of {', '.join(SERVERS)}")
    wc = raw.get("worker_class", "")
    if wc and wc not in WORKER_CLASSES[server]:
        raise pytest.UsageError(
            f"{at}: worker_class {wc!r} is not a {server} worker; choose one of {', '.join(WORKER_CLASSES[server])}"
        )
    for key, allowed in (("driver", DRIVERS), ("pool", POOLS), ("socket", SOCKETS)):
        if key in raw and raw[key] not in allowed:
            raise pytest.UsageError(f"{at}: {key} {raw[key]!r} unknown; choose one of {', '.join(allowed)}")
    if raw.get("workers", 1) < 1:
        raise pytest.UsageError(f"{at}: workers must be >= 1")
    only = {"max_requests_delta": "uwsgi", "max_requests_jitter": "gunicorn", "keepalive": "gunicorn"}
    for key, srv in only.items():
        if raw.get(key) and server != srv:
            raise pytest.UsageError(f"{at}: {key} is a {srv} setting; this cell runs {server}")
    if raw.get("server_version") and server != "uwsgi":
        raise pytest.UsageError(f"{at}: server_version is for uwsgi cells (pin gunicorn with pip in the environment)")
    if raw.get("server_version") and not SERVER_VERSION.fullmatch(raw["server_version"]):
        raise pytest.UsageError(f"{at}: server_version must be a release like 2.0.24, got {raw['server_version']!r}")
    if "mem_limit" in raw and not re.fullmatch(r"[0-9]+(\.[0-9]+)?[kmg]?", str(raw["mem_limit"]).lower()):
        raise pytest.UsageError(f"{at}: mem_limit must look like 256m, 1g or 512k, got {raw['mem_limit']!r}")
    if raw.get("cpus") is not None and raw["cpus"] == 0:
        raise pytest.UsageError(f"{at}: cpus must be > 0")
    if not str(raw.get("path") or "/").startswith("/"):
        raise pytest.UsageError(f"{at}: path must start with '/'")
    if raw.get("load_mode", "") not in ("", *LOAD_MODES):
        raise pytest.UsageError(f"{at}: load_mode {raw['load_mode']!r} unknown; choose one of {', '.join(LOAD_MODES)}")
    mix = raw.get("mix", [])
    if not isinstance(mix, list) or not all(isinstance(m, Mapping) for m in mix):
        raise pytest.UsageError(f"{at}: mix must be a list of tables, e.g. mix = [{{path = \"/a\", weight = 3}}]")
    for m in mix:
        bad = sorted(set(m) - _MIX_KEYS)
        if bad or "path" not in m or not str(m["path"]).startswith("/"):
            raise pytest.UsageError(f"{at}: each mix entry needs path (starting with '/') and may have "
                                    f"{', '.join(sorted(_MIX_KEYS - {'path'}))}; got {dict(m)}")
        weight = m.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            raise pytest.UsageError(f"{at}: mix weight must be a number > 0, got {weight!r}")
    slo = raw.get("slo", ())
    if isinstance(slo, str):
        slo = [slo]
    from pytest_wsgi502.slo import parse_slos

    try:
        slos = tuple(s.text for s in parse_slos(list(slo)))
    except pytest.UsageError as exc:
        raise pytest.UsageError(f"{at}: {exc}") from None
    values = {k: v for k, v in raw.items() if k in _FIELDS}
    values.update(name=name, slo=slos, options=dict(raw.get("options", {})), mix=tuple(dict(m) for m in mix),
                  env={k: str(v) for k, v in raw.get("env", {}).items()})
    return Cell(**values)


def select(cells: list[Cell], names: str | None) -> list[Cell]:
    """Keep the cells named in a comma-separated list, in the list's order; unknown names are an error."""
    if not names:
        return cells
    by_name = {c.name: c for c in cells}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise pytest.UsageError(
            f"--wsgi-cells: unknown cell(s) {', '.join(unknown)}; known: {', '.join(by_name)}"
        )
    return [by_name[n] for n in wanted]
