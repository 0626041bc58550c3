"""Load modes: the one definition of the load profiles (pure, stdlib only).

- ``closed``: N virtual users, each sends its next request when the last one finished (plus a think time);
- ``open``: a constant rate of requests/s, latency measured from each request's intended send time;
- ``ramp``: the rate rises linearly from a start rate to the final rate over the run.

The session setting (``--wsgi-mode``), a matrix cell (``load_mode``) and the load engine (``LoadSpec.mode``)
all check a mode here, with the same message.
"""

from __future__ import annotations

from typing import Literal, get_args

from pytest_wsgi502.config.values import ConfigError, shown

LoadMode = Literal["closed", "open", "ramp"]
LOAD_MODES: tuple[LoadMode, ...] = get_args(LoadMode)


def load_mode(value: object, what: str = "load mode") -> LoadMode:
    """``value`` when it names a load mode, else ConfigError (one line) naming ``what``."""
    for mode in LOAD_MODES:
        if value == mode and isinstance(value, str):
            return mode
    raise ConfigError(f"{what} {shown(value)} unknown; choose one of {', '.join(LOAD_MODES)}")
