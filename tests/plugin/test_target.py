"""Issue 17 item 3: ``--wsgi-target=URL`` drives the load at an already running service (pytester).

Nothing is started locally: no server, MariaDB or proxy. The service here is a small threaded WSGI server on
127.0.0.1 in its own process, started by the test; it counts what it answered, so the client-side numbers can be
checked against it. A non-loopback target needs ``--wsgi-allow-remote``; the suite never sends off the machine:
the refusals happen before any connect, and the one run with the opt-out goes through a stubbed connect (as
tests/unit/test_load_guard.py) that answers 200 itself and records the address it was asked for.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_wsgi502.load import engine
from pytest_wsgi502.report.table import REMOTE_NOTE
from tests.fakewire import FakeWire

OFF_MACHINE = "192.0.2.10"  # TEST-NET-1: never routed

TESTS = """
def test_cell(wsgi_cell_run):
    wsgi_cell_run.assert_slo()

def test_local_server(wsgi_server):
    raise AssertionError("must be skipped: --wsgi-target starts nothing locally")

def test_load_at_target(wsgi_target, wsgi_load):
    result = wsgi_load(wsgi_target, mode="open", rate=100, duration=0.5, concurrency=2, slo="error_rate<1e-3")
    assert result.outcome == "fail" and result.attribution_scope == "client"
    assert result.slo["failures"][0].startswith("error_rate")
"""


SERVICE = r"""
import json, sys, threading
from collections import Counter
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

answered, lock = Counter(), threading.Lock()

