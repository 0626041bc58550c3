"""Effective settings, each with the source it came from (option > env > ini > default).

pytest-django prints where its settings came from; we do the same in the header so a reader of a CI log
knows why a run used 5 s instead of 10 s.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_wsgi502.config import values
from pytest_wsgi502.config.duration import Auto, parse_duration
from pytest_wsgi502.config.duration import parse as parse_cell_duration
from pytest_wsgi502.config.modes import load_mode
from pytest_wsgi502.config.shard import parse as parse_shard
from pytest_wsgi502.config.values import DAY, MAX_CONCURRENCY, MAX_COUNT, MAX_RATE, ConfigError, shown


def _integer(lo: int, hi: int) -> Callable[[str], int]:
    """A converter for whole numbers in [lo, hi] (underscores allowed: 1_000_000)."""

    def convert(text: str) -> int:
        return int(values.number(text, "the value", lo, hi, integer=True))

    return convert


def _rate(text: str) -> float:
    return float(values.number(text, "a rate in requests/s", 0, MAX_RATE, lo_open=True))


def _load_duration(text: str) -> float | Auto:
    """The load's duration: a length (1ms to 24h) or auto[:MAX] (config/duration.py)."""
    return parse_cell_duration(text, "")


def _duration(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
    def convert(text: str) -> float:
        return float(values.number(parse_duration(text), "the duration in seconds", lo, hi, lo_open=lo_open))

    return convert


def _idle_timeout(text: str) -> float:
    """nginx reads its timeouts in whole seconds: a fraction is rounded up (0.5 -> 1 s; the header says so)."""
    value = values.number(parse_duration(text), "the timeout in seconds", 0, DAY, lo_open=True)
    return float(math.ceil(value))


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"not a boolean: {shown(text)} (use true or false)")


def _choice(what: str, choices: Callable[[], tuple[str, ...]]) -> Callable[[str], str]:
    """A validator for one of a fixed set of words; ``choices`` is read when called (the proxy profiles live in
    config/matrix.py, which imports this module)."""

    def check(text: str) -> str:
        known = choices()
        if text not in known:
            raise ConfigError(f"unknown {what} {shown(text)}; choose one of: {', '.join(known)}")
        return text

    return check


def _proxy_profiles() -> tuple[str, ...]:
    from pytest_wsgi502.config.matrix import PROXY_PROFILES  # pure, stdlib only

    return tuple(PROXY_PROFILES)


def _hostport(text: str) -> str:
    """HOST:PORT or [v6]:PORT, one line; the glue checks it with load.distributed.parse_master (the config layer
    does not import the load layer) and whether it is loopback."""
    return values.single_line(text, "the address").strip()


def _str(text: str) -> str:
    """Free text that ends up in a path, a config file or a command line: one line, no control characters."""
    return values.single_line(text, "the value")


def _text(text: str) -> str:
    """A response-body substring (``verify_contains``): any text up to 8000 characters."""
    if not isinstance(text, str) or len(text) > 8000:
        raise ConfigError(f"must be text of at most 8000 characters, got {shown(text)}")
    return text


def _path(text: str) -> str:
    return values.origin_form(text, "the request path")


def _app(text: str) -> str:
    return values.wsgi_app(text, "the WSGI app")


def _module(text: str) -> str:
    return values.dotted(text, "the settings module")


def _command(text: str) -> str:
    """The setup command: one line; ``none`` (or ``off``, ``false``) runs none (a plain WSGI app)."""
    value = values.single_line(text, "the command").strip()
    return "" if value.lower() in NO_COMMAND else value


def _db(text: str) -> str:
    if text not in DB_MODES:
        raise ConfigError(f"unknown database {shown(text)}; choose one of: {', '.join(DB_MODES)}")
    return text


def _statuses(text: str) -> str:
    from pytest_wsgi502.config.matrix import parse_statuses  # pure, stdlib only

    parse_statuses(text)
    return text


def _slo_list(text: str) -> tuple[str, ...]:
    from pytest_wsgi502.slo import parse_slos  # pure, cheap

    return tuple(s.text for s in parse_slos(text))


def _checks(text: str) -> tuple[Any, ...]:
    from pytest_wsgi502.config.checks import parse_checks  # pure, stdlib only

    return parse_checks(text)


