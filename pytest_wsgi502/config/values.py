"""Validators for every value that reaches a socket, a config file, a shell or SQL (pure, stdlib only).

Each raises ``ConfigError`` (a ``ValueError``) with one line that names the value; the pytest edge turns it into
``pytest.UsageError``. Raw input is echoed with ``shown()`` (``repr``, shortened), so a newline in a key or value
can never split an error message over several lines.

Bounds (documented in the README's options table and "Security model"):

- numbers are finite; counts are integers; load durations and per-request timeouts 1 ms .. 24 h; the proxy's
  idle timeout 1 s .. 24 h (whole seconds);
- concurrency and processes <= 100,000; rates <= 1,000,000 requests/s; error rates in [0, 1];
- request paths are origin-form only (RFC 9112 3.2.1: an absolute path and an optional query): no scheme, no
  authority, no ``//`` prefix, no whitespace or control characters, no fragment; so a path can never make the
  transport connect anywhere but the target the harness started;
- methods are RFC 9110 tokens; header names are tokens and header values have no CR, LF or NUL.
"""

from __future__ import annotations

import math
import re
from typing import Any

DAY = 86_400.0
MAX_CONCURRENCY = 100_000
MAX_RATE = 1_000_000.0
MAX_COUNT = 10**12  # requests, n_max and other counts: far above anything a run can do, far below overflow


class ConfigError(ValueError):
    """A bad setting, matrix value or fixture argument: one line, naming the value and what is allowed."""


def shown(value: Any, limit: int = 60) -> str:
    """``repr`` of user input, shortened: safe to put in a one-line message (newlines come out as ``\\n``)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def number(value: Any, what: str, lo: float, hi: float, *, integer: bool = False, lo_open: bool = False) -> Any:
    """A finite number in [lo, hi] (``(lo, hi]`` when ``lo_open``); an integer when ``integer``. Strings are
    parsed (underscores allowed: 1_000_000); bools are refused."""
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise ConfigError(f"{what} must be {'an integer' if integer else 'a number'}, got {shown(value)}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be {'an integer' if integer else 'a number'}, got {shown(value)}")
    if integer and not isinstance(value, int):
        if not (math.isfinite(value) and value == int(value)):
            raise ConfigError(f"{what} must be an integer, got {shown(value)}")
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {shown(value)}")
    if value < lo or (lo_open and value == lo) or value > hi:
        low = f"> {_num(lo)}" if lo_open else f">= {_num(lo)}"
        raise ConfigError(f"{what} must be {low} and <= {_num(hi)}, got {shown(value)}")
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


_CTL = re.compile(r"[\x00-\x20\x7f]")  # controls, space and DEL: never in a request target


def origin_form(path: Any, what: str = "path") -> str:
    """An origin-form request target (``/a/b?q=1``): the only form the engine sends. ``{n}`` is allowed (it is
    replaced by an integer). Anything with a scheme, an authority (``//host``), a fragment, whitespace, a
    control character or a non-ASCII character is refused."""
    if not isinstance(path, str):
        raise ConfigError(f"{what} must be a string starting with '/', got {shown(path)}")
    if not path.startswith("/"):
        raise ConfigError(f"{what} must start with '/' (a path on the target, like /api?x=1), got {shown(path)}")
    if path.startswith("//"):
        raise ConfigError(f"{what} must not start with '//' (that names another host), got {shown(path)}")
    if _CTL.search(path) or not path.isascii():
        raise ConfigError(f"{what} must be printable ASCII without spaces (percent-encode the rest), got {shown(path)}")
    if any(seg in (".", "..") for seg in path.split("?", 1)[0].split("/")):
        # httpx normalizes dot segments: /..//x would go out as //x
        raise ConfigError(f"{what} must not contain '.' or '..' segments, got {shown(path)}")
    if "#" in path:
        raise ConfigError(f"{what} must not contain a fragment ('#'), got {shown(path)}")
    if len(path) > 8000:
        raise ConfigError(f"{what} is longer than 8000 characters")
    return path


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2


def method(value: Any, what: str = "method") -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value) or len(value) > 32:
        raise ConfigError(f"{what} must be an HTTP method token like GET or POST, got {shown(value)}")
    return value


def header(name: Any, value: Any, what: str = "header") -> tuple[str, str]:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ConfigError(f"{what} name must be a token (letters, digits, '-'), got {shown(name)}")
    if not isinstance(value, str) or not value.isprintable():
        raise ConfigError(f"{what} {name}: value must be printable text without CR/LF, got {shown(value)}")
    return name, value


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def dotted(value: Any, what: str = "module") -> str:
    """A Python dotted name (a module), e.g. ``mysite.settings``."""
    if not isinstance(value, str) or not _DOTTED.fullmatch(value):
        raise ConfigError(f"{what} must be a Python module path like mysite.settings, got {shown(value)}")
    return value


def wsgi_app(value: Any, what: str = "app") -> str:
    """``module:callable`` (the callable may be dotted: ``pkg.wsgi:app.wsgi_app``)."""
    module, sep, attr = str(value).partition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not _DOTTED.fullmatch(module) or not _DOTTED.fullmatch(attr):
        raise ConfigError(f"{what} must be module:callable, like mysite.wsgi:application, got {shown(value)}")
    return str(value)


def single_line(value: Any, what: str) -> str:
    """A free-text value that goes into a config file: one line, no control characters."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {shown(value)}")
    if not value.isprintable():  # controls, line and paragraph separators (U+0085, U+2028), lone surrogates
        raise ConfigError(f"{what} must be one line of printable text, got {shown(value)}")
    return value
