"""Ctrl-C remembered, not only raised: Python swallows a KeyboardInterrupt raised inside a finalizer.

When SIGINT arrives, Python raises ``KeyboardInterrupt`` in whatever the main thread runs. If that is a
finalizer or a weakref callback (the garbage collector runs them at any allocation, often while TensorFlow and
MLflow load), Python prints "Exception ignored in ..." and goes on: without a record, a whole study then ran
after the user pressed Ctrl-C. The ``tuning`` command installs :func:`remember` first thing; the runner looks
at :data:`received` before its study starts and during it (``tuning._runner``), and empties it when it ends.

Example:
    >>> install()  # doctest: +SKIP
    >>> received == [signal.SIGINT]  # after a Ctrl-C, even one whose exception was swallowed  # doctest: +SKIP
    True
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

#: The signals received and not yet acted on (SIGINT, SIGTERM numbers).
received: list[int] = []


def remember(signum: int, frame: Any) -> None:
    """Python's own SIGINT behaviour (raise ``KeyboardInterrupt``), with the signal kept in :data:`received`."""
    received.append(signum)
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT with :func:`remember` (the command's start; the study installs its own handler), and do not
    print a swallowed ``KeyboardInterrupt`` as "Exception ignored in ... Traceback": it is remembered."""
    received.clear()  # a new command (main() may run several times in one process)
    signal.signal(signal.SIGINT, remember)
    if not getattr(sys.unraisablehook, "_keeps_quiet_on_ctrl_c", False):
        sys.unraisablehook = quiet_on_ctrl_c(sys.unraisablehook)


def quiet_on_ctrl_c(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """An ``sys.unraisablehook`` that passes everything to ``previous`` except a swallowed Ctrl-C (any
    ``KeyboardInterrupt``, the runner's ``Interrupted`` included): that one is remembered, not printed."""

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)

    hook._keeps_quiet_on_ctrl_c = True  # type: ignore[attr-defined]
    return hook