def app(environ, start_response):
    if environ["PATH_INFO"] == "/_answered":  # what it answered so far (not counted itself)
        body = json.dumps(answered).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    with lock:
        n = sum(answered.values()) + 1
        status = 502 if n % 10 == 0 else 200  # every 10th request: a 502, as a load balancer in front would give
        answered[status] += 1
    if status == 502:
        start_response("502 Bad Gateway", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"bad"]
    body = json.dumps({"ok": True, "path": environ["PATH_INFO"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

class Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, app, server_class=Threaded, handler_class=Quiet)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Service:
    """An already running service in its own process (its CPU is not the load engine's): JSON for any path, a 502
    for every 10th request; ``answered()`` asks it what it answered."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVICE], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def answered(self) -> Counter[int]:
        with urllib.request.urlopen(f"{self.url}/_answered", timeout=10) as response:
            return Counter({int(k): v for k, v in json.loads(response.read()).items()})


@pytest.fixture
def service() -> Iterator[Service]:
    s = Service()
    yield s
    s.proc.kill()
    s.proc.wait(10)


def test_a_running_loopback_service_is_judged_on_what_the_client_sees(pytester: pytest.Pytester,
                                                                      service: Service) -> None:
    pytester.makepyfile(test_target=TESTS)
    r = pytester.runpytest(f"--wsgi-target={service.url}", "--wsgi-duration=1s", "--wsgi-mode=open",
                           "--wsgi-rate=200", "--wsgi-concurrency=4",
                           "--wsgi-path=/item/{n}", '--wsgi-verify-contains="ok": true', "--wsgi-slo=error_rate<0.5",
                           "--wsgi-json=out.json", "--wsgi-html=out.html", "-rs", "-p", "no:cacheprovider")
    out = r.stdout.str()
    r.assert_outcomes(passed=2, skipped=1)
    # the header says where the load goes and what the report can say; nothing local was started
    assert f"wsgi502: target {service.url} (option): 127.0.0.1, loopback" in out
    assert f"wsgi502: {REMOTE_NOTE}" in out
    assert "wsgi502: database" not in out and "wsgi502: isolation" not in out and "wsgi502: cells:" not in out
    r.stdout.fnmatch_lines(["*uses wsgi_server, which starts local services: --wsgi-target drives load at a "
                            "running service instead*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["target"]["url"] == service.url and doc["target"]["attribution"] == "client"
    assert doc["target"]["addresses"] == ["127.0.0.1"] and doc["target"]["allow_remote"] is False
    assert doc["target"]["services_started"] == [] and doc["target"]["note"] == REMOTE_NOTE
    cell, adhoc = doc["cells"]
    assert cell["name"] == "target" and cell["server"] == "remote" and cell["attribution_scope"] == "client"
    assert not {"proxy", "telemetry", "respawns", "kills", "ports"} & set(cell)  # no server or proxy was seen
    # what the client counted is what the service answered (both runs: the cell and wsgi_load's)
    sent_502 = cell["status_counts"].get("502", 0) + adhoc["status_counts"].get("502", 0)
    answered = service.answered()
    assert cell["requests"] + adhoc["requests"] == sum(answered.values())
    assert sent_502 == answered[502] and cell["attribution"]["http_502"] == cell["status_counts"]["502"] > 0
    assert cell["errors"]["verify"] == 0 and cell["slo"]["outcome"] == "pass"
    # the table names the classes as client-side, and the note is under it
    assert f"client-side only: 502:{cell['status_counts']['502']}" in out
    page = (pytester.path / "out.html").read_text()
    assert "<section id='target'>" in page and service.url in page


def test_a_breached_slo_fails_the_cell_with_the_client_side_count(pytester: pytest.Pytester, service: Service) -> None:
    pytester.makepyfile(test_target=TESTS)
    r = pytester.runpytest(f"--wsgi-target={service.url}", "--wsgi-duration=0.5s", "--wsgi-mode=open",
                           "--wsgi-rate=100", "--wsgi-concurrency=2",
                           "--wsgi-slo=error_rate<1e-3", "-k", "test_cell", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=1, deselected=2)
    r.stdout.fnmatch_lines(["*cell target: SLO breached*", "*error_rate*"])
    assert "Traceback" not in r.stdout.str()


@pytest.mark.parametrize("slo", ["kills==0", "respawns<=3"])
def test_server_side_slos_are_a_usage_error(pytester: pytest.Pytester, service: Service, slo: str) -> None:
    pytester.makepyfile(test_target=TESTS)
    r = pytester.runpytest(f"--wsgi-target={service.url}", f"--wsgi-slo=error_rate<0.5, {slo}")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines([f"ERROR: --wsgi-slo {slo}: measured from the server's own logs, which a remote target "
                            "does not expose (--wsgi-target judges what the client sees)"])
    assert sum(service.answered().values()) == 0


class Net:
    """Every connect the engine asks for, and the request heads it sent; a fake wire answers each (nothing leaves
    the machine: a real socket connect is refused too)."""

    def __init__(self) -> None:
        self.connects: list[tuple[object, object]] = []
        self.sockets: list[object] = []
        self.requests: list[bytes] = []


def _resolver(names: dict[str, str]) -> Callable[..., list[tuple[Any, ...]]]:
    """getaddrinfo from a table (IP literals answer themselves): no DNS query leaves the machine."""

    def getaddrinfo(host: str | bytes, port: Any, *args: Any, **kw: Any) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else host
        address = names.get(name, name)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, int(port or 0)) if family == socket.AF_INET else (address, int(port or 0), 0, 0)
        return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]

    return getaddrinfo


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Net:
    state = Net()

    async def create_connection(self: Any, protocol_factory: Callable[[], asyncio.Protocol], host: Any = None,
                                port: Any = None, **kw: Any) -> tuple[FakeWire, asyncio.Protocol]:
        state.connects.append((host, port))
        protocol = protocol_factory()
        wire = FakeWire(state, protocol)
        protocol.connection_made(wire)
        return wire, protocol

    def no_socket_connect(self: socket.socket, address: Any) -> None:
        state.sockets.append(address)
        raise OSError(113, "stub: the suite never connects off the machine")

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", _resolver({"staging.test": OFF_MACHINE}))
    monkeypatch.setattr(socket.socket, "connect", no_socket_connect)
    monkeypatch.setattr(engine, "_loop_factory", lambda: None)  # plain asyncio: its methods can be stubbed
    return state


@pytest.mark.parametrize(("where", "url"), [("option", f"http://{OFF_MACHINE}:8080"), ("env", "http://staging.test"),
                                            ("ini", f"http://{OFF_MACHINE}")])
def test_a_non_loopback_target_without_the_opt_out_is_a_one_line_usage_error(
        pytester: pytest.Pytester, net: Net, monkeypatch: pytest.MonkeyPatch, where: str, url: str) -> None:
    pytester.makepyfile(test_target=TESTS)
    args: list[str] = []
    if where == "option":
        args.append(f"--wsgi-target={url}")
    elif where == "env":
        monkeypatch.setenv("WSGI502_TARGET", url)
    else:
        pytester.makeini(f"[pytest]\nwsgi_target = {url}\n")
    r = pytester.runpytest(*args)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    given = {"option": "--wsgi-target", "env": "WSGI502_TARGET", "ini": "ini wsgi_target"}[where]
    errors = [line for line in r.stderr.lines if line.startswith("ERROR")]
    assert errors == [f"ERROR: {given}={url} resolves to non-loopback {OFF_MACHINE}: load would leave this "
                      "machine; pass --wsgi-allow-remote (ini wsgi_allow_remote, env WSGI502_ALLOW_REMOTE) to allow it"]
    assert net.connects == [] and net.sockets == []


def test_the_opt_out_sends_to_the_checked_address_and_says_remote(pytester: pytest.Pytester, net: Net) -> None:
    """--wsgi-allow-remote: the load goes to the address the name resolved to (a stubbed connect answers it)."""
    pytester.makepyfile(test_target=TESTS)
    r = pytester.runpytest("--wsgi-target=http://staging.test:8080", "--wsgi-allow-remote=true", "--wsgi-duration=1s",
                           "--wsgi-mode=open", "--wsgi-rate=20", "--wsgi-concurrency=1", "--wsgi-requests=5",
                           "--wsgi-json=out.json", "-k", "test_cell", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, deselected=2)
    r.stdout.fnmatch_lines([f"wsgi502: target http://staging.test:8080 (option): {OFF_MACHINE}, REMOTE "
                            "(--wsgi-allow-remote)"])
    assert net.connects and set(net.connects) == {(OFF_MACHINE, 8080)} and net.sockets == []
    assert len(net.requests) == 5 and all(b"Host: staging.test:8080" in req for req in net.requests)
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["target"]["allow_remote"] is True and doc["target"]["addresses"] == [OFF_MACHINE]
    assert doc["cells"][0]["target"]["allow_remote"] is True


@pytest.mark.parametrize(("args", "message"), [
    (["--wsgi-target=https://127.0.0.1:8443"],
     "ERROR: --wsgi-target='https://127.0.0.1:8443': not an http://host[:port] URL: 'https://127.0.0.1:8443' (the "
     "load engine speaks plain HTTP)"),
    (["--wsgi-target=http://127.0.0.1:8000/api"], "ERROR: --wsgi-target='http://127.0.0.1:8000/api': the target is an "
                                                  "origin only, http://host[:port], got 'http://127.0.0.1:8000/api' "
                                                  "(the request path goes in wsgi_path or a mix)"),
    (["--wsgi-target=http://127.0.0.1:8000", "--wsgi-shard=1/2"],
     "ERROR: --wsgi-shard=1/2 does not go with --wsgi-target: there is one target, no matrix to split"),
    (["--wsgi-target=http://127.0.0.1:8000", "--wsgi-repeat=3"],
     "ERROR: --wsgi-repeat=3 does not go with --wsgi-target: repeats of a target are not supported yet"),
])
def test_bad_target_options_are_one_line_usage_errors(pytester: pytest.Pytester, net: Net, args: list[str],
                                                      message: str) -> None:
    pytester.makepyfile(test_target=TESTS)
    r = pytester.runpytest(*args)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in r.stderr.lines if line.startswith("ERROR")] == [message]
    assert net.connects == [] and net.sockets == []


def test_without_a_target_the_wsgi_target_fixture_skips(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_target=TESTS)
    r = pytester.runpytest("--wsgi-matrix", "-rs", "-k", "test_load_at_target", "-p", "no:cacheprovider")
    r.assert_outcomes(skipped=1, deselected=10)  # the seed matrix's 9 cells and test_local_server
    r.stdout.fnmatch_lines(["*uses wsgi_target: runs only with --wsgi-target=URL (a running service)*"])
