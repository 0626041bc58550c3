from collections import deque

from pytest_wsgi502.attribution import attribute
from pytest_wsgi502.attribution import classify as classify_reason_
from pytest_wsgi502.nginxlog import Failure, classify_reason, read_error_log, reasons_by_connection

RESET = "recv() failed (104: Connection reset by peer) while reading response header from upstream"
CLOSED = "upstream prematurely closed connection while reading response header from upstream"


def classify(text, *args, **kwargs):
    """attribution.classify over nginx's message as nginxlog names it."""
    return classify_reason_(classify_reason(text), *args, **kwargs)


def test_error_log_lines_are_keyed_by_connection(tmp_path):
    log = tmp_path / "e.log"
    log.write_text(
        f'2026/11/25 14:34:30 [error] 14477#14477: *3 {RESET}, client: 127.0.0.1, server: , request: "GET /a"\n'
        "2026/11/25 14:34:30 [info] 14477#14477: *3 client 127.0.0.1 closed keepalive connection\n"
        f'2026/11/25 14:34:31 [error] 14477#14477: *3 {CLOSED}, client: 127.0.0.1, server: , request: "GET /b"\n'
        '2026/11/25 14:34:31 [error] 1#1: *9 connect() failed (111: Connection refused) while connecting to '
        'upstream, client: 127.0.0.1, server: \n'
    )
    reasons = reasons_by_connection(read_error_log(log))
    assert [r.text for r in reasons[3]] == [RESET, CLOSED]
    assert [r.name for r in reasons[3]] == ["upstream_reset", "upstream_closed"]
    assert "Connection refused" in reasons[9][0].text and reasons[9][0].name == "upstream_refused"


def test_causes():
    kill = [{"kind": "no_mercy", "t": 100.5}]
    recycle = [{"kind": "recycle", "t": 100.5}]
    assert classify(CLOSED, 502, 100.0, 100.2, kill) == "worker_killed"
    assert classify(CLOSED, 502, 100.0, 100.2, recycle) == "recycle"
    assert classify(RESET, 502, 100.0, 100.001, []) == "keepalive_race"
    assert classify(RESET, 502, 100.0, 100.3, []) == "unknown"  # reset mid-request, no event: not proven
    assert classify(CLOSED, 502, 100.0, 100.2, [{"kind": "recycle", "t": 105.0}]) == "unknown"  # too far away
    assert classify("connect() failed (11: Resource temporarily unavailable) while connecting to upstream",
                    502, 1, 1, []) == "backlog"
    assert classify("upstream timed out (110: Connection timed out) while connecting to upstream", 504, 1, 11,
                    []) == "timeout"
    assert classify("connect() failed (111: Connection refused) while connecting", 502, 1, 1, []) == "server_down"
    assert classify("", 502, 1, 1, []) == "unknown"


def test_failures_pair_with_reasons_in_order_per_connection():
    failures = [Failure(100.0, 502, 3, 0.001, "/a"), Failure(101.0, 502, 3, 0.2, "/b"),
                Failure(200.0, 502, 7, 0.001, "/c")]
    reasons = {3: deque([classify_reason(RESET), classify_reason(CLOSED)]), 7: deque([classify_reason(RESET)])}
    out = attribute(failures, reasons, [{"kind": "harakiri", "t": 101.6}])  # logged within REAP_SLACK of /b only
    assert out["counts"]["keepalive_race"] == 2 and out["counts"]["worker_killed"] == 1
    assert sum(out["counts"].values()) == 3
    assert [m["cause"] for m in out["matches"]] == ["keepalive_race", "worker_killed", "keepalive_race"]


def test_a_full_listen_queue_is_the_recycle_when_workers_just_exited():
    eagain = "connect() to unix:/tmp/w.sock failed (11: Resource temporarily unavailable) while connecting to upstream"
    assert classify(eagain, 502, 100.0, 100.001, []) == "backlog"
    assert classify(eagain, 502, 100.0, 100.001, [{"kind": "recycle", "t": 98.6}]) == "recycle"
    assert classify(eagain, 502, 100.0, 100.001, [{"kind": "worker_abort", "t": 99.5}]) == "worker_killed"
    assert classify(eagain, 502, 100.0, 100.001, [{"kind": "recycle", "t": 94.0}]) == "backlog"  # long before
    assert classify(eagain, 502, 100.0, 100.001, [{"kind": "respawn", "t": 99.5}]) == "backlog"  # not an exit


def test_keepalive_race_needs_a_reusable_upstream_connection():
    """Issue 12 item 7: a 502 on a server that closes every connection was called ``keepalive_race``."""
    assert classify(RESET, 502, 100.0, 100.001, [], keepalive_reuse=False) == "unknown"
    out = attribute([Failure(100.0, 502, 3, 0.001, "/a")], {3: deque([classify_reason(CLOSED)])}, [],
                    keepalive_reuse=False)
    assert out["counts"]["keepalive_race"] == 0 and out["counts"]["unknown"] == 1


