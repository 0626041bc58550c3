"""Saved runs and comparison, on pytest-benchmark's storage (`--wsgi-save`, `--wsgi-compare`, `--wsgi-compare-fail`).

A saved run is a pytest-benchmark JSON file (``NNNN_NAME.json`` under ``<storage>/<machine id>/``, written by
pytest-benchmark's ``FileStorage``): one "benchmark" per cell whose ``stats`` are the cell's latency in seconds
(min, max, mean, stddev, median, q1, q3, iqr, ops, rounds = requests), so ``pytest-benchmark list`` and
``pytest-benchmark compare --storage <storage>`` read our runs too; the whole cell summary (error rate, p99,
req/s, respawns, kills, causes, the HdrHistogram) rides in ``extra_info["wsgi502"]``.

Comparison and regression checks are pure functions over two summaries. The checks themselves (``metric:N%`` or
``metric:X``) are parsed in ``config/checks.py``, so the settings never import the report layer.

pytest-benchmark is an optional extra (``pytest-wsgi502[benchmark]``): installed, it loads itself into every
pytest run of a project and prints its own header line. It is imported only here, only when a run is saved or
compared; without it, ``require_storage`` is the one-line usage error the plugin raises before anything runs.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from pytest_wsgi502.config.checks import Check
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.metrics.registry import CHECKED_METRICS, value

SHOWN = ("error_rate", "p50", "p95", "p99", "rps", "respawns", "kills")
SUMMARY_KEYS = ("name", "server", "config", "requests", "responses", "error_rate", "error_count", "status_counts",
                "errors", "latency_ms", "rps", "respawns", "kills", "attribution", "histogram", "slo", "load",
                "intervals")


# --- storage (pytest-benchmark's FileStorage) ----------------------------------------------------------------

class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str, *args: Any, **kwargs: Any) -> None:
        self.lines.append(text)

    warning = warn = error = debug = info


# what the [benchmark] extra installs, named directly: the plugin itself is not on an index, pytest-benchmark is
INSTALL_BENCHMARK = "pip install 'pytest-benchmark>=4' (the [benchmark] extra)"


def require_storage(option: str | None = None) -> None:
    """Raise the one-line ConfigError (the plugin's usage error) when pytest-benchmark is not importable."""
    try:
        import pytest_benchmark.storage.file
        import pytest_benchmark.utils  # noqa: F401
    except ImportError:
        who = f"{option}: runs are" if option else "runs are"
        raise ConfigError(f"{who} saved in pytest-benchmark's storage format and pytest-benchmark is not "
                          f"installed: {INSTALL_BENCHMARK}") from None


def storage(path: Path) -> Any:
    require_storage()
    from pytest_benchmark.storage.file import FileStorage
    from pytest_benchmark.utils import get_machine_id

    machine_id = get_machine_id()  # type: ignore[no-untyped-call]  # pytest-benchmark ships no annotations
    return FileStorage(path, logger=_Log(), default_machine_id=machine_id)  # type: ignore[no-untyped-call]


def saved_runs(store: Any) -> list[Path]:
    """Saved runs of this machine id, oldest first."""
    return [f for f in store.query("[0-9][0-9][0-9][0-9]_") if f.is_file()]


def find_run(store: Any, which: str) -> Path:
    """``latest`` (or empty), a number (``3`` / ``0003``), a saved name, or a path to a saved file."""
    which = (which or "latest").strip()
    if Path(which).is_file():
        return Path(which)
    runs = saved_runs(store)
    where = store.get("")
    if not runs:
        raise LookupError(f"no saved wsgi502 run in {where} (save one first with --wsgi-save=NAME)")
    if which == "latest":
        return runs[-1]
    if which.isdigit():
        hits = [f for f in runs if f.name.startswith(f"{int(which):04d}_")]
    else:
        hits = [f for f in runs if f.stem.split("_", 1)[-1] == which]
    if not hits:
        known = ", ".join(f.stem for f in runs[-8:])
        raise LookupError(f"no saved run {which!r} in {where} (saved: {known})")
    return hits[-1]


def _seconds(us: float) -> float:
    return us / 1e6


def _outliers(h: Any, mean: float, q1: float, q3: float) -> dict[str, Any]:
    """pytest-benchmark's outlier fields, counted over the histogram's recorded values (at its resolution)."""
    sd, lo, hi = h.get_stddev(), q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    sd_out = iqr_out = 0
    inside = []
    for item in h.get_recorded_iterator():
        v, n = item.value_iterated_to, item.count_at_value_iterated_to
        sd_out += n if abs(v - mean) > sd else 0
        if lo <= v <= hi:
            inside.append(v)
        else:
            iqr_out += n
    return {"stddev_outliers": sd_out, "iqr_outliers": iqr_out, "outliers": f"{sd_out};{iqr_out}",
            "ld15iqr": _seconds(min(inside, default=q1)), "hd15iqr": _seconds(max(inside, default=q3))}


def benchmark_entry(cell: dict[str, Any]) -> dict[str, Any]:
    """One cell as a pytest-benchmark "benchmark" (latency stats in seconds) with our summary in extra_info."""
    from hdrh.histogram import HdrHistogram

    nan = float("nan")  # no response, no latency: pytest-benchmark's table shows nan rather than a made-up 0
    stats: dict[str, Any] = {"rounds": cell.get("requests", 0), "iterations": 1, "outliers": "0;0", "total": 0.0,
                             **dict.fromkeys(("min", "max", "mean", "stddev", "median", "q1", "q3", "iqr", "ops",
                                              "ld15iqr", "hd15iqr"), nan)}
    if cell.get("histogram") and cell.get("responses"):
        h = HdrHistogram.decode(cell["histogram"])
        q1, q3 = h.get_value_at_percentile(25), h.get_value_at_percentile(75)
        mean = h.get_mean_value()
        stats.update(min=_seconds(h.get_min_value()), max=_seconds(h.get_max_value()), mean=_seconds(mean),
                     stddev=_seconds(h.get_stddev()), median=_seconds(h.get_value_at_percentile(50)),
                     q1=_seconds(q1), q3=_seconds(q3), iqr=_seconds(q3 - q1), ops=1e6 / mean if mean else 0.0,
                     total=_seconds(mean * h.get_total_count()), **_outliers(h, mean, q1, q3))
    return {
        "group": "wsgi502", "name": cell["name"], "fullname": f"wsgi502::{cell['name']}", "params": None,
        "param": None, "stats": stats,
        "extra_info": {"wsgi502": {k: cell[k] for k in SUMMARY_KEYS if k in cell}},
    }


def save(store: Any, name: str, cells: list[dict[str, Any]], environment: dict[str, Any]) -> Path:
    import pytest_benchmark  # importable: ``store`` came from storage()

    git = environment.get("git") or {}
    doc = {
        "machine_info": {**environment.get("machine", {}), "python_version": environment.get("python")},
        "commit_info": {"id": git.get("commit"), "dirty": git.get("dirty"), "branch": git.get("branch")},
        "benchmarks": [benchmark_entry(c) for c in cells],
        "datetime": datetime.datetime.now(datetime.UTC).isoformat(),
        "version": pytest_benchmark.__version__,
        "wsgi502": {"schema": environment.get("schema_version"), "versions": environment.get("versions")},
    }
    before = set(saved_runs(store))
    store.save(doc, name)
    (path,) = set(saved_runs(store)) - before
    return path


def load(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the saved document, cell summaries by name)"""
    import json

    doc = json.loads(path.read_text())
    cells = {b["name"]: b.get("extra_info", {}).get("wsgi502", {}) for b in doc.get("benchmarks", [])}
    return doc, cells


# --- comparison (pure) ---------------------------------------------------------------------------------------

def compare(now: list[dict[str, Any]], saved: dict[str, dict[str, Any]],
            checks: tuple[Check, ...] = ()) -> dict[str, Any]:
    """Rows for every shown or checked metric of every cell in both runs, and the failed checks as lines.

    A check fails only when the change is beyond its limit *and* significant at 95 % by the statistics of
    ``metrics/comparison.py`` (the same as a ``baseline_cell``): the error rate always, req/s and latency when
    both runs have repeats. Where no test applies (one run a side; counts such as kills), the limit alone
    decides, and the line says so."""
    from pytest_wsgi502.metrics.comparison import compare as significance

    by_metric = {c.metric: c for c in checks}
    metrics = list(SHOWN) + [m for m in by_metric if m not in SHOWN]
    rows, failures = [], []
    for cell in now:
        old = saved.get(cell["name"])
        if old is None:
            continue
        tested = significance(cell, old)["metrics"] if old.get("requests") is not None else {}
        for metric in metrics:
            a, b = value(old, metric), value(cell, metric)
            check = by_metric.get(metric)
            word = (tested.get(metric) or {}).get("verdict")  # better / worse / same, None: no test
            beyond = bool(check and check.fails(b, a))
            failed = beyond and word not in ("same", "better")
            rows.append({"cell": cell["name"], "metric": metric, "saved": a, "now": b, "check": check.text
                         if check else "", "failed": failed, "significance": word,
                         "beyond_limit_not_significant": beyond and not failed})
            if failed and check and a is not None and b is not None:
                unit = _unit(metric)
                how = "significant at 95 %" if word == "worse" else "no significance test: needs repeats"
                failures.append(f"{cell['name']}: {metric} {fmt(a, unit)} -> {fmt(b, unit)} "
                                f"({change_text(a, b)}), limit {check.text}, {how}")
    return {"rows": rows, "failures": failures,
            "only_now": [c["name"] for c in now if c["name"] not in saved],
            "only_saved": [n for n in saved if n not in {c["name"] for c in now}]}


def _unit(metric: str) -> str:
    """The unit ``fmt`` writes after a value: ms for latency, none otherwise (req/s is the column's meaning)."""
    return "ms" if CHECKED_METRICS[metric].unit == "ms" else ""


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "ms":
        return f"{x:.0f}ms" if x >= 100 else f"{x:.1f}ms"
    if x and abs(x) < 0.01:
        return f"{x:.2e}"
    return f"{x:g}" if x == int(x) else f"{x:.1f}"


def change_text(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "-"
    if a == 0:
        return "=" if b == 0 else "new"
    return f"{100.0 * (b - a) / abs(a):+.1f}%"


def render(result: dict[str, Any], label: str) -> list[str]:
    head = ("cell", "metric", "saved", "now", "change", "95 %", "check", "")
    table = [head]
    for r in result["rows"]:
        unit = _unit(r["metric"])
        verdict = "FAIL" if r["failed"] else ("noise" if r.get("beyond_limit_not_significant") else
                                              "ok" if r["check"] else "")
        table.append((r["cell"], r["metric"], fmt(r["saved"], unit), fmt(r["now"], unit),
                      change_text(r["saved"], r["now"]), r.get("significance") or "-", r["check"], verdict))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = [f"now vs {label}"]
    for i, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths,
                                                                                               strict=True))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if result["only_now"]:
        lines.append(f"not in the saved run: {', '.join(result['only_now'])}")
    if result["only_saved"]:
        lines.append(f"saved but not run now: {', '.join(result['only_saved'])}")
    lines.append("95 %: better / worse / same at 95 % (error rate: exact conditional binomial; req/s and latency: "
                 "Welch t over repeats, - without them); noise: beyond the limit but not significant, not a failure")
    lines += [f"regression: {f}" for f in result["failures"]]
    return lines
