"""Lifecycle actions (issue 16 item 1-2): the matrix key, the timer that sends them, their events, and the
attribution of the 502s they cause (listener_closed, inflight_cut) from nginx's lines and the action's time."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from typing import Any

import pytest

from pytest_wsgi502 import events as ev
from pytest_wsgi502.attribution import ACTION_SLACK, attribute, classify
from pytest_wsgi502.cellrun import _Actions
from pytest_wsgi502.config.matrix import expand
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.nginxlog import Failure, classify_reason
from pytest_wsgi502.servers.telemetry import GUNICORN_PATTERNS, UWSGI_PATTERNS, parse_events

REFUSED = ("connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, "
           "server: , request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:1/\"")
CLOSED = "upstream prematurely closed connection while reading response header from upstream"


def cell(**keys: Any) -> Any:
    return expand({"cells": {"c": {"server": "uwsgi", **keys}}})[0]


# --- the matrix key -------------------------------------------------------------------------------------------


def test_actions_parse_sorted_in_seconds() -> None:
    c = cell(duration=10, actions=[{"at": "7s", "do": "term"}, {"at": "2500ms", "do": "reload"}])
    assert c.actions == ({"at": 2.5, "do": "reload"}, {"at": 7.0, "do": "term"})
    assert c.as_dict()["actions"] == [{"at": 2.5, "do": "reload"}, {"at": 7.0, "do": "term"}]


@pytest.mark.parametrize(("actions", "duration", "message"), [
    ([{"at": "5s", "do": "restart"}], None,
     "actions[0].do 'restart' unknown; choose one of reload, hup, term, upgrade, upgrade-graceful, chain-reload"),
    ([{"at": "12s", "do": "reload"}], 10, "actions[0].at = 12s is not within the cell's duration (10s)"),
    ([{"at": "10s", "do": "reload"}], "auto:10s", "is not within the cell's duration (10s)"),
    ([{"at": "soon", "do": "reload"}], None, "actions[0].at: not a duration"),
    ([{"at": "auto", "do": "reload"}], None, "must be a time like"),
    ([{"at": "5s"}], None, "needs exactly at"),
    ([{"at": "5s", "do": "reload", "signal": "HUP"}], None, "needs exactly at"),
    ("reload", None, "actions must be a list of tables"),
])
def test_bad_actions_are_one_line_config_errors(actions: Any, duration: Any, message: str) -> None:
    keys = {"actions": actions} | ({"duration": duration} if duration is not None else {})
    with pytest.raises(ConfigError) as exc:
        cell(**keys)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert "cell 'c'" in str(exc.value)


def test_headers_key_is_validated() -> None:
    assert cell(headers={"Cookie": "a=" + "x" * 5000}).headers["Cookie"].startswith("a=x")
    for bad, message in (({"Bad Name": "x"}, "must be a token"), ({"Cookie": "a\nb"}, "without CR/LF"),
                         ({"Host": "evil"}, "set by the load engine"), ("Cookie: x", "must be a table")):
        with pytest.raises(ConfigError, match=message):
            cell(headers=bad)


# --- the timer thread -----------------------------------------------------------------------------------------


class FakeServer:
    kind = "uwsgi"

    def __init__(self) -> None:
        self.sent: list[tuple[str, float]] = []

    def act(self, do: str) -> tuple[signal.Signals, int]:
        self.sent.append((do, time.time()))
        return {"reload": signal.SIGHUP, "term": signal.SIGTERM}[do], 4242


def test_actions_are_sent_at_their_time_without_blocking_the_caller() -> None:
    server = FakeServer()
    t0 = time.time()
    timer = _Actions(server, [{"at": 0.2, "do": "reload"}, {"at": 0.4, "do": "term"}], t0)  # type: ignore[arg-type]
    timer.start()
    assert time.time() - t0 < 0.1  # start() returns at once: the load runs meanwhile
    time.sleep(0.7)
    sent = timer.finish()
    assert [d for d, _ in server.sent] == ["reload", "term"]
    for (_, at), want in zip(server.sent, (0.2, 0.4), strict=True):
        assert want <= at - t0 < want + 0.15
    assert [e["kind"] for e in sent] == [ev.ACTION, ev.ACTION]
    assert sent[0]["line"] == "wsgi502: reload at 0.2s: SIGHUP to the uwsgi master (pid 4242)"
    assert sent[1]["action"] == "term" and sent[1]["pid"] == 4242 and abs(sent[1]["t"] - server.sent[1][1]) < 0.01


def test_actions_after_the_load_are_not_sent() -> None:
    server = FakeServer()
    timer = _Actions(server, [{"at": 5.0, "do": "term"}], time.time())  # type: ignore[arg-type]
    timer.start()
    t = time.time()
    assert timer.finish() == [] and server.sent == []
    assert time.time() - t < 1 and not timer.is_alive()


def test_a_failing_action_is_an_event_not_an_exception() -> None:
    class Broken(FakeServer):
        def act(self, do: str) -> tuple[signal.Signals, int]:
            raise ProcessLookupError("gone")

    timer = _Actions(Broken(), [{"at": 0.01, "do": "term"}], time.time())  # type: ignore[arg-type]
    timer.start()
    time.sleep(0.2)
    (event,) = timer.finish()
    assert "term at 0.01s failed: ProcessLookupError: gone" in event["line"]
    assert threading.active_count() >= 1


# --- the servers' own lifecycle lines (as uWSGI 2.0.31 and gunicorn 27.0.1 print them) ---------------------------


def test_server_lifecycle_lines_are_events() -> None:
    uwsgi = ("1796095254.100000 ...brutally killing workers...\n"
             "1796095254.200000 ...gracefully killing workers...\n"
             "1796095254.300000 SIGINT/SIGTERM received...killing workers...\n"
             "1796095254.400000 worker 1 buried after 0 seconds\n")
    assert [e.kind for e in parse_events(uwsgi, UWSGI_PATTERNS)] == [ev.RELOAD, ev.RELOAD, ev.SHUTDOWN]
    gunicorn = ("[2026-12-01 03:21:45 +0000] [32540] [INFO] Handling signal: hup\n"
                "[2026-12-01 03:21:45 +0000] [32540] [INFO] Hang up: Master\n"
                "[2026-12-01 03:28:02 +0000] [925] [INFO] Handling signal: term\n"
                "[2026-12-01 03:28:04 +0000] [925] [INFO] Shutting down: Master\n")
    got = parse_events(gunicorn, GUNICORN_PATTERNS)
    assert [(e.kind, e.pid) for e in got] == [(ev.RELOAD, 32540), (ev.SHUTDOWN, 925)]


# --- attribution ---------------------------------------------------------------------------------------------

ACTION_AT = 1000.0
TERM = [{"kind": ev.ACTION, "t": ACTION_AT, "pid": 1, "line": "wsgi502: term at 5s: SIGTERM to the uwsgi master"}]


def test_refused_after_an_action_is_listener_closed_and_before_it_server_down() -> None:
    refused = classify_reason(REFUSED)
    assert classify(refused, 502, ACTION_AT + 3, ACTION_AT + 3.001, TERM) == "listener_closed"
    assert classify(refused, 502, ACTION_AT - 1, ACTION_AT - 0.9, TERM) == "server_down"  # before the action
    assert classify(refused, 502, ACTION_AT + 3, ACTION_AT + 3.001, []) == "server_down"


def test_cut_in_flight_after_an_action_is_inflight_cut() -> None:
    closed = classify_reason(CLOSED)
    assert classify(closed, 502, ACTION_AT - 0.3, ACTION_AT + 0.01, TERM) == "inflight_cut"  # in flight
    assert classify(closed, 502, ACTION_AT + 1, ACTION_AT + 1.2, TERM) == "inflight_cut"  # started in the reload
    # ended before the action was sent, or started long after it: not the action's
    assert classify(closed, 502, ACTION_AT - 2, ACTION_AT - 1, TERM) == "unknown"
    assert classify(closed, 502, ACTION_AT + ACTION_SLACK + 1, ACTION_AT + ACTION_SLACK + 1.2, TERM) == "unknown"


RESET = ("recv() failed (104: Connection reset by peer) while reading response header from upstream, client: "
         "127.0.0.1, server: , request: \"GET /api/counter/748 HTTP/1.1\", upstream: \"http://127.0.0.1:1/\"")


def test_reset_after_an_action_is_a_queued_connection_reset() -> None:
    """gunicorn 27.0.1 on SIGTERM (measured, 3 runs): the requests in flight are answered; the connections waiting
    in the listen backlog (1-2 s here) are reset when the last listener closes: nginx recv() failed (104)."""
    reset = classify_reason(RESET)
    assert reset.name == "upstream_reset"
    assert classify(reset, 502, ACTION_AT - 1.9, ACTION_AT + 0.09, TERM) == "queue_reset"  # queued before the TERM
    assert classify(classify_reason(CLOSED), 502, ACTION_AT - 1.9, ACTION_AT + 0.09, TERM) == "inflight_cut"
    assert classify(reset, 502, ACTION_AT - 2, ACTION_AT - 1, TERM) != "queue_reset"  # ended before the action
    out = attribute([Failure(ACTION_AT + 0.09, 502, 1, 1.99, "/api/counter/748")], {1: deque([reset])}, TERM)
    assert out["counts"]["queue_reset"] == 1 and "SIGTERM" in out["matches"][0]["event"]


def test_the_action_wins_over_the_worker_exits_it_causes() -> None:
    """gunicorn logs 'Worker exiting' for each worker a HUP or TERM stops: those are the action's, not recycles."""
    closed = classify_reason(CLOSED)
    exits = [*TERM, {"kind": ev.EXIT, "t": ACTION_AT + 0.5, "pid": 7, "line": "Worker exiting (pid: 7)"}]
    assert classify(closed, 502, ACTION_AT - 0.2, ACTION_AT + 0.6, exits) == "inflight_cut"
    assert classify(closed, 502, ACTION_AT - 0.2, ACTION_AT + 0.6, exits[1:]) == "recycle"  # without the action


