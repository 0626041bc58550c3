"""``python -m pytest_wsgi502.report merge RUN.json... --json OUT [--html OUT]``: one report from the manifests of
the jobs one matrix was split over (``--wsgi-shard=I/N``, or one job per cell with ``--wsgi-cells``).

- Context: the runs must share it, or their numbers are not one matrix. Compared: the schema, Python, the
  backend as set, the git commit, the plugin's source digest, the machine's core count and architecture, every
  package/service version, and every setting except those that only say where results go (``OUTPUT_SETTINGS``)
  or which cells a job runs (``SELECTION_SETTINGS``: --wsgi-cells, --wsgi-shard). A difference is refused in one
  line naming the keys.
  Kernel, memory and the host name are not compared: CI runners of one type differ in them.
- Cells are concatenated (matrix order when the runs are shards). A cell is merged once: two runs of the same
  cell are refused (adding their histograms would pool two machines; run the cell once). A baseline pinned to
  several shards is kept from the shard it belongs to by the shard rule; the others are listed under
  ``merge.pinned``. Histograms (HdrHistogram V2, base64) are kept as each job wrote them.
- Comparisons: each cell's ``comparison`` block was made in its own job, against the baseline's run there (a
  pinned baseline runs side by side with the cells that need it). ``side_by_side`` says whether the baseline's
  row in the merged report is that run (same job) or one from another job (``false``: the table says
  "not side by side").
- Verdict: from the cells' own outcomes (pass / fail / invalid); missing shards make it incomplete.

Pure: stdlib and the report modules; the only I/O is reading the runs and writing the outputs in ``main``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_wsgi502.metrics.machine import cells_spread
from pytest_wsgi502.report.manifest import OUTPUT_SETTINGS, SCHEMA, SELECTION_SETTINGS


class MergeError(ValueError):
    """Runs that cannot be merged: one line saying which runs and keys."""


Run = tuple[str, dict[str, Any]]  # (label: the file name, the manifest)


def load(paths: Sequence[Path]) -> list[Run]:
    runs: list[Run] = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MergeError(f"{path}: not a readable JSON manifest ({' '.join(str(exc).split())})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list) or "environment" not in doc:
            raise MergeError(f"{path}: not a pytest-wsgi502 manifest (no cells/environment): write it with --wsgi-json")
        runs.append((str(path), doc))
    return runs


def context(doc: dict[str, Any]) -> dict[str, Any]:
    """The keys that must be equal across the merged runs, flattened: ``versions.gunicorn``, ``settings.duration``."""
    env = doc.get("environment") or {}
    machine = env.get("machine") or {}
    out: dict[str, Any] = {"schema": doc.get("schema"), "python": env.get("python"), "backend": env.get("backend"),
                           "git.commit": (env.get("git") or {}).get("commit"), "machine.cores": machine.get("cores"),
                           "machine.arch": machine.get("arch"), "plugin_digest": env.get("plugin_digest")}
    for name, version in (env.get("versions") or {}).items():
        out[f"versions.{name}"] = version
    for name, setting in (env.get("settings") or {}).items():
        if name not in OUTPUT_SETTINGS and name not in SELECTION_SETTINGS:
            out[f"settings.{name}"] = setting.get("value") if isinstance(setting, dict) else setting
    return out


def differing(runs: Sequence[Run]) -> dict[str, list[Any]]:
    """Context keys whose value is not the same in every run: key -> each run's value (missing: None)."""
    contexts = [context(doc) for _, doc in runs]
    keys = list(dict.fromkeys(k for c in contexts for k in c))
    return {k: [c.get(k) for c in contexts] for k in keys if len({json.dumps(c.get(k)) for c in contexts}) > 1}


def _refuse_context(runs: Sequence[Run]) -> None:
    diff = differing(runs)
    if not diff:
        return
    names = [Path(label).name for label, _ in runs]
    shown = [f"{k} ({', '.join(f'{n}={v}' for n, v in zip(names, vals, strict=True))})"
             for k, vals in list(diff.items())[:6]]
    more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
    raise MergeError(f"runs differ in context, not merged: {'; '.join(shown)}{more} "
                     "(merge runs of one matrix made with the same versions and settings)")


