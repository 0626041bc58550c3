"""What every server has: a config rendered from the cell, a ``Runner`` that runs it, telemetry from its logs.

A server class (``UWSGI``, ``Gunicorn``) knows its config and its telemetry; *where* it runs is its ``Runner``:
a process on this host (``servers/local.py``) or a container (``servers/in_container.py``). The runner says
where the server finds things and listens, as the server sees them (a ``Placement``); the renderers are pure
functions of (cell, app, placement). Either way the cell's directory on this host holds the config, the
stamped ``server.log`` and the telemetry files, and the server answers at the same host address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.config.values import ConfigError, shown
from pytest_wsgi502.services.process import ServiceError

# bytes in a unix socket path: the kernel allows 107 (sun_path is 108 with its NUL), uWSGI 2.0 only 102 ("invalid
# socket name" at 103, checked with the real uWSGI); a longer path moves to a short private temp dir
SUN_PATH_MAX = 102
_LABEL = re.compile(r"[A-Za-z0-9_.-]+")


def comment_label(name: str) -> str:
    """A cell name as it may appear in a config file's comment line: as is when it is a plain name, else its
    ASCII repr (a newline in a name built by hand must not end the comment and start a directive)."""
    return name if _LABEL.fullmatch(name) else ascii(name)


# options that make a server listen (uWSGI ini keys, gunicorn settings): a cell may add or move a listener, but
# only on loopback or a unix socket — services never listen where another machine could reach them
LISTEN_KEYS = {"uwsgi": re.compile(r"(.*-)?socket|https?|stats(-server)?|http-to|snmp|zerg-server"),
               "gunicorn": re.compile(r"bind")}


def loopback_listeners(cell: str, server: str, options: Mapping[str, Any]) -> None:
    """ConfigError when an option would make the server listen off loopback (``0.0.0.0:80``, ``:8000``, a host
    name). Accepted: 127.0.0.0/8, ``[::1]``, ``localhost`` with a port, and unix socket paths."""
    pattern = LISTEN_KEYS[server]
    for key, value in options.items():
        if not (isinstance(key, str) and pattern.fullmatch(key)):
            continue
        for v in value if isinstance(value, list | tuple) else [value]:
            if not _loopback_address(str(v)):
                raise ConfigError(f"cell {shown(cell)}: option {shown(key)} = {shown(v)} would listen off this "
                                  "machine; use 127.0.0.1:PORT, [::1]:PORT or a unix socket path")


def _loopback_address(addr: str) -> bool:
    addr = addr.strip()
    if addr.startswith("unix:") or addr.startswith("/") or addr.startswith("./") or addr.startswith("@"):
        return True  # a socket file, or an abstract unix socket (@name)
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return False
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSpec:
    """Everything needed to render a server config, beyond the cell itself."""

    cell: Cell
    workdir: Path  # the cell's directory: config, logs, telemetry files
    app: str  # module:callable
    chdir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    stats_port: int = 0
    settings_overlay: Path | None = None  # a directory first on the app's import path (services/django.py)


@dataclass(frozen=True)
class Placement:
    """Where a server finds things and listens, as the server itself sees them: host paths and loopback ports
    for a local process; the image's paths and the container's ports (published on loopback) in a container."""

    address: str  # what it binds: host:port, or a unix socket's path
    stats: str  # uWSGI's stats server (host:port)
    chdir: str
    config_dir: str  # the cell's directory: the config file, gunicorn's hook events
    binary: str
    virtualenv: str | None = None  # uWSGI's virtualenv (it embeds libpython and would miss site-packages)
    unix: bool = False  # ``address`` is a unix socket
    fixed: bool = False  # these win over the cell's options (a container's published ports and image paths)


class Runner(Protocol):
    """Runs a server's rendered config, here or in a container; the server's output goes to its ``log``, each
    line stamped on arrival (``services.process.copy_stamped``), and it answers at the server's ``address``."""

    start_timeout: float

    @property
    def placement(self) -> Placement: ...

    def start(self, env: dict[str, str], ready: Callable[[], bool], timeout: float) -> None: ...

    def stop(self) -> None: ...

    def signal(self, sig: signal.Signals) -> int | None:
        """Send ``sig`` to the server's master (a lifecycle action); return the pid it went to, when known."""
        ...

    def describe(self) -> dict[str, Any]:
        """Keys for the cell's result about where the server ran: ``{}`` for a local process."""
        ...


RunnerFactory = Callable[["Server"], Runner]


