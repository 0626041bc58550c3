"""HAProxy for several targets (pytest_wsgi502/haproxy.py): the rendered config's ALB behaviours, quoting
refusals, the access-log format's shape, and the termination-state -> reason mapping attribution uses."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_wsgi502 import nginxlog
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.haproxy import HAProxyLB, haproxy_quoted, render_haproxy, server_address

HAPROXY = "/usr/sbin/haproxy"
UPSTREAMS = ["127.0.0.1:8001", "127.0.0.1:8002"]


def render(tmp: Path = Path("/tmp/w"), upstreams: list[str] | None = None, idle: float = 60.0) -> str:
    return render_haproxy(tmp, upstreams or UPSTREAMS, 8080, idle, tmp / "a.sock", tmp / "r.sock")


def section(text: str, header: str) -> str:
    """The lines of one config section (``frontend lb``...), up to the next unindented line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    out = []
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):
            break
        out.append(line.strip())
    return "\n".join(out)


def test_alb_behaviours_are_rendered() -> None:
    text = render(idle=60)
    defaults = section(text, "defaults alb")
    assert "retries 0" in defaults and "no option redispatch" in defaults
    assert "timeout connect 10s" in defaults
    for kind in ("client", "server", "http-keep-alive", "http-request"):
        assert f"timeout {kind} 60s" in defaults
    backend = section(text, "backend be")
    assert "balance roundrobin" in backend
    servers = [line for line in backend.splitlines() if line.startswith("server ")]
    # no health checks at all, so no passive "down" state
    assert len(servers) == 2 and not any(" check" in line for line in servers)
    assert "prefer-last-server" not in text and "redispatch" not in backend
    assert "server s0 '127.0.0.1:8001'" in backend and "server s1 '127.0.0.1:8002'" in backend
    # a refused connect (503 with a server) is answered 502, a 503 without one (<NOSRV>) stays 503
    assert "http-after-response set-status 502 if { status 503 } { srv_id -m found }" in section(text, "frontend lb")


def test_listens_on_loopback_only_and_relays_each_request_on_its_own_connection() -> None:
    text = render()
    binds = [line for line in text.splitlines() if line.strip().startswith("bind ")]
    assert binds == ["    bind 127.0.0.1:8080", "    bind 'unix@/tmp/w/r.sock' mode 600 accept-proxy"]
    relay = section(text, "backend relay")
    assert "option http-server-close" in relay and "http-reuse never" in relay
    assert "server lb 'unix@/tmp/w/r.sock' send-proxy-v2" in relay
    assert "stats socket '/tmp/w/a.sock' mode 600 level admin" in text


def test_the_relay_waits_longer_than_the_balancer_so_its_504_wins() -> None:
    text = render(idle=7.2)
    assert "timeout server 8s" in section(text, "defaults alb")
    assert "timeout server 13s" in section(text, "backend relay")  # 7.2 + 5, rounded up


@pytest.mark.parametrize("idle", [0, -1, float("nan"), float("inf"), 86_401, "x"])
def test_bad_idle_timeout_is_refused(idle: object) -> None:
    with pytest.raises(ConfigError, match="idle timeout"):
        render(idle=idle)  # type: ignore[arg-type]


@pytest.mark.parametrize("upstream,expected", [
    ("127.0.0.1:1", "'127.0.0.1:1'"),
    ("localhost:65535", "'localhost:65535'"),
    ("[::1]:80", "'[::1]:80'"),
    ("unix:/run/app.sock", "'unix@/run/app.sock'"),
])
def test_server_address(upstream: str, expected: str) -> None:
    assert server_address(upstream) == expected


@pytest.mark.parametrize("upstream", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "a b:80", "unix:",
                                      "unix:/x'y", "unix:/x\ny", "h:80 check"])
def test_bad_upstream_is_refused(upstream: str) -> None:
    with pytest.raises(ConfigError) as info:
        render(upstreams=["127.0.0.1:8001", upstream])
    assert "\n" not in str(info.value)


def test_no_upstream_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least one upstream"):
        render_haproxy(Path("/tmp/w"), [], 8080, 60, Path("/tmp/w/a"), Path("/tmp/w/r"))