def _shards(runs: Sequence[Run]) -> tuple[int | None, list[int]]:
    """(N, missing shard numbers) of sharded runs, (None, []) of unsharded ones; mixed or clashing: refused."""
    shards = [(label, doc.get("shard")) for label, doc in runs]
    sharded = [(label, s) for label, s in shards if s]
    if not sharded:
        return None, []
    if len(sharded) != len(shards):
        plain = next(Path(label).name for label, s in shards if not s)
        raise MergeError(f"{plain} is not a shard (no --wsgi-shard) but other runs are: merge the shards of one run")
    counts = {s["count"] for _, s in sharded}
    if len(counts) > 1:
        splits = ", ".join(f"{Path(label).name}={s['index']}/{s['count']}" for label, s in sharded)
        raise MergeError(f"shards of different splits, not merged: {splits}")
    count = counts.pop()
    seen: dict[int, str] = {}
    for label, s in sharded:
        if s["index"] in seen:
            raise MergeError(f"shard {s['index']}/{count} given twice: {Path(seen[s['index']]).name} and "
                             f"{Path(label).name}")
        seen[s["index"]] = label
    # every cell's shard, as the shards recorded it: a shard that owns no cell (more shards than cells) writes
    # no manifest and is not missing; without the map (no cell ran anywhere) every shard is expected
    owners: dict[str, int] = {}
    for _, doc in runs:
        for cell in doc["cells"]:
            owners.update((cell.get("shard") or {}).get("owners") or {})
    expected = set(owners.values()) if owners else set(range(1, count + 1))
    return count, sorted(i for i in expected if i not in seen)


def merge(runs: Sequence[Run]) -> dict[str, Any]:
    """The merged manifest (raises MergeError); its ``merge`` block says where each cell came from."""
    if not runs:
        raise MergeError("no runs to merge")
    _refuse_context(runs)
    count, missing = _shards(runs)
    entries: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for label, doc in runs:
        for cell in doc["cells"]:
            entries.setdefault(cell["name"], []).append((label, cell))
    kept: dict[str, tuple[str, dict[str, Any]]] = {}
    pinned: list[dict[str, Any]] = []
    for name, found in entries.items():
        own = [(label, c) for label, c in found if not (c.get("shard") or {}).get("pinned")]
        if len(own) > 1:
            raise MergeError(f"cell {name} ran in {' and '.join(Path(label).name for label, _ in own)}: two runs "
                             "of one cell are not merged (their histograms would pool two machines); run each cell "
                             "in one job")
        keep = own[0] if own else found[0]
        kept[name] = keep
        others = [label for label, _ in found if label != keep[0]]
        if others or not own:
            owner = (keep[1].get("shard") or {}).get("owner")
            note: dict[str, Any] = {"cell": name, "kept_from": keep[0], "also_ran_in": others}
            if not own:
                note["note"] = f"its own shard {owner}/{count} is missing: kept the run pinned to another shard"
            pinned.append(note)
    names = list(kept)
    if all("position" in (kept[n][1].get("shard") or {}) for n in names):
        names.sort(key=lambda n: kept[n][1]["shard"]["position"])  # matrix order across shards
    cells = []
    for name in names:
        label, cell = kept[name]
        cell = dict(cell)
        comparison = cell.get("comparison")
        if isinstance(comparison, dict) and not comparison.get("error"):
            base = kept.get(comparison.get("baseline") or "")
            # the comparison was made in this cell's job; is the baseline's row in this report from that job too?
            cell["comparison"] = {**comparison, "side_by_side": base is None or base[0] == label,
                                  "baseline_run": label}
        cells.append(cell)
    return _document(runs, cells, kept, pinned, count, missing)


def verdict(cells: Sequence[dict[str, Any]], missing: Sequence[int] = ()) -> dict[str, Any]:
    """The merged run's verdict from each cell's own outcome: fail if any failed, else invalid if any is invalid
    or a shard is missing (the report is incomplete), else pass."""
    counts = {"pass": 0, "fail": 0, "invalid": 0}
    for c in cells:
        slo = c.get("slo") or {}
        word = slo.get("outcome") or ("pass" if slo.get("passed") else "fail")
        counts[word] = counts.get(word, 0) + 1
    outcome = "fail" if counts["fail"] else "invalid" if counts["invalid"] or missing else "pass"
    return {"outcome": outcome, "counts": counts, "complete": not missing}


