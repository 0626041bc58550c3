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

A pass waits for the cell's lifecycle (``horizon``). The sequential test assumes each request fails
independently at one rate; a server that recycles breaks that: no error for 10 s, then a burst at the joint
recycle. Measured on the ``recycle`` scenario (``error_rate<0.05``): without the wait, auto passed it after 150
clean requests (3.7 s), before its first recycle. So a "met" decision stops the load only once the earliest
lifecycle event (a recycle, a lifetime, a lifecycle action) could have happened and as long again has passed;
a breach stops it at once. A breach proven later overrides a pass proven earlier (the last counts decide).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.metrics.inference import (
    SequentialRate,
    _counts,
    _lower_bound,
    _upper_bound,
    effective_counts,
    exceedance_limit,
    needed_n,
    quasi_poisson_dispersion,
)
from pytest_wsgi502.metrics.stats import Stats

METHOD = "mixture sequential probability ratio test (always valid, Ville's inequality), alpha 0.05 a side"
_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}


def _slower_than(stats: Stats, limit_ms: float) -> int:
    """Responses slower than ``limit_ms`` (HdrHistogram buckets: within its 0.1 % precision)."""
    limit_us = limit_ms * 1000
    return sum(item.count_at_value_iterated_to for item in stats.histogram.get_recorded_iterator()
               if item.value_iterated_to > limit_us)


def window_dispersion(stats: Stats) -> float | None:
    """The quasi-Poisson dispersion of the live run's per-second error counts (None: too few errors to say)."""
    return quasi_poisson_dispersion([[(sum(w.errors.values()), w.requests) for w in stats.windows.values()]])


def _elapsed(stats: Stats) -> float:
    """Seconds of load so far, from the per-second windows (live: ``Stats.ended`` is set only at the end)."""
    return float(max(stats.windows) - min(stats.windows) + 1) if stats.windows else 0.0


@dataclass
class _Test:
    slo: Any  # slo.SLO
    rate: SequentialRate
    latency_ms: float | None  # None: the error rate
    n: int = 0
    x: int = 0
    failed_at: int | None = None  # n when a breach was first proven (it stands, even after a pass)

    def decision(self) -> str | None:
        """A breach proven at any look stands (Ville: under p <= L that happens with probability <= alpha, however
        often we look); else the pass the test proved; else None."""
        if self.failed_at is not None or self.rate.decide(self.x, self.n) == "fail":
            return "fail"
        return self.rate.decided()

    @property
    def decided_at(self) -> int:
        return self.failed_at if self.failed_at is not None else (self.rate.decided_at or self.n)


@dataclass(frozen=True)
class Horizon:
    """How much load a pass waits for: ``requests`` and ``seconds`` since the load started (both)."""

    requests: int = 0
    seconds: float = 0.0
    why: str = ""


UWSGI_MIN_WORKER_LIFETIME_S = 10.0  # uWSGI's default: a worker past max-requests recycles no younger than this


def horizon(server: str, workers: int, max_requests: int = 0, jitter: int = 0, options: Mapping[str, Any] | None = None,
            actions: Iterable[Mapping[str, Any]] = ()) -> Horizon:
    """Twice the point where the cell's first lifecycle event can happen: its effect and a second round are then
    inside the run. ``max_requests`` x ``workers`` (+ gunicorn's jitter) requests for a recycle, and on uWSGI
    no sooner than ``min-worker-lifetime`` (default 10 s); ``max-worker-lifetime``; the last lifecycle action's
    ``at``. Nothing (0, 0) for a cell without any of them."""
    opts = {str(k).replace("_", "-"): v for k, v in (options or {}).items()}

    def seconds_of(key: str, default: float = 0.0) -> float:
        try:
            return max(0.0, float(opts.get(key, default)))
        except (TypeError, ValueError):
            return default

    requests, seconds, why = 0, 0.0, []
    if max_requests > 0:
        requests = 2 * max(1, workers) * (max_requests + max(0, jitter))
        why.append(f"max_requests {max_requests} x {workers} workers")
        if server == "uwsgi":
            least = seconds_of("min-worker-lifetime", UWSGI_MIN_WORKER_LIFETIME_S)
            seconds = max(seconds, 2 * least)
            why.append(f"min-worker-lifetime {least:g}s")
    if server == "uwsgi" and (life := seconds_of("max-worker-lifetime")) > 0:
        seconds = max(seconds, 2 * life)
        why.append(f"max-worker-lifetime {life:g}s")
    last = max((float(a.get("at", 0.0)) for a in actions), default=0.0)
    if last > 0:
        seconds = max(seconds, 2 * last)
        why.append(f"a lifecycle action at {last:g}s")
    return Horizon(requests, seconds, ", ".join(why))


