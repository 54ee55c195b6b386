"""Crash recovery: trials left RUNNING by a worker process that died are failed and re-run once.

:func:`recover` runs when a study starts and before every trial of every worker (``tuning.run``); it fails three
kinds of RUNNING trial, records why (user attribute ``reason``), queues each configuration again at most once,
and ends the trial's MLflow run as KILLED:

1. **A dead process on this host, at once**: the trial's ``worker`` user attribute (``host:pid``, set by the
   runner) names this host and a process that no longer exists: ``"the worker process <pid> died (killed or
   crashed)"``. A user who restarts a killed study straight away sees no stale RUNNING trial.
2. **A stale heartbeat, on any machine** (RDB storages): no heartbeat for longer than the grace period
   (``tuning.study.GRACE_PERIOD``, 90 s; beats every ``HEARTBEAT_INTERVAL``, 30 s): ``"no heartbeat for more
   than 90 s from its worker <host:pid> ..."``. Optuna's own ``fail_stale_trials``, run before each ``ask()``,
   records no reason: :func:`take_over_stale_trials` leaves every stale trial to :func:`recover`.
3. **No worker and no heartbeat**: a trial RUNNING for longer than the grace period whose process died between
   Optuna's ``ask()`` and recording its worker (:data:`NO_WORKER_REASON`). Its start time is the asking host's
   clock: keep the machines' clocks in sync (NTP) to within the grace period.

All paths use the same record of retries, the system attributes of Optuna's retry callback
(``failed_trial``: the first trial of the series, ``retry_history``: every trial number before this one), so a
trial is retried by one path only and a retry that dies too is not retried again. Only the process whose
state change succeeds (Optuna raises ``UpdateFinishedTrialError`` for the others) queues the retry.

The MLflow runs of the trials it fails are ended as KILLED (:func:`tuning.tracking.end_dead_runs`).

Example:
    >>> study = optuna.load_study(study_name="mnist_quick", storage=storage)  # doctest: +SKIP
    >>> [t.number for t in recover_dead_workers(study)]  # doctest: +SKIP
    [7]
"""

from __future__ import annotations

import datetime
import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from tuning import records
from tuning.records import FAILED_TRIAL, RETRY_HISTORY, RETRY_OF
from tuning.tracking import end_dead_runs

__all__ = [
    "MAX_RETRY",
    "NO_WORKER_REASON",
    "dead_worker_reason",
    "heartbeat_reason",
    "recover",
    "recover_dead_workers",
    "take_over_stale_trials",
]

log = logging.getLogger("tuning")

#: How many times a crashed configuration runs again (the heartbeat callback uses the same number).
MAX_RETRY = 1


def dead_worker_reason(pid: int) -> str:
    """The ``reason`` recorded on a trial whose worker process died.

    Example:
        >>> dead_worker_reason(4242)
        'the worker process 4242 died (killed or crashed)'
    """
    return f"the worker process {pid} died (killed or crashed)"


def recover_dead_workers(study: optuna.Study) -> list[FrozenTrial]:
    """Fail the RUNNING trials of dead worker processes on this host and queue each configuration once.

    Trials of other hosts, and of processes that are still alive, are left alone (the heartbeat handles the
    former). Safe when several workers start at once: a trial is failed and retried by one of them only.

    Example:
        >>> recovered = recover_dead_workers(study)  # doctest: +SKIP
        >>> recovered[0].user_attrs["reason"]  # doctest: +SKIP
        'the worker process 4242 died (killed or crashed)'

    Returns:
        The trials this call failed, as they are now in the storage.
    """
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = records.dead_local_pid(trial.user_attrs.get(records.WORKER))
        if pid is not None:
            dead.append((trial, dead_worker_reason(pid)))
    return _fail_and_queue(study, dead, None, None)


def _queue_retry(study: optuna.Study, failed: FrozenTrial) -> int | None:
    """Queue ``failed``'s configuration as a WAITING trial, unless it is itself a retry or already queued."""
    history = list(failed.system_attrs.get(RETRY_HISTORY, []))
    if len(history) >= MAX_RETRY:
        return None
    for other in study.get_trials(deepcopy=False):
        if other.number == failed.number:
            continue
        if other.user_attrs.get(RETRY_OF) == failed.number or failed.number in other.system_attrs.get(
            RETRY_HISTORY, []
        ):
            return None  # e.g. an interrupted trial that queued itself before its process died
    system_attrs = {FAILED_TRIAL: failed.system_attrs.get(FAILED_TRIAL, failed.number),
                    RETRY_HISTORY: [*history, failed.number]}
    template = optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=failed.params,
        distributions=failed.distributions,
        user_attrs={RETRY_OF: failed.number},
        system_attrs=system_attrs,
    )
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return study._storage.get_trial_number_from_id(trial_id)


def heartbeat_reason(grace_period: int, worker: Any) -> str:
    """The ``reason`` recorded on a trial whose heartbeat went stale (its worker may be on another machine).

    Example:
        >>> heartbeat_reason(90, "gpu-3:4242")
        'no heartbeat for more than 90 s from its worker gpu-3:4242 (killed, crashed or cut off)'
    """
    return f"no heartbeat for more than {grace_period} s from its worker {worker or '(unknown)'} " \
           "(killed, crashed or cut off)"


