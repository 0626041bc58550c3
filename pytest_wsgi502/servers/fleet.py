"""A cell's server instances behind one load balancer, and the rolling deploy that replaces them one at a time.

``Fleet`` holds every instance the cell ran (the current one of each slot, and the ones a rolling deploy replaced,
for their telemetry and to release them). ``rolling`` is the deploy itself, the way a Kubernetes Deployment behind
an AWS ALB does it, instance after instance:

1. ``deregister``: the instance is taken out of the target group; the load balancer keeps routing to it for ``lag``
   seconds (the LB's / the endpoints' propagation lag);
2. in parallel: ``stop`` after the instance's preStop sleep (``prestop`` seconds from the deregistration): its
   graceful stop (gunicorn SIGTERM; uWSGI ``q`` on the master FIFO), and ``drain`` at ``lag``: the LB stops
   sending it new requests (HAProxy ``set server ... state drain``);
3. ``exited``: its master is gone (bounded by the server's own grace, then it is killed: ``killed``); ``cut`` when
   the deregistration delay (counted from the drain) ended first: the LB cuts what is still in flight on it;
4. ``started``: the new instance on the same port answers its readiness probe; ``ready``: back in the LB.

A stop before the drain (prestop < lag) leaves the LB routing to a closed port: those requests fail
(``routed_to_removed``, attribution.py). Every step is an ``action_phase`` event with the instance and the LB's
name for it, the proof attribution needs. The load balancer is anything with ``set_state``, ``shutdown_sessions``
and ``server_name`` (``haproxy.HAProxyLB``; a fake in the unit tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from pytest_wsgi502.servers.base import Server, alive

POLL = 0.05  # seconds between checks of the stopping instance's master


class Balancer(Protocol):
    def set_state(self, index: int, state: str) -> None: ...

    def shutdown_sessions(self, index: int) -> None: ...

    def server_name(self, index: int) -> str: ...


# (phase, line, pid, instance index, the LB's name for it): one step of the deploy, as it happened
Emit = Callable[[str, str, "int | None", int, str], None]


class Fleet:
    """The instances of one cell: ``make(index, generation)`` builds the (unstarted) server of a slot; a rolling
    deploy adds generation 2, 3, ... of a slot on the same port. ``stop`` releases every instance ever started and
    refuses new ones from then on (the load ended, a failure, Ctrl-C), so a deploy still running on the actions
    thread cannot start a server nobody will stop. A successor is started by the fleet's own spawner thread, which
    lives until ``stop``: a service process gets its death signal when the *thread* that started it exits
    (services/process.py), and the actions thread ends with the deploy (measured: the last new instance of a deploy
    started from it was killed 0.3 s after it answered, as the thread returned)."""

    def __init__(self, make: Callable[[int, int], Server], n: int) -> None:
        self.make = make
        self.current: list[Server] = [make(i, 1) for i in range(n)]
        self.generation = [1] * n
        self.every: list[tuple[int, int, Server]] = [(i, 1, s) for i, s in enumerate(self.current)]
        self._lock = threading.Lock()
        self.closed = False
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="wsgi502-spawner")

    def __len__(self) -> int:
        return len(self.current)

    def start(self, env: dict[str, str], ready: Callable[[Server], Callable[[], bool]]) -> None:
        for server in self.current:
            server.start(env, ready(server))

    def successor(self, index: int) -> Server | None:
        """The next generation of slot ``index``, registered for ``stop`` (None once the fleet is stopped)."""
        with self._lock:
            if self.closed:
                return None
            self.generation[index] += 1
            server = self.make(index, self.generation[index])
            self.every.append((index, self.generation[index], server))
            self.current[index] = server
            return server

    def launch(self, server: Server, env: dict[str, str], ready: Callable[[], bool]) -> None:
        """Start ``server`` from the spawner thread and wait for it (its errors raised here)."""
        self._spawner.submit(server.start, env, ready).result()

    def stop(self) -> None:
        with self._lock:
            self.closed = True
            servers = [s for _, _, s in self.every]
        for server in servers:
            server.stop()
        self._spawner.shutdown(wait=False)


def _master(server: Server) -> int | None:
    return getattr(server.runner, "master_pid", lambda: None)()


def rolling(fleet: Fleet, lb: Balancer, action: Mapping[str, Any], emit: Emit, stopped: threading.Event,
            env: dict[str, str], ready: Callable[[Server], Callable[[], bool]],
            clock: Callable[[], float] = time.time, running: Callable[[int], bool] = alive) -> None:
    """Replace every instance of ``fleet`` in turn (module docstring), each step reported through ``emit``.
    Returns early, with the step it was at reported, when ``stopped`` is set (the load ended) or the fleet stopped.
    Raises what a step raised (the caller records it): nothing is left running that ``fleet.stop`` does not stop.
    ``clock`` and ``running`` (is a master pid alive) are the unit tests' to replace."""
    lag, prestop, delay = float(action["lag"]), float(action["prestop"]), float(action["deregistration_delay"])
    for index in range(len(fleet)):
        if not _replace(fleet, lb, index, lag, prestop, delay, emit, stopped, env, ready, clock, running):
            return


