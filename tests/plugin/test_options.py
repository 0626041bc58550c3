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
