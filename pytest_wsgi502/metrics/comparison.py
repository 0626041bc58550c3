"""A cell against its baseline cell, measured side by side in one run: a difference with its interval and one
word per metric — ``better``, ``worse`` or ``same`` (no difference detectable at 95 %).

- error rate: the ratio of the two rates with the exact conditional binomial interval (given the total error
  count, the candidate's share is binomial; Clopper-Pearson on that share, mapped to the rate ratio). It assumes
  independent errors; 502s that come in bursts (one joint recycle, hundreds of 502s) make it too confident, which
  is why the docs ask for repeats before trusting a ``better`` on bursty errors.
  The test is made burst-aware (quasi-Poisson): the dispersion phi = Pearson chi-square / degrees of freedom
  of each cell's error counts around its own rate, at least 1, and the exact test runs on the effective counts
  x / phi over n / phi (McCullagh & Nelder, Generalized Linear Models, 2nd ed., sec. 4.5). The counts are the
  repeats' when both sides have 2 or more, else each run's per-second windows (``timeline``).
  Between repeats phi is estimated from a few runs, so it is counted as a quasi-Poisson GLM counts it (a cell
  without errors adds its degrees of freedom at zero chi-square) and widened by (t_df / z)^2 for being an
  estimate (``inference.estimated_dispersion``): treated as known, it read ``better`` or ``worse`` in 7.2 % of
  3,000 pairs of cells drawn alike (5 repeats, seed-unix-like bursts), not 5 %; widened, 4.2 %
  (tests/unit/test_repeats.py). Within a run the windows give 10 or more degrees of freedom a cell and phi is
  used as it is. Three 30 s repeats of seed-unix's uwsgi-2w gave 378 / 135 /
  198 502s: phi ~ 70, so 711 errors weigh like 10. Within one run: a 10 s uwsgi-2w run of seed-unix had 199
  502s in two one-second bursts; counted as independent, 167 502s of another cell were "better" at p = 0.007,
  and the same pair came out "worse" in a 30 s run (session-9 pilot, issue 14).
- req/s and latency percentiles: the difference of the means over the repeats with Welch's t interval. Repeats
  are independent runs; the per-second windows of one run are not (the 5-14 % run-to-run spread measured on the
  seed matrix is invisible inside one run), so with fewer than 2 repeats a side these metrics get no word.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_wsgi502.metrics.inference import (
    estimated_dispersion,
    mean_diff,
    quasi_poisson_chi2,
    quasi_poisson_dispersion,
    rate_ratio,
    verdict_word,
)
from pytest_wsgi502.metrics.repeats import INTERVAL_METRICS

LOWER_IS_BETTER = {"error_rate": True, "rps": False, "p50": True, "p95": True, "p99": True, "max": True}


def _repeat_values(result: Mapping[str, Any], metric: str) -> list[float]:
    return list(((result.get("intervals") or {}).get(metric) or {}).get("values") or [])


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinity: an unbounded side of an interval (no errors on the baseline) becomes None."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}


def repeats_chi2(*cells: Mapping[str, Any]) -> tuple[float, int] | None:
    """Pearson chi-square and degrees of freedom of the error counts over the cells' repeats, a cell without
    errors counted as a quasi-Poisson GLM counts it (``inference.quasi_poisson_chi2``), or None when the
    dispersion cannot be estimated (fewer than 2 repeats on a cell, or no cell with an error)."""
    groups: list[list[tuple[int, int]]] = []
    for cell in cells:
        pts = [(int(r.get("error_count") or 0), int(r.get("requests") or 0)) for r in cell.get("repeats") or []
               if r.get("requests")]
        if len(pts) < 2:
            return None
        groups.append(pts)
    if not any(x for pts in groups for x, _ in pts):
        return None
    return quasi_poisson_chi2(groups, count_empty=True)


def window_points(timeline: Iterable[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """(errors, requests) of each per-second window of a run's ``timeline``."""
    return [(sum(int(v) for v in (w.get("errors") or {}).values()), int(w.get("requests") or 0)) for w in timeline]


def window_dispersion(*cells: Mapping[str, Any]) -> float | None:
    """Quasi-Poisson dispersion of the error counts over the per-second windows of every run of the cells (each
    run a group: its own rate), or None when no run has an error in two windows' worth of data."""
    groups: list[list[tuple[int, int]]] = []
    for cell in cells:
        runs = cell.get("repeats") or [cell]
        groups.extend(window_points(r.get("timeline") or []) for r in runs)
    return quasi_poisson_dispersion(groups)


def error_ratio(candidate: Mapping[str, Any], baseline: Mapping[str, Any], conf: float = 0.95) -> dict[str, Any]:
    """The error-rate ratio with its exact interval, on effective counts when the repeats show bursts."""
    x1, n1 = int(candidate.get("error_count") or 0), int(candidate.get("requests") or 0)
    x2, n2 = int(baseline.get("error_count") or 0), int(baseline.get("requests") or 0)
    fit = repeats_chi2(candidate, baseline) if n1 and n2 else None
    extra: dict[str, Any] = {}
    if fit is not None and fit[1]:
        phi, where = estimated_dispersion(*fit, conf=conf), "between repeats"
        extra = {"dispersion_estimate": fit[0] / fit[1], "dispersion_df": fit[1]}
        how = f"; chi2/df {fit[0] / fit[1]:.3g} on {fit[1]} df, widened by (t/z)^2 as an estimate"
    else:
        phi, where, how = None, "", ""
    if phi is None and n1 and n2 and not (_repeats(candidate) >= 2 and _repeats(baseline) >= 2):
        phi, where = window_dispersion(candidate, baseline), "within the run (per-second windows)"
    if not phi or phi == 1.0:
        return {**rate_ratio(x1, n1, x2, n2, conf), "dispersion": phi, **extra}
    r = rate_ratio(round(x1 / phi), n1 / phi, round(x2 / phi), n2 / phi, conf)
    r["ratio"] = None if x2 == 0 or not (x1 or x2) else (x1 / n1) / (x2 / n2)
    r["method"] += f" on counts / {phi:.3g} (quasi-Poisson: errors come in bursts {where}{how})"
    return {**r, "dispersion": phi, "dispersion_from": where, **extra}


