"""How fast the machine itself was: a fixed piece of CPU work timed around each cell.

On a shared machine (a VM, a CI runner) the host moves under the benchmark: the same loop of Python took
285-345 ms from one minute to the next on an idle 2-core VM of this project, so a cell's absolute req/s moves
with it and no harness setting removes that. The probe cannot correct a result (a server's throughput is not
proportional to one core's speed), but it says how much of a difference between runs the machine alone
explains. pyperf's "the benchmark result may be unstable" and Google Benchmark's CPU-scaling warning do the
same job: they report the machine's state next to the numbers, they do not adjust them.

``probe_ms`` is the timing (it runs where it is called: the load engine's CPU under isolation; the isolation
runs it on the servers' CPUs in a child process); ``spread`` is pure: the summary of a session's probes.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Mapping
from typing import Any

# 200,000 iterations: 10-19 ms on the project's 2-core VMs; the best of 3 drops one-off interruptions
PROBE_ITERATIONS = 200_000
PROBE_ROUNDS = 3
# below this spread (max over min - 1) the machine held still as far as the probe can tell: no warning
STEADY = 0.05


def probe_ms(iterations: int = PROBE_ITERATIONS, rounds: int = PROBE_ROUNDS) -> float:
    """Milliseconds for a fixed amount of single-threaded Python work, the best of ``rounds``."""
    best = math.inf
    for _ in range(max(1, rounds)):
        t0 = time.perf_counter()
        x = 0
        for i in range(iterations):
            x += i * i % 7
        best = min(best, time.perf_counter() - t0)
    return round(1000.0 * best, 2)


def parse_probe(text: str) -> float | None:
    """The probe a child process printed (``probe_ms()`` on the servers' CPUs): a positive finite number of
    milliseconds, else None."""
    try:
        value = float(text.strip())
    except (ValueError, AttributeError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def cell_probes(results: Iterable[Mapping[str, Any]], key: str = "probe_ms") -> list[float]:
    """Every probe of the cells (and of each repeat of a cell): ``probe_ms`` on the engine's CPU,
    ``servers_probe_ms`` on the servers' CPUs (only when isolation gave them CPUs of their own)."""
    out: list[float] = []
    for r in results:
        runs = r.get("repeats") or [r]
        for run in runs:
            machine = run.get("machine_speed") if isinstance(run, Mapping) else None
            for v in (machine or {}).get(key) or ():
                if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
                    out.append(float(v))
    return out


def cells_spread(results: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """``spread`` of every probe of the cells, both sides together (the same work on the same kind of CPU), with
    ``cpus``: which CPUs were timed."""
    results = list(results)
    engine, servers = cell_probes(results), cell_probes(results, "servers_probe_ms")
    info = spread(engine + servers)
    if info is not None:
        info["cpus"] = "the engine's and the servers' CPUs" if servers else "the engine's CPU"
    return info


def spread(probes: Iterable[float]) -> dict[str, Any] | None:
    """{n, min, median, max, spread (max / min - 1), cv, steady} of positive probe times; None for fewer than 2."""
    xs = sorted(float(v) for v in probes if isinstance(v, (int, float)) and math.isfinite(v) and v > 0)
    if len(xs) < 2:
        return None
    mean = statistics.fmean(xs)
    s = xs[-1] / xs[0] - 1.0
    return {"n": len(xs), "min": xs[0], "median": statistics.median(xs), "max": xs[-1], "spread": s,
            "cv": statistics.stdev(xs) / mean, "steady": s < STEADY}


def summary_line(info: Mapping[str, Any] | None) -> str | None:
    """The report's footer line for ``spread``'s result (None: nothing to say)."""
    if not info:
        return None
    where = f" on {info['cpus']}" if info.get("cpus") else ""
    line = (f"machine: a fixed CPU probe took {info['min']:.1f}-{info['max']:.1f} ms{where} around the cells "
            f"({info['n']} probes, spread {100 * info['spread']:.0f} %, CV {100 * info['cv']:.1f} %)")
    if info["steady"]:
        return line + ": the machine held still"
    return (line + ": the machine's own speed moved that much during the run, so absolute numbers can differ by "
            "as much between runs; compare configurations side by side (--wsgi-repeat, --wsgi-baseline-cell)")