def _document(runs: Sequence[Run], cells: list[dict[str, Any]], kept: dict[str, tuple[str, dict[str, Any]]],
              pinned: list[dict[str, Any]], count: int | None, missing: list[int]) -> dict[str, Any]:
    from pytest_wsgi502.report.table import lint_summary

    env = json.loads(json.dumps(runs[0][1]["environment"]))  # a copy: the first run's context is every run's
    env["settings"] = {k: v for k, v in (env.get("settings") or {}).items() if k not in SELECTION_SETTINGS}
    for _, doc in runs[1:]:
        other = doc.get("environment") or {}
        for name, version in (other.get("versions") or {}).items():
            env.setdefault("versions", {}).setdefault(name, version)
        for split in other.get("isolation") or ():
            if split not in env.setdefault("isolation", []):
                env["isolation"].append(split)
    env["machines"] = [{"run": label, **((doc.get("environment") or {}).get("machine") or {})} for label, doc in runs]
    env["machine_speed"] = cells_spread(cells)  # every kept cell's probes, as the merged table's footer reads them
    block = {
        "runs": [{"file": label, "shard": f"{doc['shard']['index']}/{doc['shard']['count']}" if doc.get("shard")
                  else None, "cells": [n for n, (lb, _) in kept.items() if lb == label]} for label, doc in runs],
        "shards": count, "missing_shards": [f"{i}/{count}" for i in missing], "pinned": pinned,
        "verdict": verdict(cells, missing),
    }
    return {"schema": SCHEMA, "created": time.time(), "environment": env, "cells": cells,
            "lint": lint_summary(cells), "merge": block}


def render(doc: dict[str, Any]) -> list[str]:
    """The terminal's lines: the table, then where the cells came from and the verdict (``provenance``)."""
    from pytest_wsgi502.report.table import render_table

    return [*(render_table(doc["cells"]) if doc["cells"] else ["no cells"]), "", *provenance(doc)]


def provenance(doc: dict[str, Any]) -> list[str]:
    """Which run each cell was kept from, the pinned baselines, missing shards and the verdict."""
    block = doc["merge"]
    lines = []
    for run in block["runs"]:
        shard = f"shard {run['shard']}: " if run["shard"] else ""
        lines.append(f"merged {shard}{run['file']}: {', '.join(run['cells']) or 'no cells kept'}")
    for p in block["pinned"]:
        lines.append(f"baseline {p['cell']}: kept from {p['kept_from']}"
                     + (f"; its pinned runs in {', '.join(p['also_ran_in'])} not kept" if p["also_ran_in"] else "")
                     + (f" ({p['note']})" if p.get("note") else ""))
    if block["missing_shards"]:
        lines.append(f"missing shards: {', '.join(block['missing_shards'])} (the report is incomplete)")
    v = block["verdict"]
    lines.append(f"verdict: {v['outcome']} ({v['counts']['pass']} pass, {v['counts']['fail']} fail, "
                 f"{v['counts']['invalid']} invalid{'' if v['complete'] else ', incomplete'})")
    return lines


def main(argv: Sequence[str]) -> int:
    """The ``merge`` command: 0 every cell passed, 1 a cell failed or is invalid or a shard is missing, 2 the
    runs cannot be merged (or a usage error)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pytest_wsgi502.report merge",
                                     description="Merge the --wsgi-json manifests of a sharded (or per-cell) run.")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN.json")
    parser.add_argument("--json", type=Path, required=True, metavar="OUT", help="the merged manifest")
    parser.add_argument("--html", type=Path, metavar="OUT", help="the merged HTML report (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.html:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            print("merge: --html draws with matplotlib: pip install 'pytest-wsgi502[report]'")
            return 2
    try:
        doc = merge(load(args.runs))
    except MergeError as exc:
        print(f"merge: {exc}")
        return 2
    from pytest_wsgi502.report.manifest import write_json

    for line in render(doc):
        print(line)
    write_json(args.json, doc)
    print(f"merged results written to {args.json}")
    if args.html:
        from pytest_wsgi502.report.html import write_html

        print(f"HTML report: {write_html(doc, args.html)}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        from pytest_wsgi502.report.table import render_markdown

        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(render_markdown(doc["cells"]) + "\n" + "".join(f"- {line}\n" for line in provenance(doc)))
    return 0 if doc["merge"]["verdict"]["outcome"] == "pass" else 1
