"""The proxy's two logs, defined and read in one place (pure: files handed in, plain data out).

- The **access log** is one JSON object per request, in the format ``ACCESS_LOG_FORMAT`` that ``proxy.py`` writes
  into nginx's config: the time (``t``, seconds with ms), the status the client saw, the client connection number
  (``conn``), the upstream's status and address, times, the URI, and three upstream response headers
  (``upstream_connection``, ``upstream_content_length``, ``upstream_transfer_encoding``) that decide whether nginx
  could keep the upstream connection for the next request (``reusable``). ``read_access_log`` parses it once;
  counts, failures and reuse are functions of the records.
- The **error log** keeps nginx's reason for each failed request, tagged with the same connection number
  (``*N``). ``read_error_log`` parses it once and ``classify_reason`` names each reason once; the counts in a
  cell's result (``proxy.error_reasons``) and the attribution of each 502 (``attribution.py``) both use them.
- **HAProxy** (``haproxy.py``, cells with several targets) writes the same access log shape
  (``HAPROXY_LOG_FORMAT``, plus ``server`` and ``termination``; a client that closed first is read as 460) and has
  no error log: the reason of each failure
  is its termination state, named in the same vocabulary by ``termination_reason``; ``haproxy_reasons`` gives
  them keyed like ``reasons_by_connection``, so attribution treats both proxies alike.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCESS_LOG = "proxy-access.log"  # file names inside a cell's directory
ERROR_LOG = "proxy-error.log"

ACCESS_LOG_FORMAT = (
    # status: what the LB logs (the alb profile logs nginx's 499, a client that closed first, as ALB's 460);
    # nginx_status: nginx's own $status
    '{"t":$msec,"status":$lb_status,"nginx_status":$status,"conn":$connection,"upstream_status":"$upstream_status","upstream_addr":"$upstream_addr",'
    '"request_time":$request_time,"upstream_time":"$upstream_response_time","uri":"$request_uri",'
    # whether nginx could keep the upstream connection after this response (``reusable``)
    '"upstream_connection":"$upstream_http_connection","upstream_content_length":"$upstream_http_content_length",'
    '"upstream_transfer_encoding":"$upstream_http_transfer_encoding"}'
)
# HAProxy's access log in the same shape (haproxy.py renders it single-quoted: no "'" in it). Numbers HAProxy
# logs in ms are written with an exponent (``%Ta`` then ``e-3``: 15e-3 is 0.015 s), so t and the times are
# seconds like nginx's; ``t`` is the log time (``date`` in ms), like $msec. ``conn`` is HAProxy's request counter
# (unique per request: there are no retries to pair), ``client_port`` the client connection. ``upstream_status``
# and the three upstream headers are set only from a server's response (``http-response`` rules), so a response
# HAProxy made itself logs "-"/"" there. ``upstream_time`` is the time to the response headers (-0.001: none).
HAPROXY_LOG_FORMAT = (
    '{"t":%[date(0,ms)]e-3,"status":%ST,"conn":%rt,"client_port":%cp,"server":"%s","termination":"%tsc",'
    '"upstream_status":"%[var(txn.upstream_status,-)]","upstream_addr":"%si:%sp",'
    '"request_time":%Ta%[str(e-3)],"upstream_time":%Tr%[str(e-3)],"connect_time":%Tc%[str(e-3)],"retries":%rc,'
    '"uri":"%[capture.req.uri,json(utf8ps)]","upstream_connection":"%[var(txn.upstream_connection,),json(utf8ps)]",'
    '"upstream_content_length":"%[var(txn.upstream_content_length,),json(utf8ps)]",'
    '"upstream_transfer_encoding":"%[var(txn.upstream_transfer_encoding,),json(utf8ps)]","lb":"haproxy"}'
)
FAILED = (502, 503, 504)  # statuses the proxy answers itself when the upstream fails

# --- access log -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A request the proxy failed (502/503/504), or a 500 the upstream answered (``app_errors``)."""

    t: float  # when the proxy logged the response (s)
    status: int
    conn: int
    request_time: float
    uri: str
    attempts: int = 1  # upstream attempts nginx made for it, each failed one with its own error line (retries)
    skip: int = 0  # error lines of earlier requests on this connection that nginx retried into a success


def attempts(rec: dict[str, Any]) -> int:
    """How many upstream attempts nginx made for a request: ``$upstream_status`` lists one status per attempt,
    ``, `` between servers and `` : `` across internal redirects (``502, 200``: failed once, then retried)."""
    text = str(rec.get("upstream_status") or "").strip()
    if text in ("", "-"):
        return 0
    return len([s for s in re.split(r"\s*[,:]\s*", text) if s])


def failed_attempts(rec: dict[str, Any]) -> int:
    """The error lines a request left in the error log: one per failed attempt. A request the proxy failed
    failed every attempt (at least one: ``no live upstreams`` makes none); any other failed all but its last."""
    n = attempts(rec)
    return max(1, n) if rec.get("status") in FAILED else max(0, n - 1)


