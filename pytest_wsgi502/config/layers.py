"""One precedence rule for every setting: the more specific source wins.

From the least to the most specific (a later layer overrides an earlier one on the same key; SLOs on the same
metric, so an SLO on another metric is added, not replaced):

    default < ini < matrix-defaults < env < option < cell < marker < argument

- ``default``: the built-in value; ``ini``: ``wsgi_*`` in pytest.ini / pyproject.toml;
- ``matrix-defaults``: the matrix file's ``[defaults]`` table, a default for every cell of that file;
- ``env`` / ``option``: ``WSGI502_*`` and ``--wsgi-*``, this session's choice for every cell;
- ``cell``: what a cell (or the cell it ``extends``) sets itself, and the dict given to ``wsgi_server({...})``;
- ``marker``: ``@pytest.mark.wsgi_slo`` on the module, the class, the function (the nearest wins);
- ``argument``: keyword arguments of ``wsgi_load(target, duration=..., slo=...)``.

This is the rule of pytest's own plugins (pytest-timeout's ``timeout`` marker, pytest-rerunfailures' ``flaky``
and pytest-benchmark's ``benchmark`` marker all beat the command-line option): a session option sets what
nobody more specific chose. A cell that needs 25 s or 150 req/s to show its mechanism keeps them under
``--wsgi-duration=5s``; ``--wsgi-slo`` tightens every cell that only inherits its SLO from ``[defaults]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

LAYERS = ("default", "ini", "matrix-defaults", "env", "option", "cell", "marker", "argument")
RANK = {name: i for i, name in enumerate(LAYERS)}
T = TypeVar("T")


def rank(layer: str) -> int:
    try:
        return RANK[layer]
    except KeyError:
        raise ValueError(f"unknown settings layer {layer!r}; one of {', '.join(LAYERS)}") from None


def pick(*candidates: tuple[str, Any]) -> tuple[Any, str]:
    """(value, layer) of the most specific candidate that has a value (None = not set in that layer).
    Ties go to the later candidate. Nothing set: (None, "default")."""
    best: tuple[Any, str] = (None, "default")
    best_rank = -1
    for layer, value in candidates:
        r = rank(layer)
        if value is not None and r >= best_rank:
            best, best_rank = (value, layer), r
    return best


def merge_keyed(layers: Iterable[tuple[str, Iterable[T]]], key: Callable[[T], str]) -> list[tuple[T, str]]:
    """Items from several layers, one per key: the most specific layer's item wins (SLOs keyed by metric).
    Returns (item, layer) in first-seen key order."""
    chosen: dict[str, tuple[T, str, int]] = {}
    for layer, items in layers:
        r = rank(layer)
        for item in items:
            k = key(item)
            if k not in chosen or r >= chosen[k][2]:
                chosen[k] = (item, layer, r)
    return [(item, layer) for item, layer, _ in chosen.values()]
