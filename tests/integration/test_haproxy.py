"""HAProxy 2.6 in front of two loopback targets (pytest_wsgi502/haproxy.py), as a rolling deploy uses it: round
robin, drain/maint of one target under load, a stopped target, a target closing or resetting mid-request, and
``shutdown sessions`` cutting a request in flight; the status the client gets and what the access log says. Each
test starts and releases its own HAProxy (a few seconds each)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_wsgi502 import nginxlog
from pytest_wsgi502.haproxy import HAProxyLB
from pytest_wsgi502.services.process import port_open
from tests.scripted_target import Target

HAPROXY = "/usr/sbin/haproxy"
pytestmark = pytest.mark.skipif(not os.access(HAPROXY, os.X_OK), reason="haproxy is not installed")


class Client:
    """One keep-alive client connection; ``get`` returns (status, body), status 0 when the connection closed
    without an answer (then it reconnects for the next request)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def get(self, path: str, timeout: float = 20.0) -> tuple[int, str]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError
                buf += data
            head, body = buf.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length")
            while len(body) < length:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError
                body += data
        except OSError:
            self.close()
            return 0, ""
        if any(h.lower() == "connection: close" for h in lines[1:]):
            self.close()
        return int(lines[0].split(" ")[1]), body.decode()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@pytest.fixture
def targets() -> Iterator[list[Target]]:
    ts = [Target("s0"), Target("s1")]
    yield ts
    for t in ts:
        t.stop()


@pytest.fixture
def lb(tmp_path: Path, targets: list[Target]) -> Iterator[HAProxyLB]:
    balancer = HAProxyLB(tmp_path / "lb", [f"127.0.0.1:{t.port}" for t in targets], 60.0, HAPROXY,
                         ledger=tmp_path / "pids")
    balancer.start("/ok")
    yield balancer
    balancer.stop()
    assert balancer.process is not None and not balancer.process.alive()
    assert not port_open(balancer.port)


def records(lb: HAProxyLB) -> list[dict[str, object]]:
    """The access log's request records, without the readiness probe's."""
    lb.stop()  # every line is written as it happens; stopping makes sure nothing is still in flight
    logged = nginxlog.read_access_log(lb.dir / nginxlog.ACCESS_LOG)
    assert logged[0]["uri"] == "/ok"  # start()'s one probe, once HAProxy answered its admin socket
    return logged[1:]


def test_round_robin_over_both_targets(lb: HAProxyLB, targets: list[Target]) -> None:
    client = Client(lb.port)
    names = [client.get("/ok")[1] for _ in range(8)]
    client.close()
    fresh = []
    for _ in range(4):
        c = Client(lb.port)
        fresh.append(c.get("/ok")[1])
        c.close()
    # each request balanced on its own, on one keep-alive connection and across new ones alike
    assert sorted(Counter(names).values()) == [4, 4] and all(a != b for a, b in itertools.pairwise(names))
    assert Counter(fresh) == {"s0": 2, "s1": 2}
    logged = records(lb)
    assert [r["server"] for r in logged] == names + fresh
    assert {r["status"] for r in logged} == {200} and {r["termination"] for r in logged} == {"----"}
    assert all(r["upstream_status"] == "200" and isinstance(r["t"], float) for r in logged)
    assert abs(float(str(logged[-1]["t"])) - time.time()) < 30  # epoch seconds with ms, like nginx's $msec
    assert len({r["client_port"] for r in logged[:8]}) == 1  # the client's own connection, through the relay
    # one target connection each, reused across clients (http-reuse always), as the ALB keeps target connections
    assert [len(t.conns) for t in targets] == [1, 1]


@pytest.mark.parametrize("state", ["drain", "maint"])
def test_a_drained_target_takes_no_new_requests_and_finishes_its_own(lb: HAProxyLB, targets: list[Target],
                                                                    state: str) -> None:
    slow: dict[str, tuple[int, str]] = {}

    def slow_request(key: str) -> None:
        c = Client(lb.port)
        c.get("/ok")  # not the first request of its connection
        slow[key] = c.get("/slow?s=1.5")
        c.close()

    def seen_slow(n: int) -> None:
        deadline = time.monotonic() + 5
        while sum(t.seen["/slow"] for t in targets) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    # one after the other, with one request between them, so round robin puts one slow request on each target
    slows = [threading.Thread(target=slow_request, args=(k,)) for k in ("a", "b")]
    slows[0].start()
    seen_slow(1)
    between = Client(lb.port)
    assert between.get("/ok")[0] == 200
    between.close()
    slows[1].start()
    seen_slow(2)
    assert targets[0].seen["/slow"] == 1 and targets[1].seen["/slow"] == 1  # one in flight on each
    stop = threading.Event()
    statuses: Counter[int] = Counter()

    def load() -> None:
        c = Client(lb.port)
        while not stop.is_set():
            statuses[c.get("/ok")[0]] += 1
        c.close()

    loaders = [threading.Thread(target=load) for _ in range(3)]
    for t in loaders:
        t.start()
    time.sleep(0.2)
    lb.set_state(0, state)
    time.sleep(0.3)  # a request routed to s0 just before may still reach it (the targets share this process's GIL)
    on_s0 = targets[0].seen["/ok"]
    time.sleep(0.5)
    assert targets[0].seen["/ok"] == on_s0  # nothing new routed to the drained target
    for t in slows:
        t.join(10)
    stop.set()
    for t in loaders:
        t.join(10)
    assert slow == {"a": (200, slow["a"][1]), "b": (200, slow["b"][1])}  # the in-flight ones finished
    assert set(statuses) == {200} and statuses[200] > 20
    logged = records(lb)
    assert nginxlog.failures(logged) == []
    assert sum(1 for r in logged if r["uri"] == "/slow?s=1.5" and r["status"] == 200) == 2


