"""What CPU isolation costs and buys: the same matrix cells with and without it, runs interleaved.

    python -m pytest_wsgi502.bench.isolation --json PATH [--cells uwsgi-2w,uwsgi-16w,gunicorn-sync]
                                             [--duration 10s] [--reps 3] [--mode auto]

Runs the seed matrix cells (sample project, real MariaDB/nginx/servers) ``--reps`` times with isolation off and
``--reps`` times with it on, in the order A B B A A B ... so a drift of the machine (or of the harness, issue
14) hits both alike. Per cell and side: req/s mean and CV, p99 mean and CV, the engine's event-loop lag p99
(worst run), its loop CPU and run-queue wait; then the ratios on/off side by side. Ratios, not absolute
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

ROOT = Path(__file__).resolve().parents[2]


def order(reps: int) -> list[str]:
    """off/on interleaved so that a linear drift cancels: off on on off off on ..."""
    pairs = [("off", "on") if i % 2 == 0 else ("on", "off") for i in range(reps)]
    return [side for pair in pairs for side in pair]


def one_run(side: str, mode: str, cells: str, duration: str, out: Path) -> dict[str, Any]:
    env = dict(os.environ, WSGI502_BENCH_ISOLATION=mode if side == "on" else "off",
               WSGI502_BENCH_ISOLATION_OUT=str(out.with_suffix(".iso.json")))
    argv = [sys.executable, "-m", "pytest", "sample_project/test_matrix.py", "--wsgi-matrix", f"--wsgi-cells={cells}",
            f"--wsgi-duration={duration}", f"--wsgi-json={out}", "-p", "no:cacheprovider", "-p",
            "pytest_wsgi502.bench.isolate", "-q"]
    t0 = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if not out.exists():
        raise RuntimeError(f"run wrote no JSON (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    data = json.loads(out.read_text())
    iso_file = out.with_suffix(".iso.json")
    rows = {}
    for c in data["cells"]:
        e = c.get("engine") or {}
        rows[c["name"]] = {"rps": c.get("rps"), "p99": (c.get("latency_ms") or {}).get("p99"),
                           "loop_lag_p99_ms": e.get("loop_lag_p99_ms"), "loop_cpu_percent": e.get("loop_cpu_percent"),
                           "runqueue_wait_ms": e.get("runqueue_wait_ms"), "bound_kind": e.get("bound_kind"),
                           "outcome": (c.get("slo") or {}).get("outcome"), "requests": c.get("requests")}
    return {"side": side, "wall_s": round(time.monotonic() - t0, 1), "exit": done.returncode, "cells": rows,
            "isolation": json.loads(iso_file.read_text()) if iso_file.exists() else {"mechanism": "off"}}


def _cv(xs: list[float]) -> float | None:
    return round(100 * statistics.stdev(xs) / statistics.mean(xs), 1) if len(xs) > 1 and statistics.mean(xs) else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cells = sorted({name for r in runs for name in r["cells"]})
    out: dict[str, Any] = {}
    for name in cells:
        per: dict[str, Any] = {}
        for side in ("off", "on"):
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
        off, on = per["off"], per["on"]
        per["ratio_rps_on_off"] = round(on["rps_mean"] / off["rps_mean"], 3) if on["rps_mean"] and off["rps_mean"] \
            else None
        per["ratio_p99_on_off"] = round(on["p99_mean"] / off["p99_mean"], 3) if on["p99_mean"] and off["p99_mean"] \
            else None
        out[name] = per
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pytest_wsgi502.bench.isolation")
    p.add_argument("--json", type=Path, required=True, help="write the result here")
    p.add_argument("--cells", default="uwsgi-2w,uwsgi-16w,gunicorn-sync")
    p.add_argument("--duration", default="10s")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--mode", default="auto", help="isolation for the 'on' runs: auto, cgroup or affinity")
    a = p.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="wsgi502-isobench-") as tmp:
        for i, side in enumerate(order(a.reps)):
            r = one_run(side, a.mode, a.cells, a.duration, Path(tmp) / f"run{i}.json")
            r["index"] = i
            runs.append(r)
            cells = "  ".join(f"{n} {c['rps']:.0f} req/s p99 {c['p99']:.0f} ms lag {c['loop_lag_p99_ms']:.1f} ms"
                              for n, c in r["cells"].items() if c["rps"] is not None)
            print(f"run {i} {side:3s} [{r['isolation']['mechanism']}] {cells}", file=sys.stderr)
    result = {"benchmark": "isolation", "cells": a.cells, "duration": a.duration, "reps": a.reps, "mode": a.mode,
              "order": order(a.reps), "summary": summarize(runs), "runs": runs}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    for name, s in result["summary"].items():
        print(f"{name:16s} off {s['off']['rps_mean']} req/s (CV {s['off']['rps_cv']} %), p99 {s['off']['p99_mean']} ms"
              f" | on {s['on']['rps_mean']} req/s (CV {s['on']['rps_cv']} %), p99 {s['on']['p99_mean']} ms"
              f" | on/off req/s {s['ratio_rps_on_off']} p99 {s['ratio_p99_on_off']}")


if __name__ == "__main__":
    main()
