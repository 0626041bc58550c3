"""Regression checks for ``--wsgi-compare-fail`` (pure, stdlib only).

A check is ``metric:N%`` (relative change) or ``metric:X`` (absolute change), the pytest-benchmark syntax;
"worse" is larger for latency, error rate, respawns and kills, and smaller for req/s (the metrics and their
direction come from ``metrics/registry.py``). The parser lives here, in the configuration layer, so that
``config/settings.py`` never imports ``report/``; ``report/compare.py`` uses these types to compare two runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_wsgi502.config.values import MAX_COUNT, ConfigError, number, shown
from pytest_wsgi502.metrics.registry import CHECKED_METRICS

MAX_PERCENT = 1e6  # a relative threshold above 10,000x is a typo, not a tolerance


@dataclass(frozen=True)
class Check:
    metric: str
    threshold: float  # finite, >= 0: percent when ``percent``, else in the metric's unit
    percent: bool
    text: str  # normalized: parse_checks(text) gives this check back

    def change(self, now: float, saved: float) -> float:
        """How much worse ``now`` is than ``saved`` (percent or absolute; negative = better)."""
        worse = now - saved if CHECKED_METRICS[self.metric].larger_is_worse else saved - now
        if not self.percent:
            return worse
        if saved == 0:
            return 0.0 if worse == 0 else (float("inf") if worse > 0 else float("-inf"))
        return 100.0 * worse / abs(saved)

    def fails(self, now: float | None, saved: float | None) -> bool:
        if now is None or saved is None:
            return False
        return self.change(now, saved) > self.threshold


_CHECK = re.compile(r"\s*(?P<metric>[a-z0-9_.]+)\s*:\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<pct>%)?\s*")


def parse_checks(text: str) -> tuple[Check, ...]:
    """``"p99:10%,error_rate:0.0001"`` -> checks. Raises ConfigError (one line) naming the bad part; a metric
    given twice is an error (which of the two limits was meant is a guess)."""
    if not isinstance(text, str):
        raise ConfigError(f"checks must be text like p99:10%, got {shown(text)}")
    checks: list[Check] = []
    for part in (p for p in text.split(",") if p.strip()):
        m = _CHECK.fullmatch(part)
        if not m:
            raise ConfigError(f"not a check: {shown(part.strip())} (use metric:10% or metric:0.001, e.g. p99:10%)")
        metric = m["metric"]
        if metric not in CHECKED_METRICS:
            raise ConfigError(f"unknown metric {shown(metric)} in {shown(part.strip())}; "
                              f"known: {', '.join(CHECKED_METRICS)}")
        if any(c.metric == metric for c in checks):
            raise ConfigError(f"metric {metric} is checked twice ({shown(part.strip())}); give one limit per metric")
        percent = bool(m["pct"])
        hi = MAX_PERCENT if percent else (1.0 if metric == "error_rate" else float(MAX_COUNT))
        threshold = number(float(m["num"]), f"the limit of {metric}", 0, hi)
        checks.append(Check(metric, threshold, percent, f"{metric}:{m['num']}{'%' if percent else ''}"))
    if not checks:
        raise ConfigError("no checks given (e.g. p99:10%,error_rate:0.0001)")
    return tuple(checks)
