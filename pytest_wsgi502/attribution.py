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
- ``listener_closed``: connection refused after a lifecycle action (the harness's ``actions``, or the server's own
  reload/shutdown line) sent before the request failed: the server closed its listener (a stop: gunicorn's
  SIGTERM, uWSGI's with die-on-term) while the proxy still routed to it. nginx: ``connect() failed (111:
  Connection refused) while connecting to upstream``.
- ``inflight_cut``: the upstream closed the request (``upstream prematurely closed connection``) at or after a
  lifecycle action that came while it was in flight or at most ``ACTION_SLACK`` before it started (the workers
  are being killed): uWSGI 2.0's SIGTERM without die-on-term is a brutal reload that cuts every request in
  flight. Checked before the worker causes: the workers a reload stops log exits that are the action's doing,
  not a recycle.
- ``queue_reset``: the upstream reset the connection (``recv() failed (104: Connection reset by peer)``) in the
  same window: a connection the kernel had accepted into the listen backlog, whose request no worker read, reset
  when the last listener closed (benoitc/gunicorn#3397, #2409); or one a gthread worker had accepted into its own
  queue and closed unread as it exited (gunicorn 27.0.1 binary upgrade, QUIT to the old master: 1/1/1 in 3 runs).
  Measured on gunicorn 27.0.1 (SIGTERM: the requests in flight were answered, 6/7/7 resets in 3 runs, each after
  waiting 1-2 s in the backlog) and uWSGI 2.0.31 with die-on-term (6-8 resets next to 2 in-flight cuts,
  "upstream prematurely closed").
- ``header_too_large``: the upstream closed the connection without a response and the server logged, for a
  request in that time span, that its headers exceeded its buffer (uWSGI ``invalid request block size: N (max
  4096)...skip``): each server line is used for one 502 at most.
- ``server_down``: connection refused with no lifecycle action before it: nothing listened at all.
- ``worker_killed``: the upstream closed or reset mid-request while a worker was SIGKILLed (harakiri, worker
  timeout, reload-mercy, OOM) within the request's time span (plus 1 s of log slack). Also a 500 from a gunicorn
  worker the arbiter aborted mid-request: on ``WORKER TIMEOUT`` it sends SIGABRT, the worker's handler raises
  SystemExit inside the request and gunicorn answers 500 (``Error handling request``), unless the SIGKILL that
  follows a second later comes first (then the proxy sees a closed connection: 502). Which one the proxy sees is
  a race (a blocking C call such as a DB query defers the handler until it returns), so both count: a 500 is
  the aborted worker's when that worker (same pid) logged ``Error handling request`` for the same URI and was
  aborted, both within the request's time span.
- ``recycle``: same, with a worker exiting on its own (max-requests, lifetime) instead.
- ``keepalive_race``: reset or closed at once on a reused connection with no worker event nearby: the backend
  had closed that idle keep-alive connection just as the proxy sent on it. Only where reuse was possible: when
  every upstream response said ``Connection: close`` (gunicorn's sync worker, ``add-header = Connection: close``)
  the proxy never reused a connection, and such a failure stays ``unknown``.
- ``passive_health``: nginx found no live server (``no live upstreams while connecting to upstream``): an earlier
  error had marked every server of the upstream down for ``fail_timeout`` (nginx's passive health, ``max_fails``;
  the ``nginx`` proxy profile). A request nginx retried carries one error line per failed attempt: its cause is
  that of its first failed attempt on the app (a failed connect to another address that nginx then retried, such
  as ::1 refused, is not why it failed), ``passive_health`` when no attempt reached a server.
- ``routed_to_removed``: a rolling deploy (``do = "rolling"``, several instances behind HAProxy) stopped an instance
  before the load balancer drained it, and the request failed on that instance in between: the LB's access log names
  the server (``s0``...), the deploy's ``stop`` and ``drain`` phases name the same one and bound the time (the
  request was sent before the drain and failed after the stop). The propagation lag of an LB or of Kubernetes
  endpoints: the instance's listener is closed (refused: HAProxy ``SC``, answered 502 like an ALB) or its queued
  connections reset as it closes (``SH``), while the LB still routes to it.
- ``deregistration``: a request still in flight on a draining instance when the deregistration delay ended: the LB
  cut it (HAProxy ``shutdown sessions``, termination ``K``; an ALB answers 502), on the server the deploy's ``cut``
  phase names, at that time.
- ``timeout``: a 504 after the proxy's read timeout.
- ``db``: not a 502 but a 500 the app answered because the database refused or failed (max_connections, a
  pool's limit): counted from the server's own log, one ``django.db.utils.OperationalError`` line per error.
- ``unknown``: anything else, reported, never hidden.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_wsgi502 import nginxlog
from pytest_wsgi502.events import ACTION_PHASE, CRASHED, EXITS, HEADER_TOO_LARGE, KILLS, LIFECYCLE, REQUEST_ERROR
from pytest_wsgi502.nginxlog import Failure, Reason

CAUSES = ("keepalive_race", "worker_killed", "recycle", "backlog", "server_down", "listener_closed", "inflight_cut",
          "queue_reset", "routed_to_removed", "deregistration", "header_too_large", "passive_health", "crashed",
          "timeout", "db", "unknown")
LIFECYCLE_CAUSES = ("listener_closed", "inflight_cut", "queue_reset")  # proven by an action or a server line
ROLLING_CAUSES = ("routed_to_removed", "deregistration")  # proven by the LB's server name and the deploy's phases
# a request the LB cut at the end of the deregistration delay is logged this long after the deploy stamped its
# ``cut`` phase at most (the runtime command returns once HAProxy has killed the streams)
CUT_SLACK = 1.0
# a request that started this long after a lifecycle action can still be cut by it: uWSGI buries the workers of a
# brutal reload within about 2 s (measured on 2.0.31: "worker 2 buried after 2 seconds")
ACTION_SLACK = 3.0
# the harness stamps an action when it sends the signal; a request that failed up to this long before that
# stamp cannot be the action's (log stamps and nginx's ms clock are the same clock, this is scheduling slack)
_STAMP_SLACK = 0.05
# a worker exit this long before a refused connect counts as its cause: uWSGI's master reaps a dead worker when it
# next wakes (about once a second), a lazy-apps worker then loads the app, and the queue still has to drain
QUEUE_SLACK = 5.0
# a worker's death is logged after the request it cut failed: uWSGI's master reaps once a second (seen 1.03 s
# late), gunicorn's arbiter within its 1 s sleep; the harness stamps each line on arrival
REAP_SLACK = 1.5
_NO_REASON = nginxlog.classify_reason("")


def _worker_cause(events: Iterable[dict[str, Any]], lo: float, hi: float) -> str | None:
    """``worker_killed``, ``crashed`` or ``recycle`` when a worker was killed, crashed or exited between ``lo`` and
    ``hi`` (a kill first: gunicorn's timeout kill starts with SIGABRT, which is also a crash signal)."""
    near = [e for e in events if e.get("t") is not None and lo <= e["t"] <= hi]
    if any(e["kind"] in KILLS for e in near):
        return "worker_killed"
    if any(e["kind"] == CRASHED for e in near):
        return "crashed"
    if any(e["kind"] in EXITS for e in near):
        return "recycle"
    return None


def lifecycle_before(events: Iterable[dict[str, Any]], lo: float, hi: float) -> dict[str, Any] | None:
    """The first lifecycle event (a harness action, a reload or shutdown line) between ``lo`` and ``hi``."""
    near = [e for e in events if e.get("kind") in LIFECYCLE and e.get("t") is not None and lo <= e["t"] <= hi]
    return min(near, key=lambda e: e["t"]) if near else None


def _lifecycle_cause(reason: Reason, start: float, end: float, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """(cause, the lifecycle event that proves it) for a refused connect or a cut request after an action."""
    if reason.name == "upstream_refused":  # after a stop the listener stays closed: any action before counts
        event = lifecycle_before(events, float("-inf"), end + _STAMP_SLACK)
        return {"cause": "listener_closed", "event": event} if event else None
    if reason.name in ("upstream_closed", "upstream_reset"):
        event = lifecycle_before(events, start - ACTION_SLACK, end + _STAMP_SLACK)
        cause = "inflight_cut" if reason.name == "upstream_closed" else "queue_reset"
        return {"cause": cause, "event": event} if event else None
    return None


def classify(reason: Reason, status: int, start: float, end: float, events: Iterable[dict[str, Any]],
             keepalive_reuse: bool = True) -> str:
    """One failure's cause. ``keepalive_reuse``: whether the proxy could have reused an upstream connection at all
    (False when every upstream response said ``Connection: close``): a cause whose precondition the run rules out
    is never chosen."""
    if reason.name == "no_live_upstreams":
        return "passive_health"
    timed_out = reason.name == "upstream_timeout"
    if status == 504 or (timed_out and reason.phase == "reading"):
        return "timeout"
    if reason.name == "upstream_backlog_full" or (timed_out and reason.phase == "connecting"):
        # the listen queue overflowed; when the workers were recycling or being killed just before, that is
        # why nobody accepted (a joint recycle stalls every worker at once), otherwise plain overload
        return _worker_cause(events, start - QUEUE_SLACK, end + 0.5) or "backlog"
    events = list(events)
    lifecycle = _lifecycle_cause(reason, start, end, events) if status == 502 else None
    if lifecycle is not None:
        return str(lifecycle["cause"])
    if reason.name == "upstream_refused":
        return "server_down"
    if reason.name in ("upstream_closed", "upstream_reset"):
        cause = _worker_cause(events, start - 1.0, end + REAP_SLACK)
        if cause:
            return cause
        if end - start < 0.05 and keepalive_reuse:  # failed the moment it was sent: the connection was closed
            return "keepalive_race"
    return "unknown"


def rolling_windows(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per instance a rolling deploy replaced: the LB's name for it (``server``) and the ``stop``, ``drain`` and
    ``cut`` phase events of its replacement (servers/fleet.py), from the cell's timeline."""
    windows: dict[tuple[Any, Any], dict[str, Any]] = {}
    for e in events:
        if e.get("kind") != ACTION_PHASE or e.get("action") != "rolling" or e.get("t") is None or not e.get("server"):
            continue
        w = windows.setdefault((e.get("at"), e.get("instance")), {"server": e["server"]})
        if e.get("phase") in ("stop", "drain", "cut"):
            w[e["phase"]] = e
    return list(windows.values())


def rolling_cause(server: str, termination: str, start: float, end: float,
                  windows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """(cause, the phase event that proves it) for a failure on LB server ``server`` during a rolling deploy:
    ``deregistration`` when the LB cut it (termination ``K``, or failed at the ``cut``) on the instance being cut;
    ``routed_to_removed`` when it was sent before that instance's drain and failed after its stop, the stop having
    come first (a stop after the drain leaves no such time)."""
    for w in windows:
        if not server or w["server"] != server:
            continue
        cut = w.get("cut")
        if cut is not None and cut["t"] - _STAMP_SLACK <= end <= cut["t"] + CUT_SLACK and (
                termination.startswith("K") or start <= cut["t"]):
            return "deregistration", cut
        stop, drain = w.get("stop"), w.get("drain")
        drained = drain["t"] if drain is not None else float("inf")  # the load ended before the drain
        if stop is not None and stop["t"] < drained and end >= stop["t"] - _STAMP_SLACK \
                and start <= drained + _STAMP_SLACK:
            return "routed_to_removed", stop
    return None


def deciding(attempts: list[Reason]) -> Reason:
    """The reason that decided a request's failure among its failed attempts' (in order): the first that is not a
    failed connect nginx retried elsewhere (refused on ::1, or any error while connecting) nor ``no live
    upstreams``; else the last."""
    for i, reason in enumerate(attempts):
        retried = reason.phase == "connecting" and i < len(attempts) - 1
        if not retried and reason.name != "no_live_upstreams":
            return reason
    return attempts[-1] if attempts else _NO_REASON


def attribute(failures: list[Failure], reasons: dict[int, deque[Reason]],
              events: list[dict[str, Any]], keepalive_reuse: bool = True,
              servers: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """{"counts": {cause: n, ...}, "matches": [...first 50...]} for every 502/503/504 in ``failures``. ``servers``:
    per failure, the LB's server name and termination state (HAProxy's log; nginx's has neither), which a rolling
    deploy's causes need."""
    counts: Counter[str] = Counter({c: 0 for c in CAUSES})
    matches: list[dict[str, Any]] = []
    too_large = deque(sorted(e["t"] for e in events if e.get("kind") == HEADER_TOO_LARGE and e.get("t") is not None))
    windows = rolling_windows(events) if servers else []
    for i, f in enumerate(failures):
        queue = reasons.get(f.conn) or deque()
        for _ in range(min(f.skip, len(queue))):  # lines of requests nginx retried into a success
            queue.popleft()
        reason = deciding([queue.popleft() for _ in range(min(f.attempts, len(queue)))])
        server, termination = servers[i] if servers and i < len(servers) else ("", "")
        rolled = rolling_cause(server, termination, f.t - f.request_time, f.t, windows) if windows else None
        cause = rolled[0] if rolled else classify(reason, f.status, f.t - f.request_time, f.t, events,
                                                  keepalive_reuse)
        if cause not in (*LIFECYCLE_CAUSES, *ROLLING_CAUSES) and reason.name in ("upstream_closed", "upstream_reset"):
            # the server refused this request's headers: one of its lines in the request's span (stamp slack)
            lo, hi = f.t - f.request_time - _STAMP_SLACK, f.t + REAP_SLACK
            while too_large and too_large[0] < lo - QUEUE_SLACK:  # failures come in log order: older lines are spent
                too_large.popleft()
            hit = next((i for i, t in enumerate(too_large) if lo <= t <= hi), None)
            if hit is not None:
                del too_large[hit]
                cause = "header_too_large"
        counts[cause] += 1
        if len(matches) < 50:
            match = {"t": f.t, "status": f.status, "uri": f.uri, "cause": cause, "reason": reason.text[:200]}
            if cause in LIFECYCLE_CAUSES:  # the action or server line that proves it
                found = _lifecycle_cause(reason, f.t - f.request_time, f.t, events)
                match["event"] = str(((found or {}).get("event") or {}).get("line", ""))[:200]
            if rolled:  # the deploy's phase that proves it, and the LB's server the request went to
                match.update(event=str(rolled[1].get("line", ""))[:200], server=server, termination=termination)
            matches.append(match)
    return {"counts": dict(counts), "matches": matches}


def aborted_requests(errors: list[Failure], events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The 500s in ``errors`` (``nginxlog.app_errors``) a worker answered as it was being killed: one match each
    (the same shape as ``attribute``'s), every server error line used once. A 500 with no such line, or whose
    worker was not killed while the request ran, is left to other causes (the database, or none)."""
    events = list(events)
    kills: defaultdict[int, list[float]] = defaultdict(list)
    for e in events:
        if e.get("kind") in KILLS and e.get("pid") is not None and e.get("t") is not None:
            kills[e["pid"]].append(e["t"])
    lines = [e for e in events if e.get("kind") == REQUEST_ERROR and e.get("pid") is not None
             and e.get("t") is not None]
    used: set[int] = set()
    matches: list[dict[str, Any]] = []
    for f in errors:
        lo, hi = f.t - f.request_time - 1.0, f.t + REAP_SLACK
        for i, e in enumerate(lines):
            if i in used or not lo <= e["t"] <= hi:
                continue
            if f.uri and not str(e.get("line", "")).endswith(" " + f.uri):  # another request of that worker
                continue
            if any(lo <= t <= hi for t in kills[e["pid"]]):
                used.add(i)
                matches.append({"t": f.t, "status": f.status, "uri": f.uri, "cause": "worker_killed",
                                "reason": str(e.get("line", ""))[:200]})
                break
    return matches


def attribute_cell(workdir: Path, events: list[dict[str, Any]], since: float, http_500: int = 0) -> dict[str, Any]:
    records = nginxlog.read_access_log(workdir / nginxlog.ACCESS_LOG, since)
    reuse = nginxlog.keepalive_reuse_possible(records)
    servers = None
    if any(rec.get("lb") == "haproxy" for rec in records):  # no error log: the reasons are termination states
        reasons = nginxlog.haproxy_reasons(records)
        servers = [(str(rec.get("server", "")), str(rec.get("termination", ""))) for rec in records
                   if rec.get("status") in nginxlog.FAILED]  # one per failure, in the order of ``failures``
    else:
        reasons = nginxlog.reasons_by_connection(nginxlog.read_error_log(workdir / nginxlog.ERROR_LOG))
    out = attribute(nginxlog.failures(records), reasons, events, keepalive_reuse=reuse, servers=servers)
    out["keepalive_reuse"] = reuse
    # 500s a worker answered as the server aborted it mid-request (gunicorn's timeout): the kill's, like its 502s
    aborted = aborted_requests(nginxlog.app_errors(records), events)
    out["counts"]["worker_killed"] += len(aborted)
    out["matches"].extend(aborted[:max(0, 50 - len(out["matches"]))])
    # 500s the app answered because its database refused or failed (the server logged a DB error for each)
    db_errors = sum(1 for e in events if e.get("kind") == "db_error" and (e.get("t") or since) >= since)
    out["counts"]["db"] = min(max(0, http_500 - len(aborted)), db_errors)
    return out
