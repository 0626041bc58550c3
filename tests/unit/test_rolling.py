"""Rolling deploys (issue 16 item 1): the matrix keys (instances, the rolling action) and the deploy's steps, with a
fake load balancer and fake servers (the real ones: tests/integration/test_scenarios.py, the rolling pair)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pytest_wsgi502.config.matrix import expand
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.servers.fleet import Fleet, merged_telemetry, rolling

FLEET = {"server": "gunicorn", "instances": 2}
ROLL = {"at": "3s", "do": "rolling", "lag": "1s", "prestop": "0s", "deregistration_delay": "30s"}


def cell(**keys: Any) -> Any:
    return expand({"cells": {"c": {**FLEET, **keys}}})[0]


# --- the matrix keys --------------------------------------------------------------------------------------------


def test_instances_and_the_rolling_action_are_validated_and_shown() -> None:
    c = cell(actions=[ROLL])
    assert c.instances == 2 and c.as_dict()["instances"] == 2
    assert c.actions == ({"at": 3.0, "do": "rolling", "lag": 1.0, "prestop": 0.0, "deregistration_delay": 30.0},)
    assert c.as_dict()["actions"] == [dict(c.actions[0])]
    # defaults: no lag, no preStop sleep, AWS's 300 s deregistration delay
    assert cell(actions=[{"at": 1, "do": "rolling"}]).actions[0] == {
        "at": 1.0, "do": "rolling", "lag": 0.0, "prestop": 0.0, "deregistration_delay": 300.0}
    assert expand({"cells": {"one": {"server": "uwsgi"}}})[0].instances == 1  # the default: one server, nginx


@pytest.mark.parametrize(("keys", "message"), [
    ({"instances": 0}, "instances must be >= 1 and <= 64, got 0"),
    ({"instances": 65}, "instances must be >= 1 and <= 64, got 65"),
    ({"instances": True}, "instances must be an integer, got True"),
    ({"instances": "2"}, "instances must be an integer, got '2'"),
    ({"proxy_profile": "nginx"}, "instances = 2 needs a load balancer that drains one instance at runtime (HAProxy); "
                                 "proxy_profile nginx has no runtime drain"),
    ({"socket": "unix"}, "instances = 2 needs socket = \"tcp\""),
    ({"actions": [{"at": "3s", "do": "hup"}]}, "actions[0].do 'hup' signals one server; with instances = 2 the "
                                               "only action is rolling"),
    ({"instances": 1, "actions": [ROLL]}, "actions[0].do rolling replaces instances one at a time: set instances >= 2"),
    ({"actions": [{**ROLL, "lag": "2h"}]}, "actions[0].lag: not a duration"),
    ({"actions": [{**ROLL, "lag": "3601s"}]}, "actions[0].lag must be >= 0 and <= 3600, got 3601.0"),
    ({"actions": [{**ROLL, "prestop": -1}]}, "actions[0].prestop must be >= 0 and <= 3600, got -1"),
    ({"actions": [{**ROLL, "deregistration_delay": True}]}, "actions[0].deregistration_delay must be a number"),
    ({"actions": [{**ROLL, "drain": "1s"}]}, "actions[0] (rolling) needs at and do and may have lag, prestop, "
                                             "deregistration_delay"),
    ({"actions": [{"do": "rolling"}]}, "actions[0] (rolling) needs at and do"),
    ({"actions": [{"at": "3s", "do": "reload", "lag": "1s"}]}, "actions[0] needs exactly at"),
])
def test_bad_fleet_keys_are_one_line_errors(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        cell(**keys)
    text = str(info.value)
    assert message in text and "\n" not in text and text.startswith("matrix cell 'c': "), text


# --- the deploy's steps, with fakes -----------------------------------------------------------------------------


class FakeLB:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def set_state(self, index: int, state: str) -> None:
        self.calls.append((state, index))

    def shutdown_sessions(self, index: int) -> None:
        self.calls.append(("shutdown", index))

    def server_name(self, index: int) -> str:
        return f"s{index}"


class FakeRunner:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def master_pid(self) -> int:
        return self.pid


class FakeServer:
    """A server whose master 'exits' when ``exits`` says so (the test's ``running``)."""

    kind = "gunicorn"

    def __init__(self, index: int, generation: int, log: list[str]) -> None:
        self.index, self.generation, self.log = index, generation, log
        self.runner = FakeRunner(1000 * generation + index)

    def start(self, env: dict[str, str], ready: Any) -> None:
        self.log.append(f"start {self.index}.{self.generation}")
        self.thread = threading.current_thread()

    def graceful_stop(self) -> tuple[str, int]:
        self.log.append(f"SIGTERM {self.index}.{self.generation}")
        return "SIGTERM", self.runner.pid

    def stop_grace(self) -> float:
        return 0.2

    def stop(self) -> None:
        self.log.append(f"stop {self.index}.{self.generation}")


def deploy(lag: float, prestop: float, delay: float = 30.0, running: Any = None, n: int = 2,
           lb: FakeLB | None = None) -> tuple[list[tuple[str, int, str]], FakeLB, list[str], Fleet]:
    log: list[str] = []
    fleet = Fleet(lambda i, g: FakeServer(i, g, log), n)  # type: ignore[arg-type, return-value]
    lb = lb or FakeLB()
    steps: list[tuple[str, int, str]] = []

    def emit(phase: str, line: str, pid: int | None, index: int, server: str) -> None:
        steps.append((phase, index, server))
        assert line.startswith(f"instance {index + 1} ({server})")

    stopped = threading.Event()
    action = {"lag": lag, "prestop": prestop, "deregistration_delay": delay}
    rolling(fleet, lb, action, emit, stopped, {}, lambda s: lambda: True,
            running=running or (lambda pid: False))
    return steps, lb, log, fleet


def test_a_stop_before_the_drain_is_the_no_drain_order() -> None:
    steps, lb, log, fleet = deploy(lag=0.1, prestop=0.0)
    per = ["deregister", "stop", "exited", "drain", "started", "ready"]  # the exit is seen during the lag
    assert steps == [(p, i, f"s{i}") for i in (0, 1) for p in per]
    assert lb.calls == [("drain", 0), ("ready", 0), ("drain", 1), ("ready", 1)]
    # one instance at a time: the next is stopped only once the previous one's successor is back
    assert log == ["SIGTERM 0.1", "stop 0.1", "start 0.2", "SIGTERM 1.1", "stop 1.1", "start 1.2"]
    assert [(i, g) for i, g, _ in fleet.every] == [(0, 1), (1, 1), (0, 2), (1, 2)]
    # successors start on the fleet's spawner thread, alive after the deploy (a service dies with its thread)
    spawner = fleet.current[0].thread  # type: ignore[attr-defined]
    assert spawner is fleet.current[1].thread and spawner.name.startswith("wsgi502-spawner")  # type: ignore
    assert spawner is not threading.current_thread() and spawner.is_alive()
    fleet.stop()


def test_a_prestop_sleep_longer_than_the_lag_drains_first() -> None:
    steps, lb, _, _ = deploy(lag=0.05, prestop=0.15, n=1)
    assert [p for p, _, _ in steps] == ["deregister", "drain", "stop", "exited", "started", "ready"]
    assert lb.calls == [("drain", 0), ("ready", 0)]


def test_the_deregistration_delay_cuts_what_is_in_flight_then_the_instance_is_killed_at_its_grace() -> None:
    lb = FakeLB()  # the old master exits once the LB has cut its last requests
    steps, _, _, _ = deploy(lag=0.0, prestop=0.0, delay=0.1, n=1, lb=lb,
                            running=lambda pid: pid == 1000 and ("shutdown", 0) not in lb.calls)
    assert [p for p, _, _ in steps] == ["deregister", "drain", "stop", "cut", "exited", "started", "ready"]

    lb = FakeLB()  # a preStop sleep longer than lag + deregistration delay: the LB cuts before the stop
    steps, _, _, _ = deploy(lag=0.0, prestop=0.4, delay=0.1, n=1, lb=lb,
                            running=lambda pid: pid == 1000 and ("shutdown", 0) not in lb.calls)
    assert [p for p, _, _ in steps] == ["deregister", "drain", "cut", "stop", "exited", "started", "ready"]

    hung = deploy(lag=0.0, prestop=0.0, delay=0.1, n=1, running=lambda pid: pid == 1000)  # never exits by itself
    assert [p for p, _, _ in hung[0]] == ["deregister", "drain", "stop", "cut", "killed", "exited", "started",
                                          "ready"]
    assert hung[1].calls == [("drain", 0), ("shutdown", 0), ("ready", 0)]
    assert hung[2][:2] == ["SIGTERM 0.1", "stop 0.1"]  # stop(): the runner kills what did not exit


def test_the_load_ending_stops_the_deploy_and_the_fleet_releases_every_instance() -> None:
    log: list[str] = []
    fleet = Fleet(lambda i, g: FakeServer(i, g, log), 2)  # type: ignore[arg-type, return-value]
    stopped = threading.Event()
    steps: list[str] = []

    def emit(phase: str, line: str, pid: int | None, index: int, server: str) -> None:
        steps.append(phase)
        if phase == "drain":
            stopped.set()  # the load ends during the propagation lag

    rolling(fleet, FakeLB(), {"lag": 0.0, "prestop": 0.2, "deregistration_delay": 1.0}, emit, stopped, {},
            lambda s: lambda: True, running=lambda pid: False)
    assert steps == ["deregister", "drain"] and log == []  # no stop sent, no successor started
    fleet.stop()
    assert sorted(log) == ["stop 0.1", "stop 1.1"] and fleet.successor(0) is None  # closed: no new instance


def test_fleet_telemetry_sums_counts_and_tags_events_by_instance() -> None:
    a = {"respawns": 1, "kills": 0, "event_counts": {"exit": 2}, "hook_counts": {"post_fork": 2},
         "events": [{"kind": "exit", "t": 2.0}], "respawns_from_log": 1}
    b = {"respawns": 0, "kills": 1, "event_counts": {"exit": 1, "died_signal": 1}, "hook_counts": {"post_fork": 3},
         "events": [{"kind": "died_signal", "t": 1.0}], "respawns_from_log": 0}
    out = merged_telemetry([(0, 1, a), (0, 2, b)])
    assert out["respawns"] == 1 and out["kills"] == 1 and out["respawns_from_log"] == 1
    assert out["event_counts"] == {"died_signal": 1, "exit": 3} and out["hook_counts"] == {"post_fork": 5}
    assert out["events"] == [{"kind": "died_signal", "t": 1.0, "instance": 1, "generation": 2},
                             {"kind": "exit", "t": 2.0, "instance": 1, "generation": 1}]
    assert [i["generation"] for i in out["instances"]] == [1, 2]


# --- attribution of a deploy's failures on synthetic HAProxy logs ------------------------------------------------


def haproxy_log(path: Any, rows: list[tuple[float, str, str, float]]) -> None:
    """proxy-access.log with one 200 and then (t, server, termination, request_time) failures, HAProxy's shape."""
    import json

    recs = [{"t": 90.0, "status": 200, "conn": 1, "server": "s0", "termination": "----", "upstream_status": "200",
             "request_time": 0.01, "uri": "/ok", "lb": "haproxy"}]
    recs += [{"t": t, "status": 502, "conn": 2 + i, "server": server, "termination": term, "upstream_status": "-",
              "request_time": rt, "uri": f"/r{i}", "lb": "haproxy"} for i, (t, server, term, rt) in enumerate(rows)]
    (path / "proxy-access.log").write_text("[WARNING] a notice HAProxy writes there\n" +
                                           "".join(json.dumps(r) + "\n" for r in recs))


def phase(t: float, name: str, instance: int, server: str) -> dict[str, Any]:
    return {"kind": "action_phase", "t": t, "pid": None, "worker": None, "action": "rolling", "at": 3.0,
            "phase": name, "instance": instance, "server": server, "line": f"wsgi502: instance {instance} {name}"}


# instance 1 (s0) stopped at 100 and drained at 101 (no preStop sleep, 1 s lag); instance 2 (s1) drained at 103 and
# stopped at 104 (a preStop sleep longer than the lag), and the deregistration delay cut it at 110
DEPLOY = [{"kind": "action", "t": 100.0, "pid": None, "worker": None, "action": "rolling", "at": 3.0,
           "line": "wsgi502: rolling at 3s"},
          phase(100.0, "deregister", 1, "s0"), phase(100.0, "stop", 1, "s0"), phase(101.0, "drain", 1, "s0"),
          phase(102.0, "deregister", 2, "s1"), phase(103.0, "drain", 2, "s1"), phase(104.0, "stop", 2, "s1"),
          phase(110.0, "cut", 2, "s1")]


def test_a_deploy_s_failures_are_routed_to_removed_between_stop_and_drain_and_deregistration_at_the_cut(
        tmp_path: Any) -> None:
    from pytest_wsgi502.attribution import attribute_cell

    haproxy_log(tmp_path, [
        (100.5, "s0", "SC--", 0.0),  # refused by the stopped instance during the lag: routed_to_removed
        (100.2, "s0", "SH--", 0.5),  # sent before the stop, reset as its backlog closed: routed_to_removed
        (101.02, "s0", "SC--", 0.0),  # sent at the drain (scheduling slack): still the lag's
        (100.5, "s1", "SC--", 0.0),  # the other instance, not being removed: not the deploy's doing
        (101.5, "s0", "SC--", 0.0),  # sent after the drain: not routed to it by the lag
        (104.5, "s1", "SH--", 0.2),  # s1 was drained before its stop: no time between
        (104.2, "s1", "SH--", 1.3),  # sent before s1's drain, failed after its stop: but the drain came first
        (110.1, "s1", "KH--", 8.0),  # in flight when the deregistration delay ended: cut
        (110.3, "s1", "SH--", 9.0),  # the same, its termination not K: at the cut, in flight before it
    ])
    out = attribute_cell(tmp_path, DEPLOY, since=0.0)
    causes = [m["cause"] for m in out["matches"]]
    assert causes[:3] == ["routed_to_removed"] * 3
    assert "routed_to_removed" not in causes[3:] and "deregistration" not in causes[3:7], causes
    assert causes[7:] == ["deregistration", "deregistration"], causes
    assert out["counts"]["routed_to_removed"] == 3 and out["counts"]["deregistration"] == 2, out["counts"]
    first, cut = out["matches"][0], out["matches"][7]
    assert first["server"] == "s0" and first["event"] == "wsgi502: instance 1 stop" and first["termination"] == "SC--"
    assert cut["server"] == "s1" and cut["event"] == "wsgi502: instance 2 cut"


def test_without_the_deploy_s_phases_or_an_lb_server_no_failure_is_the_deploy_s(tmp_path: Any) -> None:
    from pytest_wsgi502.attribution import attribute_cell

    haproxy_log(tmp_path, [(100.5, "s0", "SC--", 0.0), (110.1, "s1", "KH--", 8.0)])
    for events in ([], [e for e in DEPLOY if e.get("phase") != "stop" and e.get("phase") != "cut"]):
        out = attribute_cell(tmp_path, events, since=0.0)
        assert out["counts"]["routed_to_removed"] == out["counts"]["deregistration"] == 0, out["counts"]
    haproxy_log(tmp_path, [(100.5, "", "SC--", 0.0)])  # no server named (HAProxy's <NOSRV> aside)
    assert attribute_cell(tmp_path, DEPLOY, since=0.0)["counts"]["routed_to_removed"] == 0


# --- the Target of a fleet -----------------------------------------------------------------------------------------


def test_a_fleet_target_has_an_instance_directory_and_port_each_behind_haproxy(monkeypatch: Any,
                                                                              tmp_path: Any) -> None:
    from pytest_wsgi502 import cellrun
    from pytest_wsgi502.services.process import ServiceError

    made: list[Any] = []

    class LB:
        def __init__(self, workdir: Any, upstreams: list[str], *args: Any, **kwargs: Any) -> None:
            made.append((workdir, upstreams))

    class Server:
        def __init__(self, spec: Any, *args: Any) -> None:
            self.spec, self.upstream = spec, f"127.0.0.1:{spec.port}"

    monkeypatch.setattr(cellrun, "HAProxyLB", LB)
    monkeypatch.setattr(cellrun, "find_haproxy", lambda explicit: "/usr/sbin/haproxy")
    monkeypatch.setattr(cellrun, "make_server", Server)

    def ctx(**kw: Any) -> Any:
        return cellrun.CellContext(run_dir=tmp_path, ledger=tmp_path / "l", app="a:b", chdir=tmp_path,
                                   server_binaries={}, nginx="nginx", db_env={}, duration=5.0, max_requests=10,
                                   concurrency=2, timeout=65.0, idle_timeout=60.0, **kw)

    c = cell(instances=3, actions=[ROLL])
    target = cellrun.Target(c, ctx(), {})
    assert target.fleet is not None and len(target.fleet) == 3 and target.server is target.fleet.current[0]
    dirs = [s.spec.workdir.name for s in target.fleet.current]
    ports = [s.spec.port for s in target.fleet.current]
    assert dirs == ["instance-1", "instance-2", "instance-3"] and len(set(ports)) == 3
    assert made == [(target.dir, [f"127.0.0.1:{p}" for p in ports])]
    successor = target.fleet.successor(1)
    assert successor is not None and successor.spec.workdir.name == "instance-2.2" and successor.spec.port == ports[1]
    # what the session may add to a valid cell: the nginx profile, the containers backend, no HAProxy
    for kw, message in (({"proxy_profile": "nginx"}, "the session's proxy profile nginx has none"),
                        ({"server_factory": lambda *a: None}, "runs on the local backend only")):
        with pytest.raises(ServiceError, match=message) as info:
            cellrun.Target(c, ctx(**kw), {})
        assert "\n" not in str(info.value) and str(info.value).startswith("cell c: instances = 3")
    monkeypatch.setattr(cellrun, "find_haproxy", lambda explicit: None)
    with pytest.raises(ServiceError, match=r"needs HAProxy .* on PATH: apt-get install haproxy"):
        cellrun.Target(c, ctx(), {})
    # one instance: nginx in front, as before
    monkeypatch.setattr(cellrun, "LocalProxy", lambda *a, **k: made.append("nginx"))
    single = cellrun.Target(expand({"cells": {"one": {"server": "gunicorn"}}})[0], ctx(), {})
    assert single.fleet is None and made[-1] == "nginx"


def test_the_graceful_stop_is_q_on_uwsgi_s_master_fifo_and_sigterm_on_gunicorn(tmp_path: Any) -> None:
    """uWSGI 2.0's SIGTERM is no graceful stop (a brutal reload, or with die-on-term, which the harness sets, a
    kill of the workers: measured on 2.0.31, the request in flight got no answer); ``q`` on the master FIFO is
    (it was answered, then the master exited). gunicorn's SIGTERM is its graceful stop."""
    import os
    import signal

    from pytest_wsgi502.servers import ServerSpec, make_server
    from pytest_wsgi502.servers.local import LocalRunner
    from pytest_wsgi502.servers.uwsgi import FIFO_NAME

    u = expand({"cells": {"u": {"server": "uwsgi", "instances": 2, "actions": [ROLL]}}})[0]
    server = make_server(ServerSpec(u, tmp_path, "a:b", tmp_path, port=1, stats_port=2), "uwsgi")
    assert server.settings()["master-fifo"] == f"{tmp_path}/{FIFO_NAME}"  # rendered for the rolling action
    os.mkfifo(tmp_path / FIFO_NAME)
    reader = os.open(tmp_path / FIFO_NAME, os.O_RDONLY | os.O_NONBLOCK)  # the master's end
    try:
        what, _ = server.graceful_stop()
        assert os.read(reader, 16) == b"q" and "'q' via the master FIFO" in what
    finally:
        os.close(reader)
    assert server.stop_grace() == 60.0  # worker-reload-mercy's default

    sent = []

    class Runner(LocalRunner):  # starts nothing: only the signal is recorded
        def signal(self, sig: signal.Signals) -> int:
            sent.append(sig)
            return 42

    g = expand({"cells": {"g": {"server": "gunicorn", "instances": 2, "actions": [ROLL],
                                "options": {"graceful_timeout": 7}}}})[0]
    gunicorn = make_server(ServerSpec(g, tmp_path, "a:b", tmp_path, port=1, stats_port=2), "gunicorn",
                           runner=Runner)
    assert gunicorn.graceful_stop() == ("SIGTERM", 42) and sent == [signal.SIGTERM]
    assert gunicorn.stop_grace() == 7.0
