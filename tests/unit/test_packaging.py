"""Packaging (issue 15, "Install"): pytest-benchmark is an optional extra, and a project with the plugin installed
sees nothing of it in a plain pytest run. The installed-wheel version of these checks is
tests/integration/test_wheel.py; these run in the dev venv in about a second."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.report import compare

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
INSTALL_HINT = "pip install 'pytest-benchmark>=4'"  # not pytest-wsgi502[...]: the plugin is on no index

# A package that shadows pytest-benchmark on sys.path and fails to import, as if it were not installed. (A
# sys.meta_path finder is not enough: pytest's assertion rewriter puts its own finder first.) With
# ``-p no:benchmark`` its entry point plugin is not loaded either.
SHADOW = 'raise ModuleNotFoundError("No module named \'pytest_benchmark\'", name="pytest_benchmark")\n'


def _names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip() for r in requirements}


def test_pytest_benchmark_is_an_extra_not_a_dependency() -> None:
    """Installed, it loads itself into every pytest run of the project (its own ``benchmark:`` header line)."""
    project = PYPROJECT["project"]
    assert "pytest-benchmark" not in _names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert "pytest-benchmark" in _names(extras["benchmark"])
    assert {"pytest-benchmark", "build", "twine"} <= _names(extras["dev"])  # the saved-run tests; CI's build


def test_package_data_covers_every_data_file() -> None:
    """The wheel carries every non-Python file of the package (tests/integration/test_wheel.py checks the wheel)."""
    import fnmatch

    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["pytest_wsgi502"]
    tracked = subprocess.run(["git", "ls-files", "pytest_wsgi502"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    data = [p.removeprefix("pytest_wsgi502/") for p in tracked if not p.endswith(".py")]
    assert data, "git ls-files found no data files"
    missing = [p for p in data if not any(fnmatch.fnmatch(p, g.replace("**/", "*")) for g in globs)]
    assert not missing, f"not in package-data: {missing}"


def test_ci_builds_and_checks_the_package_before_the_suite() -> None:
    """CI = .ci/run (the workflow runs it, tests/test_lint.py checks that): build and twine check, then the tests."""
    run = (ROOT / ".ci" / "run").read_text()
    build, check, suite = (run.find(s) for s in ('-m build --outdir dist', '-m twine check --strict dist/*',
                                                 "bash bin/dev test"))
    assert -1 < build < check < suite, (build, check, suite)


def _hide_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "pytest_benchmark"] + ["pytest_benchmark"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_storage_without_pytest_benchmark_is_one_actionable_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _hide_benchmark(monkeypatch)
    with pytest.raises(ConfigError) as err:
        compare.storage(tmp_path)
    assert INSTALL_HINT in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^--wsgi-save: .*pytest-benchmark.*not installed") as err:
        compare.require_storage("--wsgi-save")
    assert INSTALL_HINT in str(err.value)


def test_storage_with_pytest_benchmark_needs_nothing(tmp_path: Path) -> None:
    pytest.importorskip("pytest_benchmark")
    compare.require_storage("--wsgi-save")
    assert compare.saved_runs(compare.storage(tmp_path)) == []


def _pytest_without_benchmark(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    shadow = project / "shadow" / "pytest_benchmark"
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "__init__.py").write_text(SHADOW)
    path = os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:benchmark", "-p", "no:cacheprovider",
                           "--rootdir", str(project), str(project / "test_ok.py"), *args],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    return tmp_path


@pytest.mark.parametrize("option", ["--wsgi-save=nightly", "--wsgi-compare", "--wsgi-compare-fail=p99:10%"])
def test_saved_run_options_without_pytest_benchmark_are_a_usage_error(tiny_project: Path, option: str) -> None:
    """Checked before anything runs (a run is not lost at the end), as pytest's one-line usage error.
    Needs plugin.py's _check_reports to call compare.require_storage(option) under _usage() (asked of the lead)."""
    r = _pytest_without_benchmark(tiny_project, option)
    err = r.stderr.strip()
    assert r.returncode == 4, r.stdout + r.stderr
    assert err.startswith("ERROR: --wsgi-") and INSTALL_HINT in err and len(err.splitlines()) == 1, err
    assert "Traceback" not in r.stdout + r.stderr


def test_plain_run_prints_no_wsgi502_or_benchmark_header(tiny_project: Path) -> None:
    """A project that merely has the plugin installed: no header lines of ours (issue 15 item 9)."""
    r = _pytest_without_benchmark(tiny_project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
    ours = [line for line in r.stdout.splitlines() if line.startswith(("wsgi502", "benchmark:"))]
    assert not ours, r.stdout  # pytest's own "plugins: ... wsgi502-0.1.0" line is not ours