# a baseline (``AutoStop.reference``) runs until its errors amount to this many independent ones: a Clopper-Pearson
# bound at alpha/4 on 5 events is within a factor of about 4 of the rate, enough to prove a clean cell better
REFERENCE_EVENTS = 5

COMPARE_METHOD = ("the candidate's always-valid sequential test (mixture SPRT, Ville) against the baseline's "
                  "exact Clopper-Pearson bound, alpha/4 each, so better or worse errs with probability <= alpha; "
                  "on quasi-Poisson effective counts (errors and requests over the dispersion of each side's "
                  "per-second error counts) when the errors come in bursts")


class BaselineStop:
    """The error-rate comparison with a finished baseline cell (``x_b`` errors in ``n_b`` requests), decided while
    the candidate runs: ``better`` once its rate is proven below the baseline's exact lower bound, ``worse`` once
    proven above its upper bound; ``same`` only at the cap (``verdict``).

    Why it is valid under optional stopping: a false ``better`` (p_c >= p_b) needs the baseline's bound to miss
    (lower bound above p_b: probability <= alpha/4, fixed n) or the candidate's test to prove p_c < L for an
    L <= p_c (<= alpha/4 however often it looks: Ville's inequality, L being independent of the candidate's
    requests); likewise ``worse``, so the two together err with probability <= alpha.

    Both tests assume errors independent from request to request. 502s are not: a joint recycle gives none for
    10 s, then a hundred in one second. The counts are therefore divided by a quasi-Poisson dispersion
    (``inference.quasi_poisson_dispersion`` of per-second windows), so a burst weighs about one error: the
    baseline's by its own (fixed when it ends), the candidate's by the larger of its own (re-estimated at every
    look) and the baseline's, since under "no difference" the candidate bursts like the baseline. Measured in the
    session-9 pilots (seed-unix, uwsgi-2w as baseline): counted per request, 167 502s in two bursts were "better"
    than 221 in two at p = 0.007, and the same pair was "worse" in a 30 s run; on effective counts neither is
    claimed. With a dispersion estimated from the data the 5 % holds approximately, not exactly."""

    def __init__(self, baseline_errors: int, baseline_requests: int, alpha: float = 0.05,
                 dispersion: float | None = None) -> None:
        x_b, n_b = _counts(baseline_errors, baseline_requests)
        if n_b == 0:
            raise ConfigError("the baseline cell has no requests: nothing to compare with")
        a = alpha / 4
        self.baseline = (x_b, n_b)
        self.dispersion = dispersion if dispersion and dispersion > 1.0 else None
        self.effective = effective_counts(x_b, n_b, self.dispersion)
        self.candidate_dispersion: float | None = None
        self.lo, self.hi = _lower_bound(*self.effective, a), _upper_bound(*self.effective, a)
        self._below = SequentialRate(self.lo, a) if self.lo > 0 else None  # nothing is below a 0 rate
        self._above = SequentialRate(self.hi, a) if self.hi < 1 else None
        self.decision: str | None = None
        self.at: int | None = None
        self.last = (0, 0)

    def update(self, errors: int, n: int, dispersion: float | None = None) -> str | None:
        """Feed the candidate's cumulative counts (and the dispersion of its per-second error counts so far);
        ``better``/``worse`` once decided (it stands), else None."""
        self.last = (errors, n)
        self.candidate_dispersion = dispersion if dispersion and dispersion > 1.0 else None
        if self.decision is None and n:
            # under "no difference" both cells are the same process, bursts included: the candidate's counts are
            # divided by the larger of the two dispersions (a clean candidate shows none of its own, yet 0
            # errors in a minute is weak evidence against a baseline that bursts a few times a minute)
            phi = max(self.candidate_dispersion or 1.0, self.dispersion or 1.0)
            x, m = effective_counts(errors, n, phi)
            if self._below is not None and m and self._below.decide(x, m) == "pass":
                self.decision = "better"
            elif self._above is not None and m and self._above.decide(x, m) == "fail":
                self.decision = "worse"
            if self.decision:
                self.at = n
        return self.decision

    def verdict(self) -> str:
        """The word at the end: decided, or ``same`` (no difference detected by the cap)."""
        return self.decision or "same"

    def report(self) -> dict[str, Any]:
        return {"method": COMPARE_METHOD, "verdict": self.verdict(), "decided": self.decision is not None,
                "at_requests": self.at, "candidate": {"errors": self.last[0], "requests": self.last[1]},
                "baseline": {"errors": self.baseline[0], "requests": self.baseline[1],
                             "rate_lo": self.lo, "rate_hi": self.hi, "dispersion": self.dispersion},
                "candidate_dispersion": self.candidate_dispersion}


