"""Each 502 mechanism shows up for its real reason, is attributed to it, and its fix removes it: in 3 of 3 runs.

The whole scenario set runs three times (module fixture parametrized by run); every test below is asserted on
each run, so a mechanism that shows up only sometimes fails here. About 6 minutes a run on 2 cores
(18 min 24 s for the three, measured here).
"""

import json

import pytest

RUNS = (1, 2, 3)
# mechanism -> the cause its 502s must be attributed to (>= 80 %)
MECHANISMS_502 = {"keepalive-race": "keepalive_race", "harakiri": "worker_killed", "recycle": "recycle",
                  "backlog": "backlog", "lifetime": "recycle", "reload-term": "inflight_cut",
                  "header-size": "header_too_large", "gunicorn-upgrade": "queue_reset"}
PAIRS = [*MECHANISMS_502, "gunicorn-timeout", "recycle-hang", "recycle-hang-gunicorn", "gevent-mysqlclient",
         "db-exhaustion", "passive-health"]


@pytest.fixture(scope="module", params=RUNS, ids=lambda n: f"run{n}")
def scenario_run(request, tmp_path_factory):
    """One run of every scenario pair and the injected fault (12 s a cell unless the cell says otherwise)."""
    from .conftest import Matrix, wait_gone

    m = Matrix(tmp_path_factory.mktemp(f"scenarios-run{request.param}"))
    cells = ",".join([*(c for p in PAIRS for c in (p, f"{p}-fixed")), "injected-kill"])
    r = m.run("--wsgi-matrix-file=scenarios", f"--wsgi-cells={cells}", "--wsgi-duration=12s", timeout=900)
    assert not wait_gone(m.keep, 10)
    assert m.json.exists(), r.stdout + r.stderr
    return m, m.cells(), r.stdout


@pytest.mark.parametrize("mechanism", MECHANISMS_502)
def test_mechanism_gives_502s_attributed_to_it_and_the_fix_removes_them(scenario_run, mechanism):
    _, cells, out = scenario_run
    broken, fixed = cells[mechanism], cells[f"{mechanism}-fixed"]
    cause = MECHANISMS_502[mechanism]
    n502 = broken["status_counts"].get("502", 0)
    assert n502 > 0, broken["status_counts"]
    assert broken["attribution"][cause] >= 0.8 * n502, broken["attribution"]
    assert not broken["slo"]["passed"] and f"{mechanism}: SLO breached: http_502==0" in out
    assert fixed["status_counts"].get("502", 0) == 0 and fixed["slo"]["passed"], (
        fixed["status_counts"], fixed["errors"], fixed["slo"]["failures"])
    assert fixed["error_count"] == 0, fixed["errors"]
    assert fixed["requests"] >= 0.5 * (broken["requests"] - broken["error_count"])  # the same load reached it


def test_gunicorn_timeout_aborts_workers_mid_request_and_the_longer_timeout_removes_it(scenario_run):
    """gunicorn's arbiter aborts a worker stuck past --timeout: SIGABRT, then SIGKILL on its next wake-up. The
    proxy sees a 502 when the SIGKILL comes first, a 500 when the worker's abort handler runs first (its
    SystemExit waits for the DB query to return): a race (8 500s and no 502 in 1 of 3 runs of the clean
    container), so the pair is judged on the mechanism: errors of either code, each from an aborted worker."""
    _, cells, out = scenario_run
    broken, fixed = cells["gunicorn-timeout"], cells["gunicorn-timeout-fixed"]
    sc = broken["status_counts"]
    errors = sc.get("502", 0) + sc.get("500", 0)
    assert errors > 0 and broken["http_5xx"] == errors, sc  # no other 5xx
    assert broken["attribution"]["worker_killed"] >= 0.8 * errors, (broken["attribution"], sc)
    assert broken["telemetry"]["event_counts"].get("timeout", 0) > 0  # the arbiter's WORKER TIMEOUT lines
    assert broken["slo"]["outcome"] == "fail" and "gunicorn-timeout: SLO breached: http_5xx==0" in out
    assert fixed["http_5xx"] == 0 and fixed["slo"]["outcome"] == "pass", (
        fixed["status_counts"], fixed["errors"], fixed["slo"]["failures"])
    assert fixed["error_count"] == 0 and fixed["telemetry"]["event_counts"].get("timeout", 0) == 0, fixed["errors"]
    assert fixed["requests"] >= 0.5 * (broken["requests"] - broken["error_count"])  # the same load reached it


