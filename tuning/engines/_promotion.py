"""Successive halving and Hyperband whose promotions continue: asynchronous successive halving (ASHA, Li et al.
2020) with each paused trial's weights and optimizer state kept on disk.

Optuna's own ``SuccessiveHalvingPruner`` and ``HyperbandPruner`` decide at each rung whether a trial goes on, and a
trial they stop is gone for good: a configuration that would rank well once more trials reach its rung is never
trained further (the first trials are let through instead). Here, as in the ASHA paper and KerasTuner's Hyperband:

- **rungs**: a trial of bracket ``s`` reaches rungs at ``min_resource · η^(s+k)`` epochs, below ``train.epochs``;
- **at a rung** (:class:`RungPruner`) a trial goes on while it ranks in the top ``1/η`` of the trials of its bracket
  that reached that rung (itself included); otherwise it is **paused**: recorded as pruned, its checkpoint
  (weights and optimizer state, :class:`tuning.training.Checkpoint`) kept in ``mlruns/checkpoints/<study>/``;
- **before each new trial** (:meth:`Promotions.next_promotion`) a paused trial that now ranks in the top ``1/η`` of
  its rung (more trials reached it since) is **promoted**: the next trial continues it from its checkpoint, with
  its parameters, at its epoch (the learning-rate schedule goes on where it stopped), instead of retraining it;
  higher rungs first, then new configurations;
- a checkpoint is deleted once its continuation has finished, and the study's folder once the study reaches its
  total. A continuation killed with its worker runs again from the same checkpoint; one whose checkpoint is on
  another machine (no shared disk) is not promoted by this machine.

Each promotion is a trial of its own (user attribute ``continues``: the trial it continues; one MLflow run each),
so ``n_trials`` counts rung segments, as KerasTuner's Hyperband counts its trials.

Example:
    >>> rungs_of(min_resource=1, eta=3, max_epochs=9, bracket=0)
    [1, 3]
    >>> rungs_of(min_resource=1, eta=3, max_epochs=9, bracket=1)
    [3]
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuning import records
from tuning._defaults import RESULTS_DIR
from tuning.training import Checkpoint

__all__ = ["Promotions", "RungPruner", "checkpoint_folder", "rungs_of"]

log = logging.getLogger("tuning")

#: The trials whose values count at a rung: finished ones and the running ones that reported there.
_RANKED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def rungs_of(*, min_resource: int, eta: int, max_epochs: int, bracket: int) -> list[int]:
    """The rung epochs of a bracket: ``min_resource · η^(bracket+k)`` below ``max_epochs`` (which ends the trial)."""
    rungs = []
    epoch = min_resource * eta**bracket
    while epoch < max_epochs:
        rungs.append(epoch)
        epoch *= eta
    return rungs


def checkpoint_folder(study_name: str) -> Path:
    """Where a study's paused trials keep their checkpoints: ``mlruns/checkpoints/<study>``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name)
    return RESULTS_DIR / "checkpoints" / safe


def _top(values: Sequence[float], eta: int, maximize: bool) -> float | None:
    """The worst value still in the top ``len(values) // eta`` (None when that is nobody yet)."""
    ranked = sorted((v for v in values if not math.isnan(v)), reverse=maximize)
    keep = len(values) // eta
    return ranked[keep - 1] if keep and len(ranked) >= keep else None


def _in_top(value: float, threshold: float | None, maximize: bool) -> bool:
    if threshold is None or math.isnan(value):
        return False
    return value >= threshold if maximize else value <= threshold


class RungPruner(optuna.pruners.BasePruner):
    """ASHA's rule at each rung: a trial goes on while it ranks in the top ``1/η`` of its bracket's trials that
    reached that rung, itself included; otherwise it stops there (and may be promoted later).

    Example:
        >>> pruner = RungPruner(min_resource=1, eta=3, max_epochs=9, brackets=1)
        >>> pruner.rungs(0)
        [1, 3]
    """

    def __init__(self, *, min_resource: int, eta: int, max_epochs: int, brackets: int) -> None:
        self.min_resource = min_resource
        self.eta = eta
        self.max_epochs = max_epochs
        self.brackets = brackets

    def rungs(self, bracket: int) -> list[int]:
        """The rung epochs of ``bracket``."""
        return rungs_of(min_resource=self.min_resource, eta=self.eta, max_epochs=self.max_epochs, bracket=bracket)

    def bracket(self, trial: FrozenTrial) -> int:
        """The trial's bracket (recorded when it started; its first trial's number spreads configurations)."""
        return int(trial.user_attrs.get(records.BRACKET, trial.number % self.brackets))

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs(self.bracket(trial)):
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        values = self.rung_values(study, self.bracket(trial), step)
        return not _in_top(trial.intermediate_values[step], _top(values, self.eta, maximize), maximize)

    def rung_values(self, study: optuna.Study, bracket: int, step: int) -> list[float]:
        """The values every trial of ``bracket`` reported at epoch ``step`` (one per configuration)."""
        return [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False, states=_RANKED)
            if step in t.intermediate_values and self.bracket(t) == bracket
        ]


