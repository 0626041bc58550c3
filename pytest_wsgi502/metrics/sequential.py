"""``duration = "auto"``: stop a cell's load once every decidable SLO is decided at 95 %, or at its cap.

Decidable SLOs are rate ceilings: ``error_rate<L`` (errors among requests) and latency percentiles ``pNN<X``
(the share of responses slower than X must be below 1 - NN/100: p99<500ms is "fewer than 1 % slower than
500 ms"). Each is an always-valid sequential test (``inference.SequentialRate``: mixture likelihood-ratio
martingales and Ville's inequality), so looking after every second does not inflate the 5 % error the way
re-checking a fixed-n bound would. Counts (``kills==0``, ``respawns<=N``), ``max`` and ``rps`` cannot be proven
early: they are judged at the end, like every SLO of a fixed-length cell.

The load stops as soon as one SLO is proven breached (the cell fails whatever else happens) or all are proven
met. At the cap, an SLO still open is ``undecided``: the cell's outcome says so and the test fails with the
number of requests that would have been needed, never a pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.metrics.inference import SequentialRate, exceedance_limit, needed_n
from pytest_wsgi502.metrics.stats import Stats

METHOD = "mixture sequential probability ratio test (always valid, Ville's inequality), alpha 0.05 a side"
_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}


def _slower_than(stats: Stats, limit_ms: float) -> int:
    """Responses slower than ``limit_ms`` (HdrHistogram buckets: within its 0.1 % precision)."""
    limit_us = limit_ms * 1000
    return sum(item.count_at_value_iterated_to for item in stats.histogram.get_recorded_iterator()
               if item.value_iterated_to > limit_us)


@dataclass
class _Test:
    slo: Any  # slo.SLO
    rate: SequentialRate
    latency_ms: float | None  # None: the error rate
    n: int = 0
    x: int = 0


@dataclass
class AutoStop:
    """Fed the live stats every second (``update``); says when to stop and why; ``report()`` for the JSON."""

    slos: Iterable[Any]
    alpha: float = 0.05
    tests: list[_Test] = field(default_factory=list, init=False)
    stopped: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.slos = list(self.slos)
        for s in self.slos:
            if s.op not in ("<", "<=") or getattr(s, "relative", False):  # relative SLOs need the baseline's end
                continue
            if s.metric == "error_rate" and 0 < s.limit < 1:
                self.tests.append(_Test(s, SequentialRate(s.limit, self.alpha, s.op), None))
            elif s.metric in _PERCENTILES:
                limit = exceedance_limit(_PERCENTILES[s.metric])
                self.tests.append(_Test(s, SequentialRate(limit, self.alpha, "<"), s.limit))
        if not self.tests:
            raise ConfigError("duration=auto decides error_rate<X and percentile SLOs (p99<X ...); this cell has "
                              "none: add one (e.g. --wsgi-slo='error_rate<1e-3') or give a duration")

    def update(self, stats: Stats) -> str | None:
        """The reason to stop now, or None to go on."""
        if self.stopped:
            return self.stopped
        for t in self.tests:
            if t.latency_ms is None:
                t.x, t.n = stats.error_count, stats.requests
            else:
                t.x, t.n = _slower_than(stats, t.latency_ms), stats.responses
            t.rate.update(min(t.x, t.n), t.n)
        failed = [t for t in self.tests if t.rate.decided() == "fail"]
        if failed:
            self.stopped = f"{failed[0].slo.text} breached (proven after {failed[0].n:,} requests)"
        elif all(t.rate.decided() == "pass" for t in self.tests):
            self.stopped = f"every decidable SLO met (proven after {max(t.n for t in self.tests):,} requests)"
        return self.stopped

    def report(self) -> dict[str, Any]:
        return {
            "method": METHOD, "stopped": self.stopped,
            "decisions": {t.slo.text: {"decision": t.rate.decided(), "at_requests": t.rate.decided_at,
                                       "events": t.x, "of": t.n,
                                       "needed_clean": needed_n(t.rate.limit, self.alpha)} for t in self.tests},
        }


def apply(verdict: dict[str, Any], report: dict[str, Any]) -> None:
    """The sequential decisions replace the fixed-n checks of the SLOs they decided; an SLO left open at the
    cap fails as ``undecided`` (``verdict["undecided"]`` lists them)."""
    undecided = []
    for check in verdict["checks"]:
        d = report["decisions"].get(check["slo"])
        if d is None:
            continue
        check["sequential"] = d
        line = None
        if d["decision"] == "pass":
            check["passed"] = True
        elif d["decision"] == "fail":
            check["passed"] = False
            line = f"{check['slo']}: breach proven after {d['at_requests']:,} requests (sequential test)"
        else:
            check["passed"] = False
            line = (f"{check['slo']}: undecided after {d['of']:,} requests at the cap ({d['events']} over the "
                    f"limit; with none, {d['needed_clean']:,} would decide it): a longer cap or a higher rate")
            undecided.append(line)
        verdict["failures"] = [f for f in verdict["failures"] if not f.startswith(check["slo"] + ":")]
        if line:
            verdict["failures"].append(line)
    verdict["undecided"] = undecided
    verdict["passed"] = not verdict["failures"]
