"""Config lint: each trap behind a 502 mechanism, fed as a bad config."""

from pathlib import Path

import pytest

from pytest_wsgi502.config.matrix import expand
from pytest_wsgi502.lint import lint, uwsgi_options
from pytest_wsgi502.servers import ServerSpec, make_server

CELL_DIR = Path("/nonexistent/wsgi502-lint/cell")  # settings() only computes paths; nothing is created


def findings(table, idle=60.0, known=None, max_backlog=4096, version=""):
    cell = expand({"cells": {"c": table}})[0]
    server = make_server(ServerSpec(cell, workdir=CELL_DIR, app="a:b", chdir=CELL_DIR), binary="x")
    if known is None:
        known = set(server.settings()) if cell.server == "uwsgi" else ()
    return {f["code"] for f in lint(cell, server.settings(), idle_timeout=idle, known_uwsgi=known,
                                    max_backlog=max_backlog, default_path="/api/counter/{n}", uwsgi_version=version)}


def test_clean_configs_have_no_findings():
    assert findings({"server": "gunicorn"}) == set()
    assert findings({"server": "uwsgi", "options": {"add-header": "Connection: close"}}) == set()


@pytest.mark.parametrize(
    ("table", "code"),
    [
        ({"server": "uwsgi"}, "keepalive-race"),
        ({"server": "gunicorn", "worker_class": "gthread"}, "keepalive-shorter-than-lb"),
        ({"server": "gunicorn", "worker_class": "gevent", "keepalive": 75, "driver": "mysqlclient"},
         "gevent-mysqlclient"),
        ({"server": "uwsgi", "listen": 65535}, "listen-above-somaxconn"),
        ({"server": "gunicorn", "listen": 8192}, "listen-above-somaxconn"),
        ({"server": "uwsgi", "options": {"harakiri": 2}, "mix": [{"path": "/api/slow?ms=3000"}]},
         "harakiri-below-slowest"),
        ({"server": "gunicorn", "options": {"timeout": 2}, "path": "/api/slow?ms=3000"}, "timeout-below-slowest"),
        ({"server": "uwsgi", "max_requests": 200}, "recycle-lockstep"),
        ({"server": "gunicorn", "max_requests": 200}, "recycle-lockstep"),
        ({"server": "uwsgi", "socket": "unix"}, "unix-listen-queue"),
        ({"server": "gunicorn", "socket": "unix", "listen": 64}, "unix-listen-queue"),
    ],
)
def test_each_trap_is_flagged(table, code):
    assert code in findings(table)


@pytest.mark.parametrize(("options", "threads", "version", "flagged"), [
    ({"max-worker-lifetime": 3}, 4, "2.0.24", True),
    ({"max-worker-lifetime": 3}, 2, "2.0.18", True),
    ({"max-worker-lifetime": 3}, 4, "2.0.25", False),  # 2.0.25 joins the threads before the worker exits
    ({"max-worker-lifetime": 3}, 4, "2.0.31", False),
    ({"max-worker-lifetime": 3}, 1, "2.0.24", False),  # no other thread with a request in flight
    ({"max-requests": 40}, 4, "2.0.24", False),  # that exit waits: cancellation is off during a request
    ({}, 4, "2.0.24", False),
    ({"max-worker-lifetime": 3}, 4, "", False),  # version unknown: no claim
])
def test_lifetime_with_threads_on_uwsgi_before_2_0_25(options, threads, version, flagged):
    table = {"server": "uwsgi", "threads": threads, "options": {"add-header": "Connection: close", **options}}
    assert ("lifetime-drops-threads" in findings(table, version=version)) is flagged


def test_gunicorn_keepalive_above_the_lb_is_fine():
    ok = findings({"server": "gunicorn", "worker_class": "gthread", "keepalive": 75})
    assert "keepalive-shorter-than-lb" not in ok


def test_unknown_uwsgi_option_for_the_installed_version():
    """max-requests-delta on a uWSGI that predates it: the seed's "delta had no effect"."""
    old_uwsgi = {"master", "processes", "http-socket", "max-requests"}
    assert "uwsgi-unknown-option" in findings({"server": "uwsgi", "max_requests": 5, "max_requests_delta": 2},
                                              known=old_uwsgi)


