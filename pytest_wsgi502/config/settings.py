"""Effective settings, each with the source it came from (option > env > ini > default).

pytest-django prints where its settings came from; we do the same in the header so a reader of a CI log
knows why a run used 5 s instead of 10 s.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest


def parse_duration(text: str) -> float:
    """'10', '10s', '250ms', '2m' -> seconds. Raises ValueError with a usable message."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|min)?\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 10, 10s, 250ms, 2m)")
    value = float(m.group(1))
    unit = m.group(2) or "s"
    return value * {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0}[unit]


def _positive(cast: type, what: str) -> Callable[[str], Any]:
    """A converter for numbers > 0 (underscores allowed: 1_000_000)."""

    def convert(text: str) -> Any:
        try:
            value = cast(str(text).replace("_", ""))
        except ValueError:
            raise ValueError(f"not {what}: {text!r}") from None
        if value <= 0:
            raise ValueError(f"must be > 0, got {text!r}")
        return value

    return convert


_positive_int = _positive(int, "an integer")
_rate = _positive(float, "a rate in requests/s")


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"must be > 0, got {text!r}")
    return value


def _non_negative_duration(text: str) -> float:
    value = parse_duration(text)
    if value < 0:
        raise ValueError(f"must be >= 0, got {text!r}")
    return value


def _mode(text: str) -> str:
    if text not in MODES:
        raise ValueError(f"unknown load mode {text!r}; choose one of: {', '.join(MODES)}")
    return text


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def _backend(text: str) -> str:
    if text not in BACKENDS:
        raise ValueError(f"unknown backend {text!r}; choose one of: {', '.join(BACKENDS)}")
    return text


def _str(text: str) -> str:
    return str(text)


def _slo_list(text: str) -> tuple[str, ...]:
    from pytest_wsgi502.slo import parse_slos  # pure, cheap

    try:
        return tuple(s.text for s in parse_slos(text))
    except pytest.UsageError as exc:
        raise ValueError(str(exc)) from None


def _checks(text: str) -> tuple[Any, ...]:
    from pytest_wsgi502.report.compare import parse_checks  # pure, stdlib only

    return parse_checks(text)


def _save_name(text: str) -> str:
    name = str(text).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"not a run name: {text!r} (letters, digits, '.', '_', '-')")
    return name


MODES = ("closed", "open", "ramp")
BACKENDS = ("local", "containers", "auto")  # auto: containers when a Docker-compatible engine answers


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


SETTINGS: tuple[Setting, ...] = (
    Setting("backend", "where services run: local processes, containers (a Docker-compatible engine), or auto "
            "(containers when an engine answers)", "local", _backend, "NAME"),
    Setting("matrix_file", "TOML file with the cell matrix, or a built-in one: seed (default), seed-unix, "
            "scenarios", None,
            _str, "PATH"),
    Setting("cells", "comma-separated cell names to run (default: all; -k also works)", None, _str, "NAMES"),
    Setting("duration", "load duration per cell, e.g. 10s, 500ms, 2m", "10s", _positive_duration, "TIME"),
    Setting("requests", "maximum requests per cell (the other bound besides duration)", "1000000",
            _positive_int, "N"),
    Setting("concurrency", "concurrent connections (closed loop: virtual users)", "32", _positive_int, "N"),
    Setting("mode", "load profile: closed (N users), open (constant --wsgi-rate, latency from the intended "
            "send time), ramp (--wsgi-start-rate to --wsgi-rate)", "closed", _mode, "MODE"),
    Setting("rate", "requests/s for open and ramp load", None, _rate, "RPS"),
    Setting("start_rate", "ramp: requests/s at the start", None, _rate, "RPS"),
    Setting("think_time", "closed loop: pause of each user between a response and its next request", "0s",
            _non_negative_duration, "TIME"),
    Setting("processes", "load engine processes (each takes a share of connections and rate)", "1",
            _positive_int, "N"),
    Setting("timeout", "per-request client timeout (longer than the proxy's, so its 504 is seen)", "65s",
            _positive_duration, "TIME"),
    Setting("idle_timeout", "proxy idle/read timeout to the backend, like the LB's (AWS default 60s)", "60s",
            _positive_duration, "TIME"),
    Setting("slo", "SLOs for every cell, e.g. 'error_rate<1e-3, p99<500ms, respawns<=20'", None, _slo_list,
            "SLOS"),
    Setting("json", "write the results of every cell as JSON to this path", None, _str, "PATH"),
    Setting("mysqld", "MariaDB/MySQL server binary (default: mariadbd or mysqld on PATH or in /usr/sbin)",
            None, _str, "PATH"),
    Setting("nginx", "nginx binary (default: nginx on PATH or in /usr/sbin)", None, _str, "PATH"),
    Setting("app", "WSGI callable the servers load, module:callable", "sampleapp.wsgi:application", _str,
            "MODULE:NAME"),
    Setting("chdir", "directory the servers run in (relative to the ini file's directory)", ".", _str, "DIR"),
    Setting("path", "request path for cells that set none; {n} becomes a random integer 1..n_max", "/", _str,
            "PATH"),
    Setting("verify_contains", "a 2xx response body must contain this ({n} substituted); unset: status only",
            None, _str, "TEXT"),
    Setting("django_settings", "the app's Django settings module: the harness runs it with DATABASES pointed at "
            "its MySQL (no change to your settings needed)", None, _str, "MODULE"),
    Setting("setup_command", "command run once after the database is up (DB settings in WSGI502_DB_* env)",
            "python manage.py migrate --noinput", _str, "CMD"),
    Setting("strict", "fail a cell whose config has a lint finding (default: a warning)", "false", _bool, "BOOL"),
    Setting("keep_dir", "keep the run directory (configs, logs) after the session", None, _str, "DIR"),
    Setting("html", "write a self-contained HTML report (timelines with worker events, matrix overview)", None,
            _str, "PATH"),
    Setting("png", "write the report's charts as PNG files into this directory (CI artifacts)", None, _str, "DIR"),
    Setting("storage", "where saved runs live (pytest-benchmark's file storage layout)", ".benchmarks/wsgi502",
            _str, "DIR"),
    Setting("save", "save this run's results under NAME in the storage", None, _save_name, "NAME"),
    Setting("compare", "compare with a saved run: latest (no value), a number, a name or a file", None, _str,
            "RUN", const="latest"),
    Setting("compare_fail", "fail the session on regression vs the compared run (default latest), e.g. "
            "'p99:10%,error_rate:0.0001'", None, _checks, "CHECKS"),
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
    """Resolve every setting; a bad value raises pytest.UsageError naming the source to fix."""
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
            except ValueError as exc:
                raise pytest.UsageError(f"{where}={raw!r}: {exc}") from None
            break
        else:
            out.values[s.name] = Resolved(None, "default")
    return out


def env_snapshot() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("WSGI502_")}
