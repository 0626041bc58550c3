"""The ELB-like proxy in front of every cell: nginx configured to behave like an AWS load balancer.

Like the LB: an idle keep-alive pool to the target, no retry of a failed request (nginx's default silently
retries on a stale keep-alive connection and would hide the very race we look for), a 10 s connect timeout and
an idle timeout (60 s default). The access log records status and upstream status per request, the error log
keeps nginx's reason for each 502/504; both logs' formats and parsers live in ``nginxlog.py``.
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
from pytest_wsgi502.services.process import CpuPlace, LocalProcess, find_binary, free_port


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


def render_nginx(cfg: ProxyConfig, workdir: Path) -> str:
    """The proxy's config: every path and name quoted (a run dir with a space or ';' stays one argument),
    timeouts in whole seconds rounded up."""
    temp = workdir / "nginx-temp"
    user = f"user {nginx_quoted(cfg.user, 'user')};\n" if cfg.user else ""
    idle = whole_seconds(cfg.idle_timeout, "idle timeout")
    connect = whole_seconds(cfg.connect_timeout, "connect timeout")
    port = number(cfg.listen_port, "proxy port", 1, 65535, integer=True)
    keepalive = number(cfg.keepalive, "upstream keepalive", 1, 100_000, integer=True)
    temps = "\n".join(
        f"    {kind}_temp_path {nginx_quoted(temp / kind, 'temp path')};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# rendered by pytest-wsgi502: an ELB-like proxy (see pytest_wsgi502/proxy.py)
{user}daemon off;
master_process off;
worker_processes 1;
pid {nginx_quoted(workdir / 'nginx.pid', 'pid path')};
error_log {nginx_quoted(workdir / ERROR_LOG, 'error log path')} info;
events {{ worker_connections 4096; }}
http {{
    log_format lb escape=json '{ACCESS_LOG_FORMAT}';
    access_log {nginx_quoted(workdir / ACCESS_LOG, 'access log path')} lb buffer=64k flush=1s;
{temps}
    upstream target {{
        server {nginx_quoted(cfg.upstream, 'upstream')};
        keepalive {keepalive};
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
            proxy_next_upstream off;
            proxy_connect_timeout {connect};
            proxy_read_timeout {idle};
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
        # SIGQUIT: graceful stop, which also flushes the buffered access log
        self.process = LocalProcess("nginx", argv, self.dir / "proxy-stdout.log", stop_signal=signal.SIGQUIT,
                                    ledger=self.ledger, place=self.place).start()
        def ready() -> bool:  # nginx itself must answer: a port clash could put another server there
            r = httpx.get(self.url + ready_path, timeout=2)
            return r.status_code < 500 and r.headers.get("server", "").startswith("nginx")

        self.process.wait_ready(ready, timeout, f"answering GET {ready_path} through the proxy")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def find_nginx(explicit: str | None) -> str | None:
    return find_binary("nginx", explicit)