@dataclass
class AutoStop:
    """Fed the live stats every second (``update``); says when to stop and why; ``report()`` for the JSON.

    ``hold``: a pass stops the load only after this much of it (``horizon``); a breach stops it at once.
    ``reference``: the cell is the baseline of others; it stops only once its own errors amount to
    ``REFERENCE_EVENTS`` effective errors (bursts count about once: ``window_dispersion``) and its lifecycle
    horizon has passed, besides its own decisions, or at the cap: the cells compared with it can prove nothing
    against a baseline that ran until its first burst, or one stopped before its first (seed-unix's uwsgi-2w: 0
    502s in its first 19 s in one run, 221 in 10 s in another).
    ``baseline``: the baseline cell's finished (errors, requests[, dispersion of its per-second error counts]):
    the load also waits until the error-rate comparison with it is decided (``BaselineStop``), a proven breach
    of the cell's own SLO included (the run's question is the comparison); undecided at the cap, it is
    ``same``."""

    slos: Iterable[Any]
    alpha: float = 0.05
    hold: Horizon = Horizon()
    baseline: tuple[int, int] | tuple[int, int, float | None] | None = None
    reference: bool = False
    compare: BaselineStop | None = field(default=None, init=False)
    tests: list[_Test] = field(default_factory=list, init=False)
    stopped: str | None = field(default=None, init=False)
    held: bool = field(default=False, init=False)  # a pass was proven and waited for the horizon
    waiting: str | None = field(default=None, init=False)  # why a decided baseline still runs (``reference``)

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
        if self.baseline is not None:
            x_b, n_b, *phi = self.baseline
            self.compare = BaselineStop(x_b, n_b, alpha=self.alpha, dispersion=phi[0] if phi else None)
        if not self.tests and self.compare is None:
            raise ConfigError("duration=auto decides error_rate<X and percentile SLOs (p99<X ...); this cell has "
                              "none: add one (e.g. --wsgi-slo='error_rate<1e-3') or give a duration")

    def update(self, stats: Stats) -> str | None:
        """The reason to stop now, or None to go on."""
        if self.stopped:
            return self.stopped
        why = self._update(stats)
        if why and self.reference:
            # bursts are seen only over many seconds: not before the lifecycle horizon (a joint recycle or two)
            early = stats.requests < self.hold.requests or _elapsed(stats) < max(self.hold.seconds, 2.0)
            events = effective_counts(stats.error_count, stats.requests, window_dispersion(stats))[0]
            if early or events < REFERENCE_EVENTS:
                self.waiting = (f"a baseline: {events} effective error(s) of the {REFERENCE_EVENTS} it runs for "
                                "(or the cap)")
                self.stopped = None
                return None
            self.stopped = f"{why}; a baseline: ran until {events} effective errors"
        return self.stopped

    def _update(self, stats: Stats) -> str | None:
        for t in self.tests:
            if t.latency_ms is None:
                t.x, t.n = stats.error_count, stats.requests
            else:
                t.x, t.n = _slower_than(stats, t.latency_ms), stats.histogram.get_total_count()  # after any warm-up
            t.x = min(t.x, t.n)
            t.rate.update(t.x, t.n)
            if t.decision() == "fail" and t.failed_at is None:
                t.failed_at = t.n
        compared = self.compare.update(stats.error_count, stats.requests, window_dispersion(stats)) \
            if self.compare else None
        failed = [t for t in self.tests if t.decision() == "fail"]
        if failed and (self.compare is None or compared):
            self.stopped = f"{failed[0].slo.text} breached (proven after {failed[0].failed_at:,} requests)"
            if self.compare:
                self.stopped += f"; error rate {compared} than the baseline's (proven after {self.compare.at:,})"
        elif all(t.decision() == "pass" for t in self.tests) and (self.compare is None or compared):
            n, elapsed = stats.requests, _elapsed(stats)
            if n < self.hold.requests or elapsed < self.hold.seconds:
                self.held = True
                return None
            at = max([t.decided_at for t in self.tests] + ([self.compare.at or n] if self.compare else []))
            what = "every decidable SLO met" if self.tests else "decided"
            self.stopped = f"{what} (proven after {at:,} requests)"
            if self.compare:
                self.stopped += f"; error rate {compared} than the baseline's"
            if self.held:
                self.stopped += f"; held to {n:,} requests, {elapsed:.0f} s for the lifecycle ({self.hold.why})"
        return self.stopped

    def report(self) -> dict[str, Any]:
        return {
            "method": METHOD, "stopped": self.stopped or (f"at the cap; {self.waiting}" if self.waiting else None),
            "hold": {"requests": self.hold.requests, "seconds": self.hold.seconds, "why": self.hold.why},
            **({"comparison": self.compare.report()} if self.compare else {}),
            "decisions": {t.slo.text: {"decision": t.decision(), "at_requests": t.decided_at if t.decision() else None,
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