def test_recycle_is_the_joint_recycle_and_the_delta_spreads_it(scenario_run):
    """The 502s of ``recycle`` come while both workers are down together; with the delta they never are."""
    _, cells, _ = scenario_run
    broken, fixed = cells["recycle"], cells["recycle-fixed"]
    for cell in (broken, fixed):
        assert cell["telemetry"]["event_counts"].get("recycle", 0) >= 2  # both recycled, twice or more
        assert cell["kills"] == 0  # clean exits: the errors are the stall, not a kill
        assert sum(cell["errors"].values()) == 0, cell["errors"]  # no client-side errors: every error is a 502


def test_lifetime_on_old_uwsgi_cancels_requests_in_flight_and_the_upgrade_waits_for_them(scenario_run):
    """max-worker-lifetime on uWSGI 2.0.24 with threads: the worker process exits as soon as its first thread
    finishes its request, and requests in flight in its other threads get no response (502, 'upstream
    prematurely closed'); the same config and as many lifetime recycles on the installed uWSGI (>= 2.0.25
    joins the threads first) lose nothing. Lint flags the first."""
    _, cells, _ = scenario_run
    broken, fixed = cells["lifetime"], cells["lifetime-fixed"]
    assert broken["services"]["uwsgi"] == "2.0.24" and fixed["services"]["uwsgi"] != "2.0.24"
    for cell in (broken, fixed):
        assert cell["telemetry"]["event_counts"].get("lifetime", 0) >= 3, cell["telemetry"]["event_counts"]
        assert cell["kills"] == 0  # no SIGKILL: the requests die with the recycle itself
    reasons = [m["reason"] for m in broken["attribution_matches"]]
    assert reasons and all("prematurely closed" in r or "reset by peer" in r for r in reasons), reasons
    assert [f["code"] for f in broken["lint"]] == ["lifetime-drops-threads"]
    assert "lifetime-drops-threads" not in [f["code"] for f in fixed["lint"]]


def test_backlog_overflow_on_a_unix_socket_is_an_immediate_502(scenario_run):
    _, cells, _ = scenario_run
    broken = cells["backlog"]
    assert broken["proxy"]["error_reasons"].get("upstream_backlog_full", 0) >= broken["status_counts"]["502"]
    assert broken["respawns"] == 0 and broken["kills"] == 0  # nothing happened to the workers: pure overload


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


def test_recycle_hang_on_gunicorn_without_preload_and_the_preload_fix(scenario_run):
    """gunicorn is not immune: without --preload each worker imports the app and starts its own non-daemon
    thread, so a recycling worker hangs in Python's shutdown until the arbiter aborts it (WORKER TIMEOUT).
    With --preload the thread lives in the arbiter; os.fork() runs Python's after-fork cleanup, so workers
    exit at once."""
    _, cells, _ = scenario_run
    hang, fixed = cells["recycle-hang-gunicorn"], cells["recycle-hang-gunicorn-fixed"]
    aborted = hang["telemetry"]["event_counts"].get("timeout", 0)
    assert aborted >= 2 and hang["telemetry"]["hook_counts"].get("worker_abort", 0) >= 2, hang["telemetry"]
    assert hang["latency_ms"]["p99"] > 1000 and not hang["slo"]["passed"]
    assert fixed["telemetry"]["event_counts"].get("timeout", 0) == 0 and fixed["kills"] == 0
    assert fixed["telemetry"]["event_counts"].get("recycle", 0) >= 2  # it did recycle, cleanly
    assert fixed["slo"]["passed"], fixed["slo"]


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
    # measured, not refused: the paced load leaves the engine its CPU next to 16 workers (issue 14: the fixed
    # cell was INVALID, generator_bound, in 2 of 3 runs of the clean container under a full-speed closed loop)
    assert broken["slo"]["outcome"] == "fail" and fixed["slo"]["outcome"] == "pass", (broken["slo"], fixed["slo"])
    assert fixed["requests"] >= 0.5 * broken["requests"]  # the same load reached it


def test_reload_term_is_a_brutal_reload_on_uwsgi_2_0_and_sighup_is_graceful(scenario_run):
    """SIGTERM to uWSGI 2.0 without die-on-term: a brutal reload that cuts the requests in flight (nginx: upstream
    prematurely closed), each right after the action; the listening socket is kept (no refused connect). SIGHUP
    at the same time under the same load: the workers finish their requests, nothing is lost. Both the action
    and the server's own reload line are on the cell's timeline."""
    _, cells, _ = scenario_run
    broken, fixed = cells["reload-term"], cells["reload-term-fixed"]
    for cell, sig in ((broken, "SIGTERM"), (fixed, "SIGHUP")):
        (action,) = cell["telemetry"]["actions"]
        assert sig in action["line"] and abs(action["t"] - cell["started_at"] - 5) < 0.5, action
        assert cell["telemetry"]["event_counts"].get("reload", 0) == 1  # uWSGI's "...killing workers..." line
        assert cell["proxy"]["error_reasons"].get("upstream_refused", 0) == 0  # the socket survived the re-exec
    cuts = [m for m in broken["attribution_matches"] if m["cause"] == "inflight_cut"]
    assert cuts and all("prematurely closed" in m["reason"] and "SIGTERM" in m["event"] for m in cuts), cuts
    assert all(0 <= m["t"] - broken["telemetry"]["actions"][0]["t"] < 3 for m in cuts), cuts