@pytest.mark.parametrize("bad", ["/tmp/it's", "/tmp/a\nb", "/tmp/a\rb", "/tmp/a\x00b", "/tmp/a\x7fb", ""])
def test_unwritable_values_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        haproxy_quoted(bad, "path")
    assert "\n" not in str(info.value) and "HAProxy path" in str(info.value)


@pytest.mark.parametrize("fine", ['/tmp/a b', '/tmp/a$b', '/tmp/a#b', '/tmp/a"b', "/tmp/a\\b", "/tmp/ü"])
def test_strong_quoting_keeps_everything_else_as_is(fine: str) -> None:
    assert haproxy_quoted(fine, "path") == f"'{fine}'"


@pytest.mark.parametrize("name,message", [("it's", "cannot be written"), ("a$b", "expands in an address")])
def test_a_workdir_haproxy_cannot_read_back_is_refused_before_anything_starts(tmp_path: Path, name: str,
                                                                             message: str) -> None:
    lb = HAProxyLB(tmp_path / name, UPSTREAMS, 60, HAPROXY)
    with pytest.raises(ConfigError, match=message):
        lb.start("/")
    assert lb.process is None and not (tmp_path / name).exists()


def test_dollar_is_refused_in_addresses_only() -> None:
    """HAProxy expands $NAME in addresses even single-quoted (measured: '/x/a$b' bound /x/a); elsewhere a
    single-quoted $ is kept."""
    assert haproxy_quoted("/tmp/a$b", "path") == "'/tmp/a$b'"
    with pytest.raises(ConfigError, match=r"contains '\$'"):  # upstream_target (proxy.py) refuses it first
        server_address("unix:/tmp/a$b.sock")
    with pytest.raises(ConfigError, match="expands in an address"):
        render_haproxy(Path("/tmp/w"), UPSTREAMS, 8080, 60, Path("/tmp/$HOME/a"), Path("/tmp/r"))


def test_socket_paths_longer_than_sun_path_are_refused() -> None:
    deep = Path("/tmp/" + "d" * 120)
    with pytest.raises(ConfigError, match="longer than 107 bytes"):
        render_haproxy(deep, UPSTREAMS, 8080, 60, deep / "a.sock", Path("/tmp/r.sock"))


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_quoting_property(text: str) -> None:
    """Any value is either written strongly quoted, unchanged, or refused in one line."""
    try:
        quoted = haproxy_quoted(text, "value")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert text == "" or re.search(r"[\x00-\x1f\x7f']", text)
        return
    assert quoted == f"'{text}'"
    assert not re.search(r"[\x00-\x1f\x7f']", text)  # nothing HAProxy's single quotes cannot hold


def test_runtime_calls_validate_before_touching_the_socket(tmp_path: Path) -> None:
    lb = HAProxyLB(tmp_path, UPSTREAMS, 60, HAPROXY)
    with pytest.raises(ConfigError, match="server state must be one of ready, drain, maint"):
        lb.set_state(0, "down")
    with pytest.raises(ConfigError, match="server index"):
        lb.set_state(2, "drain")
    with pytest.raises(ConfigError, match="server index"):
        lb.shutdown_sessions(-1)
    with pytest.raises(ConfigError, match="one command"):
        lb.command("show info\nshutdown sessions server be/s0")
    assert lb.server_name(1) == "s1"


# --- the access log -----------------------------------------------------------------------------------------

def _filled(fmt: str) -> str:
    """The log format with every HAProxy variable and sample replaced by a number: must be valid JSON."""
    return re.sub(r"%\[[^\]]*\]|%[A-Za-z]+", "7", fmt)


def test_log_format_is_json_in_the_nginx_shape() -> None:
    rec = json.loads(_filled(nginxlog.HAPROXY_LOG_FORMAT))
    nginx = set(json.loads(re.sub(r"\$[a-z_]+", "7", nginxlog.ACCESS_LOG_FORMAT)))
    assert nginx - set(rec) == {"nginx_status"}  # the alb-profile nginx's own 499; HAProxy has no such mapping
    assert {"server", "termination", "client_port"} <= set(rec)
    assert rec["t"] == 7e-3 and rec["request_time"] == 77  # %X then e-3: a JSON number in seconds


