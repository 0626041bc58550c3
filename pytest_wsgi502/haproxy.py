"""The load balancer in front of a cell with several server instances (rolling deploys): HAProxy 2.6.

Why HAProxy and not nginx here (see ``proxy.py``): a rolling deploy takes one target out of the rotation while
the others keep serving, then cuts what is still in flight on it. Open-source nginx 1.22 has no runtime API and
its reload closes idle client keep-alive connections; HAProxy 2.6 (Debian) drains one server over its runtime
API (``set server be/sN state drain``) and cuts its streams (``shutdown sessions server be/sN``).

AWS ALB behaviours rendered (sources as in ``proxy.py``: the ALB troubleshooting, quotas and attributes pages):

- no retries, no redispatch (``retries 0``): a failed connect or a cut request is the client's error;
- 10 s connect timeout; the idle timeout for the client, the server, keep-alive and a client that stops sending
  (``timeout http-request``: HAProxy answers 408 like the ALB);
- no passive health: servers have no ``check``, so HAProxy never marks one down on errors;
- each request load-balanced on its own (``balance roundrobin``, no ``prefer-last-server``);
- 502 when a target refuses the connection: HAProxy answers 503 (termination ``SC``) there; an
  ``http-after-response`` rule turns a 503 that had a server into 502, logged 502. A 503 without a server (every
  target drained or in maintenance, ``<NOSRV>``) stays 503, as an ALB with no registered targets answers;
- 502 when the target closes or resets with a request outstanding (HAProxy's own 502, ``SH``), on any request of
  a keep-alive client connection: HAProxy alone closes a connection's later requests silently, unlogged; the
  relay tier (``render_haproxy``) makes each one the first of its own connection;
- 504 when the target does not answer within the idle timeout (``sH``);
- 502 when the deregistration delay ends with a request in flight: ``shutdown sessions server be/sN`` answers
  the request it cuts 502 (``KH``), through the relay;
- 460 logged when the client closes first (``option abortonclose``: HAProxy aborts the target's request and logs
  400 ``CH``; ``nginxlog.read_access_log`` reads it 460), never a failure of the target;
- request headers: 16K per header line (an ``http-request deny`` on ``req.hdrs``) and 64K in all
  (``tune.bufsize 66560``), answered 400; measured at nginx alb's boundaries (16,384-byte line with its CRLF
  served, one byte more 400; 64 headers of 1,000 bytes served, 65 400); HAProxy's default buffer took ~15 KB;
- target connections kept and reused across clients (``http-reuse always``), as the ALB does.

Drain vs maint (measured on 2.6.12): both stop new requests at once and let those in flight finish; ``maint``
also closes the server's idle keep-alive connections at once, ``drain`` keeps them (they are never picked:
the server is chosen before a connection). ``drain`` is the ALB's deregistration.

Run as the invoking user, root included, like ``LocalProxy`` (no ``user`` line): the run directory is private
to that user, the death signal (``setpriv --pdeathsig``) is cleared by a uid change, and the reaper only kills
processes of the recorded uid, so an HAProxy that dropped to ``nobody`` would outlive a killed session. It binds
127.0.0.1 and two unix sockets (mode 600) only.

The access log is JSON per line in the shape ``nginxlog.read_access_log`` reads (see ``HAPROXY_LOG_FORMAT``),
written by HAProxy to its stdout (``log stdout format raw``), which is the file ``proxy-access.log``; HAProxy's
own notices land in the same file and are skipped by the reader (not JSON). ``nginxlog.haproxy_reasons`` names
each failure's reason from its termination state, as nginx's error log does for the nginx proxy.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
from pathlib import Path
from typing import Any

from pytest_wsgi502.config.values import DAY, ConfigError, number, shown
from pytest_wsgi502.nginxlog import ACCESS_LOG, HAPROXY_LOG_FORMAT
from pytest_wsgi502.proxy import upstream_target, whole_seconds
from pytest_wsgi502.services.process import (
    CpuPlace,
    LocalProcess,
    ServiceError,
    find_binary,
    free_port,
    private_tmpdir,
)

STATES = ("ready", "drain", "maint")
BACKEND = "be"
CONFIG = "haproxy.cfg"
SOCKET = "haproxy-admin.sock"
RELAY = "haproxy-relay.sock"
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with its NUL

# Inside HAProxy's single quotes ("strong quoting", configuration manual 2.2) nothing is interpreted; a single
# quote cannot be written there at all, and CR/LF have no representation. Control characters are refused too.
_HAPROXY_UNSAFE = re.compile(r"[\x00-\x1f\x7f']")


def haproxy_quoted(value: Any, what: str) -> str:
    """``value`` as one single-quoted HAProxy word, or ConfigError when HAProxy could not read it back as is."""
    text = str(value)
    bad = _HAPROXY_UNSAFE.search(text)
    if bad or not text:
        why = f"contains {bad.group()!r}" if bad else "is empty"
        raise ConfigError(f"HAProxy {what} {shown(text)} {why}, which cannot be written in an HAProxy config "
                          "(use a run directory without quotes or control characters)")
    return f"'{text}'"


def haproxy_address(value: Any, what: str) -> str:
    """An address (``bind``, ``server``, ``stats socket``) as one quoted word. HAProxy expands environment
    variables in addresses after unquoting (configuration manual 2.3), so a ``$`` cannot be written in one, even
    single-quoted (measured on 2.6.12: ``'/x/a$b'`` bound ``/x/a``): refused."""
    quoted = haproxy_quoted(value, what)
    if "$" in str(value):
        raise ConfigError(f"HAProxy {what} {shown(str(value))} contains '$', which HAProxy expands in an address "
                          "(use a run directory without $)")
    return quoted


def server_address(upstream: Any) -> str:
    """An upstream as HAProxy's ``server`` address: ``HOST:PORT`` as is, ``unix:PATH`` as ``unix@PATH``; quoted."""
    text = upstream_target(upstream)
    if text.startswith("unix:"):
        return haproxy_address("unix@" + text[5:], "upstream")
    return haproxy_address(text, "upstream")


