"""The built wheel, installed the way a downstream project installs it (issue 15, "Install").

``python -m build`` makes the sdist and, from it, the wheel (so a file missing from the sdist fails here too);
a fresh ``python -m venv`` gets ``pip install '<wheel>[servers]'`` and nothing from this checkout. In it:
a plain ``pytest`` run in a project that merely has the plugin installed prints no header line of ours nor
pytest-benchmark's (an optional extra now); saving a run without that extra is one actionable line; and the
example Django project (examples/mysite, copied out of the checkout) runs one uWSGI and one gunicorn cell
against the installed package and passes its SLOs.

Cost, kept down: the wheel is cached under ~/.cache/pytest-wsgi502/wheels by a digest of its sources (a
rebuild takes ~3 s), and one venv serves the whole session, xdist workers included (~2.5 s to create, ~7 s to
install from pip's cache). Heavy (MariaDB, servers, load): run it under the heavy lock like every integration
test.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import ROOT, wait_gone

EXAMPLE = ROOT / "examples" / "mysite"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-wsgi502" / "wheels"
# every file the wheel is made of; anything else in the checkout does not change it
SOURCES = ("pyproject.toml", "README.md", "pytest_wsgi502")
PACKAGE_DATA = ("pytest_wsgi502/scenarios.toml", "pytest_wsgi502/seed_matrix.toml", "pytest_wsgi502/seed_unix.toml",
                "pytest_wsgi502/py.typed", "pytest_wsgi502/images/mariadb/Dockerfile",
                "pytest_wsgi502/images/mariadb/entrypoint.sh")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time (xdist workers, a concurrent session): the others wait, then reuse its result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _digest() -> str:
    h = hashlib.sha256()
    for top in SOURCES:
        base = ROOT / top
        files = [base] if base.is_file() else sorted(
            p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def wheel() -> Path:
    """The wheel of the current sources, built by ``python -m build`` (sdist, then the wheel from it)."""
    out = CACHE / _digest()
    with _locked(CACHE / ".lock"):
        if not list(out.glob("*.whl")):
            tmp = CACHE / f"tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp), str(ROOT)],
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, f"python -m build failed (pip install build: the dev extra)\n{r.stdout}{r.stderr}"
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
            (out / "build-seconds").write_text(f"{time.monotonic() - t0:.1f}\n")
            for old in sorted((d for d in CACHE.iterdir() if d.is_dir() and d != out),
                              key=lambda d: d.stat().st_mtime)[:-2]:
                shutil.rmtree(old, ignore_errors=True)  # keep this one and the two before it
    (whl,) = out.glob("*.whl")
    return whl


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only ``<wheel>[servers]`` (what the docs tell a Django project to install)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by this session's workers
    where = base / "wheel-venv"
    with _locked(base / "wheel-venv.lock"):
        if not (where / ".installed").exists():
            shutil.rmtree(where, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=300)
            r = subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install", "-q",
                                "--disable-pip-version-check", f"{wheel}[servers]"],
                               capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, r.stdout + r.stderr
            (where / ".installed").write_text(str(wheel))
    return where


def _env(venv: Path) -> dict[str, str]:
    """The user's shell with the venv activated: nothing of this session's pytest, venv or checkout leaks in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "WSGI502_", "PYTHON")) and k not in ("VIRTUAL_ENV", "COV_CORE_SOURCE")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    return env


def _run(venv: Path, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "python"), *args], cwd=cwd, env=_env(venv), capture_output=True,
                          text=True, timeout=timeout)


def test_wheel_carries_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= names, sorted(set(PACKAGE_DATA) - names)
    meta = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/METADATA")
    requires = [line for line in meta.decode().splitlines() if line.startswith("Requires-Dist: pytest-benchmark")]
    assert requires and all("extra ==" in line for line in requires), requires  # only with [benchmark] / [dev]


def test_twine_check_passes(wheel: Path) -> None:
    sdists = list(wheel.parent.glob("*.tar.gz"))
    assert len(sdists) == 1, list(wheel.parent.iterdir())
    r = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdists[0])],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"twine check (pip install twine: the dev extra)\n{r.stdout}{r.stderr}"


@pytest.fixture
def plain_project(tmp_path: Path) -> Path:
    """A project that has nothing to do with WSGI, in an environment where the plugin happens to be installed."""
    project = tmp_path / "plain"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_ok.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    return project


def test_plain_run_prints_no_header_of_ours(venv: Path, plain_project: Path) -> None:
    r = _run(venv, plain_project, "-m", "pytest", "-p", "no:cacheprovider")
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr
    assert "wsgi502-0.1.0" in r.stdout, r.stdout  # the plugin is loaded (pytest's "plugins:" line) ...
    ours = [line for line in r.stdout.splitlines() if line.startswith(("wsgi502", "benchmark:"))]
    assert not ours, r.stdout  # ... and says nothing: no "wsgi502: matrix off", no pytest-benchmark header
    assert _run(venv, plain_project, "-c", "import pytest_benchmark").returncode != 0  # not installed by [servers]


def test_saving_a_run_without_the_benchmark_extra_is_one_line(venv: Path, plain_project: Path) -> None:
    """Needs plugin.py's _check_reports to call compare.require_storage(option) (asked of the lead)."""
    r = _run(venv, plain_project, "-m", "pytest", "-p", "no:cacheprovider", "--wsgi-save=nightly")
    err = r.stderr.strip()
    assert r.returncode == 4, r.stdout + r.stderr
    assert err == ("ERROR: --wsgi-save: runs are saved in pytest-benchmark's storage format and pytest-benchmark "
                   "is not installed: pip install 'pytest-benchmark>=4' (the [benchmark] extra)"), err


def test_downstream_example_runs_against_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    """examples/mysite, copied out of the checkout so only the installed package can be imported."""
    project = tmp_path / "mysite"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".benchmarks"))
    where = _run(venv, project, "-c", "import pytest_wsgi502; print(pytest_wsgi502.__file__)")
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
    keep = tmp_path / "run"
    r = _run(venv, project, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--wsgi-matrix", "--wsgi-backend=local",
             "--wsgi-duration=2s", f"--wsgi-keep-dir={keep}", "-k", "test_matrix_meets_slo", timeout=600)
    assert not wait_gone(keep, 10), "processes left behind"
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "2 passed" in out, out
    assert re.search(r"gunicorn-sync-4w\s+\d+\s+0\s+0", out) and re.search(r"uwsgi-4w\s+\d+\s+0\s+0", out), out
    # the server came from the venv's [servers] extra, not from this session's environment
    (uwsgi_log,) = keep.glob("run-*/cells/uwsgi-4w/server.log")
    assert f"detected binary path: {venv}/bin/uwsgi" in uwsgi_log.read_text(errors="replace"), uwsgi_log
