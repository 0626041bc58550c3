import math
import os
import textwrap
from pathlib import Path

import pytest

from pytest_wsgi502.config.matrix import SEED_MATRIX, Cell, expand, load_matrix, select
from pytest_wsgi502.config.values import ConfigError

SEED_CELLS = ["uwsgi-2w", "uwsgi-8w", "uwsgi-16w", "uwsgi-delta", "uwsgi-sqlalchemy-pool", "uwsgi-gevent-pymysql",
              "gunicorn-sync", "gunicorn-gthread", "gunicorn-gevent"]


def test_seed_matrix_has_the_story_cells_in_order():
    cells = load_matrix()
    assert [c.name for c in cells] == SEED_CELLS
    by = {c.name: c for c in cells}
    assert by["uwsgi-2w"].workers == 2 and by["uwsgi-2w"].max_requests > 0 and by["uwsgi-2w"].driver == "mysqlclient"
    assert by["uwsgi-16w"].workers == 16 and by["uwsgi-16w"].server == "uwsgi"
    assert by["uwsgi-delta"].max_requests_delta > 0
    assert by["uwsgi-sqlalchemy-pool"].pool == "sqlalchemy"
    gevent = by["uwsgi-gevent-pymysql"]
    assert (gevent.effective_worker_class, gevent.driver) == ("gevent", "pymysql")
    assert by["gunicorn-sync"].effective_worker_class == "sync"
    assert by["gunicorn-gthread"].threads == 4
    # a description is not inherited through extends
    assert by["uwsgi-8w"].description != by["uwsgi-2w"].description


def test_extends_merges_options_key_by_key():
    cells = expand({
        "cells": {
            "a": {"server": "uwsgi", "options": {"harakiri": 30, "listen": 64}, "env": {"X": "1"}},
            "b": {"extends": "a", "options": {"listen": 128}, "workers": 4},
        }
    })
    b = cells[1]
    assert dict(b.options) == {"harakiri": 30, "listen": 128}
    assert dict(b.env) == {"X": "1"}
    assert b.workers == 4 and b.server == "uwsgi"


