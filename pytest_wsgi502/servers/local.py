"""The local runner: the server as a process on this host (``services.process.LocalProcess``), killed with
pytest, its output stamped line by line into the cell's ``server.log``."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pytest_wsgi502.servers.base import Placement, alive, fatal_or
from pytest_wsgi502.services.process import CpuPlace, LocalProcess, tail, wait_until

if TYPE_CHECKING:
    from pytest_wsgi502.servers.base import RunnerFactory, Server


class LocalRunner:
    """``Runner`` for a process on this host: the placement is the host's own paths and loopback ports."""

    start_timeout = 60.0

    def __init__(self, server: Server, place: CpuPlace | None = None) -> None:
        self.server = server
        self.place = place  # the inside CPUs (services/isolation.py): master and every worker it forks
        self.process: LocalProcess | None = None
        self.master: int | None = None  # the master that took over in a binary upgrade (gunicorn USR2)

    @property
    def placement(self) -> Placement:
        s = self.server
        return Placement(
            address=s.address, stats=f"127.0.0.1:{s.spec.stats_port}", chdir=str(s.spec.chdir),
            config_dir=str(s.spec.workdir), binary=s.binary, unix=s.unix_socket is not None,
            # the venv of this Python (uWSGI embeds libpython and would otherwise miss its site-packages)
            virtualenv=sys.prefix if sys.prefix != sys.base_prefix else None,
        )

    def start(self, env: dict[str, str], ready: Callable[[], bool], timeout: float) -> None:
        s = self.server
        self.process = LocalProcess(s.name, s.argv(), s.log, cwd=s.spec.chdir, env=env, stop_signal=s.stop_signal,
                                    ledger=s.ledger, stamp=True, place=self.place).start()
        process = self.process

        # a 5xx or a traceback ends the wait at once (servers/base.Readiness), like an exit
        wait_until(ready, timeout, f"answering HTTP on {s.address}", fatal_or(ready, process.exited), name=s.name,
                   details=lambda: f"last lines of {s.log}:\n{tail(s.log)}", on_timeout=process.stop)
        if self.place is not None and self.process.pid is not None:
            self.place.adopt_group(self.process.pid)  # any worker forked before the master was moved

    def stop(self) -> None:
        if self.master is not None and alive(self.master):
            # the upgraded master is in the started process's group, but the graceful signal goes to it (the
            # started one is gone); the group is then killed as always
            os.kill(self.master, self.server.stop_signal)
            deadline = time.monotonic() + 10
            while alive(self.master) and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.process is not None:
            self.process.stop()

    def master_pid(self) -> int | None:
        """The server's master: the started process, or the one that took over in a binary upgrade."""
        if self.master is not None:
            return self.master
        return self.process.pid if self.process is not None and self.process.alive() else None

    def adopt(self, pid: int) -> None:
        """``pid`` is the master from now on (a binary upgrade's new master; the started one exited)."""
        self.master = pid

    def signal(self, sig: signal.Signals) -> int | None:
        """``sig`` to the master (the process the runner started, or its upgraded successor), if it still runs."""
        if self.master is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.master, sig)
            return self.master
        if self.process is None:
            return None
        self.process.signal(sig)
        return self.process.pid

    def describe(self) -> dict[str, Any]:
        return {}


def placed_runner(place: CpuPlace | None) -> RunnerFactory:
    """``make_server(..., runner=placed_runner(isolation.inside))``: a local runner whose server (master and
    workers) runs on ``place``'s CPUs."""
    return functools.partial(LocalRunner, place=place)