def test_matches_carry_the_nginx_line_and_the_action_that_prove_them() -> None:
    failures = [Failure(ACTION_AT + 0.05, 502, 1, 0.3, "/api/slow"), Failure(ACTION_AT + 2, 502, 2, 0.001, "/a"),
                Failure(ACTION_AT + 2.5, 502, 3, 0.001, "/b")]
    reasons = {1: deque([classify_reason(CLOSED)]), 2: deque([classify_reason(REFUSED)])}
    out = attribute(failures, reasons, TERM)
    assert out["counts"]["inflight_cut"] == 1 and out["counts"]["listener_closed"] == 1
    assert out["counts"]["unknown"] == 1  # no nginx line for connection 3: not proven, not guessed
    cut, refused, unknown = out["matches"]
    assert "prematurely closed" in cut["reason"] and "SIGTERM" in cut["event"]
    assert "(111: Connection refused)" in refused["reason"] and "SIGTERM" in refused["event"]
    assert "event" not in unknown


def test_header_too_large_needs_the_servers_line_one_per_502() -> None:
    """uWSGI 2.0.31 logs 'invalid request block size: 5054 (max 4096)...skip' and closes the connection; nginx
    answers 502 (upstream prematurely closed). Each server line proves one 502; a 502 without one stays unknown."""
    line = "1796095254.100000 invalid HTTP request size (max 4096)...skip"
    (event,) = [e.as_dict() for e in parse_events(line, UWSGI_PATTERNS)]
    assert event["kind"] == ev.HEADER_TOO_LARGE
    failures = [Failure(1796095254.1, 502, 1, 0.002, "/a"), Failure(1796095254.2, 502, 2, 0.002, "/b")]
    reasons = {1: deque([classify_reason(CLOSED)]), 2: deque([classify_reason(CLOSED)])}
    out = attribute(failures, reasons, [event], keepalive_reuse=False)
    assert out["counts"]["header_too_large"] == 1 and out["counts"]["unknown"] == 1