def test_the_installed_uwsgi_knows_max_requests_delta():
    from pytest_wsgi502.servers import binary_for

    binary = binary_for("uwsgi")
    if binary is None:
        pytest.fail("uwsgi is not installed: bash bin/dev setup")
    opts = uwsgi_options(binary)
    assert {"max-requests-delta", "http-socket", "harakiri", "stats-http", "add-header"} <= opts


def test_the_fixes_silence_their_findings():
    assert "recycle-lockstep" not in findings({"server": "uwsgi", "max_requests": 200, "max_requests_delta": 100})
    assert "recycle-lockstep" not in findings({"server": "uwsgi", "max_requests": 200, "workers": 1})
    assert "recycle-lockstep" not in findings({"server": "gunicorn", "max_requests": 200, "max_requests_jitter": 50})
    assert "unix-listen-queue" not in findings({"server": "uwsgi", "socket": "unix", "listen": 1024})
    assert "unix-listen-queue" not in findings({"server": "gunicorn", "socket": "unix"})  # gunicorn: 2048


def test_every_scenario_cell_lints_to_its_trap():
    """The built-in scenario pairs: each broken cell is flagged for its mechanism where lint can see it."""
    from pytest_wsgi502.config.matrix import BUILTIN, load_matrix

    cells = {c.name: c for c in load_matrix(BUILTIN["scenarios"])}

    def codes(name):
        cell = cells[name]
        server = make_server(ServerSpec(cell, workdir=CELL_DIR, app="a:b", chdir=CELL_DIR), binary="x")
        known = set(server.settings()) if cell.server == "uwsgi" else ()
        version = cell.server_version or "2.0.31"  # the pinned release, else the installed one here
        return {f["code"] for f in lint(cell, server.settings(), idle_timeout=60.0, known_uwsgi=known,
                                        max_backlog=4096, default_path="/api/counter/{n}", uwsgi_version=version)}

    assert "keepalive-race" in codes("keepalive-race") and "keepalive-race" not in codes("keepalive-race-fixed")
    assert "harakiri-below-slowest" in codes("harakiri") and not codes("harakiri-fixed") & {"harakiri-below-slowest"}
    assert "timeout-below-slowest" in codes("gunicorn-timeout")
    assert "timeout-below-slowest" not in codes("gunicorn-timeout-fixed")
    assert "recycle-lockstep" in codes("recycle") and "recycle-lockstep" not in codes("recycle-fixed")
    assert "unix-listen-queue" in codes("backlog") and "unix-listen-queue" not in codes("backlog-fixed")
    assert "gevent-mysqlclient" in codes("gevent-mysqlclient")
    assert "gevent-mysqlclient" not in codes("gevent-mysqlclient-fixed")
    assert "lifetime-drops-threads" in codes("lifetime") and "lifetime-drops-threads" not in codes("lifetime-fixed")


@pytest.mark.parametrize("options", [
    {"harakiri": "2s"}, {"harakiri": [1, 2]}, {"listen": "lots"}, {"threads": "many", "max-worker-lifetime": 3},
    {"processes": "x", "max-requests": 5},
])
def test_lint_reads_what_it_can_and_never_crashes_on_an_odd_uwsgi_value(options):
    """A value the renderer accepts but that is not a number (uWSGI would read "2s" as 2): no ValueError."""
    assert isinstance(findings({"server": "uwsgi", "options": {"add-header": "Connection: close", **options},
                                "mix": [{"path": "/api/slow?ms=3000"}]}), set)


def test_lint_reads_numeric_strings_as_numbers():
    assert "harakiri-below-slowest" in findings({"server": "uwsgi", "options": {"harakiri": "2"},
                                                 "mix": [{"path": "/api/slow?ms=3000"}]})
    assert "listen-above-somaxconn" in findings({"server": "uwsgi", "options": {"listen": "65535"}})


def test_a_huge_ms_in_a_path_is_not_a_crash():
    digits = "9" * 5000  # int() of more than 4300 digits raises in Python >= 3.11
    assert "timeout-below-slowest" not in findings({"server": "gunicorn", "path": f"/api/slow?ms={digits}"})


# --- lifecycle traps (issue 16 item 5) ---------------------------------------------------------------------------

