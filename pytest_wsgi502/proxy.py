"""The load balancer in front of every cell: nginx 1.22 rendered for one of two profiles (``--wsgi-proxy-profile``).

Both profiles keep an idle keep-alive pool to the target and log status and upstream status per request (access
log) and nginx's reason for each 502/504 (error log); both logs' formats and parsers live in ``nginxlog.py``.

``alb`` (default): AWS Application Load Balancer's documented behaviours. Sources: "Troubleshoot your Application
Load Balancers" (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-troubleshooting.html,
HTTP 400/460/502/504), "Quotas for your Application Load Balancers" (.../application/load-balancer-limits.html,
HTTP headers) and "Edit attributes for your Application Load Balancer"
(.../application/edit-load-balancer-attributes.html, connection idle timeout). Each behaviour is provoked on loopback
by tests/integration/test_alb_profile.py.

- no retries (troubleshooting, 502: "the target closed the connection ... while the load balancer had an
  outstanding request" is answered 502, not sent elsewhere): ``proxy_next_upstream off``; nginx's default
  silently retries a request that failed on a stale keep-alive connection and would hide that very race;
- 60 s idle timeout (attributes page, default 60 s): ``keepalive_timeout``, ``proxy_read_timeout``,
  ``proxy_send_timeout``, ``client_header_timeout``/``client_body_timeout`` (the session's idle timeout);
- a client that stops sending for the idle timeout (troubleshooting, 408): the ALB answers 408; nginx logs 408
  and closes the connection without an answer (measured on 1.22.1, headers and body alike);
- 10 s connect timeout (troubleshooting, 504): ``proxy_connect_timeout 10s``;
- request headers over 16K per request line or header, 64K in all, answered 400 (quotas page, HTTP headers;
  troubleshooting, 400): ``large_client_header_buffers 4 16k``. Measured on nginx 1.22.1: a header line of up to
  16,384 bytes with its CRLF is served, 16,385 gets 400 (logged 400, not 494); headers are refused from about
  64.1-65.5 KB in all (4 buffers of 16K, a line never split across two: 64 headers of 1,000-byte values pass,
  65 get 400). A request line over 16K gets nginx's 414 (AWS lists both 400 and 414 for it);
- 502 when the target closes or resets the connection with a request outstanding (troubleshooting, 502);
- 504 on a connect timeout or when the target does not answer within the idle timeout (troubleshooting, 504);
- 460 when the client closes first (troubleshooting, 460): nginx finalizes such a request with 499; the access
  log's ``status`` maps it to 460 (nginx's own value stays in ``nginx_status``), never a target error, and the
  client, gone, sees nothing;
- no passive "backend down" state: ``max_fails=0`` (ALB routes by active health checks only; nginx counts every
  failed attempt against the server, even with ``proxy_next_upstream off``).

The deregistration delay (502 for a request still in flight when it ends) is covered for cells with several
instances by ``haproxy.py`` (HAProxy 2.6: runtime drain, ``shutdown sessions``), because nginx 1.22 has no runtime
drain and its reload (SIGHUP) closes the old workers' idle client keep-alive connections.

``nginx``: nginx's own defaults in front, for teams that run nginx before their app: ``proxy_next_upstream error
timeout`` (a failed attempt is retried on the next server), ``max_fails=1 fail_timeout=10s`` (passive health),
60 s connect timeout, ``large_client_header_buffers 4 8k``, 499 logged as 499. A TCP target is named the way nginx
is usually pointed at an app on its own host or pod, ``localhost:PORT``, which nginx resolves to every address of
the name ("a domain name that resolves to several IP addresses defines multiple servers at once", upstream module
docs): 127.0.0.1 and ::1 with Debian's and Docker's /etc/hosts. Rendered as those two servers, so a cell behaves the
same on a host whose /etc/hosts maps localhost to 127.0.0.1 only (this one). The app listens on 127.0.0.1 only
(gunicorn's and uWSGI's default), so ::1 is refused, marked down and retried on 127.0.0.1, and from then on one
error of the app marks its only real backend down too: ``no live upstreams`` 502s for ``fail_timeout``
(measured: one closed request, then 43-44 of the next 10.5 s of requests refused). With a single address nginx
ignores ``max_fails`` (measured: 0 refused), so a unix socket target shows no passive health.
"""

from __future__ import annotations