def _target_url(text: str) -> str:
    """--wsgi-target: an already running service's origin, ``http://host[:port]`` (the request path is wsgi_path
    or the mix). Checked here without resolving the name; whether it is loopback is decided where the load starts
    (the engine resolves once and connects only to the addresses it checked)."""
    from urllib.parse import urlsplit

    raw = values.single_line(text, "the target URL").strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"not a URL: {shown(text)} ({exc})") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"not an http://host[:port] URL: {shown(text)} (the load engine speaks plain HTTP)")
    if parts.username is not None or parts.query or parts.fragment or parts.path not in ("", "/") or "?" in raw:
        raise ConfigError(f"the target is an origin only, http://host[:port], got {shown(text)} (the request path "
                          "goes in wsgi_path or a mix)")
    if port == 0:
        raise ConfigError(f"port 0 in {shown(text)}: give the port the service listens on")
    return raw.rstrip("/")


def _save_name(text: str) -> str:
    name = str(text).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise ConfigError(f"not a run name: {shown(text)} (letters, digits, '.', '_', '-')")
    return name


NO_COMMAND = ("none", "off")  # wsgi_setup_command values that mean "run no setup command"
# the session's database: auto = MariaDB unless the app is not Django and runs no setup command (then none)
DB_MODES = ("auto", "mysql", "none")
BACKENDS = ("local", "containers", "auto")  # auto: containers when a Docker-compatible engine answers
# CPU isolation of the load engine and proxy from the servers under test (services/isolation.py, which uses these)
ISOLATION_MODES = ("auto", "cgroup", "affinity", "nice", "off")
DISTRIBUTED = ("none", "locust")  # where the load runs: this process's engine, or generators on Locust's runtime
_backend = _choice("backend", lambda: BACKENDS)
_isolation = _choice("isolation", lambda: ISOLATION_MODES)
_proxy_profile = _choice("proxy profile", _proxy_profiles)
_distributed = _choice("distributed runtime", lambda: DISTRIBUTED)
MAX_GENERATORS = 1000


@dataclass(frozen=True)
class Setting:
    name: str  # attribute name, also the ini key suffix: ini "wsgi_<name>", option "--wsgi-<name>"
    help: str
    default: str | None
    convert: Callable[[str], Any] = _str
    metavar: str = "VALUE"
    const: str | None = None  # the option may be given without a value: it then means this

    @property
    def ini(self) -> str:
        return f"wsgi_{self.name}"

    @property
    def option(self) -> str:
        return "--wsgi-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return f"wsgi502_{self.name}"

    @property
    def env(self) -> str:
        return f"WSGI502_{self.name.upper()}"


_count = _integer(1, MAX_COUNT)
_connections = _integer(1, MAX_CONCURRENCY)

