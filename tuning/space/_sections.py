"""The fixed sections of a space: data, objectives and study settings, as frozen value objects.

Example:
    >>> Objective("val_loss", "minimize").to_dict()
    {'metric': 'val_loss', 'direction': 'minimize'}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tuning import schema as S


@dataclass(frozen=True)
class DataSpec:
    """Which data a study trains on and how it is split (``data:`` section; fixed values only)."""

    dataset: str = "mnist"
    path: str | None = None
    train_size: int | None = None
    validation_split: float = 0.1
    test_size: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The section as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class Objective:
    """One objective: a metric and whether to maximize or minimize it."""

    metric: str
    direction: str

    def to_dict(self) -> dict[str, Any]:
        """The objective as ``{"metric": ..., "direction": ...}``."""
        return {"metric": self.metric, "direction": self.direction}


@dataclass(frozen=True)
class StudySpec:
    """How the study runs (``study:`` section).

    ``sampler`` and ``pruner`` are ``{"type": name, **options}``; ``enqueue`` holds Optuna parameter dicts
    (per-layer lists already expanded to ``model.width.1``, ...), each validated against the space.
    ``engine`` is ``optuna`` or ``keras_tuner``; ``tuner`` is ``{"type": name, **options}`` with every option
    filled in under ``keras_tuner`` and ``None`` under ``optuna`` (whose ``sampler`` and ``pruner`` it replaces).
    """

    name: str = "tuning"
    engine: str = "optuna"
    tuner: dict[str, Any] | None = None
    sampler: dict[str, Any] = field(default_factory=lambda: {"type": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: dict(S.DEFAULT_PRUNER))
    n_trials: int = 20
    timeout: float | None = None
    seed: int | None = 0
    n_jobs: int = 1
    max_consecutive_failures: int = 5
    storage: str | None = None
    test_on: str = "best"  # best | all: which completed trials are evaluated on the test set
    stop_after: dict[str, Any] | None = None  # {"trials", "seconds", "share"}: stop once the best stops improving
    enqueue: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The section as a plain dict (copies of the sampler, pruner, tuner and enqueued dicts).

        Only the chosen engine's keys are written: ``sampler`` and ``pruner``, or ``tuner``.
        """
        engine: dict[str, Any] = (
            {"engine": self.engine, "tuner": dict(self.tuner)} if self.tuner is not None
            else {"sampler": dict(self.sampler), "pruner": dict(self.pruner)}
        )
        return {
            "name": self.name,
            **engine,
            "n_trials": self.n_trials,
            "timeout": self.timeout,
            "seed": self.seed,
            "n_jobs": self.n_jobs,
            "max_consecutive_failures": self.max_consecutive_failures,
            "storage": self.storage,
            "test_on": self.test_on,
            "stop_after": dict(self.stop_after) if self.stop_after else None,
            "enqueue": [dict(e) for e in self.enqueue],
        }