import getpass
import math
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_wsgi502.config.values import DAY, ConfigError, number, shown
from pytest_wsgi502.nginxlog import ACCESS_LOG, ACCESS_LOG_FORMAT, ERROR_LOG
from pytest_wsgi502.services.process import CpuPlace, LocalProcess, find_binary, free_port, wait_connections_closed


@dataclass(frozen=True)
class ProxyConfig:
    listen_port: int
    upstream: str  # host:port
    idle_timeout: float = 60.0
    connect_timeout: float = 10.0
    keepalive: int = 64  # idle upstream connections kept per nginx worker
    user: str | None = None
    profile: str = "alb"  # "alb" (AWS ALB's documented behaviours) or "nginx" (nginx's defaults: passive health)


PROFILES = ("alb", "nginx")


def proxy_profile(value: Any) -> str:
    """The proxy profile name, or ConfigError naming the allowed ones."""
    if not isinstance(value, str) or value not in PROFILES:
        raise ConfigError(f"proxy profile must be one of {', '.join(PROFILES)}, got {shown(value)}")
    return value


# In a double-quoted nginx argument, space ; { } # ' are plain characters; a backslash starts an escape, a '"'
# ends the string, '$' starts a variable in access_log (a path with variables opens a file per request) and
# other directives, and no escape exists for '$'. Control characters are refused too (a quoted newline is legal
# but a path with one is not something to write into a config).
_NGINX_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\$]')


def nginx_quoted(value: Any, what: str) -> str:
    """``value`` as one double-quoted nginx argument, or ConfigError when nginx could not read it back as is."""
    text = str(value)
    bad = _NGINX_UNSAFE.search(text)
    if bad:
        raise ConfigError(f"nginx {what} {shown(text)} contains {bad.group()!r}, which cannot be written in an nginx "
                          "config (use a run/keep directory without $, quotes, backslashes or control characters)")
    return f'"{text}"'


def whole_seconds(value: Any, what: str) -> str:
    """A timeout as nginx's whole seconds, rounded up: 0.5 s is 1s, never 0s (for nginx a 0 s read timeout
    fires at once and a 0 s keepalive_timeout turns keep-alive off); finite and at most a day."""
    return f"{math.ceil(number(value, what, 0, DAY, lo_open=True))}s"


_LOOPBACK_TCP = re.compile(r"127\.0\.0\.1:(\d{1,5})")
_TCP_TARGET = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")


def upstream_target(value: Any) -> str:
    """The target as nginx's ``server`` takes it: ``unix:PATH`` or ``HOST:PORT`` (a name, an IPv4 address or a
    bracketed IPv6 one, port 1-65535), or ConfigError."""
    text = str(value)
    if text.startswith("unix:") and len(text) > 5:
        nginx_quoted(text, "upstream")
        return text
    m = _TCP_TARGET.fullmatch(text)
    if not m:
        raise ConfigError(f"upstream must be unix:PATH or HOST:PORT, got {shown(text)}")
    number(m["port"], "upstream port", 1, 65535, integer=True)
    return text


def _profile_lines(cfg: ProxyConfig, idle: str, connect: str) -> dict[str, str]:
    """The lines that differ between the two profiles (see the module docstring for each behaviour's source)."""
    target = nginx_quoted(upstream_target(cfg.upstream), "upstream")
    if proxy_profile(cfg.profile) == "alb":
        return {
            # the ALB's access log records 460 for a request whose client closed first (nginx's 499)
            "status_map": "499 460;",
            # headers: 16K per request line and per header, 64K in all (quotas page); nginx answers 400
            "headers": "    large_client_header_buffers 4 16k;\n",
            # the ALB's idle timeout also bounds a client that stops sending (the ALB answers 408; nginx logs 408
            # and closes without an answer, measured)
            "client": f"    client_header_timeout {idle};\n    client_body_timeout {idle};\n",
            # no passive health: a target stays routed after an error (ALB health checks are active)
            "servers": f"        server {target} max_fails=0;\n",
            # no retry on another target or connection: the client gets the 502/504
            "location": f"            proxy_next_upstream off;\n            proxy_connect_timeout {connect};\n",
        }
    # nginx's defaults: proxy_next_upstream error timeout, max_fails=1 fail_timeout=10s, 60 s connect timeout,
    # large_client_header_buffers 4 8k, client_header/body_timeout 60s, and 499 logged as 499
    servers = f"        server {target};\n"
    loopback = _LOOPBACK_TCP.fullmatch(cfg.upstream)
    if loopback:  # localhost:PORT as nginx resolves it with ::1 in /etc/hosts: 127.0.0.1 and ::1
        port = number(loopback[1], "upstream port", 1, 65535, integer=True)
        servers += f'        server "[::1]:{port}";\n'
    return {"status_map": "", "headers": "", "client": "", "servers": servers, "location": ""}