SETTINGS: tuple[Setting, ...] = (
    Setting("backend", "where services run: local processes, containers (a Docker-compatible engine), or auto "
            "(containers when an engine answers)", "local", _backend, "NAME"),
    Setting("matrix_file", "TOML file with the cell matrix, or a built-in one: seed (default), seed-unix, "
            "scenarios", None,
            _str, "PATH"),
    Setting("cells", "comma-separated cell names to run (default: all; -k also works)", None, _str, "NAMES"),
    Setting("shard", "run shard I of N (1 <= I <= N <= 1000): a deterministic subset of the cells, balanced by "
            "expected duration; the others are deselected. Merge the shards' --wsgi-json with python -m "
            "pytest_wsgi502.report merge", None, parse_shard, "I/N"),
    Setting("target", "drive the load at an already running service, http://host[:port]: no local servers, MariaDB "
            "or proxy; SLOs on what the client sees, causes limited to client-side classes. A non-loopback target "
            "also needs --wsgi-allow-remote", None, _target_url, "URL"),
    Setting("allow_remote", "let --wsgi-target be another machine (the one opt-out of the loopback guard: load "
            "leaves this machine)", "false", _bool, "BOOL"),
    Setting("duration", "load duration per cell, e.g. 10s, 500ms, 2m (1ms to 24h), or auto[:MAX]: until every "
            "error-rate/percentile SLO is decided at 95 % (MAX default 10m)", "10s", _load_duration, "TIME"),
    Setting("requests", "maximum requests per cell (the other bound besides duration; 1 to 10^12)", "1000000",
            _count, "N"),
    Setting("concurrency", "concurrent connections (closed loop: virtual users; 1 to 100000)", "32", _connections,
            "N"),
    Setting("mode", "load profile: closed (N users), open (constant --wsgi-rate, latency from the intended "
            "send time), ramp (--wsgi-start-rate to --wsgi-rate)", "closed", load_mode, "MODE"),
    Setting("rate", "requests/s for open and ramp load (> 0, at most 10^6)", None, _rate, "RPS"),
    Setting("start_rate", "ramp: requests/s at the start (> 0, at most 10^6)", None, _rate, "RPS"),
    Setting("think_time", "closed loop: pause of each user between a response and its next request (0 to 24h)", "0s",
            _duration(0, DAY), "TIME"),
    Setting("warmup", "the first seconds of every cell's load are sent but not measured: JIT, caches and pools "
            "fill, workers fork. Their requests and errors count (a 502 at start-up is a 502), their latency and "
            "req/s do not; at most half the duration (0 to 24h, 0: off)", "1s", _duration(0, DAY), "TIME"),
    Setting("distributed", "none: the load engine in this process (and --wsgi-processes); locust: generators on "
            "Locust's master/worker runtime (pip install \"pytest-wsgi502[distributed]\"), each a share of the "
            "profile, histograms merged exactly; a fixed duration only (not auto)", "none", _distributed, "RUNTIME"),
    Setting("generators", "--wsgi-distributed=locust: local generator processes (1 to 1000)", "2",
            _integer(1, MAX_GENERATORS), "N"),
    Setting("locust_master", "--wsgi-distributed=locust: where the master listens for generators started "
            "elsewhere (wsgi502-generator --master-host ...), HOST:PORT; not loopback only with --wsgi-target and "
            "--wsgi-allow-remote", None, _hostport, "HOST:PORT"),
    Setting("expect_generators", "--wsgi-locust-master: the generators to wait for before the load starts (1 to "
            "1000; default --wsgi-generators)", None, _integer(1, MAX_GENERATORS), "N"),
    Setting("processes", "load engine processes (each takes a share of connections and rate; 1 to 100000)", "1",
            _connections, "N"),
    Setting("timeout", "per-request client timeout (longer than the proxy's, so its 504 is seen; 1s to 24h)", "65s",
            _duration(1, DAY), "TIME"),
    Setting("idle_timeout", "proxy idle/read timeout to the backend, like the LB's (AWS default 60s); whole "
            "seconds up to 24h, a fraction is rounded up (0.5 -> 1s, shown in the header)", "60s", _idle_timeout,
            "TIME"),
    Setting("proxy_profile", "how the proxy in front of every cell behaves: alb (AWS ALB's documented behaviours: "
            "no retries, no passive 'backend down') or nginx (nginx's defaults, passive health); a cell's own "
            "proxy_profile wins", "alb", _proxy_profile, "NAME"),
    Setting("repeat", "run every cell N times, interleaved (A B C C B A ...) so drift cancels, and judge the pooled "
            "result; the table shows each mean with its 95 % interval (1 to 100)", "1", _integer(1, 100), "N"),
    Setting("baseline_cell", "compare every cell with this one, run side by side (a cell's own baseline_cell "
            "wins): the table's 'vs baseline' column, the JSON's comparison block", None, _str, "CELL"),
    Setting("slo", "SLOs for every cell, e.g. 'error_rate<1e-3, p99<500ms, respawns<=20'", None, _slo_list,
            "SLOS"),
    Setting("json", "write the results of every cell as JSON to this path", None, _str, "PATH"),
    Setting("mysqld", "MariaDB/MySQL server binary (default: mariadbd or mysqld on PATH or in /usr/sbin)",
            None, _str, "PATH"),
    Setting("nginx", "nginx binary (default: nginx on PATH or in /usr/sbin)", None, _str, "PATH"),
    Setting("app", "WSGI callable the servers load, module:callable", "sampleapp.wsgi:application", _app,
            "MODULE:NAME"),
    Setting("chdir", "directory the servers run in (relative to the ini file's directory)", ".", _str, "DIR"),
    Setting("path", "request path for cells that set none (origin-form: /a?b=1); {n} becomes a random integer "
            "1..n_max", "/", _path, "PATH"),
    Setting("verify_contains", "a 2xx response body must contain this ({n} substituted); unset: status and "
            "Content-Type only (the terminal says so)", None, _text, "TEXT"),
    Setting("verify_status", "statuses below 400 a response may have, e.g. 2xx, 200, '200,302', 2xx,3xx (any "
            "other is a verify error; 4xx and 5xx are always errors)", "2xx", _statuses, "STATUSES"),
    Setting("ready_path", "the path the harness GETs on each server until it answers: below 400 is up, a 4xx is "
            "up and noted, a 5xx or a traceback in the server log fails the cell at once", "/health", _path,
            "PATH"),
    Setting("django_settings", "the app's Django settings module: the harness runs it with DATABASES pointed at "
            "its MySQL (no change to your settings needed)", None, _module, "MODULE"),
    Setting("setup_command", "command run once after the database is up (DB settings in WSGI502_DB_* env); "
            "none: run none", "python manage.py migrate --noinput", _command, "CMD"),
    Setting("db", "the session's database: mysql (a private MariaDB/MySQL), none (never started), or auto: mysql "
            "unless the app is not Django (no wsgi_django_settings) and the setup command is none", "auto", _db,
            "MODE"),
    Setting("strict", "fail a cell whose config has a lint finding (default: listed once in the summary)", "false",
            _bool, "BOOL"),
    Setting("keep_dir", "keep the run directory (configs, logs) after the session", None, _str, "DIR"),
    Setting("html", "write a self-contained HTML report (timelines with worker events, matrix overview)", None,
            _str, "PATH"),
    Setting("png", "write the report's charts as PNG files into this directory (CI artifacts)", None, _str, "DIR"),
    Setting("storage", "where saved runs live (pytest-benchmark's file storage layout)", ".benchmarks/wsgi502",
            _str, "DIR"),
    Setting("isolation", "local backend: CPUs of the load engine and proxy apart from the servers under test and "
            "MariaDB. auto: a split (cgroup as root, else affinity) from 2 CPUs; cgroup; affinity; nice (no split, "
            "the inside at nice 10); off", "auto", _isolation, "MODE"),
    Setting("save", "save this run's results under NAME in the storage", None, _save_name, "NAME"),
    Setting("compare", "compare with a saved run: latest (no value), a number, a name or a file", None, _str,
            "RUN", const="latest"),
    Setting("compare_fail", "fail the session on regression vs the compared run (default latest), e.g. "
            "'p99:10%,error_rate:0.0001' (one limit per metric)", None, _checks, "CHECKS"),
    # containers backend (README "Containers backend")
    Setting("mysql_image", "containers: MySQL image for testcontainers' MySqlContainer", "mysql:8.4", _str, "IMAGE"),
    Setting("base_image", "containers: base image of the app image (its python3 must match this Python's "
            "major.minor: wheels are built here)", f"python:{sys.version_info[0]}.{sys.version_info[1]}-slim-bookworm",
            _str, "IMAGE"),
)
BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Resolved:
    value: Any
    source: str  # "option", "env", "ini", "default"
    raw: str | None = None


@dataclass
class EffectiveSettings:
    values: dict[str, Resolved] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name].value
        except KeyError:
            raise AttributeError(name) from None

    def source(self, name: str) -> str:
        return self.values[name].source


def resolve(
    options: Mapping[str, Any], env: Mapping[str, str], ini: Mapping[str, str | None]
) -> EffectiveSettings:
    """Resolve every setting; a bad value raises ConfigError (one line) naming the source to fix."""
    out = EffectiveSettings()
    for s in SETTINGS:
        for source, raw, where in (
            ("option", options.get(s.dest), s.option),
            ("env", env.get(s.env), s.env),
            ("ini", ini.get(s.ini), f"ini {s.ini}"),
            ("default", s.default, f"default of {s.option}"),
        ):
            if raw is None or raw == "":
                continue
            try:
                out.values[s.name] = Resolved(s.convert(raw), source, str(raw))
            except ValueError as exc:  # ConfigError, or a converter's own ValueError
                raise ConfigError(f"{where}={shown(raw)}: {_one_line(exc)}") from None
            break
        else:
            out.values[s.name] = Resolved(None, "default")
    return out


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def env_snapshot() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("WSGI502_")}
