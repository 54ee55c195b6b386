"""Without tracking, the study's best model still lands on disk: ``mlruns/models/<study>/best_model.keras``.

Beside it, ``best_model.json`` says which trial it is, its objective value and what the model expects (float32
images scaled to [0, 1], their shape: :meth:`tuning.data.Dataset.input_description`). With tracking on, the
MLflow tracker keeps the best model instead, as an MLflow model. MLflow is not imported here.

Example:
    >>> best_model_path("mnist_quick").as_posix()
    'mlruns/models/mnist_quick/best_model.keras'
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuning import records
from tuning._defaults import RESULTS_DIR
from tuning.observers import COMPLETE, StudyObserver, TrialOutcome

if TYPE_CHECKING:
    import optuna

    from tuning.space import SearchSpace

log = logging.getLogger("tuning")


def best_model_path(study_name: str) -> Path:
    """Where the best model of study ``study_name`` is kept when tracking is off."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name)
    return RESULTS_DIR / "models" / safe / "best_model.keras"


class BestModelKeeper(StudyObserver):
    """Saves each complete trial's model that beats the study's best so far (single objective only).

    Args:
        description: what the model expects and returns, written to ``best_model.json``.
    """

    def __init__(self, description: Mapping[str, Any] | None = None) -> None:
        self.description = dict(description or {})
        self.path: Path | None = None
        self._best: float | None = None
        self._maximize = True
        self._active = False
        self._lock = threading.Lock()

    def study_started(self, study: optuna.Study, space: SearchSpace) -> None:
        self._active = len(study.directions) == 1
        if not self._active:
            return
        self._maximize = study.direction.name == "MAXIMIZE"
        self.path = best_model_path(study.study_name)
        values = [t.value for t in study.get_trials(deepcopy=False) if records.state_name(t) == COMPLETE]
        best = records.best_so_far(values, self._maximize)
        self._best = best[-1] if best and self.path.exists() else None

    def trial_finished(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        if not self._active or outcome.state != COMPLETE or outcome.model is None or not outcome.values:
            return
        value = float(outcome.values[0])
        with self._lock:
            if not records.improves(value, self._best, self._maximize):
                return
            self._best = value
            self._save(outcome.model, trial.number, value)

    def _save(self, model: Any, number: int, value: float) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{number}.keras")
        try:
            model.save(partial)
        except Exception as exc:
            log.warning("cannot save the model of trial %d to %s: %s", number, self.path, exc)
            partial.unlink(missing_ok=True)
            return
        os.replace(partial, self.path)  # a reader never sees half a model
        about = {"trial": number, "value": value, **self.description}
        self.path.with_suffix(".json").write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
