"""What crosses the processes of a distributed load, as JSON text: the load profile and each generator's ``Stats``.

Locust's messages are msgpack; the generator's engine process talks to its Locust worker over pipes. Both carry
the same JSON text, so nothing depends on how msgpack maps integer keys or bytes. HdrHistograms travel in their
standard compressed encoding (base64 text): decoding and adding is exact, so the master's merge loses nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.load.engine import Endpoint, LoadSpec
from pytest_wsgi502.metrics.stats import Stats

# messages between the Locust master and its workers (Runner.register_message / send_message)
PREPARE = "wsgi502_prepare"  # master -> worker: {"g", "generators", "spec", "dump"}: start the engine process
READY = "wsgi502_ready"  # worker -> master: {"g", "pid", "engine_pid", "host"}: resolved and waiting for "go"
GO = "wsgi502_go"  # master -> worker: {"start_at"}: wall-clock second at which every generator starts
RESULT = "wsgi502_result"  # worker -> master: {"g", "json"}: the engine process's result (or error) line


def spec_to_json(spec: LoadSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def spec_from_json(data: dict[str, Any]) -> LoadSpec:
    """The spec back; unknown keys (a generator of another version) are an error, not ignored."""
    names = {f.name for f in dataclasses.fields(LoadSpec)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"load spec has unknown keys {', '.join(unknown)}: master and generators must run the same "
                          "pytest-wsgi502 version")
    mix = tuple(Endpoint(**e) for e in data.get("mix", ()))
    return LoadSpec(**{**data, "mix": mix, "headers": dict(data.get("headers", {}))})


def stats_to_json(stats: Stats) -> dict[str, Any]:
    wire = stats.to_wire()
    return {
        **wire,
        "histogram": wire["histogram"].decode("ascii"),
        "status_counts": {str(k): v for k, v in wire["status_counts"].items()},
        "windows": {str(sec): [n, errors, hist.decode("ascii")] for sec, (n, errors, hist) in wire["windows"].items()},
    }


def stats_from_json(data: dict[str, Any]) -> Stats:
    return Stats.from_wire({
        **data,
        "status_counts": {int(k): v for k, v in data["status_counts"].items()},
        "windows": {int(sec): tuple(w) for sec, w in data["windows"].items()},
    })
