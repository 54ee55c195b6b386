"""The Optuna engine (``study.engine: optuna``, the default): Optuna's sampler and pruner pick the configurations.

The sampler and pruner come from ``study.sampler`` and ``study.pruner`` with their options (:func:`make_sampler`,
:func:`make_pruner`); each trial's sampler is seeded from the study seed and the trial number
(:class:`~tuning.engines._sampling.TrialSeededSampler`). Each trial samples its configuration through
``space.suggest(trial)``; a KerasTuner hypermodel's ``hp`` values are drawn through the trial as its build
declares them (:class:`tuning.hypermodel.OptunaHyperParameters`).

Example:
    >>> engine = OptunaEngine(space, dataset)  # doctest: +SKIP
    >>> study = optuna.create_study(sampler=engine.sampler(), pruner=engine.pruner())  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna

from tuning.engines._base import Engine
from tuning.engines._sampling import TrialSeededSampler
from tuning.errors import SpaceError
from tuning.schema import PRUNER_CLASSES, SAMPLER_CLASSES
from tuning.trial import TrialPlan

if TYPE_CHECKING:
    from tuning.space import SearchSpace

__all__ = ["OptunaEngine", "make_pruner", "make_sampler"]


class OptunaEngine(Engine):
    """Optuna's sampler (``study.sampler``) and pruner (``study.pruner``) pick and stop the trials."""

    name = "optuna"

    def sampler(self) -> optuna.samplers.BaseSampler:
        space = self.space
        if space.study.sampler["type"] == "qmc":  # its seed is its scrambling: one for the whole study
            return make_sampler(space, space.study.seed)
        return TrialSeededSampler(lambda seed: make_sampler(space, seed), space.study.seed)

    def pruner(self) -> optuna.pruners.BasePruner:
        return make_pruner(self.space)

    def plan(self, trial: optuna.Trial) -> TrialPlan:
        config = self.space.suggest(trial)
        if self.hypermodel is None:
            return TrialPlan(config, build_fn=self.build_fn)
        from tuning.hypermodel import OptunaHyperParameters

        hp, hypermodel = OptunaHyperParameters(trial), self.hypermodel
        return TrialPlan(
            config,
            build_fn=lambda _config: hypermodel.build(hp),
            fit_fn=lambda model, *args, **kwargs: hypermodel.fit(hp, model, *args, **kwargs),
        )


def make_sampler(space: SearchSpace, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler named in ``study.sampler`` with its options, seeded with ``seed``."""
    spec = dict(space.study.sampler)
    kind = spec.pop("type")
    if kind not in SAMPLER_CLASSES:
        raise SpaceError(
            "study.sampler", "unknown sampler", received=kind, fix=f"use one of {', '.join(SAMPLER_CLASSES)}"
        )
    cls = getattr(optuna.samplers, SAMPLER_CLASSES[kind])
    if kind == "grid":
        spec.setdefault("search_space", space.grid())
    if kind == "gp":
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise SpaceError(
                "study.sampler", "the gp sampler needs PyTorch, which is not installed",
                received="gp", fix="pip install torch, or use tpe",
            ) from exc
    return _construct(cls, spec, "study.sampler", kind, seed=seed)


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    """The pruner named in ``study.pruner`` with its options (``patient`` wraps the pruner in ``wrapped``).

    Epochs are the resource of ``hyperband`` and ``successive_halving``: unless the space sets them, their
    ``max_resource`` is the largest ``train.epochs`` (Optuna's ``"auto"`` would wait for a first trial to train
    every epoch before pruning anything) and ``min_resource`` is 1 epoch.
    """
    return _make_pruner(dict(space.study.pruner), "study.pruner", space.max_epochs())


def _make_pruner(spec: dict[str, Any], path: str, max_epochs: int | None = None) -> optuna.pruners.BasePruner:
    kind = spec.pop("type")
    if kind == "hyperband" and max_epochs:
        spec.setdefault("min_resource", 1)
        spec.setdefault("max_resource", max_epochs)
    if kind == "successive_halving":
        spec.setdefault("min_resource", 1)
    if kind not in PRUNER_CLASSES:
        raise SpaceError(path, "unknown pruner", received=kind, fix=f"use one of {', '.join(PRUNER_CLASSES)}")
    cls = getattr(optuna.pruners, PRUNER_CLASSES[kind])
    if kind == "patient":
        wrapped = spec.pop("wrapped", None)
        if isinstance(wrapped, str):
            wrapped = {"type": wrapped}
        spec["wrapped_pruner"] = _make_pruner(dict(wrapped), f"{path}.wrapped", max_epochs) if wrapped else None
        spec.setdefault("patience", 1)
    return _construct(cls, spec, path, kind)


def _construct(cls: type, options: dict[str, Any], path: str, kind: str, **fixed: Any) -> Any:
    try:
        return cls(**options, **fixed)
    except (TypeError, ValueError) as exc:
        raise SpaceError(
            path, f"the options of {kind} are not accepted by optuna.{cls.__name__} ({exc})",
            received=options, fix=f"see the documentation of optuna {cls.__name__} for its arguments",
        ) from exc