# --- more actions (hup, upgrade, chain-reload) and their phases ----------------------------------------------------


def test_hup_is_reload_by_its_signal_and_each_server_has_its_own_actions() -> None:
    from pytest_wsgi502.config.matrix import SERVER_ACTIONS
    from pytest_wsgi502.servers.base import Server

    assert Server.action_signals["hup"] == Server.action_signals["reload"] == signal.SIGHUP  # the old name stays
    assert cell(actions=[{"at": "1s", "do": "chain-reload"}]).actions == ({"at": 1.0, "do": "chain-reload"},)
    g = expand({"cells": {"g": {"server": "gunicorn", "actions": [{"at": "1s", "do": "upgrade"},
                                                                 {"at": "2s", "do": "hup"}]}}})[0]
    assert [a["do"] for a in g.actions] == ["upgrade", "hup"]
    assert set(SERVER_ACTIONS["uwsgi"]) ^ set(SERVER_ACTIONS["gunicorn"]) == {"upgrade", "upgrade-graceful",
                                                                             "chain-reload"}
    with pytest.raises(ConfigError, match=r"actions\[0\].do 'upgrade' is not a uwsgi action; choose one of reload, "
                                          r"hup, term, chain-reload$"):
        cell(actions=[{"at": "1s", "do": "upgrade"}])
    with pytest.raises(ConfigError, match="'chain-reload' is not a gunicorn action"):
        expand({"cells": {"g": {"server": "gunicorn", "actions": [{"at": "1s", "do": "chain-reload"}]}}})


