"""What an engine is: who picks the configurations of a study's trials.

Every trial, whoever picks its configuration, lives the same life (:class:`tuning.trial.TrialRunner`) inside
Optuna's ``study.optimize`` (:mod:`tuning.study`): the same gate and lock (the study's exact total across
workers), heartbeat, crash recovery and retries, failure guard, signals, tracking and records. An engine only
answers the questions that differ:

- which Optuna sampler and pruner the study uses (:meth:`Engine.sampler`, :meth:`Engine.pruner`);
- whether it has another configuration to offer (:meth:`Engine.has_next`; KerasTuner's Hyperband may finish);
- what one trial trains and how (:meth:`Engine.plan`, a :class:`tuning.trial.TrialPlan`);
- what it learns from a trial that ended (:meth:`Engine.trial_ended`).

Adding an engine is one new module with an :class:`Engine` subclass, its name in
:data:`tuning.engines.BUILT_IN` and in :data:`tuning.schema.ENGINES` (``docs/families.md``, "Add an engine").

Example:
    >>> class RandomEngine(Engine):
    ...     name = "random"
    ...     def sampler(self):
    ...         return optuna.samplers.RandomSampler(seed=self.space.study.seed)
    ...     def plan(self, trial):
    ...         return TrialPlan(self.space.suggest(trial))
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import optuna

from tuning.trial import TrialPlan

if TYPE_CHECKING:
    from tuning.data import Dataset
    from tuning.observers import TrialOutcome
    from tuning.space import SearchSpace
    from tuning.training import BuildFn

__all__ = ["Engine", "TrialPlan"]


class Engine(abc.ABC):
    """Picks the configurations of a study's trials; :class:`tuning.trial.TrialRunner` trains them.

    Args:
        space: the study's search space.
        data: the data set every trial trains on.
        build_fn: the user's own ``build_fn(config) -> keras.Model`` (built-in families), or None.
        hypermodel: the user's KerasTuner hypermodel (``model.family: hypermodel``), or None.
    """

    #: The ``study.engine`` value that selects this engine.
    name: ClassVar[str]

    def __init__(self, space: SearchSpace, data: Dataset, *, build_fn: BuildFn | None = None,
                 hypermodel: Any = None) -> None:
        self.space = space
        self.data = data
        self.build_fn = build_fn
        self.hypermodel = hypermodel

    @classmethod  # noqa: B027 (an optional hook)
    def check(cls, space: SearchSpace, *, n_jobs: int) -> None:
        """Refuse, with a :class:`~tuning.errors.UserInputError`, what this engine cannot do with ``n_jobs``
        threads; called before anything is written."""

    @abc.abstractmethod
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The sampler of the study's ``ask()``: it draws what :meth:`plan` suggests through the trial."""

    def pruner(self) -> optuna.pruners.BasePruner:
        """The pruner the runner asks after each epoch (default: none)."""
        return optuna.pruners.NopPruner()

    def start(self, study: optuna.Study) -> None:  # noqa: B027 (an optional hook)
        """The study exists and its first trial is about to be asked for."""

    def has_next(self) -> bool:
        """Whether there is another configuration to train (asked before each trial; default: always)."""
        return True

    @abc.abstractmethod
    def plan(self, trial: optuna.Trial) -> TrialPlan:
        """What ``trial`` (just created by ``ask()``, maybe a queued retry) trains, and how."""

    def on_pruned(self, trial: optuna.Trial, epoch: int, metric: str, value: float) -> str:
        """The pruner stopped ``trial`` at ``epoch`` (``metric`` was ``value``): the reason recorded on it."""
        return f"pruned by the {self.space.study.pruner['type']} pruner at epoch {epoch} ({metric} {value:.4f})"

    def trial_ended(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:  # noqa: B027 (an optional hook)
        """A planned trial ended; its user attributes hold the outcome, its state is recorded right after."""

    def close(self, finished: bool) -> None:  # noqa: B027 (an optional hook)
        """The study's run is over: ``finished`` when the study reached its total (else interrupted, failed, out
        of time, or other workers still run its last trials)."""
