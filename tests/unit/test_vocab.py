"""The vocabularies defined once: nginx's two logs (nginxlog), worker event kinds (events), load modes
(config/modes) and metric names (metrics/registry), and that every user reads them from there."""

import json
import re
from pathlib import Path

import pytest

from pytest_wsgi502 import events as ev
from pytest_wsgi502 import nginxlog
from pytest_wsgi502.config.modes import LOAD_MODES, load_mode
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.metrics import registry

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_wsgi502"

# --- nginx access log -----------------------------------------------------------------------------------------


def access_line(t, status, conn=1, upstream_status="200", **extra):
    rec = {"t": t, "status": status, "conn": conn, "upstream_status": upstream_status, "upstream_addr": "127.0.0.1:1",
           "request_time": 0.002, "upstream_time": "0.002", "uri": "/a", "upstream_connection": "",
           "upstream_content_length": "2", "upstream_transfer_encoding": "", **extra}
    return json.dumps(rec) + "\n"


def test_the_format_nginx_writes_is_the_one_the_parser_reads():
    """Every field of ACCESS_LOG_FORMAT, with nginx's variables filled in, parses back as one record."""
    fields = re.findall(r'"(\w+)":', nginxlog.ACCESS_LOG_FORMAT)
    assert {"t", "status", "conn", "upstream_status", "request_time", "uri", "upstream_connection",
            "upstream_content_length", "upstream_transfer_encoding"} <= set(fields)
    filled = re.sub(r"\$\w+", "1", nginxlog.ACCESS_LOG_FORMAT)
    assert set(json.loads(filled)) == set(fields)


def test_access_log_parsed_once_counts_failures_and_reuse(tmp_path):
    log = tmp_path / nginxlog.ACCESS_LOG
    log.write_text(
        access_line(0.5, 200)  # before the load: left out
        + access_line(1.0, 200, upstream_connection="close")
        + access_line(1.1, 502, conn=3, upstream_status="502", request_time=0.001)
        + access_line(1.2, 504, conn=4, upstream_status="504", request_time=10.0)
        + access_line(1.3, 502, conn=5, upstream_status="")
        + "not json\n[1, 2]\n"  # a torn line and a line that is not an object are skipped
        + access_line(1.4, 200, upstream_content_length="", upstream_transfer_encoding="chunked")
    )
    records = nginxlog.read_access_log(log, since=1.0)
    assert [r["t"] for r in records] == [1.0, 1.1, 1.2, 1.3, 1.4]
    assert nginxlog.access_counts(records) == {"status_counts": {"200": 2, "502": 2, "504": 1},
                                               "upstream_status": {"-": 1, "200": 2, "502": 1, "504": 1}}
    assert nginxlog.parse_access_log(log, since=1.0) == nginxlog.access_counts(records)
    assert nginxlog.failures(records) == [nginxlog.Failure(1.1, 502, 3, 0.001, "/a"),
                                          nginxlog.Failure(1.2, 504, 4, 10.0, "/a"),
                                          nginxlog.Failure(1.3, 502, 5, 0.002, "/a")]
    assert nginxlog.keepalive_reuse_possible(records)  # the chunked 200 at 1.4
    assert not nginxlog.keepalive_reuse_possible(records[:4])  # Connection: close, then only the proxy's errors
    assert nginxlog.read_access_log(tmp_path / "missing") == []
    assert nginxlog.parse_access_log(tmp_path / "missing") == {"status_counts": {}, "upstream_status": {}}


@pytest.mark.parametrize(("headers", "reusable"), [
    ({"upstream_connection": "close", "upstream_content_length": "2"}, False),
    ({"upstream_connection": " Close ", "upstream_transfer_encoding": "chunked"}, False),
    ({"upstream_connection": "keep-alive", "upstream_content_length": "2"}, True),
    ({"upstream_connection": "", "upstream_content_length": "", "upstream_transfer_encoding": "chunked"}, True),
    ({"upstream_connection": "", "upstream_content_length": " ", "upstream_transfer_encoding": ""}, False),
    ({}, False),  # neither length nor chunked: the body ends when the upstream closes
])
def test_upstream_connection_fields_decide_reuse(headers, reusable):
    assert nginxlog.reusable(headers) is reusable


