"""Benchmarks that report ratios measured side by side in one run, never absolute times.

    python -m pytest_wsgi502.bench engine   --json PATH [--duration 10] [--reps 3] [--connections 32]
    python -m pytest_wsgi502.bench accuracy --json PATH

``engine``: nginx ``return 200`` on 127.0.0.1 pinned to core 0; wrk, this engine and a default
``httpx.AsyncClient`` each pinned to core 1, same connections, runs interleaved (A B C A B C ...) so machine
drift hits all alike. Each run records client and server CPU, so the report says which side was saturated, and
throughput per client core (requests per client CPU-second).

``accuracy``: a target answering every request after exactly 50 ms (p50/p99 error of the engine, open and
closed loop), and a target that stalls 1 s out of every 5 s (open loop must show the stall at p99; closed
loop shows how much it hides).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_wsgi502.bench import pin, static_nginx

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _run_client(kind: str, url: str, connections: int, duration: float) -> dict[str, Any]:
    """One client run in its own process on core 1; returns requests/s and the client's CPU use."""
    if kind == "wrk":
        t0 = time.monotonic()
        proc = subprocess.Popen([*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{round(duration)}s", url],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, _, usage = os.wait4(proc.pid, 0)  # reap it ourselves: the rusage is wrk's own CPU time
        proc.returncode = 0
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not m:
            raise RuntimeError(f"wrk printed no rate:\n{out}")
        cpu = (usage.ru_utime + usage.ru_stime) / max(duration, time.monotonic() - t0 - 0.2)
        return {"rps": float(m.group(1)), "client_cpu": cpu}
    code = [sys.executable, "-m", "pytest_wsgi502.bench", "_client", kind, url, str(connections), str(duration)]
    done = subprocess.run([*pin(1), *code], capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _client_main(kind: str, url: str, connections: int, duration: float) -> None:
    """Runs inside the pinned client process: drive load, report rate and own CPU while loading."""
    import httpx

    if kind == "engine":
        from pytest_wsgi502.load.engine import LoadSpec, run

        cpu0, t0 = time.process_time(), time.monotonic()
        out = run(LoadSpec(base_url=url, path="/", concurrency=connections, duration=duration,
                           max_requests=10**9))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        n = out["stats"].requests
        errors = out["stats"].error_count
    else:  # plain httpx.AsyncClient with its default transport: the baseline the engine exists to beat

        async def main() -> tuple[int, int]:
            limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
            count, errs = [0], [0]
            async with httpx.AsyncClient(limits=limits) as client:
                deadline = time.monotonic() + duration

                async def user() -> None:
                    while time.monotonic() < deadline:
                        try:
                            r = await client.get(url)
                            errs[0] += r.status_code != 200
                        except httpx.HTTPError:
                            errs[0] += 1
                        count[0] += 1

                await asyncio.gather(*(user() for _ in range(connections)))
            return count[0], errs[0]

        cpu0, t0 = time.process_time(), time.monotonic()
        n, errors = asyncio.run(main())
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    print(json.dumps({"rps": n / wall, "client_cpu": cpu / wall, "requests": n, "errors": errors}))


def bench_engine(args: argparse.Namespace) -> dict[str, Any]:
    if not shutil.which("wrk"):
        sys.exit("wrk not found: bash bin/dev setup installs it (apt package wrk)")
    kinds = ("wrk", "engine", "httpx")
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="wsgi502-bench-") as tmp:
        nginx, port = static_nginx(Path(tmp))
        url = f"http://127.0.0.1:{port}/"
        try:
            for rep in range(args.reps):
                for kind in kinds:
                    duration = args.duration if kind != "httpx" else min(args.duration, 5.0)
                    s0, t0 = _cpu_seconds(nginx.pid), time.monotonic()
                    r = _run_client(kind, url, args.connections, duration)
                    wall = time.monotonic() - t0
                    r["server_cpu"] = (_cpu_seconds(nginx.pid) - s0) / min(wall, duration + 0.5)
                    r["rep"] = rep
                    runs[kind].append(r)
                    print(f"rep {rep} {kind:6s} {r['rps']:>10.0f} req/s  client cpu "
                          f"{100 * r['client_cpu']:.0f}%  "
                          f"server cpu {100 * r['server_cpu']:.0f}%", file=sys.stderr)
        finally:
            nginx.terminate()
            nginx.wait(10)

    def summary(kind: str) -> dict[str, Any]:
        rs = runs[kind]
        rps = statistics.median(r["rps"] for r in rs)
        server = statistics.median(r["server_cpu"] for r in rs)
        client = statistics.median(r["client_cpu"] for r in rs)
        # requests per client CPU-second; when the client was not saturated this is what one core would do
        per_core = rps / client if client else rps
        saturated = "server" if server >= 0.9 else ("client" if client >= 0.9 else "neither")
        if kind == "wrk" and server >= 0.9:
            per_core = rps  # wrk kept up with nginx: its own ceiling is higher still, so the ratio is conservative
        return {"rps": round(rps), "client_cpu": client, "server_cpu": round(server, 3),
                "rps_per_core": round(per_core), "saturated": saturated, "runs": rs}

    s = {k: summary(k) for k in kinds}
    return {
        "benchmark": "engine",
        "connections": args.connections, "duration_s": args.duration, "reps": args.reps,
        "engine_rps_per_core": s["engine"]["rps_per_core"],
        "wrk_rps_per_core": s["wrk"]["rps_per_core"],
        "httpx_rps_per_core": s["httpx"]["rps_per_core"],
        "ratio": round(s["engine"]["rps_per_core"] / s["wrk"]["rps_per_core"], 3),
        "httpx_ratio": round(s["httpx"]["rps_per_core"] / s["wrk"]["rps_per_core"], 4),
        "pinned": bool(pin(0)),
        "detail": s,
    }


def _target(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([*pin(0), sys.executable, "-m", "pytest_wsgi502.bench.targets", *args],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline().split()[1])


def bench_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    from pytest_wsgi502.load.engine import LoadSpec, run

    out: dict[str, Any] = {"benchmark": "accuracy"}
    proc, port = _target("delay", "--ms", "50")
    try:
        # moderate load: 50 req/s open loop over 5 connections; 4 closed-loop users (~80 req/s);
        # the median of --reps runs, since one run's p99 is its 3 slowest samples
        profiles: tuple[tuple[str, dict[str, Any]], ...] = (("open", {"rate": 50.0, "concurrency": 5}),
                                                             ("closed", {"concurrency": 4}))
        for mode, kw in profiles:
            rs = [run(LoadSpec(base_url=f"http://127.0.0.1:{port}", mode=mode, duration=args.duration, **kw))
                  for _ in range(args.reps)]
            lats = [r["stats"].to_dict()["latency_ms"] for r in rs]
            p50 = statistics.median(lat["p50"] for lat in lats)
            p99 = statistics.median(lat["p99"] for lat in lats)
            out[f"delay_50ms_{mode}"] = {"p50_error_ms": round(p50 - 50, 3), "p99_error_ms": round(p99 - 50, 3),
                                         "runs": lats, "requests": sum(r["stats"].requests for r in rs),
                                         "generator_bound": any(r["generator_bound"] for r in rs)}
    finally:
        proc.kill()
    proc, port = _target("stall", "--every", "5", "--stall", "1")
    try:
        for mode, rate in (("open", 200.0), ("closed", 0.0)):
            r = run(LoadSpec(base_url=f"http://127.0.0.1:{port}", mode=mode, rate=rate, concurrency=10,
                             duration=max(args.duration, 6.0)))
            lat = r["stats"].to_dict()["latency_ms"]
            out[f"stall_1s_every_5s_{mode}"] = {"p99_ms": lat["p99"], "max_ms": lat["max"],
                                                "requests": r["stats"].requests}
    finally:
        proc.kill()
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_client"]:
        _client_main(argv[1], argv[2], int(argv[3]), float(argv[4]))
        return
    p = argparse.ArgumentParser(prog="python -m pytest_wsgi502.bench")
    p.add_argument("which", choices=("engine", "accuracy"))
    p.add_argument("--json", type=Path, required=True, help="write the result here")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--connections", type=int, default=32)
    a = p.parse_args(argv)
    result = bench_engine(a) if a.which == "engine" else bench_accuracy(a)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "detail"}, indent=2))


if __name__ == "__main__":
    main()