def test_a_stopped_target_still_routed_is_502_refused_and_no_target_is_503(lb: HAProxyLB,
                                                                          targets: list[Target]) -> None:
    targets[1].stop()
    client = Client(lb.port)
    got = [client.get("/ok") for _ in range(4)]
    # round robin keeps routing to the stopped target (no passive health): its requests are 502, not HAProxy's 503
    assert sorted(s for s, _ in got) == [200, 200, 502, 502]
    lb.set_state(0, "maint")
    lb.set_state(1, "maint")
    assert client.get("/ok")[0] == 503  # nothing registered: the ALB's 503 too
    client.close()
    logged = records(lb)
    failed = [r for r in logged if r["status"] in (502, 503)]
    assert [(r["status"], r["server"], r["termination"]) for r in failed] == [
        (502, "s1", "SC--"), (502, "s1", "SC--"), (503, "<NOSRV>", "SC--")]
    # no retry: refused once, answered at once (HAProxy's default is 3 retries, 1 s apart)
    assert all(r["retries"] == 0 and float(str(r["request_time"])) < 0.5 for r in failed)
    reasons = nginxlog.haproxy_reasons(logged)
    names = [reasons[f.conn].popleft().name for f in nginxlog.failures(logged)]
    assert names == ["upstream_refused", "upstream_refused", "no_live_upstreams"]


@pytest.mark.parametrize("path", ["/close", "/reset"])
def test_a_target_cutting_a_request_is_502_even_on_a_kept_alive_client_connection(lb: HAProxyLB,
                                                                                 path: str) -> None:
    """HAProxy alone closes such a connection without an answer or a log line (measured); the relay makes it
    the ALB's 502, logged."""
    client = Client(lb.port)
    assert client.get("/ok")[0] == 200
    got = [client.get(path)[0] for _ in range(2)]  # one on each target, neither the connection's first request
    client.close()
    assert got == [502, 502]
    logged = records(lb)
    cut = [r for r in logged if r["uri"] == path]
    assert [(r["status"], r["termination"]) for r in cut] == [(502, "SH--"), (502, "SH--")]
    assert {r["server"] for r in cut} == {"s0", "s1"}
    reasons = nginxlog.haproxy_reasons(logged)
    assert [q[0].name for q in reasons.values()] == ["upstream_closed", "upstream_closed"]


