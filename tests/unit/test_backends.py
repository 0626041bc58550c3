"""The backends' seams (issue 13): one readiness loop, one log-line stamp, the ``Runner`` protocol behind a
server (a fake runner here: no process, no engine), renderers as pure functions of (cell, app, placement), the
Django settings overlay and program versions."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.servers import Placement, Runner, Server, ServerSpec, make_server
from pytest_wsgi502.servers import gunicorn as gunicorn_mod
from pytest_wsgi502.servers import uwsgi as uwsgi_mod
from pytest_wsgi502.servers.in_container import container_placement
from pytest_wsgi502.servers.local import LocalRunner
from pytest_wsgi502.services.django import SETTINGS_MODULE, django_overlay, overlay_env, write_overlay
from pytest_wsgi502.services.process import ServiceError, copy_stamped, wait_until
from pytest_wsgi502.services.programs import program_version

# --- wait_until -----------------------------------------------------------------------------------------------


def test_wait_until_returns_the_first_true_value_and_retries_errors() -> None:
    answers: Iterator[Any] = iter([ValueError("refused"), None, "", ("10.11",)])

    def check() -> Any:
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    assert wait_until(check, 5, "answering", interval=0) == ("10.11",)


def test_wait_until_fails_fast_when_the_service_is_gone_with_its_details() -> None:
    calls: list[str] = []
    with pytest.raises(ServiceError) as info:
        wait_until(lambda: calls.append("check"), 60, "answering HTTP", alive=lambda: "exited (code 3)",
                   name="uwsgi (c)", details=lambda: "last lines: boom")
    assert str(info.value) == "uwsgi (c) exited (code 3) before answering HTTP; last lines: boom"
    assert calls == []  # asked whether it lives before polling


def test_wait_until_times_out_after_on_timeout_with_the_last_error() -> None:
    stopped: list[bool] = []

    def refused() -> bool:
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(ServiceError) as info:
        wait_until(refused, 0.05, "answering SELECT 1", name="MySQL container", interval=0.01,
                   on_timeout=lambda: stopped.append(True))
    assert stopped == [True]
    assert str(info.value) == "MySQL container not ready after 0s (answering SELECT 1); connection refused"


# --- copy_stamped ---------------------------------------------------------------------------------------------


def test_copy_stamped_stamps_each_line_on_arrival_across_chunks() -> None:
    out = io.BytesIO()
    clock = iter([1.0, 2.0, 3.0, 4.0, 5.0]).__next__
    copy_stamped([b"a\nb", b"c\n", b"", b"tail"], out, clock=clock)
    assert out.getvalue() == b"1.000000 a\n2.000000 bc\n5.000000 tail\n"  # the tail: when the stream ended


def test_copy_stamped_keeps_what_it_read_when_the_stream_breaks() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"one\ntwo"
        raise ConnectionError("engine went away")

    out = io.BytesIO()
    copy_stamped(chunks(), out, clock=lambda: 5.0)
    assert out.getvalue() == b"5.000000 one\n5.000000 two\n"


# --- the Runner protocol --------------------------------------------------------------------------------------


class FakeRunner:
    """A runner that records what the server asks of it."""

    start_timeout = 7.0

    def __init__(self, server: Server) -> None:
        self.server = server
        self.calls: list[Any] = []

    @property
    def placement(self) -> Placement:
        return Placement(address="10.0.0.1:80", stats="10.0.0.1:81", chdir="/srv", config_dir="/cfg", binary="/b/srv")

    def start(self, env: dict[str, str], ready: Callable[[], bool], timeout: float) -> None:
        self.calls.append(("start", env, ready(), timeout))

    def stop(self) -> None:
        self.calls.append("stop")

    def describe(self) -> dict[str, Any]:
        return {"where": "fake"}


def _server(tmp_path: Path, kind: str, runner: Any = FakeRunner, **cell: Any) -> Server:
    spec = ServerSpec(Cell(name="c", server=kind, **cell), tmp_path / "cell", "a:b", tmp_path / "project",
                      port=18001, stats_port=18002)
    return make_server(spec, "/host/bin/x", runner=runner)


@pytest.mark.parametrize("kind", ["uwsgi", "gunicorn"])
def test_a_server_renders_from_its_runners_placement_and_delegates_the_rest(tmp_path: Path, kind: str) -> None:
    srv = _server(tmp_path, kind)
    runner: Runner = srv.runner
    assert isinstance(runner, FakeRunner)
    srv.start({"A": "1"}, lambda: True)
    assert runner.calls == [("start", {"A": "1"}, True, 7.0)]  # the runner's own default timeout
    text = srv.config_path.read_text()
    assert "10.0.0.1:80" in text and "/srv" in text and str(tmp_path) not in text
    assert srv.argv()[0] == "/b/srv" and srv.argv()[-1].startswith("/cfg/")
    assert srv.address == "127.0.0.1:18001"  # where it answers on this host is the server's, not the runner's
    assert srv.describe() == {"where": "fake"}
    srv.stop()
    assert runner.calls[-1] == "stop"


def test_the_local_runner_places_the_server_on_this_host(tmp_path: Path) -> None:
    srv = _server(tmp_path, "uwsgi", runner=LocalRunner)
    where = srv.placement
    assert (where.address, where.stats, where.config_dir) == ("127.0.0.1:18001", "127.0.0.1:18002",
                                                              str(tmp_path / "cell"))
    assert where.virtualenv == (sys.prefix if sys.prefix != sys.base_prefix else None) and not where.fixed
    assert srv.describe() == {}  # a local run adds nothing to the result


@pytest.mark.parametrize(("kind", "version", "binary"), [
    ("uwsgi", "", "/opt/venv/bin/uwsgi"), ("uwsgi", "2.0.24", "/opt/wsgi502-pinned/uwsgi-2.0.24/bin/uwsgi"),
    ("gunicorn", "", "/opt/venv/bin/gunicorn")])
def test_container_placement_is_the_images_layout(kind: str, version: str, binary: str) -> None:
    where = container_placement(kind, version)
    assert (where.address, where.chdir, where.config_dir, where.binary, where.fixed) == (
        "0.0.0.0:8000", "/app", "/wsgi502/cell", binary, True)


def test_a_fixed_placement_wins_over_the_cells_options_and_a_host_one_does_not() -> None:
    cell = Cell(name="c", server="uwsgi", options={"chdir": "/elsewhere"})
    host = Placement(address="127.0.0.1:1", stats="127.0.0.1:2", chdir="/p", config_dir="/c", binary="u")
    assert uwsgi_mod.settings_for(cell, "a:b", host)["chdir"] == "/elsewhere"  # raw options win
    assert uwsgi_mod.settings_for(cell, "a:b", container_placement("uwsgi", ""))["chdir"] == "/app"
    g = Cell(name="c", server="gunicorn", options={"chdir": "/elsewhere"})
    assert gunicorn_mod.settings_for(g, "a:b", container_placement("gunicorn", ""))["chdir"] == "/app"


def test_renderers_are_pure_functions_of_cell_app_and_placement() -> None:
    cell = Cell(name="c", server="gunicorn", socket="unix")
    where = Placement(address="/run/s.sock", stats="", chdir="/p", config_dir="/c", binary="g", unix=True)
    text = gunicorn_mod.render_for(cell, "a:b", where)
    assert text == gunicorn_mod.render_for(cell, "a:b", where)
    assert "bind = ['unix:/run/s.sock']" in text and "_WSGI502_EVENTS = '/c/gunicorn-events.jsonl'" in text
    assert gunicorn_mod.argv_for(where) == ["g", "--config", "/c/gunicorn.conf.py"]


# --- the Django settings overlay ------------------------------------------------------------------------------


def test_the_overlay_is_a_directory_the_server_spec_names(tmp_path: Path) -> None:
    overlay = write_overlay(tmp_path, "project.settings")
    assert overlay == tmp_path / "django-overlay"
    assert "from project.settings import *" in (overlay / f"{SETTINGS_MODULE}.py").read_text()
    env = overlay_env(overlay, {"PYTHONPATH": "/a"})
    assert env == {"DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, "PYTHONPATH": f"{overlay}:/a"}
    assert django_overlay(tmp_path, "project.settings", {}) == {"DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
                                                                "PYTHONPATH": str(overlay)}


def test_the_overlay_refuses_a_module_that_is_not_a_dotted_name(tmp_path: Path) -> None:
    from pytest_wsgi502.config.values import ConfigError

    with pytest.raises(ConfigError):
        write_overlay(tmp_path, "x; import os")


# --- program versions -----------------------------------------------------------------------------------------


def test_program_version_reads_the_version_line(tmp_path: Path) -> None:
    prog = tmp_path / "uwsgi"
    prog.write_text("#!/bin/sh\necho 2.0.25.1\n")
    prog.chmod(0o755)
    assert program_version(str(prog)) == "2.0.25.1"
    assert program_version(str(tmp_path / "missing")) is None