def test_header_size_over_the_uwsgi_buffer_is_a_502_per_request_with_its_log_line(scenario_run):
    """A 5 KB Cookie against uWSGI's default 4 KB buffer-size: one 'invalid HTTP request size (max 4096)' line
    per request, which nginx answers 502; buffer-size = 32768 serves the same requests."""
    _, cells, _ = scenario_run
    broken, fixed = cells["header-size"], cells["header-size-fixed"]
    n502 = broken["status_counts"].get("502", 0)
    assert n502 == broken["requests"] == broken["telemetry"]["event_counts"]["header_too_large"]
    assert broken["attribution"]["header_too_large"] == n502, broken["attribution"]
    assert fixed["telemetry"]["event_counts"].get("header_too_large", 0) == 0


def test_gunicorn_upgrade_with_quit_resets_what_the_old_workers_accepted_and_term_does_not(scenario_run):
    """gunicorn 27.0.1's documented binary upgrade, not daemonized: USR2, the new master's workers ready, then WINCH
    (ignored: 'SIGWINCH ignored. Not daemonized') and QUIT, a quick shutdown: the connections an old gthread worker
    had accepted and not read are reset (nginx: recv() failed (104)). TERM to the old master instead: none lost.
    Every phase is on the timeline, and the new master serves once the old one exited."""
    _, cells, _ = scenario_run
    broken, fixed = cells["gunicorn-upgrade"], cells["gunicorn-upgrade-fixed"]
    for cell, told in ((broken, "SIGWINCH then SIGQUIT"), (fixed, "SIGTERM")):
        (action,) = cell["telemetry"]["actions"]
        assert "SIGUSR2 to the gunicorn master" in action["line"], action
        phases = [e["phase"] for e in cell["telemetry"]["action_phases"]]
        assert phases == ["new_master", "workers_ready", "old_told", "old_gone", "master_gone"], phases
        assert told in cell["telemetry"]["action_phases"][2]["line"]
    resets = [m for m in broken["attribution_matches"] if m["cause"] == "queue_reset"]
    assert resets and all("(104: Connection reset by peer)" in m["reason"] and "SIGUSR2" in m["event"]
                          for m in resets), resets


def injected_kills(m, cell: str) -> int:
    """Requests for /api/die in the cell's proxy access log (each makes its worker SIGKILL itself if it gets there)."""
    access = (m.cell_dir(cell) / "proxy-access.log").read_text().splitlines()
    return sum(1 for line in access if json.loads(line)["uri"] == "/api/die")


def test_passive_health_turns_one_error_into_seconds_of_no_live_upstreams_and_the_alb_profile_does_not(scenario_run):
    """nginx's defaults in front (proxy profile nginx): the app is named like localhost (127.0.0.1 and ::1), ::1 is
    refused and marked down, and the first injected kill marks 127.0.0.1 down too: every request of the next
    10 s is a 502 'no live upstreams while connecting to upstream', attributed passive_health. The same load and
    kills behind the alb profile (no passive health): each kill is exactly one 502, nothing follows."""
    m, cells, out = scenario_run
    broken, fixed = cells["passive-health"], cells["passive-health-fixed"]
    assert broken["proxy"]["profile"] == "nginx" and fixed["proxy"]["profile"] == "alb"
    n502 = broken["status_counts"].get("502", 0)
    assert broken["kills"] >= 1 and broken["attribution"]["worker_killed"] == broken["kills"], broken["attribution"]
    assert n502 >= 5 * broken["kills"], (n502, broken["kills"])  # one error became many
    assert broken["attribution"]["passive_health"] >= 0.8 * n502, broken["attribution"]
    assert broken["proxy"]["error_reasons"]["no_live_upstreams"] >= broken["attribution"]["passive_health"]
    proofs = [x for x in broken["attribution_matches"] if x["cause"] == "passive_health"]
    assert proofs and all(x["reason"] == "no live upstreams while connecting to upstream" for x in proofs)
    assert broken["slo"]["outcome"] == "fail" and "passive-health: SLO breached: error_rate<0.05" in out
    injected = injected_kills(m, "passive-health-fixed")
    assert fixed["status_counts"].get("502", 0) == injected == fixed["kills"] == fixed["attribution"]["worker_killed"]
    assert fixed["attribution"]["passive_health"] == 0 and "no_live_upstreams" not in fixed["proxy"]["error_reasons"]
    assert sum(fixed["attribution"].values()) == injected  # nothing else failed
    assert fixed["slo"]["outcome"] == "pass", fixed["slo"]
    assert fixed["requests"] >= 0.5 * broken["requests"]  # the same load reached it


