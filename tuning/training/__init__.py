"""Training one model: build, compile, fit with a per-epoch hook and watchdogs, continue from or leave a checkpoint,
evaluate on the test set; the optimizer and schedule of ``train``; ``train.precision: auto``.

Nothing here knows Optuna: the trial runner (:mod:`tuning.trial`) passes the hooks. Keras is imported when a
model trains, not when this package is imported.

Example:
    >>> from tuning.config import ModelConfig, TrainConfig, TrialConfig
    >>> from tuning.training import train
    >>> cfg = TrialConfig(ModelConfig("mlp", 1, (50,)), TrainConfig(epochs=1))
    >>> train(cfg, dataset, seed=0).state  # doctest: +SKIP
    'complete'
"""

from tuning._keras import import_keras
from tuning.training._fit import as_tensors, release_memory, test_accuracy, train
from tuning.training._optimizer import make_optimizer, stopping_callbacks
from tuning.training._precision import describe as describe_precision
from tuning.training._precision import resolve as resolve_precision
from tuning.training._types import BuildFn, Checkpoint, EpochHook, FitFn, TrainResult

__all__ = [
    "BuildFn",
    "Checkpoint",
    "EpochHook",
    "FitFn",
    "TrainResult",
    "as_tensors",
    "describe_precision",
    "import_keras",
    "make_optimizer",
    "release_memory",
    "resolve_precision",
    "stopping_callbacks",
    "test_accuracy",
    "train",
]
