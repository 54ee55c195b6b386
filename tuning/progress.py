"""The live progress display of ``tuning run``: a rich progress bar, one line per finished trial, a summary.

Example:
    >>> from rich.console import Console
    >>> progress = ProgressDisplay(Console(), n_trials=10)  # pass it to tuning.run(observers=[progress])
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tuning import records
from tuning.observers import COMPLETE, StudyObserver, TrialOutcome
from tuning.training import describe_precision

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from tuning.config import TrialConfig
    from tuning.space import SearchSpace

_STYLE = {records.COMPLETE: "green", records.PRUNED: "yellow", records.FAILED: "red", records.INTERRUPTED: "red"}


class ProgressDisplay(StudyObserver):
    """Shows the trial and epoch under way, each trial's outcome and the best value so far."""

    def __init__(self, console: Console, n_trials: int) -> None:
        self.console = console
        self.n_trials = n_trials
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=True,
            redirect_stdout=not console.stderr,  # on standard error (tuning.run), the program's prints stay on stdout
        )
        self.task: Any = None
        self.metrics: list[str] = []
        self.directions: list[str] = []
        self.best: tuple[float, int] | None = None
        self._epochs: dict[int, int] = {}
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()
        self._precision_shown = False

    def study_started(self, study: optuna.Study, space: SearchSpace) -> None:
        from optuna.trial import TrialState

        self.metrics = [o.metric for o in space.objectives]
        self.directions = [o.direction for o in space.objectives]
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if len(self.metrics) == 1:
            for t in done:
                if t.state == TrialState.COMPLETE and t.value is not None:
                    self._update_best(t.value, t.number)
        if done:
            self.console.print(resume_message(study.study_name, len(done), self.n_trials), markup=False)
        self.task = self.progress.add_task(study.study_name, total=self.n_trials, completed=len(done), status="")
        self.progress.start()

    def trial_started(self, trial: optuna.Trial, config: TrialConfig) -> None:
        with self._lock:
            if not self._precision_shown:  # Keras is imported by now, so ``auto`` is cheap to resolve
                self._precision_shown = True
                self.console.print(describe_precision(config.train.precision), markup=False)
            self._epochs[trial.number] = config.train.epochs
            self._started[trial.number] = time.perf_counter()
        self.progress.update(self.task, status=f"trial {trial.number}: building")

    def epoch_ended(self, trial: optuna.Trial, epoch: int, logs: Mapping[str, float]) -> None:
        shown = ", ".join(f"{k} {logs[k]:.4f}" for k in ("val_accuracy", "val_loss") if k in logs)
        total = self._epochs.get(trial.number, "?")
        self.progress.update(self.task, status=f"trial {trial.number}: epoch {epoch}/{total} {shown}")

    def trial_finished(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        seconds = time.perf_counter() - self._started.pop(trial.number, time.perf_counter())
        if outcome.state == COMPLETE and outcome.values and len(outcome.values) == 1:
            self._update_best(outcome.values[0], trial.number)
        if outcome.values:
            result = "  ".join(f"{m} {v:.4f}" for m, v in zip(self.metrics, outcome.values, strict=False))
        else:
            result = outcome.reason or ""
        line = _line(trial.number, outcome.state, result, self.best, outcome.user_attrs.get(records.EPOCHS), seconds)
        self.console.print(line, highlight=False)
        if outcome.state in (records.COMPLETE, records.PRUNED):
            self.progress.advance(self.task)
        self.progress.update(self.task, status="")

    def stopped_early(self, study: optuna.Study, reason: str) -> None:
        self.console.print(f"Stopped early: {reason}.", markup=False)

    def study_finished(self, study: optuna.Study, interrupted: bool) -> None:
        self.progress.stop()

    def _update_best(self, value: float, number: int) -> None:
        with self._lock:
            if records.improves(value, self.best[0] if self.best else None, self.directions[0] == "maximize"):
                self.best = (value, number)


def resume_message(study_name: str, done: int, target: int) -> str:
    """What a run says when its study already holds finished trials.

    Example:
        >>> resume_message("mnist_quick", 5, 5)
        "Resuming study 'mnist_quick': 5 of 5 trials done, nothing to run (raise n_trials or pick a new study_name)."
        >>> resume_message("mnist_quick", 2, 5)
        "Resuming study 'mnist_quick': 2 of 5 trials done, running 3 more."
    """
    if done >= target:
        return (
            f"Resuming study {study_name!r}: {done} of {target} trials done, nothing to run "
            "(raise n_trials or pick a new study_name)."
        )
    return f"Resuming study {study_name!r}: {done} of {target} trials done, running {target - done} more."


def _line(number: int, state: str, result: str, best: tuple[float, int] | None, epochs: Any, seconds: float) -> str:
    best_text = f"  best {best[0]:.4f} (trial {best[1]})" if best else ""
    epochs_text = f"  {epochs} epochs" if epochs is not None else ""
    style = _STYLE.get(state, "white")
    return f"trial {number:>3}  [{style}]{state:<11}[/]  {result}{best_text}{epochs_text}  {seconds:.1f} s"


def trial_line(trial: optuna.trial.FrozenTrial, metrics: list[str], best: tuple[float, int] | None) -> str:
    """The progress line of a finished trial read from the storage (``tuning run --workers``), with its worker.

    Example:
        >>> trial_line(study.trials[0], ["val_accuracy"], (0.91, 0))  # doctest: +SKIP
        'trial   0  [green]complete   [/]  val_accuracy 0.9100  best 0.9100 (trial 0)  2 epochs  4.1 s  (host:812)'
    """
    state = records.state_name(trial)
    reason = str(trial.user_attrs.get(records.REASON, ""))
    if state == records.FAILED and reason == records.INTERRUPTED:
        state = records.INTERRUPTED
    values = zip(metrics, trial.values or [], strict=False)
    result = "  ".join(f"{m} {v:.4f}" for m, v in values) if trial.values else reason
    seconds = (
        (trial.datetime_complete - trial.datetime_start).total_seconds()
        if trial.datetime_complete and trial.datetime_start
        else 0.0
    )
    worker = trial.user_attrs.get(records.WORKER)
    where = f"  ({worker}{', ' + trial.user_attrs[records.DEVICE] if records.DEVICE in trial.user_attrs else ''})"
    return _line(trial.number, state, result, best, trial.user_attrs.get(records.EPOCHS), seconds) + (
        where if worker else ""
    )