# --- nginx error log ------------------------------------------------------------------------------------------

CLOSED = "upstream prematurely closed connection while reading response header from upstream"
RESET = "recv() failed (104: Connection reset by peer) while reading response header from upstream"
REFUSED = "connect() failed (111: Connection refused) while connecting to upstream"
MESSAGES = {
    CLOSED: ("upstream_closed", "reading"),
    RESET: ("upstream_reset", "reading"),
    "writev() failed (104: Unknown error) while sending request to upstream": ("upstream_reset", "sending"),
    REFUSED: ("upstream_refused", "connecting"),
    "upstream timed out (110: Connection timed out) while connecting to upstream": ("upstream_timeout", "connecting"),
    "upstream timed out (110: Connection timed out) while reading response header from upstream":
        ("upstream_timeout", "reading"),
    "connect() to unix:/tmp/w.sock failed (11: Resource temporarily unavailable) while connecting to upstream":
        ("upstream_backlog_full", "connecting"),
    "no live upstreams while connecting to upstream": ("no_live_upstreams", "connecting"),
    "connect() to unix:/tmp/w.sock failed (2: No such file or directory) while connecting to upstream":
        ("other", "connecting"),
    "": ("other", ""),
}


@pytest.mark.parametrize(("text", "expected"), MESSAGES.items())
def test_each_reason_is_named_once(text, expected):
    reason = nginxlog.classify_reason(text)
    assert (reason.name, reason.phase) == expected and reason.text == text
    assert reason.name in nginxlog.REASON_NAMES


def error_line(conn, msg, level="error"):
    return (f"2026/11/25 14:34:30 [{level}] 14477#14477: *{conn} {msg}, client: 127.0.0.1, server: , "
            f'request: "GET /a HTTP/1.1", upstream: "http://127.0.0.1:8000/a", host: "127.0.0.1"\n')


def test_error_log_parsed_once_gives_counts_and_per_connection_reasons(tmp_path):
    log = tmp_path / nginxlog.ERROR_LOG
    log.write_text(
        error_line(3, RESET)
        + "2026/11/25 14:34:30 [info] 14477#14477: *3 client 127.0.0.1 closed keepalive connection\n"
        + error_line(3, CLOSED)
        + error_line(9, REFUSED, level="crit")
        + "2026/11/25 14:34:31 [error] 14477#14477: an untagged Connection refused line\n"
    )
    lines = nginxlog.read_error_log(log)
    assert [(x.conn, x.reason.name) for x in lines] == [(3, "upstream_reset"), (3, "upstream_closed"),
                                                         (9, "upstream_refused"), (None, "upstream_refused")]
    assert lines[0].reason.text == RESET  # the message alone, not the request or the upstream's address
    counts = nginxlog.parse_error_log(log)
    assert counts == {"upstream_reset": 1, "upstream_closed": 1, "upstream_refused": 2}
    assert list(counts) == ["upstream_reset", "upstream_closed", "upstream_refused"]  # first seen first
    by_conn = nginxlog.reasons_by_connection(lines)
    assert [r.name for r in by_conn[3]] == ["upstream_reset", "upstream_closed"] and set(by_conn) == {3, 9}
    assert nginxlog.parse_error_log(tmp_path / "missing") == {}


def test_the_proxy_writes_the_logs_nginxlog_reads(tmp_path):
    from pytest_wsgi502.proxy import ProxyConfig, render_nginx

    conf = render_nginx(ProxyConfig(8080, "127.0.0.1:9000"), tmp_path)
    assert f"log_format lb escape=json '{nginxlog.ACCESS_LOG_FORMAT}';" in conf
    assert f'"{tmp_path / nginxlog.ACCESS_LOG}" lb' in conf and f'"{tmp_path / nginxlog.ERROR_LOG}" info' in conf


