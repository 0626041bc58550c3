"""Per-cell load statistics that merge exactly across processes.

Latency is kept in an HdrHistogram of microseconds, 1 us .. 60 s at 3 significant digits: any recorded
value is reported within 0.1 % of itself, and histograms merge without loss (unlike rounded buckets).
Per-second windows keep their own histogram at 2 significant digits (1 %, 20 KB a second) for the time
series. Values above 60 s are clamped to 60 s and counted in ``clamped``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US, HIGHEST_US, DIGITS, WINDOW_DIGITS = 1, 60_000_000, 3, 2
# transport and verification failures, counted apart from HTTP statuses
ERROR_CLASSES = ("connect", "reset", "timeout", "protocol", "verify")
PERCENTILES = (50, 90, 95, 99, 99.9)


def new_histogram(digits: int = DIGITS) -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, digits)


@dataclass
class Window:
    """One wall-clock second: requests, errors by class (an error class or an HTTP status >= 400), latency."""

    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    histogram: HdrHistogram = field(default_factory=lambda: new_histogram(WINDOW_DIGITS))


@dataclass
class Stats:
    status_counts: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    histogram: HdrHistogram = field(default_factory=new_histogram)
    started: float = 0.0  # wall-clock seconds (time.time) of the first send
    ended: float = 0.0  # wall-clock seconds of the last completion
    clamped: int = 0
    windows: dict[int, Window] = field(default_factory=dict)  # unix second -> window
    # warm-up: requests sent before this wall time count as requests and errors (and in the timeline), never in
    # ``histogram`` nor in ``rps`` (0: no warm-up)
    warmup_until: float = 0.0
    warmup_requests: int = 0
    # the end of the send window (wall time: the deadline, or earlier when a stop rule ends the load; 0: unknown).
    # Requests still in flight then finish in the drain and count as requests, errors and latency, but not in
    # ``rps``: throughput is the completions inside the window over its length, as wrk counts it. Measured to
    # the last completion instead, one straggler (a request queued behind a recycling worker) stretched the
    # denominator by up to 1.2 s in a 10 s cell and moved its req/s by 10 %.
    window_end: float = 0.0
    late: int = 0  # measured (not warm-up) completions after ``window_end``

    def record(self, status: int | None, latency_s: float, at: float, error: str | None = None) -> None:
        """One finished attempt at wall time ``at``: an HTTP status (None when the transport failed) and/or
        an error class."""
        window = self.windows.get(sec := int(at))
        if window is None:
            window = self.windows[sec] = Window()
        window.requests += 1
        warm = self.warmup_until > 0 and at - latency_s < self.warmup_until  # sent within the warm-up
        self.warmup_requests += warm
        if self.window_end and at > self.window_end and not warm:
            self.late += 1
        if status is not None:
            self.status_counts[status] += 1
            us = int(latency_s * 1e6)
            if us > HIGHEST_US:
                us, self.clamped = HIGHEST_US, self.clamped + 1
            elif us < LOWEST_US:
                us = LOWEST_US
            if not warm:
                self.histogram.record_value(us)
            window.histogram.record_value(us)
            if status >= 400:
                window.errors[str(status)] += 1
        if error is not None:
            self.errors[error] += 1
            window.errors[error] += 1

    def merge(self, other: Stats) -> Stats:
        self.status_counts.update(other.status_counts)
        self.errors.update(other.errors)
        self.histogram.add(other.histogram)
        if other.started and (not self.started or other.started < self.started):
            self.started = other.started
        self.ended = max(self.ended, other.ended)
        self.clamped += other.clamped
        self.warmup_until = max(self.warmup_until, other.warmup_until)
        self.warmup_requests += other.warmup_requests
        self.window_end = max(self.window_end, other.window_end)
        self.late += other.late
        for sec, w in other.windows.items():
            mine = self.windows.setdefault(sec, Window())
            mine.requests += w.requests
            mine.errors.update(w.errors)
            mine.histogram.add(w.histogram)
        return self

    # crossing a process boundary: HdrHistograms travel in their standard compressed encoding
    def to_wire(self, live: bool = False) -> dict[str, Any]:
        """``live``: a snapshot for a stop rule (duration=auto across engine processes): only the first and the
        last second of the series, so it stays small however long the run (the totals are complete)."""
        windows = self.windows
        if live and len(windows) > 2:
            windows = {k: windows[k] for k in (min(windows), max(windows))}
        return {
            "status_counts": dict(self.status_counts), "errors": dict(self.errors),
            "histogram": self.histogram.encode(), "started": self.started, "ended": self.ended,
            "clamped": self.clamped, "warmup_until": self.warmup_until, "warmup_requests": self.warmup_requests,
            "window_end": self.window_end, "late": self.late,
            "windows": {s: (w.requests, dict(w.errors), w.histogram.encode()) for s, w in windows.items()},
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Stats:
        s = cls(Counter(d["status_counts"]), Counter(d["errors"]), started=d["started"], ended=d["ended"],
                clamped=d["clamped"], warmup_until=d.get("warmup_until", 0.0),
                warmup_requests=d.get("warmup_requests", 0), window_end=d.get("window_end", 0.0),
                late=d.get("late", 0))
        s.histogram.add(HdrHistogram.decode(d["histogram"]))
        for sec, (n, errors, hist) in d["windows"].items():
            w = s.windows[int(sec)] = Window(n, Counter(errors))
            w.histogram.add(HdrHistogram.decode(hist))
        return s

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

    @property
    def measured(self) -> tuple[int, float]:
        """(requests, seconds) that throughput is measured over: completions after the warm-up and within the send
        window (``window_end``; a run that ended sooner, e.g. on its request budget: to its last completion)."""
        end = min(self.ended, self.window_end) if self.window_end else self.ended
        n = self.requests - self.warmup_requests - self.late
        return n, max(0.0, end - max(self.started, self.warmup_until or self.started))

    def timeline(self) -> list[dict[str, Any]]:
        """Per-second series: offset from the first second, requests, errors by class, p99 (ms, 1 %)."""
        if not self.windows:
            return []
        first = min(self.windows)
        return [
            {"t": sec - first, "requests": w.requests, "errors": dict(sorted(w.errors.items())),
             "p99_ms": w.histogram.get_value_at_percentile(99) / 1000 if w.histogram.get_total_count() else None}
            for sec, w in sorted(self.windows.items())
        ]

    def to_dict(self) -> dict[str, Any]:
        h, n = self.histogram, self.requests
        latency: dict[str, float | None] = {
            ("p99.9" if p == 99.9 else f"p{p:g}"): h.get_value_at_percentile(p) / 1000 for p in PERCENTILES
        }
        latency.update(max=h.get_max_value() / 1000, mean=round(h.get_mean_value() / 1000, 3))
        if not h.get_total_count():
            latency = dict.fromkeys(latency)
        measured, seconds = self.measured
        return {
            "requests": n,
            "responses": self.responses,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "http_5xx": sum(v for k, v in self.status_counts.items() if k >= 500),
            "errors": {k: self.errors.get(k, 0) for k in ERROR_CLASSES},
            "error_count": self.error_count,
            "error_rate": (self.error_count / n) if n else 0.0,
            "latency_ms": latency,
            "rps": round(measured / seconds, 1) if seconds else 0.0,
            "duration_s": round(self.duration, 3),
            "started_at": self.started,
            "ended_at": self.ended,
            "latency_clamped": self.clamped,
            "timeline": self.timeline(),
            "timeline_t0": min(self.windows) if self.windows else None,  # wall second of the series' t=0
            **({"warmup": {"seconds": round(self.warmup_until - self.started, 3), "requests": self.warmup_requests,
                           "note": "counted in requests and errors; not in latency or req/s"}}
               if self.warmup_until else {}),
        }