def read_access_log(path: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """The access log's records logged at or after ``since``; a missing file or a line that is not a JSON object
    (a torn last line) is skipped."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("t", 0) >= since:
            records.append(_haproxy_record(rec) if rec.get("lb") == "haproxy" else rec)
    return records


_UPSTREAM_HEADERS = ("upstream_connection", "upstream_content_length", "upstream_transfer_encoding")


def _haproxy_record(rec: dict[str, Any]) -> dict[str, Any]:
    """An HAProxy record as nginx's are read. HAProxy writes an empty value as ``-``: an absent upstream header
    is "" again (``reusable`` reads a Content-Length of "-" as present). ``status`` as the ALB logs it: a client
    that closed before the response (termination ``C`` before the response phase; HAProxy logs 400 with ``option
    abortonclose``, or -1) is 460, like the nginx alb profile's 499; HAProxy's own value stays in
    ``haproxy_status``."""
    out = {**rec, **{k: "" for k in _UPSTREAM_HEADERS if rec.get(k) == "-"}}
    state = str(rec.get("termination", ""))
    if state[:1] == "C" and state[1:2] in ("R", "Q", "C", "H") and rec.get("status") in (400, -1):
        out.update(status=460, haproxy_status=rec["status"])
    return out


def access_counts(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Statuses as the client saw them and as the upstream answered (``-``: no upstream answer)."""
    statuses: Counter[str] = Counter()
    upstream: Counter[str] = Counter()
    for rec in records:
        if "status" not in rec:
            continue
        statuses[str(rec["status"])] += 1
        upstream[rec.get("upstream_status") or "-"] += 1
    return {"status_counts": dict(sorted(statuses.items())), "upstream_status": dict(sorted(upstream.items()))}


def parse_access_log(path: Path, since: float = 0.0) -> dict[str, Any]:
    """``access_counts`` of the access log at ``path``: a cell result's ``proxy`` counts."""
    return access_counts(read_access_log(path, since))


def failures(records: Iterable[dict[str, Any]]) -> list[Failure]:
    """The requests the proxy failed, in log order, each with its attempts and the error lines that requests
    retried into a success (the ``nginx`` profile retries) left before it on its connection."""
    out = []
    pending: Counter[int] = Counter()  # connection -> error lines of retried successes not yet skipped
    for rec in records:
        conn = int(rec.get("conn", 0))
        if rec.get("status") in FAILED:
            out.append(Failure(rec["t"], rec["status"], conn, float(rec.get("request_time", 0)), rec.get("uri", ""),
                               max(1, attempts(rec)), pending.pop(conn, 0)))
        else:
            pending[conn] += failed_attempts(rec)
    return out


def app_errors(records: Iterable[dict[str, Any]]) -> list[Failure]:
    """The 500s the upstream answered (passed through by the proxy), in log order: attribution looks for the
    server's reason for each (a database error, gunicorn aborting the worker mid-request)."""
    return [Failure(rec["t"], 500, int(rec.get("conn", 0)), float(rec.get("request_time", 0)), rec.get("uri", ""))
            for rec in records if rec.get("status") == 500]


def reusable(rec: dict[str, Any]) -> bool:
    """Would nginx keep the upstream connection after this response? Only when the response did not say
    ``Connection: close`` and its end was known without the connection closing (a Content-Length or chunked
    body). uWSGI's http-socket answers without either unless the app sets Content-Length, then closes."""
    if str(rec.get("upstream_connection", "")).strip().lower() == "close":
        return False
    te = str(rec.get("upstream_transfer_encoding", "")).lower()
    return bool(str(rec.get("upstream_content_length", "")).strip()) or "chunked" in te


def keepalive_reuse_possible(records: Iterable[dict[str, Any]]) -> bool:
    """Could the proxy have reused an upstream connection in this run? Only after a ``reusable`` response; the
    access log records the headers that decide it. No record of them (an older log format): assume it could."""
    seen = False
    for rec in records:
        if "upstream_connection" not in rec or not rec.get("upstream_status"):
            continue
        if rec.get("status") in FAILED:  # the proxy's own error: no upstream response to reuse after
            continue
        seen = True
        if reusable(rec):
            return True
    return not seen


# --- error log ------------------------------------------------------------------------------------------------

# nginx's reason for a failed upstream request -> our name for it; the first rule whose needle is in the message
# wins. The errno forms ("(104:") catch the same reasons in other wordings.
REASONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("upstream_closed", ("prematurely closed",)),
    ("upstream_reset", ("reset by peer", "(104:")),
    ("upstream_refused", ("Connection refused", "(111:")),
    ("upstream_timeout", ("timed out",)),
    ("upstream_backlog_full", ("Resource temporarily unavailable",)),  # EAGAIN: a unix socket's queue is full
    ("no_live_upstreams", ("no live upstreams",)),
)
OTHER = "other"
REASON_NAMES = (*(name for name, _ in REASONS), OTHER)
_PHASES = (("connecting", "while connecting"), ("sending", "while sending"), ("reading", "while reading"))
_LEVEL = re.compile(r"\[(?:error|crit)\]")
_TAGGED = re.compile(r"\[(?:error|crit)\] \d+#\d+: \*(?P<conn>\d+) (?P<msg>.*?), client:")