# --- event kinds ----------------------------------------------------------------------------------------------


def test_event_groups_are_made_of_known_kinds():
    for group in (ev.SPAWNS, ev.RESPAWNS, ev.SIGKILLED, ev.KILLS, ev.EXITS):
        assert group <= ev.KINDS
    assert ev.SIGKILLED < ev.KILLS and not ev.KILLS & ev.EXITS and not ev.SPAWNS & (ev.KILLS | ev.EXITS)
    assert ev.RESPAWNS < ev.SPAWNS


def test_telemetry_patterns_produce_only_known_kinds():
    from pytest_wsgi502.servers.telemetry import GUNICORN_PATTERNS, UWSGI_PATTERNS

    assert set(UWSGI_PATTERNS) | set(GUNICORN_PATTERNS) | {ev.DIED_OTHER_SIGNAL} <= ev.KINDS


def test_telemetry_attribution_and_report_read_one_vocabulary():
    from pytest_wsgi502.attribution import classify
    from pytest_wsgi502.report.html import event_offsets
    from pytest_wsgi502.servers.telemetry import Event, summarize

    closed = nginxlog.classify_reason(CLOSED)
    for kind in ev.KINDS:
        events = [{"kind": kind, "t": 100.5}]
        cause = classify(closed, 502, 100.0, 100.2, events)
        assert cause == ("crashed" if kind == ev.CRASHED else "worker_killed" if kind in ev.KILLS
                         else "recycle" if kind in ev.EXITS else "unknown"), kind
        drawn = event_offsets({"started_at": 100.0, "duration_s": 10, "telemetry": {"events": events}})
        assert drawn == {"respawn": [0.5] if kind in ev.RESPAWNS else [], "kill": [0.5] if kind in ev.KILLS else [],
                         "crash": [0.5] if kind == ev.CRASHED else [],
                         "action": [0.5] if kind == ev.ACTION else [],
                         "phase": [0.5] if kind == ev.ACTION_PHASE else []}
        summary = summarize([Event(kind, 100.5, 7, 1, "")], initial_workers=0)
        assert summary["kills"] == (1 if kind in ev.SIGKILLED else 0)
        assert summary["respawns"] == (1 if kind in ev.SPAWNS else 0)


@pytest.mark.parametrize(("line", "kind"), [
    # uWSGI 2.0.31's own SIGSEGV handler (measured: the master's "died :(" that follows has no signal)
    ("1796136283.090146 !!! uWSGI process 3381 got Segmentation Fault !!!", "crashed"),
    ("1796136283.571191 DAMN ! worker 1 (pid: 3380) died :( trying respawn ...", "died"),
    # without its handler the master reports the signal: 11 a crash, 9 a kill, 15 neither
    ("1.0 DAMN ! worker 1 (pid: 5) died, killed by signal 11 :( trying respawn ...", "crashed"),
    ("1.0 DAMN ! worker 1 (pid: 5) died, killed by signal 7 :( trying respawn ...", "crashed"),
    ("1.0 DAMN ! worker 1 (pid: 5) died, killed by signal 9 :( trying respawn ...", "died_signal"),
    ("1.0 DAMN ! worker 1 (pid: 5) died, killed by signal 15 :( trying respawn ...", "died_other_signal"),
])
def test_uwsgi_crash_lines(line: str, kind: str) -> None:
    from pytest_wsgi502.servers.telemetry import UWSGI_PATTERNS, parse_events

    assert [e.kind for e in parse_events(line, UWSGI_PATTERNS)] == [kind]


@pytest.mark.parametrize(("signame", "kind"), [("SIGSEGV", "crashed"), ("SIGABRT", "crashed"),
                                               ("SIGKILL", "died_signal"), ("SIGTERM", "died_other_signal")])
