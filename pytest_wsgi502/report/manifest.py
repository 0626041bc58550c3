"""The JSON manifest (`--wsgi-json`): everything needed to reproduce and compare a run. Schema: README "JSON output".

Versioned by ``"schema"``; later versions add keys, never remove or rename them. Keys are of three kinds, and
``comparable()`` drops the last two so that two runs of the same cell can be checked for "same context":

- context: versions, machine, git commit, backend, settings, the cell's config, rendered server/proxy configs
  (run directory and ports replaced by placeholders), load profile and seed, lint findings, SLOs asked for;
- measurements: what the run observed (``MEASURED_CELL_KEYS``);
- timestamps and run-local allocations: when and where it ran (``VOLATILE_KEYS``: times, run directory, ports),
  and the settings that only say where results go (``OUTPUT_SETTINGS``: --wsgi-json, --wsgi-save, ...).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_wsgi502.metrics.machine import cells_spread

SCHEMA = 1

# what a cell run observed
MEASURED_CELL_KEYS = frozenset({
    "requests", "responses", "status_counts", "http_5xx", "errors", "error_count", "error_rate", "latency_ms", "rps",
    "duration_s", "latency_clamped", "timeline", "histogram", "engine", "generator_bound", "generator_bound_reason",
    "aborted", "respawns", "kills", "telemetry", "proxy", "attribution", "attribution_matches", "files", "slo",
    "readiness",  # the status the readiness path answered and how long the server took to answer it
    "warmup",  # how many requests the warm-up had (its length is the setting, load.spec.warmup)
    "machine_speed",  # the fixed CPU probe timed before and after the load (metrics/machine.py)
})
# when and where it ran; "compare" is derived from measurements (this run's vs a saved one's)
VOLATILE_KEYS = frozenset({"started_at", "ended_at", "timeline_t0", "dir", "ports", "created", "run_dir",
                           "compare", "shard"})
# settings that choose where results go, not what is measured
OUTPUT_SETTINGS = frozenset({"json", "html", "png", "storage", "save", "compare", "compare_fail", "keep_dir"})
# settings that choose which cells this job runs (its share of the matrix), not how a cell runs: the runs of one
# matrix split over jobs differ in them (report/merge.py)
SELECTION_SETTINGS = frozenset({"cells", "shard"})

PACKAGES = ("pytest-wsgi502", "pytest", "pytest-benchmark", "uwsgi", "gunicorn", "django", "httpx", "gevent",
            "mysqlclient", "pymysql", "sqlalchemy", "django-db-connection-pool", "hdrhistogram", "testcontainers")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cores": os.cpu_count(), "memory_bytes": mem, "kernel": platform.release(), "arch": platform.machine(),
            "system": platform.system(), "platform": platform.platform()}


def git_info(where: Path) -> dict[str, Any]:
    """Commit, dirty flag (tracked files changed) and branch of the checkout ``where`` is in (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "branch": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status), "branch": git("rev-parse", "--abbrev-ref", "HEAD")}


def plugin_digest() -> str:
    """sha256 over the plugin's own source files (path and bytes, in path order): the code that made the run. The
    package version stays 0.1.0 across commits and a run outside a git checkout has no commit, so without this two
    shards made by different plugin code look alike to the merge (seen: shards 1-2 of the seed matrix before a
    change to the settings, shard 3 after)."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".toml") and path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def environment(settings: Any, rootdir: Path) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA,  # kept from the first contract; same value as the top-level "schema"
        "backend": settings.backend,  # as set (local, containers, auto); "backend_used" is what ran (build)
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "machine": machine(),
        "git": git_info(rootdir),
        "versions": {d: _version(d) for d in PACKAGES},
        "plugin_digest": plugin_digest(),  # the plugin's source: the merge refuses shards made by different code
        "settings": {name: {"value": r.raw, "source": r.source} for name, r in settings.values.items()},
    }


def build(results: list[dict[str, Any]], settings: Any, rootdir: Path) -> dict[str, Any]:
    env = environment(settings, rootdir)
    for r in results:  # services each cell ran against (the controller of an xdist run did not start them)
        for name, version in (r.get("services") or {}).items():
            env["versions"].setdefault(name, version)
    # what actually ran (--wsgi-backend=auto decides per run): cells in containers carry their engine
    engines = [r["container"]["engine"] for r in results if r.get("container")]
    env["backend_used"] = ("containers" if engines else "local") if results else None
    env["container_engine"] = engines[0] if engines else None
    # the CPU split each cell ran under (services/isolation.py), one entry per distinct split: xdist workers each
    # have their own share of the CPUs
    splits: list[dict[str, Any]] = []
    for r in results:
        if r.get("isolation") and r["isolation"] not in splits:
            splits.append(r["isolation"])
    env["isolation"] = splits
    # how far the machine's own speed moved during the run (metrics/machine.py): a measurement, not a setting
    env["machine_speed"] = cells_spread(results)
    doc: dict[str, Any] = {"schema": SCHEMA, "created": time.time(), "environment": env, "cells": results}
    target = getattr(settings, "target", None)
    if target is not None:  # --wsgi-target: a running service, nothing started here; what the run can say
        from pytest_wsgi502.report.table import CLIENT_CLASSES, REMOTE_NOTE

        addresses = next((r["target"]["addresses"] for r in results if r.get("target")), None)
        doc["target"] = {"url": target, "allow_remote": bool(getattr(settings, "allow_remote", False)),
                         "addresses": addresses, "services_started": [], "attribution": "client",
                         "client_classes": list(CLIENT_CLASSES), "note": REMOTE_NOTE}
    shard = getattr(settings, "shard", None)
    if shard is not None:  # --wsgi-shard: this run is shard I of N (each cell says whether it belongs here)
        doc["shard"] = {"index": shard.index, "count": shard.count}
    return doc


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The manifest minus measurements, timestamps and run-local allocations: equal for two runs of the same
    cells on the same machine, checkout and settings."""
    def strip(d: dict[str, Any], extra: frozenset[str] = frozenset()) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in VOLATILE_KEYS and k not in extra}

    out = strip(doc)
    if "environment" in out:
        env = out["environment"] = dict(out["environment"])
        env["settings"] = {k: v for k, v in env.get("settings", {}).items()
                           if k not in OUTPUT_SETTINGS and k != "shard"}
        env.pop("machine_speed", None)
    out["cells"] = [strip(c, MEASURED_CELL_KEYS) for c in doc.get("cells", [])]
    return out
