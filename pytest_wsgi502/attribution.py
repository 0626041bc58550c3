"""Match every 502/504 the proxy returned to its cause (pure: parsed logs in, counts and matches out).

Inputs: the proxy's access log (ms timestamps, status, client connection number), its error log (the reason
nginx gives, tagged with the same connection number ``*N``), and the server's own lifecycle events with
timestamps (uWSGI: our microsecond log stamps; gunicorn: log-line seconds and server-hook times).

Pairing is exact, not by time: nginx handles the requests of one client connection in order, so the k-th
failed request of connection N gets the k-th error line of connection N. The cause then comes from nginx's
reason and the server events around the request:

- ``backlog``: the connect never completed (listen queue full: EAGAIN on a unix socket, a connect timeout on
  TCP, as the kernel drops SYNs) while no worker was exiting: more requests than workers plus queue.
  The same overflow within 5 s after workers exited is ``recycle`` (or ``worker_killed``): the queue filled
  because every worker was down at once.
- ``server_down``: connection refused: nothing listened at all.
- ``worker_killed``: the upstream closed or reset mid-request while a worker was SIGKILLed (harakiri, worker
  timeout, reload-mercy, OOM) within the request's time span (plus 1 s of log slack).
- ``recycle``: same, with a worker exiting on its own (max-requests, lifetime) instead.
- ``keepalive_race``: reset or closed at once on a reused connection with no worker event nearby: the backend
  had closed that idle keep-alive connection just as the proxy sent on it. Only where reuse was possible: when
  every upstream response said ``Connection: close`` (gunicorn's sync worker, ``add-header = Connection: close``)
  the proxy never reused a connection, and such a failure stays ``unknown``.
- ``timeout``: a 504 after the proxy's read timeout.
- ``db``: not a 502 but a 500 the app answered because the database refused or failed (max_connections, a
  pool's limit): counted from the server's own log, one ``django.db.utils.OperationalError`` line per error.
- ``unknown``: anything else, reported, never hidden.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CAUSES = ("keepalive_race", "worker_killed", "recycle", "backlog", "server_down", "timeout", "db", "unknown")
KILL_EVENTS = {"no_mercy", "harakiri", "died_signal", "timeout", "worker_abort"}
EXIT_EVENTS = {"recycle", "lifetime", "exit", "died", "died_code", "worker_exit", "died_other_signal"}
# a worker exit this long before a refused connect counts as its cause: uWSGI's master reaps a dead worker when it
# next wakes (about once a second), a lazy-apps worker then loads the app, and the queue still has to drain
QUEUE_SLACK = 5.0
# a worker's death is logged after the request it cut failed: uWSGI's master reaps once a second (seen 1.03 s
# late), gunicorn's arbiter within its 1 s sleep; the harness stamps each line on arrival
REAP_SLACK = 1.5
_ERR = re.compile(r"\[(?:error|crit)\] \d+#\d+: \*(?P<conn>\d+) (?P<msg>.*?), client:")


@dataclass(frozen=True)
class Failure:
    t: float  # when the proxy logged the response (s)
    status: int
    conn: int
    request_time: float
    uri: str


def read_access_failures(path: Path, since: float = 0.0) -> list[Failure]:
    out: list[Failure] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("t", 0) >= since and rec.get("status") in (502, 503, 504):
            out.append(Failure(rec["t"], rec["status"], int(rec.get("conn", 0)), float(rec.get("request_time", 0)),
                               rec.get("uri", "")))
    return out


def read_error_reasons(path: Path) -> dict[int, deque[str]]:
    """Connection number -> nginx's failure reasons for it, in order."""
    by_conn: dict[int, deque[str]] = defaultdict(deque)
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return by_conn
    for m in _ERR.finditer(text):
        by_conn[int(m["conn"])].append(m["msg"])
    return by_conn


