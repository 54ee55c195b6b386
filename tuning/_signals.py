"""Ctrl-C and SIGTERM: remembered, raised at a safe point, and never lost in a finalizer.

When SIGINT arrives, Python raises ``KeyboardInterrupt`` in whatever the main thread runs. If that is a
finalizer or a weakref callback (the garbage collector runs them at any allocation, often while TensorFlow and
MLflow load), Python prints "Exception ignored in ..." and goes on: without a record, a whole study then ran
after the user pressed Ctrl-C. So every signal is kept in :data:`received`:

- the ``tuning`` command installs :func:`remember` first thing (:func:`install`);
- while a study runs, :func:`handling` installs :func:`raise_interrupted`: SIGINT and SIGTERM raise
  :class:`Interrupted` (exit code ``128 + signum``), a second signal exits at once (:func:`exit_now`);
- the study looks at :data:`received` before it starts and at every epoch and trial boundary
  (:func:`stop_if_signalled`), and empties it when it ends;
- between the end of one trial and the moment the next has recorded its worker, a signal is only remembered
  (:func:`defer`): Optuna's ``ask()`` then never leaves a trial RUNNING without a worker.

Example:
    >>> install()  # doctest: +SKIP
    >>> received == [signal.SIGINT]  # after a Ctrl-C, even one whose exception was swallowed  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: The signals received and not yet acted on (SIGINT, SIGTERM numbers).
received: list[int] = []

#: Set from the end of one trial until the next has recorded its worker: a signal then is only remembered.
_deferring = threading.Event()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped the study; ``signum`` says which (exit code ``128 + signum``)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
    ``KeyboardInterrupt``, :class:`Interrupted` included, also one that C code wrapped in an error of its own,
    see :func:`caused_by_signal`): that one is remembered, not printed."""

    def hook(unraisable: Any) -> None:
        if not caused_by_signal(unraisable.exc_value):
            previous(unraisable)

    hook._keeps_quiet_on_ctrl_c = True  # type: ignore[attr-defined]
    return hook


@contextmanager
def handling(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Handle SIGINT and SIGTERM with ``handler`` inside the block (main thread only; elsewhere a no-op).

    An :class:`Interrupted` that Python swallows (raised inside a finalizer or a weakref callback) is not printed
    as "Exception ignored in ... Traceback": the signal is in :data:`received`, and the study stops at the next
    epoch or trial boundary.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = quiet_on_ctrl_c(previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for s, h in previous.items():
            signal.signal(s, h)


def defer(*_: Any) -> None:
    """Remember, not raise, SIGINT/SIGTERM until the next trial has recorded its worker (an Optuna callback)."""
    _deferring.set()


def undefer() -> None:
    """The trial is recorded with its worker: a signal may interrupt it now."""
    _deferring.clear()


def raise_interrupted(signum: int, frame: Any) -> None:
    """SIGTERM ends the running trial cleanly, exactly like Ctrl-C; a second signal then exits at once."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, exit_now)
    received.append(signum)
    if not _deferring.is_set():
        raise Interrupted(signum)


def caused_by_signal(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a Ctrl-C or SIGTERM, itself or in disguise: a ``KeyboardInterrupt`` that C code turned
    into an error of its own (TensorFlow's ``Flatten``, hit while it imports: ``SystemError: <built-in function
    __import__> returned a result with an exception set``), found as the error's cause or context.

    Example:
        >>> try:
        ...     try:
        ...         raise KeyboardInterrupt
        ...     except KeyboardInterrupt as ctrl_c:
        ...         raise SystemError("__import__ returned a result with an exception set") from ctrl_c
        ... except SystemError as error:
        ...     caused_by_signal(error), caused_by_signal(ValueError("a real error"))
        (True, False)
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def interruption(exc: Exception) -> Interrupted | None:
    """The :class:`Interrupted` that ``exc`` stands for, or ``None`` for a real error: a library error raised
    after a signal came (:data:`received`), or one a signal caused (:func:`caused_by_signal`), is the signal.

    Example:
        >>> received.clear()
        >>> interruption(ValueError("a real error")) is None
        True
    """
    if received or caused_by_signal(exc):
        return Interrupted(received[-1] if received else signal.SIGINT)
    return None


def stop_if_signalled(*_: Any) -> None:
    """Raise :class:`Interrupted` if a signal came whose exception was swallowed (also an Optuna callback)."""
    if received:
        raise Interrupted(received[-1])


def exit_now(signum: int, frame: Any) -> None:
    """While finishing up after an interruption, a second signal exits at once (the storage is consistent).

    A trial this leaves RUNNING is failed and queued again by the next run (crash recovery).
    """
    os.write(2, b"\nInterrupted again: exiting now. Run the same command to resume.\n")
    os._exit(128 + signum)