@dataclass(frozen=True)
class Reason:
    """nginx's reason for one failed request: which (one of ``REASON_NAMES``), in which phase of the upstream
    request (``connecting``, ``sending``, ``reading`` or ``""``), and its text."""

    name: str
    phase: str
    text: str


def classify_reason(text: str) -> Reason:
    """Name nginx's failure message (the one place its wording is matched)."""
    name = next((n for n, needles in REASONS if any(s in text for s in needles)), OTHER)
    phase = next((p for p, needle in _PHASES if needle in text), "")
    return Reason(name, phase, text)


@dataclass(frozen=True)
class ErrorLine:
    conn: int | None  # the client connection (``*N``) the line is about, when it names one
    reason: Reason


def read_error_log(path: Path) -> list[ErrorLine]:
    """The error log's ``[error]`` and ``[crit]`` lines, in order; a missing file is no lines."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        if not _LEVEL.search(line):
            continue
        m = _TAGGED.search(line)
        out.append(ErrorLine(int(m["conn"]), classify_reason(m["msg"])) if m else
                   ErrorLine(None, classify_reason(line)))
    return out


def reason_counts(lines: Iterable[ErrorLine]) -> dict[str, int]:
    """A count per reason name, in order of first appearance (a cell result's ``proxy.error_reasons``)."""
    return dict(Counter(line.reason.name for line in lines))


def parse_error_log(path: Path) -> dict[str, int]:
    """``reason_counts`` of the error log at ``path``."""
    return reason_counts(read_error_log(path))


def reasons_by_connection(lines: Iterable[ErrorLine]) -> dict[int, deque[Reason]]:
    """Connection number -> nginx's failure reasons for it, in order (lines naming no connection are left out)."""
    by_conn: dict[int, deque[Reason]] = defaultdict(deque)
    for line in lines:
        if line.conn is not None:
            by_conn[line.conn].append(line.reason)
    return by_conn


# --- HAProxy: the reason of a failure is its termination state (configuration manual 8.5) ---------------------

# first character: who or what ended the session; second: in which phase. Only the pairs a failed request can end
# with are named; anything else is ``other`` with the state in the text.
_HAPROXY_PHASES = {"C": "connecting", "Q": "connecting", "H": "reading", "D": "reading", "L": "reading"}
_HAPROXY_REASONS = {
    "S": ("upstream_refused", "the server refused the connection"),  # with phase C; H/D: it closed or reset
    "s": ("upstream_timeout", "server-side timeout expired"),
    "K": ("upstream_closed", "the session was killed by an administrative action (shutdown sessions)"),
    "D": ("upstream_closed", "the session was killed because its server went down"),
}


def termination_reason(state: str, server: str = "") -> Reason:
    """HAProxy's termination state (``SC--``, ``SH--``, ``sH--``...) as a ``Reason`` of nginx's vocabulary:
    ``SC`` refused (``no_live_upstreams`` when no server was picked: ``<NOSRV>``), ``SH``/``SD`` the server
    closed or reset it mid-request (HAProxy does not tell the two apart: ``upstream_closed``), ``sC``/``sH`` a
    timeout, ``K`` cut by ``shutdown sessions`` (``upstream_closed``), anything else ``other``."""
    text = f"HAProxy termination state {state or '?'}"
    first, second = (state + "--")[0], (state + "--")[1]
    phase = _HAPROXY_PHASES.get(second, "")
    if first == "S" and server == "<NOSRV>":
        return Reason("no_live_upstreams", phase, f"{text}: no server available")
    named = _HAPROXY_REASONS.get(first)
    if named is None:
        return Reason(OTHER, phase, text)
    name, why = named
    if first == "S" and second != "C":
        name, why = "upstream_closed", "the server closed or reset the connection before the response was complete"
    return Reason(name, phase, f"{text}: {why}")


def haproxy_reasons(records: Iterable[dict[str, Any]]) -> dict[int, deque[Reason]]:
    """Connection number (``conn``) -> the reason of each failed request on it, from HAProxy's access-log records:
    the same shape ``reasons_by_connection`` gives for nginx's error log, so ``failures`` pair with them alike."""
    by_conn: dict[int, deque[Reason]] = defaultdict(deque)
    for rec in records:
        if rec.get("status") in FAILED:
            by_conn[int(rec.get("conn", 0))].append(
                termination_reason(str(rec.get("termination", "")), str(rec.get("server", ""))))
    return by_conn