def test_gunicorn_worker_signal_lines(signame: str, kind: str) -> None:
    from pytest_wsgi502.servers.telemetry import GUNICORN_PATTERNS, parse_events

    line = f"[2026-12-01 14:44:50 +0000] [3282] [ERROR] Worker (pid:3300) was sent {signame}!"
    assert [e.kind for e in parse_events(line, GUNICORN_PATTERNS)] == [kind]


# --- load modes -----------------------------------------------------------------------------------------------


def test_load_modes_are_checked_in_one_place_with_one_message():
    from pytest_wsgi502.config.matrix import expand
    from pytest_wsgi502.config.settings import resolve
    from pytest_wsgi502.load.engine import LoadSpec

    assert LOAD_MODES == ("closed", "open", "ramp")
    assert [load_mode(m) for m in LOAD_MODES] == list(LOAD_MODES)
    for bad in ("burst", "Closed", "", None, 3, ["open"]):
        with pytest.raises(ConfigError, match="unknown; choose one of closed, open, ramp"):
            load_mode(bad)
    message = "load mode 'burst' unknown; choose one of closed, open, ramp"
    with pytest.raises(ConfigError, match=re.escape(f"--wsgi-mode='burst': {message}")):
        resolve({"wsgi502_mode": "burst"}, {}, {})
    with pytest.raises(ConfigError, match=re.escape(message)):
        LoadSpec("http://127.0.0.1:1", mode="burst").validate()
    with pytest.raises(ConfigError, match=re.escape("load_mode 'burst' unknown; choose one of closed, open, ramp")):
        expand({"cells": {"a": {"server": "uwsgi", "load_mode": "burst"}}})


def test_no_other_module_spells_out_the_load_modes():
    spelled = re.compile(r"""\(\s*["']closed["']\s*,\s*["']open["']\s*,\s*["']ramp["']\s*\)""")
    hits = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if spelled.search(p.read_text())]
    assert hits == [], hits


# --- metrics --------------------------------------------------------------------------------------------------


def test_one_registry_serves_slos_and_checks():
    from pytest_wsgi502.config.checks import parse_checks
    from pytest_wsgi502.slo import parse_slo

    assert list(registry.SLO_METRICS) == ["error_rate", "errors", "requests", "rps", "http_502", "http_5xx", "p50",
                                          "p90", "p95", "p99", "p99.9", "max", "respawns", "kills"]
    assert set(registry.CHECKED_METRICS) == {"p50", "p90", "p95", "p99", "p99.9", "max", "mean", "error_rate", "rps",
                                             "respawns", "kills"}
    for name in registry.SLO_METRICS:
        assert parse_slo(f"{name}<=1").metric == name
    for name, metric in registry.CHECKED_METRICS.items():
        (check,) = parse_checks(f"{name}:10%")
        assert check.fails(now=200.0, saved=100.0) is metric.larger_is_worse
    with pytest.raises(ConfigError, match="unknown metric 'mean'"):
        parse_slo("mean<10ms")  # a comparison metric, not an SLO
    with pytest.raises(ConfigError, match="unknown metric 'http_502'"):
        parse_checks("http_502:1")


def test_metric_values_are_read_from_a_result_in_one_way():
    result = {"error_rate": 0.5, "error_count": 2, "latency_ms": {"p99": 12.5, "max": None}, "rps": 7,
              "status_counts": {"200": 3}, "kills": "n/a"}
    assert registry.value(result, "p99") == 12.5 and registry.value(result, "rps") == 7.0
    assert registry.value(result, "max") is None  # recorded as not measured
    assert registry.value(result, "p50") is None and registry.value(result, "respawns") is None
    assert registry.value(result, "kills") is None  # not a number
    assert registry.value(result, "http_502") == 0.0  # statuses were counted, none was a 502
    assert registry.value({}, "http_502") is None  # no status counts at all: not measured
    assert registry.value({"latency_ms": 3}, "p99") is None


def test_the_table_names_every_cause_attribution_gives():
    from pytest_wsgi502.attribution import CAUSES
    from pytest_wsgi502.report.table import SHORT

    assert set(SHORT) == set(CAUSES)
