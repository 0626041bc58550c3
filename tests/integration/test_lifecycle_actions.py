"""Each lifecycle action on a real server under load (issue 16 item 1): the action and its phases are events on
the cell's timeline, in the order the server goes through them, and the requests come out as that server's
mechanism says. One child run of five short cells (7 s of paced load each, loopback only): about 70 s."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Matrix, wait_gone

MATRIX = '''
[defaults]
workers = 2
duration = 7
concurrency = 8
think_time = 0.05
slo = ["http_502==0"]
mix = [{path = "/api/counter/{n}", weight = 3, verify_contains = '"id": {n},'}, {path = "/api/slow?ms=500", weight = 1}]

[cells.uwsgi-hup]
server = "uwsgi"
actions = [{at = "3s", do = "hup"}]
[cells.uwsgi-hup.options]
add-header = "Connection: close"

[cells.uwsgi-chain]
server = "uwsgi"
actions = [{at = "2s", do = "chain-reload"}]
[cells.uwsgi-chain.options]
add-header = "Connection: close"
lazy-apps = true

[cells.gunicorn-hup]
server = "gunicorn"
actions = [{at = "3s", do = "hup"}]

[cells.gunicorn-upgrade]
server = "gunicorn"
# the upgrade reached master_gone 1.2 s after it in a host run; the hup goes to the new master only after that
actions = [{at = "1s", do = "upgrade"}, {at = "5s", do = "hup"}]

[cells.gunicorn-term]
server = "gunicorn"
actions = [{at = "3s", do = "term"}]
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory: Any) -> tuple[Matrix, dict[str, dict[str, Any]]]:
    m = Matrix(tmp_path_factory.mktemp("lifecycle"))
    (m.tmp / "actions.toml").write_text(MATRIX)
    r = m.run(f"--wsgi-matrix-file={m.tmp / 'actions.toml'}", timeout=400)
    assert not wait_gone(m.keep, 10)  # the upgraded gunicorn master and its workers were stopped too
    assert m.json.exists(), r.stdout + r.stderr
    return m, m.cells()


def phases(cell: dict[str, Any], action: str | None = None) -> list[str]:
    return [e["phase"] for e in cell["telemetry"]["action_phases"] if action is None or e["action"] == action]


def sent(cell: dict[str, Any]) -> list[dict[str, Any]]:
    return cell["telemetry"]["actions"]


def assert_gunicorn_hup(cell: dict[str, Any], hup: dict[str, Any]) -> None:
    """gunicorn 27.0.1's HUP (``Arbiter.reload``) forks the new workers, then at once sends TERM to the old ones
    (``manage_workers``): it does not wait for the new ones to load the app. So whether the old workers are gone
    before the new ones are ready is a race between the request each old worker finishes and the app's import in
    the new ones; a clean-container run saw the old ones gone first. Either order, the workers were forked after
    the HUP, as many as the cell has, and no request was lost: it waits in the listen backlog meanwhile."""
    assert sorted(phases(cell, "hup")) == ["old_gone", "workers_ready"]
    forks = [e for e in cell["telemetry"]["events"] if e["kind"] == "respawn" and e["t"] >= hup["t"]]
    assert len(forks) == cell["config"]["workers"], cell["telemetry"]["events"]


def test_uwsgi_hup_stops_the_old_workers_then_starts_new_ones_and_loses_nothing(run: Any) -> None:
    _, cells = run
    c = cells["uwsgi-hup"]
    (action,) = sent(c)
    assert "hup at 3s: SIGHUP to the uwsgi master" in action["line"], action
    assert phases(c) == ["old_gone", "workers_ready"]  # graceful: old workers finish, the master re-executes
    assert c["status_counts"] == {"200": c["requests"]} and c["requests"] > 0
    kinds = [e["kind"] for e in c["telemetry"]["events"]]
    assert kinds.index("action") < kinds.index("action_phase")  # on the timeline, after the action


def test_uwsgi_chain_reload_replaces_workers_one_at_a_time_without_errors(run: Any) -> None:
    m, cells = run
    c = cells["uwsgi-chain"]
    (action,) = sent(c)
    assert "'c' via the master FIFO" in action["line"], action
    assert sorted(phases(c)) == ["old_gone", "workers_ready"]
    assert c["status_counts"] == {"200": c["requests"]}
    log = (m.cell_dir("uwsgi-chain") / "server.log").read_text()
    assert "chain reload starting" in log and "chain reloading complete" in log
    assert log.index("chain next victim is worker 1") < log.index("chain next victim is worker 2")


def test_gunicorn_hup_forks_new_workers_and_tells_the_old_ones_to_leave_losing_nothing(run: Any) -> None:
    _, cells = run
    c = cells["gunicorn-hup"]
    (hup,) = sent(c)
    assert "SIGHUP to the gunicorn master" in hup["line"]
    assert_gunicorn_hup(c, hup)
    assert c["status_counts"] == {"200": c["requests"]}  # gunicorn 27.0.1: nothing dropped (issue #3394: 0 here)


def test_gunicorn_upgrade_hands_over_to_the_new_master(run: Any) -> None:
    """USR2, the new master's workers ready, WINCH + QUIT to the old master, its workers gone, it exits; the runner
    adopts the new master: a later hup goes to it, and the harness stops it at the end. Not daemonized, gunicorn
    ignores WINCH and QUIT is a quick shutdown: requests in flight on the old workers end as 500s
    (SystemExit from handle_quit: "Error handling request"), never as 502s; none once the new master serves."""
    m, cells = run
    c = cells["gunicorn-upgrade"]
    upgrade, hup = sent(c)
    assert "SIGUSR2 to the gunicorn master" in upgrade["line"]
    assert phases(c, "upgrade") == ["new_master", "workers_ready", "old_told", "old_gone", "master_gone"]
    new_master = next(e["pid"] for e in c["telemetry"]["action_phases"] if e["phase"] == "new_master")
    assert hup["pid"] == new_master != upgrade["pid"]
    assert_gunicorn_hup(c, hup)
    assert set(c["status_counts"]) <= {"200", "500"}, c["status_counts"]
    log = (m.cell_dir("gunicorn-upgrade") / "server.log").read_text()
    assert f"[{upgrade['pid']}] [INFO] Handling signal: quit" in log and "Master has been promoted" in log
    assert log.count("Error handling request") == c["status_counts"].get("500", 0)
    gone = next(e["t"] for e in c["telemetry"]["action_phases"] if e["phase"] == "master_gone")
    access = [json.loads(line) for line in (m.cell_dir("gunicorn-upgrade") / "proxy-access.log").open()]
    after = [a for a in access if a["t"] - a["request_time"] > gone + 0.1]
    assert after and all(a["status"] == 200 for a in after)  # the new master serves


def test_gunicorn_term_finishes_in_flight_requests_then_queued_ones_are_reset_and_new_ones_refused(run: Any) -> None:
    """gunicorn 27.0.1 on SIGTERM: the requests in flight finish (graceful_timeout, 30 s, is not needed), the
    connections queued in the listen backlog are reset when the last listener closes (benoitc/gunicorn#3397,
    nginx: recv() failed (104)), and every later connect is refused: attributed to the action."""
    m, cells = run
    c = cells["gunicorn-term"]
    assert phases(c) == ["old_gone", "master_gone"]
    t = {e["phase"]: e["t"] for e in c["telemetry"]["action_phases"]}
    assert t["master_gone"] - sent(c)[0]["t"] < 5  # well within graceful_timeout
    reasons = c["proxy"]["error_reasons"]
    assert reasons.get("upstream_refused", 0) > 0 and set(reasons) <= {"upstream_refused", "upstream_reset"}
    attribution = c["attribution"]
    assert attribution["listener_closed"] == reasons["upstream_refused"], attribution
    assert attribution["queue_reset"] == reasons.get("upstream_reset", 0), attribution  # queued, never read
    assert attribution["listener_closed"] + attribution["queue_reset"] == c["status_counts"]["502"], attribution
    log = (m.cell_dir("gunicorn-term") / "server.log").read_text()
    assert "Handling signal: term" in log and "Shutting down: Master" in log
    access = [json.loads(line) for line in (m.cell_dir("gunicorn-term") / "proxy-access.log").open()]
    term = sent(c)[0]["t"]
    finished = [a for a in access if a["status"] == 200 and a["t"] - a["request_time"] < term < a["t"]]
    assert finished  # the requests the workers were serving when TERM came were answered (no "prematurely closed")
