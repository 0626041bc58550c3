"""Renderers validate or quote what they write (issue 12, "config injection").

Each server/proxy config is rendered from a cell, a run directory and the session's options; a value must come
back from the file exactly as it went in, or be refused with one ``ConfigError`` line naming the cell and key.
The checks run against the real programs where that is quick: ``uwsgi --ini F --get KEY`` (reads the ini,
applies uWSGI's expansions, prints the value, exits; binds nothing), ``gunicorn --print-config`` and
``nginx -t``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.proxy import ProxyConfig, render_nginx
from pytest_wsgi502.servers import ServerSpec, binary_for, make_server
from pytest_wsgi502.servers.base import SUN_PATH_MAX

FIXTURE = HealthCheck.function_scoped_fixture  # tmp_path is only read: one directory for every example is fine
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
NGINX = "/usr/sbin/nginx"


def server(tmp: Path, kind: str, options: dict[str, Any] | None = None, *, app: str = "a:b",
           chdir: Path | None = None, name: str = "c", **cell: Any) -> Any:
    """A server object for a Cell built directly (not through the matrix parser: the renderer must hold alone)."""
    c = Cell(name=name, server=kind, options=dict(options or {}), **cell)
    return make_server(ServerSpec(c, tmp / "cell", app, chdir or tmp / "project", port=18001, stats_port=18002),
                       binary="x")


def one_line_error(exc: pytest.ExceptionInfo[ConfigError], *words: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and all(w in text for w in words), text


# --- uWSGI ------------------------------------------------------------------------------------------------------

def uwsgi_reads(text: str) -> list[tuple[str, str]]:
    """(key, value) pairs of the [uwsgi] section as uWSGI 2.0 reads them: the magic pass over the whole file
    (core/utils.c magic_sub: '%%' -> '%', '%(' kept, '%X' -> a magic value, here '<X>'), then lines split on
    '\\n' and stripped of ' ', '\\t', '\\r' (core/ini.c)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "%" and i + 1 < len(text):
            out.append({"%": "%", "(": "%("}.get(text[i + 1], f"<{text[i + 1]}>"))
            i += 2
        else:
            out.append(text[i])
            i += 1
    pairs, section = [], ""
    for line in "".join(out).split("\n"):
        line = line.strip(" \t\r")
        if not line or line[0] in ";#":
            continue
        if line[0] == "[":
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        if section == "uwsgi":
            pairs.append((key.strip(" \t\r"), value.strip(" \t\r")))
    return pairs


def as_ini(value: Any) -> str:
    if type(value) is bool:
        return "true" if value else "false"
    return repr(value) if type(value) is float else str(value)


@pytest.mark.parametrize(("options", "key"), [
    ({"env": "A=1\nexec-pre-app = touch /tmp/wsgi502-injected"}, "env"),  # the reproducer: a real uWSGI ran it
    ({"env": "A=1\rB"}, "env"),
    ({"env": "A=1\x00"}, "env"),
    ({"env": ["ok", "A=\n[other]"]}, "env"),
    ({"procname": "x\x85y"}, "procname"),  # not a line break for uWSGI, but not text either
    ({"env": "A=@(exec://touch /tmp/wsgi502-injected)"}, "env"),
    ({"env": "A=$(HOME)"}, "env"),
    ({"env": "A=%(strict)"}, "env"),
    ({"env": "A=%%(strict)"}, "env"),  # '%%' is read as '%' first: still an expansion
    ({"env": " padded"}, "env"),
    ({"harakiri": math.nan}, "harakiri"),
    ({"harakiri": math.inf}, "harakiri"),
    ({"harakiri": None}, "harakiri"),
    ({"harakiri": {"a": 1}}, "harakiri"),
    ({"harakiri": 10**30}, "harakiri"),
    ({"exec-pre-app = touch /tmp/x\nenv": "A"}, "exec-pre-app"),
    ({"a=b": 1}, "a=b"),
    ({"": 1}, "''"),
])
def test_uwsgi_refuses_what_it_cannot_write_literally(tmp_path: Path, options: dict[str, Any], key: str) -> None:
    srv = server(tmp_path, "uwsgi", options, name="inj")
    for call in (srv.settings, srv.render):  # lint reads settings(), start writes render(): both refuse
        with pytest.raises(ConfigError) as exc:
            call()
        one_line_error(exc, "inj", key)


