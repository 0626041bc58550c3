"""Static checks run with the tests, so CI and a newcomer's `bash bin/dev test` see the same verdict."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in this venv: pip install -e '.[dev]' (bash bin/dev does)")
    return str(path)


def test_ruff():
    r = subprocess.run([_tool("ruff"), "check", "pytest_wsgi502", "tests", "sample_project"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy():
    r = subprocess.run([sys.executable, "-m", "mypy", "pytest_wsgi502"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_workflow_lints_clean_and_runs_the_ci_command():
    workflow = ROOT / ".github" / "workflows" / "ci.yml"
    r = subprocess.run([_tool("zizmor"), "--offline", "--no-progress", str(workflow)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bash .ci/run" in workflow.read_text()
    assert "bash bin/dev test" in (ROOT / ".ci" / "run").read_text()
    assert shutil.which("bash")
