"""The plugin as users meet it: options, header, collection, errors (pytester, no services started)."""

import pytest

MATRIX_TEST = """
def test_cell(wsgi_cell_run):
    wsgi_cell_run.assert_slo()
"""


@pytest.fixture
def project(pytester):
    pytester.makepyfile(test_cells=MATRIX_TEST)
    return pytester


def test_without_flag_cells_are_skipped_with_a_reason(project):
    result = project.runpytest("-rs")
    result.assert_outcomes(skipped=9)
    result.stdout.fnmatch_lines(["wsgi502: matrix off: 9 tests that start servers and load skipped (pass --wsgi-matrix "
                                 "to run them)", "*matrix cells run only with --wsgi-matrix*"])
    assert "wsgi502: matrix off (" not in result.stdout.str()  # no header line on a run without --wsgi-* options


def test_test_ids_are_cell_names_and_k_selects(project):
    result = project.runpytest("--collect-only", "-q", "-k", "uwsgi-2w or gunicorn-sync")
    result.stdout.fnmatch_lines(
        ["test_cells.py::test_cell[[]uwsgi-2w[]]", "test_cells.py::test_cell[[]gunicorn-sync[]]"]
    )
    assert "uwsgi-8w" not in result.stdout.str()


def test_header_shows_each_setting_and_its_source(project, monkeypatch):
    project.makeini("[pytest]\nwsgi_concurrency = 7\n")
    monkeypatch.setenv("WSGI502_REQUESTS", "900")
    result = project.runpytest("--wsgi-matrix", "--wsgi-duration=2s", "--collect-only",
                               "--wsgi-cells=gunicorn-sync")
    out = result.stdout.str()
    assert "duration=2s (option)" in out and "requests=900 (env)" in out and "concurrency=7 (ini)" in out
    assert "backend=local (default)" in out and "matrix_file=seed (default)" in out
    assert "wsgi502: cells: gunicorn-sync" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--wsgi-duration=soon"], "ERROR: --wsgi-duration='soon': not a duration*"),
        (["--wsgi-concurrency=0"], "ERROR: --wsgi-concurrency='0': the value must be >= 1 and <= 100000, got 0"),
        (["--wsgi-slo=p99 < fast"], "ERROR: --wsgi-slo='p99 < fast': bad SLO*"),
        (["--wsgi-backend=k8s"], "ERROR: --wsgi-backend='k8s': unknown backend*"),
        (["--wsgi-matrix", "--wsgi-cells=uwsgi-2w,nope"], "ERROR: --wsgi-cells: unknown cell(s) nope; known: *"),
        (["--wsgi-matrix", "--wsgi-matrix-file=missing.toml"], "ERROR: matrix file not found: *missing.toml"),
        (["--wsgi-matrix", "--wsgi-mysqld=/nonexistent/mariadbd"],
         "ERROR: --wsgi-mysqld=/nonexistent/mariadbd is not executable: *"),
        (["--wsgi-matrix", "--wsgi-nginx=/nonexistent/nginx"],
         "ERROR: --wsgi-nginx=/nonexistent/nginx is not executable*"),
    ],
)
def test_bad_input_is_one_line_no_traceback(project, args, message):
    result = project.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_fractional_idle_timeout_is_rounded_up_and_the_header_says_so(project):
    """nginx reads whole seconds: --wsgi-idle-timeout=0.5 used to become 'proxy_read_timeout 0s' silently."""
    args = ("--wsgi-matrix", "--collect-only", "--wsgi-cells=gunicorn-sync")
    result = project.runpytest(*args, "--wsgi-idle-timeout=0.5")
    assert "idle_timeout=0.5 -> 1s, rounded up to whole seconds (option)" in result.stdout.str()
    result = project.runpytest(*args, "--wsgi-idle-timeout=30")
    assert "idle_timeout=30 (option)" in result.stdout.str()


def test_bad_matrix_file_key_is_a_usage_error(project):
    project.makefile(".toml", m='[cells.a]\nserver = "uwsgi"\nworkerz = 3\n')
    result = project.runpytest("--wsgi-matrix", "--wsgi-matrix-file=m.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *m.toml cell 'a': unknown key(s) workerz; allowed: *"])


def test_unknown_gunicorn_option_is_a_usage_error(project):
    project.makefile(".toml", m='[cells.g]\nserver = "gunicorn"\n[cells.g.options]\nkeep_alive = 5\n')
    result = project.runpytest("--wsgi-matrix", "--wsgi-matrix-file=m.toml")
    result.stderr.fnmatch_lines(["ERROR: cell 'g': unknown gunicorn setting(s) keep_alive in options"])


def test_user_matrix_from_ini_is_relative_to_the_ini_file(project):
    project.mkdir("conf").joinpath("m.toml").write_text('[cells.only-me]\nserver = "gunicorn"\n')
    project.makeini("[pytest]\nwsgi_matrix_file = conf/m.toml\n")
    result = project.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_cells.py::test_cell[[]only-me[]]"])


