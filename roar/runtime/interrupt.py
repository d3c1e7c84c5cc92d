"""Ctrl-C during a run: the computation stops cleanly, and the run says what it kept and how to resume."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(BaseException):
    """Raised by SIGINT (Ctrl-C) in place of KeyboardInterrupt while `interrupts_raise` is active.

    A BaseException, as KeyboardInterrupt is, so that no `except Exception` swallows it; but not a
    KeyboardInterrupt, which Lightning turns into a silent `sys.exit(1)`. Lightning passes any other exception
    on after its own clean-up. `kept` collects, on the way up, what the interrupted computation left to
    resume from.
    """

    def __init__(self) -> None:
        super().__init__("interrupted")
        self.kept: list[str] = []


def _raise_interrupted(signum, frame) -> None:
    # A second Ctrl-C ends the process at once, should the clean-up hang: every file roar writes is replaced
    # atomically, so that cannot leave one half-written.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise Interrupted


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block, SIGINT raises `Interrupted`; the previous handler is restored afterwards."""
    previous = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
