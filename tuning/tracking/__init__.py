"""Track every trial of a study in MLflow: a parent run per study, a nested run per trial, live.

The study runner constructs :class:`MlflowTracker` when tracking is on (MLflow is imported only then),
calls :meth:`MlflowTracker.check` before any trial runs, and passes it as a
:class:`~tuning.observers.StudyObserver`. Crash recovery ends the runs dead workers left RUNNING
(:func:`end_dead_runs`, :func:`reconcile_runs`, :func:`close_study_run`). See ``docs/tracking.md`` for what each
run holds. Importing this package does not import MLflow.

Example:
    >>> from tuning.tracking import MlflowTracker
    >>> tracker = MlflowTracker("sqlite:///mlruns/mlflow.db", keep_models=False)
    >>> tracker.uri
    'sqlite:///mlruns/mlflow.db'
"""

from __future__ import annotations

from tuning.tracking._runs import close_study_run, end_dead_runs, reconcile_runs
from tuning.tracking._tracker import HTTP_SETTINGS, RUN_STATUS, MlflowTracker
from tuning.tracking._worker import Worker

__all__ = ["HTTP_SETTINGS", "RUN_STATUS", "MlflowTracker", "Worker", "close_study_run", "end_dead_runs",
           "reconcile_runs"]