def server_name(index: int) -> str:
    return f"s{index}"


def render_haproxy(workdir: Path, upstreams: list[str], port: int, idle_timeout: float,
                   admin_socket: Path, relay_socket: Path, connect_timeout: float = 10.0) -> str:
    """HAProxy's config: every path quoted, every number validated, timeouts in whole seconds rounded up.

    Two tiers in one process. The client-facing ``front`` keeps the client's keep-alive connection and relays each
    request over its own new unix-socket connection (``option http-server-close``, PROXY protocol for the client's
    address) to ``lb``, which balances over the targets and logs. Without the relay, HAProxy 2.6 answers a request
    that is not the first on its client connection with a silent close and no log line when the server closes,
    resets or is cut (``abort_keep_alive`` in http_ana.c: "the client is required to retry"); measured: the
    client got no answer where the ALB answers 502. For ``lb`` every request is the first of its connection, so
    it answers 502 and logs it."""
    if not upstreams:
        raise ConfigError("HAProxy needs at least one upstream")
    port = number(port, "proxy port", 1, 65535, integer=True)
    idle = whole_seconds(idle_timeout, "idle timeout")
    # the relay waits longer than lb, so lb's own 504 (timeout) reaches the client, not the relay's
    relay_wait = whole_seconds(number(idle_timeout, "idle timeout", 0, DAY, lo_open=True) + 5, "relay timeout")
    connect = whole_seconds(connect_timeout, "connect timeout")
    for path, what in ((admin_socket, "admin socket path"), (relay_socket, "relay socket path")):
        if len(os.fsencode(str(path))) > SUN_PATH_MAX:
            raise ConfigError(f"HAProxy {what} {shown(str(path))} is longer than {SUN_PATH_MAX} bytes")
    sock = haproxy_address(admin_socket, "admin socket path")
    relay = haproxy_address("unix@" + str(relay_socket), "relay socket path")
    servers = "\n".join(f"    server {server_name(i)} {server_address(u)}" for i, u in enumerate(upstreams))
    fmt = haproxy_quoted(HAPROXY_LOG_FORMAT, "log format")
    return f"""# rendered by pytest-wsgi502: HAProxy for several targets (see pytest_wsgi502/haproxy.py)
global
    nbthread 1
    noreuseport
    hard-stop-after 5s
    log stdout format raw local0
    # request line and headers up to 64 KiB in all (tune.maxrewrite's 1024 bytes are kept back): the ALB's total
    tune.bufsize 66560
    stats socket {sock} mode 600 level admin
defaults alb
    mode http
    log global
    option http-keep-alive
    retries 0
    # a client that closes first aborts its request on the target too (logged 460, see nginxlog)
    option abortonclose
    no option redispatch
    timeout connect {connect}
    timeout client {idle}
    timeout server {idle}
    timeout http-keep-alive {idle}
    timeout http-request {idle}
# the client side: keep-alive with the client, one relay connection per request (see render_haproxy)
frontend front from alb
    bind 127.0.0.1:{port}
    # only what never became a request is logged here (a malformed or too large head: 400, a client that stopped
    # sending: 408); every request is logged once, by lb
    log-format {fmt}
    option dontlognull
    http-request set-log-level silent
    default_backend relay
backend relay from alb
    option http-server-close
    http-reuse never
    timeout server {relay_wait}
    server lb {relay} send-proxy-v2
# the load balancer proper: the targets, the log, the runtime API's backend
frontend lb from alb
    bind {relay} mode 600 accept-proxy
    timeout client {relay_wait}
    log-format {fmt}
    # a header line over 16K (16,384 bytes with its CRLF, as measured for the nginx alb profile) is refused
    http-request deny deny_status 400 if {{ req.hdrs -m reg '[^\\r\\n]{{16383}}' }}
    default_backend {BACKEND}
    # a refused connect is HAProxy's 503 (SC); the ALB answers 502. A 503 with no server stays 503 (<NOSRV>)
    http-after-response set-status 502 if {{ status 503 }} {{ srv_id -m found }}
backend {BACKEND} from alb
    balance roundrobin
    # reuse idle target connections across clients, first requests included (every request is the first of
    # its relay connection here): the ALB keeps target connections open and reuses them
    http-reuse always
    # what the server answered, for the log (http-response rules see server responses only)
    http-response set-var(txn.upstream_status) status
    http-response set-var(txn.upstream_connection) res.hdr(connection)
    http-response set-var(txn.upstream_content_length) res.hdr(content-length)
    http-response set-var(txn.upstream_transfer_encoding) res.hdr(transfer-encoding)
{servers}
"""