def test_chain_reload_gets_a_master_fifo_and_gunicorn_a_worker_ready_hook() -> None:
    from pytest_wsgi502.servers import gunicorn, uwsgi
    from pytest_wsgi502.servers.base import Placement

    where = Placement(address="127.0.0.1:1", stats="127.0.0.1:2", chdir="/app", config_dir="/cell", binary="x")
    assert uwsgi.settings_for(cell(actions=[{"at": "1s", "do": "chain-reload"}]), "a:b", where)["master-fifo"] == (
        "/cell/master.fifo")
    assert "master-fifo" not in uwsgi.settings_for(cell(actions=[{"at": "1s", "do": "reload"}]), "a:b", where)
    text = gunicorn.render_config("g", {"workers": 2}, "/cell/ev.jsonl")
    assert "def post_worker_init(worker):" in text and "post_worker_init" in gunicorn.HOOKS
    with pytest.raises(ConfigError, match="post_worker_init is a server hook"):
        gunicorn.check_option_names("g", {"post_worker_init": "x"})


class PhasedServer(FakeServer):
    """act + watch: a watch that reaches one phase per poll."""

    def __init__(self) -> None:
        super().__init__()
        self.polls = 0

    def watch(self, do: str) -> Any:
        server = self

        class W:
            def __init__(self) -> None:
                self.todo = ["workers_ready", "old_gone"]

            @property
            def done(self) -> bool:
                return not self.todo

            def poll(self) -> list[tuple[str, str, int | None]]:
                server.polls += 1
                return [(self.todo.pop(0), f"phase {server.polls}", 7)] if self.todo else []

        return W()


def test_phases_are_events_after_the_action_in_the_order_seen() -> None:
    server = PhasedServer()
    timer = _Actions(server, [{"at": 0.05, "do": "reload"}], time.time())  # type: ignore[arg-type]
    timer.start()
    time.sleep(0.5)
    events = timer.finish()
    assert [(e["kind"], e.get("phase")) for e in events] == [
        (ev.ACTION, None), (ev.ACTION_PHASE, "workers_ready"), (ev.ACTION_PHASE, "old_gone")]
    assert events[1]["t"] >= events[0]["t"] and events[2]["action"] == "reload" and timer.pending == []


def test_phases_not_seen_before_the_next_action_are_left_pending() -> None:
    class Slow(PhasedServer):
        def watch(self, do: str) -> Any:
            w = super().watch(do)
            w.poll = lambda: []  # never reaches a phase
            return w

    server = Slow()
    timer = _Actions(server, [{"at": 0.05, "do": "hup"}, {"at": 0.3, "do": "term"}], time.time())  # type: ignore
    timer.start()
    time.sleep(0.6)
    events = timer.finish()
    assert [e["action"] for e in events if e["kind"] == ev.ACTION] == ["hup", "term"]  # the second was still sent
    assert abs(server.sent[1][1] - server.sent[0][1] - 0.25) < 0.1


def test_after_the_load_no_action_is_sent_but_the_last_ones_phases_are_followed_until_finish() -> None:
    """The load's end (``load_over``) stops the next action; the phases of the one sent are still recorded while
    the server settles (old workers often leave only when the load's connections close), until ``finish``."""

    class Late(PhasedServer):
        def watch(self, do: str) -> Any:
            w = super().watch(do)
            poll = w.poll
            w.poll = lambda: poll() if server.late else []
            return w

    server = Late()
    server.late = False
    timer = _Actions(server, [{"at": 0.05, "do": "reload"}, {"at": 0.4, "do": "term"}], time.time())  # type: ignore
    timer.start()
    time.sleep(0.2)
    timer.load_over.set()  # the load ended before the next action, its phases unseen
    server.late = True  # then the server goes through them
    time.sleep(0.3)
    events = timer.finish()
    assert [e["action"] for e in events if e["kind"] == ev.ACTION] == ["reload"]  # "term" was not sent
    assert [e["phase"] for e in events if e["kind"] == ev.ACTION_PHASE] == ["workers_ready", "old_gone"]
    assert len(server.sent) == 1 and timer.pending == []