@pytest.mark.parametrize("kind", ["uwsgi", "gunicorn"])
def test_newline_in_app_or_chdir_adds_no_line(tmp_path: Path, kind: str) -> None:
    with pytest.raises(ConfigError) as exc:
        server(tmp_path, kind, app="a:b\nexec-pre-app = touch /tmp/wsgi502-injected").render()
    one_line_error(exc, "app")
    if kind == "uwsgi":  # gunicorn writes chdir as a Python string literal: a newline stays inside it
        with pytest.raises(ConfigError) as exc:
            server(tmp_path, kind, chdir=tmp_path / "p\nexec-asap = touch /tmp/wsgi502-injected").render()
        one_line_error(exc, "chdir")
        with pytest.raises(ConfigError) as exc:
            server(tmp_path, kind, chdir=tmp_path / "$(HOME)").render()
        one_line_error(exc, "chdir")


@pytest.mark.parametrize("kind", ["uwsgi", "gunicorn"])
def test_a_cell_name_with_a_newline_stays_in_its_comment(tmp_path: Path, kind: str) -> None:
    text = server(tmp_path, kind, name="c\nexec-asap = touch /tmp/x\nimport os").render()
    assert "\nexec-asap" not in text and "\nimport os\n" not in text
    assert text.splitlines()[0].startswith(("; rendered", "# rendered"))


TRICKY = ["100%", "%n", "%d", "%%", "a%", "%", "x = y", "a;b #c", "$HOME", "@home", "ünï©ødé", "(%)", "$ (x)"]


def test_real_uwsgi_reads_back_each_value_literally(tmp_path: Path) -> None:
    """uWSGI's magic ('%n' is the file name, '%d' its directory, a trailing '%' eats the newline) is escaped:
    ``uwsgi --get`` prints each value exactly as the cell set it."""
    uwsgi = binary_for("uwsgi")
    assert uwsgi, "uwsgi is not installed: bash bin/dev setup"
    for i, value in enumerate(TRICKY):
        srv = server(tmp_path / str(i), "uwsgi", {"procname-append": value, "env": f"WSGI502_T={value}"})
        srv.spec.workdir.mkdir(parents=True)
        srv.config_path.write_text(srv.render(), encoding="utf-8")
        out = subprocess.run([uwsgi, "--ini", str(srv.config_path), "--get", "procname-append", "--get", "env"],
                             capture_output=True, timeout=30, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode().split("\n")[:2] == [value, f"WSGI502_T={value}"], (value, out)


def test_real_uwsgi_runs_no_command_from_a_refused_or_escaped_value(tmp_path: Path) -> None:
    """The reproducer: an ``@(exec://...)`` in a value ran a command as soon as uWSGI read the ini (even with
    ``--get``). It is refused; the nearest accepted spellings are inert."""
    uwsgi = binary_for("uwsgi")
    assert uwsgi, "uwsgi is not installed: bash bin/dev setup"
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError):
        server(tmp_path, "uwsgi", {"env": f"A=@(exec://touch {marker})"}).render()
    inert = [f"A=@ (exec://touch {marker})", f"A=%@(exec://touch {marker})"[:-1], f"A=@exec://touch {marker}"]
    for i, value in enumerate(inert):
        try:
            srv = server(tmp_path / str(i), "uwsgi", {"env": value})
            text = srv.render()
        except ConfigError:
            continue
        srv.spec.workdir.mkdir(parents=True)
        srv.config_path.write_text(text, encoding="utf-8")
        out = subprocess.run([uwsgi, "--ini", str(srv.config_path), "--get", "env"], capture_output=True, timeout=30)
        assert out.stdout.decode().split("\n")[0] == value
    assert not marker.exists()


def test_old_style_ini_would_have_run_the_command(tmp_path: Path) -> None:
    """Guard for the test above: the same uWSGI does run ``@(exec://...)`` from an ini it reads, so a value
    that got through unescaped would be caught by the marker check."""
    uwsgi = binary_for("uwsgi")
    assert uwsgi, "uwsgi is not installed: bash bin/dev setup"
    marker = tmp_path / "pwned"
    ini = tmp_path / "raw.ini"
    ini.write_text(f"[uwsgi]\nenv = A=@(exec://touch {marker})\n")
    subprocess.run([uwsgi, "--ini", str(ini), "--get", "env"], capture_output=True, timeout=30)
    assert marker.exists()


uwsgi_scalars = st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(), st.none())
uwsgi_values = st.one_of(uwsgi_scalars, st.lists(uwsgi_scalars, max_size=3))
uwsgi_keys = st.one_of(st.sampled_from(["env", "procname", "harakiri", "add-header", "max_requests"]),
                       st.text(max_size=12))


