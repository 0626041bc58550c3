"""Each AWS ALB behaviour of the ``alb`` proxy profile, provoked on loopback against a tiny scripted target, with
the status the client gets (for 460: the proxy's access-log entry). Sources in pytest_wsgi502/proxy.py. The
``nginx`` profile is run next to it where the two differ (retries, passive health), so each test shows the
behaviour is the profile's and not nginx's anyway. About 10 s in all."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_wsgi502 import nginxlog
from pytest_wsgi502.proxy import LocalProxy, render_nginx
from pytest_wsgi502.services.process import wait_connections_closed
from tests.scripted_target import Target

NGINX = "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed")


class Proxy:
    """nginx as LocalProxy renders it for ``profile``, run in the foreground for one test."""

    def __init__(self, workdir: Path, upstream: str, profile: str, **cfg: float) -> None:
        local = LocalProxy(workdir, upstream, cfg.pop("idle_timeout", 60.0), NGINX, profile=profile)
        self.cfg, self.dir, self.port = dataclasses.replace(local.cfg, **cfg), workdir, local.port  # type: ignore[arg-type]
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / "nginx-temp" / kind).mkdir(parents=True, exist_ok=True)
        conf = workdir / "nginx.conf"
        conf.write_text(render_nginx(self.cfg, workdir), encoding="utf-8")
        self.process = subprocess.Popen([NGINX, "-p", str(workdir), "-c", str(conf), "-e",
                                         str(workdir / nginxlog.ERROR_LOG)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                assert self.process.poll() is None and time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)

    def send(self, request: bytes, timeout: float = 10.0) -> str:
        """The status line the client gets ('' when the connection closed without one)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout) as c:
            c.sendall(request)
            out = b""
            while b"\r\n" not in out:
                data = c.recv(65536)
                if not data:
                    break
                out += data
        return out.split(b"\r\n")[0].decode()

    def get(self, path: str, headers: list[tuple[str, str]] | None = None, timeout: float = 10.0) -> int:
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers or [])
        status = self.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n{lines}\r\n".encode(), timeout)
        return int(status.split(" ")[1])

    def stop(self) -> tuple[list[dict[str, object]], str]:
        """Stop as LocalProxy.stop does (once nginx has closed its connections; SIGQUIT flushes the access
        log); the access-log records and the error log's text."""
        if self.process.poll() is None:
            wait_connections_closed(self.process.pid, self.port, 5.0)
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        error_log = (self.dir / nginxlog.ERROR_LOG).read_text(errors="replace")
        return nginxlog.read_access_log(self.dir / nginxlog.ACCESS_LOG), error_log


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[list[Proxy]]:
    started: list[Proxy] = []
    yield started
    for p in started:
        p.stop()


def proxy(proxies: list[Proxy], tmp_path: Path, upstream: str, profile: str = "alb", **cfg: float) -> Proxy:
    p = Proxy(tmp_path / f"{profile}-{len(proxies)}", upstream, profile, **cfg)
    proxies.append(p)
    return p


def test_headers_over_16k_a_line_or_about_64k_in_all_are_400(target: Target, proxies: list[Proxy],
                                                              tmp_path: Path) -> None:
    """Quotas page: 16K per header, 64K for the entire request header; troubleshooting page: 400. A header line
    of 16,384 bytes with its CRLF is served, one byte more is 400 (nginx 1.22: 400, logged 400, not 494); 64
    headers of 1,000-byte values pass and 65 are 400. nginx's default (4 8k) refused everything over 8K."""
    p = proxy(proxies, tmp_path, f"127.0.0.1:{target.port}")
    fits = 16_384 - len("X-A: \r\n")
    assert p.get("/ok", [("X-A", "a" * fits)]) == 200
    assert p.get("/ok", [("X-A", "a" * (fits + 1))]) == 400
    many = [(f"X-{i:03d}", "b" * 1000) for i in range(65)]
    assert p.get("/ok", many[:64]) == 200
    assert p.get("/ok", many) == 400
    assert target.seen["/ok"] == 2  # the refused ones never reached the target
    records, _ = p.stop()
    assert [r["status"] for r in records] == [200, 400, 200, 400]


def test_the_target_closing_or_resetting_is_502(target: Target, proxies: list[Proxy], tmp_path: Path) -> None:
    p = proxy(proxies, tmp_path, f"127.0.0.1:{target.port}")
    assert p.get("/close") == 502
    assert p.get("/reset") == 502
    assert p.get("/ok") == 200
    _, errors = p.stop()
    assert "upstream prematurely closed connection" in errors and "(104: Connection reset by peer)" in errors


def test_no_answer_within_the_idle_timeout_is_504(target: Target, proxies: list[Proxy], tmp_path: Path) -> None:
    p = proxy(proxies, tmp_path, f"127.0.0.1:{target.port}", idle_timeout=1)
    started = time.monotonic()
    assert p.get("/slow?s=3") == 504
    assert 0.9 < time.monotonic() - started < 2.5


