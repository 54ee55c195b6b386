"""One background thread per tracker that runs MLflow calls in the order they were submitted.

Training threads only enqueue closures and never wait on MLflow; :meth:`Worker.flush` waits, for a bounded
time, until everything submitted so far is done. A failing job is logged (redacted) and the next one runs.

The worker is a circuit breaker for the tracking server. The first job that cannot reach it (a connection
refused, a timeout, a 5xx) marks it **down** (``offline``): the worker logs one warning, keeps that job and
every later one in an in-memory spool, in order, and calls the server no more; only its probe (a TCP connect,
then one light request) runs, at most every :data:`PROBE_SECONDS`, in this thread. When the probe answers, the
worker replays the spool and logs that it did. Whoever waits on the worker stops waiting the moment the server
is marked down (:meth:`Worker.wait`, :meth:`Worker.flush` with ``until_offline``), and the end of a study asks
for one probe at once (:meth:`Worker.probe_now`) rather than waiting for the next. Nothing is lost while the
process lives; what is still spooled when the study ends is reported by the tracker together with the command
that back-fills it from the Optuna storage (``tuning sync``).
"""

from __future__ import annotations

import collections
import logging
import queue
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from tuning.redact import redact_text

log = logging.getLogger("tuning.tracking")

#: Seconds between two probes of an unreachable tracking server.
PROBE_SECONDS = 10.0


@dataclass
class _Job:
    what: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    trial: int | None  # the trial whose run this job writes, None for the study's parent run


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the tracking server is unreachable or unwell (worth keeping the call for later).

    Example:
        >>> is_connection_error(ConnectionRefusedError()), is_connection_error(ValueError("bad param"))
        (True, False)
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionError | TimeoutError):
            return True
        name = type(exc).__name__
        text = str(exc)
        if name in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError", "ProtocolError"):
            return True
        if "Max retries exceeded" in text or "Connection refused" in text or "timed out" in text.lower():
            return True
        if getattr(exc, "error_code", None) == "TEMPORARILY_UNAVAILABLE" or re.search(r"error code 5\d\d", text):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


