"""The MLflow runs the trials of dead workers left RUNNING: ended with their trial's state, from any process.

A worker killed in the middle of a trial (SIGKILL, a lost machine) leaves its trial's run RUNNING; crash
recovery (:mod:`tuning.study`) fails the trial and calls :func:`end_dead_runs`. A worker killed right after a
trial finished in the storage leaves the run RUNNING too: :func:`reconcile_runs` gives it the trial's final
state. :func:`close_study_run` ends the study's parent run once the last worker has stopped.

Example:
    >>> end_dead_runs("sqlite:///mlruns/mlflow.db", recovered_trials)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import logging
import os
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuning import records
from tuning.tracking.tags import TAG_REASON, TAG_ROLE, TAG_RUN_NAME, TAG_STATE, TAG_STUDY, TAG_TRIAL, trial_run_name

__all__ = ["close_study_run", "end_dead_runs", "reconcile_runs"]

log = logging.getLogger("tuning")

def end_dead_runs(tracking_uri: str, trials: list[FrozenTrial]) -> None:
    """End the MLflow runs of recovered trials as KILLED with their reason (they were left RUNNING).

    Example:
        >>> end_dead_runs("sqlite:///mlruns/mlflow.db", recovered_trials)  # doctest: +SKIP
    """
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    client = MlflowClient(tracking_uri=tracking_uri)
    for trial in trials:
        run_id = trial.user_attrs.get(records.MLFLOW_RUN_ID)
        if not run_id:
            continue
        try:
            client.log_batch(run_id, tags=[
                RunTag(TAG_STATE, records.FAILED), RunTag(TAG_RUN_NAME, trial_run_name(trial.number, records.FAILED)),
                RunTag(TAG_REASON, str(trial.user_attrs.get(records.REASON, "its worker is gone")))])
            client.set_terminated(run_id, "KILLED")
        except Exception as exc:  # the storage is what counts; a run we cannot close is only reported
            log.warning("cannot end the MLflow run %s of trial %d: %s", run_id, trial.number, exc)


def reconcile_runs(tracking_uri: str, study: optuna.Study, *, grace_period: int) -> list[int]:
    """Give every RUNNING MLflow trial run of a finished trial that trial's terminal status and final values.

    A worker killed right after a trial finished in the storage leaves its run RUNNING (its tracking thread
    died with it). A run is only touched when its trial finished more than ``grace_period`` seconds ago or its
    worker is a dead process on this host, so a live worker still closing its own run is left alone.

    Example:
        >>> reconcile_runs("http://127.0.0.1:5000", study, grace_period=90)  # doctest: +SKIP
        [4]

    Returns:
        The numbers of the trials whose run this call ended.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(study.user_attrs.get(records.MLFLOW_EXPERIMENT) or study.study_name)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG_ROLE}` = 'trial' "
        f"and tags.`{TAG_STUDY}` = '{study.study_name}'",
        max_results=5000,
    )
    if not runs:
        return []
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    objectives = study.user_attrs.get(records.OBJECTIVES) or ["value"]
    now = datetime.datetime.now()
    ended = []
    for run in runs:
        number = run.data.tags.get(TAG_TRIAL, "")
        trial = trials.get(int(number)) if number.isdigit() else None
        if trial is None or not trial.state.is_finished() or trial.datetime_complete is None:
            continue
        old = (now - trial.datetime_complete).total_seconds() > grace_period
        if not old and records.dead_local_pid(trial.user_attrs.get(records.WORKER)) is None:
            continue
        state, status = _run_outcome(trial)
        stamp = int(time.time() * 1000)
        finals = {f"final.{m}": v for m, v in zip(objectives, trial.values or [], strict=False)}
        for attr in (records.TEST_ACCURACY, records.PARAM_COUNT, records.TRAIN_SECONDS, records.EPOCHS):
            value = trial.user_attrs.get(attr)
            if isinstance(value, int | float) and not isinstance(value, bool):
                finals[f"final.{attr}"] = float(value)
        metrics = [Metric(k, float(v), stamp, 0) for k, v in finals.items() if k not in run.data.metrics]
        tags = [RunTag(TAG_STATE, state), RunTag(TAG_RUN_NAME, trial_run_name(trial.number, state))]
        if trial.user_attrs.get(records.REASON):
            tags.append(RunTag(TAG_REASON, str(trial.user_attrs[records.REASON])))
        try:
            client.log_batch(run.info.run_id, metrics=metrics, tags=tags)
            client.set_terminated(run.info.run_id, status)
        except Exception as exc:
            log.warning("cannot end the MLflow run %s of trial %d: %s", run.info.run_id, trial.number, exc)
            continue
        ended.append(trial.number)
    if ended:
        log.warning("ended the MLflow runs of finished trials %s, left RUNNING by a worker that died", ended)
    return ended


def close_study_run(tracking_uri: str, study: optuna.Study, total: int) -> None:
    """End the study's parent MLflow run once no trial runs any more: FINISHED when the total is reached.

    Called after the last worker of ``tuning run --workers`` has exited; a worker ending while others still
    run trials leaves the parent run RUNNING for them.

    Example:
        >>> close_study_run("http://127.0.0.1:5000", study, total=30)  # doctest: +SKIP
    """
    run_id = study.user_attrs.get(records.MLFLOW_RUN_ID)
    trials = study.get_trials(deepcopy=False)
    if not run_id or any(t.state == TrialState.RUNNING for t in trials):
        return
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            client.set_terminated(run_id, "FINISHED" if done >= total else "KILLED")
    except Exception as exc:
        log.warning("cannot end the study's MLflow run %s: %s", run_id, exc)


def _run_outcome(trial: FrozenTrial) -> tuple[str, str]:
    """``(tuning.state tag, MLflow status)`` of a finished trial's run."""
    if trial.state == TrialState.COMPLETE:
        return records.COMPLETE, "FINISHED"
    if trial.state == TrialState.PRUNED:
        return records.PRUNED, "FINISHED"
    reason = str(trial.user_attrs.get(records.REASON, ""))
    interrupted = reason == records.INTERRUPTED
    killed = interrupted or reason.startswith(("the worker process", "no heartbeat", "its worker"))
    return (records.INTERRUPTED if interrupted else records.FAILED), ("KILLED" if killed else "FAILED")
