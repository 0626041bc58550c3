"""Issue 15 item 1: readiness ends at once on a 5xx or a traceback in the server's log (not after 60 s), with the
log's last lines; a 4xx is up (the status is kept so the harness can note it)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pytest_wsgi502.servers.base import Readiness, fatal_or
from pytest_wsgi502.services.process import ServiceError, tail, wait_until


class FakeServer:
    def __init__(self, log: Path, statuses: list[int]) -> None:
        self.log, self.statuses, self.asked = log, statuses, []

    def http_status(self, path: str) -> int:
        self.asked.append(path)
        if not self.statuses:
            raise ConnectionRefusedError("not listening yet")
        return self.statuses.pop(0)


def wait(server: FakeServer, path: str = "/health") -> tuple[Readiness, float]:
    ready = Readiness(server, path)  # type: ignore[arg-type]
    t0 = time.monotonic()
    wait_until(ready, 60, "answering HTTP", fatal_or(ready, lambda: None), name="uwsgi (c)",
               details=lambda: f"last lines of {server.log}:\n{tail(server.log)}", interval=0.01)
    return ready, time.monotonic() - t0


def test_a_5xx_ends_the_wait_at_once_with_the_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("1.0 Internal Server Error: /health\n1.0 AttributeError: 'Settings' object has no attribute "
                   "'ROOT_URLCONF'\n")
    server = FakeServer(log, [500])
    with pytest.raises(ServiceError) as err:
        wait(server)
    message = str(err.value)
    first = message.splitlines()[0]
    assert first.startswith("uwsgi (c) answered 500 to GET /health before answering HTTP; last lines of"), first
    assert "'Settings' object has no attribute 'ROOT_URLCONF'" in message


def test_a_traceback_in_the_log_ends_the_wait_before_any_answer(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("1.0 Traceback (most recent call last):\n1.0 ModuleNotFoundError: No module named 'x'\n")
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match="logged a Python traceback"):
        wait(FakeServer(log, []))  # never answers: without the log scan this waits out 60 s
    assert time.monotonic() - t0 < 2


def test_a_404_is_up_and_kept(tmp_path):
    server = FakeServer(tmp_path / "server.log", [404])
    ready, seconds = wait(server, "/ready")
    assert ready.status == 404 and ready.fatal is None and server.asked == ["/ready"] and seconds < 2


def test_not_listening_yet_keeps_waiting(tmp_path):
    server = FakeServer(tmp_path / "server.log", [])
    ready = Readiness(server, "/health")  # type: ignore[arg-type]
    with pytest.raises(ConnectionRefusedError):  # wait_until counts a raise as "not yet" and asks again
        ready()
    assert ready.fatal is None