def test_defaults_apply_and_cells_override():
    cells = expand({"defaults": {"max_requests": 7}, "cells": {"a": {"server": "gunicorn"},
                                                              "b": {"server": "gunicorn", "max_requests": 0}}})
    assert [c.max_requests for c in cells] == [7, 0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cells": {"a": {"server": "uwsgi", "wokers": 2}}}, "unknown key(s) wokers"),
        ({"cells": {"a": {"server": "apache"}}}, "server 'apache' unknown"),
        ({"cells": {"a": {"workers": 2}}}, "missing 'server'"),
        ({"cells": {"a": {"server": "uwsgi", "workers": "2"}}}, "workers must be an integer"),
        ({"cells": {"a": {"server": "uwsgi", "workers": 0}}}, "workers must be >= 1"),
        ({"cells": {"a": {"server": "uwsgi", "worker_class": "gthread"}}}, "not a uwsgi worker"),
        ({"cells": {"a": {"server": "gunicorn", "max_requests_delta": 5}}}, "max_requests_delta is a uwsgi setting"),
        ({"cells": {"a": {"server": "uwsgi", "driver": "psycopg"}}}, "driver 'psycopg' unknown"),
        ({"cells": {"a": {"server": "uwsgi", "socket": "udp"}}}, "socket 'udp' unknown"),
        ({"cells": {"a": {"server": "uwsgi", "duration": "long"}}}, "duration: not a duration"),
        ({"cells": {"a": {"server": "gunicorn", "server_version": "23.0.0"}}}, "server_version is for uwsgi cells"),
        ({"cells": {"a": {"server": "uwsgi", "server_version": "latest"}}}, "server_version must be a release"),
        ({"cells": {"a": {"server": "uwsgi", "server_version": "2.0.24; rm"}}}, "server_version must be a release"),
        ({"cells": {"a": {"server": "uwsgi", "slo": ["p99<<3"]}}}, "bad SLO"),
        ({"cells": {"a": {"server": "uwsgi", "extends": "zz"}}}, "extends unknown cell 'zz'"),
        ({"cells": {"a": {"server": "uwsgi", "extends": "b"}, "b": {"server": "uwsgi", "extends": "a"}}}, "cycle"),
        ({"cells": {"A B": {"server": "uwsgi"}}}, "names use"),
        ({"cell": {}}, "unknown top-level key"),
        ({"cells": {}}, "no cells defined"),
        ({"defaults": {"extends": "a"}, "cells": {"a": {"server": "uwsgi"}}}, "unknown key(s) extends"),
        # issue 12 item 4: wrong types crashed with INTERNALERROR
        ({"cells": {"a": {"server": "uwsgi", "slo": [5]}}}, "bad SLO 5: each SLO is text"),
        ({"cells": {"a": {"server": "uwsgi", "slo": 5}}}, "slo must be a string or a list of strings"),
        ({"defaults": 5, "cells": {"a": {"server": "uwsgi"}}}, "[defaults] must be a table, got 5"),
        ({"defaults": [1], "cells": {"a": {"server": "uwsgi"}}}, "[defaults] must be a table"),
        ({"cells": {"a": {"server": "uwsgi", "extends": ["b"]}, "b": {"server": "uwsgi"}}},
         "extends unknown cell ['b']; known: a, b"),
        ({"defaults": {"options": 5}, "cells": {"a": {"server": "uwsgi", "options": {"x": 1}}}},
         "[defaults]: options must be a table of server settings, got 5"),
        ({"defaults": {"env": ["X"]}, "cells": {"a": {"server": "uwsgi", "env": {"X": "1"}}}}, "env must be a table"),
        ({"cells": {"a": {"server": "uwsgi", "wo\nrkers": 2}}}, "unknown key(s) 'wo\\nrkers'"),
        ({"cells": {"a\nb": {"server": "uwsgi"}}}, "cell 'a\\nb': names use"),
        ({"cells": {"a\n": {"server": "uwsgi"}}}, "names use"),  # re.match with $ accepted a trailing newline
        ({"cells": {"a": {"server": "uwsgi", "server_version": "2.0.24\n"}}}, "server_version must be a release"),
        ({"cells": {"a": 5}}, "cells.a must be a table, got 5"),
        ({"c\nells": {}}, "unknown top-level key(s) 'c\\nells'"),
        ({"cells": {"a": {"server": ["uwsgi"]}}}, "server must be a string, got ['uwsgi']"),
        ({"cells": {"a": {"server": "uwsgi", "workers": None}}}, "workers must be set to a value"),
        # issue 12 item 5: non-finite and absurd numbers
        ({"cells": {"a": {"server": "uwsgi", "rate": math.nan}}}, "rate must be a finite number, got nan"),
        ({"cells": {"a": {"server": "uwsgi", "rate": math.inf}}}, "rate must be a finite number, got inf"),
        ({"cells": {"a": {"server": "uwsgi", "rate": 0}}}, "rate must be > 0"),
        ({"cells": {"a": {"server": "uwsgi", "rate": 2e6}}}, "rate must be > 0 and <= 1000000"),
        ({"cells": {"a": {"server": "uwsgi", "start_rate": math.nan}}}, "start_rate must be a finite number"),
        ({"cells": {"a": {"server": "uwsgi", "duration": math.nan}}}, "duration must be a finite number"),
        ({"cells": {"a": {"server": "uwsgi", "duration": math.inf}}}, "duration must be a finite number"),
        ({"cells": {"a": {"server": "uwsgi", "duration": 0}}}, "duration must be >= 0.001 and <= 86400"),
        ({"cells": {"a": {"server": "uwsgi", "duration": 86_401}}}, "duration must be >= 0.001 and <= 86400"),
        ({"cells": {"a": {"server": "uwsgi", "think_time": math.nan}}}, "think_time must be a finite number"),
        ({"cells": {"a": {"server": "uwsgi", "think_time": -1}}}, "think_time must be >= 0"),
        ({"cells": {"a": {"server": "uwsgi", "cpus": math.nan}}}, "cpus must be a finite number"),
        ({"cells": {"a": {"server": "uwsgi", "cpus": math.inf}}}, "cpus must be a finite number"),
        ({"cells": {"a": {"server": "uwsgi", "concurrency": 100_001}}}, "concurrency must be >= 1 and <= 100000"),
        ({"cells": {"a": {"server": "uwsgi", "concurrency": 0}}}, "concurrency must be >= 1"),
        ({"cells": {"a": {"server": "uwsgi", "workers": 10**20}}}, "workers must be >= 1 and <= 100000"),
        ({"cells": {"a": {"server": "uwsgi", "max_requests": 10**13}}}, "max_requests must be >= 0 and <= 10000"),
        ({"cells": {"a": {"server": "uwsgi", "n_max": 0}}}, "n_max must be >= 1"),
        ({"cells": {"a": {"server": "uwsgi", "mem_limit": "99999999999g"}}}, "mem_limit must look like"),
        ({"cells": {"a": {"server": "uwsgi", "mix": [{"path": "/a", "weight": math.nan}]}}},
         "mix[0].weight must be a finite number"),
        ({"cells": {"a": {"server": "uwsgi", "mix": [{"path": "/a", "weight": math.inf}]}}},
         "mix[0].weight must be a finite number"),
        ({"cells": {"a": {"server": "uwsgi", "mix": [{"path": "/a", "weight": 0}]}}}, "mix[0].weight must be > 0"),
        ({"cells": {"a": {"server": "uwsgi", "slo": ["p99<1e999"]}}}, "p99 limits go up to"),
        ({"cells": {"a": {"server": "uwsgi", "slo": ["kills==0.5"]}}}, "kills is a count"),
        ({"cells": {"a": {"server": "uwsgi", "slo": ["p99<1", "p99<2"]}}}, "p99 given twice"),
        # paths, methods, options and env that reach a request line or a config file
        ({"cells": {"a": {"server": "uwsgi", "path": "//192.0.2.10:8080/api"}}}, "path must not start with '//'"),
        ({"cells": {"a": {"server": "uwsgi", "path": "http://198.51.100.7/x"}}}, "path must start with '/'"),
        ({"cells": {"a": {"server": "uwsgi", "path": "/a\r\nHost: x"}}}, "path must be printable ASCII"),
        ({"cells": {"a": {"server": "uwsgi", "mix": [{"path": "//h/x"}]}}}, "mix[0].path must not start with '//'"),
        ({"cells": {"a": {"server": "uwsgi", "mix": [{"path": "/x", "method": "GET /evil"}]}}},
         "mix[0].method must be an HTTP method token"),
        ({"cells": {"a": {"server": "uwsgi", "mix": [{"path": "/x", "method": 5}]}}}, "method must be an HTTP"),
        ({"cells": {"a": {"server": "uwsgi", "mix": [{"path": "/x", "verify_contains": 5}]}}},
         "verify_contains must be a string"),
        ({"cells": {"a": {"server": "uwsgi", "options": {"harakiri": "30\nexec-pre-app = id"}}}},
         "options.harakiri must be one line"),
        ({"cells": {"a": {"server": "uwsgi", "options": {"exec-pre-app = id\nx": 1}}}},
         "options key 'exec-pre-app = id\\nx' must be letters"),
        ({"cells": {"a": {"server": "gunicorn", "options": {"timeout": math.nan}}}},
         "options.timeout must be a finite number"),
        ({"cells": {"a": {"server": "uwsgi", "options": {"x": {"y": 1}}}}}, "options.x must be a string, number"),
        ({"cells": {"a": {"server": "uwsgi", "options": {"x": [[1]]}}}}, "options.x must be a string, number"),
        ({"cells": {"a": {"server": "uwsgi", "env": {"A=B": "1"}}}}, "env name 'A=B' must be letters"),
        ({"cells": {"a": {"server": "uwsgi", "env": {"1A": "1"}}}}, "env name '1A'"),
        ({"cells": {"a": {"server": "uwsgi", "env": {"A": "x\ny"}}}}, "env.A must be one line"),
        ({"cells": {"a": {"server": "uwsgi", "env": {"A": [1]}}}}, "env.A must be a string or a number"),
        ({"cells": {"a": {"server": "uwsgi", "env": {"A": math.nan}}}}, "env.A must be a finite number"),
    ],
)
def test_bad_matrix_is_one_config_error(data, message):
    with pytest.raises(ConfigError) as info:
        expand(data, "m.toml")
    text = str(info.value)
    assert message in text and "\n" not in text


