"""The ELB-like proxy in front of every cell: nginx configured to behave like an AWS load balancer.

Like the LB: an idle keep-alive pool to the target, no retry of a failed request (nginx's default silently
retries on a stale keep-alive connection and would hide the very race we look for), a 10 s connect timeout and
an idle timeout (60 s default). The access log records status and upstream status per request, the error log
keeps nginx's reason for each 502/504.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_wsgi502.services.process import LocalProcess, find_binary, free_port

_LOG_FORMAT = (
    '{"t":$msec,"status":$status,"conn":$connection,"upstream_status":"$upstream_status","upstream_addr":"$upstream_addr",'
    '"request_time":$request_time,"upstream_time":"$upstream_response_time","uri":"$request_uri"}'
)


@dataclass(frozen=True)
class ProxyConfig:
    listen_port: int
    upstream: str  # host:port
    idle_timeout: float = 60.0
    connect_timeout: float = 10.0
    keepalive: int = 64  # idle upstream connections kept per nginx worker
    user: str | None = None


def render_nginx(cfg: ProxyConfig, workdir: Path) -> str:
    temp = workdir / "nginx-temp"
    user = f"user {cfg.user};\n" if cfg.user else ""
    idle = f"{int(cfg.idle_timeout)}s"
    temps = "\n".join(
        f"    {kind}_temp_path {temp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# rendered by pytest-wsgi502: an ELB-like proxy (see pytest_wsgi502/proxy.py)
{user}daemon off;
master_process off;
worker_processes 1;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'proxy-error.log'} info;
events {{ worker_connections 4096; }}
http {{
    log_format lb escape=json '{_LOG_FORMAT}';
    access_log {workdir / 'proxy-access.log'} lb buffer=64k flush=1s;
{temps}
    upstream target {{
        server {cfg.upstream};
        keepalive {cfg.keepalive};
        keepalive_timeout {idle};
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{cfg.listen_port};
        keepalive_timeout {idle};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://target;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_next_upstream off;
            proxy_connect_timeout {int(cfg.connect_timeout)}s;
            proxy_read_timeout {idle};
            proxy_send_timeout {idle};
            proxy_buffering on;
        }}
    }}
}}
"""


class LocalProxy:
    def __init__(self, workdir: Path, upstream: str, idle_timeout: float, binary: str,
                 ledger: Path | None = None, port: int = 0) -> None:
        self.dir = workdir
        self.port = port or free_port()
        self.cfg = ProxyConfig(self.port, upstream, idle_timeout,
                               user=getpass.getuser() if os.geteuid() == 0 else None)
        self.binary, self.ledger = binary, ledger
        self.process: LocalProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout: float = 20.0) -> LocalProxy:
        import httpx

        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / "nginx-temp" / kind).mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(render_nginx(self.cfg, self.dir))
        argv = [self.binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "proxy-error.log")]
        # SIGQUIT: graceful stop, which also flushes the buffered access log
        self.process = LocalProcess("nginx", argv, self.dir / "proxy-stdout.log", stop_signal=signal.SIGQUIT,
                                    ledger=self.ledger).start()
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


def parse_access_log(path: Path, since: float = 0.0) -> dict[str, Any]:
    """Counts from the proxy's access log: statuses as the client saw them and as the upstream answered."""
    statuses: Counter[str] = Counter()
    upstream: Counter[str] = Counter()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("t", 0) < since:
            continue
        statuses[str(rec["status"])] += 1
        upstream[rec.get("upstream_status") or "-"] += 1
    return {"status_counts": dict(sorted(statuses.items())), "upstream_status": dict(sorted(upstream.items()))}


def parse_error_log(path: Path) -> dict[str, int]:
    """Why nginx failed requests: a count per known upstream-failure reason."""
    reasons = {
        "upstream prematurely closed connection": "upstream_closed",
        "Connection reset by peer": "upstream_reset",
        "Connection refused": "upstream_refused",
        "upstream timed out": "upstream_timeout",
        "Resource temporarily unavailable": "upstream_backlog_full",
        "no live upstreams": "no_live_upstreams",
    }
    counts: Counter[str] = Counter()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        if "[error]" not in line and "[crit]" not in line:
            continue
        for needle, key in reasons.items():
            if needle in line:
                counts[key] += 1
                break
        else:
            counts["other"] += 1
    return dict(counts)
