"""What the toolkit records on each Optuna trial and study, under which names.

The Optuna storage is the single source of truth: reports read it, tracking mirrors it into MLflow.
These names are the contract between the study runner (which writes them), the tracking module and
the report module (which read them). Parameters themselves are the trial's ``params``, named by their
key path in the space (``model.depth``, ``train.learning_rate``, per layer ``model.width.1``, ...).

Trial user attributes (``trial.user_attrs``):

=====================  ==========================================================================
``epochs``             epochs actually trained (pruned and stopped trials end early)
``train_seconds``      wall time of ``model.fit`` (float seconds)
``param_count``        the model's number of parameters (the ``params`` objective)
``history``            per-epoch metrics: ``{"loss": [...], "val_accuracy": [...], ...}``
``test_accuracy``      accuracy on the held-out test set: completed trials that led the study when they
                       finished (``study.test_on: best``, see :func:`leads`), or every one (``all``)
``reason``             why a trial was pruned or failed, in one sentence
``mlflow_run_id``      the MLflow run of this trial, when tracking is on
``seed``               the seed this trial's training used
``precision``          the Keras dtype policy it trained with (``train.precision: auto`` resolved)
``sampler_seed``       the seed of the sampler that drew this trial's parameters (study seed + trial number)
``worker``             ``host:pid`` of the process that ran the trial (:func:`worker_id`; crash recovery reads it)
``device``             the GPU a ``--gpus`` worker ran the trial on (``CUDA_VISIBLE_DEVICES``), if any
``retry_of``           on a trial that runs a failed trial's configuration again: that trial's number
``keras_tuner_trial``  under ``study.engine: keras_tuner``: KerasTuner's view of the trial (its id; Hyperband's
                       bracket, round, epochs and the trial it continues)
``continues``          under successive halving or Hyperband with promotions: the paused trial this one continues
                       from its checkpoint
``bracket``            the same: the Hyperband bracket of the trial's configuration (0 for successive halving)
``paused_at``          the same: the epoch (a rung) at which the trial stopped, its checkpoint kept to continue
=====================  ==========================================================================

Trial system attributes (shared with Optuna's ``RetryFailedTrialCallback``): ``failed_trial`` (the first trial
of a chain of retries) and ``retry_history`` (the numbers of the trials it retries).

Study user attributes (``study.user_attrs``):

=====================  ==========================================================================
``space_hash``         12 hex digits identifying the space's data, model, train and objective sections
``objectives``         the objective metric names, in order (``["val_accuracy"]``)
``mlflow_run_id``      the study's parent MLflow run, when tracking is on
``mlflow_experiment``  the MLflow experiment name holding it
``mlflow_best_model``  ``models:/<id>``: the best trial's MLflow model (``mlflow.pyfunc.load_model``)
``mlflow_registered``  ``models:/NAME/VERSION``: the registry version the last ``--register-model`` created
=====================  ==========================================================================

Study system attributes (``storage.get_study_system_attrs``), kept out of ``optuna studies`` rows:

=====================  ==========================================================================
``tuning:space``       the resolved search space as a plain dict (``SearchSpace.to_dict``), its storage
                       URL's password masked: read it with :func:`study_space`
=====================  ==========================================================================

The objective names are also Optuna's own metric names (``study.metric_names``), which optuna-dashboard and
the ``optuna`` command show.

Example:
    >>> from tuning import records
    >>> records.TEST_ACCURACY
    'test_accuracy'
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# How a trial ended (or stands), in every table, tag and line the toolkit writes.
COMPLETE = "complete"
PRUNED = "pruned"
FAILED = "failed"
INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: recorded in Optuna as a failed trial with this reason
RUNNING = "running"
WAITING = "waiting"  # enqueued, not started
#: Optuna's ``TrialState`` names to the toolkit's state names.
OPTUNA_STATES = {"COMPLETE": COMPLETE, "PRUNED": PRUNED, "FAIL": FAILED, "RUNNING": RUNNING, "WAITING": WAITING}

# Trial user attributes.
EPOCHS = "epochs"
TRAIN_SECONDS = "train_seconds"
PARAM_COUNT = "param_count"
HISTORY = "history"
TEST_ACCURACY = "test_accuracy"
REASON = "reason"
MLFLOW_RUN_ID = "mlflow_run_id"
SEED = "seed"
PRECISION = "precision"
SAMPLER_SEED = "sampler_seed"
WORKER = "worker"
DEVICE = "device"
RETRY_OF = "retry_of"
KT_TRIAL = "keras_tuner_trial"
CONTINUES = "continues"
BRACKET = "bracket"
PAUSED_AT = "paused_at"

# Trial system attributes, named as Optuna's RetryFailedTrialCallback names them.
FAILED_TRIAL = "failed_trial"
RETRY_HISTORY = "retry_history"

# Study user attributes.
SPACE_HASH = "space_hash"
OBJECTIVES = "objectives"
MLFLOW_EXPERIMENT = "mlflow_experiment"
MLFLOW_BEST_MODEL = "mlflow_best_model"
MLFLOW_REGISTERED = "mlflow_registered"

# Study system attributes.
SPACE_SYSTEM_ATTR = "tuning:space"
#: Where studies created before the space moved to a system attribute keep it (a user attribute).
SPACE = "space"
#: The sections a resumed study must keep unchanged; ``space_hash`` covers exactly these.
SPACE_SECTIONS = ("data", "model", "train", "objective")

# Objective names that are not Keras metrics but measured by the toolkit.
MEASURED_OBJECTIVES = {"params": PARAM_COUNT, "train_seconds": TRAIN_SECONDS}


def host_name() -> str:
    """This machine's name in worker ids: ``$TUNING_HOST`` when set (containers sharing a host name), else the
    host name. Two machines must not share it: a dead pid on one would be read as the other's.

    Example:
        >>> host_name() == (os.environ.get("TUNING_HOST") or socket.gethostname())
        True
    """
    return os.environ.get("TUNING_HOST") or socket.gethostname()


def worker_id() -> str:
    """``host:pid`` of this process, recorded on each trial (:data:`WORKER`) so a crashed worker's trials can be
    recognised.

    Example:
        >>> worker_id().endswith(f":{os.getpid()}")
        True
    """
    return f"{host_name()}:{os.getpid()}"


def dead_local_pid(worker: Any) -> int | None:
    """The pid in a ``worker`` attribute (``host:pid``) when it names this host and a process that no longer
    exists (a zombie counts as dead); None otherwise (another host, a live process, this process, no worker).

    Example:
        >>> dead_local_pid(worker_id()) is None  # this very process
        True
    """
    if not isinstance(worker, str) or ":" not in worker:
        return None
    worker_host, _, pid_text = worker.rpartition(":")
    if worker_host != host_name() or not pid_text.isdigit():
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


def state_name(trial: Any) -> str:
    """The toolkit's name of a trial's Optuna state: ``complete``, ``pruned``, ``failed``, ``running``, ``waiting``.

    Example:
        >>> import optuna
        >>> state_name(optuna.trial.create_trial(value=1.0))
        'complete'
    """
    return OPTUNA_STATES.get(trial.state.name, trial.state.name.lower())


def study_space(study: Any) -> dict[str, Any] | None:
    """The resolved space a study was created with (as ``SearchSpace.to_dict`` returned it), or None.

    Example:
        >>> import optuna
        >>> study_space(optuna.create_study()) is None
        True
    """
    stored = study._storage.get_study_system_attrs(study._study_id).get(SPACE_SYSTEM_ATTR)
    return stored if stored is not None else study.user_attrs.get(SPACE)


def space_hash(space: Mapping[str, Any]) -> str:
    """A short, stable digest of a resolved space's ``data``, ``model``, ``train`` and ``objective`` sections.

    Example:
        >>> space_hash({"data": {}, "model": {"family": "mlp"}}) == space_hash({"model": {"family": "mlp"}, "data": {}})
        True
    """
    sections = {k: space.get(k) for k in SPACE_SECTIONS}
    text = json.dumps(sections, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def without_password(space: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a resolved space whose ``study.storage`` URL has its password masked (never stored).

    Example:
        >>> without_password({"study": {"storage": "postgresql://u:secret@db/optuna"}})["study"]["storage"]
        'postgresql://u:***@db/optuna'
    """
    from tuning.redact import redact_url

    copy = {k: dict(v) if isinstance(v, Mapping) else v for k, v in space.items()}
    study = copy.get("study")
    if isinstance(study, dict) and isinstance(study.get("storage"), str):
        study["storage"] = redact_url(study["storage"])
    return copy