def _children(pid: int) -> list[int]:
    """Every child of ``pid``, zombies included (every thread's: /proc/PID/task/*/children), [] when it is gone."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def children(pid: int) -> list[int]:
    """The live children of ``pid``, [] when it is gone."""
    return [c for c in _children(pid) if alive(c)]


def unreaped(pid: int) -> list[int]:
    """The children of ``pid`` that died and that it has not reaped yet (zombies): a server master logs a worker's
    death only when it reaps it."""
    return [c for c in _children(pid) if _state(c) == "Z"]


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """``pid`` runs (exists and is no zombie)."""
    return _state(pid) not in (None, "Z", "X")


class Watch:
    """The phases of one lifecycle action, seen by polling the server's process tree (local servers only): made
    before the action is sent (it notes the master and its old workers), then ``poll``-ed until ``done``.

    Phases (each once, in the server's order, ``Server.phases``): ``new_master`` (gunicorn's binary upgrade: the
    re-executed master runs), ``workers_ready`` (as many new workers as the cell has, each ``worker_ready``),
    ``old_told`` (upgrade: WINCH then QUIT sent to the old master; upgrade-graceful: TERM), ``old_gone`` (every
    old worker exited), ``master_gone`` (the master exited: a stop, or the old master of an upgrade, whose
    successor the runner then adopts)."""

    def __init__(self, server: Server, do: str, master: int) -> None:
        self.server, self.do, self.master = server, do, master
        self.old = set(children(master))
        self.todo = list(server.phases(do))
        self.new_master: int | None = None

    @property
    def done(self) -> bool:
        return not self.todo

    def poll(self) -> list[tuple[str, str, int | None]]:
        """The phases reached since the last poll, in order: (phase, line, pid)."""
        out: list[tuple[str, str, int | None]] = []
        for phase in list(self.todo):
            step = self._check(phase)
            if step is None:
                if self.do.startswith("upgrade"):
                    break  # its steps are a sequence: the old master is told only once the new one serves
                continue
            self.todo.remove(phase)
            out.append((phase, *step))
        return out

    def _check(self, phase: str) -> tuple[str, int | None] | None:
        s, kind = self.server, self.server.kind
        if phase == "new_master":
            new = [c for c in children(self.master) if c not in self.old and children(c)]
            if not new:
                return None
            self.new_master = new[0]
            return f"{kind}: new master running (pid {new[0]}), forked by the old one (pid {self.master})", new[0]
        if phase == "workers_ready":
            parent = self.new_master or self.master
            ready = sorted(c for c in children(parent) if c not in self.old and s.worker_ready(c))
            if len(ready) < s.spec.cell.workers:
                return None
            return f"{kind}: {len(ready)} new workers ready (pids {', '.join(map(str, ready))})", parent
        if phase == "old_told":
            sigs = (signal.SIGTERM,) if self.do == "upgrade-graceful" else (signal.SIGWINCH, signal.SIGQUIT)
            for sig in sigs:
                os.kill(self.master, sig)
            return f"{kind}: {' then '.join(x.name for x in sigs)} to the old master (pid {self.master})", self.master
        if phase == "old_gone":
            if any(alive(p) for p in self.old):
                return None
            return f"{kind}: the {len(self.old)} old workers are gone", self.master
        if phase == "master_gone":
            if alive(self.master):
                return None
            if self.new_master is not None:
                adopt = getattr(s.runner, "adopt", None)
                if adopt is not None:
                    adopt(self.new_master)
                return f"{kind}: the old master (pid {self.master}) exited; pid {self.new_master} serves", self.master
            return f"{kind}: the master (pid {self.master}) exited", self.master
        raise ValueError(f"unknown phase {phase}")


TRACEBACK = b"Traceback (most recent call last):"


class Readiness:
    """The readiness probe of one server: ``GET path`` on the server itself until it answers below 500 (a 4xx is
    up: a user's app need not have the path; ``status`` keeps the answer so the harness can note it). A 5xx, or a
    Python traceback in the server's log, is ``fatal``: the runner ends its wait at once with the log's last lines
    instead of waiting out the timeout (a wrong settings module answers 500 forever)."""

    def __init__(self, server: Server, path: str) -> None:
        self.server, self.path = server, path
        self.status: int | None = None
        self.fatal: str | None = None
        self._log_size = 0

    def __call__(self) -> bool:
        if self.fatal is None:
            self._scan_log()
        if self.fatal is not None:
            return False
        status = self.server.http_status(self.path)
        self.status = status
        if status >= 500:
            self.fatal = f"answered {status} to GET {self.path}"
            return False
        return True

    def _scan_log(self) -> None:
        log = self.server.log
        try:
            size = log.stat().st_size
            if size == self._log_size:
                return
            with open(log, "rb") as fh:
                text = fh.read()
        except OSError:
            return
        self._log_size = size
        if TRACEBACK in text:
            self.fatal = "logged a Python traceback"

    def failed(self) -> str | None:
        """For ``wait_until``'s ``alive``: how the server failed to start, or None (keep waiting)."""
        return self.fatal


def fatal_or(ready: Callable[[], bool], gone: Callable[[], str | None]) -> Callable[[], str | None]:
    """``alive`` for ``wait_until``: the readiness probe's fatal answer (a ``Readiness``), else ``gone``."""

    def alive() -> str | None:
        return getattr(ready, "fatal", None) or gone()

    return alive


class Server:
    """A WSGI server rendered from a cell, run by a ``Runner``. Subclasses: ``settings``, ``render``,
    ``argv`` and ``telemetry``."""

    kind = ""
    stop_signal = signal.SIGINT  # uWSGI 2.0 treats SIGTERM as "reload", not "stop"
    # a cell's lifecycle actions (config/matrix.ACTIONS) -> the signal its master gets. Both servers reload
    # gracefully on SIGHUP. SIGTERM: gunicorn stops gracefully (the listener closes at once); uWSGI 2.0 stops when
    # die-on-term is set (the harness sets it; in-flight requests are cut), else it reloads brutally (in-flight
    # requests cut, the listening socket kept across the re-exec): measured on uWSGI 2.0.31 and gunicorn 27.0.1
    # (``hup`` is ``reload`` by its signal's name; ``upgrade`` and ``chain-reload`` are the servers' own: see act)
    action_signals: ClassVar[Mapping[str, signal.Signals]] = {"reload": signal.SIGHUP, "hup": signal.SIGHUP,
                                                              "term": signal.SIGTERM}
    config_name = ""

    def __init__(self, spec: ServerSpec, binary: str, ledger: Path | None = None, *, runner: RunnerFactory) -> None:
        self.spec, self.binary, self.ledger = spec, binary, ledger
        self._socket: Path | None = None
        self._socket_tmp: Path | None = None  # a private temp dir for the socket (a long cell dir)
        self._socket_tmp_made = False  # removed at stop only if this server made it
        self.runner: Runner = runner(self)

    @property
    def unix_socket(self) -> Path | None:
        """The socket file of a ``socket = "unix"`` cell, in a 0700 directory only this user can enter (the
        servers create the socket world-writable: gunicorn's umask is 0): ``sock/`` in the cell's directory,
        or, when that path is too long for uWSGI (over SUN_PATH_MAX bytes), a new directory with a random
        name in the temp dir (created 0700 at ``start``, refused if it exists, removed at ``stop``). nginx runs
        as this same user (``user`` is set to it when run as root), so it can reach the socket."""
        if self.spec.cell.socket != "unix":
            return None
        if self._socket is None:
            path = Path(os.path.abspath(self.spec.workdir)) / "sock" / "server.sock"
            if len(os.fsencode(str(path))) > SUN_PATH_MAX:
                self._socket_tmp = Path(tempfile.gettempdir()) / f"wsgi502-{secrets.token_hex(8)}"
                path = self._socket_tmp / "server.sock"
            self._socket = path
        return self._socket

    def _prepare(self) -> None:
        """The cell's directory and, for a unix-socket cell, the private directory of its socket."""
        self.spec.workdir.mkdir(parents=True, exist_ok=True)
        sock = self.unix_socket
        if sock is None:
            return
        try:
            sock.parent.mkdir(mode=0o700, exist_ok=self._socket_tmp is None)  # a temp name must be new
            self._socket_tmp_made = self._socket_tmp is not None
            os.chmod(sock.parent, 0o700)  # mkdir's mode is masked by the umask
            owner = sock.parent.stat().st_uid
        except OSError as exc:
            raise ServiceError(f"{self.kind} ({self.spec.cell.name}): cannot make the socket's private directory "
                               f"{sock.parent}: {exc.strerror or exc}") from None
        if owner != os.geteuid():
            raise ServiceError(f"{sock.parent} is not owned by this user: refusing to put the server's socket there")

    @property
    def name(self) -> str:
        """How errors name this server: ``uwsgi (cell)``."""
        return f"{self.kind} ({self.spec.cell.name})"

    @property
    def address(self) -> str:
        """Where the server answers on this host: host:port, or the socket file's path."""
        sock = self.unix_socket
        return str(sock) if sock else f"127.0.0.1:{self.spec.port}"

    @property
    def upstream(self) -> str:
        """The address as nginx's ``upstream { server ...; }`` writes it."""
        sock = self.unix_socket
        return f"unix:{sock}" if sock else self.address

    def http_status(self, path: str, timeout: float = 5.0) -> int:
        """GET ``path`` from the server itself (not through the proxy), over TCP or its unix socket."""
        import httpx

        sock = self.unix_socket
        transport = httpx.HTTPTransport(uds=str(sock)) if sock else None
        with httpx.Client(transport=transport, timeout=timeout) as client:
            host = "localhost" if sock else self.address
            return client.get(f"http://{host}{path}").status_code

    @property
    def log(self) -> Path:
        return self.spec.workdir / "server.log"

    @property
    def config_path(self) -> Path:
        return self.spec.workdir / self.config_name

    @property
    def placement(self) -> Placement:
        return self.runner.placement

    def settings(self) -> dict[str, Any]:
        """The server's settings as rendered (uWSGI ini keys / gunicorn settings), for the config and lint."""
        raise NotImplementedError

    def render(self) -> str:
        raise NotImplementedError

    def argv(self) -> list[str]:
        """The command line, as the server sees its binary and config (``placement``)."""
        raise NotImplementedError

    def start(self, env: dict[str, str], ready: Callable[[], bool], timeout: float | None = None) -> Server:
        text = self.render()  # ConfigError before anything is created
        self._prepare()
        self.config_path.write_text(text, encoding="utf-8")
        self.runner.start(env, ready, self.runner.start_timeout if timeout is None else timeout)
        return self

    def stop(self) -> None:
        self.runner.stop()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.unlink()
        if self._socket_tmp is not None and self._socket_tmp_made:
            shutil.rmtree(self._socket_tmp, ignore_errors=True)
            self._socket_tmp_made = False

    def describe(self) -> dict[str, Any]:
        """Keys for the cell's result about where the server ran (the runner's: ``{}`` for a local process)."""
        return self.runner.describe()

    def act(self, do: str) -> tuple[signal.Signals | str, int | None]:
        """Perform lifecycle action ``do`` (config/matrix.SERVER_ACTIONS) on the running server: (what was sent, the
        master's pid). ``upgrade``'s first step (USR2) is sent here, the rest by its ``Watch``."""
        sig = self.action_signals[do]
        return sig, self.runner.signal(sig)

    def graceful_stop(self) -> tuple[str, int | None]:
        """Stop the server gracefully (a rolling deploy's stop of one instance): its listener closes, the requests
        it serves finish within ``stop_grace``. gunicorn: SIGTERM (uWSGI overrides: its SIGTERM is no graceful
        stop). Returns (what was sent, the master's pid)."""
        return signal.SIGTERM.name, self.runner.signal(signal.SIGTERM)

    def stop_grace(self) -> float:
        """The longest a graceful stop may take (the server's own bound, e.g. gunicorn's graceful_timeout)."""
        return 30.0

    def master_pid(self) -> int | None:
        """The server's master (local servers), None when unknown (a container: another pid namespace)."""
        return getattr(self.runner, "master_pid", lambda: None)()

    def unreaped_workers(self) -> list[int]:
        """The workers that died and whose master has not reaped them yet, so not logged their death either ([] when
        the master's pid is unknown)."""
        master = self.master_pid()
        return unreaped(master) if master is not None else []

    def watch(self, do: str) -> Watch | None:
        """The phases of action ``do``, to be polled after ``act``: None when the master's pid is unknown (a
        container: its processes are in another pid namespace). Made *before* ``act``: it notes the old workers."""
        master = self.master_pid()
        return Watch(self, do, master) if master is not None else None

    def phases(self, do: str) -> tuple[str, ...]:
        """The phases action ``do`` goes through on this server, in order (see ``Watch``)."""
        if do == "term":
            return ("old_gone", "master_gone")  # gunicorn: a graceful stop within graceful_timeout
        return ("workers_ready", "old_gone")

    def worker_ready(self, pid: int) -> bool:
        """Whether worker ``pid`` (alive, forked by the master) serves requests: forked = ready by default."""
        return True

    def telemetry(self, until: float | None = None) -> dict[str, Any]:
        """{"respawns": int, "kills": int, "events": [...], ...} from the server's own logs/stats, counting
        only events up to ``until`` (the end of the load: the harness's own stop is not the server's doing)."""
        raise NotImplementedError

    def events(self, patterns: Any, until: float | None) -> list[Any]:
        from pytest_wsgi502.servers.telemetry import parse_events

        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [e for e in parse_events(text, patterns) if until is None or e.t is None or e.t <= until]

    def sample(self) -> None:
        """Called about once a second during load (e.g. to poll a stats server). Default: nothing."""
