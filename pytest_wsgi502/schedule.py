"""Runs of several cells in one interleaved order, done lazily as test items ask for them.

With ``--wsgi-repeat N`` (or a ``baseline_cell``) a cell's verdict needs runs of other cells made side by side
with its own: the schedule (``metrics.repeats.interleaved``) is fixed once for the cells this process will run,
and the first test item that asks for a cell runs the schedule up to that cell's last run. Later items find their
runs done. A run that failed to start is kept as its error and raised to the item of that cell only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pytest_wsgi502.metrics.repeats import interleaved


class Schedule:
    def __init__(self, names: Sequence[str], repeat: int, run: Callable[[str], dict[str, Any]]) -> None:
        self.order = interleaved(list(dict.fromkeys(names)), repeat)
        self.repeat, self._run, self._next = repeat, run, 0
        self.done: dict[str, list[dict[str, Any]]] = {}
        self.errors: dict[str, BaseException] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.order

    def runs(self, name: str) -> list[dict[str, Any]]:
        """Every run of ``name``, running the schedule as far as its last one; its first error is raised."""
        if name not in self.order:
            raise KeyError(f"cell {name} is not in this schedule")
        last = len(self.order) - 1 - self.order[::-1].index(name)
        while self._next <= last:
            current = self.order[self._next]
            self._next += 1
            if current in self.errors:  # a cell that failed once is not started again
                continue
            try:
                self.done.setdefault(current, []).append(self._run(current))
            except Exception as exc:  # its own item reports it; the other cells go on
                self.errors[current] = exc
        if name in self.errors:
            raise self.errors[name]
        return self.done[name]
