"""The plugin's per-run state, kept in ``config.stash`` (glue: both plugin.py and fixtures.py read it).

Cheap to import: the pure core and pytest only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_wsgi502.config.matrix import BUILTIN, Cell, load_matrix, select
from pytest_wsgi502.config.settings import EffectiveSettings
from pytest_wsgi502.services.backend import BackendChoice

if TYPE_CHECKING:
    from pytest_wsgi502.config.shard import Plan
    from pytest_wsgi502.schedule import Schedule

# The one rule for when services and load run: only with --wsgi-matrix. Every skip it makes ends with MATRIX_ONLY
# (the reporter counts those skips for its hint, also from xdist workers' reports).
MATRIX_ONLY = "only with --wsgi-matrix"
SKIP_CELL = f"matrix cells run {MATRIX_ONLY}"
# fixtures that start services (MariaDB, containers, CPU isolation, servers and their proxy) or drive load, in the
# order a skip reason names them
SERVICE_FIXTURES = ("wsgi_server", "wsgi_load", "wsgi_database", "wsgi_mysql", "wsgi_containers", "wsgi_isolation")


def skip_reason(fixture: str) -> str:
    """Why a test that uses ``fixture`` (directly or through another fixture) is skipped without --wsgi-matrix."""
    return f"uses {fixture}, which starts services and load: like matrix cells, it runs {MATRIX_ONLY}"


# --wsgi-target: the one "cell" is the running service; its name is the test id (test_cell[target]) and table row
TARGET_CELL = "target"
# fixtures that would start something locally: with --wsgi-target a test that uses one is skipped (wsgi_load is
# fine: it drives load at whatever target it is given, e.g. the wsgi_target fixture's)
LOCAL_FIXTURES = tuple(f for f in SERVICE_FIXTURES if f != "wsgi_load")


# SLO metrics only the server's own logs show: a remote target cannot be judged on them
SERVER_METRICS = ("respawns", "kills")


def target_skip_reason(fixture: str) -> str:
    """Why a test that uses ``fixture`` is skipped with --wsgi-target (nothing is started locally then)."""
    return f"uses {fixture}, which starts local services: --wsgi-target drives load at a running service instead"


REPORT_ATTR = "wsgi502_results"  # TestReport attribute carrying cell results (xdist ships it to the controller)
RESULTS = pytest.StashKey[list[dict[str, Any]]]()  # results a test's fixtures produced, on its item


@dataclass
class State:
    settings: EffectiveSettings
    enabled: bool
    rootdir: Path
    _cells: list[Cell] | None = None
    _matrix: list[Cell] | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    compare: dict[str, Any] | None = None  # the comparison with a saved run, once computed
    written: list[str] = field(default_factory=list)  # "what: path" lines for the summary
    error: str | None = None  # a bad matrix met while collecting: a usage error once collection is done
    skipped: int = 0  # tests skipped by the --wsgi-matrix rule (counted from their reports, for the summary's hint)

    schedule: Schedule | None = None  # --wsgi-repeat / baseline_cell: the interleaved runs of this process
    _plan: Plan | None = None
    target_addresses: tuple[str, ...] = ()  # --wsgi-target: the addresses its host resolved to at configure time

    @property
    def matrix(self) -> list[Cell]:
        """Every cell of the matrix file, selected or not (a baseline cell runs even when not selected)."""
        if self._matrix is None:
            name = self.settings.matrix_file
            self._matrix = load_matrix(BUILTIN.get(name) or self.path("matrix_file") if name else None)
        return self._matrix

    @property
    def target(self) -> str | None:
        """--wsgi-target: the URL of the running service the load goes to (no local services); None otherwise."""
        return self.settings.values["target"].value if "target" in self.settings.values else None

    @property
    def cells(self) -> list[Cell]:
        """The cells this run parametrizes: the selected matrix cells, or with --wsgi-target the one target cell
        (its load and SLOs are the session's settings; the matrix describes servers, which a target has not)."""
        if self._cells is None:
            if self.target is not None:
                self._cells = [Cell(TARGET_CELL, "remote", description=f"the running service at {self.target}")]
            else:
                self._cells = select(self.matrix, self.settings.cells)
        return self._cells

    @property
    def shard(self) -> Plan | None:
        """--wsgi-shard: the cells this shard runs (its own and the baselines pinned to it); None unsharded."""
        if self.settings.shard is None:
            return None
        if self._plan is None:
            from pytest_wsgi502.config import shard

            cells = self.cells
            self._plan = shard.plan([c.name for c in cells], {c.name: self.expected_seconds(c) for c in cells},
                                    {c.name: self.baseline_of(c) for c in cells}, self.settings.shard)
        return self._plan

    def expected_seconds(self, cell: Cell) -> float:
        """The cell's expected work for the shard rule: its load length by the precedence rule (auto: its cap)."""
        from pytest_wsgi502.config.duration import split
        from pytest_wsgi502.config.layers import pick
        from pytest_wsgi502.config.shard import expected_seconds

        s = self.settings
        length, _ = pick((s.source("duration"), split(s.duration)[1]),
                         (cell.origin.get("duration", "default"), split(cell.duration)[1]))
        return expected_seconds(length, s.repeat or 1)

    def baseline_of(self, cell: Cell) -> str | None:
        """The cell's baseline cell by the precedence rule (its own ``baseline_cell`` beats the session's)."""
        from pytest_wsgi502.config.layers import pick

        s = self.settings
        name, _ = pick((s.source("baseline_cell"), s.baseline_cell),
                       (cell.origin.get("baseline_cell", "default"), cell.baseline_cell))
        return None if name == cell.name else name

    def path(self, name: str) -> Path:
        """A path setting: relative to the ini file's directory when it came from ini (or is the default),
        else to the current directory."""
        p = Path(self.settings.values[name].value)
        if p.is_absolute():
            return p
        base = self.rootdir if self.settings.source(name) in ("ini", "default") else Path.cwd()
        return (base / p).resolve()


STATE = pytest.StashKey[State]()
BACKEND = pytest.StashKey[BackendChoice]()  # the resolved --wsgi-backend, set in pytest_configure with --wsgi-matrix


def get_state(config: pytest.Config) -> State:
    """This run's state (set in ``pytest_configure``)."""
    return config.stash[STATE]