COOKIE = {"Cookie": "s=" + "a" * 5000}
SLOW = [{"path": "/api/slow?ms=40000"}]


@pytest.mark.parametrize(("table", "version", "code"), [
    ({"server": "uwsgi", "options": {"die-on-term": False}}, "2.0.31", "uwsgi-term-reloads"),
    ({"server": "uwsgi", "options": {"die-on-term": "false"}}, "2.0.18", "uwsgi-term-reloads"),
    ({"server": "uwsgi", "headers": COOKIE}, "", "buffer-size-below-headers"),
    ({"server": "uwsgi", "headers": COOKIE, "options": {"buffer-size": 4096}}, "", "buffer-size-below-headers"),
    ({"server": "gunicorn", "headers": {"Cookie": "s=" + "a" * 9000}}, "", "header-field-above-limit"),
    ({"server": "gunicorn", "mix": SLOW, "options": {"timeout": 60}}, "", "graceful-timeout-below-slowest"),
    ({"server": "gunicorn", "mix": [{"path": "/api/slow?ms=3000"}], "options": {"graceful_timeout": 2}}, "",
     "graceful-timeout-below-slowest"),
    ({"server": "uwsgi", "mix": [{"path": "/api/slow?ms=3000"}], "options": {"worker-reload-mercy": 2},
      "actions": [{"at": "1s", "do": "hup"}]}, "", "reload-mercy-below-slowest"),
    ({"server": "uwsgi", "actions": [{"at": "1s", "do": "chain-reload"}]}, "", "chain-reload-without-lazy-apps"),
    ({"server": "gunicorn", "actions": [{"at": "1s", "do": "upgrade"}]}, "", "upgrade-quits-old-workers"),
    ({"server": "gunicorn", "actions": [{"at": "1s", "do": "term"}]}, "", "stop-without-drain"),
    ({"server": "uwsgi", "actions": [{"at": "1s", "do": "term"}]}, "2.0.31", "stop-without-drain"),
    ({"server": "gunicorn", "instances": 2, "actions": [{"at": "1s", "do": "rolling", "lag": "1s"}]}, "",
     "rolling-stop-before-drain"),
    ({"server": "gunicorn", "instances": 2, "mix": [{"path": "/api/slow?ms=3000"}],
      "actions": [{"at": "1s", "do": "rolling", "deregistration_delay": "2s"}]}, "", "deregistration-below-slowest"),
])
def test_each_lifecycle_trap_is_flagged(table, version, code):
    assert code in findings(table, version=version)


@pytest.mark.parametrize(("table", "version", "code"), [
    ({"server": "uwsgi"}, "2.0.31", "uwsgi-term-reloads"),  # the harness sets die-on-term
    ({"server": "uwsgi", "options": {"die-on-term": False}}, "", "uwsgi-term-reloads"),  # version unknown: no claim
    ({"server": "uwsgi", "options": {"die-on-term": False}}, "2.1.0", "uwsgi-term-reloads"),  # 2.1 dies on TERM
    ({"server": "uwsgi", "headers": COOKIE, "options": {"buffer-size": 32768}}, "", "buffer-size-below-headers"),
    ({"server": "uwsgi", "headers": {"Cookie": "s=" + "a" * 3000}}, "", "buffer-size-below-headers"),
    ({"server": "gunicorn", "headers": {"Cookie": "s=" + "a" * 9000}, "options": {"limit_request_field_size": 0}},
     "", "header-field-above-limit"),  # 0: no limit
    ({"server": "gunicorn", "mix": SLOW, "options": {"timeout": 60, "graceful_timeout": 45}}, "",
     "graceful-timeout-below-slowest"),
    ({"server": "uwsgi", "mix": [{"path": "/api/slow?ms=3000"}], "options": {"worker-reload-mercy": 2}}, "",
     "reload-mercy-below-slowest"),  # no reload in the run
    ({"server": "uwsgi", "actions": [{"at": "1s", "do": "chain-reload"}], "options": {"lazy-apps": True}}, "",
     "chain-reload-without-lazy-apps"),
    ({"server": "gunicorn", "actions": [{"at": "1s", "do": "hup"}]}, "", "stop-without-drain"),
    ({"server": "gunicorn", "instances": 2, "actions": [{"at": "1s", "do": "rolling", "lag": "1s",
                                                          "prestop": "2s"}]}, "", "rolling-stop-before-drain"),
    ({"server": "gunicorn", "instances": 2, "mix": [{"path": "/api/slow?ms=3000"}],
      "actions": [{"at": "1s", "do": "rolling"}]}, "", "deregistration-below-slowest"),  # AWS's default 300 s
])
def test_lifecycle_fixes_silence_their_findings(table, version, code):
    assert code not in findings(table, version=version)