def classify(reason: str, status: int, start: float, end: float, events: Iterable[dict[str, Any]],
             keepalive_reuse: bool = True) -> str:
    """One failure's cause. ``keepalive_reuse``: whether the proxy could have reused an upstream connection at all
    (False when every upstream response said ``Connection: close``): a cause whose precondition the run rules out
    is never chosen."""
    if status == 504 or ("timed out" in reason and "while reading" in reason):
        return "timeout"
    if "Resource temporarily unavailable" in reason or ("timed out" in reason and "while connecting" in reason):
        # the listen queue overflowed; when the workers were recycling or being killed just before, that is
        # why nobody accepted (a joint recycle stalls every worker at once), otherwise plain overload
        near = [e for e in events if e.get("t") is not None and start - QUEUE_SLACK <= e["t"] <= end + 0.5]
        if any(e["kind"] in KILL_EVENTS for e in near):
            return "worker_killed"
        if any(e["kind"] in EXIT_EVENTS for e in near):
            return "recycle"
        return "backlog"
    if "Connection refused" in reason or "(111:" in reason:
        return "server_down"
    if "prematurely closed" in reason or "reset by peer" in reason or "(104:" in reason:
        near = [e for e in events if e.get("t") is not None and start - 1.0 <= e["t"] <= end + REAP_SLACK]
        if any(e["kind"] in KILL_EVENTS for e in near):
            return "worker_killed"
        if any(e["kind"] in EXIT_EVENTS for e in near):
            return "recycle"
        if end - start < 0.05 and keepalive_reuse:  # failed the moment it was sent: the connection was closed
            return "keepalive_race"
    return "unknown"


def attribute(failures: list[Failure], reasons: dict[int, deque[str]],
              events: list[dict[str, Any]], keepalive_reuse: bool = True) -> dict[str, Any]:
    """{"counts": {cause: n, ...}, "matches": [...first 50...]} for every 502/503/504 in ``failures``."""
    counts: Counter[str] = Counter({c: 0 for c in CAUSES})
    matches: list[dict[str, Any]] = []
    for f in failures:
        queue = reasons.get(f.conn)
        reason = queue.popleft() if queue else ""
        cause = classify(reason, f.status, f.t - f.request_time, f.t, events, keepalive_reuse)
        counts[cause] += 1
        if len(matches) < 50:
            matches.append({"t": f.t, "status": f.status, "uri": f.uri, "cause": cause, "reason": reason[:200]})
    return {"counts": dict(counts), "matches": matches}


def reusable(rec: dict[str, Any]) -> bool:
    """Would nginx keep the upstream connection after this response? Only when the response did not say
    ``Connection: close`` and its end was known without the connection closing (a Content-Length or chunked
    body). uWSGI's http-socket answers without either unless the app sets Content-Length, then closes."""
    if str(rec.get("upstream_connection", "")).strip().lower() == "close":
        return False
    te = str(rec.get("upstream_transfer_encoding", "")).lower()
    return bool(str(rec.get("upstream_content_length", "")).strip()) or "chunked" in te


def keepalive_reuse_possible(path: Path, since: float = 0.0) -> bool:
    """Could the proxy have reused an upstream connection in this run? Only after a ``reusable`` response; the
    access log records the headers that decide it. No record of them (an older log format): assume it could."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return True
    seen = False
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("t", 0) < since or "upstream_connection" not in rec or not rec.get("upstream_status"):
            continue
        if rec.get("status") in (502, 503, 504):  # the proxy's own error: no upstream response to reuse after
            continue
        seen = True
        if reusable(rec):
            return True
    return not seen


def attribute_cell(workdir: Path, events: list[dict[str, Any]], since: float, http_500: int = 0) -> dict[str, Any]:
    access = workdir / "proxy-access.log"
    reuse = keepalive_reuse_possible(access, since)
    out = attribute(read_access_failures(access, since), read_error_reasons(workdir / "proxy-error.log"), events,
                    keepalive_reuse=reuse)
    out["keepalive_reuse"] = reuse
    # 500s the app answered because its database refused or failed (the server logged a DB error for each)
    db_errors = sum(1 for e in events if e.get("kind") == "db_error" and (e.get("t") or since) >= since)
    out["counts"]["db"] = min(http_500, db_errors)
    return out