class HAProxyLB:
    """HAProxy in front of ``upstreams`` (server ``s0`` is ``upstreams[0]``...), with a runtime API to drain them."""

    def __init__(self, workdir: Path, upstreams: list[str], idle_timeout: float, binary: str,
                 ledger: Path | None = None, port: int = 0, place: CpuPlace | None = None) -> None:
        self.dir = workdir
        self.upstreams = list(upstreams)
        self.idle_timeout = idle_timeout
        self.binary, self.ledger, self.place = binary, ledger, place
        self.port = port or free_port()
        self.process: LocalProcess | None = None
        self._sockdir: Path | None = None  # a short private dir when workdir is too deep for a unix socket path
        self.admin_socket = workdir / SOCKET
        self.relay_socket = workdir / RELAY

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def server_name(self, index: int) -> str:
        number(index, "server index", 0, len(self.upstreams) - 1, integer=True)
        return server_name(index)

    def start(self, ready_path: str, timeout: float = 20.0) -> HAProxyLB:
        import httpx

        if len(os.fsencode(str(self.relay_socket))) > SUN_PATH_MAX:  # a deep run dir: sockets in a short one
            self._sockdir = private_tmpdir(self.ledger, prefix="hap")
            self.admin_socket, self.relay_socket = self._sockdir / SOCKET, self._sockdir / RELAY
        text = render_haproxy(self.dir, self.upstreams, self.port, self.idle_timeout, self.admin_socket,
                              self.relay_socket)
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / CONFIG
        conf.write_text(text, encoding="utf-8")
        argv = [self.binary, "-db", "-f", str(conf)]
        # SIGUSR1: soft stop (stop listening, let streams finish; hard-stop-after bounds it). Each log line is
        # written as it happens, so nothing is left to flush.
        self.process = LocalProcess("haproxy", argv, self.dir / ACCESS_LOG, stop_signal=signal.SIGUSR1,
                                    ledger=self.ledger, place=self.place).start()
        pid = self.process.pid

        def ready() -> bool:  # our HAProxy answers the admin socket, and the target answers through it
            if f"Pid: {pid}\n" not in self.command("show info"):
                return False
            return httpx.get(self.url + ready_path, timeout=2).status_code < 500

        self.process.wait_ready(ready, timeout, f"answering GET {ready_path} through HAProxy")
        return self

    def command(self, line: str, timeout: float = 5.0) -> str:
        """One runtime API command over the admin socket; its answer."""
        if "\n" in line or ";" in line:
            raise ConfigError(f"HAProxy runtime command must be one command, got {shown(line)}")
        chunks = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(self.admin_socket))
                s.sendall(line.encode() + b"\n")
                while data := s.recv(65536):
                    chunks.append(data)
        except OSError as exc:
            raise ServiceError(f"HAProxy runtime API ({self.admin_socket}) did not answer {line!r}: "
                               f"{exc.strerror or exc}") from None
        return b"".join(chunks).decode(errors="replace")

    def _checked(self, line: str) -> None:
        out = self.command(line).strip()
        if out:  # success is an empty answer
            raise ServiceError(f"HAProxy refused {line!r}: {out.splitlines()[0]}")

    def set_state(self, index: int, state: str) -> None:
        if state not in STATES:
            raise ConfigError(f"server state must be one of {', '.join(STATES)}, got {shown(state)}")
        self._checked(f"set server {BACKEND}/{self.server_name(index)} state {state}")

    def shutdown_sessions(self, index: int) -> None:
        self._checked(f"shutdown sessions server {BACKEND}/{self.server_name(index)}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None
        for path in (self.admin_socket, self.relay_socket):
            with contextlib.suppress(OSError):
                path.unlink()


def find_haproxy(explicit: str | None) -> str | None:
    return find_binary("haproxy", explicit)
