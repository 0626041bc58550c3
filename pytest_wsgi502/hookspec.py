"""Hooks a project can implement (in a ``conftest.py`` or a plugin) to adjust pytest-wsgi502.

    def pytest_wsgi502_modify_cell(cell, config):
        if cell.server == "gunicorn":
            return dataclasses.replace(cell, workers=4)

    def pytest_wsgi502_cell_result(result, config):
        result["build"] = os.environ.get("BUILD_ID", "")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_wsgi502.config.matrix import Cell


@pytest.hookspec(firstresult=True)
def pytest_wsgi502_modify_cell(cell: Cell, config: pytest.Config) -> Cell | None:
    """Adjust a cell before it starts: return a changed ``Cell`` (e.g. ``dataclasses.replace(cell, workers=4)``)
    or None to keep it. Called for each matrix cell ``wsgi_cell_run`` runs and each cell ``wsgi_server(...)``
    starts, on the process that runs it (an xdist worker under ``-n``). The first non-None answer wins."""


@pytest.hookspec
def pytest_wsgi502_cell_result(result: dict[str, Any], config: pytest.Config) -> None:
    """Receive each finished cell result (the JSON contract as a dict), once, on the process that ran the cell,
    before it is reported: keys added here reach the table's source data, the JSON and saved runs."""
