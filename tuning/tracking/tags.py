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

__all__ = [
    "PARENT_TAG", "TAG_BEST_MODEL", "TAG_BEST_RUN", "TAG_BEST_TRIAL", "TAG_BEST_VALUE", "TAG_OBJECTIVES",
    "TAG_REASON", "TAG_ROLE", "TAG_SEED", "TAG_STATE", "TAG_STORAGE", "TAG_STUDY", "TAG_TRIAL",
]
