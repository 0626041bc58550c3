"""Side-by-side benchmarks of the load engine: ``python -m pytest_wsgi502.bench {engine,accuracy} --json PATH``.

The pieces every benchmark shares (the engine's and the distributed one, ``bench/distributed.py``) live here:
CPU pinning and the static nginx target the clients measure against.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def pin(core: int) -> list[str]:
    """``taskset -c CORE`` when it exists and there are two CPUs or more: benchmark clients and targets apart."""
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []


def static_nginx(workdir: Path, core: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    """An nginx answering ``200 ok`` to everything on a free loopback port, pinned to ``core``, no access log: the
    cheapest real HTTP/1.1 keep-alive target, so the clients are what is measured. Paths are quoted as the proxy
    quotes them (proxy.nginx_quoted)."""
    from pytest_wsgi502.proxy import find_nginx, nginx_quoted
    from pytest_wsgi502.services.process import free_port, port_open

    binary = find_nginx(None)
    if binary is None:
        sys.exit("nginx not found: bash bin/dev setup installs it")
    port = free_port()
    temps = "\n".join(f"{k}_temp_path {nginx_quoted(workdir / k, 'temp path')};"
                      for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = workdir / "nginx.conf"
    pid = nginx_quoted(workdir / "nginx.pid", "pid")
    conf.write_text(f"""daemon off; master_process off; worker_processes 1; pid {pid};
error_log {nginx_quoted(workdir / 'error.log', 'error log')};
events {{ worker_connections 1024; }}
http {{ access_log off; {temps}
  server {{ listen 127.0.0.1:{port}; keepalive_requests 10000000;
    location / {{ return 200 "ok"; }} }} }}
""")
    proc = subprocess.Popen([*pin(core), binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")])
    deadline = time.monotonic() + 10
    while not port_open(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            sys.exit(f"nginx did not start; see {workdir / 'error.log'}")
        time.sleep(0.05)
    return proc, port
