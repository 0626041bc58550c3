"""Pinned server releases: found in the cache, built once under a lock, one-line errors (no real build here:
the real one runs in tests/integration/test_scenarios.py through the `lifetime` cell)."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_wsgi502.servers import versions


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("WSGI502_CACHE", str(tmp_path))
    return tmp_path


def fake_uwsgi(path: Any, version: Any) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(0o755)
    return path


def test_cache_dir_names_the_release_and_this_python(cache: Any) -> None:
    d = versions.pinned_dir("uwsgi", "2.0.24")
    assert d.parent == cache and d.name.startswith(f"uwsgi-2.0.24-cp{sys.version_info.major}{sys.version_info.minor}-")


def test_the_installed_binary_is_used_when_it_is_that_release(cache: Any, tmp_path: Path) -> None:
    installed = fake_uwsgi(tmp_path / "venv" / "uwsgi", "2.0.31")
    assert versions.ensure("uwsgi", "2.0.31", str(installed)) == str(installed)


def test_a_cached_build_is_reused_without_building(cache: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = fake_uwsgi(versions.pinned_binary("uwsgi", "2.0.24"), "2.0.24")
    monkeypatch.setattr(versions, "_build", lambda *a: pytest.fail("built again"))
    said: list[str] = []
    assert versions.ensure("uwsgi", "2.0.24", None, say=said.append) == str(built)
    assert said == []


def test_a_missing_release_is_built_once_and_announced(cache: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    calls = []

    def fake_run(cmd: Any, **kw: Any) -> Any:
        calls.append(cmd)
        target = cmd[cmd.index("--target") + 1]
        fake_uwsgi(__import__("pathlib").Path(target) / "bin" / "uwsgi", "2.0.24")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(versions, "program_version", lambda b: "2.0.24")
    said: list[str] = []
    binary = versions.ensure("uwsgi", "2.0.24", None, say=said.append)
    assert binary == str(versions.pinned_binary("uwsgi", "2.0.24"))
    assert len(calls) == 1 and "uwsgi==2.0.24" in calls[0] and calls[0][:3] == [sys.executable, "-m", "pip"]
    assert len(said) == 1 and "building uwsgi 2.0.24" in said[0]
    assert versions.ensure("uwsgi", "2.0.24", None) == binary and len(calls) == 1
    built = [p.name for p in cache.iterdir() if not p.name.startswith(".")]
    assert built == [versions.pinned_dir("uwsgi", "2.0.24").name]  # no temporary directory left


def test_a_failed_build_is_one_line_and_leaves_no_half_build(cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    err = "Collecting uwsgi==9.9.9\nERROR: No matching distribution found for uwsgi==9.9.9\n"
    monkeypatch.setattr(subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", err))
    with pytest.raises(versions.BuildError) as info:
        versions.ensure("uwsgi", "9.9.9", None)
    text = str(info.value)
    assert "No matching distribution found for uwsgi==9.9.9" in text and "\n" not in text
    assert not versions.pinned_dir("uwsgi", "9.9.9").exists()
    assert [p for p in cache.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize(("server", "version", "message"), [
    ("gunicorn", "23.0.0", "server_version is for uwsgi"),
    ("uwsgi", "2.0.24 --index-url=x", "not a release number"),
])
def test_bad_requests_are_refused_before_pip_runs(cache: Any, monkeypatch: pytest.MonkeyPatch, server: Any,
                                                  version: Any, message: Any) -> None:
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran"))
    with pytest.raises(versions.BuildError, match=message):
        versions.ensure(server, version, None)


def test_cli_prints_the_binary(cache: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fake_uwsgi(versions.pinned_binary("uwsgi", "2.0.24"), "2.0.24")
    assert versions.main(["uwsgi", "2.0.24"]) == 0
    assert capsys.readouterr().out.strip() == str(versions.pinned_binary("uwsgi", "2.0.24"))
    assert versions.main(["uwsgi"]) == 2


def test_builtin_matrices_pin_the_lifetime_release(cache: Any, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert versions.pinned_in_builtin_matrices() == [("uwsgi", "2.0.24")]
    fake_uwsgi(versions.pinned_binary("uwsgi", "2.0.24"), "2.0.24")
    assert versions.main(["--builtin"]) == 0
    assert capsys.readouterr().out.strip() == str(versions.pinned_binary("uwsgi", "2.0.24"))