def render_nginx(cfg: ProxyConfig, workdir: Path) -> str:
    """The proxy's config for ``cfg.profile``: every path and name quoted (a run dir with a space or ';' stays one
    argument), every number validated, timeouts in whole seconds rounded up."""
    temp = workdir / "nginx-temp"
    user = f"user {nginx_quoted(cfg.user, 'user')};\n" if cfg.user else ""
    idle = whole_seconds(cfg.idle_timeout, "idle timeout")
    connect = whole_seconds(cfg.connect_timeout, "connect timeout")
    port = number(cfg.listen_port, "proxy port", 1, 65535, integer=True)
    keepalive = number(cfg.keepalive, "upstream keepalive", 1, 100_000, integer=True)
    lines = _profile_lines(cfg, idle, connect)
    temps = "\n".join(
        f"    {kind}_temp_path {nginx_quoted(temp / kind, 'temp path')};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# rendered by pytest-wsgi502: proxy profile {cfg.profile} (see pytest_wsgi502/proxy.py)
{user}daemon off;
master_process off;
worker_processes 1;
pid {nginx_quoted(workdir / 'nginx.pid', 'pid path')};
error_log {nginx_quoted(workdir / ERROR_LOG, 'error log path')} info;
events {{ worker_connections 4096; }}
http {{
    map $status $lb_status {{ {lines["status_map"]} default $status; }}
    log_format lb escape=json '{ACCESS_LOG_FORMAT}';
    access_log {nginx_quoted(workdir / ACCESS_LOG, 'access log path')} lb buffer=64k flush=1s;
{temps}
{lines["headers"]}{lines["client"]}    upstream target {{
{lines["servers"]}        keepalive {keepalive};
        keepalive_timeout {idle};
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_timeout {idle};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://target;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
{lines["location"]}            proxy_read_timeout {idle};
            proxy_send_timeout {idle};
            proxy_buffering on;
        }}
    }}
}}
"""


class LocalProxy:
    def __init__(self, workdir: Path, upstream: str, idle_timeout: float, binary: str,
                 ledger: Path | None = None, port: int = 0, place: CpuPlace | None = None,
                 profile: str = "alb") -> None:
        self.dir = workdir
        self.place = place  # the "outside world" with the engine (services/isolation.py), when isolated
        self.port = port or free_port()
        self.cfg = ProxyConfig(self.port, upstream, idle_timeout,
                               user=getpass.getuser() if os.geteuid() == 0 else None, profile=proxy_profile(profile))
        self.binary, self.ledger = binary, ledger
        self.process: LocalProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout: float = 20.0) -> LocalProxy:
        import httpx

        text = render_nginx(self.cfg, self.dir)  # ConfigError before anything is created
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / "nginx-temp" / kind).mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(text, encoding="utf-8")
        argv = [self.binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / ERROR_LOG)]
        # SIGQUIT flushes the buffered access log (see stop() for what it does not do)
        self.process = LocalProcess("nginx", argv, self.dir / "proxy-stdout.log", stop_signal=signal.SIGQUIT,
                                    ledger=self.ledger, place=self.place).start()
        def ready() -> bool:  # nginx itself must answer: a port clash could put another server there
            r = httpx.get(self.url + ready_path, timeout=2)
            return r.status_code < 500 and r.headers.get("server", "").startswith("nginx")

        self.process.wait_ready(ready, timeout, f"answering GET {ready_path} through the proxy")
        return self

    def stop(self, drain: float = 5.0) -> None:
        """Stop nginx once it has closed its client connections, waiting at most ``drain`` s (nginx's default
        lingering_timeout). It runs as one process (``master_process off``), and there SIGQUIT is not graceful:
        it exits at once, flushing the buffered access log but never logging a request it has not finished,
        such as a 400 still in its lingering close (seen here: the last of four records missing, 2 of 25
        runs on a loaded machine)."""
        if self.process is not None:
            if self.process.pid is not None:
                wait_connections_closed(self.process.pid, self.port, drain)
            self.process.stop()


def find_nginx(explicit: str | None) -> str | None:
    return find_binary("nginx", explicit)