def test_plugin_import_is_cheap():
    import subprocess
    import sys

    code = ("import sys, pytest_wsgi502.plugin; heavy = [m for m in ('django', 'gevent', 'testcontainers', 'httpx', "
            "'uvloop', 'hdrh', 'pymysql') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_proxy_profile_option_and_cell_key_are_checked(project):
    """--wsgi-proxy-profile (issue 16 item 4): alb | nginx, a bad value or a bad cell key is one line."""
    result = project.runpytest("--wsgi-proxy-profile=haproxy")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --wsgi-proxy-profile='haproxy': unknown proxy profile 'haproxy'; choose "
                                 "one of: alb, nginx"])
    project.makefile(".toml", m='[cells.a]\nserver = "uwsgi"\nproxy_profile = "elb"\n')
    result = project.runpytest("--wsgi-matrix", "--wsgi-matrix-file=m.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *m.toml cell 'a': proxy_profile 'elb' unknown; choose one of alb, nginx "
                                 "(or leave it out*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    project.makeini("[pytest]\nwsgi_proxy_profile = nginx\n")
    result = project.runpytest("--wsgi-matrix", "--collect-only", "--wsgi-cells=gunicorn-sync")
    assert result.ret == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--wsgi-distributed=spark"], "ERROR: --wsgi-distributed='spark': unknown distributed runtime 'spark'; "
                                       "choose one of: none, locust"),
        (["--wsgi-distributed=locust", "--wsgi-generators=0"],
         "ERROR: --wsgi-generators='0': the value must be >= 1 and <= 1000, got 0"),
        (["--wsgi-generators=3"], "ERROR: --wsgi-generators=3 needs --wsgi-distributed=locust (ini wsgi_distributed*"),
        (["--wsgi-distributed=locust", "--wsgi-locust-master=nohost"],
         "ERROR: --wsgi-locust-master=nohost: locust master must be HOST:PORT, got 'nohost'"),
        (["--wsgi-matrix", "--wsgi-distributed=locust", "--wsgi-locust-master=10.1.2.3:5557"],
         "ERROR: --wsgi-locust-master=10.1.2.3:5557: generators on other machines cannot reach this run's proxy*"),
        (["--wsgi-distributed=locust", "--wsgi-expect-generators=2"],
         "ERROR: --wsgi-expect-generators=2 counts generators started elsewhere: it needs --wsgi-locust-master*"),
        (["--wsgi-distributed=locust", "--wsgi-processes=2"],
         "ERROR: --wsgi-distributed=locust does not combine with --wsgi-processes=2: each generator is one*"),
        (["--wsgi-matrix", "--wsgi-distributed=locust", "--wsgi-duration=auto:30s"],
         "ERROR: --wsgi-duration=auto:30s does not go with --wsgi-distributed=locust: auto decides from one*"),
    ],
)
def test_distributed_options_are_checked_in_one_line(project, args, message):
    """--wsgi-distributed=locust and its options (issue 17 item 2): each mistake one usage-error line."""
    result = project.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def _distributed_module():
    """The module the plugin imports now (pytester's in-process runs restore sys.modules, so an attribute of the
    package may be a stale copy)."""
    import importlib

    return importlib.import_module("pytest_wsgi502.load.distributed")


def test_distributed_without_locust_names_the_extra(project, monkeypatch):
    distributed = _distributed_module()

    with monkeypatch.context() as m:  # not monkeypatch.undo(): pytester's chdir is on the same monkeypatch
        m.setattr(distributed, "locust_missing", lambda: distributed.INSTALL_HINT)
        result = project.runpytest("--wsgi-distributed=locust")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(['ERROR: --wsgi-distributed=locust: distributed load needs Locust: pip install '
                                 '"pytest-wsgi502[distributed]"'])
    project.makefile(".toml", m='[cells.a]\nserver = "uwsgi"\nduration = "auto:20s"\nslo = ["error_rate<0.1"]\n')
    result = project.runpytest("--wsgi-matrix", "--wsgi-matrix-file=m.toml", "--wsgi-distributed=locust")
    result.stderr.fnmatch_lines(["ERROR: cell a's duration = auto does not go with --wsgi-distributed=locust*"])
    ok = project.runpytest("--wsgi-matrix", "--collect-only", "--wsgi-cells=gunicorn-sync", "--wsgi-distributed=locust",
                           "--wsgi-generators=3", "--wsgi-locust-master=127.0.0.1:5557", "--wsgi-expect-generators=2")
    assert ok.ret == 0, ok.stderr.str()
    ok.stdout.fnmatch_lines(["*distributed=locust (option), generators=3 (option), locust_master=127.0.0.1:5557 "
                             "(option), expect_generators=2 (option)*"])


