"""The HTML report (`--wsgi-html`) and PNG export (`--wsgi-png`), drawn with matplotlib.

One self-contained file: the charts are inline SVG, no script, nothing fetched at view time. Per cell, a
timeline of req/s, errors per second (502 / other 5xx / no response) and p99, with the server's worker events
drawn across all three: respawns as green dashed lines, kills (SIGKILL: NO MERCY, harakiri, worker timeout,
signal 9) as red solid lines. A matrix overview shows each cell's error rate with its 95 % upper bound and its
p99 with a 95 % order-statistic interval.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import Any

from pytest_wsgi502.events import ACTION, ACTION_PHASE, CRASHED, KILLS, RESPAWNS

RESPAWN_COLOR = "#00b050"  # green: used for nothing else, so a picture test can look for it
KILL_COLOR = "#e00000"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def event_offsets(cell: dict[str, Any]) -> dict[str, list[float]]:
    """Worker events as seconds since the load started, within the load (not the initial forks or our stop)."""
    started, end = cell.get("started_at"), cell.get("duration_s") or 0
    out: dict[str, list[float]] = {"respawn": [], "kill": [], "crash": [], "action": [], "phase": []}
    if started is None:
        return out
    for e in (cell.get("telemetry") or {}).get("events", []):
        if e.get("t") is None or not -0.5 <= e["t"] - started <= end:
            continue
        if e["kind"] in RESPAWNS:
            out["respawn"].append(e["t"] - started)
        elif e["kind"] in KILLS:
            out["kill"].append(e["t"] - started)
        elif e["kind"] == CRASHED:  # a worker died of SIGSEGV or another fatal signal of its own
            out["crash"].append(e["t"] - started)
        elif e["kind"] == ACTION:  # a lifecycle action the harness sent (reload, term)
            out["action"].append(e["t"] - started)
        elif e["kind"] == ACTION_PHASE:  # a phase of it seen in the server's processes (new workers ready, ...)
            out["phase"].append(e["t"] - started)
    return out


def action_labels(cell: dict[str, Any]) -> list[tuple[float, str]]:
    """(seconds since the load started, label) for each lifecycle action and each of its phases within the load:
    the timeline names them, so a reader sees which errors fell between "hup" and "new workers ready"."""
    started, end = cell.get("started_at"), cell.get("duration_s") or 0
    if started is None:
        return []
    out = []
    for e in (cell.get("telemetry") or {}).get("events", []):
        if e.get("t") is None or not -0.5 <= e["t"] - started <= end:
            continue
        if e["kind"] == ACTION:
            out.append((e["t"] - started, str(e.get("action") or "action")))
        elif e["kind"] == ACTION_PHASE:  # a rolling deploy's steps name their instance: "stop 1", "drain 2"
            label = str(e.get("phase") or "phase")
            out.append((e["t"] - started, f"{label} {e['instance']}" if e.get("instance") else label))
    return out


def timeline_figure(cell: dict[str, Any]) -> Any:
    plt = _pyplot()
    series = cell.get("timeline") or []
    t0, started, ended = cell.get("timeline_t0"), cell.get("started_at"), cell.get("ended_at")
    shift = (started - t0) if (t0 is not None and started) else 0.0
    t = [p["t"] + 0.5 - shift for p in series]  # each point: the middle of its wall second, on a load-start axis
    rps = [float(p["requests"]) for p in series]
    if series and t0 is not None and started and ended:  # the first and last seconds are partial: scale to /s
        first = min(1.0, t0 + 1 - started)
        last = min(1.0, ended - (t0 + series[-1]["t"]))
        if first > 0.05:
            rps[0] /= first
        if len(rps) > 1 and last > 0.05:
            rps[-1] /= last
    fig, (ax_rps, ax_err, ax_p99) = plt.subplots(3, 1, figsize=(9, 5.6), sharex=True,
                                                   gridspec_kw={"height_ratios": [3, 2, 3]})
    ax_rps.plot(t, rps, color="#1f77b4", lw=1.5)
    ax_rps.set_ylim(bottom=0)
    ax_rps.set_ylabel("req/s")
    e502 = [p["errors"].get("502", 0) for p in series]
    e5xx = [sum(v for k, v in p["errors"].items() if k.isdigit() and k.startswith("5") and k != "502")
            for p in series]
    etx = [sum(v for k, v in p["errors"].items() if not k.isdigit()) for p in series]
    ax_err.bar(t, e502, width=0.9, color="#ff7f0e", label="502")
    ax_err.bar(t, e5xx, width=0.9, bottom=e502, color="#8c564b", label="other 5xx")
    ax_err.bar(t, etx, width=0.9, bottom=[a + b for a, b in zip(e502, e5xx, strict=True)], color="#9467bd",
               label="no response / verify")
    ax_err.set_ylabel("errors/s")
    ax_err.set_ylim(bottom=0, top=max([1.0] + [a + b + c for a, b, c in zip(e502, e5xx, etx, strict=True)]) * 1.15)
    ax_err.legend(loc="upper right", fontsize=7, ncols=3, frameon=False)
    ax_p99.plot(t, [p["p99_ms"] for p in series], color="#444444", lw=1.5, marker=".", ms=3)
    ax_p99.set_ylabel("p99 ms")
    ax_p99.set_ylim(bottom=0)
    ax_p99.set_xlim(0, max(1.0, cell.get("duration_s") or 0))
    ax_p99.set_xlabel("seconds since the load started")
    events = event_offsets(cell)
    for ax in (ax_rps, ax_err, ax_p99):
        ax.grid(alpha=0.25)
        for x in events["respawn"]:
            ax.axvline(x, color=RESPAWN_COLOR, ls="--", lw=1.6)
        for x in events["kill"]:
            ax.axvline(x, color=KILL_COLOR, ls="-", lw=2.0)
        for x in events["crash"]:
            ax.axvline(x, color=KILL_COLOR, ls="-.", lw=2.0)
        for x in events["action"]:
            ax.axvline(x, color="#000000", ls=":", lw=1.8)
        for x in events["phase"]:
            ax.axvline(x, color="#7f7f7f", ls=":", lw=1.0)
    top = ax_rps.get_ylim()[1]
    for i, (x, label) in enumerate(action_labels(cell)):  # staggered so close phases stay readable
        ax_rps.annotate(label, (x, top), xytext=(2, -8 - 9 * (i % 3)), textcoords="offset points", fontsize=6,
                        rotation=0, va="top", color="#333333")
    counts = f"{len(events['respawn'])} respawns (green dashed), {len(events['kill'])} kills (red)"
    if events["crash"]:
        counts += f", {len(events['crash'])} crashes (red dash-dot)"
    if events["action"]:
        counts += f", {len(events['action'])} actions (black dotted)"
    if events["phase"]:
        counts += f", {len(events['phase'])} phases (grey dotted)"
    rate = cell.get("error_rate") or 0
    fig.suptitle(f"{cell['name']}: {cell.get('requests', 0):,} requests, error rate {rate:.2e}, {counts}",
                 fontsize=9)
    fig.tight_layout()
    return fig


def p99_interval(cell: dict[str, Any], q: float = 0.99) -> tuple[float, float] | None:
    """95 % distribution-free interval of the q-quantile (ms) from the histogram, by binomial ranks. It treats
    requests as independent, which loaded servers are not (slow seconds come in runs), so read it as a floor
    on the real uncertainty."""
    from hdrh.histogram import HdrHistogram

    if not cell.get("histogram") or not cell.get("responses"):
        return None
    h = HdrHistogram.decode(cell["histogram"])
    n = h.get_total_count()
    half = 1.96 * math.sqrt(n * q * (1 - q))
    lo, hi = max(0.0, n * q - half), min(float(n), n * q + half + 1)
    return (h.get_value_at_percentile(100 * lo / n) / 1000, h.get_value_at_percentile(100 * hi / n) / 1000)


def overview_figure(cells: list[dict[str, Any]]) -> Any:
    from pytest_wsgi502.slo import error_rate_upper_bound

    plt = _pyplot()
    names = [c["name"] for c in cells]
    y = list(range(len(cells)))
    fig, (ax_e, ax_p) = plt.subplots(1, 2, figsize=(10, 0.45 * len(cells) + 1.4), sharey=True)
    rates = [c.get("error_rate") or 0.0 for c in cells]
    uppers = [error_rate_upper_bound(int(c.get("error_count") or 0), int(c.get("requests") or 0))
              if c.get("requests") else 0.0 for c in cells]
    ax_e.barh(y, rates, color="#ff7f0e")
    ax_e.errorbar(rates, y, xerr=[[0] * len(cells), [u - r for u, r in zip(uppers, rates, strict=True)]],
                  fmt="none", ecolor="#333333", capsize=3)
    ax_e.set_xscale("symlog", linthresh=1e-5)
    ax_e.set_xlabel("error rate (bar) and its 95 % upper bound")
    p99 = [(c.get("latency_ms") or {}).get("p99") or 0.0 for c in cells]
    intervals = [p99_interval(c) or (v, v) for c, v in zip(cells, p99, strict=True)]
    ax_p.barh(y, p99, color="#1f77b4")
    ax_p.errorbar(p99, y, xerr=[[max(0.0, v - lo) for v, (lo, _) in zip(p99, intervals, strict=True)],
                                [max(0.0, hi - v) for v, (_, hi) in zip(p99, intervals, strict=True)]],
                  fmt="none", ecolor="#333333", capsize=3)
    ax_p.set_xlabel("p99 ms (95 % interval)")
    ax_e.set_yticks(y, names)
    ax_e.invert_yaxis()
    for ax in (ax_e, ax_p):
        ax.grid(axis="x", alpha=0.25)
    fig.tight_layout()
    return fig


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline SVG in HTML


def write_png(doc: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    cells = doc.get("cells", [])
    if cells:
        path = directory / "overview.png"
        overview_figure(cells).savefig(path, dpi=110)
        out.append(path)
    for cell in cells:
        path = directory / f"timeline-{cell['name']}.png"
        fig = timeline_figure(cell)
        fig.savefig(path, dpi=110)
        _pyplot().close(fig)
        out.append(path)
    _pyplot().close("all")
    return out


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;font-size:12px;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 6px;
text-align:right}td:first-child,th:first-child{text-align:left}.fail{color:#b00;font-weight:600}
section{margin:28px 0}h2{font-size:17px;margin-bottom:4px}code{background:#f3f3f3;padding:0 3px}
.meta{color:#555;font-size:12px}svg{max-width:100%;height:auto}"""