class Promotions:
    """The engine's side of promotions: what the next trial continues, how a trial is planned, clean-up.

    Args:
        pruner: the study's :class:`RungPruner`.
        study_name: names the checkpoint folder.
    """

    def __init__(self, pruner: RungPruner, study_name: str) -> None:
        self.pruner = pruner
        self.folder = checkpoint_folder(study_name)

    def path(self, number: int) -> Path:
        """Where trial ``number`` leaves its checkpoint."""
        return self.folder / f"trial-{number}.weights.h5"

    def next_promotion(self, study: optuna.Study) -> FrozenTrial | None:
        """The paused trial the next trial should continue: in the top ``1/η`` of its rung now, not yet
        continued, its checkpoint on this machine; highest rung first, best value first. None: a new one."""
        trials = study.get_trials(deepcopy=False)
        continued = {t.user_attrs[records.CONTINUES] for t in trials if records.CONTINUES in t.user_attrs}
        paused = [t for t in trials if t.state == TrialState.PRUNED and records.PAUSED_AT in t.user_attrs
                  and t.number not in continued and self.path(t.number).exists()]
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        best: tuple[int, float, FrozenTrial] | None = None
        for trial in paused:
            step = int(trial.user_attrs[records.PAUSED_AT])
            value = trial.intermediate_values.get(step, math.nan)
            threshold = _top(self.pruner.rung_values(study, self.pruner.bracket(trial), step), self.pruner.eta,
                             maximize)
            if not _in_top(value, threshold, maximize):
                continue
            key = (step, value if maximize else -value)
            if best is None or key > best[:2]:
                best = (*key, trial)
        return best[2] if best is not None else None

    def start_of(self, study: optuna.Study, trial: optuna.Trial) -> tuple[Checkpoint | None, dict[str, int]]:
        """Where ``trial`` starts (the checkpoint of the trial it continues, or None) and the attributes it records
        (its bracket, the trial it continues). A queued retry continues what the trial it retries continued."""
        source: FrozenTrial | optuna.Trial = trial
        while records.RETRY_OF in source.user_attrs and records.CONTINUES not in source.user_attrs:
            source = study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(
                study._study_id, int(source.user_attrs[records.RETRY_OF])))
        attrs = {records.BRACKET: int(source.user_attrs.get(records.BRACKET,
                                                            source.number % self.pruner.brackets))}
        if records.CONTINUES not in source.user_attrs:
            return None, attrs
        parent_number = int(source.user_attrs[records.CONTINUES])
        attrs[records.CONTINUES] = parent_number
        parent = study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, parent_number))
        path = self.path(parent_number)
        if not path.exists():
            log.warning("trial %d continues trial %d, whose checkpoint %s is gone: it trains from the start",
                        trial.number, parent_number, path)
            return None, attrs
        epoch = int(parent.user_attrs[records.PAUSED_AT])
        history = {k: list(v)[:epoch] for k, v in (parent.user_attrs.get(records.HISTORY) or {}).items()}
        return Checkpoint(path, epoch, history), attrs

    def finished(self, trial: optuna.Trial, paused: bool) -> None:
        """A trial ended: the checkpoint it continued from is no longer needed (its continuation is done), nor its
        own unless it paused."""
        parent = trial.user_attrs.get(records.CONTINUES)
        if parent is not None:
            self.path(int(parent)).unlink(missing_ok=True)
        if not paused:
            self.path(trial.number).unlink(missing_ok=True)

    def clean_up(self) -> None:
        """The study reached its total: remove its checkpoints."""
        shutil.rmtree(self.folder, ignore_errors=True)
