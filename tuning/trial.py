"""One trial's life, the same whichever engine picked its configuration.

An engine (:mod:`tuning.engines`) decides *what* a trial trains and hands it over as a :class:`TrialPlan`; the
:class:`TrialRunner` decides *how* a trial lives, for every engine alike::

    start     seed, worker and device recorded on the trial; the observers' trial_started (MLflow run, progress)
    epochs    each epoch: the observers' epoch_ended, the value reported to the pruner, pruning, the study's
              time budget, Ctrl-C and SIGTERM (tuning._signals), the watchdogs of tuning.training
    finish    user attributes (tuning.records), the test set for a trial that leads the study (study.test_on),
              the observers' trial_finished, then Optuna records the state; the engine's trial_ended
    failure   a trial that raises fails with one sentence (:func:`describe_failure`); an interrupted one is
              queued again (it runs first on resume); :class:`FailureGuard` stops the study after too many
              failures in a row

The runner is the objective of ``study.optimize`` (``tuning.study``), so every trial also gets Optuna's heartbeat,
the study's gate and lock (its exact total across workers) and crash recovery.

Example:
    >>> runner = TrialRunner(space, dataset, observers, engine)  # doctest: +SKIP
    >>> study.optimize(runner, n_trials=3)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.trial import TrialState

from tuning import _signals, records
from tuning.errors import ConfigurationError, NotLearningError
from tuning.observers import COMPLETE, FAILED, INTERRUPTED, PRUNED, StudyObserver, TrialOutcome
from tuning.training import BuildFn, Checkpoint, EpochHook, FitFn, test_accuracy, train

if TYPE_CHECKING:
    from tuning.config import TrialConfig
    from tuning.data import Dataset
    from tuning.space import SearchSpace

__all__ = ["FailureGuard", "Planner", "TrialPlan", "TrialRunner", "describe_failure", "trial_seed", "worth_testing"]


@dataclass
class TrialPlan:
    """What one trial trains, as its engine planned it.

    Args:
        config: the trial's configuration (its ``train.epochs`` is the length of the learning-rate schedule).
        build_fn: builds the model (None: the model family's own builder).
        fit_fn: trains it (None: ``model.fit``), e.g. a KerasTuner ``HyperModel.fit``.
        start: continue from this checkpoint (weights and optimizer state) instead of from scratch.
        stop_at: the epoch training stops at (None: ``config.train.epochs``); a later trial may continue it.
        save_to: where to leave the trained weights and optimizer state, for a later trial to continue.
        callbacks: Keras callbacks the engine needs (KerasTuner's checkpoint of the best epoch).
        user_attrs: what the engine records on the trial besides the runner's own attributes.
    """

    config: TrialConfig
    build_fn: BuildFn | None = None
    fit_fn: FitFn | None = None
    start: Checkpoint | None = None
    stop_at: int | None = None
    save_to: Path | None = None
    callbacks: Sequence[Any] = ()
    user_attrs: Mapping[str, Any] = field(default_factory=dict)


class Planner(Protocol):
    """What the runner needs of an engine (:class:`tuning.engines.Engine` implements it)."""

    def plan(self, trial: optuna.Trial) -> TrialPlan:
        """The configuration of ``trial`` (just created by Optuna's ``ask()``) and how to train it."""
        ...

    def on_pruned(self, trial: optuna.Trial, epoch: int, metric: str, value: float) -> str:
        """The study's pruner stopped ``trial`` at ``epoch`` (``metric`` was ``value``): why, in one sentence."""
        ...

    def trial_ended(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        """The trial ended (recorded in its user attributes, not yet in its state)."""
        ...


def trial_seed(space_seed: int | None, trial_number: int) -> int:
    """Seed of one trial's training, from the study seed and the trial number (random when the seed is null).

    Example:
        >>> trial_seed(0, 3), trial_seed(1, 3)
        (3, 1000006)
    """
    if space_seed is None:
        return int.from_bytes(os.urandom(4), "little") % (2**31)
    return (space_seed * 1_000_003 + trial_number) % (2**31)


def worth_testing(study: optuna.Study, values: Sequence[float], test_on: str) -> bool:
    """Whether a trial that completed with objective ``values`` is evaluated on the test set (``study.test_on``).

    ``best``: when it leads the study's complete trials (:func:`tuning.records.leads`), so the best model
    always has its test accuracy and the test set is evaluated a handful of times, not once per trial;
    ``all``: always. With workers in parallel, two that finish together may both be evaluated.
    """
    if test_on == "all":
        return True
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return records.leads(values, (t.values for t in done), [d.name.lower() for d in study.directions])


class TrialRunner:
    """Trains one trial's configuration and records what happened on the trial (an Optuna objective).

    Args:
        space: the study's space (objectives, seed, ``study.test_on``, the pruner's name for reasons).
        data: the data set every trial trains on.
        observer: the study's observers (tracking, progress), called in order.
        planner: the engine that plans each trial.
        n_jobs: trials at once in this process (threads): above 1, Keras's global session is not cleared.
    """

    def __init__(
        self, space: SearchSpace, data: Dataset, observer: StudyObserver, planner: Planner, *, n_jobs: int = 1
    ) -> None:
        self.space = space
        self.data = data
        self.observer = observer
        self.planner = planner
        self.n_jobs = n_jobs
        self.deadline: float | None = None  # time.monotonic() at which the study's budget runs out
        self.metrics = [o.metric for o in space.objectives]
        # Optuna prunes single-objective studies only, on a metric Keras reports every epoch.
        single = len(self.metrics) == 1 and self.metrics[0] not in records.MEASURED_OBJECTIVES
        self.reported = self.metrics[0] if single else None
        self.monitor = space.early_stopping_monitor()

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        seed = trial_seed(self.space.study.seed, trial.number)
        trial.set_user_attr(records.SEED, seed)
        trial.set_user_attr(records.WORKER, records.worker_id())
        if os.environ.get("TUNING_GPU"):
            trial.set_user_attr(records.DEVICE, f"GPU {os.environ['TUNING_GPU']}")
        _signals.undefer()  # the trial is recorded with its worker: a signal may interrupt it now
        plan: TrialPlan | None = None
        try:
            plan = self.planner.plan(trial)
            for key, value in plan.user_attrs.items():
                trial.set_user_attr(key, value)
            self.observer.trial_started(trial, _as_shown(plan))
            _signals.stop_if_signalled()  # one that came while asking: this trial is recorded as interrupted
            result = train(
                plan.config, self.data, seed=seed, on_epoch=self._epoch_hook(trial), build_fn=plan.build_fn,
                fit_fn=plan.fit_fn, start=plan.start, stop_at=plan.stop_at, save_to=plan.save_to,
                callbacks=plan.callbacks, exclusive=self.n_jobs == 1, monitor=self.monitor, evaluate_test=False,
            )
            values = [result.metric(m) for m in self.metrics] if result.state == COMPLETE else []
            if values and worth_testing(trial.study, values, self.space.study.test_on):
                result.test_accuracy = test_accuracy(result.model, self.data, plan.config.train.batch_size)
        except KeyboardInterrupt:
            self._interrupted(trial, started=plan is not None)
            raise
        except Exception as exc:
            if (interrupt := _signals.interruption(exc)) is not None:  # a Ctrl-C that a library turned into
                self._interrupted(trial, started=plan is not None)  # an error of its own
                raise interrupt from exc
            self._finish(trial, TrialOutcome(FAILED, reason=describe_failure(exc)), started=plan is not None)
            raise
        attrs: dict[str, Any] = {
            records.EPOCHS: result.epochs,
            records.TRAIN_SECONDS: round(result.train_seconds, 3),
            records.PARAM_COUNT: result.param_count,
            records.HISTORY: result.history,
            records.PRECISION: result.precision,
        }
        if result.test_accuracy is not None:
            attrs[records.TEST_ACCURACY] = result.test_accuracy
        if result.state == FAILED:
            self._finish(trial, TrialOutcome(FAILED, reason=result.reason, history=result.history, user_attrs=attrs))
            raise NotLearningError(result.reason)
        if result.state == PRUNED:
            self._finish(trial, TrialOutcome(PRUNED, reason=result.reason, history=result.history, user_attrs=attrs))
            raise optuna.TrialPruned(result.reason)
        self._finish(
            trial,
            TrialOutcome(COMPLETE, values=values, model=result.model, history=result.history, user_attrs=attrs),
        )
        return values[0] if len(values) == 1 else values

    def _epoch_hook(self, trial: optuna.Trial) -> EpochHook:
        def on_epoch(epoch: int, logs: Mapping[str, float]) -> str | None:
            _signals.stop_if_signalled()
            self.observer.epoch_ended(trial, epoch, logs)
            if self.reported is not None and self.reported in logs:
                trial.report(logs[self.reported], epoch)
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return f"stopped at epoch {epoch}: the study's time budget ran out"
            if self.reported is None or self.reported not in logs:
                return None
            if trial.should_prune():
                return self.planner.on_pruned(trial, epoch, self.reported, logs[self.reported])
            return None

        return on_epoch

    def _interrupted(self, trial: optuna.Trial, *, started: bool) -> None:
        """Record the trial as interrupted and queue its configuration to run first when the study resumes."""
        self._finish(trial, TrialOutcome(INTERRUPTED, reason=INTERRUPTED), started=started)
        trial.study.enqueue_trial(trial.params, user_attrs={records.RETRY_OF: trial.number})

    def _finish(self, trial: optuna.Trial, outcome: TrialOutcome, *, started: bool = True) -> None:
        """Record the outcome's attributes on the trial, tell the observers and the engine (Optuna records the
        state itself once the objective returns or raises)."""
        attrs = dict(outcome.user_attrs)
        if outcome.reason:
            attrs[records.REASON] = outcome.reason
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        outcome.user_attrs = attrs
        self.observer.trial_finished(trial, outcome)
        if started:
            self.planner.trial_ended(trial, outcome)


def _as_shown(plan: TrialPlan) -> TrialConfig:
    """The configuration the observers see: with the epochs this trial trains to (a trial that stops early at a
    rung, or KerasTuner's Hyperband, trains fewer than the schedule's length)."""
    config = plan.config
    if plan.stop_at is None or plan.stop_at == config.train.epochs:
        return config
    return replace(config, train=replace(config.train, epochs=plan.stop_at))


def describe_failure(exc: BaseException) -> str:
    """One sentence for a failed trial: the error's own message for ours, type and message otherwise.

    Example:
        >>> describe_failure(ValueError("Graph execution error:\\n  File x\\nlabel 9 is outside [0, 3)"))
        'ValueError: label 9 is outside [0, 3)'
    """
    if isinstance(exc, ConfigurationError):
        return f"cannot build this configuration: {exc}"
    if isinstance(exc, NotLearningError):
        return str(exc)
    first = _message_line(str(exc))
    if isinstance(exc, AttributeError) and "'TrialConfig' object has no attribute" in first:
        return (f"{type(exc).__name__}: {first[:300]} (build_fn= receives the trial's TrialConfig; a KerasTuner "
                "build(hp) goes to hypermodel= with model.family: hypermodel)")
    if "OOM" in first or isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError":
        return f"out of memory: {type(exc).__name__}: {first[:300]} (a smaller batch_size or width usually helps)"
    return f"{type(exc).__name__}: {first[:300]}"


def _message_line(text: str) -> str:
    """The line of an error message that says what went wrong.

    TensorFlow's graph errors start with "Graph execution error:" and a traceback of the graph's Python code;
    the cause ("Received a label value of 9 which is outside the valid range of [0, 3)") is the last line.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Graph execution error"):
        causes = [line for line in lines[1:] if not line.startswith(("File ", "[[", "Detected at node"))]
        if causes:
            return causes[-1]
    return lines[0]


class FailureGuard:
    """Stops the study after ``limit`` failed trials in a row: by then the space itself is most likely wrong.

    An Optuna callback (``study.optimize(..., callbacks=[guard])``); interrupted trials do not count.

    Example:
        >>> guard = FailureGuard(5)
        >>> guard.tripped
        False
    """

    def __init__(self, limit: int, user_code: bool = False) -> None:
        self.limit = limit
        self.user_code = user_code
        self.failures: list[tuple[int, str]] = []
        self.tripped = False
        self._lock = threading.Lock()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.record(trial):
            study.stop()

    def record(self, trial: optuna.trial.FrozenTrial) -> bool:
        """Count a finished trial; true when this one trips the guard (the study must stop)."""
        with self._lock:
            if trial.state != TrialState.FAIL:
                self.failures.clear()
                return False
            reason = str(trial.user_attrs.get(records.REASON, "no reason recorded"))
            if reason == INTERRUPTED:
                return False
            self.failures.append((trial.number, reason))
            if len(self.failures) >= self.limit and not self.tripped:
                self.tripped = True
                return True
            return False

    def message(self) -> str:
        """Why the study stopped: the last failures' reasons and what to check."""
        reasons = "\n".join(f"  trial {n}: {r}" for n, r in self.failures[-self.limit :])
        if self.user_code:
            return (
                f"{len(self.failures)} trials failed in a row, so the study stopped:\n{reasons}\n"
                "The model comes from your own code (build_fn= or a hypermodel): the reasons above are its own "
                "errors. Run it once by hand with the values of one of these trials and fix it. Raise "
                "study.max_consecutive_failures to tolerate more."
            )
        return (
            f"{len(self.failures)} trials failed in a row, so the study stopped:\n{reasons}\n"
            "The space most likely has a mistake: check the values these reasons point at (too many pooling "
            "blocks for the input size, a learning rate so high the loss diverges, a batch size or width too "
            "large for memory). Raise study.max_consecutive_failures to tolerate more."
        )
