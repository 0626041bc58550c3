"""--wsgi-backend as users meet it without a working engine: the choice and its reason in the header, and a
forced containers backend with no engine is one line (pytester; no engine or service started)."""

import subprocess
import sys

import pytest

MATRIX_TEST = """
def test_cell(wsgi_cell_run):
    wsgi_cell_run.assert_slo()
"""


@pytest.fixture
def project(pytester, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/engine.sock")
    pytester.makepyfile(test_cells=MATRIX_TEST)
    return pytester


def test_forced_containers_without_an_engine_is_a_one_line_usage_error(project):
    result = project.runpytest("--wsgi-matrix", "--wsgi-backend=containers")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: --wsgi-backend=containers: no Docker-compatible engine answers "
        "(unix:///nonexistent/engine.sock: *); start one *"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_env_var_selects_the_backend_too(project, monkeypatch):
    monkeypatch.setenv("WSGI502_BACKEND", "containers")
    result = project.runpytest("--wsgi-matrix")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --wsgi-backend=containers: no Docker-compatible engine answers*"])


def test_auto_without_an_engine_runs_local_and_says_why(project):
    result = project.runpytest("--wsgi-matrix", "--wsgi-backend=auto", "--collect-only",
                               "--wsgi-cells=gunicorn-sync")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "wsgi502: backend=auto (option)*",
        "wsgi502: backend local: auto: no engine answered (unix:///nonexistent/engine.sock: *)"])


def test_unknown_backend_lists_the_choices(project):
    result = project.runpytest("--wsgi-backend=k8s")
    result.stderr.fnmatch_lines(["ERROR: --wsgi-backend='k8s': unknown backend 'k8s'; choose one of: local, "
                                 "containers, auto"])


def test_image_settings_resolve_like_every_setting():
    from pytest_wsgi502.config.settings import resolve

    s = resolve({}, {"WSGI502_MYSQL_IMAGE": "localhost/m:1"}, {"wsgi_base_image": "localhost/b:1"})
    assert (s.mysql_image, s.source("mysql_image")) == ("localhost/m:1", "env")
    assert (s.base_image, s.source("base_image")) == ("localhost/b:1", "ini")
    assert resolve({}, {}, {}).mysql_image == "mysql:8.4"


def test_backend_modules_stay_out_of_plugin_import():
    code = ("import sys, pytest_wsgi502.plugin; print([m for m in ('docker', 'testcontainers', "
            "'pytest_wsgi502.services.containers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
