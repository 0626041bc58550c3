"""What CPU isolation costs and buys: the same matrix cells with and without it, runs interleaved.

    python -m pytest_wsgi502.bench.isolation --json PATH [--cells uwsgi-2w,uwsgi-16w,gunicorn-sync]
                                             [--duration 10s] [--reps 3] [--modes off,auto] [--hogs 0]

Runs the seed matrix cells (sample project, real MariaDB/nginx/servers) ``--reps`` times in each isolation mode
(``off`` first: the baseline), in the order A B C C B A ... so a drift of the machine (or of the harness, issue
14) hits both alike. Per cell and side: req/s mean and CV, p99 mean and CV, the engine's event-loop lag p99
(worst run), its loop CPU and run-queue wait; then the ratios to the first mode side by side, and the drift
(slope of req/s over the run index, each mode centred on its mean) with a fixed CPU probe per run. Ratios, not absolute
numbers, are what carries from one machine to another. Heavy: run it alone (``flock /tmp/wsgi502-heavy.lock``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_wsgi502.metrics.machine import probe_ms

ROOT = Path(__file__).resolve().parents[2]


def order(reps: int, modes: tuple[str, ...] = ("off", "auto")) -> list[str]:
    """Modes interleaved so that a linear drift cancels: A B C C B A A B C ..."""
    return [m for i in range(reps) for m in (modes if i % 2 == 0 else modes[::-1])]


def one_run(side: str, cells: str, duration: str, out: Path, hogs: int = 0) -> dict[str, Any]:
    env = dict(os.environ)
    argv = [sys.executable, "-m", "pytest", "sample_project/test_matrix.py", "--wsgi-matrix", f"--wsgi-cells={cells}",
            f"--wsgi-duration={duration}", f"--wsgi-json={out}", "-p", "no:cacheprovider", f"--wsgi-isolation={side}",
            "-q"]
    probe = probe_ms(2_000_000)  # the whole run's machine, as the earlier benchmark runs timed it
    t0 = time.monotonic()
    # --hogs: "the machine busy with other work" (issue 14's newcomer check), busy loops no isolation places
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    finally:
        for h in busy:
            h.kill()
            h.wait()
    if not out.exists():
        raise RuntimeError(f"run wrote no JSON (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    data = json.loads(out.read_text())
    rows = {}
    for c in data["cells"]:
        e = c.get("engine") or {}
        rows[c["name"]] = {"rps": c.get("rps"), "p99": (c.get("latency_ms") or {}).get("p99"),
                           "loop_lag_p99_ms": e.get("loop_lag_p99_ms"), "loop_cpu_percent": e.get("loop_cpu_percent"),
                           "runqueue_wait_ms": e.get("runqueue_wait_ms"), "bound_kind": e.get("bound_kind"),
                           "outcome": (c.get("slo") or {}).get("outcome"), "requests": c.get("requests")}
    return {"side": side, "wall_s": round(time.monotonic() - t0, 1), "exit": done.returncode, "cells": rows,
            "probe_ms": probe,
            "isolation": (data["environment"].get("isolation") or [{"mechanism": "off"}])[0]}


def _cv(xs: list[float]) -> float | None:
    return round(100 * statistics.stdev(xs) / statistics.mean(xs), 1) if len(xs) > 1 and statistics.mean(xs) else None


def summarize(runs: list[dict[str, Any]], modes: tuple[str, ...] = ("off", "auto")) -> dict[str, Any]:
    cells = sorted({name for r in runs for name in r["cells"]})
    out: dict[str, Any] = {}
    for name in cells:
        per: dict[str, Any] = {}
        for side in modes:
            rs = [r["cells"][name] for r in runs if r["side"] == side and name in r["cells"]]
            rps = [x["rps"] for x in rs if x["rps"]]
            p99 = [x["p99"] for x in rs if x["p99"]]
            per[side] = {
                "rps": [round(x, 1) for x in rps], "rps_mean": round(statistics.mean(rps), 1) if rps else None,
                "rps_cv": _cv(rps), "p99": p99, "p99_mean": round(statistics.mean(p99), 1) if p99 else None,
                "p99_cv": _cv(p99),
                "loop_lag_p99_ms": [x["loop_lag_p99_ms"] for x in rs],
                "loop_cpu_percent": [x["loop_cpu_percent"] for x in rs],
                "runqueue_wait_ms": [x["runqueue_wait_ms"] for x in rs],
                "outcomes": [x["outcome"] for x in rs], "bound_kind": [x["bound_kind"] for x in rs],
            }
        base = per[modes[0]]
        for side in modes[1:]:
            on = per[side]
            per[f"ratio_rps_{side}_{modes[0]}"] = round(on["rps_mean"] / base["rps_mean"], 3) \
                if on["rps_mean"] and base["rps_mean"] else None
            per[f"ratio_p99_{side}_{modes[0]}"] = round(on["p99_mean"] / base["p99_mean"], 3) \
                if on["p99_mean"] and base["p99_mean"] else None
        per["drift_rps_percent_per_run"] = _drift([r for r in runs if name in r["cells"]], name, modes)
        out[name] = per
    return out


# Student's t 0.975 quantiles for 1..30 degrees of freedom (any published table; scipy.stats.t.ppf agrees)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _drift(runs: list[dict[str, Any]], name: str, modes: tuple[str, ...]) -> dict[str, Any] | None:
    """Least-squares slope of req/s over the run index, each side centred on its own mean (so the on/off gap
    is not mistaken for drift), in % of the mean per run, with its 95 % interval (t with n - 1 - sides
    degrees of freedom: one mean per side and the slope are fitted). ``significant``: the interval excludes 0."""
    pts = []
    sides = 0
    for side in modes:
        rs = [(r["index"], r["cells"][name]["rps"]) for r in runs if r["side"] == side and r["cells"][name]["rps"]]
        if len(rs) > 1:
            sides += 1
            m = statistics.mean(y for _, y in rs)
            pts += [(i, 100 * (y - m) / m) for i, y in rs]
    df = len(pts) - 1 - sides
    if df < 1:
        return None
    mx = statistics.mean(i for i, _ in pts)
    den = sum((i - mx) ** 2 for i, _ in pts)
    if not den:
        return None
    slope = sum((i - mx) * y for i, y in pts) / den
    resid = sum((y - slope * (i - mx)) ** 2 for i, y in pts)  # each side's mean is 0 after centring
    se = (resid / df / den) ** 0.5
    half = (T975[df - 1] if df <= len(T975) else 1.96) * se
    return {"slope": round(slope, 2), "ci95": [round(slope - half, 2), round(slope + half, 2)],
            "significant": not (slope - half <= 0 <= slope + half), "runs": len(pts)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pytest_wsgi502.bench.isolation")
    p.add_argument("--json", type=Path, required=True, help="write the result here")
    p.add_argument("--cells", default="uwsgi-2w,uwsgi-16w,gunicorn-sync")
    p.add_argument("--duration", default="10s")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--hogs", type=int, default=0, help="busy-loop processes beside each run (a busy machine)")
    p.add_argument("--modes", default="off,auto", help="isolation modes to compare, the first is the baseline "
                   "(off, auto, cgroup, affinity, nice)")
    a = p.parse_args(argv)
    modes = tuple(a.modes.split(","))
    runs = []
    with tempfile.TemporaryDirectory(prefix="wsgi502-isobench-") as tmp:
        for i, side in enumerate(order(a.reps, modes)):
            r = one_run(side, a.cells, a.duration, Path(tmp) / f"run{i}.json", a.hogs)
            r["index"] = i
            runs.append(r)
            cells = "  ".join(f"{n} {c['rps']:.0f} req/s p99 {c['p99']:.0f} ms lag {c['loop_lag_p99_ms']:.1f} ms"
                              for n, c in r["cells"].items() if c["rps"] is not None)
            print(f"run {i} {side:3s} [{r['isolation']['mechanism']}] probe {r['probe_ms']} ms  {cells}",
                  file=sys.stderr)
    result = {"benchmark": "isolation", "cells": a.cells, "duration": a.duration, "reps": a.reps, "modes": modes,
              "hogs": a.hogs, "order": order(a.reps, modes), "summary": summarize(runs, modes), "runs": runs}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    for name, s in result["summary"].items():
        parts = [f"{m} {s[m]['rps_mean']} req/s (CV {s[m]['rps_cv']} %) p99 {s[m]['p99_mean']} ms "
                 f"(CV {s[m]['p99_cv']} %) lag<={max((x or 0) for x in s[m]['loop_lag_p99_ms']):.1f} ms" for m in modes]
        ratios = [f"{m}/{modes[0]} req/s {s[f'ratio_rps_{m}_{modes[0]}']} p99 {s[f'ratio_p99_{m}_{modes[0]}']}"
                  for m in modes[1:]]
        print(f"{name:16s} " + " | ".join(parts + ratios) + f" | drift {_drift_text(s['drift_rps_percent_per_run'])}")


def _drift_text(d: dict[str, Any] | None) -> str:
    if d is None:
        return "n/a (too few runs)"
    return (f"{d['slope']:+.2f} %/run [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] "
            + ("significant" if d["significant"] else "not significant"))


if __name__ == "__main__":
    main()