def test_the_load_runs_on_generators_when_asked_and_the_json_says_so(monkeypatch, tmp_path):
    """cellrun.drive_load: engine.run unless distributed == locust, then run_distributed with the context's
    generators/master and the same keywords; run_cell refuses duration=auto with generators before starting."""
    from pytest_wsgi502 import cellrun
    from pytest_wsgi502.config.duration import Auto
    from pytest_wsgi502.config.matrix import expand
    from pytest_wsgi502.load.engine import LoadSpec

    distributed = _distributed_module()

    calls = []

    def fake(spec, generators=2, **kwargs):
        calls.append((generators, kwargs))
        return {"engine": {"distributed": {"runtime": "locust", "generators": generators, "client": "engine",
                                           "master": "127.0.0.1:40000", "locust_version": "2.x"}}}

    monkeypatch.setattr(distributed, "run_distributed", fake)
    monkeypatch.setattr(cellrun, "run_load", lambda spec, **kw: {"engine": {}, "local": True})
    ctx = cellrun.CellContext(run_dir=tmp_path, ledger=tmp_path / "l", app="a:b", chdir=tmp_path, server_binaries={},
                              nginx="nginx", db_env={}, duration=5.0, max_requests=10, concurrency=4, timeout=65.0,
                              idle_timeout=60.0)
    spec = LoadSpec("http://127.0.0.1:1")
    assert cellrun.drive_load(spec, ctx, tmp_path / "locust", progress=None)["local"]
    import dataclasses

    dist = dataclasses.replace(ctx, distributed="locust", generators=3)
    load = cellrun.drive_load(spec, dist, tmp_path / "locust", progress=print, stop=None)
    assert calls == [(3, {"master": None, "expect_generators": None, "workdir": tmp_path / "locust",
                          "progress": print, "stop": None})]
    assert load["distributed"]["runtime"] == "locust" and load["distributed"]["generators"] == 3
    (cell,) = expand({"cells": {"c": {"server": "uwsgi", "slo": ["error_rate<0.1"]}}})
    with pytest.raises(ValueError, match="cell c: duration=auto does not go with --wsgi-distributed=locust"):
        cellrun.run_cell(cell, dataclasses.replace(dist, duration=Auto(30.0), sources={"duration": "option"}), {})


def test_one_body_check_rule_for_local_and_remote_targets(tmp_path):
    """cellrun.checked is the one rule (RemoteTarget had its own copy): a GET endpoint without a body check gets the
    Content-Type check, said once; a verify callable or an explicit check is left alone."""
    from pytest_wsgi502 import cellrun
    from pytest_wsgi502.fixtures import RemoteTarget
    from pytest_wsgi502.load.engine import Endpoint, LoadSpec

    said: list[str] = []
    ctx = cellrun.CellContext(run_dir=tmp_path, ledger=tmp_path / "l", app="a:b", chdir=tmp_path, server_binaries={},
                              nginx="nginx", db_env={}, duration=5.0, max_requests=10, concurrency=2, timeout=65.0,
                              idle_timeout=60.0, say=said.append)
    spec = LoadSpec("http://127.0.0.1:1", path="/a")
    assert cellrun.checked(spec, ctx).verify_content_type == "auto"
    assert cellrun.checked(spec, ctx).verify_content_type == "auto" and len(said) == 1
    assert "a cell's verify_contains" in said[0]
    assert cellrun.checked(spec, ctx, verify=lambda r: True) is spec
    mix = LoadSpec("http://127.0.0.1:1", mix=(Endpoint("/b", 1.0, "ok"), Endpoint("/c", 1.0)))
    assert [e.verify_content_type for e in cellrun.checked(mix, ctx).mix] == ["", "auto"]
    assert not hasattr(RemoteTarget, "_checked")


def test_wsgi_load_runtime_keywords_are_checked_like_the_options(tmp_path):
    """wsgi_load(target, distributed="locust", generators=N, ...): the same values as the options, one line each;
    generators= alone asks for Locust."""
    from pytest_wsgi502 import cellrun
    from pytest_wsgi502.config.values import ConfigError
    from pytest_wsgi502.fixtures import _runtime

    ctx = cellrun.CellContext(run_dir=tmp_path, ledger=tmp_path / "l", app="a:b", chdir=tmp_path, server_binaries={},
                              nginx="nginx", db_env={}, duration=5.0, max_requests=10, concurrency=4, timeout=65.0,
                              idle_timeout=60.0)
    assert _runtime(ctx, {}) is None
    via = _runtime(ctx, {"generators": 3})
    assert via is not None and (via.distributed, via.generators) == ("locust", 3)
    assert _runtime(ctx, {"distributed": "none"}).distributed == "none"
    for given, message in (({"distributed": "spark"}, "distributed must be one of none, locust"),
                           ({"generators": 0}, "generators must be >= 1"),
                           ({"expect_generators": 1001}, "expect_generators must be >= 1 and <= 1000"),
                           ({"locust_master": "h"}, "locust master must be HOST:PORT")):
        with pytest.raises(ConfigError, match=message):
            _runtime(ctx, given)
