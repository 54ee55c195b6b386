"""``study.stop_after``: stop a study whose best value has stopped improving, before it spends its whole budget.

Optuna's terminator module, which did this from a regret bound, is deprecated; this rule is the plain one people
use by hand: no better trial for ``trials`` trials (complete or pruned, counted in the order they finished), or for
``seconds`` seconds, or for a ``share`` of the study's budget (that share of ``n_trials``, and of ``timeout`` when
there is one). Every worker reads it from the shared storage before each trial, so all of them stop.

Example:
    >>> StopRule.of({"share": 0.25}, n_trials=40, timeout=None).trials
    10
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from tuning import records

__all__ = ["StopRule"]


@dataclass(frozen=True)
class StopRule:
    """Stop once the best value has not improved for ``trials`` finished trials or ``seconds`` seconds."""

    trials: int | None = None
    seconds: float | None = None

    @classmethod
    def of(cls, spec: Mapping[str, Any] | None, *, n_trials: int, timeout: float | None) -> StopRule | None:
        """The rule of a space's ``study.stop_after`` for a study of ``n_trials`` and ``timeout`` (None: no rule)."""
        if not spec:
            return None
        trials, seconds, share = spec.get("trials"), spec.get("seconds"), spec.get("share")
        if share is not None:
            trials = min(trials or n_trials, max(1, math.ceil(share * n_trials)))
            if timeout is not None:
                seconds = min(seconds or timeout, share * timeout)
        return cls(trials=trials, seconds=seconds)

    def reason(self, study: optuna.Study) -> str | None:
        """Why the study should stop now, in one sentence; None while it may go on."""
        done = sorted(
            (t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
             if t.datetime_complete is not None),
            key=lambda t: t.datetime_complete,
        )
        if not done:
            return None
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        best: optuna.trial.FrozenTrial | None = None
        for trial in done:
            if trial.state == TrialState.COMPLETE and records.improves(trial.value, best.value if best else None,
                                                                      maximize):
                best = trial
        since = done[done.index(best) + 1:] if best is not None else done
        what = (f"the best value ({best.value:.4f}, trial {best.number}) has not improved"
                if best is not None else "no trial has completed")
        if self.trials is not None and len(since) >= self.trials:
            trials = f"in the {len(since)} trials since" if best is not None else f"in {len(since)} trials"
            return f"{what} {trials} (study.stop_after: {self.trials} trials)"
        start = best.datetime_complete if best is not None else done[0].datetime_start
        if self.seconds is not None and start is not None:
            idle = (datetime.datetime.now() - start).total_seconds()
            if idle >= self.seconds:
                return f"{what} for {idle:.0f} s (study.stop_after: {self.seconds:g} s)"
        return None
