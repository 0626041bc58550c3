"""Each 502 mechanism shows up for its real reason, is attributed to it, and its fix removes it."""

import json

import pytest

SCENARIOS = ["keepalive-race", "harakiri", "gunicorn-timeout"]


@pytest.fixture(scope="module")
def scenario_run(tmp_path_factory):
    """One run of the scenario pairs and the injected fault (12 s a cell), shared by the tests below."""
    from .conftest import Matrix, wait_gone

    m = Matrix(tmp_path_factory.mktemp("scenarios"))
    cells = ",".join([*SCENARIOS, *(f"{s}-fixed" for s in SCENARIOS), "injected-kill", "recycle-hang",
                      "recycle-hang-fixed", "gevent-mysqlclient", "gevent-mysqlclient-fixed", "db-exhaustion",
                      "db-exhaustion-fixed"])
    r = m.run("--wsgi-matrix-file=scenarios", f"--wsgi-cells={cells}", "--wsgi-duration=12s")
    assert not wait_gone(m.keep, 10)
    assert m.json.exists(), r.stdout + r.stderr
    return m, m.cells(), r.stdout


@pytest.mark.parametrize("mechanism", SCENARIOS)
def test_mechanism_gives_502s_attributed_to_it_and_the_fix_removes_them(scenario_run, mechanism):
    _, cells, out = scenario_run
    broken, fixed = cells[mechanism], cells[f"{mechanism}-fixed"]
    cause = {"keepalive-race": "keepalive_race"}.get(mechanism, "worker_killed")
    n502 = broken["status_counts"].get("502", 0)
    assert n502 > 0, broken["status_counts"]
    assert broken["attribution"][cause] >= 0.8 * n502, broken["attribution"]
    assert not broken["slo"]["passed"] and f"{mechanism}: SLO breached: http_502==0" in out
    assert fixed["status_counts"].get("502", 0) == 0 and fixed["slo"]["passed"], (
        fixed["status_counts"], fixed["errors"], fixed["slo"]["failures"])
    assert fixed["requests"] >= 0.5 * broken["requests"]  # the same load reached it


def test_injected_faults_are_counted_exactly(scenario_run):
    m, cells, _ = scenario_run
    cell = cells["injected-kill"]
    access = (m.cell_dir("injected-kill") / "proxy-access.log").read_text().splitlines()
    injected = sum(1 for line in access if json.loads(line)["uri"] == "/api/die")
    assert injected > 0
    assert cell["status_counts"].get("502", 0) == injected
    assert cell["attribution"]["worker_killed"] == injected
    assert cell["kills"] == injected  # each one a "killed by signal 9" line in uWSGI's own log


def test_recycle_hang_turns_every_recycle_into_a_sigkill(scenario_run):
    """The seed's "workers killed by signal 9 around max-requests, memory fine": a non-daemon thread started
    at import keeps each recycling worker alive until uWSGI's reload mercy runs out (NO MERCY, SIGKILL)."""
    _, cells, _ = scenario_run
    hang, fixed = cells["recycle-hang"], cells["recycle-hang-fixed"]
    events = hang["telemetry"]["event_counts"]
    assert events.get("recycle", 0) >= 2
    assert hang["kills"] == events["no_mercy"] >= events["recycle"] - 1  # the last one may outlive the load
    assert hang["latency_ms"]["p99"] > 1000  # both workers stuck for the mercy: the service stalls
    assert fixed["kills"] == 0 and fixed["telemetry"]["event_counts"].get("recycle", 0) >= 2
    assert fixed["slo"]["passed"]


def test_gevent_with_mysqlclient_blocks_the_worker(scenario_run):
    """No 502s here: the documented error is the stall. mysqlclient's C calls block gevent's hub, so every
    greenlet of a worker waits for each 200 ms query; PyMySQL yields and the same load flows."""
    _, cells, _ = scenario_run
    blocked, fixed = cells["gevent-mysqlclient"], cells["gevent-mysqlclient-fixed"]
    assert blocked["latency_ms"]["p99"] > 2 * fixed["latency_ms"]["p99"], (blocked["latency_ms"], fixed["latency_ms"])
    assert blocked["rps"] < fixed["rps"] / 2
    assert not blocked["slo"]["passed"] and fixed["slo"]["passed"], (blocked["slo"], fixed["slo"])


def test_db_exhaustion_is_500s_attributed_to_the_database(scenario_run):
    """More persistent DB connections (16 workers, CONN_MAX_AGE) than MySQL allows (10): the workers left
    without one answer 500 (1040 Too many connections), each counted from its line in the server's log."""
    _, cells, _ = scenario_run
    broken, fixed = cells["db-exhaustion"], cells["db-exhaustion-fixed"]
    n500 = broken["status_counts"].get("500", 0)
    assert n500 > 0 and broken["attribution"]["db"] == n500, (broken["status_counts"], broken["attribution"])
    assert broken["status_counts"].get("502", 0) == 0
    assert fixed["status_counts"].get("500", 0) == 0 and fixed["slo"]["passed"]