def test_shutdown_sessions_cuts_the_request_in_flight_with_502(lb: HAProxyLB, targets: list[Target]) -> None:
    lb.set_state(1, "maint")  # everything on s0
    client = Client(lb.port)
    assert client.get("/ok") == (200, "s0")
    result: list[tuple[int, str]] = []
    t0 = time.monotonic()
    worker = threading.Thread(target=lambda: result.append(client.get("/slow?s=3")))
    worker.start()
    deadline = time.monotonic() + 5
    while targets[0].seen["/slow"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    lb.shutdown_sessions(0)
    worker.join(10)
    elapsed = time.monotonic() - t0
    client.close()
    assert result == [(502, result[0][1])] and elapsed < 2  # answered at the cut, not after the 3 s
    logged = records(lb)
    cut = [r for r in logged if r["uri"] == "/slow?s=3"]
    assert [(r["status"], r["server"], r["termination"]) for r in cut] == [(502, "s0", "KH--")]
    reason = nginxlog.haproxy_reasons(logged)[int(str(cut[0]["conn"]))][0]
    assert reason.name == "upstream_closed" and "shutdown sessions" in reason.text


def test_special_characters_in_the_run_dir_and_a_deep_one(tmp_path: Path, targets: list[Target]) -> None:
    """A run dir with a space, #, a double quote and a backslash is written quoted and read back as is (the
    admin and relay sockets are made there); one too deep for a unix socket path gets the sockets in a short
    private directory, removed at stop."""
    upstreams = [f"127.0.0.1:{t.port}" for t in targets]
    odd = Path(tempfile.mkdtemp(prefix='wsgi502-h a#"c\\'))  # short: its socket paths must fit in sun_path
    deep = tmp_path / ("d" * 90)
    try:
        for workdir in (odd, deep):
            balancer = HAProxyLB(workdir, upstreams, 60.0, HAPROXY, ledger=tmp_path / "pids")
            try:
                balancer.start("/ok")
                assert balancer.admin_socket.is_socket() and balancer.relay_socket.is_socket()
                assert (balancer.admin_socket.parent == workdir) == (workdir == odd)
                balancer.set_state(0, "drain")
                assert "s0" in balancer.command("show servers state be")
            finally:
                balancer.stop()
            assert not balancer.admin_socket.exists() and not balancer.relay_socket.exists()
            assert balancer.admin_socket.parent.exists() == (workdir == odd)  # the short private dir is removed
            assert nginxlog.read_access_log(workdir / nginxlog.ACCESS_LOG)
    finally:
        shutil.rmtree(odd, ignore_errors=True)


@pytest.fixture
def quick_lb(tmp_path: Path, targets: list[Target]) -> Iterator[HAProxyLB]:
    """An LB with a 1 s idle timeout."""
    balancer = HAProxyLB(tmp_path / "lb", [f"127.0.0.1:{t.port}" for t in targets], 1.0, HAPROXY)
    balancer.start("/ok")
    yield balancer
    balancer.stop()


def test_idle_timeout_is_504_and_a_client_closing_first_is_logged_460(quick_lb: HAProxyLB,
                                                                      targets: list[Target]) -> None:
    quick_lb.set_state(1, "maint")
    client = Client(quick_lb.port)
    t0 = time.monotonic()
    assert client.get("/slow?s=2")[0] == 504  # the target's answer did not come within the idle timeout
    assert 0.9 < time.monotonic() - t0 < 1.9  # lb's timeout, not the relay's (6 s)
    with socket.create_connection(("127.0.0.1", quick_lb.port)) as gone:
        gone.sendall(b"GET /slow?s=0.5 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.2)
    time.sleep(0.6)
    client.close()
    logged = records(quick_lb)
    assert [(r["status"], r["termination"]) for r in logged] == [(504, "sH--"), (460, "CH--")]
    assert logged[1]["haproxy_status"] == 400 and targets[0].seen["/slow"] == 2
    reason = nginxlog.haproxy_reasons(logged)[int(str(logged[0]["conn"]))][0]
    assert (reason.name, reason.phase) == ("upstream_timeout", "reading")
    assert [f.status for f in nginxlog.failures(logged)] == [504]  # 460 is not a failure of the target


def head(port: int, headers: list[tuple[str, str]]) -> int:
    with socket.create_connection(("127.0.0.1", port), 5) as c:
        c.sendall(("GET /ok HTTP/1.1\r\nHost: t\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
                   + "\r\n").encode())
        return int(c.recv(100).split(b" ")[1])


def test_header_limits_are_the_albs(lb: HAProxyLB) -> None:
    """16K per header line, 64K in all, answered 400 (the same boundaries as measured for the nginx alb profile:
    a line of 16,384 bytes with its CRLF is served, one more byte is not; 64 headers of 1,000 bytes pass, 65 not)."""
    line = 16_384 - len("X-Big: ") - 2
    assert head(lb.port, [("X-Big", "a" * line)]) == 200
    assert head(lb.port, [("X-Big", "a" * (line + 1))]) == 400
    assert head(lb.port, [(f"X-H{i:02d}", "a" * 1000) for i in range(64)]) == 200
    assert head(lb.port, [(f"X-H{i:02d}", "a" * 1000) for i in range(65)]) == 400
    statuses = [r["status"] for r in records(lb)]
    assert statuses == [200, 400, 200, 400]  # each logged once, whichever tier answered


@pytest.mark.parametrize("drain", [True, False])
def test_replacing_a_target_under_load(lb: HAProxyLB, targets: list[Target], drain: bool) -> None:
    """A rolling deploy of one target on its port under keep-alive load: drained first, nothing is lost; stopped
    while still routed, its requests are refused (502, SC--) until the successor listens."""
    stop = threading.Event()
    statuses: Counter[int] = Counter()

    def load() -> None:
        c = Client(lb.port)
        while not stop.is_set():
            statuses[c.get("/ok")[0]] += 1
            time.sleep(0.002)
        c.close()

    loaders = [threading.Thread(target=load) for _ in range(4)]
    for t in loaders:
        t.start()
    time.sleep(0.3)
    if drain:
        lb.set_state(0, "drain")
        time.sleep(0.2)  # the propagation lag
    targets[0].stop()
    time.sleep(0.3)
    successor = Target("s0-new", targets[0].port)
    try:
        lb.set_state(0, "ready")
        time.sleep(0.3)
        stop.set()
        for t in loaders:
            t.join(10)
        logged = records(lb)
    finally:
        successor.stop()
    assert successor.seen["/ok"] > 0 and statuses[200] > 100
    refused = [r for r in logged if r["status"] == 502]
    if drain:
        assert set(statuses) == {200} and not refused
    else:
        assert statuses[502] > 0 and set(statuses) <= {200, 502} and len(refused) == statuses[502]
        assert {(r["server"], r["termination"]) for r in refused} <= {("s0", "SC--"), ("s0", "SH--")}
        assert ("s0", "SC--") in {(r["server"], r["termination"]) for r in refused}
