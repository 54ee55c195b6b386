"""One background thread per tracker that runs MLflow calls in the order they were submitted.

Training threads only enqueue closures and never wait on MLflow; :meth:`_Worker.flush` waits until
everything submitted so far is done. A failing job is logged (redacted) and the next one runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from tuning._redact import redact_text

log = logging.getLogger("tuning.tracking")


class _Worker:
    """An ordered job queue served by one daemon thread, started on the first job."""

    def __init__(self, name: str, secrets: Iterable[str] = ()) -> None:
        self._name = name
        self._secrets = list(secrets)
        self._queue: queue.Queue[tuple[str, Callable[..., Any], tuple[Any, ...]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failures = 0

    def submit(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the worker thread after every job submitted before it."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put((what, fn, args))

    def flush(self) -> None:
        """Block until every job submitted so far has run."""
        if self._thread is not None:
            self._queue.join()

    def _serve(self) -> None:
        while True:
            what, fn, args = self._queue.get()
            try:
                fn(*args)
            except Exception as exc:  # tracking must never stop the study
                self.failures += 1
                log.warning("MLflow tracking: could not %s: %s", what, redact_text(str(exc), self._secrets))
                log.debug("MLflow tracking traceback:\n%s", redact_text(traceback.format_exc(), self._secrets))
            finally:
                self._queue.task_done()