@settings(derandomize=True, max_examples=600, deadline=None, suppress_health_check=[FIXTURE])
@given(options=st.dictionaries(uwsgi_keys, uwsgi_values, max_size=4))
def test_uwsgi_ini_is_one_line_per_value_or_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    srv = server(tmp_path, "uwsgi", options)
    try:
        text = srv.render()
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    expected = [(k, as_ini(v)) for k, value in srv.settings().items()
                for v in (value if type(value) is list else [value])]
    assert uwsgi_reads(text) == expected
    for _, value in uwsgi_reads(text):
        assert "$(" not in value and "@(" not in value and "%(" not in value
    for key, value in options.items():
        for v in value if type(value) is list else [value]:
            assert type(v) is not float or math.isfinite(v)
            if type(v) is str:
                assert (key, v) in expected


# --- gunicorn ---------------------------------------------------------------------------------------------------

class Sneaky(str):
    def __repr__(self) -> str:
        return "__import__('os').system('true')"


@pytest.mark.parametrize(("options", "key"), [
    ({"timeout": math.nan}, "timeout"),  # rendered 'timeout = nan' before: a NameError when gunicorn loads it
    ({"timeout": -math.inf}, "timeout"),
    ({"bogus_setting": 1}, "bogus_setting"),  # gunicorn ignores unknown names in a config file silently
    ({"max-requests": 5}, "max-requests"),  # a uWSGI spelling: not an identifier
    ({"import os\nx": 1}, "import os"),
    ({"post_fork": "x"}, "post_fork"),  # the telemetry hooks: a string would be silently replaced
    ({"raw_env": [{"A": 1}]}, "raw_env"),
    ({"raw_env": [["A=1"]]}, "raw_env"),
    ({"proc_name": Sneaky("x")}, "proc_name"),
    ({"timeout": 10**40}, "timeout"),
])
def test_gunicorn_refuses_values_that_are_not_plain_literals(tmp_path: Path, options: dict[str, Any],
                                                             key: str) -> None:
    srv = server(tmp_path, "gunicorn", options, name="gc")
    for call in (srv.settings, srv.render):
        with pytest.raises(ConfigError) as exc:
            call()
        one_line_error(exc, "gc", key.splitlines()[0])


def test_gunicorn_unknown_key_is_refused_on_the_wsgi_server_path(tmp_path: Path) -> None:
    """``wsgi_server({...})`` and a hand-built Cell skip preflight: the renderer is where every path meets."""
    cell = Cell(name="direct", server="gunicorn", options={"worker_timeout": 5})
    srv = make_server(ServerSpec(cell, tmp_path, "a:b", tmp_path, port=1, stats_port=2), binary="x")
    with pytest.raises(ConfigError) as exc:
        srv.render()
    one_line_error(exc, "direct", "worker_timeout", "unknown gunicorn setting")


def gunicorn_namespace(text: str) -> dict[str, Any]:
    ns: dict[str, Any] = {}
    exec(compile(text, "gunicorn.conf.py", "exec"), ns)  # the file gunicorn itself would exec
    return ns


