"""SLO parsing and verdicts. Pure functions over plain data.

Syntax: comma- or semicolon-separated ``metric op value``, e.g. ``error_rate<1e-3, p99<500ms, respawns<=20``.
Latency metrics take ms (default), us, or s; rates are fractions (``1e-3``) or percentages (``0.1%``).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_wsgi502.config.values import DAY, MAX_COUNT, MAX_RATE, ConfigError, shown
from pytest_wsgi502.metrics import registry
from pytest_wsgi502.metrics.registry import SLO_METRICS

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}
_RE = re.compile(
    r"\s*(?P<metric>[a-z_0-9.]+)\s*(?P<op><=|>=|==|<|>)\s*"
    r"(?:(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>ms|us|s|%)?"
    r"|baseline(?:\s*\*\s*(?P<factor>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?))?)\s*"
)
RELATIVE_METRICS = ("error_rate", "rps", "p50", "p90", "p95", "p99", "p99.9", "max")
_LATENCY_UNITS = {None: 1.0, "ms": 1.0, "us": 1e-3, "s": 1e3}
# the largest limit each kind takes (in its canonical unit): beyond it a limit is a typo, not an objective
_MAX = {"latency": DAY * 1000.0, "ratio": 1.0, "count": float(MAX_COUNT), "rate": MAX_RATE}


@dataclass(frozen=True)
class SLO:
    text: str  # normalized, e.g. "p99<500ms": parse_slo(text) gives this SLO back
    metric: str
    op: str
    limit: float  # in the metric's canonical unit (ms for latency, fraction for ratio); relative: the factor
    relative: bool = False  # "p99<=baseline*1.1": the limit is the baseline cell's value times ``limit``

    def evaluate(self, result: Mapping[str, Any]) -> tuple[bool, float | None]:
        got = registry.value(result, self.metric)
        if got is None or self.relative:
            return False, got
        return bool(_OPS[self.op](got, self.limit)), got


def parse_slo(text: str) -> SLO:
    """One ``metric op value``; raises ConfigError (one line). Limits are finite and within the metric's range
    (latency <= 24 h, error_rate in [0, 1], counts whole numbers <= 1e12, rps <= 1e6); a limit nothing can meet
    (``x<0``, a latency of 0) is refused."""
    if not isinstance(text, str):
        raise ConfigError(f"bad SLO {shown(text)}: expected text like 'p99<500ms' or 'error_rate<1e-3'")
    m = _RE.fullmatch(text)
    bad = f"bad SLO {shown(text.strip())}"
    if not m:
        raise ConfigError(f"{bad}: expected 'metric op value', e.g. 'p99<500ms' or 'error_rate<1e-3'")
    metric, op, unit = m["metric"], m["op"], m["unit"]
    if metric not in SLO_METRICS:
        raise ConfigError(f"{bad}: unknown metric {shown(metric)}; known: {', '.join(SLO_METRICS)}")
    if m["num"] is None:  # relative to the baseline cell
        factor = float(m["factor"]) if m["factor"] is not None else 1.0
        if metric not in RELATIVE_METRICS or op not in ("<", "<=", ">", ">="):
            raise ConfigError(f"{bad}: a limit relative to the baseline takes < <= > >= and one of "
                              f"{', '.join(RELATIVE_METRICS)}")
        if not 0 < factor <= 1e6:
            raise ConfigError(f"{bad}: the baseline factor must be > 0 and at most 1e6")
        return SLO(f"{metric}{op}baseline" + (f"*{m['factor']}" if m["factor"] is not None else ""), metric, op,
                   factor, relative=True)
    num = float(m["num"])
    kind = SLO_METRICS[metric].kind
    if kind == "latency":
        if unit == "%":
            raise ConfigError(f"{bad}: a latency takes us, ms or s, not %")
        limit = num * _LATENCY_UNITS[unit]
    elif unit == "%":
        if kind != "ratio":
            raise ConfigError(f"{bad}: only error_rate takes %")
        limit = num / 100.0
    elif unit is not None:
        raise ConfigError(f"{bad}: {metric} takes no unit {unit!r}")
    else:
        limit = num
    if kind == "ratio" and not 0 <= limit <= 1:  # also catches inf (nan cannot come out of the pattern)
        raise ConfigError(f"{bad}: error_rate is a fraction in 0..1 (or use %)")
    if not math.isfinite(limit) or limit > _MAX[kind]:
        unit_name = "ms" if kind == "latency" else ""
        raise ConfigError(f"{bad}: {metric} limits go up to {_MAX[kind]:g}{unit_name}")
    if kind == "count" and limit != int(limit):
        raise ConfigError(f"{bad}: {metric} is a count; use a whole number")
    if kind == "latency" and limit == 0:
        raise ConfigError(f"{bad}: no response takes 0 ms; give a latency > 0")
    if op == "<" and limit == 0:
        raise ConfigError(f"{bad}: nothing is < 0; use {metric}==0 or a limit > 0")
    return SLO(f"{metric}{op}{m['num']}{unit or ''}", metric, op, limit)


def parse_slos(spec: str | Iterable[str]) -> list[SLO]:
    """SLOs from ``"a<1, b<2; c==0"`` (``,``, ``;`` or newline between them) or a list of such strings. A metric
    given twice is an error: which of the two limits was meant would be a guess."""
    if isinstance(spec, str):
        parts: list[Any] = re.split(r"[,;\n]", spec)
    elif isinstance(spec, Iterable) and not isinstance(spec, Mapping | bytes):
        parts = []
        for item in spec:
            if not isinstance(item, str):
                raise ConfigError(f"bad SLO {shown(item)}: each SLO is text like 'p99<500ms'")
            parts.extend(re.split(r"[,;\n]", item))
    else:
        raise ConfigError(f"SLOs must be text or a list of texts like ['p99<500ms'], got {shown(spec)}")
    slos: list[SLO] = []
    for part in parts:
        if not part.strip():
            continue
        slo = parse_slo(part)
        twice = next((s for s in slos if s.metric == slo.metric), None)
        if twice:
            raise ConfigError(f"SLO metric {slo.metric} given twice ({twice.text}, {slo.text}); give one limit")
        slos.append(slo)
    return slos


def error_rate_upper_bound(errors: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound on a rate seen as ``errors`` in ``n`` trials.

    0 errors: the rule of three, -ln(1-confidence)/n (2.996/n at 95 %). Otherwise the exact Poisson bound
    (rates here are small, n large): the lambda whose P(X <= errors) is 1-confidence, found by bisection."""
    if n <= 0:
        return 1.0
    alpha = 1 - confidence
    if errors == 0:
        return min(1.0, -math.log(alpha) / n)
    if errors > 1000:  # normal approximation is exact enough here
        return min(1.0, (errors + 1.645 * math.sqrt(errors) + 1) / n)

    def cdf(lam: float) -> float:
        term = total = math.exp(-lam)
        for i in range(1, errors + 1):
            term *= lam / i
            total += term
        return total

    lo, hi = float(errors), float(errors) * 3 + 10
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > alpha else (lo, mid)
    return min(1.0, hi / n)


