import textwrap

import pytest

from pytest_wsgi502.config.matrix import SEED_MATRIX, Cell, expand, load_matrix, select

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
        ({"cells": {"a": {"server": "uwsgi", "duration": "long"}}}, "duration must be a number"),
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
    ],
)
def test_bad_matrix_is_one_usage_error(data, message):
    with pytest.raises(pytest.UsageError, match=None) as info:
        expand(data, "m.toml")
    text = str(info.value)
    assert message in text and "\n" not in text


def test_load_matrix_file_errors(tmp_path):
    with pytest.raises(pytest.UsageError, match="matrix file not found"):
        load_matrix(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[cells.a\nserver=")
    with pytest.raises(pytest.UsageError, match="invalid TOML"):
        load_matrix(bad)


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
    with pytest.raises(pytest.UsageError, match=r"unknown cell.*nope.*known: uwsgi-2w"):
        select(cells, "uwsgi-2w,nope")


def test_unix_socket_cell_renders_a_socket_file_for_server_and_proxy():
    from pytest_wsgi502.servers.base import ServerSpec, make_server

    for server in ("uwsgi", "gunicorn"):
        (cell,) = expand({"cells": {"a": {"server": server, "socket": "unix", "duration": 25}}})
        srv = make_server(ServerSpec(cell, workdir=None, app="a:b", chdir=None, port=4321), binary="x")  # type: ignore[arg-type]
        sock = str(srv.unix_socket)
        assert sock.endswith("wsgi502-4321.sock") and len(sock) < 100  # sun_path holds ~107 bytes
        assert srv.upstream == f"unix:{sock}"
        rendered = srv.settings()
        assert (rendered["http-socket"] == sock) if server == "uwsgi" else (rendered["bind"] == [f"unix:{sock}"])
        assert cell.duration == 25
    (tcp,) = expand({"cells": {"a": {"server": "uwsgi"}}})
    srv = make_server(ServerSpec(tcp, workdir=None, app="a:b", chdir=None, port=4321), binary="x")  # type: ignore[arg-type]
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
