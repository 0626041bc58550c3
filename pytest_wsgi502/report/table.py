"""The terminal summary: one row per cell, the numbers the production story is about."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_wsgi502.metrics.machine import cells_spread, summary_line

COLUMNS = ("cell", "requests", "502", "5xx", "conn", "reset", "tmout", "verify", "err rate", "<95%", "p50", "p95",
           "p99", "max", "req/s", "respawns", "kills", "5xx causes", "SLO")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}ms" if value >= 100 else f"{value:.1f}ms"


BASELINE_COLUMN = "vs baseline"

# --wsgi-target: what a run against a running service can say, in the header, the table, the JSON and the HTML
REMOTE_NOTE = ("remote target: no local servers, MariaDB or proxy started; SLOs judge what the client sees and "
               "5xx causes are limited to client-side classes (HTTP status, connect/reset/timeout/protocol/verify "
               "errors): the server's events and the proxy's logs are not visible")
# the client-side classes a remote target's result counts under ``attribution`` (``attribution_scope: client``)
CLIENT_CLASSES = ("http_502", "http_503", "http_504", "http_5xx_other", "connect", "reset", "timeout", "protocol",
                  "verify")


def client_classes(result: dict[str, Any]) -> dict[str, int]:
    """What the client saw, by class: 502/503/504 and other 5xx statuses, and the transport/verify errors."""
    sc, err = result.get("status_counts") or {}, result.get("errors") or {}
    named = {f"http_{code}": int(sc.get(code, 0)) for code in ("502", "503", "504")}
    other = int(result.get("http_5xx") or 0) - sum(named.values())
    return {**named, "http_5xx_other": other, **{k: int(err.get(k, 0)) for k in CLIENT_CLASSES[4:]}}


def columns(results: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The table's columns: "vs baseline" before the SLO column when a cell was compared with a baseline."""
    if any(r.get("comparison") for r in results):
        return (*COLUMNS[:-1], BASELINE_COLUMN, COLUMNS[-1])
    return COLUMNS


def _pm(r: dict[str, Any], metric: str, fmt: Any) -> str | None:
    """``mean±half`` of a per-repeat metric (95 % t interval over the repeats), None for a single run."""
    iv = (r.get("intervals") or {}).get(metric) or {}
    if iv.get("n", 0) < 2 or iv.get("lo") is None:
        return None
    return f"{fmt(iv['mean'])}±{fmt((iv['hi'] - iv['lo']) / 2)}"


def row(r: dict[str, Any], baseline_column: bool = False) -> list[str]:
    sc, err, lat = r.get("status_counts", {}), r.get("errors", {}), r.get("latency_ms", {})
    other_5xx = r.get("http_5xx", 0) - sc.get("502", 0)
    cells = [
        r["name"], str(r["requests"]), str(sc.get("502", 0)), str(other_5xx), str(err.get("connect", 0)),
        str(err.get("reset", 0)), str(err.get("timeout", 0)), str(err.get("verify", 0)),
        f"{r['error_rate']:.2e}" if r["error_rate"] else "0", _bound(r), _ms(lat.get("p50")), _ms(lat.get("p95")),
        _pm(r, "p99", _ms) or _ms(lat.get("p99")), _ms(lat.get("max")),
        _pm(r, "rps", lambda v: f"{v:.0f}") or f"{r['rps']:.0f}", str(r.get("respawns", "-")),
        str(r.get("kills", "-")), _causes(r), outcome(r),
    ]
    if baseline_column:
        cells.insert(len(cells) - 1, _versus(r))
    return cells


def _versus(r: dict[str, Any]) -> str:
    from pytest_wsgi502.metrics.comparison import summary

    comparison = r.get("comparison")
    if not comparison:
        return "-"
    if comparison.get("error"):
        return f"{comparison['baseline']}: no run"
    apart = " (not side by side)" if comparison.get("side_by_side") is False else ""
    return f"{comparison['baseline']}: {summary(comparison)}{apart}"


def outcome(r: dict[str, Any]) -> str:
    """The cell's outcome as the table shows it: pass, FAIL (an SLO breached) or INVALID (says nothing)."""
    word = r["slo"].get("outcome") or ("pass" if r["slo"]["passed"] else "fail")
    return word if word == "pass" else word.upper()


def _bound(r: dict[str, Any]) -> str:
    """The error rate's 95 % upper bound: 0 errors in n requests only shows a rate below ~3/n."""
    from pytest_wsgi502.slo import error_rate_upper_bound

    n = int(r.get("requests") or 0)
    return f"{error_rate_upper_bound(int(r.get('error_count') or 0), n):.1e}" if n else "-"


SHORT = {"keepalive_race": "race", "worker_killed": "killed", "recycle": "recycle", "backlog": "backlog",
         "server_down": "down", "listener_closed": "closed", "inflight_cut": "cut", "queue_reset": "queued",
         "header_too_large": "header", "passive_health": "health", "crashed": "crash",
         "routed_to_removed": "removed", "deregistration": "dereg",
         "timeout": "timeout", "db": "db", "unknown": "unknown"}


