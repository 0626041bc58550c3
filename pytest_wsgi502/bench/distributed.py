"""Benchmark (not a test): throughput of one generator on Locust's runtime vs the local engine, per client core.

    python -m pytest_wsgi502.bench.distributed --json PATH [--duration 5] [--reps 3] [--connections 32]

nginx ``return 200`` on 127.0.0.1 pinned to core 0; every client pinned to core 1, closed loop, the same
connections, runs interleaved (A B C A B C ...) so drift hits all alike:
- ``engine``: the local engine, one process (``engine.run``);
- ``generator``: ``run_distributed(generators=1)``: a Locust master and one ``locust --worker`` whose engine
  process drives the load (the client the distributed path uses);
- ``fasthttp``: Locust's own FastHttpUser (geventhttpclient), standalone ``locust --headless`` with one process:
  the alternative client a generator could have used.
Each run records requests/s and the CPU all client processes used (master, worker and engine process included),
so the report gives requests per client CPU-second: what one generator core delivers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pytest_wsgi502.bench import static_nginx

FASTHTTP = """
from locust import FastHttpUser, constant, task

class Client(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self):
        self.client.get("/")
"""


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _engine(url: str, duration: float, connections: int) -> dict[str, Any]:
    from pytest_wsgi502.load.engine import LoadSpec, run

    cpu0 = _self_cpu()
    r = run(LoadSpec(url, concurrency=connections, duration=duration, drain=2))
    cpu = _self_cpu() - cpu0
    n = r["stats"].requests
    return {"requests": n, "rps": n / duration, "client_cpu_s": cpu, "error": r["engine_error"]}


def _generator(url: str, duration: float, connections: int) -> dict[str, Any]:
    from pytest_wsgi502.load.distributed import run_distributed
    from pytest_wsgi502.load.engine import LoadSpec

    cpu0 = _children_cpu() + _self_cpu()
    r = run_distributed(LoadSpec(url, concurrency=connections, duration=duration, drain=2), generators=1)
    cpu = _children_cpu() + _self_cpu() - cpu0  # master, worker and its engine process (reaped in turn)
    n = r["stats"].requests
    return {"requests": n, "rps": n / duration, "client_cpu_s": cpu,
            "engine_cpu_s": sum(e.get("cpu_s", 0.0) for e in r["engine"]["per_process"]), "error": r["engine_error"]}


def _fasthttp(url: str, duration: float, connections: int, workdir: Path) -> dict[str, Any]:
    locustfile = workdir / "fasthttp_locustfile.py"
    locustfile.write_text(FASTHTTP)
    cpu0 = _children_cpu()
    out = subprocess.run([sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(connections),
                          "-r", str(connections), "-t", f"{duration:g}s", "--host", url, "--json", "--only-summary",
                          "--loglevel", "ERROR", "--stop-timeout", "2"],
                         capture_output=True, text=True, timeout=duration + 60, cwd=workdir)
    cpu = _children_cpu() - cpu0
    try:
        entries = json.loads(out.stdout)
    except json.JSONDecodeError:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    n = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    return {"requests": n, "rps": n / duration, "client_cpu_s": cpu, "failures": failures,
            "error": None if n else "no requests"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one generator on Locust's runtime vs the local engine")
    ap.add_argument("--json", required=True)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args(argv)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # every client process inherits core 1; nginx runs on core 0
    runs: dict[str, list[dict[str, Any]]] = {"engine": [], "generator": [], "fasthttp": []}
    with tempfile.TemporaryDirectory(prefix="wsgi502-dbench-") as tmp:
        nginx, port = static_nginx(Path(tmp))
        url = f"http://127.0.0.1:{port}"
        try:
            for rep in range(args.reps):
                for name in runs:
                    if name == "engine":
                        r = _engine(url, args.duration, args.connections)
                    elif name == "generator":
                        r = _generator(url, args.duration, args.connections)
                    else:
                        r = _fasthttp(url, args.duration, args.connections, Path(tmp))
                    r["rep"] = rep
                    if r.get("client_cpu_s"):
                        r["requests_per_client_cpu_s"] = round(r["requests"] / r["client_cpu_s"])
                    runs[name].append(r)
                    print(name, json.dumps(r), flush=True)
        finally:
            nginx.kill()
            nginx.wait(10)
    summary = {name: {"rps_median": round(statistics.median(r["rps"] for r in rs if not r.get("error"))),
                      "rps": [round(r["rps"]) for r in rs if not r.get("error")],
                      "requests_per_client_cpu_s": [r.get("requests_per_client_cpu_s") for r in rs]}
               for name, rs in runs.items() if any(not r.get("error") for r in rs)}
    Path(args.json).write_text(json.dumps({"settings": vars(args), "runs": runs, "summary": summary}, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
