"""The MLflow tags the toolkit writes on its runs (MLflow's own ``mlflow.*`` tags aside): one home for their
names, read by the tracker, crash recovery and anyone searching runs (``tags.`tuning.state` = 'pruned'``).

Importing this module imports nothing else.

Example:
    >>> from tuning.tracking.tags import TAG_STATE
    >>> f"tags.`{TAG_STATE}` = 'pruned'"
    "tags.`tuning.state` = 'pruned'"
"""

from __future__ import annotations

TAG_ROLE = "tuning.role"  # "study" on the parent run, "trial" on a trial's run
TAG_STUDY = "optuna.study_name"
TAG_TRIAL = "optuna.trial_number"
TAG_STATE = "tuning.state"  # running | complete | pruned | failed | interrupted (tuning.records)
TAG_REASON = "tuning.reason"
TAG_SEED = "tuning.seed"
TAG_STORAGE = "tuning.storage"  # the Optuna storage URL, absolute, password masked
TAG_OBJECTIVES = "tuning.objectives"
TAG_BEST_TRIAL = "tuning.best_trial"
TAG_BEST_VALUE = "tuning.best_value"
TAG_BEST_RUN = "tuning.best_run_id"
TAG_BEST_MODEL = "tuning.best_model_id"  # the MLflow logged model (``models:/<id>``) of the best trial
PARENT_TAG = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"  # MLflow's own: the run's name in the UI's run list

__all__ = [
    "PARENT_TAG", "TAG_BEST_MODEL", "TAG_BEST_RUN", "TAG_BEST_TRIAL", "TAG_BEST_VALUE", "TAG_OBJECTIVES",
    "TAG_REASON", "TAG_ROLE", "TAG_RUN_NAME", "TAG_SEED", "TAG_STATE", "TAG_STORAGE", "TAG_STUDY", "TAG_TRIAL",
    "trial_run_name",
]


def trial_run_name(number: int, state: str | None = None) -> str:
    """The name of a trial's run in MLflow's run list: ``trial-7`` while it runs and once complete, and with
    any other end its state, so that a pruned run (FINISHED, like a complete one) tells apart at a glance.

    Example:
        >>> trial_run_name(7), trial_run_name(7, "complete"), trial_run_name(7, "pruned")
        ('trial-7', 'trial-7', 'trial-7 (pruned)')
        >>> trial_run_name(8, "failed"), trial_run_name(9, "interrupted")
        ('trial-8 (failed)', 'trial-9 (interrupted)')
    """
    name = f"trial-{number}"
    return name if state in (None, "running", "complete") else f"{name} ({state})"