def test_log_format_is_writable_single_quoted() -> None:
    haproxy_quoted(nginxlog.HAPROXY_LOG_FORMAT, "log format")


LINES = [  # as HAProxy 2.6.12 wrote them (measured: tests/integration/test_haproxy.py)
    '{"t":1796136800563e-3,"status":502,"conn":20,"client_port":50422,"server":"s1","termination":"SH--",'
    '"upstream_status":"-","upstream_addr":"127.0.0.1:45473","request_time":0e-3,"upstream_time":-1e-3,'
    '"connect_time":0e-3,"retries":0,"uri":"\\/close","upstream_connection":"-","upstream_content_length":"-",'
    '"upstream_transfer_encoding":"-","lb":"haproxy"}',
    '{"t":1796136800564e-3,"status":502,"conn":24,"client_port":50422,"server":"s1","termination":"SC--",'
    '"upstream_status":"-","upstream_addr":"127.0.0.1:45473","request_time":1e-3,"upstream_time":-1e-3,'
    '"connect_time":-1e-3,"retries":0,"uri":"\\/a?b=\\"x","upstream_connection":"-","upstream_content_length":"-",'
    '"upstream_transfer_encoding":"-","lb":"haproxy"}',
    "[WARNING]  (8888) : Server be/s0 is going DOWN for maintenance. 1 active and 0 backup servers left.",
    '{"t":1796136800566e-3,"status":503,"conn":30,"client_port":50422,"server":"<NOSRV>","termination":"SC--",'
    '"upstream_status":"-","upstream_addr":"-:-","request_time":0e-3,"upstream_time":-1e-3,"connect_time":-1e-3,'
    '"retries":0,"uri":"\\/x","upstream_connection":"-","upstream_content_length":"-",'
    '"upstream_transfer_encoding":"-","lb":"haproxy"}',
    '{"t":1796136800570e-3,"status":200,"conn":32,"client_port":50430,"server":"s0","termination":"----",'
    '"upstream_status":"200","upstream_addr":"127.0.0.1:34931","request_time":2000e-3,"upstream_time":2000e-3,'
    '"connect_time":0e-3,"retries":0,"uri":"\\/slow","upstream_connection":"-","upstream_content_length":"2",'
    '"upstream_transfer_encoding":"-","lb":"haproxy"}',
]


def test_haproxy_lines_read_like_nginx_ones(tmp_path: Path) -> None:
    log = tmp_path / nginxlog.ACCESS_LOG
    log.write_text("\n".join(LINES) + "\n")
    records = nginxlog.read_access_log(log)
    assert len(records) == 4  # HAProxy's own notices in the same file are skipped
    assert records[0]["t"] == pytest.approx(1796136800.563) and records[3]["request_time"] == 2.0
    assert records[1]["uri"] == '/a?b="x'
    assert nginxlog.access_counts(records) == {"status_counts": {"200": 1, "502": 2, "503": 1},
                                               "upstream_status": {"-": 3, "200": 1}}
    fails = nginxlog.failures(records)
    assert [(f.status, f.conn, f.attempts) for f in fails] == [(502, 20, 1), (502, 24, 1), (503, 30, 1)]
    reasons = nginxlog.haproxy_reasons(records)
    assert {conn: [r.name for r in q] for conn, q in reasons.items()} == {
        20: ["upstream_closed"], 24: ["upstream_refused"], 30: ["no_live_upstreams"]}
    assert nginxlog.keepalive_reuse_possible(records)  # a Content-Length response: reusable
    assert records[3]["upstream_connection"] == "" and records[3]["upstream_content_length"] == "2"
    # HAProxy's "-" for an absent header is no header: a response without a length is not reusable
    no_length = {**records[3], "upstream_content_length": "-"}
    log.write_text(json.dumps(no_length) + "\n")
    assert not nginxlog.keepalive_reuse_possible(nginxlog.read_access_log(log))


