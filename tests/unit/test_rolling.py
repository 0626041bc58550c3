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
