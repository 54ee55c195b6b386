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
``space``              the resolved search space as a plain dict (what ``SearchSpace.to_dict`` returns)
``objectives``         the objective metric names, in order (``["val_accuracy"]``)
``mlflow_run_id``      the study's parent MLflow run, when tracking is on
``mlflow_experiment``  the MLflow experiment name holding it
=====================  ==========================================================================

Example:
    >>> from tuning import records
    >>> records.TEST_ACCURACY
    'test_accuracy'
"""

from __future__ import annotations

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
SPACE = "space"
OBJECTIVES = "objectives"
MLFLOW_EXPERIMENT = "mlflow_experiment"

# Objective names that are not Keras metrics but measured by the toolkit.
MEASURED_OBJECTIVES = {"params": PARAM_COUNT, "train_seconds": TRAIN_SECONDS}
