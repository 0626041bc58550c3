"""Repeats of a cell: the order that cancels drift, and one pooled result per cell with intervals.

``--wsgi-repeat N`` runs every cell N times. A machine drifts over a run (page cache, a table that grows, a
neighbour's job), so running A A A B B B would charge the drift to B. The runs are interleaved instead, each
round in the opposite order of the one before (A B C C B A A B C ...): a linear drift adds the same to every cell
over each pair of rounds (the order of a balanced "ABBA" design).

The pooled result keeps the single-run JSON contract (the table, the reports and the SLOs read it unchanged):
counts are summed, latency comes from the merged HdrHistograms (exact: all requests of all repeats), ``rps`` is
the mean over the repeats, and ``intervals`` gives each per-repeat metric's mean with its 95 % t interval
(Student's t over the N repeat values: the repeats are independent runs, while per-second windows of one run are
not). Every repeat stays in ``repeats``.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from hdrh.histogram import HdrHistogram

from pytest_wsgi502.metrics.inference import mean_interval
from pytest_wsgi502.metrics.stats import PERCENTILES, new_histogram

# per-repeat values that get a mean and an interval: req/s and latency percentiles (ms)
INTERVAL_METRICS = ("rps", "p50", "p95", "p99", "max")
_SUMMED = ("requests", "responses", "http_5xx", "error_count", "respawns", "kills", "latency_clamped")
_SUMMED_TABLES = ("status_counts", "errors", "attribution")


def interleaved(names: Sequence[str], n: int) -> list[str]:
    """``n`` rounds over ``names``, every other round reversed: A B C C B A A B C for 3 x 3."""
    out: list[str] = []
    for r in range(n):
        out.extend(names if r % 2 == 0 else list(reversed(names)))
    return out


def _value(run: dict[str, Any], metric: str) -> float | None:
    value = run.get("rps") if metric == "rps" else (run.get("latency_ms") or {}).get(metric)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def intervals(runs: Iterable[dict[str, Any]], conf: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per metric: mean over the repeats, its t interval (None with one repeat), the values, the CV in %."""
    runs = list(runs)
    out: dict[str, dict[str, Any]] = {}
    for metric in INTERVAL_METRICS:
        values = [v for r in runs if (v := _value(r, metric)) is not None]
        if not values:
            continue
        mi = mean_interval(values, conf)
        mean, lo, hi = mi["mean"], mi["lo"], mi["hi"]
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        out[metric] = {"mean": mean, "lo": lo, "hi": hi, "n": len(values), "values": values,
                       "cv_percent": 100 * sd / mean if sd is not None and mean else None}
    return out


def _merged_histogram(runs: Sequence[dict[str, Any]]) -> HdrHistogram:
    merged = new_histogram()
    for r in runs:
        if r.get("histogram"):
            merged.add(HdrHistogram.decode(r["histogram"]))
    return merged


def pool(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result for the cell from its repeats (the same keys as a single run, plus ``repeats`` and
    ``intervals``). The timeline, telemetry events and attribution matches are those of the first repeat; every
    repeat's own are in ``repeats``. The SLO verdict is left to the caller (``slo`` is removed)."""
    if not runs:
        raise ValueError("pool() needs at least one run")
    out = copy.deepcopy(dict(runs[0]))
    for key in _SUMMED:
        out[key] = sum(int(r.get(key) or 0) for r in runs)
    for key in _SUMMED_TABLES:
        total: Counter[str] = Counter()
        for r in runs:
            total.update({k: int(v) for k, v in (r.get(key) or {}).items()})
        out[key] = dict(total)
    events: Counter[str] = Counter()
    for r in runs:
        events.update((r.get("telemetry") or {}).get("event_counts") or {})
    out.setdefault("telemetry", {})["event_counts"] = dict(events)
    n = out["requests"]
    out["error_rate"] = out["error_count"] / n if n else 0.0
    hist = _merged_histogram(runs)
    if out["responses"]:
        latency = {("p99.9" if p == 99.9 else f"p{p:g}"): hist.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
        latency.update(max=hist.get_max_value() / 1000, mean=round(hist.get_mean_value() / 1000, 3))
        out["latency_ms"] = latency
        out["histogram"] = hist.encode().decode("ascii")
    out["duration_s"] = round(sum(float(r.get("duration_s") or 0) for r in runs), 3)
    out["started_at"] = min(float(r.get("started_at") or 0) for r in runs)
    out["ended_at"] = max(float(r.get("ended_at") or 0) for r in runs)
    out["intervals"] = intervals(runs)
    out["rps"] = round(out["intervals"]["rps"]["mean"], 1) if "rps" in out["intervals"] else 0.0
    for flag in ("generator_bound", "aborted"):
        hits = [(i, r) for i, r in enumerate(runs, 1) if r.get(flag)]
        out[flag] = bool(hits)
        if flag == "generator_bound":
            out["generator_bound_reason"] = "; ".join(
                f"repeat {i}: {r.get('generator_bound_reason')}" for i, r in hits) or None
        elif hits:
            out["aborted"] = "; ".join(f"repeat {i}: {r.get('aborted')}" for i, r in hits)
    out.pop("slo", None)
    out["repeats"] = [{k: v for k, v in r.items() if k != "rendered"} for r in runs]
    return out
