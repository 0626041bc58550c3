"""The live line while a cell runs: elapsed/total, req/s, errors so far (k6's and Locust's running status).

On a terminal it rewrites one line in place once a second; when output is not a terminal (CI logs, pipes) it
writes a plain line every ``PLAIN_EVERY`` seconds with no control characters; under ``-q`` it is silent, and so
is an xdist worker (its output goes nowhere).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the reporter reads pytest's terminal, the report package never imports pytest
    import pytest

PLAIN_EVERY = 5.0  # seconds between plain lines when output is not a terminal


def format_line(name: str, p: dict[str, Any]) -> str:
    """``uwsgi-2w  4.0/10s  2,731 req  683 req/s  0 errors`` (counts only when the engine reports them)."""
    line = f"wsgi502 {name}  {p['elapsed']:.0f}/{p['duration']:.0f}s"
    if "requests" in p:
        errors = p["errors"]
        line += f"  {p['requests']:,} req  {p['rps']:,.0f} req/s  {errors:,} error{'' if errors == 1 else 's'}"
    return line


class LiveProgress:
    """``callback`` goes to the load engine; ``finish`` ends the live line. Thread-safe (the engine may call from
    a helper thread)."""

    def __init__(self, config: pytest.Config, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.clock = name, clock
        tr: pytest.TerminalReporter | None = config.pluginmanager.get_plugin("terminalreporter")
        quiet = config.get_verbosity() < 0 or hasattr(config, "workerinput")
        self.tr = None if quiet or tr is None else tr
        self.tty = bool(self.tr is not None and self.tr.isatty)
        capman = config.pluginmanager.get_plugin("capturemanager")
        # the test's output is being captured while the cell runs: step around it, as pytest's live logging does
        self._uncaptured: Callable[[], AbstractContextManager[Any]] = (
            capman.global_and_fixture_disabled if capman is not None else contextlib.nullcontext)
        self._lock = threading.Lock()
        self._last_plain = clock()
        self._live = False

    def callback(self, p: dict[str, Any]) -> None:
        if self.tr is None:
            return
        line = format_line(self.name, p)
        with self._lock, self._uncaptured():
            if self.tty:
                if not self._live:
                    self.tr.ensure_newline()
                    self._live = True
                self.tr.rewrite(line, erase=True)
            elif self.clock() - self._last_plain >= PLAIN_EVERY:
                self._last_plain = self.clock()
                self.tr.write_line(line)

    def say(self, message: str) -> None:
        """A line of its own (e.g. a one-time build before the cell starts), silent when the progress is."""
        if self.tr is None:
            return
        with self._lock, self._uncaptured():
            self.tr.ensure_newline()
            self.tr.write_line(message)

    def finish(self) -> None:
        with self._lock, self._uncaptured():
            if self.tr is not None and self._live:
                self.tr.rewrite("", erase=True)  # pytest re-prints the test's location on its next line
                self._live = False