def causes(counts: dict[str, int]) -> str:
    shown = [f"{SHORT.get(k, k)}:{v}" for k, v in counts.items() if v]
    return " ".join(shown) or "-"


CLIENT_SHORT = {"http_502": "502", "http_503": "503", "http_504": "504", "http_5xx_other": "5xx", "connect": "conn",
                "reset": "reset", "timeout": "tmout", "protocol": "proto", "verify": "verify"}


def _causes(r: dict[str, Any]) -> str:
    """The causes column; a remote target's counts are client-side classes, not causes, and say so."""
    counts = r.get("attribution") or {}
    if r.get("attribution_scope") != "client":
        return causes(counts)
    shown = [f"{CLIENT_SHORT.get(k, k)}:{v}" for k, v in counts.items() if v]
    return "client-side only" + (": " + " ".join(shown) if shown else "")


def render_table(results: Sequence[dict[str, Any]]) -> list[str]:
    header = columns(results)
    rows = [list(header)] + [row(r, len(header) > len(COLUMNS)) for r in results]
    widths = [max(len(x[i]) for x in rows) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    lines = [fmt(rows[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(x) for x in rows[1:]]
    lines.append("<95%: the error rate's upper bound at 95 % confidence (0 errors in n requests: ~3/n)")
    repeats = max((len(r.get("repeats") or ()) for r in results), default=0)
    if repeats > 1:
        lines.append(f"±: 95 % t interval over the {repeats} repeats (p99: of each repeat's p99; the SLO judges "
                     "all requests pooled)")
    if len(header) > len(COLUMNS):
        lines.append("vs baseline: better / worse / same = a difference shown at 95 % or not, for all the cells "
                     "compared with one baseline together (Bonferroni: n cells, each at 1 - 0.05/n) (error rate: exact "
                     "conditional binomial on counts divided by their dispersion (quasi-Poisson: 502s come in "
                     "bursts), between repeats when both sides have them, else between the seconds of each run; "
                     "req/s and p99: Welch t over the repeats, needs --wsgi-repeat >= 2)")
    machine = summary_line(cells_spread(results))
    if machine:
        lines.append(machine)
    if any(r.get("attribution_scope") == "client" for r in results):
        lines.append(REMOTE_NOTE)
    if any((r.get("comparison") or {}).get("side_by_side") is False for r in results):
        lines.append("not side by side: the cell and its baseline's row ran in different shards (merged runs); "
                     "its comparison is with the baseline's run in its own shard")
    for r in results:
        invalid = r["slo"].get("invalid") or []
        for reason in invalid:
            lines.append(f"{r['name']}: INVALID run: {reason}")
        for failure in r["slo"]["failures"]:
            if failure not in invalid:
                lines.append(f"{r['name']}: SLO breached: {failure}")
    return lines


def render_markdown(results: Sequence[dict[str, Any]], compare_lines: Sequence[str] = ()) -> str:
    """The same table as GitHub-flavoured Markdown (for $GITHUB_STEP_SUMMARY), breached SLOs listed below."""
    header = columns(results)
    out = ["### pytest-wsgi502", "", "| " + " | ".join(header) + " |",
           "|" + "|".join(":--" if i == 0 else "--:" for i in range(len(header))) + "|"]
    for r in results:
        cells = [c.replace("|", "\\|") for c in row(r, len(header) > len(COLUMNS))]
        if not r["slo"]["passed"]:
            cells[-1] = f"**{outcome(r)}**"
        out.append("| " + " | ".join(cells) + " |")
    failures = [f"- `{r['name']}`: {f}" for r in results for f in r["slo"]["failures"]]
    if failures:
        out += ["", "SLO breaches:", *failures]
    if compare_lines:
        out += ["", "Comparison with the saved run:", "", "```", *compare_lines, "```"]
    return "\n".join(out) + "\n"


def lint_summary(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Config lint findings once each, with the cells they apply to: ``{"code", "message", "cells"}`` (the
    JSON's top-level ``lint``, the HTML's lint section, the terminal's block). A finding's message starts with its
    cell's name (lint.py); the same finding in several cells is one entry, in the order first met."""
    cells_of: dict[tuple[str, str], list[str]] = {}
    for r in results:
        prefix = f"{r['name']}: "
        for f in r.get("lint") or ():
            message = f["message"][len(prefix):] if f["message"].startswith(prefix) else f["message"]
            names = cells_of.setdefault((f["code"], message), [])
            if r["name"] not in names:
                names.append(r["name"])
    return [{"code": code, "message": message, "cells": names} for (code, message), names in cells_of.items()]


def render_lint(results: Sequence[dict[str, Any]]) -> list[str]:
    """The terminal's lint block: ``[code] message (cells: a, b)``, one line per finding."""
    return [f"[{f['code']}] {f['message']} (cells: {', '.join(f['cells'])})" for f in lint_summary(results)]
