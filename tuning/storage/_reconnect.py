"""A database server that restarts mid-study: reconnect with backoff, warn once, go on; gone for good: stop clearly.

Once a study's storage is open (and checked: an unreachable server at the start is bad input, exit 2), the
workers of a long study must ride out a PostgreSQL restart or failover. :func:`ride_out_restarts` makes the
storage's connection pool test each connection before use (SQLAlchemy's pre-ping, so connections broken by a
restart are replaced instead of failing the next statement) and retry new connections with exponential backoff
(1, 2, 4 … 30 s) for up to ``TUNING_STORAGE_RETRY_SECONDS`` (default 300) seconds, with one warning when the
server goes away and one line when it is back. After that the connection error propagates and ``tuning.run``
raises :class:`tuning.errors.StorageLostError` (the command exits 3): every finished trial is in the storage, and
the same command resumes the study once the server is back.

Example:
    >>> url = "postgresql+psycopg2://tuning@db/tuning"
    >>> storage = open_storage(url, heartbeat_interval=30, grace_period=90)  # doctest: +SKIP
    >>> ride_out_restarts(storage)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from tuning.redact import redact_url

__all__ = ["first_line", "lost_connection", "ride_out_restarts", "retry_seconds"]

log = logging.getLogger("tuning")

_MAX_DELAY = 30.0
#: The RDB storage methods Optuna's cache and study call (the public API, and the private ones the cache calls
#: instead: ``_create_new_trial``, ``_set_trial_param``, ``_get_trials``, ``_get_best_trial_id``).
_STORAGE_CALLS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial", "get_all_trials", "_get_trials", "get_best_trial", "record_heartbeat", "_get_stale_trial_ids",
    "get_trial_number_from_id", "get_trial_param", "_create_new_trial", "_set_trial_param", "_get_best_trial_id",
)  # fmt: skip


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` (Optuna wraps SQLAlchemy's errors in StorageInternalError) is a broken connection."""
    import sqlalchemy.exc

    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending and len(seen) < 20:  # the whole chain: Optuna's own error handling may fail on top of it
        error = pending.pop()
        if error is None or any(error is s for s in seen):
            continue
        seen.append(error)
        if isinstance(error, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return True
        pending += [error.__cause__, error.__context__]
    return False


def _retrying(method: Callable[..., Any], url: str, state: dict[str, bool], lock: threading.Lock) -> Callable[..., Any]:
    """``method`` retried while its connection is lost, for up to :func:`retry_seconds`."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + retry_seconds()
        delay = 1.0
        while True:
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                if not lost_connection(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise
                _warn_lost_once(url, exc, state, lock)
                time.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY)

    return call


def _warn_lost_once(url: str, exc: BaseException, state: dict[str, bool], lock: threading.Lock) -> None:
    """One warning when the server stops answering, not one per retry (``state["lost"]`` until it is back)."""
    with lock:
        first = not state["lost"]
        state["lost"] = True
    if first:
        log.warning("the Optuna storage %s does not answer (%s); retrying for up to %.0f s",
                    url, first_line(exc), retry_seconds())


def _never_raising(record_heartbeat: Callable[..., Any]) -> Callable[..., Any]:
    """A heartbeat that fails is skipped, not raised: it runs in Optuna's background thread, where an exception
    prints a traceback and stops the beats. The worker's own next write meets the same fault (a full disk, a
    lost server) and reports it clearly; until then the trial goes on."""

    @functools.wraps(record_heartbeat)
    def beat(*args: Any, **kwargs: Any) -> None:
        try:
            record_heartbeat(*args, **kwargs)
        except Exception as exc:
            log.debug("a heartbeat was not recorded: %s", first_line(exc))

    return beat


def first_line(exc: BaseException) -> str:
    """The database driver's message of the first broken-connection error in ``exc``'s chain."""
    import sqlalchemy.exc

    error: BaseException | None = exc
    for _ in range(20):
        if error is None or isinstance(error, sqlalchemy.exc.DBAPIError):
            break
        error = error.__cause__ or error.__context__
    cause = error or exc
    text = str(getattr(cause, "orig", None) or cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


def retry_seconds() -> float:
    """How long a worker keeps reconnecting to a lost database server: ``$TUNING_STORAGE_RETRY_SECONDS``, or 300.

    Example:
        >>> retry_seconds() > 0
        True
    """
    return float(os.environ.get("TUNING_STORAGE_RETRY_SECONDS") or 300)


def ride_out_restarts(storage: Any) -> None:
    """Make an open RDB storage reconnect through a restart of its database server (not SQLite: a file), and
    its heartbeats (any RDB storage) skip a failed beat instead of raising in Optuna's background thread."""
    engine = getattr(storage, "engine", None)
    if engine is None:
        return
    if engine.dialect.name != "sqlite":
        _reconnect_with_backoff(storage, engine)
    storage.record_heartbeat = _never_raising(storage.record_heartbeat)


def _reconnect_with_backoff(storage: Any, engine: Any) -> None:
    from sqlalchemy import event

    engine.pool._pre_ping = True  # what create_engine(pool_pre_ping=True) sets; Optuna created the engine
    url = redact_url(str(engine.url.render_as_string(hide_password=True)))
    state = {"lost": False}
    lock = threading.Lock()
    for name in _STORAGE_CALLS:  # a statement cut off by the restart runs again once the server answers
        method = getattr(storage, name, None)
        if method is not None:
            setattr(storage, name, _retrying(method, url, state, lock))

    @event.listens_for(engine, "do_connect")
    def _connect_with_backoff(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        deadline = time.monotonic() + retry_seconds()
        delay = 1.0
        while True:
            try:
                connection = dialect.loaded_dbapi.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                _warn_lost_once(url, exc, state, lock)
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY)
                continue
            with lock:
                back = state["lost"]
                state["lost"] = False
            if back:
                log.warning("the Optuna storage %s answers again; the study goes on", url)
            return connection