#: The reason of a trial whose process died between Optuna's ``ask()`` and recording its worker.
NO_WORKER_REASON = "its worker died before it started training (no worker and no heartbeat recorded)"


#: Where :func:`take_over_stale_trials` keeps the storage's own stale-trial query, for :func:`recover`.
_STALE_QUERY = "_tuning_stale_trial_ids"


def take_over_stale_trials(storage: Any) -> None:
    """Make :func:`recover` the only path that fails the trials whose heartbeat went stale.

    Optuna fails them too, before every ``ask()`` (``optuna.storages.fail_stale_trials``), but records no
    reason. With workers on several machines the two paths race, and a trial that Optuna's check failed said
    nothing about why. After this call Optuna's check finds no stale trial; :func:`recover`, which runs before
    every trial as well (``tuning.study.TotalGate``), asks the storage's own query, kept here. Call it after
    :func:`tuning.storage.ride_out_restarts`, so that the kept query rides out a database restart.

    Example:
        >>> take_over_stale_trials(storage)  # doctest: +SKIP
        >>> optuna.storages.fail_stale_trials(study)  # fails nothing now: recover() will  # doctest: +SKIP
    """
    backend = getattr(storage, "_backend", storage)  # Optuna's cache delegates the query to the RDB storage
    if not isinstance(backend, BaseHeartbeat) or hasattr(backend, _STALE_QUERY):
        return
    setattr(backend, _STALE_QUERY, backend._get_stale_trial_ids)
    backend._get_stale_trial_ids = lambda study_id: []


def recover(
    study: optuna.Study,
    *,
    tracking_uri: str | None = None,
    grace_period: int | None = None,
    lock: AbstractContextManager | None = None,
) -> list[int]:
    """Fail every RUNNING trial whose worker is gone, queue each configuration once, end its MLflow run as KILLED.

    Three kinds, each failed with its own reason before the state changes (a finished trial's attributes are
    frozen): a dead local process (at once), a stale heartbeat (any machine), and a trial RUNNING without a
    worker and without a heartbeat for longer than the grace period (its process died between ``ask()`` and
    recording itself). Safe to call from many workers at once: one of them wins each trial.

    ``lock`` is the study's lock (``tuning._gate.StudyLock``), under which workers count the trials and create
    theirs. A dead trial is failed and its retry queued while holding it, so that a worker counting never sees
    the place a dead trial freed without the retry that is to take it (it would start a new trial instead, and
    the study could reach its total with the retry never run).

    Example:
        >>> recover(study, tracking_uri="http://127.0.0.1:5000", grace_period=90)  # doctest: +SKIP
        [7]

    Returns:
        The numbers of the trials this call failed.
    """
    storage = study._storage  # Optuna's cache in front of the RDB storage: both answer the heartbeat calls
    backend = getattr(storage, "_backend", storage)
    grace = grace_period if grace_period is not None else getattr(backend, "grace_period", None)
    stale_ids: set[int] = set()
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None:
        stale_ids = set(getattr(backend, _STALE_QUERY, backend._get_stale_trial_ids)(study._study_id))
    now = datetime.datetime.now()
    dead: list[tuple[FrozenTrial, str]] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(records.WORKER)
        pid = records.dead_local_pid(worker)
        if pid is not None:
            reason = dead_worker_reason(pid)
        elif trial._trial_id in stale_ids:
            reason = heartbeat_reason(int(grace), worker)  # type: ignore[arg-type]
        elif (
            worker is None
            and grace is not None
            and trial.datetime_start is not None
            and (now - trial.datetime_start).total_seconds() > grace
        ):
            reason = NO_WORKER_REASON
        else:
            continue
        dead.append((trial, reason))
    return [t.number for t in _fail_and_queue(study, dead, lock, tracking_uri)]


def _fail_and_queue(
    study: optuna.Study, dead: list[tuple[FrozenTrial, str]], lock: AbstractContextManager | None,
    tracking_uri: str | None,
) -> list[FrozenTrial]:
    """Fail each dead trial with its reason and queue its configuration once, under ``lock``; then end the
    MLflow runs of those this worker failed (outside the lock: a slow tracking server holds up no other
    worker) and say so once. Returns those trials, as they are now in the storage."""
    if not dead:
        return []  # the common case takes no lock
    done: list[tuple[FrozenTrial, int | None]] = []
    with lock if lock is not None else nullcontext():
        for trial, reason in dead:
            failed = _fail(study, trial, reason)
            if failed is not None:
                done.append((failed, _queue_retry(study, failed)))
    for failed, retry in done:
        if tracking_uri:
            end_dead_runs(tracking_uri, [failed])
        log.warning(
            "trial %d was left running by a worker that is gone (%s): recorded as failed%s",
            failed.number,
            failed.user_attrs.get(records.REASON),
            f"; its configuration runs again as trial {retry}" if retry is not None else "",
        )
    return [failed for failed, _ in done]


def _fail(study: optuna.Study, trial: FrozenTrial, reason: str) -> FrozenTrial | None:
    """Record ``reason`` then FAIL the trial; None when another worker failed it first."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, records.REASON, reason)
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return None
    except optuna.exceptions.UpdateFinishedTrialError:
        return None  # another worker failed it a moment ago, and owns its retry
    return storage.get_trial(trial._trial_id)
