"""Declarative search spaces: parse and validate YAML or dicts, describe them, sample trial configurations.

A space has five sections (``data``, ``model``, ``train``, ``objective``, ``study``); each searchable key
is a fixed value, a list (a choice) or a range ``{low, high, step?, log?}``, optionally one per layer.
``docs/space.md`` is the full reference.

Example:
    >>> import optuna
    >>> from tuning.space import SearchSpace
    >>> space = SearchSpace.from_dict({
    ...     "model": {"family": "cnn", "depth": {"low": 1, "high": 2}, "width": {"per_layer": [16, 32]}},
    ...     "train": {"epochs": 2, "learning_rate": {"low": "1e-4", "high": "1e-2", "log": True}},
    ... })
    >>> study = optuna.create_study(direction="maximize")
    >>> trial = study.ask()
    >>> config = space.suggest(trial)
    >>> len(config.model.width) == config.model.depth
    True
"""

from tuning.config import Augmentation, ModelConfig, TrainConfig, TrialConfig
from tuning.space._sections import DataSpec, Objective, StudySpec
from tuning.space._space import SearchSpace
from tuning.space._specs import Fixed, PerLayer, Searched
from tuning.space._yaml import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "Augmentation",
    "DataSpec",
    "Fixed",
    "ModelConfig",
    "Objective",
    "PerLayer",
    "SearchSpace",
    "Searched",
    "StudySpec",
    "TrainConfig",
    "TrialConfig",
]
