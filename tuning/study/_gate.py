"""The study's total across workers: start a trial only while the counted and running trials leave room for it.

``n_trials`` is the study's total of complete and pruned trials, however many workers (processes, machines)
share the study. Before each trial every worker counts, in the shared storage, the counted trials and the
RUNNING ones (every worker's):

- counted >= total: the study is done, the worker ends;
- counted + running < total: there is room, the worker starts a trial;
- otherwise the running trials may finish the study: the worker waits (polling the storage, and failing the
  trials of dead workers through :func:`tuning.study.recover`). If one of them fails, or its worker dies and
  its trial is failed and queued again, the waiting worker takes that place; if they complete, it ends.

The look at the total and the creation of the trial (Optuna's ``ask()``) happen under a :class:`StudyLock`
that every worker of the study shares: an advisory lock on PostgreSQL (workers on any machine), a lock on the
database's folder for SQLite (workers on one machine). So a study ends with exactly ``n_trials`` counted
trials, however slowly the machine or the database answers. Without such a lock (MySQL, an in-memory storage,
or ``n_jobs`` threads in one process) workers that look at the total within the same moment may together start
up to ``workers - 1`` trials more.

Example:
    >>> gate = TotalGate(total=30, grace_period=90)                   # doctest: +SKIP
    >>> study.optimize(objective, callbacks=[gate])                   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuning.storage import lock_folder, sqlite_path
from tuning.study._recovery import recover

COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)

__all__ = ["COUNTED_STATES", "StudyLock", "TotalGate"]

log = logging.getLogger("tuning")


class StudyLock:
    """The lock every worker of one study takes to look at the total and create its trial, one worker at a time.

    PostgreSQL: a session advisory lock keyed by the study's name, on its own connection (workers on any
    machine). SQLite: an exclusive ``flock`` on the database's folder (workers on this machine). Other
    storages: only the threads of this process take turns. A lock that cannot be taken (the database server is
    restarting) is skipped with a debug line: the trial's own ``ask()`` then waits out the restart. Crash
    recovery takes it too, to fail a dead worker's trial and queue its retry as one step
    (:func:`tuning.study.recover`).

    Example:
        >>> lock = StudyLock(study._storage, "mnist_quick")       # doctest: +SKIP
        >>> lock.acquire(); study.ask(); lock.release()           # doctest: +SKIP
    """

    def __init__(self, storage: Any, study_name: str) -> None:
        backend = getattr(storage, "_backend", storage)  # Optuna wraps an RDB storage in a cache
        engine = getattr(backend, "engine", None)
        self._dialect = engine.dialect.name if engine is not None else None
        self._engine = engine
        path = sqlite_path(str(engine.url)) if self._dialect == "sqlite" else None
        self._folder = path.parent if path is not None else None  # None: an in-memory database
        digest = hashlib.sha256(f"tuning study {study_name}".encode()).digest()
        self._key = int.from_bytes(digest[:8], "big", signed=True)  # PostgreSQL's advisory keys are bigint
        self._threads = threading.Lock()
        self._holder: int | None = None  # the thread holding the lock
        self._handle: Any = None  # the folder's descriptor or the PostgreSQL connection

    def acquire(self) -> None:
        self._threads.acquire()
        self._holder = threading.get_ident()
        try:
            if self._folder is not None:
                self._handle = lock_folder(self._folder)
            elif self._dialect == "postgresql":
                self._handle = self._advisory_lock()
        except BaseException:
            self._holder = None
            self._threads.release()
            raise

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Release the lock if this thread holds it (a no-op otherwise, so it may be called on every path)."""
        if self._holder != threading.get_ident():
            return
        handle, self._handle = self._handle, None
        try:
            if isinstance(handle, int):
                os.close(handle)
            elif handle is not None:
                self._advisory_unlock(handle)
        finally:
            self._holder = None
            self._threads.release()

    def _advisory_lock(self) -> Any:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        connection = None
        try:
            connection = self._engine.connect()
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
            connection.commit()
            return connection
        except SQLAlchemyError as exc:
            log.debug("the study's lock was not taken (%s); this trial starts without it", type(exc).__name__)
            if connection is not None:
                connection.invalidate()
            return None

    def _advisory_unlock(self, connection: Any) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            connection.commit()
            connection.close()
        except SQLAlchemyError:  # closing the session releases its advisory locks
            connection.invalidate()


class TotalGate:
    """An Optuna callback that stops this worker when the study's total is reached, or waits for room.

    After the callback finds room, this worker holds the study's lock until its next trial is created:
    wrap the objective in :meth:`releasing`, and call :meth:`release` once ``optimize`` returns.

    Args:
        total: the study's total of counted (complete and pruned) trials.
        grace_period: seconds without a heartbeat after which a trial's worker is taken as dead.
        tracking_uri: where the MLflow runs of dead workers' trials are ended (None: no tracking).
        deadline: ``time.monotonic()`` after which no new trial starts (the study's timeout), or None.
        poll: seconds between two looks at the storage while waiting.
        check_signals: called while waiting, raises when the user interrupted (Ctrl-C).
        lock: the lock the study's workers share (None: look without it).
    """

    def __init__(
        self,
        total: int,
        *,
        grace_period: int,
        tracking_uri: str | None = None,
        deadline: float | None = None,
        poll: float = 2.0,
        check_signals: Callable[[], None] = lambda: None,
        lock: StudyLock | None = None,
    ) -> None:
        self.total = total
        self.grace_period = grace_period
        self.tracking_uri = tracking_uri
        self.deadline = deadline
        self.poll = poll
        self.check_signals = check_signals
        self.lock = lock

    def __call__(self, study: optuna.Study, trial: FrozenTrial | None = None) -> None:
        if not self.room(study, claim=True):
            study.stop()

    def releasing(self, objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
        """``objective``, releasing the study's lock first: its trial exists, so the others may count it."""

        def run(trial: optuna.Trial) -> Any:
            self.release()
            return objective(trial)

        return run

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def room(self, study: optuna.Study, *, claim: bool = False) -> bool:
        """True when this worker may start a trial now; False when the study is done (or its time is up).

        Waits while the running trials could complete the study. With ``claim``, a True answer leaves this worker
        holding the study's lock: the next trial it creates is the one the answer made room for.
        """
        waited = False
        while True:
            recover(study, tracking_uri=self.tracking_uri, grace_period=self.grace_period, lock=self.lock)
            if claim and self.lock is not None:
                self.lock.acquire()
            try:
                trials = study.get_trials(deepcopy=False, states=(*COUNTED_STATES, TrialState.RUNNING))
            except BaseException:
                self.release()
                raise
            counted = sum(t.state != TrialState.RUNNING for t in trials)
            running = len(trials) - counted
            if counted + running < self.total and not waited:
                return True  # with the lock held when claiming
            self.release()
            if counted >= self.total:
                return False
            if counted + running < self.total:
                # Workers waiting together are released by the same event: spread them out and look again,
                # so that they do not all queue for the lock at once.
                waited = False
                time.sleep(random.uniform(0, self.poll))
                continue
            waited = True
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return False
            self.check_signals()
            time.sleep(self.poll)