def test_load_matrix_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="matrix file not found"):
        load_matrix(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[cells.a\nserver=")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_matrix(bad)


def _one_line_error(path, message):
    with pytest.raises(ConfigError) as info:
        load_matrix(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unreadable_matrix_files_are_one_line(tmp_path):
    """Issue 12 item 4: each of these was an INTERNALERROR (UnicodeDecodeError, IsADirectoryError, ValueError)."""
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(b'[cells.a]\nserver = "uwsgi"\ndescription = "caf\xe9"\n')
    _one_line_error(latin, "not UTF-8 text")
    _one_line_error(tmp_path, "is a directory")
    _one_line_error(tmp_path / "m\x00.toml", "matrix file")
    odd = tmp_path / "new\nline.toml"
    odd.write_text('[cells.a]\nserver = "uwsgi"\nworkerz = 1\n')
    _one_line_error(odd, "new\\nline.toml")  # the name echoed with its newline escaped
    toml_keys = tmp_path / "keys.toml"
    toml_keys.write_text('[cells.a]\nserver = "uwsgi"\n"wor\\nkers" = 2\n')
    _one_line_error(toml_keys, "unknown key(s) 'wor\\nkers'")


def test_unreadable_matrix_file_is_one_line(tmp_path):
    """A mode-000 file as a user who cannot read it. Root reads anything, so as root the check runs in a child
    process as nobody (setpriv); it skips only where that child cannot import the package."""
    import shutil
    import subprocess
    import sys

    f = tmp_path / "m.toml"
    f.write_text('[cells.a]\nserver = "uwsgi"\n')
    f.chmod(0)
    if os.geteuid() != 0:
        _one_line_error(f, "cannot read it (Permission denied)")
        return
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot become a user who is refused the file")
    tmp_path.chmod(0o755)
    code = ("from pytest_wsgi502.config.matrix import load_matrix\nfrom pytest_wsgi502.config.values import "
            f"ConfigError\ntry:\n    load_matrix({str(f)!r})\nexcept ConfigError as e:\n    print('ERROR', e)")
    import pytest_wsgi502

    root = str(Path(str(pytest_wsgi502.__file__)).resolve().parent.parent)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c"]
    probe = subprocess.run([*nobody, "import pytest_wsgi502.config.matrix"], capture_output=True, text=True,
                           env={"PYTHONPATH": root}, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"nobody cannot import the package here: {probe.stderr.strip().splitlines()[-1:]}")
    r = subprocess.run([*nobody, code], capture_output=True, text=True, env={"PYTHONPATH": root}, timeout=60)
    assert r.stdout.strip().splitlines() == [f"ERROR matrix file {f}: cannot read it (Permission denied)"], r.stderr


def test_good_values_pass_through(tmp_path):
    (cell,) = expand({"defaults": {"options": {"add-header": "Connection: close", "lazy-apps": True}},
                      "cells": {"a": {"server": "uwsgi", "rate": 317, "start_rate": 0, "think_time": 0.05,
                                      "duration": 86_400, "cpus": 1.5, "options": {"harakiri": 30, "x": [1, "b"]},
                                      "env": {"N": 3, "F": 0.5, "S": "x y"}, "path": "/api/{n}?q=1",
                                      "mix": [{"path": "/a", "weight": 0.5, "method": "POST"}],
                                      "slo": "p99<1s,kills==0"}}})
    assert dict(cell.options) == {"add-header": "Connection: close", "lazy-apps": True, "harakiri": 30, "x": [1, "b"]}
    assert dict(cell.env) == {"N": "3", "F": "0.5", "S": "x y"}
    assert cell.slo == ("p99<1s", "kills==0") and cell.rate == 317


def test_user_matrix_file_roundtrip(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text(textwrap.dedent("""
        [cells.mine]
        server = "gunicorn"
        worker_class = "gthread"
        threads = 8
        slo = "p99<250ms"
        [cells.mine.options]
        timeout = 5
    """))
    (cell,) = load_matrix(f)
    assert isinstance(cell, Cell)
    assert (cell.name, cell.threads, cell.slo, dict(cell.options)) == ("mine", 8, ("p99<250ms",), {"timeout": 5})
    assert cell.as_dict()["options"] == {"timeout": 5}


def test_select_keeps_order_and_rejects_unknown():
    cells = load_matrix(SEED_MATRIX)
    assert [c.name for c in select(cells, "gunicorn-sync, uwsgi-2w")] == ["gunicorn-sync", "uwsgi-2w"]
    assert select(cells, None) == cells
    with pytest.raises(ConfigError, match=r"unknown cell.*nope.*known: uwsgi-2w"):
        select(cells, "uwsgi-2w,nope")
    with pytest.raises(ConfigError) as info:
        select(cells, "a\rb")
    assert "'a\\rb'" in str(info.value)


def test_every_builtin_matrix_still_loads():
    from pytest_wsgi502.config.matrix import BUILTIN

    for path in BUILTIN.values():
        assert load_matrix(path)


def test_matrix_and_slo_do_not_import_pytest():
    import subprocess
    import sys

    code = ("import sys, pytest_wsgi502.config.matrix as m, pytest_wsgi502.slo; m.load_matrix(); "
            "print([k for k in sys.modules if k == 'pytest' or k.startswith('_pytest')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unix_socket_cell_renders_a_socket_file_for_server_and_proxy(tmp_path):
    from pytest_wsgi502.servers import ServerSpec, make_server

    for server in ("uwsgi", "gunicorn"):
        (cell,) = expand({"cells": {"a": {"server": server, "socket": "unix", "duration": 25}}})
        srv = make_server(ServerSpec(cell, workdir=tmp_path, app="a:b", chdir=None, port=4321), binary="x")  # type: ignore[arg-type]
        sock = str(srv.unix_socket)
        assert sock == str(tmp_path / "sock" / "server.sock") and len(sock) < 100  # sun_path holds ~107 bytes
        assert srv.upstream == f"unix:{sock}"
        rendered = srv.settings()
        assert (rendered["http-socket"] == sock) if server == "uwsgi" else (rendered["bind"] == [f"unix:{sock}"])
        assert cell.duration == 25
    (tcp,) = expand({"cells": {"a": {"server": "uwsgi"}}})
    srv = make_server(ServerSpec(tcp, workdir=tmp_path, app="a:b", chdir=None, port=4321), binary="x")  # type: ignore[arg-type]
    assert srv.unix_socket is None and srv.upstream == srv.address == "127.0.0.1:4321"


def test_seed_unix_is_the_seed_story_over_a_unix_socket_at_the_production_rate():
    from pytest_wsgi502.config.matrix import BUILTIN

    cells = load_matrix(BUILTIN["seed-unix"])
    seed = {c.name: c for c in load_matrix()}
    assert [c.name for c in cells] == [*SEED_CELLS, "uwsgi-2w-listen2048"]
    assert cells[-1].listen == 2048
    for c in cells[:-1]:
        assert (c.socket, c.load_mode, c.rate) == ("unix", "open", 317)
        s = seed[c.name]
        assert (c.server, c.workers, c.effective_worker_class, c.driver, c.pool, c.max_requests,
                c.max_requests_delta) == (s.server, s.workers, s.effective_worker_class, s.driver, s.pool,
                                          s.max_requests, s.max_requests_delta)


def test_proxy_profile_is_a_cell_key_layered_over_the_session(monkeypatch, tmp_path):
    """A cell's own proxy_profile beats --wsgi-proxy-profile; "" (unset) keeps the session's; the proxy is built
    with it and the JSON's load.sources says which layer chose it."""
    from pytest_wsgi502 import cellrun

    with pytest.raises(ConfigError, match=r"proxy_profile 'elb' unknown; choose one of alb, nginx \(or leave"):
        expand({"cells": {"a": {"server": "uwsgi", "proxy_profile": "elb"}}})
    cells = {c.name: c for c in expand({"cells": {"own": {"server": "uwsgi", "proxy_profile": "nginx"},
                                                  "inherits": {"server": "uwsgi"}}})}
    assert cells["inherits"].proxy_profile is None and cells["own"].origin["proxy_profile"] == "cell"

    made = []

    class Proxy:
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("profile"))

    class Server:
        upstream = "127.0.0.1:1"

    monkeypatch.setattr(cellrun, "LocalProxy", Proxy)
    ctx = cellrun.CellContext(run_dir=tmp_path, ledger=tmp_path / "l", app="a:b", chdir=tmp_path, server_binaries={},
                              nginx="nginx", db_env={}, duration=5.0, max_requests=10, concurrency=2, timeout=65.0,
                              idle_timeout=60.0, proxy_profile="alb", sources={"proxy_profile": "option"},
                              server_factory=lambda *a, **k: Server())
    for name, want, layer in (("own", "nginx", "cell"), ("inherits", "alb", "option")):
        target = cellrun.Target(cells[name], ctx, {})
        assert (made[-1], target.proxy_profile) == (want, want)
        assert cellrun.load_sources(cells[name], ctx)["proxy_profile"] == layer


def test_the_lint_sees_the_sessions_proxy_profile(monkeypatch, tmp_path):
    """--wsgi-proxy-profile=nginx reaches lint (nginx-passive-health), not only the proxy; a cell's own alb wins."""
    from pytest_wsgi502 import cellrun

    class Server:
        upstream, binary = "127.0.0.1:1", "gunicorn"

        def settings(self):
            return {}

    monkeypatch.setattr(cellrun, "LocalProxy", lambda *a, **k: None)
    ctx = cellrun.CellContext(run_dir=tmp_path, ledger=tmp_path / "l", app="a:b", chdir=tmp_path, server_binaries={},
                              nginx="nginx", db_env={}, duration=5.0, max_requests=10, concurrency=2, timeout=65.0,
                              idle_timeout=60.0, proxy_profile="nginx", sources={"proxy_profile": "option"},
                              server_factory=lambda *a, **k: Server())
    cells = {c.name: c for c in expand({"cells": {"inherits": {"server": "gunicorn"},
                                                  "own": {"server": "gunicorn", "proxy_profile": "alb"}}})}
    codes = {name: {f["code"] for f in cellrun.Target(c, ctx, {}).lint()} for name, c in cells.items()}
    assert "nginx-passive-health" in codes["inherits"] and "nginx-passive-health" not in codes["own"]
