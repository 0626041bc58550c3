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


def test_sigterm_raises_keyboard_interrupt_once_then_is_default_again(default_term):
    config = _Config()
    plugin._term_as_interrupt(config)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a second SIGTERM is not delayed by teardown


def test_a_handler_installed_by_someone_else_is_left_alone(default_term):
    def mine(signum, frame):  # pragma: no cover - never delivered
        pass

    signal.signal(signal.SIGTERM, mine)
    plugin._term_as_interrupt(_Config())  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGTERM) is mine
