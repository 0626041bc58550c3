"""Issue 12 items 2 and 3: load never leaves loopback, and a broken engine run never reads as a pass.

The network is stubbed where the engine meets it: ``socket.getaddrinfo`` (also what the asyncio loop's
``getaddrinfo`` calls) answers from a table, and ``loop.create_connection`` records every (host, port) the engine
connects to. A fake loopback connection answers ``200`` and keeps the bytes written, so the tests see the exact
request line and headers that would have gone on the wire. Runs use the plain asyncio loop (uvloop's methods cannot
be stubbed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import multiprocessing
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.load import engine
from pytest_wsgi502.load.engine import Endpoint, LoadSpec, RemoteTargetError, drive, run
from pytest_wsgi502.load.transport import FastTransport
from tests.fakewire import FakeWire

OFF_MACHINE = "192.0.2.10"  # TEST-NET-1: never routed
REAL_GETADDRINFO = socket.getaddrinfo


def is_loopback(host: object) -> bool:
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a name reaching create_connection would be resolved again: never acceptable


def stub_resolver(names: dict[str, list[str]]):
    """getaddrinfo from a table; IP literals answer themselves; any other name is off the machine."""

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        host = host.decode() if isinstance(host, bytes) else host
        try:
            ipaddress.ip_address(host.split("%")[0])
            addrs = [host]
        except ValueError:
            addrs = names.get(host, [OFF_MACHINE])
        out = []
        for a in addrs:
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            out.append((fam, socket.SOCK_STREAM, 6, "", (a, port or 0) if fam == socket.AF_INET else (a, port, 0, 0)))
        return out

    return getaddrinfo


class Net:
    def __init__(self) -> None:
        self.connects: list[tuple[object, object]] = []
        self.requests: list[bytes] = []

    @property
    def remote_connects(self) -> list[tuple[object, object]]:
        return [c for c in self.connects if not is_loopback(c[0])]


@pytest.fixture
def net(monkeypatch):
    """Stubbed resolver and connect (see the module docstring); ``localhost`` is 127.0.0.1 and ::1."""
    state = Net()

    async def create_connection(self, protocol_factory, host=None, port=None, **kw):
        state.connects.append((host, port))
        if not is_loopback(host):
            raise OSError(113, "stub: refused to leave loopback")
        protocol = protocol_factory()
        wire = FakeWire(state, protocol)
        protocol.connection_made(wire)
        return wire, protocol

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", stub_resolver({"localhost": ["127.0.0.1", "::1"]}))
    monkeypatch.setattr(engine, "_loop_factory", lambda: None)
    return state


def spec(**kw) -> LoadSpec:
    return LoadSpec(**{"base_url": "http://127.0.0.1:9", "concurrency": 2, "duration": 2.0, "max_requests": 6, **kw})


def drive_once(s: LoadSpec):
    return asyncio.run(drive(s))


# -- item 2: paths, headers and methods ------------------------------------------------------------------------

OFF_MACHINE_PATHS = ["//192.0.2.10:8080/api", "http://198.51.100.7/x", "/a\r\nHost: x", "https://192.0.2.10/",
                     "192.0.2.10/x", "", " /x", "/x y", "/x#frag", "\\\\192.0.2.10\\x", "/\x00", "/..//192.0.2.10/x",
                     "/a/.//b", "/.."]


@pytest.mark.parametrize("path", OFF_MACHINE_PATHS)
def test_off_machine_and_malformed_paths_are_refused_and_never_connect(net, path):
    for s in (spec(path=path), spec(mix=(Endpoint("/ok", 1), Endpoint(path, 1)))):
        with pytest.raises(ConfigError) as info:
            run(s)
        assert "\n" not in str(info.value)
    assert net.connects == [] and net.requests == []


@pytest.mark.parametrize(
    "headers",
    [{"X-A": "1\r\nHost: 198.51.100.7"}, {"X-A": "1\nX-B: 2"}, {"X-A\r\nHost": "x"}, {"X A": "1"}, {"": "1"},
     {"Host": "198.51.100.7"}, {"Content-Length": "5"}, {"X-A": 1}],
)
def test_bad_headers_are_refused(net, headers):
    with pytest.raises(ConfigError):
        run(spec(headers=headers))
    assert net.connects == []


@pytest.mark.parametrize("method", ["GET /evil HTTP/1.1\r\nX:", "GE T", "", 5, None])
def test_methods_are_tokens(net, method):
    with pytest.raises(ConfigError, match=r"mix\[0\]\.method"):
        run(spec(mix=(Endpoint("/a", 1, method=method),)))
    assert net.connects == []


def test_good_headers_and_paths_go_out_verbatim_to_the_checked_address(net):
    out = run(spec(path="/a/b//c?x=1&y={n}&z=/../", n_max=1, headers={"X-Trace": "t 1"}, max_requests=2,
                   concurrency=1))
    assert out["engine_error"] is None and out["stats"].responses == 2
    assert net.connects == [("127.0.0.1", 9)]
    lines = net.requests[0].split(b"\r\n")
    assert lines[0] == b"GET /a/b//c?x=1&y=1&z=/../ HTTP/1.1"  # as written (not resolved by a URL join)
    assert [ln for ln in lines if ln.lower().startswith(b"host:")] == [b"Host: 127.0.0.1:9"]
    assert b"X-Trace: t 1" in lines


# -- item 2: the guard runs on the address the transport connects to -------------------------------------------

@pytest.mark.parametrize("base_url", ["http://198.51.100.7", "http://target.test:8080", "http://[2001:db8::1]:80",
                                      "http://0.0.0.0:80"])
def test_non_loopback_targets_are_refused_before_any_connect(net, base_url):
    with pytest.raises(RemoteTargetError, match="non-loopback"):
        run(spec(base_url=base_url))
    with pytest.raises(RemoteTargetError, match="non-loopback"):
        drive_once(spec(base_url=base_url))  # drive resolves through the loop's getaddrinfo
    assert net.connects == []


def test_a_name_with_any_non_loopback_address_is_refused(net, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", stub_resolver({"mixed.test": ["127.0.0.1", OFF_MACHINE]}))
    with pytest.raises(RemoteTargetError, match=r"non-loopback 192\.0\.2\.10"):
        run(spec(base_url="http://mixed.test:9"))
    assert net.connects == []


@pytest.mark.parametrize("base_url", ["http://user@127.0.0.1:9", "http://127.0.0.1:9/api", "http://127.0.0.1:9?x",
                                      "ftp://127.0.0.1", "http://127.0.0.1:9\r\n", "127.0.0.1:9", "", None])
def test_base_url_is_an_origin_only(net, base_url):
    with pytest.raises(ConfigError):
        run(spec(base_url=base_url))
    assert net.connects == []


@pytest.fixture
def http_server():
    """A real HTTP/1.1 server on 127.0.0.1 (a thread): (port, Host headers it saw). Shut down after the test."""
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            hosts.append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hosts
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_resolved_once_no_check_then_resolve_race(monkeypatch, http_server):
    """The name is loopback when checked and off the machine on every later lookup: the engine must connect to
    the address it checked (a real loopback server answers), with the original name in the Host header."""
    port, hosts = http_server
    lookups: list[str] = []

    def rebinding(host, port, *args, **kw):
        lookups.append(host)
        if host != "rebind.test":
            return REAL_GETADDRINFO(host, port, *args, **kw)
        return stub_resolver({"rebind.test": ["127.0.0.1"] if len(lookups) == 1 else [OFF_MACHINE]})(host, port)

    connects: list[tuple[object, object]] = []
    real_connect = asyncio.base_events.BaseEventLoop.create_connection

    async def watched(self, protocol_factory, host=None, port=None, **kw):
        connects.append((host, port))
        if not is_loopback(host):
            raise OSError(113, "stub: refused to leave loopback")
        return await real_connect(self, protocol_factory, host, port, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "create_connection", watched)
    monkeypatch.setattr(engine, "_loop_factory", lambda: None)
    out = run(spec(base_url=f"http://rebind.test:{port}", max_requests=20, concurrency=2))
    assert lookups.count("rebind.test") == 1
    assert connects and all(c == ("127.0.0.1", port) for c in connects), connects
    assert out["stats"].responses == 20 and out["engine_error"] is None
    assert set(hosts) == {f"rebind.test:{port}"}


def test_localhost_tries_each_checked_address(net, monkeypatch):
    """``localhost`` resolves to ::1 and 127.0.0.1; a server on one of them is reached, no name is connected."""
    monkeypatch.setattr(socket, "getaddrinfo", stub_resolver({"localhost": ["::1", "127.0.0.1"]}))
    out = run(spec(base_url="http://localhost:9", max_requests=3, concurrency=1))
    assert out["stats"].responses == 3 and net.connects and not net.remote_connects
    assert {h for h, _ in net.connects} <= {"::1", "127.0.0.1"}
    assert net.requests[0].split(b"\r\n")[1:2] == [b"Host: localhost:9"]


def test_an_absolute_url_in_a_request_cannot_move_a_pinned_transport(net):
    async def main():
        t = FastTransport(addresses=["127.0.0.1"], port=9)
        r = await t.handle_async_request(httpx.Request("GET", "http://198.51.100.7:8080/x"))
        await t.aclose()
        return r.status_code

    assert asyncio.run(main()) == 200
    assert net.connects == [("127.0.0.1", 9)]


paths = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b: a + b,
              st.sampled_from(["/", "//", "///", "http://198.51.100.7", "http:", "/\\", "\\\\", "/@", "/%2F%2F",
                               "https://", "//[::1]", "/.."]),
              st.text(alphabet=st.sampled_from(list("/\\:@?#%.{}[]ab19 \r\n\t\x00é")), max_size=30)),
)


@settings(derandomize=True, max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=paths, in_mix=st.booleans())
def test_any_path_is_refused_or_goes_to_the_loopback_target(net, path, in_mix):
    """Fuzz: for any text path, either one ConfigError line or every connect goes to 127.0.0.1:9 and the request
    line carries an origin-form target (httpx may percent-encode characters such as '{' or '|')."""
    before = len(net.connects), len(net.requests)
    s = spec(max_requests=1, concurrency=1, mix=(Endpoint(path, 1),) if in_mix else (), path=path)
    try:
        s.validate()
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    stats, engine_report = drive_once(s)
    assert engine_report["engine_error"] is None and stats.responses == 1
    assert net.connects[before[0]:] == [("127.0.0.1", 9)]
    method, target, version = net.requests[before[1]].split(b"\r\n")[0].split(b" ")
    assert (method, version) == (b"GET", b"HTTP/1.1")
    assert target.startswith(b"/") and not target.startswith(b"//")
    if not any(c in path for c in '"<>\\^`{|}'):
        assert target == path.encode()


@settings(derandomize=True, max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base_url=st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b: a + b, st.sampled_from(["http://", "http://127.0.0.1", "http://localhost", "https://",
                                                   "http://[::1]", "http://127.0.0.1:9@"]),
              st.text(alphabet=st.sampled_from(list("/\\:@?#%.[]ab19 \r\nx")), max_size=20))))
def test_any_base_url_is_refused_or_loopback(net, base_url):
    """Fuzz the target URL too: never a connect off the machine, never a traceback other than ConfigError."""
    s = spec(base_url=base_url, max_requests=1, concurrency=1)
    try:
        s.validate()
        drive_once(s)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    assert net.remote_connects == []


# -- item 3: a broken run never reads as a pass ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("kw", "field"),
    [({"mode": "open", "rate": float("nan")}, "rate"), ({"mode": "open", "rate": float("inf")}, "rate"),
     ({"mode": "ramp", "rate": 100, "start_rate": float("nan")}, "start_rate"),
     ({"mode": "open", "rate": 2e6}, "rate"), ({"max_requests": 0}, "max_requests"),
     ({"max_requests": 1.5}, "max_requests"), ({"duration": float("nan")}, "duration"),
     ({"duration": 1e999}, "duration"), ({"duration": 0}, "duration"), ({"duration": 86_401}, "duration"),
     ({"think_time": float("nan")}, "think_time"), ({"timeout": float("inf")}, "timeout"),
     ({"drain": -1}, "drain"), ({"concurrency": 99999999999999999999}, "concurrency"),
     ({"concurrency": True}, "concurrency"), ({"processes": 0}, "processes"), ({"n_max": 0}, "n_max"),
     ({"mix": (Endpoint("/a", float("nan")),)}, "weight"), ({"mix": (Endpoint("/a", float("inf")),)}, "weight"),
     ({"mix": ({"path": "/a"},)}, "mix"), ({"allow_remote": "no"}, "allow_remote"),
     ({"verify_contains": None}, "verify_contains"), ({"mode": ["open"]}, "mode")],
)
def test_non_finite_absurd_and_mistyped_values_are_refused(kw, field):
    with pytest.raises(ConfigError, match=field) as info:
        spec(**kw).validate()
    assert "\n" not in str(info.value)


def test_a_task_dying_in_templates_pick_ends_the_run_with_its_reason(monkeypatch):
    calls = {"n": 0}
    real_pick = engine._Templates.pick

    def pick(self):
        calls["n"] += 1
        if calls["n"] == 10:
            raise RuntimeError("template broke\nsecond line")
        return real_pick(self)

    monkeypatch.setattr(engine._Templates, "pick", pick)
    out = run(spec(max_requests=10**6, duration=5.0), lambda: httpx.MockTransport(lambda r: httpx.Response(200)))
    err = out["engine_error"]
    assert err.startswith("connection task ") and "died: RuntimeError: template broke\\nsecond line" in err
    assert "\n" not in err
    assert 9 <= out["stats"].requests < 100  # the run ended with the task, not at its budget or deadline


def test_a_pick_that_always_fails_is_no_request_sent(monkeypatch):
    def pick(self):
        raise ValueError("no template")

    monkeypatch.setattr(engine._Templates, "pick", pick)
    out = run(spec(), lambda: httpx.MockTransport(lambda r: httpx.Response(200)))
    assert out["stats"].requests == 0
    assert out["engine_error"].startswith("no request was sent: connection task ")
    assert out["engine_error"].endswith("died: ValueError: no template")


def test_a_task_dying_in_slot_time_ends_the_open_loop_run(monkeypatch):
    real = engine.slot_time

    def slot_time(i, s):
        if i == 7:
            raise ZeroDivisionError("bad schedule")
        return real(i, s)

    monkeypatch.setattr(engine, "slot_time", slot_time)
    out = run(spec(mode="open", rate=500, max_requests=10**6, duration=3.0),
              lambda: httpx.MockTransport(lambda r: httpx.Response(200)))
    assert "died: ZeroDivisionError: bad schedule" in out["engine_error"]
    assert out["stats"].duration < 1.0  # ended at the failure, not at the 3 s deadline


def test_a_transport_factory_that_fails_is_an_engine_error():
    def factory():
        raise RuntimeError("no transport")

    out = run(spec(), factory)
    assert out["engine_error"] == ("no request was sent: transport_factory failed for connection 0: "
                                   "RuntimeError: no transport")


def test_a_healthy_run_has_no_engine_error():
    out = run(spec(max_requests=50), lambda: httpx.MockTransport(lambda r: httpx.Response(200)))
    assert out["engine_error"] is None and out["stats"].requests == 50


def test_a_falling_ramp_ends_at_its_deadline_instead_of_dying():
    """start_rate > rate: the schedule has no slot past the ramp's end (math domain error before)."""
    out = run(spec(mode="ramp", start_rate=400, rate=50, duration=0.5, max_requests=10**6),
              lambda: httpx.MockTransport(lambda r: httpx.Response(200)))
    assert out["engine_error"] is None
    assert out["stats"].requests == pytest.approx((400 + 50) / 2 * 0.5, abs=12)


class ChildBoomSpec(LoadSpec):
    """Valid in the parent; its engine process raises (the spawned child imports this module by name)."""

    def endpoints(self):
        if multiprocessing.parent_process() is not None:
            raise ValueError("child boom")
        return super().endpoints()


def test_an_engine_process_that_raises_is_an_engine_error_and_all_are_joined(net):
    out = run(ChildBoomSpec(base_url="http://127.0.0.1:9", concurrency=2, processes=2, duration=1.0))
    assert out["engine_error"].startswith("no request was sent: engine process ")
    assert "ValueError: child boom" in out["engine_error"] and "(and 1 more)" in out["engine_error"]
    assert multiprocessing.active_children() == []
    assert net.connects == []  # the children failed before connecting (and the parent never connects)


def test_processes_with_one_connection_each_run(http_server):
    """Each process validates its share: 2 processes x 1 connection used to fail in every child."""
    port, _ = http_server
    out = run(LoadSpec(base_url=f"http://127.0.0.1:{port}", concurrency=2, processes=2, duration=1.0,
                       max_requests=20))
    assert out["engine_error"] is None and out["stats"].responses == 20
    assert len(out["engine"]["per_process"]) == 2 and multiprocessing.active_children() == []