def test_a_client_that_stops_sending_is_cut_at_the_idle_timeout(target: Target, proxies: list[Proxy],
                                                                 tmp_path: Path) -> None:
    """Troubleshooting page, 408: the client sent no data for the idle timeout. nginx logs 408 but closes without
    an answer (the ALB sends 408): the one divergence, measured here so a change in nginx shows."""
    p = proxy(proxies, tmp_path, f"127.0.0.1:{target.port}", idle_timeout=1)
    started = time.monotonic()
    assert p.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n") == ""  # headers never finished
    assert p.send(b"POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab") == ""  # body never finished
    assert 1.8 < time.monotonic() - started < 4
    records, _ = p.stop()
    assert [r["status"] for r in records] == [408, 408] and target.seen["/ok"] == 0


def test_a_connect_timeout_is_504(proxies: list[Proxy], tmp_path: Path) -> None:
    """A target whose accept queue is full: the kernel drops the proxy's SYNs and the connect times out (the
    profile's 10 s, shortened to 1 s here; the unit tests check the 10 s)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = [socket.socket() for _ in range(4)]
    try:
        for s in queued:
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
        p = proxy(proxies, tmp_path, f"127.0.0.1:{port}", connect_timeout=1)
        started = time.monotonic()
        assert p.get("/ok") == 504
        assert 0.9 < time.monotonic() - started < 2.5
        _, errors = p.stop()
        assert "upstream timed out (110: Connection timed out) while connecting to upstream" in errors
    finally:
        for s in (*queued, listener):
            s.close()


def test_a_client_that_closes_first_is_logged_460_and_is_no_target_error(target: Target, proxies: list[Proxy],
                                                                         tmp_path: Path) -> None:
    """Troubleshooting page, 460: the client closed the connection before the LB answered. nginx logs 499; the
    alb profile's access log says 460 (nginx's 499 kept as nginx_status), with no upstream status: not a 5xx,
    not a failure to attribute. The nginx profile logs nginx's 499."""
    logged = {}
    for profile in ("alb", "nginx"):
        p = proxy(proxies, tmp_path, f"127.0.0.1:{target.port}", profile=profile)
        with socket.create_connection(("127.0.0.1", p.port), 5) as c:
            c.sendall(b"GET /slow?s=2 HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.5)
        time.sleep(0.3)
        records, _ = p.stop()
        (rec,) = records
        logged[profile] = (rec["status"], rec["nginx_status"], rec["upstream_status"])
        if profile == "alb":
            assert nginxlog.access_counts(records)["status_counts"] == {"460": 1}
            assert nginxlog.failures(records) == [] and nginxlog.app_errors(records) == []
    assert logged == {"alb": (460, 499, "-"), "nginx": (499, 499, "-")}


def test_no_retry_of_a_request_the_target_dropped(target: Target, proxies: list[Proxy], tmp_path: Path) -> None:
    """ALB answers 502 when the target closes with a request outstanding; it does not send it again: one
    attempt in the access log, one read at the target. nginx's default (the nginx profile) tries the next
    server (``$upstream_status`` lists each attempt); here that is ::1 or nothing live, so the client gets 502
    too, after two or three attempts."""
    tried = {}
    for profile in ("alb", "nginx"):
        p = proxy(proxies, tmp_path, f"127.0.0.1:{target.port}", profile=profile)
        target.seen.clear()
        assert p.get("/ok") == 200  # leaves a kept-alive upstream connection
        assert p.get("/close") == 502
        if profile == "alb":
            assert target.seen["/close"] == 1
        records, _ = p.stop()
        tried[profile] = nginxlog.attempts(records[-1])
    assert tried["alb"] == 1 and tried["nginx"] >= 2, tried


def test_no_passive_backend_down_state(target: Target, proxies: list[Proxy], tmp_path: Path) -> None:
    """ALB has no passive health: after the target fails a request the next one is routed to it. The nginx
    profile (127.0.0.1 and ::1, as nginx resolves localhost with ::1 in /etc/hosts; the target on 127.0.0.1
    only) marks both down after one error: 'no live upstreams' 502s until fail_timeout (10 s) ends."""
    alb = proxy(proxies, tmp_path, f"127.0.0.1:{target.port}")
    assert alb.get("/close") == 502
    assert [alb.get("/ok") for _ in range(5)] == [200] * 5
    nginx = proxy(proxies, tmp_path, f"127.0.0.1:{target.port}", profile="nginx")
    assert [nginx.get("/ok") for _ in range(3)] == [200] * 3  # ::1 refused, retried on 127.0.0.1
    assert nginx.get("/close") == 502
    after = [nginx.get("/ok") for _ in range(5)]
    assert after == [502] * 5
    _, errors = nginx.stop()
    assert errors.count("no live upstreams while connecting to upstream") >= 5
    assert "upstream server temporarily disabled" in errors