def _relative(slo: SLO, result: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """A check against the baseline cell: it fails only when the candidate is beyond ``factor * baseline`` and the
    difference is significant at 95 % (metrics/comparison.py), or, where no test applies (req/s or latency with
    one run a side), beyond it at all."""
    from pytest_wsgi502.metrics.comparison import relative_test

    value = registry.value(result, slo.metric)
    check: dict[str, Any] = {"slo": slo.text, "value": value, "op": slo.op, "relative": True}
    if baseline is None:
        check.update(passed=False, limit=None)
        return check, f"{slo.text}: needs a baseline cell (baseline_cell or --wsgi-baseline-cell) to compare with"
    base = registry.value(baseline, slo.metric)
    limit = None if base is None else base * slo.limit
    check.update(limit=limit, baseline=baseline.get("name"), baseline_value=base)
    if value is None or limit is None:
        check["passed"] = False
        return check, f"{slo.text}: not measured on both cells"
    beyond = not _OPS[slo.op](value, limit)
    word = relative_test(result, baseline, slo.metric, slo.limit, higher_is_worse=slo.op in ("<", "<="))
    check.update(significance=word, passed=not beyond or word == "same")
    unit = "ms" if SLO_METRICS[slo.metric].kind == "latency" else ""
    how = {"worse": "significant at 95 %", "same": "not significant at 95 %: passes",
           None: "no significance test (needs --wsgi-repeat >= 2 on both cells)"}[word if word != "better" else "same"]
    line = (f"{slo.text}: measured {_fmt(value)}{unit}, limit {slo.op} {_fmt(limit)}{unit} "
            f"({baseline.get('name')} {_fmt(float(base or 0))}{unit} x {_fmt(slo.limit)}), {how}")
    return check, line


def verdict(slos: Iterable[SLO], result: Mapping[str, Any],
            baseline: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"passed": bool, "checks": [...], "failures": [...]} where each failure is a readable line.

    Error-rate ceilings are judged on the 95 % upper bound, not the point estimate: "0 errors in 7,000
    requests" only shows a rate below 4.3e-4, so ``error_rate<1e-4`` needs at least 30,000 clean requests.
    Relative SLOs (``p99<=baseline*1.1``) are judged against ``baseline``, the baseline cell's result."""
    checks, failures = [], []
    for slo in slos:
        if slo.relative:
            rel, rel_line = _relative(slo, result, baseline)
            checks.append(rel)
            if not rel["passed"]:
                failures.append(rel_line)
            continue
        ok, value = slo.evaluate(result)
        unit = "ms" if SLO_METRICS[slo.metric].kind == "latency" else ""
        got = "not measured" if value is None else f"{_fmt(value)}{unit}"
        line = f"{slo.text}: measured {got}, limit {slo.op} {_fmt(slo.limit)}{unit}"
        check: dict[str, Any] = {"slo": slo.text, "value": value, "limit": slo.limit, "op": slo.op}
        if slo.metric == "error_rate" and slo.op in ("<", "<=") and value is not None:
            n = int(result.get("requests") or 0)
            k = int(result.get("error_count") or round(value * n))
            upper = error_rate_upper_bound(k, n)
            check["upper_95"] = upper
            if ok and not (upper < slo.limit or (slo.op == "<=" and upper <= slo.limit)):
                ok = False
                need = math.ceil(-math.log(0.05) / slo.limit) if slo.limit else None
                line = (f"{slo.text}: {k} errors in {n} requests shows only < {upper:.2g} at 95 %"
                        + (f"; proving < {_fmt(slo.limit)} needs >= {need:,} requests with 0 errors" if need else ""))
        check["passed"] = ok
        checks.append(check)
        if not ok:
            failures.append(line)
    return {"passed": not failures, "checks": checks, "failures": failures}


def _fmt(x: float) -> str:
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.3g}" if abs(x) < 1e-2 else f"{x:.4g}"
