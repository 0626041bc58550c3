"""The terminal summary: one row per cell, the numbers the production story is about."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COLUMNS = ("cell", "requests", "502", "5xx", "conn", "reset", "tmout", "verify", "err rate", "<95%", "p50", "p95",
           "p99", "max", "req/s", "respawns", "kills", "5xx causes", "SLO")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}ms" if value >= 100 else f"{value:.1f}ms"


def row(r: dict[str, Any]) -> list[str]:
    sc, err, lat = r.get("status_counts", {}), r.get("errors", {}), r.get("latency_ms", {})
    other_5xx = r.get("http_5xx", 0) - sc.get("502", 0)
    return [
        r["name"], str(r["requests"]), str(sc.get("502", 0)), str(other_5xx), str(err.get("connect", 0)),
        str(err.get("reset", 0)), str(err.get("timeout", 0)), str(err.get("verify", 0)),
        f"{r['error_rate']:.2e}" if r["error_rate"] else "0", _bound(r), _ms(lat.get("p50")), _ms(lat.get("p95")),
        _ms(lat.get("p99")), _ms(lat.get("max")), f"{r['rps']:.0f}", str(r.get("respawns", "-")),
        str(r.get("kills", "-")), causes(r.get("attribution") or {}), outcome(r),
    ]


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
         "server_down": "down", "timeout": "timeout", "db": "db", "unknown": "unknown"}


def causes(counts: dict[str, int]) -> str:
    shown = [f"{SHORT.get(k, k)}:{v}" for k, v in counts.items() if v]
    return " ".join(shown) or "-"


def render_table(results: Sequence[dict[str, Any]]) -> list[str]:
    rows = [list(COLUMNS)] + [row(r) for r in results]
    widths = [max(len(x[i]) for x in rows) for i in range(len(COLUMNS))]

    def fmt(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    lines = [fmt(rows[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(x) for x in rows[1:]]
    lines.append("<95%: the error rate's upper bound at 95 % confidence (0 errors in n requests: ~3/n)")
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
    out = ["### pytest-wsgi502", "", "| " + " | ".join(COLUMNS) + " |",
           "|" + "|".join(":--" if i == 0 else "--:" for i in range(len(COLUMNS))) + "|"]
    for r in results:
        cells = [c.replace("|", "\\|") for c in row(r)]
        if not r["slo"]["passed"]:
            cells[-1] = f"**{outcome(r)}**"
        out.append("| " + " | ".join(cells) + " |")
    failures = [f"- `{r['name']}`: {f}" for r in results for f in r["slo"]["failures"]]
    if failures:
        out += ["", "SLO breaches:", *failures]
    if compare_lines:
        out += ["", "Comparison with the saved run:", "", "```", *compare_lines, "```"]
    return "\n".join(out) + "\n"


def render_lint(results: Sequence[dict[str, Any]]) -> list[str]:
    """Config lint findings once each, with the cells they apply to: ``[code] message (cells: a, b)``. A finding's
    message starts with its cell's name (lint.py); the same finding in several cells is one line."""
    cells_of: dict[tuple[str, str], list[str]] = {}
    for r in results:
        prefix = f"{r['name']}: "
        for f in r.get("lint") or ():
            message = f["message"][len(prefix):] if f["message"].startswith(prefix) else f["message"]
            names = cells_of.setdefault((f["code"], message), [])
            if r["name"] not in names:
                names.append(r["name"])
    return [f"[{code}] {message} (cells: {', '.join(names)})" for (code, message), names in cells_of.items()]