def improves(value: float | None, best: float | None, maximize: bool) -> bool:
    """Whether ``value`` beats ``best`` (None or NaN: nothing yet) in the objective's direction.

    Example:
        >>> improves(0.9, 0.8, maximize=True), improves(0.9, 0.8, maximize=False), improves(0.5, None, True)
        (True, False, True)
    """
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best if maximize else value < best


def best_so_far(values: Iterable[float | None], maximize: bool) -> list[float]:
    """The running best of ``values`` (one objective, trials in order; None or NaN for trials without a value).

    Entries before the first value are NaN. The one definition the runner, tracking, progress display and
    reports share.

    Example:
        >>> best_so_far([None, 0.5, 0.4, 0.7, float("nan")], maximize=True)
        [nan, 0.5, 0.5, 0.7, 0.7]
    """
    running: list[float] = []
    best = math.nan
    for value in values:
        if improves(value, best, maximize):
            best = float(value)  # type: ignore[arg-type]
        running.append(best)
    return running


def leads(values: Sequence[float], others: Iterable[Sequence[float] | None], directions: Sequence[str]) -> bool:
    """Whether a trial's objective ``values`` lead the ``others`` (the values of earlier complete trials).

    With one objective: it beats their best (:func:`improves`; a tie does not lead, as the best model kept is
    the first of equals). With several: none of them dominates it (at least as good in every objective and
    better in one). The runner evaluates the test set for the trials that lead (``study.test_on: best``).

    Example:
        >>> leads([0.9], [[0.8], [0.85]], ["maximize"]), leads([0.9], [[0.9]], ["maximize"])
        (True, False)
        >>> leads([0.9, 500.0], [[0.95, 400.0], [0.8, 100.0]], ["maximize", "minimize"])
        False
    """
    maximize = [d == "maximize" for d in directions]
    earlier = [list(v) for v in others if v is not None]
    if len(values) == 1:
        best = best_so_far((v[0] for v in earlier), maximize[0])
        return improves(values[0], best[-1] if best else None, maximize[0])

    def better_or_equal(a: float, b: float, up: bool) -> bool:
        return a >= b if up else a <= b

    def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
        return all(better_or_equal(x, y, up) for x, y, up in zip(a, b, maximize, strict=True)) and any(
            x != y for x, y in zip(a, b, strict=True)
        )

    return not any(dominates(other, values) for other in earlier)
