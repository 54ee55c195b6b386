"""Running a study: ``tuning.run``, the study in its storage, its exact total across workers, crash recovery,
worker processes, and the best model kept without tracking.

- :func:`run` (``tuning.run``): a space in, a finished or resumed Optuna study out;
- :func:`create_or_load`, :func:`open_storage`, :func:`list_studies`: the study in its storage;
- :class:`TotalGate`, :class:`StudyLock`: start a trial only while the study's total leaves room, one worker at a
  time (Optuna callbacks, usable with your own ``study.optimize``);
- :func:`recover`, :func:`recover_dead_workers`, :func:`take_over_stale_trials`: fail the trials of dead workers
  with their reason and run each configuration again once;
- :func:`parse_gpus`, :func:`worker_plan`, :func:`run_workers`: ``tuning run --workers N`` / ``--gpus``;
- :func:`best_model_path`: where an untracked study's best model is.

Example:
    >>> from tuning.study import run
    >>> study = run("search_spaces/mnist_quick.yaml", n_trials=3)  # doctest: +SKIP
"""

from tuning.study._best_model import BestModelKeeper, best_model_path
from tuning.study._create import GRACE_PERIOD, HEARTBEAT_INTERVAL, create_or_load, list_studies, open_storage
from tuning.study._gate import COUNTED_STATES, StudyLock, TotalGate
from tuning.study._recovery import (
    MAX_RETRY,
    NO_WORKER_REASON,
    dead_worker_reason,
    heartbeat_reason,
    recover,
    recover_dead_workers,
    take_over_stale_trials,
)
from tuning.study._run import run
from tuning.study._workers import parse_gpus, run_workers, worker_argv, worker_plan

__all__ = [
    "COUNTED_STATES",
    "GRACE_PERIOD",
    "HEARTBEAT_INTERVAL",
    "MAX_RETRY",
    "NO_WORKER_REASON",
    "BestModelKeeper",
    "StudyLock",
    "TotalGate",
    "best_model_path",
    "create_or_load",
    "dead_worker_reason",
    "heartbeat_reason",
    "list_studies",
    "open_storage",
    "parse_gpus",
    "recover",
    "recover_dead_workers",
    "run",
    "run_workers",
    "take_over_stale_trials",
    "worker_argv",
    "worker_plan",
]
