"""The metrics a cell result offers, named once (pure, stdlib only).

Each metric has a kind (how its limits are read: ``latency`` in ms, ``ratio`` a fraction in 0..1, ``count`` a
whole number, ``rate`` per second), the path to its value in a cell result, the unit it is shown in, which
direction is worse, and where it may be used: in an SLO (``--wsgi-slo``, ``slo.py``) and/or in a regression
check against a saved run (``--wsgi-compare-fail``, ``config/checks.py`` and ``report/compare.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

Kind = Literal["latency", "ratio", "count", "rate"]


class Metric(NamedTuple):
    kind: Kind
    path: tuple[str, ...]  # keys into a cell result
    unit: str  # as shown: "ms", "req/s" or ""
    larger_is_worse: bool = True
    slo: bool = True  # may be limited in an SLO
    check: bool = True  # may be checked against a saved run
    missing: float | None = None  # the value when the result has no such key (None: not measured)


def _latency(key: str, slo: bool = True) -> Metric:
    return Metric("latency", ("latency_ms", key), "ms", slo=slo)


METRICS: dict[str, Metric] = {
    "error_rate": Metric("ratio", ("error_rate",), ""),
    "errors": Metric("count", ("error_count",), "", check=False),
    "requests": Metric("count", ("requests",), "", larger_is_worse=False, check=False),
    "rps": Metric("rate", ("rps",), "req/s", larger_is_worse=False),
    "http_502": Metric("count", ("status_counts", "502"), "", check=False, missing=0.0),  # none seen: 0
    "http_5xx": Metric("count", ("http_5xx",), "", check=False),
    "p50": _latency("p50"),
    "p90": _latency("p90"),
    "p95": _latency("p95"),
    "p99": _latency("p99"),
    "p99.9": _latency("p99.9"),
    "max": _latency("max"),
    "mean": _latency("mean", slo=False),
    "respawns": Metric("count", ("respawns",), ""),
    "kills": Metric("count", ("kills",), ""),
}
SLO_METRICS: dict[str, Metric] = {name: m for name, m in METRICS.items() if m.slo}
CHECKED_METRICS: dict[str, Metric] = {name: m for name, m in METRICS.items() if m.check}


def value(result: Mapping[str, Any], name: str) -> float | None:
    """The metric's value in a cell result (or a saved summary of one); None when it was not measured."""
    metric = METRICS[name]
    node: Any = result
    for key in metric.path[:-1]:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping):
        return None
    node = node.get(metric.path[-1], metric.missing)  # ``missing`` only when the last key is absent
    return float(node) if isinstance(node, int | float) else None
