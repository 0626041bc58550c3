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