def test_reuse_is_read_from_the_upstream_response_headers(tmp_path):
    import json

    from pytest_wsgi502 import nginxlog

    log = tmp_path / "a.log"

    def keepalive_reuse_possible(path, since=0.0):
        return nginxlog.keepalive_reuse_possible(nginxlog.read_access_log(path, since))

    def write(*recs):  # (t, status, Connection, Content-Length, Transfer-Encoding) of each upstream response
        log.write_text("".join(json.dumps({"t": t, "status": s, "upstream_status": str(s), "upstream_connection": c,
                                           "upstream_content_length": n, "upstream_transfer_encoding": te}) + "\n"
                               for t, s, c, n, te in recs))

    write((1, 200, "close", "2", ""), (2, 502, "", "", ""))
    assert keepalive_reuse_possible(log) is False  # the 502 is the proxy's own answer, not a reusable response
    write((1, 200, "", "", ""))  # uWSGI's http-socket without Content-Length: the body ends when it closes
    assert keepalive_reuse_possible(log) is False
    write((1, 200, "close", "2", ""), (2, 200, "", "2", ""))
    assert keepalive_reuse_possible(log) is True
    write((1, 200, "keep-alive", "", "chunked"))
    assert keepalive_reuse_possible(log) is True
    assert keepalive_reuse_possible(log, since=1.5) is True  # nothing seen: not ruled out
    assert keepalive_reuse_possible(tmp_path / "none") is True
    log.write_text('{"t":1,"status":200,"upstream_status":"200"}\n')  # an older log format: not ruled out
    assert keepalive_reuse_possible(log) is True


def test_a_kill_logged_late_by_the_master_still_names_the_cause():
    """uWSGI's master logs a worker's death on its next wake-up, seen 1.03 s after the request failed."""
    assert classify(CLOSED, 502, 100.0, 100.2, [{"kind": "died_signal", "t": 101.25}]) == "worker_killed"


# --- gunicorn's timeout abort: a 502 or a 500, both the kill's (issue 14 item 6) ------------------------------

# server.log of a gunicorn-timeout run (trimmed): the arbiter aborts both workers stuck in 3 s requests; 17211's
# SIGABRT handler runs as its DB query returns (SystemExit inside the request: gunicorn answers 500), 17209 is
# SIGKILLed first (the proxy sees the connection close: 502); 17400 is an unrelated worker with an app error
GUNICORN_TIMEOUT_LOG = """\
1796072939.051373 [2026-11-30 21:08:59 +0000] [17209] [INFO] Booting worker with pid: 17209
1796072939.148525 [2026-11-30 21:08:59 +0000] [17211] [INFO] Booting worker with pid: 17211
1796072942.189638 [2026-11-30 21:09:02 +0000] [17207] [CRITICAL] WORKER TIMEOUT (pid:17209)
1796072942.189670 [2026-11-30 21:09:02 +0000] [17207] [CRITICAL] WORKER TIMEOUT (pid:17211)
1796072942.384180 [2026-11-30 21:09:02 +0000] [17211] [ERROR] Error handling request GET /api/slow?ms=3000
1796072942.384196 Traceback (most recent call last):
1796072942.384285   File "/venv/lib/python3.11/site-packages/gunicorn/workers/base.py", line 200, in handle_abort
1796072942.384286     sys.exit(1)
1796072942.384289 SystemExit: 1
1796072942.388505 [2026-11-30 21:09:02 +0000] [17211] [INFO] Worker exiting (pid: 17211)
1796072942.470711 [2026-11-30 21:09:02 +0000] [17207] [ERROR] Worker (pid:17209) was sent SIGKILL!
1796072946.100000 [2026-11-30 21:09:06 +0000] [17400] [ERROR] Error handling request GET /api/counter/3
"""
GUNICORN_TIMEOUT_ACCESS = [  # (t, status, conn, request_time, uri)
    (1796072942.386, 500, 11, 3.002, "/api/slow?ms=3000"),  # 17211's answer
    (1796072942.432, 502, 12, 3.050, "/api/slow?ms=3000"),  # 17209's closed connection
    (1796072946.101, 500, 13, 0.004, "/api/counter/3"),  # an app error in a worker nobody aborted
]
GUNICORN_TIMEOUT_ERRORS = (
    f"2026/11/30 21:09:02 [error] 9#9: *12 {CLOSED}, client: 127.0.0.1, server: , request: \"GET /api/slow\"\n")