@pytest.mark.parametrize("state,server,name,phase", [
    ("SC--", "s1", "upstream_refused", "connecting"),
    ("SC--", "<NOSRV>", "no_live_upstreams", "connecting"),
    ("SH--", "s0", "upstream_closed", "reading"),
    ("SD--", "s0", "upstream_closed", "reading"),
    ("sC--", "s0", "upstream_timeout", "connecting"),
    ("sH--", "s0", "upstream_timeout", "reading"),
    ("KH--", "s0", "upstream_closed", "reading"),
    ("KC--", "s0", "upstream_closed", "connecting"),
    ("DH--", "s0", "upstream_closed", "reading"),
    ("PH--", "s0", "other", "reading"),
    ("CH--", "s0", "other", "reading"),
    ("----", "s0", "other", ""),
    ("", "", "other", ""),
])
def test_termination_state_mapping(state: str, server: str, name: str, phase: str) -> None:
    reason = nginxlog.termination_reason(state, server)
    assert (reason.name, reason.phase) == (name, phase)
    assert state in reason.text


def test_killed_requests_say_so() -> None:
    assert "shutdown sessions" in nginxlog.termination_reason("KH--", "s0").text


@given(st.text(max_size=6), st.text(max_size=10))
@settings(max_examples=500, deadline=None)
def test_termination_reason_property(state: str, server: str) -> None:
    reason = nginxlog.termination_reason(state, server)
    assert reason.name in nginxlog.REASON_NAMES
    assert reason.phase in ("", "connecting", "sending", "reading")


RECORD = st.fixed_dictionaries({
    "t": st.floats(0, 2e9),
    "status": st.one_of(st.sampled_from([200, 404, 500, 502, 503, 504, -1]), st.integers()),
    "conn": st.integers(0, 50),
    "termination": st.text(max_size=5),
    "server": st.sampled_from(["s0", "s1", "<NOSRV>", ""]),
})


@given(st.lists(RECORD, max_size=30))
@settings(max_examples=300, deadline=None)
def test_haproxy_reasons_pair_one_reason_with_each_failure(records: list[dict[str, object]]) -> None:
    """Every failure ``failures`` finds has exactly one reason queued on its connection, in log order."""
    reasons = nginxlog.haproxy_reasons(records)
    fails = nginxlog.failures(records)
    assert sum(len(q) for q in reasons.values()) == len(fails)
    for f in fails:
        assert reasons[f.conn].popleft().name in nginxlog.REASON_NAMES
    assert all(not q for q in reasons.values())


@pytest.mark.skipif(not os.access(HAPROXY, os.X_OK), reason="haproxy is not installed")
def test_haproxy_accepts_the_rendered_config(tmp_path: Path) -> None:
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(render(tmp_path, ["127.0.0.1:8001", "localhost:8002", "unix:/tmp/x.sock"]))
    out = subprocess.run([HAPROXY, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING" not in out.stdout + out.stderr


@pytest.mark.parametrize("state,status,read", [
    ("CH--", 400, 460),  # closed while waiting for the response (option abortonclose): the ALB's 460
    ("CR--", -1, 460),
    ("CQ--", 400, 460),
    ("CD--", 200, 200),  # the response had started: the client saw its status
    ("PR--", 400, 400),  # a bad or too large request: HAProxy's own 400
    ("cR--", 408, 408),
    ("----", 400, 400),  # the target's 400
])
def test_a_client_closing_first_reads_as_460(tmp_path: Path, state: str, status: int, read: int) -> None:
    log = tmp_path / nginxlog.ACCESS_LOG
    rec = {"t": 1.0, "status": status, "conn": 1, "termination": state, "server": "s0", "lb": "haproxy"}
    log.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "lb": None, "conn": 2}) + "\n")
    first, nginx = nginxlog.read_access_log(log)
    assert first["status"] == read and first.get("haproxy_status") == (status if read == 460 else None)
    assert nginx["status"] == status  # only HAProxy's records are read so


def test_the_client_facing_tier_logs_only_what_never_became_a_request() -> None:
    front = section(render(), "frontend front")
    assert "log-format" in front and "option dontlognull" in front and "http-request set-log-level silent" in front
    assert "option abortonclose" in section(render(), "defaults alb")
    assert "tune.bufsize 66560" in render()
