"""The generator side of a distributed load: a locustfile for ``locust --worker`` (Locust's own runtime).

Start a generator on any machine that has ``pytest-wsgi502[distributed]`` installed::

    wsgi502-generator --master-host HOST --master-port PORT [--wsgi502-max-rate R]
    # the same as: locust --worker -f <this file> --master-host HOST --master-port PORT [--wsgi502-max-rate R]

The worker connects to the master (``run_distributed`` / ``--wsgi-distributed=locust``), which assigns it a
generator number and the load profile with a custom message. The worker then runs the harness's engine in a
child process (``distributed_engine``: uvloop, not gevent), starts it at the master's common start time, and
ships the child's result, HdrHistogram included, back with ``runner.send_message``. Locust supplies the
transport, worker numbering, heartbeats (a generator that stops answering is seen as missing) and shutdown.
``--wsgi502-max-rate R`` (env ``WSGI502_MAX_RATE``) caps what this generator sends at R requests/s (e.g. a machine
shared with other work); a generator that cannot keep its share of the rate then marks the run generator-bound.
The ``Generator`` user below is never spawned: Locust requires one user class in a locustfile.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import gevent
from locust import User, constant, events, task
from locust.runners import WorkerRunner

# the message names (kept literal here: this file must import without the rest of the package's dependencies)
PREPARE, READY, GO, RESULT = "wsgi502_prepare", "wsgi502_ready", "wsgi502_go", "wsgi502_result"
ENGINE_MODULE = "pytest_wsgi502.load.distributed_engine"


class Generator(User):
    """Placeholder: the load is driven by the engine process the master's PREPARE message starts."""

    wait_time = constant(3600)

    @task
    def idle(self) -> None:
        """Never runs (no users are spawned)."""


class _Worker:
    """One generator: at most one engine process at a time."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.child: subprocess.Popen[bytes] | None = None
        self.g: int | None = None

    def _send(self, kind: str, data: dict[str, Any]) -> None:
        self.environment.runner.send_message(kind, data)

    def _fail(self, g: int, error: str) -> None:
        self._send(RESULT, {"g": g, "json": json.dumps({"event": "error", "error": error})})

    def prepare(self, environment: Any, msg: Any, **_: Any) -> None:
        data = msg.data
        g = self.g = int(data["g"])
        env = {**os.environ, "WSGI502_GENERATOR_PARENT": str(os.getpid())}
        try:
            child = self.child = subprocess.Popen([sys.executable, "-m", ENGINE_MODULE], stdin=subprocess.PIPE,
                                                  stdout=subprocess.PIPE, env=env)
        except OSError as exc:
            self._fail(g, f"cannot start the engine process: {exc}")
            return
        assert child.stdin is not None and child.stdout is not None
        first = {**{k: data[k] for k in ("g", "generators", "spec", "dump")}, "max_rate": _max_rate(environment)}
        child.stdin.write(json.dumps(first).encode() + b"\n")
        child.stdin.flush()
        line = child.stdout.readline()  # cooperative: gevent's subprocess pipes
        event = json.loads(line) if line.strip() else {"event": "error", "error": "engine process exited (code "
                                                                                   f"{child.wait()}) before ready"}
        if event.get("event") != "ready":
            self._send(RESULT, {"g": g, "json": json.dumps(event)})
            return
        self._send(READY, {"g": g, "pid": os.getpid(), "engine_pid": child.pid, "host": socket.gethostname(),
                           "max_rate": first["max_rate"]})
        gevent.spawn(self._collect, g, child)

    def go(self, environment: Any, msg: Any, **_: Any) -> None:
        child = self.child
        if child is None or child.stdin is None:
            return
        child.stdin.write(json.dumps({"start_at": msg.data["start_at"]}).encode() + b"\n")
        child.stdin.flush()

    def _collect(self, g: int, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        line = child.stdout.readline()
        code = child.wait()
        if not line.strip():
            self._fail(g, f"engine process exited (code {code}) without a result")
            return
        self._send(RESULT, {"g": g, "json": line.decode()})


def _max_rate(environment: Any) -> float | None:
    """This generator's ``--wsgi502-max-rate`` (None: no cap)."""
    rate = getattr(environment.parsed_options, "wsgi502_max_rate", None) if environment.parsed_options else None
    return float(rate) if rate else None


def _rate(text: str) -> float:
    """A cap in requests/s: a finite number >= 0 (0: no cap), else argparse's one-line usage error."""
    import argparse
    import math

    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of requests/s, got {text!r}") from None
    if not math.isfinite(rate) or rate < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (0: no cap), got {text!r}")
    return rate


def _on_parser(parser: Any, **_: Any) -> None:
    parser.add_argument("--wsgi502-max-rate", type=_rate, default=0.0, env_var="WSGI502_MAX_RATE", metavar="R",
                        help="pytest-wsgi502 generator: send at most R requests/s (0: no cap)")


def _on_init(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        worker = _Worker(environment)
        environment.runner.register_message(PREPARE, worker.prepare, concurrent=True)
        environment.runner.register_message(GO, worker.go)


events.init_command_line_parser.add_listener(_on_parser)  # type: ignore[no-untyped-call]
events.init.add_listener(_on_init)  # type: ignore[no-untyped-call]


def main(argv: list[str] | None = None) -> int:
    """``wsgi502-generator ARGS``: ``locust --worker -f <this file> ARGS`` (ARGS: --master-host, --master-port...)."""
    args = sys.argv[1:] if argv is None else argv
    os.execv(sys.executable, [sys.executable, "-m", "locust", "--worker", "-f", os.path.abspath(__file__), *args])
    return 0  # pragma: no cover - execv does not return