def _gunicorn_timeout_cell(tmp_path, access=GUNICORN_TIMEOUT_ACCESS, log=GUNICORN_TIMEOUT_LOG, abort_hook=True):
    """A cell directory with the proxy's logs, and the events telemetry reads from gunicorn's log and hooks."""
    import json

    from pytest_wsgi502 import nginxlog
    from pytest_wsgi502.servers.telemetry import GUNICORN_PATTERNS, parse_events

    (tmp_path / nginxlog.ACCESS_LOG).write_text("".join(
        json.dumps({"t": t, "status": s, "conn": c, "request_time": rt, "uri": u, "upstream_status": str(s)}) + "\n"
        for t, s, c, rt, u in access))
    (tmp_path / nginxlog.ERROR_LOG).write_text(GUNICORN_TIMEOUT_ERRORS)
    events = [e.as_dict() for e in parse_events(log, GUNICORN_PATTERNS)]
    if abort_hook:  # gunicorn's worker_abort hook, written just before the handler's sys.exit
        events.append({"kind": "worker_abort", "t": 1796072942.3814, "pid": 17211, "worker": None, "line": ""})
    return events


def test_a_500_from_a_gunicorn_worker_aborted_mid_request_is_the_timeout_kill(tmp_path):
    """Issue 14: gunicorn-timeout gave 8 500s and no 502 in 1 of 3 runs and failed; which code the proxy sees
    when the arbiter aborts a worker is a race, so the aborted worker's 500 is the kill's as much as a 502."""
    from pytest_wsgi502.attribution import attribute_cell

    events = _gunicorn_timeout_cell(tmp_path)
    out = attribute_cell(tmp_path, events, since=0, http_500=2)
    assert out["counts"]["worker_killed"] == 2  # the 502 and 17211's 500; the unrelated 500 is not the kill's
    assert out["counts"]["unknown"] == 0 and out["counts"]["db"] == 0
    by_status = {m["status"]: m for m in out["matches"]}
    assert by_status[500]["cause"] == "worker_killed" and "[17211] [ERROR] Error handling request" in (
        by_status[500]["reason"])
    # the abort proven by the arbiter's WORKER TIMEOUT line alone (the hooks' file lost) is enough
    out = attribute_cell(tmp_path, _gunicorn_timeout_cell(tmp_path, abort_hook=False), since=0, http_500=2)
    assert out["counts"]["worker_killed"] == 2


def test_a_500_is_the_kill_only_from_the_aborted_worker_for_the_same_request(tmp_path):
    from pytest_wsgi502.attribution import attribute_cell

    # the worker that logged the error was not the one aborted (its abort line and hook gone): not the kill's
    not_aborted = GUNICORN_TIMEOUT_LOG.replace("WORKER TIMEOUT (pid:17211)", "WORKER TIMEOUT (pid:17999)")
    events = _gunicorn_timeout_cell(tmp_path, log=not_aborted, abort_hook=False)
    assert attribute_cell(tmp_path, events, since=0, http_500=2)["counts"]["worker_killed"] == 1  # the 502 only
    # a 500 for another URI than the aborted request's
    other_uri = [(1796072942.386, 500, 11, 3.002, "/api/slow?ms=2999"), *GUNICORN_TIMEOUT_ACCESS[1:]]
    events = _gunicorn_timeout_cell(tmp_path, access=other_uri)
    assert attribute_cell(tmp_path, events, since=0, http_500=2)["counts"]["worker_killed"] == 1
    # a 500 that ended long before the abort: the kill was not within the request's span
    early = [(1796072930.0, 500, 11, 0.01, "/api/slow?ms=3000"), *GUNICORN_TIMEOUT_ACCESS[1:]]
    events = _gunicorn_timeout_cell(tmp_path, access=early)
    assert attribute_cell(tmp_path, events, since=0, http_500=2)["counts"]["worker_killed"] == 1


def test_the_aborted_workers_500s_are_not_counted_as_database_errors(tmp_path):
    """A cell with both a DB error and an aborted request: each 500 has one cause."""
    from pytest_wsgi502.attribution import attribute_cell

    events = _gunicorn_timeout_cell(tmp_path)
    events.append({"kind": "db_error", "t": 1796072946.1, "pid": 17400, "worker": None, "line": ""})
    out = attribute_cell(tmp_path, events, since=0, http_500=2)
    assert out["counts"]["worker_killed"] == 2 and out["counts"]["db"] == 1


def test_gunicorn_telemetry_reads_the_worker_pid_of_an_error_line():
    from pytest_wsgi502 import events as ev
    from pytest_wsgi502.servers.telemetry import GUNICORN_PATTERNS, parse_events

    errors = [e for e in parse_events(GUNICORN_TIMEOUT_LOG, GUNICORN_PATTERNS) if e.kind == ev.REQUEST_ERROR]
    assert [(e.pid, e.t) for e in errors] == [(17211, 1796072942.38418), (17400, 1796072946.1)]
    timeouts = [e.pid for e in parse_events(GUNICORN_TIMEOUT_LOG, GUNICORN_PATTERNS) if e.kind == ev.TIMEOUT]
    assert timeouts == [17209, 17211]  # the aborted worker's pid, not the arbiter's (17207)