MASTER = r'''
import os, signal, sys, time
kids = []
def spawn():
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            time.sleep(60); os._exit(0)
        kids.append(pid)
def hup(*_):
    old = list(kids); kids.clear(); spawn(); time.sleep(0.2)
    for p in old: os.kill(p, signal.SIGTERM); os.waitpid(p, 0)
def term(*_):
    for p in kids: os.kill(p, signal.SIGTERM); os.waitpid(p, 0)
    sys.exit(0)
signal.signal(signal.SIGHUP, hup); signal.signal(signal.SIGTERM, term)
spawn(); print("up", flush=True)
while True: time.sleep(0.05)
'''


def test_watch_sees_new_workers_then_old_ones_gone_in_a_real_process_tree(tmp_path: Any) -> None:
    """A tiny prefork master (2 workers; SIGHUP forks 2 new ones, then stops the old): the watch reads the
    process tree, as it does for uWSGI and gunicorn."""
    import subprocess
    import sys

    from pytest_wsgi502.servers.base import Watch, alive, children

    class Tree:
        kind = "fake"
        spec = type("S", (), {"cell": type("C", (), {"workers": 2})()})()
        runner = None

        def phases(self, do: str) -> tuple[str, ...]:
            return ("old_gone", "master_gone") if do == "term" else ("workers_ready", "old_gone")

        def worker_ready(self, pid: int) -> bool:
            return True

    proc = subprocess.Popen([sys.executable, "-c", MASTER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        old = set(children(proc.pid))
        assert len(old) == 2
        watch = Watch(Tree(), "hup", proc.pid)  # type: ignore[arg-type]
        assert watch.poll() == [] and not watch.done  # nothing sent yet: no new worker, the old ones alive
        os.kill(proc.pid, signal.SIGHUP)
        seen: list[str] = []
        deadline = time.monotonic() + 5
        while not watch.done and time.monotonic() < deadline:
            seen += [phase for phase, _, _ in watch.poll()]
            time.sleep(0.02)
        assert seen == ["workers_ready", "old_gone"]
        new = set(children(proc.pid))
        assert len(new) == 2 and not new & old and not any(alive(p) for p in old)
        stop = Watch(Tree(), "term", proc.pid)  # type: ignore[arg-type]
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(5)
        assert [phase for phase, _, _ in stop.poll()] == ["old_gone", "master_gone"]
    finally:
        proc.kill()
        proc.wait(5)


# --- the end of the load: a worker that died is counted only once its master reaped (and logged) it -------------


def test_a_dead_child_is_unreaped_until_its_parent_waits_for_it() -> None:
    from pytest_wsgi502.servers.base import children, unreaped

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while pid not in unreaped(os.getpid()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pid in unreaped(os.getpid()) and pid not in children(os.getpid())  # dead, not reaped
    finally:
        os.waitpid(pid, 0)
    assert pid not in unreaped(os.getpid()) and unreaped(2**22 + 1) == []  # reaped; a pid that is gone has none


def test_settle_waits_while_a_worker_is_unreaped_and_no_longer_than_reap_wait(monkeypatch: Any) -> None:
    from pytest_wsgi502 import cellrun

    monkeypatch.setattr(cellrun, "REPORT_GRACE", {"uwsgi": 0.0})
    monkeypatch.setattr(cellrun, "REAP_WAIT", 0.5)

    class Ctx:
        cell = type("C", (), {"server": "uwsgi"})()

        def __init__(self, polls_unreaped: int) -> None:
            self.left, self.polls = polls_unreaped, 0

        def _end_actions(self) -> None:
            pass

        def servers(self) -> list[Any]:
            ctx = self

            class S:
                def unreaped_workers(self) -> list[int]:
                    ctx.polls += 1
                    ctx.left -= 1
                    return [123] if ctx.left >= 0 else []

            return [S()]

    reaped = Ctx(3)  # reaped after 3 polls: settle returns then
    cellrun.Target.settle(reaped)  # type: ignore[arg-type]
    assert reaped.polls == 4
    never = Ctx(10**6)  # never reaped: settle gives up after REAP_WAIT
    t0 = time.monotonic()
    cellrun.Target.settle(never)  # type: ignore[arg-type]
    assert 0.5 <= time.monotonic() - t0 < 2 and never.polls >= 2
