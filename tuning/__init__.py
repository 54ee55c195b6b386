"""tuning: declarative search spaces → Optuna studies → Keras models, with MLflow tracking and reports.

Example:
    >>> import tuning
    >>> space = tuning.SearchSpace.from_yaml("search_spaces/mnist_quick.yaml")  # doctest: +SKIP
    >>> study = tuning.run(space, n_trials=5)  # doctest: +SKIP
    >>> study.best_params  # doctest: +SKIP

Importing this package is cheap: TensorFlow, Keras and MLflow load only when a study trains or tracks.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is noise for users; keep real errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
__all__ = ["SearchSpace", "TrialConfig", "run", "errors", "records", "report", "StudyObserver", "TrialOutcome"]

_LAZY = {
    "SearchSpace": ("tuning.space", "SearchSpace"),
    "TrialConfig": ("tuning.space", "TrialConfig"),
    "run": ("tuning.study", "run"),
    "StudyObserver": ("tuning.observers", "StudyObserver"),
    "TrialOutcome": ("tuning.observers", "TrialOutcome"),
    "errors": ("tuning.errors", None),
    "records": ("tuning.records", None),
    "report": ("tuning.report", None),
}

if TYPE_CHECKING:
    from tuning import errors, records, report
    from tuning.observers import StudyObserver, TrialOutcome
    from tuning.space import SearchSpace, TrialConfig
    from tuning.study import run


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tuning' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value