class Worker:
    """An ordered job queue served by one daemon thread, started on the first job, with an offline spool.

    Args:
        name: the thread's name.
        secrets: strings masked in every log line.
        probe: returns true when the tracking location answers again (default: never offline).
        describe: the tracking location as shown in messages (already redacted).

    Example:
        >>> worker = Worker("demo")
        >>> done = []
        >>> worker.submit("append", done.append, 1)
        >>> worker.flush(5.0), done
        (True, [1])
    """

    #: Seconds between two probes of an unreachable server (:data:`PROBE_SECONDS`).
    probe_seconds: float = PROBE_SECONDS

    def __init__(
        self,
        name: str,
        secrets: Iterable[str] = (),
        probe: Callable[[], bool] | None = None,
        describe: str = "",
    ) -> None:
        self._name = name
        self._secrets = list(secrets)
        self._probe = probe
        self._describe = describe
        self._queue: queue.Queue[_Job | None] = queue.Queue()  # None: probe now (see probe_now)
        self._spool: collections.deque[_Job] = collections.deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition()  # notified when a job ends, the server goes down or up, a probe ends
        self._pending = 0
        self._last_probe = 0.0
        self._probes = 0
        self.offline = False
        self.failures = 0
        self.outages = 0
        self.unsent_trials: set[int] = set()  # trials with a job that failed for good
        self.parent_unsent = False

    def submit(self, what: str, fn: Callable[..., Any], *args: Any, trial: int | None = None) -> None:
        """Run ``fn(*args)`` in the worker thread after every job submitted before it."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()
        with self._idle:
            self._pending += 1
        self._queue.put(_Job(what, fn, args, trial))

    def flush(self, timeout: float | None = None, *, until_offline: bool = False) -> bool:
        """Block until every job submitted so far has run, or ``timeout`` seconds; true when nothing is left.

        While offline, the spool is kept and retried until the timeout: with ``timeout=None`` that would wait
        for the server forever, so give a timeout when the server may be gone. ``until_offline``: stop waiting
        (false) as soon as the server is marked down, rather than waiting for a probe to find it back.

        Example:
            >>> worker = Worker("demo")
            >>> worker.submit("wait", time.sleep, 0.01)
            >>> worker.flush(5.0, until_offline=True)
            True
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                if until_offline and self.offline:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(timeout=min(left, 1.0) if left is not None else 1.0)
        return True

    def wait(self, future: Future[Any], timeout: float) -> bool:
        """Block until ``future`` (set by a job) is done, the server is marked down, or ``timeout`` seconds; true
        when it is done. A job that is kept while the server is down leaves its future pending: nobody waits
        for it.

        Example:
            >>> worker, run = Worker("demo"), Future()
            >>> worker.submit("create", run.set_result, "run-1")
            >>> worker.wait(run, 5.0), run.result()
            (True, 'run-1')
        """
        future.add_done_callback(self._wake_waiters)
        with self._idle:
            self._idle.wait_for(lambda: future.done() or self.offline, timeout)
        return future.done()

    def probe_now(self, timeout: float) -> bool:
        """While the server is down, have the thread probe it at once (not at the next periodic probe) and wait
        for the answer at most ``timeout`` seconds; true when the server answers (the kept calls are then being
        sent) or was not down.

        Example:
            >>> Worker("demo").probe_now(1.0)   # not down: nothing to probe
            True
        """
        with self._idle:
            if not self.offline:
                return True
            asked = self._probes
        self._queue.put(None)
        with self._idle:
            self._idle.wait_for(lambda: not self.offline or self._probes > asked, timeout)
            return not self.offline

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet run (kept ones included)."""
        with self._idle:
            return self._pending

    def unsent(self) -> tuple[list[int], bool]:
        """Trials whose runs miss something, and whether the parent run does: spooled or failed for good."""
        with self._lock:
            trials = set(self.unsent_trials) | {j.trial for j in self._spool if j.trial is not None}
            parent = self.parent_unsent or any(j.trial is None for j in self._spool)
        for job in list(self._queue.queue):
            if job is None:  # a request to probe
                continue
            if job.trial is None:
                parent = True
            else:
                trials.add(job.trial)
        return sorted(trials), parent

    # ------------------------------------------------------------------ the thread

    def _serve(self) -> None:
        while True:
            # While the server is down no job calls it: the thread wakes for new jobs (kept) and for the probe.
            until_probe = max(0.0, self._last_probe + self.probe_seconds - time.monotonic()) if self.offline else None
            try:
                job = self._queue.get(timeout=until_probe)
            except queue.Empty:  # time for the periodic probe
                job = None
            if job is not None:
                if self.offline:
                    with self._lock:
                        self._spool.append(job)
                else:
                    self._run(job)
            # None: the periodic probe is due, or probe_now asked for one
            if self.offline and (job is None or time.monotonic() - self._last_probe >= self.probe_seconds):
                self._try_replay()

    def _run(self, job: _Job) -> bool:
        """Run one job; false when the server is unreachable (the job is then spooled, first in line)."""
        try:
            job.fn(*job.args)
        except Exception as exc:  # tracking must never stop the study
            if self._probe is not None and is_connection_error(exc):
                with self._lock:
                    self._spool.appendleft(job)
                self._go_offline(exc)
                return False
            self.failures += 1
            with self._lock:
                if job.trial is None:
                    self.parent_unsent = True
                else:
                    self.unsent_trials.add(job.trial)
            from tuning.storage import database_cause

            cause = database_cause(exc)  # the Optuna storage failing under us: its own words, not Optuna's wrapper
            log.warning("MLflow tracking: could not %s: %s", job.what, redact_text(str(cause), self._secrets))
            log.debug("MLflow tracking traceback:\n%s", redact_text(traceback.format_exc(), self._secrets))
        self._done()
        return True

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _wake_waiters(self, *_: object) -> None:
        with self._idle:
            self._idle.notify_all()

    def _go_offline(self, exc: BaseException) -> None:
        with self._idle:  # whoever waits on the worker stops waiting now
            self.offline = True
            self._last_probe = time.monotonic()
            self._idle.notify_all()
        self.outages += 1
        if self.outages == 1:  # one warning per study, however long the outage and however many calls
            first = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self._secrets)
            log.warning(
                "MLflow tracking: the tracking server %s does not answer (%s). Training goes on; the runs' data "
                "is kept and sent when the server is back (checked every %.0f s).",
                self._describe, first[:200], self.probe_seconds,
            )

    def _try_replay(self) -> None:
        self._last_probe = time.monotonic()
        try:
            answering = bool(self._probe and self._probe())
        except Exception:
            answering = False
        with self._idle:
            self._probes += 1
            self.offline = not answering
            self._idle.notify_all()
        if not answering:
            return
        log.warning("MLflow tracking: the tracking server %s answers again; sending %d kept call(s).",
                    self._describe, len(self._spool))
        while True:
            with self._lock:
                if not self._spool:
                    break
                job = self._spool.popleft()
            if not self._run(job):  # gone again: the job is back at the front of the spool
                return