# --- the rolling deploy pair (issue 16 item 3): its own run of just its two cells (``-k rolling``), 3 times ------

ROLLING = ("rolling-no-drain", "rolling-drain")


@pytest.fixture(scope="module", params=RUNS, ids=lambda n: f"run{n}")
def rolling_run(request, tmp_path_factory):
    """One run of the rolling pair (about 40 s: two cells of 12 s, each starting 4 gunicorn instances)."""
    from .conftest import Matrix, wait_gone

    m = Matrix(tmp_path_factory.mktemp(f"rolling-run{request.param}"))
    r = m.run("--wsgi-matrix-file=scenarios", f"--wsgi-cells={','.join(ROLLING)}", timeout=600)
    assert not wait_gone(m.keep, 10)
    assert m.json.exists(), r.stdout + r.stderr
    return m, m.cells(), r.stdout


def rolling_phases(cell: dict) -> dict[int, list[str]]:
    """The deploy's steps per instance (1, 2), in the order they were seen."""
    out: dict[int, list[str]] = {}
    for e in cell["telemetry"]["action_phases"]:
        out.setdefault(e["instance"], []).append(e["phase"])
    return out


def test_rolling_deploy_without_a_drain_routes_to_stopped_instances_and_the_drain_loses_nothing(rolling_run):
    """Two gunicorn instances behind HAProxy, replaced one at a time at 3 s. Stopped as they are deregistered
    (no preStop sleep) while the LB routes to each for 1 s more: the requests sent to the stopped instance in that
    second fail (refused, or reset in its closing backlog), 502, each on that instance's LB server between its stop
    and its drain (routed_to_removed). A 2 s preStop sleep (longer than the lag) under the same load: the LB has
    drained each instance before its SIGTERM, gunicorn finishes what it has, nothing is lost. Every step of both
    deploys is on the timeline, and the new instances serve to the end."""
    _, cells, out = rolling_run
    broken, fixed = cells["rolling-no-drain"], cells["rolling-drain"]
    for cell in (broken, fixed):
        assert cell["proxy"]["balancer"] == "haproxy" and cell["proxy"]["instances"] == 2, cell["proxy"]
        (action,) = cell["telemetry"]["actions"]
        assert action["action"] == "rolling" and abs(action["t"] - cell["started_at"] - 3) < 0.5, action
        phases = rolling_phases(cell)
        assert sorted(phases) == [1, 2], phases
        for steps in phases.values():  # each instance: every step once, the successor last
            assert sorted(steps) == sorted(["deregister", "stop", "drain", "exited", "started", "ready"]), phases
            assert steps[0] == "deregister" and steps[-2:] == ["started", "ready"], phases
        # a stop before the drain (no preStop sleep) / after it (the sleep is longer than the lag)
        first = "stop" if cell is broken else "drain"
        assert all(s.index(first) < s.index({"stop": "drain", "drain": "stop"}[first]) for s in phases.values())
        ready = max(e["t"] for e in cell["telemetry"]["action_phases"] if e["phase"] == "ready")
        # both replaced within the load (the second successor answered at 10.0 s of 12 in a clean container on a
        # busy host: Django's start-up, twice in a row, is the machine's speed)
        assert ready - cell["started_at"] < cell["load"]["spec"]["duration"]
    n502 = broken["status_counts"].get("502", 0)
    assert n502 > 0, broken["status_counts"]
    assert broken["attribution"]["routed_to_removed"] >= 0.8 * n502, broken["attribution"]
    stops = {e["server"]: e for e in broken["telemetry"]["action_phases"] if e["phase"] == "stop"}
    proofs = [m for m in broken["attribution_matches"] if m["cause"] == "routed_to_removed"]
    assert proofs and all(m["event"] == stops[m["server"]]["line"][:200] for m in proofs), proofs
    assert not broken["slo"]["passed"] and "rolling-no-drain: SLO breached: http_502==0" in out
    assert fixed["status_counts"].get("502", 0) == 0 and fixed["error_count"] == 0, (
        fixed["status_counts"], fixed["errors"])
    assert fixed["slo"]["outcome"] == "pass", fixed["slo"]
    assert fixed["requests"] >= 0.5 * (broken["requests"] - broken["error_count"])  # the same load reached it