def test_the_header_block_counts_the_cells_headers_and_longest_path():
    from pytest_wsgi502.lint import header_block_size

    cell = expand({"cells": {"c": {"server": "uwsgi", "headers": {"Cookie": "x" * 100},
                                   "mix": [{"path": "/a"}, {"path": "/" + "b" * 50}]}}})[0]
    assert header_block_size(cell) == len("GET /" + "b" * 50 + " HTTP/1.1\r\n") + len("Cookie: " + "x" * 100 + "\r\n") \
        + 256


def test_the_lifecycle_scenarios_lint_to_their_traps():
    from pytest_wsgi502.config.matrix import BUILTIN, load_matrix

    cells = {c.name: c for c in load_matrix(BUILTIN["scenarios"])}

    def codes(name):
        cell = cells[name]
        server = make_server(ServerSpec(cell, workdir=CELL_DIR, app="a:b", chdir=CELL_DIR), binary="x")
        return {f["code"] for f in lint(cell, server.settings(), idle_timeout=60.0, known_uwsgi=set(server.settings()),
                                        default_path="/api/counter/{n}", uwsgi_version="2.0.31")}

    assert {"uwsgi-term-reloads", "stop-without-drain"} <= codes("reload-term")
    assert "stop-without-drain" not in codes("reload-term-fixed")
    assert "buffer-size-below-headers" in codes("header-size")
    assert "buffer-size-below-headers" not in codes("header-size-fixed")
    assert "upgrade-quits-old-workers" in codes("gunicorn-upgrade")
    assert "upgrade-quits-old-workers" not in codes("gunicorn-upgrade-fixed")


def test_nginx_passive_health_is_flagged_for_a_tcp_target_behind_the_nginx_profile():
    """nginx's max_fails=1 fail_timeout=10s over localhost's two addresses (the nginx profile): one error and the
    app is down for 10 s. The alb profile (max_fails=0) and a unix socket (one address: nginx ignores
    max_fails) are not flagged; the session's profile counts when the cell has none."""
    from pytest_wsgi502.config.matrix import BUILTIN, load_matrix

    assert "nginx-passive-health" in findings({"server": "uwsgi", "proxy_profile": "nginx"})
    assert "nginx-passive-health" not in findings({"server": "uwsgi", "proxy_profile": "nginx", "socket": "unix"})
    assert "nginx-passive-health" not in findings({"server": "gunicorn", "proxy_profile": "alb"})
    cell = expand({"cells": {"c": {"server": "gunicorn"}}})[0]
    server = make_server(ServerSpec(cell, workdir=CELL_DIR, app="a:b", chdir=CELL_DIR), binary="x")
    codes = {f["code"] for f in lint(cell, server.settings(), idle_timeout=60.0, proxy_profile="nginx")}
    assert "nginx-passive-health" in codes
    alb_cell = expand({"cells": {"c": {"server": "gunicorn", "proxy_profile": "alb"}}})[0]
    codes = {f["code"] for f in lint(alb_cell, server.settings(), idle_timeout=60.0, proxy_profile="nginx")}
    assert "nginx-passive-health" not in codes  # the cell's own profile wins
    cells = {c.name: c for c in load_matrix(BUILTIN["scenarios"])}
    for name, flagged in (("passive-health", True), ("passive-health-fixed", False)):
        srv = make_server(ServerSpec(cells[name], workdir=CELL_DIR, app="a:b", chdir=CELL_DIR), binary="x")
        codes = {f["code"] for f in lint(cells[name], srv.settings(), idle_timeout=60.0)}
        assert ("nginx-passive-health" in codes) is flagged, (name, codes)
