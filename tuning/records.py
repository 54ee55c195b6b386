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
``test_accuracy``      accuracy on the held-out test set, completed trials only
``reason``             why a trial was pruned or failed, in one sentence
``mlflow_run_id``      the MLflow run of this trial, when tracking is on
``seed``               the seed this trial's training used
``precision``          the Keras dtype policy it trained with (``train.precision: auto`` resolved)
=====================  ==========================================================================

Study user attributes (``study.user_attrs``):

=====================  ==========================================================================
``space_hash``         12 hex digits identifying the space's data, model, train and objective sections
``objectives``         the objective metric names, in order (``["val_accuracy"]``)
``mlflow_run_id``      the study's parent MLflow run, when tracking is on
``mlflow_experiment``  the MLflow experiment name holding it
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
from collections.abc import Mapping
from typing import Any

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
WORKER = "worker"

# Study user attributes.
SPACE_HASH = "space_hash"
OBJECTIVES = "objectives"
MLFLOW_EXPERIMENT = "mlflow_experiment"

# Study system attributes.
SPACE_SYSTEM_ATTR = "tuning:space"
#: Where studies created before the space moved to a system attribute keep it (a user attribute).
SPACE = "space"
#: The sections a resumed study must keep unchanged; ``space_hash`` covers exactly these.
SPACE_SECTIONS = ("data", "model", "train", "objective")

# Objective names that are not Keras metrics but measured by the toolkit.
MEASURED_OBJECTIVES = {"params": PARAM_COUNT, "train_seconds": TRAIN_SECONDS}


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
    from tuning._redact import redact_url

    copy = {k: dict(v) if isinstance(v, Mapping) else v for k, v in space.items()}
    study = copy.get("study")
    if isinstance(study, dict) and isinstance(study.get("storage"), str):
        study["storage"] = redact_url(study["storage"])
    return copy
