"""Crash recovery: trials left RUNNING by a worker process that died are failed and re-run once.

Two paths find such trials; both fail the trial, record why, and queue its configuration again at most once:

1. **At the start of every run** (:func:`recover_dead_workers`, called by ``tuning.run`` right after the study
   is loaded): a RUNNING trial whose ``worker`` user attribute (``host:pid``, set by the runner) names this
   host and a process that no longer exists is failed at once, with the reason
   ``"the worker process <pid> died (killed or crashed)"``. A user who restarts a killed study straight away
   sees no stale RUNNING trial.
2. **Optuna's heartbeats** (RDB storages only): a trial whose heartbeat is older than the grace period
   (``tuning._study.GRACE_PERIOD``, 90 s; beats every ``HEARTBEAT_INTERVAL``, 30 s) is failed by
   ``optuna.storages.fail_stale_trials`` before each new trial, and
   ``optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)`` queues it again. This path covers
   workers on other hosts, whose processes this one cannot see.

Both paths use the same record of retries, the system attributes of Optuna's retry callback
(``failed_trial``: the first trial of the series, ``retry_history``: every trial number before this one), so a
trial is retried by one path only and a retry that dies too is not retried again. Only the process whose
state change succeeds (Optuna raises ``UpdateFinishedTrialError`` for the others) queues the retry.

Example:
    >>> study = optuna.load_study(study_name="mnist_quick", storage=storage)  # doctest: +SKIP
    >>> [t.number for t in recover_dead_workers(study)]  # doctest: +SKIP
    [7]
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuning import records

__all__ = ["FAILED_TRIAL", "RETRY_HISTORY", "RETRY_OF", "dead_worker_reason", "end_dead_runs", "recover_dead_workers"]

log = logging.getLogger("tuning")

#: User attribute on a queued retry: the number of the trial whose configuration it runs again.
RETRY_OF = "retry_of"
#: System attributes of ``optuna.storages.RetryHeartbeatStaleTrialCallback``, shared by both recovery paths.
FAILED_TRIAL = "failed_trial"
RETRY_HISTORY = "retry_history"
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
    storage = study._storage
    host = socket.gethostname()
    recovered: list[FrozenTrial] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = _dead_local_pid(trial.user_attrs.get(records.WORKER), host)
        if pid is None:
            continue
        try:
            # The reason goes first: a finished trial's attributes cannot change any more.
            storage.set_trial_user_attr(trial._trial_id, records.REASON, dead_worker_reason(pid))
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker (or the heartbeat) failed it a moment ago, and owns its retry
        failed = storage.get_trial(trial._trial_id)
        recovered.append(failed)
        retry = _queue_retry(study, failed)
        log.warning(
            "trial %d was left running by process %d, which died: recorded as failed%s",
            failed.number,
            pid,
            f"; its configuration runs again as trial {retry}" if retry is not None else "",
        )
    return recovered


def _dead_local_pid(worker: Any, host: str) -> int | None:
    """The pid in ``worker`` (``host:pid``) when it names this host and a process that no longer exists."""
    if not isinstance(worker, str) or ":" not in worker:
        return None
    worker_host, _, pid_text = worker.rpartition(":")
    if worker_host != host or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if pid == os.getpid() or _alive(pid):
        return None
    return pid


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie, already dead but not reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True  # no /proc (macOS): trust kill()


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


def end_dead_runs(tracking_uri: str, trials: list[FrozenTrial]) -> None:
    """End the MLflow runs of recovered trials as FAILED with their reason (they were left RUNNING).

    Example:
        >>> end_dead_runs("sqlite:///mlruns/mlflow.db", recover_dead_workers(study))  # doctest: +SKIP
    """
    from mlflow import MlflowClient

    from tuning.tracking.tags import TAG_REASON, TAG_STATE

    client = MlflowClient(tracking_uri=tracking_uri)
    for trial in trials:
        run_id = trial.user_attrs.get(records.MLFLOW_RUN_ID)
        if not run_id:
            continue
        try:
            client.set_tag(run_id, TAG_STATE, "failed")
            client.set_tag(run_id, TAG_REASON, str(trial.user_attrs.get(records.REASON, "")))
            client.set_terminated(run_id, "FAILED")
        except Exception as exc:  # the storage is what counts; a run we cannot close is only reported
            log.warning("cannot end the MLflow run %s of trial %d: %s", run_id, trial.number, exc)
