"""Cells that pin a uWSGI release (``server_version``): the pinned binary really runs, the JSON says which
release each cell ran, and a key the release lacks is refused with the reason (the seed's "max-requests-delta
had no effect": it appeared in 2.0.29). The first test builds 2.0.24 into the cache if it is not there yet."""

from pathlib import Path
from typing import Any

import pytest

from pytest_wsgi502.servers import binary_for
from pytest_wsgi502.services.programs import program_version

OLD = "2.0.24"


@pytest.fixture
def installed() -> Any:
    binary = binary_for("uwsgi")
    assert binary, "uWSGI is a dependency of the test environment (bash bin/dev test installs it)"
    version = program_version(binary)
    assert version and version != OLD
    return version


def test_a_pinned_release_runs_next_to_the_installed_one(matrix: Any, tmp_path: Path, installed: Any) -> None:
    m = tmp_path / "m.toml"
    m.write_text(f'[defaults]\nserver = "uwsgi"\n[defaults.options]\nadd-header = "Connection: close"\n'
                 f'[cells.old]\nserver_version = "{OLD}"\n[cells.new]\n')
    r = matrix.run(f"--wsgi-matrix-file={m}", "--wsgi-duration=2s", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    cells = matrix.cells()
    assert cells["old"]["services"]["uwsgi"] == OLD and cells["new"]["services"]["uwsgi"] == installed
    assert cells["old"]["requests"] > 0 and cells["old"]["error_count"] == 0
    # uWSGI's own banner, in each cell's server log
    assert f"Starting uWSGI {OLD} " in (matrix.cell_dir("old") / "server.log").read_text()
    assert f"Starting uWSGI {installed} " in (matrix.cell_dir("new") / "server.log").read_text()
    assert cells["old"]["config"]["server_version"] == OLD


def test_a_key_the_pinned_release_lacks_is_refused_with_the_reason(matrix: Any, tmp_path: Path) -> None:
    m = tmp_path / "m.toml"
    m.write_text(f'[cells.delta-old]\nserver = "uwsgi"\nserver_version = "{OLD}"\nmax_requests = 100\n'
                 'max_requests_delta = 10\n[cells.delta-old.options]\nadd-header = "Connection: close"\n')
    r = matrix.run(f"--wsgi-matrix-file={m}", "--wsgi-duration=2s", timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "unknown config directive: max-requests-delta" in out  # uWSGI's strict mode, from its own log
    assert "lint [uwsgi-unknown-option] delta-old: this uWSGI does not know 'max-requests-delta'" in out
    assert "pytest_wsgi502/" not in out and "During handling" not in out  # no traceback, said once
