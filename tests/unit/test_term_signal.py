"""SIGTERM during a run is released like Ctrl-C (plugin._term_as_interrupt), and never takes over a handler someone
else installed. The end-to-end check (services, the private MariaDB directory) is
tests/integration/test_matrix_run.py::test_interrupted_run_leaves_nothing_running[term]."""

from __future__ import annotations

import os
import signal

import pytest

from pytest_wsgi502 import plugin


class _Config:
    def __init__(self) -> None:
        self.stash = pytest.Stash()


@pytest.fixture
def default_term():
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, before)


def test_sigterm_is_handled_as_ctrl_c_once_then_is_default_again(default_term):
    """SIGTERM becomes the SIGINT Ctrl-C sends (asyncio's runner cancels a running load on it), once."""
    seen = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        plugin._term_as_interrupt(_Config())  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, before)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a second SIGTERM is not delayed by teardown


def test_with_sigint_ignored_sigterm_still_interrupts(default_term):
    """A background job of a non-interactive shell inherits SIGINT ignored: SIGTERM raises KeyboardInterrupt."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        plugin._term_as_interrupt(_Config())  # type: ignore[arg-type]
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_handler_installed_by_someone_else_is_left_alone(default_term):
    def mine(signum, frame):  # pragma: no cover - never delivered
        pass

    signal.signal(signal.SIGTERM, mine)
    plugin._term_as_interrupt(_Config())  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGTERM) is mine
