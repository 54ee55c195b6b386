"""Hooks into a running study: the runner calls them, side effects (tracking, progress) live in observers.

Like ``keras.callbacks.Callback``, :class:`StudyObserver` has no-op hooks and a subclass overrides only
the ones it needs. The runner calls them in this order::

    study_started  →  (trial_started → epoch_ended × epochs → trial_finished) × trials  →  [stopped_early]
                   →  study_finished

Hooks run in the thread that runs the trial: with ``n_jobs > 1`` several trials call them at once, so
an observer keeps per-trial state keyed by ``trial.number``. An exception raised by an observer is
logged and does not fail the trial.

Example:
    >>> class Printer(StudyObserver):
    ...     def trial_finished(self, trial, outcome):
    ...         print(trial.number, outcome.state, outcome.values)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuning.records import COMPLETE, FAILED, INTERRUPTED, PRUNED  # noqa: F401  (an outcome's states, re-exported)

if TYPE_CHECKING:
    import optuna

    from tuning.config import TrialConfig
    from tuning.space import SearchSpace

log = logging.getLogger(__name__)


@dataclass
class TrialOutcome:
    """How a trial ended, as the runner knows it just before Optuna records it.

    ``state`` is ``"complete"``, ``"pruned"``, ``"failed"`` or ``"interrupted"`` (Ctrl-C or SIGTERM: the
    trial is recorded as failed with reason "interrupted"). ``model`` is the trained Keras model for a
    complete trial (``None`` otherwise, or when the model could not be built).
    """

    state: str
    values: Sequence[float] | None = None
    reason: str | None = None
    model: Any = None
    history: Mapping[str, list[float]] = field(default_factory=dict)
    user_attrs: Mapping[str, Any] = field(default_factory=dict)


class StudyObserver:
    """Base class of the runner's hooks; every hook does nothing unless overridden."""

    def study_started(self, study: optuna.Study, space: SearchSpace) -> None:
        """The study is created or loaded and about to run trials."""

    def trial_started(self, trial: optuna.Trial, config: TrialConfig) -> None:
        """The trial's parameters are sampled (``trial.params``); building and training start now."""

    def epoch_ended(self, trial: optuna.Trial, epoch: int, logs: Mapping[str, float]) -> None:
        """An epoch ended; ``epoch`` counts from 1, ``logs`` holds Keras's metrics and ``epoch_seconds``."""

    def trial_finished(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        """The trial ended (see :class:`TrialOutcome`); its user attributes are already set."""

    def stopped_early(self, study: optuna.Study, reason: str) -> None:
        """The study stops before its total: its best value stopped improving (``study.stop_after``)."""

    def study_finished(self, study: optuna.Study, interrupted: bool) -> None:
        """The run is over: all requested trials done, the timeout reached, or interrupted."""


class ObserverList(StudyObserver):
    """Calls every observer in turn; one observer's exception is logged, not raised."""

    def __init__(self, observers: Sequence[StudyObserver]) -> None:
        self.observers = list(observers)

    def _each(self, hook: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, hook)(*args)
            except Exception:  # an observer must never fail a trial
                log.exception("%s.%s failed", type(observer).__name__, hook)

    def study_started(self, study: optuna.Study, space: SearchSpace) -> None:
        self._each("study_started", study, space)

    def trial_started(self, trial: optuna.Trial, config: TrialConfig) -> None:
        self._each("trial_started", trial, config)

    def epoch_ended(self, trial: optuna.Trial, epoch: int, logs: Mapping[str, float]) -> None:
        self._each("epoch_ended", trial, epoch, logs)

    def trial_finished(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        self._each("trial_finished", trial, outcome)

    def stopped_early(self, study: optuna.Study, reason: str) -> None:
        self._each("stopped_early", study, reason)

    def study_finished(self, study: optuna.Study, interrupted: bool) -> None:
        self._each("study_finished", study, interrupted)
