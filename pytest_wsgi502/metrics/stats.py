"""Per-cell load statistics that merge exactly across processes.

Latency is kept in an HdrHistogram of microseconds, 1 us .. 60 s at 3 significant digits: any recorded
value is reported within 0.1 % of itself, and two histograms merge without loss (unlike rounded buckets).
Values above 60 s are clamped to 60 s and counted in ``clamped``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US, HIGHEST_US, DIGITS = 1, 60_000_000, 3
# transport and verification failures, counted apart from HTTP statuses
ERROR_CLASSES = ("connect", "reset", "timeout", "protocol", "verify")
PERCENTILES = (50, 90, 95, 99, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


@dataclass
class Stats:
    status_counts: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    histogram: HdrHistogram = field(default_factory=new_histogram)
    started: float = 0.0  # wall-clock seconds (time.time) of the first send
    ended: float = 0.0  # wall-clock seconds of the last completion
    clamped: int = 0
    # second since start -> [requests, errors]; a coarse timeline for the report
    timeline: dict[int, list[int]] = field(default_factory=dict)

    def record(self, status: int | None, latency_s: float, at: float, error: str | None = None) -> None:
        """One finished attempt: an HTTP status (or None when the transport failed) and/or an error class."""
        if status is not None:
            self.status_counts[status] += 1
            us = max(LOWEST_US, int(latency_s * 1e6))
            if us > HIGHEST_US:
                us, self.clamped = HIGHEST_US, self.clamped + 1
            self.histogram.record_value(us)
        if error is not None:
            self.errors[error] += 1
        bad = error is not None or (status is not None and status >= 400)
        slot = self.timeline.setdefault(int(at - self.started) if self.started else 0, [0, 0])
        slot[0] += 1
        slot[1] += bad

    def merge(self, other: Stats) -> Stats:
        self.status_counts.update(other.status_counts)
        self.errors.update(other.errors)
        self.histogram.add(other.histogram)
        if other.started and (not self.started or other.started < self.started):
            self.started = other.started
        self.ended = max(self.ended, other.ended)
        self.clamped += other.clamped
        for sec, (n, e) in other.timeline.items():
            slot = self.timeline.setdefault(sec, [0, 0])
            slot[0] += n
            slot[1] += e
        return self

    @property
    def responses(self) -> int:
        return sum(self.status_counts.values())

    @property
    def requests(self) -> int:
        """Attempts: every response plus every attempt that got no response."""
        return self.responses + sum(v for k, v in self.errors.items() if k != "verify")

    @property
    def error_count(self) -> int:
        http_errors = sum(n for s, n in self.status_counts.items() if s >= 400)
        return http_errors + sum(self.errors.values())

    @property
    def duration(self) -> float:
        return max(0.0, self.ended - self.started)

    def to_dict(self) -> dict[str, Any]:
        h, n = self.histogram, self.requests
        latency = {("p99.9" if p == 99.9 else f"p{p}"): h.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
        latency.update(max=h.get_max_value() / 1000, mean=round(h.get_mean_value() / 1000, 3))
        if not self.responses:
            latency = dict.fromkeys(latency)
        return {
            "requests": n,
            "responses": self.responses,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "http_5xx": sum(v for k, v in self.status_counts.items() if k >= 500),
            "errors": {k: self.errors.get(k, 0) for k in ERROR_CLASSES},
            "error_count": self.error_count,
            "error_rate": (self.error_count / n) if n else 0.0,
            "latency_ms": latency,
            "rps": round(n / self.duration, 1) if self.duration else 0.0,
            "duration_s": round(self.duration, 3),
            "latency_clamped": self.clamped,
            "timeline": [[sec, *self.timeline[sec]] for sec in sorted(self.timeline)],
        }
