"""Engines: who picks the configurations of a study's trials (``study.engine``).

- ``optuna`` (:class:`OptunaEngine`, the default): Optuna's sampler and pruner (``study.sampler``,
  ``study.pruner``).
- ``keras_tuner`` (``tuning.engines._keras_tuner.KerasTunerEngine``): KerasTuner's Hyperband, RandomSearch or
  BayesianOptimization (``study.tuner``); its module imports KerasTuner and TensorFlow, so it loads only when a
  study uses it.

Every engine implements :class:`Engine`; every trial, whichever engine planned it, runs through the same
:class:`tuning.trial.TrialRunner`. Adding one: ``docs/families.md`` ("Add an engine").

Example:
    >>> from tuning import engines
    >>> engines.get("optuna").__name__
    'OptunaEngine'
"""

from __future__ import annotations

import importlib

from tuning.engines._base import Engine, TrialPlan
from tuning.engines._optuna import OptunaEngine, make_pruner, make_sampler
from tuning.engines._sampling import TrialSeededSampler, sampler_seed

__all__ = ["BUILT_IN", "Engine", "OptunaEngine", "TrialPlan", "TrialSeededSampler", "get", "make_pruner",
           "make_sampler", "sampler_seed"]

#: ``study.engine`` value → ``module:class`` of its engine (:data:`tuning.schema.ENGINES` lists the same names).
BUILT_IN = {
    "optuna": "tuning.engines._optuna:OptunaEngine",
    "keras_tuner": "tuning.engines._keras_tuner:KerasTunerEngine",
}


def get(name: str) -> type[Engine]:
    """The engine class of ``study.engine: name`` (its module is imported now); :class:`KeyError` if unknown."""
    module, _, cls = BUILT_IN[name].partition(":")
    return getattr(importlib.import_module(module), cls)