def _wait_until(when: float, stopped: threading.Event, clock: Callable[[], float]) -> bool:
    """Sleep until ``when``; False when the load ended first."""
    return not stopped.wait(max(0.0, when - clock()))


def _replace(fleet: Fleet, lb: Balancer, index: int, lag: float, prestop: float, delay: float, emit: Emit,
             stopped: threading.Event, env: dict[str, str], ready: Callable[[Server], Callable[[], bool]],
             clock: Callable[[], float], running: Callable[[int], bool]) -> bool:
    """One instance's deregister, stop and drain, exit, successor; False when the deploy must end here."""
    old, name, k = fleet.current[index], lb.server_name(index), index + 1
    t0 = clock()
    emit("deregister", f"instance {k} ({name}) deregistered: the load balancer routes to it for {lag:g}s more "
         f"(propagation lag); its preStop sleep is {prestop:g}s", _master(old), index, name)
    master: int | None = None
    t_drain, t_stop = t0 + lag, t0 + prestop
    exited = drained = cut = False

    def seen_exit() -> None:  # the stopped master is gone: reported when seen, also while the lag runs
        nonlocal exited
        if master is not None and not exited and not running(master):
            exited = True
            emit("exited", f"instance {k} ({name}): its {old.kind} master exited {clock() - t_stop:.1f}s after "
                 "the stop", master, index, name)

    def delay_ended() -> None:  # the deregistration delay runs from the drain, in parallel with the preStop sleep
        nonlocal cut
        if drained and not cut and not exited and clock() >= t_drain + delay:
            lb.shutdown_sessions(index)
            cut = True
            emit("cut", f"instance {k} ({name}): the deregistration delay ({delay:g}s) ended with it still running: "
                 "the load balancer cuts the requests still in flight on it", master, index, name)

    # the stop and the drain run in parallel from the deregistration: whichever is due first goes first (a drain
    # due at the same time as the stop goes first: the LB has then already stopped routing)
    for when, step in sorted([(t0 + lag, "drain"), (t0 + prestop, "stop")]):
        while clock() < when:
            seen_exit()
            delay_ended()
            if stopped.wait(min(POLL, max(0.0, when - clock()))):
                return False
        if step == "drain":
            lb.set_state(index, "drain")
            t_drain, drained = clock(), True
            emit("drain", f"instance {k} ({name}): the load balancer drains it (no new requests; requests in "
                 f"flight get the deregistration delay, {delay:g}s)", None, index, name)
        else:
            what, master = old.graceful_stop()
            t_stop = clock()
            emit("stop", f"instance {k} ({name}): {what} to its {old.kind} master" +
                 (f" (pid {master})" if master is not None else ""), master, index, name)
    give_up = max(t_drain + delay, t_stop) + old.stop_grace() + 5.0  # the server's own bound, then it is killed
    while master is not None and not exited:
        seen_exit()
        if exited:
            break
        delay_ended()
        now = clock()
        if now >= give_up:
            emit("killed", f"instance {k} ({name}): still running {now - t_stop:.1f}s after its stop; killed",
                 master, index, name)
            break
        if stopped.wait(POLL):
            return False
    old.stop()  # reaps it (and kills its group when it did not exit: the ``killed`` step)
    if not exited:
        emit("exited", f"instance {k} ({name}): its {old.kind} master is gone ({clock() - t_stop:.1f}s after the "
             "stop)", master, index, name)
    new = fleet.successor(index)
    if new is None or stopped.is_set():
        return False
    t_start = clock()
    fleet.launch(new, env, ready(new))
    emit("started", f"instance {k} ({name}): the new {new.kind} instance answers on the same port "
         f"({clock() - t_start:.1f}s to start)", _master(new), index, name)
    lb.set_state(index, "ready")
    emit("ready", f"instance {k} ({name}): back in the load balancer (ready)", _master(new), index, name)
    return True


def merged_telemetry(parts: list[tuple[int, int, dict[str, Any]]]) -> dict[str, Any]:
    """One telemetry dict for a fleet from each instance's (index, generation, telemetry): counts summed (numbers
    and tables of numbers: respawns, kills, event_counts, hook_counts), events tagged with ``instance`` (1-based)
    and ``generation`` on one timeline, other keys the first instance's; ``instances`` keeps each one's counts."""
    out: dict[str, Any] = dict(parts[0][2]) if parts else {"respawns": 0, "kills": 0, "events": []}
    for key in list(out):
        values = [t.get(key) for _, _, t in parts]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[key] = sum(values)
        elif all(isinstance(v, dict) and all(isinstance(n, int) for n in v.values()) for v in values):
            table: dict[str, int] = {}
            for v in values:
                for name, n in (v or {}).items():
                    table[name] = table.get(name, 0) + n
            out[key] = dict(sorted(table.items()))
    events = [{**e, "instance": index + 1, "generation": gen} for index, gen, t in parts for e in t.get("events", [])]
    out["events"] = sorted(events, key=lambda e: e.get("t") or 0)
    out["instances"] = [{"instance": index + 1, "generation": gen, "respawns": t.get("respawns"),
                         "kills": t.get("kills"), "event_counts": t.get("event_counts")} for index, gen, t in parts]
    return out