def test_real_gunicorn_loads_the_rendered_config(tmp_path: Path) -> None:
    srv = server(tmp_path, "gunicorn", {"timeout": 31, "proc_name": "it's \"quoted\"\n", "raw_env": ["A=1", "B=%n"]})
    srv.spec.workdir.mkdir(parents=True)
    srv.spec.chdir.mkdir()
    (srv.spec.chdir / "a.py").write_text("def b(environ, start_response):\n    return []\n")
    srv.config_path.write_text(srv.render(), encoding="utf-8")
    out = subprocess.run([str(VENV_BIN / "gunicorn"), "--config", str(srv.config_path), "--print-config"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    printed = {line.split("=", 1)[0].strip(): line.split("=", 1)[1].strip() for line in out.stdout.splitlines()
               if "=" in line}
    assert printed["timeout"] == "31" and printed["raw_env"] == "['A=1', 'B=%n']"


def test_the_events_path_is_a_render_parameter(tmp_path: Path) -> None:
    """The container renders its own events path (the mount point) instead of patching the host's text: the
    renderer is a pure function of (cell, app, placement)."""
    from pytest_wsgi502.servers.gunicorn import render_config, render_for
    from pytest_wsgi502.servers.in_container import container_placement

    assert "_WSGI502_EVENTS = '/x/e.jsonl'" in render_config("c", {"workers": 2}, "/x/e.jsonl")
    cell = server(tmp_path, "gunicorn").spec.cell
    ns = gunicorn_namespace(render_for(cell, "a:b", container_placement("gunicorn", "")))
    assert ns["_WSGI502_EVENTS"] == "/wsgi502/cell/gunicorn-events.jsonl" and ns["chdir"] == "/app"


gunicorn_scalars = st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(), st.none())
gunicorn_values = st.one_of(gunicorn_scalars, st.lists(gunicorn_scalars, max_size=3), st.tuples(gunicorn_scalars),
                            st.dictionaries(st.text(max_size=3), st.integers(), max_size=1))
gunicorn_keys = st.one_of(st.sampled_from(["timeout", "proc_name", "raw_env", "keepalive", "graceful_timeout",
                                           "post_fork", "umask"]), st.text(max_size=12))


@settings(derandomize=True, max_examples=600, deadline=None, suppress_health_check=[FIXTURE])
@given(options=st.dictionaries(gunicorn_keys, gunicorn_values, max_size=4))
def test_gunicorn_config_compiles_and_evaluates_back_or_is_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    srv = server(tmp_path, "gunicorn", options)
    try:
        text = srv.render()
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    ns = gunicorn_namespace(text)
    for key, value in srv.settings().items():
        assert type(ns[key]) is type(value) and ns[key] == value, key
        for v in value if type(value) in (list, tuple) else [value]:
            assert type(v) is not float or math.isfinite(v)


# --- nginx ------------------------------------------------------------------------------------------------------

def nginx_test(conf_dir: Path, upstream: str, idle: float = 60.0) -> subprocess.CompletedProcess[str]:
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (conf_dir / "nginx-temp" / kind).mkdir(parents=True, exist_ok=True)
    user = "root" if os.geteuid() == 0 else None
    conf = conf_dir / "nginx.conf"
    conf.write_text(render_nginx(ProxyConfig(18080, upstream, idle, user=user), conf_dir), encoding="utf-8")
    return subprocess.run([NGINX, "-t", "-p", str(conf_dir), "-c", str(conf), "-e", str(conf_dir / "proxy-error.log")],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed")
def test_nginx_takes_a_run_dir_with_a_space_and_a_semicolon(tmp_path: Path) -> None:
    """Unquoted, such a dir broke every cell and a ';' could inject a directive: now each path is one quoted
    argument and nginx opens the files at exactly those paths."""
    cell_dir = tmp_path / "r s;t {x} #y" / "c"
    cell_dir.mkdir(parents=True)
    out = nginx_test(cell_dir, upstream=f"unix:{cell_dir}/sock/server.sock")
    assert out.returncode == 0, out.stderr
    assert (cell_dir / "proxy-access.log").exists() and (cell_dir / "proxy-error.log").exists()


@pytest.mark.parametrize("part", ["cost$5", 'say "hi"', "back\\slash", "new\nline", "tab\tbed"])
def test_nginx_refuses_a_path_it_cannot_quote(tmp_path: Path, part: str) -> None:
    with pytest.raises(ConfigError) as exc:
        render_nginx(ProxyConfig(18080, "127.0.0.1:18001"), tmp_path / part)
    one_line_error(exc, "nginx")


@pytest.mark.parametrize(("idle", "rendered"), [(0.5, "1s"), (60.0, "60s"), (60.2, "61s"), (1, "1s")])
def test_nginx_idle_timeout_is_whole_seconds_rounded_up(tmp_path: Path, idle: float, rendered: str) -> None:
    text = render_nginx(ProxyConfig(18080, "127.0.0.1:18001", idle), tmp_path)
    assert f"proxy_read_timeout {rendered};" in text and f"keepalive_timeout {rendered};" in text
    assert " 0s;" not in text


@pytest.mark.parametrize("idle", [0, -1, math.nan, math.inf, 1e999, 86_401])
def test_nginx_idle_timeout_out_of_range_is_one_line(tmp_path: Path, idle: float) -> None:
    with pytest.raises(ConfigError) as exc:
        render_nginx(ProxyConfig(18080, "127.0.0.1:18001", idle), tmp_path)
    one_line_error(exc, "idle timeout")


# --- unix sockets -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["uwsgi", "gunicorn"])
def test_unix_socket_is_in_a_private_dir_of_the_cell(tmp_path: Path, kind: str) -> None:
    """Was /tmp/wsgi502-PORT.sock: a predictable name in a world-writable dir, the socket mode 0777."""
    srv = server(tmp_path, kind, socket="unix")
    sock = srv.unix_socket
    assert sock.parent == srv.spec.workdir / "sock"
    srv._prepare()
    mode = stat.S_IMODE(sock.parent.stat().st_mode)
    assert mode == 0o700 and sock.parent.stat().st_uid == os.geteuid()
    assert srv.upstream == f"unix:{sock}"
    rendered = srv.settings()
    assert (rendered["http-socket"] == str(sock)) if kind == "uwsgi" else (rendered["bind"] == [f"unix:{sock}"])
    srv.stop()


def test_unix_socket_of_a_deep_cell_dir_gets_a_fresh_private_temp_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    srv = server(deep, "uwsgi", socket="unix")
    sock = srv.unix_socket
    assert len(os.fsencode(str(sock))) <= SUN_PATH_MAX and not str(sock).startswith(str(deep))
    assert str(srv.spec.port) not in sock.parent.name  # not predictable from the port
    srv._prepare()
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    other = server(deep, "uwsgi", socket="unix")
    assert other.unix_socket != sock  # concurrent cells never share one
    srv.stop()
    assert not sock.parent.exists()  # removed at stop


def test_a_socket_path_uwsgi_cannot_bind_moves_to_a_short_dir(tmp_path: Path) -> None:
    """uWSGI refuses a unix socket name of 103 bytes or more ("invalid socket name", seen in the scenario runs at
    104 bytes), although the kernel takes 107: the cell's own dir is used only up to 102."""
    suffix = len("/cell/sock/server.sock")  # server() puts the cell's dir at <tmp>/cell
    for total, inside in ((102, True), (103, False)):
        base = tmp_path / ("w" * (total - suffix - len(str(tmp_path)) - 1))
        srv = server(base, "uwsgi", socket="unix")
        assert str(srv.unix_socket).startswith(str(base)) is inside, (total, srv.unix_socket)
        assert len(os.fsencode(str(srv.unix_socket))) <= 102


def test_a_planted_temp_socket_dir_is_refused(tmp_path: Path) -> None:
    from pytest_wsgi502.services.process import ServiceError

    srv = server(tmp_path / ("d" * 120), "gunicorn", socket="unix")
    planted = srv.unix_socket.parent
    planted.mkdir(mode=0o777)
    try:
        with pytest.raises(ServiceError, match="private directory"):
            srv._prepare()
        srv.stop()
        assert planted.exists()  # not ours: not removed either
    finally:
        planted.rmdir()


def test_settings_are_unchanged_by_the_checks(tmp_path: Path) -> None:
    """The checks return the settings as built: lint sees the same values the file holds."""
    srv = server(tmp_path, "uwsgi", {"add-header": ["Connection: close", "X-A: 100%"], "harakiri": 2.5})
    s = srv.settings()
    assert s["add-header"] == ["Connection: close", "X-A: 100%"] and s["harakiri"] == 2.5
    assert "add-header = X-A: 100%%" in srv.render()
    cell = dataclasses.replace(srv.spec.cell, options={"harakiri": 3})
    assert make_server(dataclasses.replace(srv.spec, cell=cell), "x").settings()["harakiri"] == 3


@pytest.mark.parametrize("server,key,value", [
    ("uwsgi", "http-socket", "0.0.0.0:8080"), ("uwsgi", "socket", ":3031"), ("uwsgi", "stats", "0.0.0.0:9191"),
    ("uwsgi", "https", "example.org:443,cert,key"), ("uwsgi", "http", "10.0.0.1:80"),
    ("gunicorn", "bind", ["127.0.0.1:8000", "0.0.0.0:8000"]), ("gunicorn", "bind", "[::]:8000"),
])
def test_options_cannot_make_a_server_listen_off_loopback(tmp_path: Path, server: Any, key: Any, value: Any) -> None:
    """Services bind loopback only: a cell's options may add a listener on 127.0.0.0/8, ::1 or a socket file."""
    cell = Cell("c", server, options={key: value})
    srv = make_server(ServerSpec(cell, tmp_path, "app:application", tmp_path, port=1, stats_port=2), server)
    with pytest.raises(ConfigError, match="would listen off this machine"):
        srv.settings()


@pytest.mark.parametrize("server,key,value", [
    ("uwsgi", "socket", "127.0.0.1:3031"), ("uwsgi", "shared-socket", "[::1]:3031"),
    ("uwsgi", "socket", "/tmp/x.sock"), ("gunicorn", "bind", ["localhost:8000", "unix:/tmp/g.sock"]),
])
def test_loopback_and_unix_listeners_are_fine(tmp_path: Path, server: Any, key: Any, value: Any) -> None:
    cell = Cell("c", server, options={key: value})
    srv = make_server(ServerSpec(cell, tmp_path, "app:application", tmp_path, port=1, stats_port=2), server)
    assert srv.settings()[key] == value
