"""The local runner: the server as a process on this host (``services.process.LocalProcess``), killed with
pytest, its output stamped line by line into the cell's ``server.log``."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pytest_wsgi502.servers.base import Placement, fatal_or
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
        if self.process is not None:
            self.process.stop()

    def signal(self, sig: signal.Signals) -> int | None:
        """``sig`` to the master (the process the runner started), if it still runs."""
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
