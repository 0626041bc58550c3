"""Worker lifecycle events: the one vocabulary of event kinds (pure, stdlib only).

A server's telemetry (``servers/telemetry.py`` from its log lines, gunicorn's server hooks) produces events
``{"kind", "t", "pid", "worker", "line"}`` whose ``kind`` is one of the names below; attribution
(``attribution.py``) and the reports (``report/html.py``) read them through the groups defined here, so a new
kind is added in one place.
"""

from __future__ import annotations

# uWSGI and gunicorn log lines
SPAWN = "spawn"  # a worker started (uWSGI "spawned uWSGI worker", gunicorn "Booting worker")
RESPAWN = "respawn"  # a replacement worker (uWSGI "Respawned uWSGI worker", gunicorn's post_fork after the first N)
RECYCLE = "recycle"  # a worker leaves after max-requests (uWSGI "...The work of process N is done", gunicorn)
LIFETIME = "lifetime"  # uWSGI max-worker-lifetime reached
NO_MERCY = "no_mercy"  # uWSGI reload-mercy ran out: the master SIGKILLs the worker
HARAKIRI = "harakiri"  # uWSGI harakiri: a request ran too long, the worker is SIGKILLed
DIED_SIGNAL = "died_signal"  # a worker died of SIGKILL (signal 9)
DIED_OTHER_SIGNAL = "died_other_signal"  # a worker died of another signal (not a crash: e.g. SIGTERM, SIGINT)
# a worker died of a fatal signal its own code raised: SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT (a native crash,
# e.g. a C extension after fork: uWSGI "DAMN ! worker 1 (pid: N) died, killed by signal 11", gunicorn "Worker
# (pid:N) was sent SIGSEGV!")
CRASHED = "crashed"
DIED = "died"  # uWSGI: a worker died without a signal
DIED_CODE = "died_code"  # gunicorn: a worker exited with a code
EXIT = "exit"  # gunicorn "Worker exiting"
TIMEOUT = "timeout"  # gunicorn WORKER TIMEOUT: the arbiter aborts the worker (SIGABRT, then SIGKILL)
LISTEN_QUEUE_FULL = "listen_queue_full"  # uWSGI: the listen queue overflowed
RESPAWNING_TOO_FAST = "respawning_too_fast"  # uWSGI throttles respawns
DB_ERROR = "db_error"  # the app logged a database error (django.db.utils.OperationalError)
# gunicorn "[pid] [ERROR] Error handling request <method> <uri>": the worker answered 500 for a request; when the
# arbiter aborted that worker (its SIGABRT handler raises SystemExit inside the request) it is the aborted request
REQUEST_ERROR = "request_error"
# the server's own lifecycle lines (uWSGI "...gracefully killing workers..." / "...brutally killing workers...",
# gunicorn "Hang up: Master"; uWSGI "SIGINT/SIGTERM received...killing workers...", gunicorn "Handling signal: term")
RELOAD = "reload"
SHUTDOWN = "shutdown"
# uWSGI "invalid HTTP request size (max 4096)...skip" (http-socket; "invalid request block size: N (max 4096)" on
# the uwsgi protocol): a request's headers exceed buffer-size, the connection is closed without a response (nginx,
# measured on 2.0.31's http-socket: recv() failed (104: Connection reset by peer) -> 502)
HEADER_TOO_LARGE = "header_too_large"
# a lifecycle action the harness sent during the load (a cell's ``actions``: cellrun.py), with its exact time
ACTION = "action"
# a phase of such an action, seen by polling the server's processes (servers/base.Watch): new workers ready, old
# ones gone, the master gone, a binary upgrade's new master running; not a cause of errors (the action is)
ACTION_PHASE = "action_phase"
# gunicorn server hooks (exact times)
WORKER_EXIT = "worker_exit"
WORKER_ABORT = "worker_abort"  # gunicorn's timeout kill

KINDS = frozenset({SPAWN, RESPAWN, RECYCLE, LIFETIME, NO_MERCY, HARAKIRI, DIED_SIGNAL, DIED_OTHER_SIGNAL, DIED,
                   DIED_CODE, EXIT, TIMEOUT, LISTEN_QUEUE_FULL, RESPAWNING_TOO_FAST, DB_ERROR, REQUEST_ERROR,
                   WORKER_EXIT, WORKER_ABORT, RELOAD, SHUTDOWN, ACTION, ACTION_PHASE,
                   HEADER_TOO_LARGE, CRASHED})

SPAWNS = frozenset({SPAWN, RESPAWN})  # a worker started (the initial set included)
RESPAWNS = frozenset({RESPAWN})  # a worker started to replace one that left
SIGKILLED = frozenset({NO_MERCY, HARAKIRI, DIED_SIGNAL})  # a worker got SIGKILL: the cell's ``kills`` count
KILLS = SIGKILLED | {TIMEOUT, WORKER_ABORT}  # the server killed a worker mid-request (SIGKILL or gunicorn's abort)
# a worker left without SIGKILL: recycled, reached its lifetime, exited, or died of another signal
EXITS = frozenset({RECYCLE, LIFETIME, EXIT, DIED, DIED_CODE, WORKER_EXIT, DIED_OTHER_SIGNAL})
# the server was told to reload or stop (by the harness or by its own log): what cuts requests and closes listeners
LIFECYCLE = frozenset({ACTION, RELOAD, SHUTDOWN})
# the signals of a crash (``CRASHED``), by number (uWSGI logs numbers) and name (gunicorn logs names): Linux values
CRASH_SIGNALS = {4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 11: "SIGSEGV"}
