"""A cell's duration: a fixed length, or ``auto[:MAX]`` — run until every rate SLO is decided, at most MAX.

``auto`` is a stopping rule and a number is a length; each follows the precedence rule (config/layers.py) on its
own. ``auto`` alone also sets the cap, ``DEFAULT_CAP``, at its layer; ``auto:2m`` sets it to 2 minutes. So
``--wsgi-duration=auto`` on a cell whose own ``duration = 25`` runs it until decided, at most 25 s (the cell's
length is more specific than the option's cap), and a cell without a duration of its own at most 10 minutes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pytest_wsgi502.config import values
from pytest_wsgi502.config.values import DAY, ConfigError, shown

_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|min)?\s*")
DEFAULT_CAP = 600.0  # seconds: enough for ~30,000 requests (error_rate<1e-4) at 50 req/s
_AUTO = re.compile(r"\s*auto\s*(?::\s*(?P<cap>\S.*?))?\s*")


@dataclass(frozen=True)
class Auto:
    """Run until decided, at most ``cap`` seconds."""

    cap: float = DEFAULT_CAP

    def __str__(self) -> str:
        return f"auto:{self.cap:g}s"


def parse_duration(text: str) -> float:
    """'10', '10s', '250ms', '2m' -> seconds, finite. Raises ConfigError with a usable message."""
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise ConfigError("not a duration (use e.g. 10, 10s, 250ms, 2m)")  # the caller names the value
    value = float(m.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0}[m.group(2) or "s"]
    if not math.isfinite(value):
        raise ConfigError("not a finite duration (at most 24h)")
    return value


def parse(value: Any, what: str = "duration", lo: float = 0.001) -> float | Auto:
    """A number of seconds, a duration text (10, 10s, 250ms, 2m) or ``auto`` / ``auto:MAX``; ConfigError else."""
    prefix = f"{what}: " if what else ""
    if isinstance(value, str) and (m := _AUTO.fullmatch(value)):
        try:
            cap = DEFAULT_CAP if m["cap"] is None else parse_duration(m["cap"])
        except ConfigError as exc:
            raise ConfigError(f"{prefix}the cap of auto:MAX: {exc}") from None
        return Auto(float(values.number(cap, f"{prefix}the cap of auto", 1.0, DAY)))
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}, or auto / auto:10m") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number of seconds, a duration text or 'auto', got {shown(value)}")
    else:
        seconds = float(value)
    return float(values.number(seconds, what or "the duration", lo, DAY))


def split(value: float | Auto | None) -> tuple[str | None, float | None]:
    """(stopping rule, length): ``Auto(cap)`` -> ("auto", cap); a number -> (None, number): a number sets only
    the length, so it never turns ``auto`` off by itself."""
    if isinstance(value, Auto):
        return "auto", value.cap
    return None, value