# --- the nginx profile: retries and passive health (issue 16 item 3) ---------------------------------------------

REFUSED_V6 = "connect() failed (111: Connection refused) while connecting to upstream"
NO_LIVE = "no live upstreams while connecting to upstream"


def _rec(t, status, conn, upstream_status, uri="/ok", request_time=0.001):
    import json

    return json.dumps({"t": t, "status": status, "nginx_status": status, "conn": conn,
                       "upstream_status": upstream_status, "upstream_addr": "", "request_time": request_time,
                       "upstream_time": "", "uri": uri, "upstream_connection": "", "upstream_content_length": "",
                       "upstream_transfer_encoding": ""}) + "\n"


def _err(conn, msg, level="error"):
    return (f"2026/12/01 11:34:10 [{level}] 31695#31695: *{conn} {msg}, client: 127.0.0.1, server: , "
            f'request: "GET /ok HTTP/1.1", upstream: "http://target/ok", host: "x"\n')


def test_no_live_upstreams_is_passive_health_and_the_error_that_started_it_keeps_its_cause(tmp_path):
    """Measured on nginx 1.22.1 (nginx profile: 127.0.0.1 and ::1, the app on 127.0.0.1 only): the request whose
    worker died was tried on ::1 (refused), on 127.0.0.1 (closed: the kill) and found no live server: three lines
    for one 502. It is the kill's; the 502s after it, with no live server for fail_timeout, are passive health."""
    from pytest_wsgi502.attribution import attribute_cell

    (tmp_path / "proxy-access.log").write_text(
        _rec(100.0, 200, 2, "200")
        + _rec(100.2, 502, 4, "502, 502, 502", uri="/api/die", request_time=0.1)
        + _rec(100.3, 502, 6, "502") + _rec(100.4, 502, 2, "502") + _rec(100.5, 502, 4, "502"))
    (tmp_path / "proxy-error.log").write_text(
        _err(4, REFUSED_V6) + _err(4, "upstream server temporarily disabled while connecting to upstream", "warn")
        + _err(4, CLOSED) + _err(4, NO_LIVE) + _err(6, NO_LIVE) + _err(2, NO_LIVE) + _err(4, NO_LIVE))
    from pytest_wsgi502.events import DIED_SIGNAL

    out = attribute_cell(tmp_path, [{"kind": DIED_SIGNAL, "t": 100.25}], since=0)
    assert out["counts"]["worker_killed"] == 1 and out["counts"]["passive_health"] == 3, out["counts"]
    assert sum(out["counts"].values()) == 4
    assert [m["cause"] for m in out["matches"]] == ["worker_killed", "passive_health", "passive_health",
                                                    "passive_health"]
    assert out["matches"][1]["reason"] == NO_LIVE  # the proving line


def test_a_request_nginx_retried_into_a_success_leaves_its_line_to_no_other_request(tmp_path):
    """The nginx profile retries a refused connect on ::1 on 127.0.0.1: the client gets a 200 and the error log a
    line on that connection. The next failure on the connection is paired with its own line, not that one."""
    from pytest_wsgi502.attribution import attribute_cell

    (tmp_path / "proxy-access.log").write_text(
        _rec(100.0, 200, 3, "502, 200") + _rec(100.5, 502, 3, "502", request_time=0.001))
    (tmp_path / "proxy-error.log").write_text(_err(3, REFUSED_V6) + _err(3, CLOSED))
    out = attribute_cell(tmp_path, [{"kind": "recycle", "t": 100.6}], since=0)
    assert out["counts"]["recycle"] == 1 and out["counts"]["server_down"] == 0, out["counts"]


def test_the_deciding_reason_of_a_retried_request():
    from pytest_wsgi502.attribution import deciding

    refused, closed, no_live = (classify_reason(x) for x in (REFUSED_V6, CLOSED, NO_LIVE))
    assert deciding([refused, closed, no_live]) is closed  # the attempt that reached the app
    assert deciding([refused, no_live]).name == "no_live_upstreams"  # nothing reached a server
    assert deciding([refused, refused]).name == "upstream_refused"  # refused everywhere: the app was down
    assert deciding([closed]) is closed and deciding([]).name == "other"
    no_ipv6 = classify_reason("connect() failed (99: Cannot assign requested address) while connecting to upstream")
    assert deciding([no_ipv6, closed]) is closed  # ::1 unusable on a host without IPv6: retried, not the cause
