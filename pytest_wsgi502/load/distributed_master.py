"""The Locust master of a distributed load, run as its own process (Locust monkey-patches it with gevent).

``python -m pytest_wsgi502.load.distributed_master --bind HOST --port PORT --expect N --spec FILE --events FILE``

It waits for N Locust workers (``distributed_locustfile``), numbers them 0..N-1 in Locust's worker-index order,
sends each its generator number and the profile, starts all of them at one wall-clock time, and merges the
HdrHistograms they send back exactly (``Stats.merge``). It writes JSON lines to the events file (``listening``,
``connected`` at each new count, ``started``, then ``result`` or ``error``) for ``distributed.run_distributed``,
which builds the same result a local engine run returns. A generator that Locust's heartbeat marks missing, or
that quits, ends the run with "generator N lost at t=..s".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

import gevent
import locust  # Locust applies gevent's monkey patching when imported
from locust.env import Environment
from locust.runners import HEARTBEAT_INTERVAL, HEARTBEAT_LIVENESS, STATE_MISSING, MasterRunner

from pytest_wsgi502.load import distributed_wire as wire
from pytest_wsgi502.load.distributed_locustfile import Generator
from pytest_wsgi502.metrics.stats import Stats

START_MARGIN_S = 0.5  # the common start is this far after the last generator said ready
RESULT_GRACE_S = 30.0  # after the load's duration and drain: results that have not arrived by then never will


class Master:
    def __init__(self, runner: MasterRunner, expect: int, events: IO[str]) -> None:
        self.runner, self.expect, self.events = runner, expect, events
        self.ready: dict[int, dict[str, Any]] = {}
        self.results: dict[int, dict[str, Any]] = {}
        self.clients: list[str] = []
        self.start_at: float | None = None
        self.seen = 0  # generators connected at the last look
        runner.register_message(wire.READY, self._on_ready)
        runner.register_message(wire.RESULT, self._on_result)

    def emit(self, **event: Any) -> None:
        self.events.write(json.dumps(event) + "\n")
        self.events.flush()

    def _on_ready(self, environment: Any, msg: Any, **_: Any) -> None:
        self.ready[int(msg.data["g"])] = dict(msg.data)

    def _on_result(self, environment: Any, msg: Any, **_: Any) -> None:
        self.results[int(msg.data["g"])] = json.loads(msg.data["json"])

    def connected(self) -> list[str]:
        return [c.id for c in self.runner.clients.all if c.state != STATE_MISSING]

    def _all_connected(self) -> bool:
        """Whether ``expect`` generators are connected; each new count is a ``connected`` event (progress)."""
        n = len(self.connected())
        if n != self.seen:
            self.seen = n
            self.emit(event="connected", generators=n, expect=self.expect)
        return n >= self.expect

    def lost(self) -> str | None:
        """'generator G lost at t=..s (...)' for the first assigned generator Locust no longer has, else None."""
        for g, cid in enumerate(self.clients):
            if g in self.results:
                continue
            node = self.runner.clients.get(cid)
            if node is not None and node.state != STATE_MISSING:
                continue
            how = "it quit" if node is None else f"no heartbeat for {HEARTBEAT_LIVENESS * HEARTBEAT_INTERVAL}s"
            who = self.ready.get(g, {})
            where = f" on {who['host']} pid {who['pid']}" if who else ""
            if self.start_at is None or time.time() < self.start_at:
                return f"generator {g} lost before the load started ({how}{where})"
            return f"generator {g} lost at t={time.time() - self.start_at:.1f}s ({how}{where})"
        return None

    def wait(self, done: Any, timeout: float, what: str) -> str | None:
        """Sleep cooperatively until ``done()``; an error line on a lost generator or the timeout."""
        until = time.monotonic() + timeout
        while not done():
            if self.clients and (reason := self.lost()):
                return reason
            if time.monotonic() > until:
                return what
            gevent.sleep(0.05)
        return None

    def run(self, spec_json: dict[str, Any], duration: float, drain: float, start_timeout: float,
            dump_dir: str | None) -> int:
        error = self.wait(self._all_connected, start_timeout,
                          f"{{n}} of {self.expect} generators connected within {start_timeout:.0f}s")
        if error:
            self.emit(event="error", error=error.replace("{n}", str(len(self.connected()))))
            return 1
        # Locust numbers workers in the order they connected; extra workers get nothing
        self.clients = sorted(self.connected(), key=self.runner.get_worker_index)[: self.expect]
        for g, cid in enumerate(self.clients):
            dump = str(Path(dump_dir) / f"generator-{g}.hdr") if dump_dir else None
            self.runner.send_message(wire.PREPARE, {"g": g, "generators": self.expect, "spec": spec_json,
                                                    "dump": dump}, client_id=cid)
        error = self.wait(lambda: len(self.ready) + len(self.results) >= self.expect, start_timeout,
                          f"generators {sorted(set(range(self.expect)) - set(self.ready))} were not ready within "
                          f"{start_timeout:.0f}s")
        failed = sorted(self.results)  # a result before "go" is an engine process that failed to start
        if error or failed:
            error = error or f"generator {failed[0]}: {self.results[failed[0]].get('error')}"
            self.emit(event="error", error=error)
            return 1
        self.start_at = time.time() + START_MARGIN_S
        for cid in self.clients:
            self.runner.send_message(wire.GO, {"start_at": self.start_at}, client_id=cid)
        self.emit(event="started", start_at=self.start_at,
                  generators=[{"g": g, **self.ready[g]} for g in range(self.expect)])
        error = self.wait(lambda: len(self.results) >= self.expect, START_MARGIN_S + duration + drain + RESULT_GRACE_S,
                          f"generators {sorted(set(range(self.expect)) - set(self.results))} sent no result by the "
                          "run's deadline")
        if error:
            self.emit(event="error", error=error)
            return 1
        merged, engines, errors = Stats(), list[dict[str, Any]](), list[str]()
        for g in range(self.expect):
            res = self.results[g]
            if res.get("event") != "result":
                errors.append(f"generator {g}: {res.get('error')}")
                engines.append({})
                continue
            merged.merge(wire.stats_from_json(res["stats"]))  # exact: HdrHistogram counts add bucket by bucket
            engines.append({**res["engine"], "generator": g, "host": self.ready[g].get("host")})
        self.emit(event="result", stats=wire.stats_to_json(merged), engines=engines,
                  error=(errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")) if errors else None,
                  locust_version=locust.__version__, start_at=self.start_at)
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--start-timeout", type=float, default=60.0)
    ap.add_argument("--dump-dir")
    args = ap.parse_args(argv)
    spec_json = json.loads(Path(args.spec).read_text())
    spec = wire.spec_from_json(spec_json)  # checked here too: a bad file fails before any worker is told
    with open(args.events, "a", buffering=1) as events:
        env = Environment(user_classes=[Generator])
        runner = env.create_master_runner(args.bind, args.port)
        master = Master(runner, args.expect, events)
        master.emit(event="listening", port=runner.server.port, bind=args.bind)
        try:
            return master.run(spec_json, spec.duration, spec.drain, args.start_timeout, args.dump_dir)
        except Exception as exc:
            master.emit(event="error", error=f"Locust master: {type(exc).__name__}: {exc}".replace("\n", " ")[:300])
            return 1
        finally:
            runner.quit()  # tells every worker to quit; their engine processes die with them


if __name__ == "__main__":
    sys.exit(main())
