"""``--wsgi-shard=I/N``: which cells of the matrix this job runs, so N machines share one matrix.

The rule (``assign``): walk the cells in matrix order and give each to the shard with the least expected work so
far (ties: the lowest shard number). A cell's expected work is its load duration (duration=auto counts as its
cap) plus a start-up allowance, times --wsgi-repeat. What it guarantees, for any cells and weights:

- partition: every cell is in exactly one shard; the shards together are the matrix;
- balance: the most loaded shard has at most one cell's work (the largest) more than the least loaded one
  (when the last cell went to the shard that ends up the most loaded, that shard was the least loaded);
- stability: a cell's shard depends only on the cells before it. A cell appended at the end of the matrix moves
  no other cell; a cell inserted in the middle (or removed) can move the cells after it, never those before.

No rule can promise both balance and "adding a cell anywhere moves nothing else": that needs each cell's shard
to depend on the cell alone (a hash), and a hash cannot bound the imbalance. Balance is what decides the wall
time of a sharded CI run, so it is the hard guarantee; append new cells at the end to keep the others in place.

A cell compared with a baseline cell needs that baseline run side by side with it: the baseline is *pinned* to
every shard that has a cell needing it (it runs there too; ``pinned`` says which). The merge keeps the baseline's
run from the shard it belongs to by the rule (report/merge.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pytest_wsgi502.config import values
from pytest_wsgi502.config.duration import Auto
from pytest_wsgi502.config.values import ConfigError, shown

MAX_SHARDS = 1000
STARTUP_S = 5.0  # seconds a cell costs besides its load: server and proxy start, readiness, stop (measured ~2-6 s)
_SHARD = re.compile(r" *([0-9]{1,4}) */ *([0-9]{1,4}) *")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(text: str) -> Shard:
    """'2/3' -> Shard(2, 3); 1 <= I <= N <= 1000, else a one-line ConfigError."""
    m = _SHARD.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise ConfigError(f"not a shard: {shown(text)} (use I/N, e.g. 1/3: the first of 3 shards)")
    count = int(values.number(m[2], "the number of shards N in I/N", 1, MAX_SHARDS, integer=True))
    index = int(values.number(m[1], f"the shard I in I/{count}", 1, count, integer=True))
    return Shard(index, count)


def expected_seconds(length: float | Auto | None, repeat: int = 1) -> float:
    """A cell's expected work: its load length (auto: its cap) plus the start-up allowance, times its repeats."""
    seconds = length.cap if isinstance(length, Auto) else float(length or 0.0)
    return (seconds + STARTUP_S) * max(1, repeat)


def assign(names: Sequence[str], weights: Mapping[str, float], count: int) -> dict[str, int]:
    """Each cell's shard (1-based), by the rule in the module docstring. ``names`` in matrix order, unique."""
    if count < 1:
        raise ConfigError(f"the number of shards must be at least 1, got {count}")
    loads = [0.0] * count
    out: dict[str, int] = {}
    for name in names:
        if name in out:
            raise ConfigError(f"cell {shown(name)} listed twice")
        i = min(range(count), key=lambda k: (loads[k], k))
        loads[i] += weights[name]
        out[name] = i + 1
    return out


@dataclass(frozen=True)
class Plan:
    """What one shard runs: its own cells, and the baselines pinned to it (which belong to another shard)."""

    shard: Shard
    owner: Mapping[str, int]  # every cell's shard
    own: tuple[str, ...]  # this shard's cells, in matrix order
    pinned: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # baseline -> this shard's cells needing it

    @property
    def runs(self) -> frozenset[str]:
        return frozenset(self.own) | frozenset(self.pinned)

    def header(self) -> str:
        """The header line: ``shard 1/3: 4 of 9 cells (a, b, c, d); baseline x pinned here (for b; its shard
        is 2/3)``."""
        line = f"shard {self.shard}: {len(self.own)} of {len(self.owner)} cells ({', '.join(self.own) or 'none'})"
        for base, needs in self.pinned.items():
            line += (f"; baseline {base} pinned here too (for {', '.join(needs)}; it belongs to shard "
                     f"{self.owner[base]}/{self.shard.count})")
        return line


def plan(names: Sequence[str], weights: Mapping[str, float], baselines: Mapping[str, str | None],
         shard: Shard) -> Plan:
    """The cells ``shard`` runs. ``baselines``: a cell's baseline cell (None: none); a baseline that is not among
    ``names`` (run by the schedule without a test item of its own) is not pinned: it is not a cell of this run."""
    owner = assign(names, weights, shard.count)
    own = tuple(n for n in names if owner[n] == shard.index)
    pinned: dict[str, list[str]] = {}
    for name in own:
        base = baselines.get(name)
        if base is not None and base != name and base in owner and owner[base] != shard.index:
            pinned.setdefault(base, []).append(name)
    return Plan(shard, owner, own, {b: tuple(v) for b, v in pinned.items()})