def _repeats(cell: Mapping[str, Any]) -> int:
    return len([r for r in cell.get("repeats") or [] if r.get("requests")])


def family_confidence(comparisons: int, conf: float = 0.95) -> float:
    """The confidence each of ``comparisons`` comparisons against one baseline is made at so that the family
    holds ``conf`` (Bonferroni): 0.95 for one, 1 - 0.05 / 9 = 0.9944 for seed-unix's nine cells."""
    return 1.0 - (1.0 - conf) / max(1, int(comparisons))


def compare(candidate: dict[str, Any], baseline: dict[str, Any], conf: float = 0.95,
            family: int = 1) -> dict[str, Any]:
    """The ``comparison`` block of the candidate's JSON: per metric the estimate, its interval and a word.

    ``family``: how many cells are compared with this baseline. Each comparison is made at
    ``family_confidence(family, conf)``, so that all the words of the family hold ``conf`` together: with nine
    cells at 95 % each, a cell that does not differ still reads ``better`` or ``worse`` 1 time in 20, and a
    table of nine has one such word in 37 % of runs."""
    each = family_confidence(family, conf)
    out: dict[str, Any] = {"baseline": baseline.get("name"), "confidence": each, "metrics": {}}
    if family > 1:
        out["family"] = {"comparisons": family, "confidence": conf, "method": "Bonferroni"}
    conf = each
    ratio = error_ratio(candidate, baseline, conf)
    out["metrics"]["error_rate"] = {
        **_finite(ratio), "candidate": candidate.get("error_rate"), "baseline": baseline.get("error_rate"),
        "verdict": verdict_word(ratio["lo"], ratio["hi"], higher_is_better=False, null=1.0)
        if candidate.get("requests") and baseline.get("requests") else None,
    }
    sequential = ((candidate.get("auto") or {}).get("comparison") or {}).get("verdict")
    if sequential and _repeats(candidate) < 2:
        # duration=auto stopped this run when its sequential comparison was decided: a fixed-n test on the counts
        # it stopped at is not valid (optional stopping), so the word is the sequential one; the interval above
        # stays for reading
        out["metrics"]["error_rate"].update(verdict=sequential, decided_by="duration=auto's sequential comparison")
    paced = {(r.get("load") or {}).get("mode") for r in (candidate, baseline)} & {"open", "ramp"}
    for metric in INTERVAL_METRICS:
        a, b = _repeat_values(candidate, metric), _repeat_values(baseline, metric)
        if metric == "rps" and paced:  # the load sets the rate: a tenth of a req/s apart is no capacity result
            out["metrics"][metric] = {"verdict": None, "method": f"{paced.pop()} loop: req/s is the offered rate, "
                                      "not the server's capacity (compare latency, or run closed loop)"}
            continue
        if len(a) < 2 or len(b) < 2:
            out["metrics"][metric] = {"verdict": None, "method": "needs --wsgi-repeat >= 2 on both cells"}
            continue
        diff = mean_diff(a, b, conf)
        base = sum(b) / len(b)
        out["metrics"][metric] = {
            **_finite(diff), "relative": diff["diff"] / base if base else None,
            "verdict": verdict_word(diff["lo"], diff["hi"], higher_is_better=not LOWER_IS_BETTER[metric], null=0.0),
        }
    return out


def relative_test(candidate: Mapping[str, Any], baseline: Mapping[str, Any], metric: str, factor: float,
                  higher_is_worse: bool, conf: float = 0.95) -> str | None:
    """Is the candidate beyond ``factor`` x the baseline, significantly? "worse" (yes), "same" (not shown),
    "better" (significantly on the good side), None (no test: req/s or latency without repeats)."""
    if metric == "error_rate":
        if not candidate.get("requests") or not baseline.get("requests"):
            return None
        r = error_ratio(candidate, baseline, conf)
        return verdict_word(r["lo"], r["hi"], higher_is_better=not higher_is_worse, null=factor)
    a, b = _repeat_values(candidate, metric), _repeat_values(baseline, metric)
    if len(a) < 2 or len(b) < 2:
        return None
    d = mean_diff(a, [factor * x for x in b], conf)
    return verdict_word(d["lo"], d["hi"], higher_is_better=not higher_is_worse, null=0.0)


def summary(comparison: dict[str, Any]) -> str:
    """The table's "vs baseline" cell: one short word per decided metric, e.g. ``err better, rps same``."""
    short = {"error_rate": "err", "rps": "rps", "p50": "p50", "p99": "p99"}
    words = [f"{label} {m['verdict']}" for key, label in short.items()
             if (m := comparison["metrics"].get(key)) and m.get("verdict")]
    return ", ".join(words) or "-"
