"""Bad input at the pytest edge (issue 12 items 4 and 5, and --help): exit 4 with one ``ERROR:`` line, never an
INTERNALERROR or a traceback. Nothing here starts a service: the matrix file and the settings are refused while
pytest configures, before any preflight or process."""

import os

import pytest

MATRIX_TEST = """
def test_cell(wsgi_cell_run):
    wsgi_cell_run.assert_slo()
"""

CELL = '[cells.a]\nserver = "uwsgi"\n'
# With the matrix flag a regression (a bad file accepted) would start services; with no MariaDB binary it stops
# at the preflight instead, and the test fails on its message.
MATRIX = ("--wsgi-matrix", "--wsgi-mysqld=/nonexistent/mariadbd")


@pytest.fixture
def project(pytester):
    pytester.makepyfile(test_cells=MATRIX_TEST)
    return pytester


def assert_one_usage_error(result, message):
    out = result.stdout.str() + "\n" + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    errors = [line for line in out.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, out
    assert message in errors[0], errors[0]
    assert "INTERNALERROR" not in out and "Traceback (most recent call last)" not in out


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (CELL + "slo = [5]\n", "cell 'a': bad SLO 5: each SLO is text"),
        (CELL + "slo = 5\n", "cell 'a': slo must be a string or a list"),
        ("defaults = 5\n" + CELL, "[defaults] must be a table, got 5"),
        (CELL + 'extends = ["b"]\n[cells.b]\nserver = "uwsgi"\n', "extends unknown cell ['b']"),
        ("[defaults]\noptions = 5\n" + CELL + "[cells.a.options]\nharakiri = 3\n", "options must be a table"),
        (CELL + '"wor\\nkers" = 2\n', "unknown key(s) 'wor\\nkers'"),
        ('[cells."a\\n"]\nserver = "uwsgi"\n', "cell 'a\\n': names use"),
        (CELL + "rate = nan\n", "rate must be a finite number, got nan"),
        (CELL + "duration = inf\n", "duration must be a finite number, got inf"),
        (CELL + "think_time = nan\n", "think_time must be a finite number"),
        (CELL + "cpus = inf\n", "cpus must be a finite number"),
        (CELL + 'mix = [{path = "/a", weight = nan}]\n', "mix[0].weight must be a finite number"),
        (CELL + 'path = "//192.0.2.10:8080/api"\n', "path must not start with '//'"),
        (CELL + '[cells.a.options]\nharakiri = "3\\nexec-pre-app = id"\n', "options.harakiri must be one line"),
    ],
)
def test_bad_matrix_file_is_one_usage_error(project, toml, message):
    project.makefile(".toml", m=toml)
    assert_one_usage_error(project.runpytest(*MATRIX, "--wsgi-matrix-file=m.toml"), message)


def test_matrix_file_that_cannot_be_read_is_one_usage_error(project):
    (project.path / "latin1.toml").write_bytes(CELL.encode() + b'description = "caf\xe9"\n')
    assert_one_usage_error(project.runpytest(*MATRIX, "--wsgi-matrix-file=latin1.toml"), "not UTF-8 text")
    project.mkdir("adir")
    assert_one_usage_error(project.runpytest(*MATRIX, "--wsgi-matrix-file=adir"), "is a directory")


def test_unreadable_matrix_file_is_one_usage_error(project, monkeypatch):
    """Mode 000 for a normal user; root reads any mode, so as root the matrix loader's open() is made to fail the
    way the kernel does for everyone else (the same PermissionError), instead of skipping the case."""
    f = project.makefile(".toml", m=CELL)
    f.chmod(0)
    if os.geteuid() == 0:
        import builtins

        from pytest_wsgi502.config import matrix

        def denying_open(path, *args, **kwargs):
            if os.fspath(path).endswith("m.toml"):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return builtins.open(path, *args, **kwargs)

        monkeypatch.setattr(matrix, "open", denying_open, raising=False)
    try:
        assert_one_usage_error(project.runpytest(*MATRIX, "--wsgi-matrix-file=m.toml"), "cannot read it")
    finally:
        f.chmod(0o600)


def test_bad_matrix_without_the_flag_is_a_usage_error_not_a_collection_traceback(project):
    """Without --wsgi-matrix the matrix loads while collecting; its error still ends the run as a usage error."""
    project.makefile(".toml", m=CELL + "slo = [5]\n")
    project.makeini("[pytest]\nwsgi_matrix_file = m.toml\n")
    assert_one_usage_error(project.runpytest(), "bad SLO 5")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--wsgi-rate=nan"], "--wsgi-rate='nan': a rate in requests/s must be a finite number"),
        (["--wsgi-rate=inf"], "--wsgi-rate='inf': a rate in requests/s must be a finite number"),
        (["--wsgi-duration=1e999"], "--wsgi-duration='1e999': not a finite duration"),
        (["--wsgi-concurrency=99999999999999999999"], "must be >= 1 and <= 100000"),
        (["--wsgi-idle-timeout=1e999"], "--wsgi-idle-timeout='1e999': not a finite duration"),
        (["--wsgi-slo=p99<1e999"], "bad SLO 'p99<1e999'"),
        (["--wsgi-slo=kills==0.5"], "kills is a count"),
        (["--wsgi-slo=error_rate<0"], "nothing is < 0"),
        (["--wsgi-slo=p99<1,p99<2"], "p99 given twice"),
        (["--wsgi-compare-fail=p99:1,p99:100%"], "p99 is checked twice"),
        (["--wsgi-path=//192.0.2.10:8080/api"], "must not start with '//'"),
        (["--wsgi-path=api"], "must start with '/'"),
        (["--wsgi-isolation=cpuset"], "--wsgi-isolation='cpuset': unknown isolation 'cpuset'; choose one of: auto,"),
        (["--wsgi-app=x\nexec-pre-app = id"], "must be module:callable"),
        (["--wsgi-django-settings=os; import x"], "Python module path"),
        (["--wsgi-chdir=.\nexec-pre-app = id"], "one line"),
    ],
)
def test_bad_option_is_one_usage_error(project, args, message):
    assert_one_usage_error(project.runpytest(*args), message)


def test_bad_env_and_ini_values_are_one_usage_error(project, monkeypatch):
    monkeypatch.setenv("WSGI502_RATE", "NaN")
    assert_one_usage_error(project.runpytest(), "WSGI502_RATE='NaN'")
    monkeypatch.delenv("WSGI502_RATE")
    project.makeini("[pytest]\nwsgi_duration = 1e999\n")
    assert_one_usage_error(project.runpytest(), "ini wsgi_duration='1e999'")


def test_help_always_works(project, monkeypatch):
    """``WSGI502_DURATION=soon pytest --help`` exited 4; help must explain the setting, not fail on it."""
    monkeypatch.setenv("WSGI502_DURATION", "soon")
    result = project.runpytest("--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*--wsgi-duration=TIME*"])
    out = result.stdout.str() + result.stderr.str()
    assert "ERROR" not in result.stderr.str() and "Traceback (most recent" not in out


def test_help_with_the_matrix_flag_runs_no_preflight(project):
    """A binary that does not exist and a matrix that cannot be read: the preflight would refuse both."""
    project.makefile(".toml", m=CELL + "slo = [5]\n")
    result = project.runpytest("--wsgi-matrix", "--wsgi-mysqld=/nonexistent/mariadbd", "--wsgi-matrix-file=m.toml",
                               "--help")
    assert result.ret == pytest.ExitCode.OK
    assert "not executable" not in result.stdout.str() + result.stderr.str()
    assert "ERROR" not in result.stderr.str()