def render_html(doc: dict[str, Any]) -> str:
    from pytest_wsgi502.report.table import COLUMNS, columns, lint_summary, row

    cells = doc.get("cells", [])
    env = doc.get("environment", {})
    git = env.get("git") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    machine = env.get("machine") or {}
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>pytest-wsgi502 report</title>",
        f"<style>{_CSS}</style></head><body><h1>pytest-wsgi502 report</h1>",
        f"<p class='meta'>backend {esc(str(env.get('backend')))} · commit {esc(str(git.get('commit')))[:12]}"
        f"{' (dirty)' if git.get('dirty') else ''} · {machine.get('cores')} cores, "
        f"{(machine.get('memory_bytes') or 0) / 2**30:.1f} GiB, kernel {esc(str(machine.get('kernel')))}<br>"
        f"{esc(versions)}</p>",
    ]
    target = doc.get("target")
    if target:  # --wsgi-target: say what a run against a running service can and cannot show
        parts.append(f"<section id='target'><h2>Remote target</h2><p>load went to <code>{esc(str(target['url']))}"
                     f"</code> ({esc(', '.join(target.get('addresses') or []))})</p><p class='meta'>"
                     f"{esc(target['note'])}</p></section>")
    merged = doc.get("merge")
    if merged:  # python -m pytest_wsgi502.report merge: where each cell ran
        lines = [f"{'shard ' + r['shard'] + ': ' if r['shard'] else ''}{r['file']}: {', '.join(r['cells']) or '-'}"
                 for r in merged["runs"]]
        lines += [f"baseline {p['cell']} kept from {p['kept_from']}"
                  + (f", also ran in {', '.join(p['also_ran_in'])}" if p["also_ran_in"] else "")
                  for p in merged["pinned"]]
        if merged["missing_shards"]:
            lines.append(f"missing shards: {', '.join(merged['missing_shards'])} (incomplete)")
        v = merged["verdict"]
        lines.append(f"verdict: {v['outcome']} ({v['counts']['pass']} pass, {v['counts']['fail']} fail, "
                     f"{v['counts']['invalid']} invalid)")
        parts.append("<section id='merge'><h2>Merged runs</h2><ul>"
                     + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul></section>")
    if cells:
        header = columns(cells)
        parts.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in header) + "</tr>")
        for c in cells:
            values = row(c, len(header) > len(COLUMNS))
            cls = "" if c["slo"]["passed"] else " class='fail'"
            parts.append(f"<tr{cls}>" + "".join(f"<td>{esc(v)}</td>" for v in values) + "</tr>")
        parts.append("</table>")
        parts.append("<section id='overview'><h2>Matrix overview</h2>" + _svg(overview_figure(cells)) + "</section>")
    findings = doc.get("lint") if "lint" in doc else lint_summary(cells)
    if findings:  # once per finding with the cells it applies to, as in the terminal summary
        items = "".join(f"<li><code>{esc(f['code'])}</code> {esc(f['message'])} "
                        f"<span class='meta'>(cells: {esc(', '.join(f['cells']))})</span></li>" for f in findings)
        parts.append(f"<section id='lint'><h2>Config lint</h2><ul>{items}</ul></section>")
    for c in cells:
        failures = "".join(f"<li class='fail'>{esc(f)}</li>" for f in c["slo"]["failures"])
        parts.append(f"<section id='cell-{esc(c['name'])}'><h2>{esc(c['name'])}</h2>"
                     f"<p class='meta'>{esc(c.get('description') or '')}</p>"
                     + (f"<ul>{failures}</ul>" if failures else "") + _svg(timeline_figure(c)) + "</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(doc: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render_html(doc))
    tmp.replace(path)
    return path
