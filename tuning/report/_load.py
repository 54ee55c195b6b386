"""Open an Optuna storage read-only and load studies with their trials, once, for every table and plot."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuning import records
from tuning.errors import StorageError, UserInputError
from tuning.redact import redact_text, redact_url, secrets_in_url

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


class EmptyStudyError(UserInputError):
    """A study has no trial, or no completed trial, so there is nothing to report on."""


def redacted(url: str, text: str | None = None) -> str:
    """``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db``; with ``text``, redact that text
    (an error message that may quote the URL or its password) instead."""
    if text is None:
        return redact_url(url)
    return redact_text(text, secrets=secrets_in_url(url))


def open_storage(url: str | None = None) -> optuna.storages.BaseStorage:
    """Open an existing Optuna storage read-only (a SQLite file with ``mode=ro``): nothing is created or changed.

    Example:
        >>> storage = open_storage("sqlite:///mlruns/optuna.db")  # doctest: +SKIP

    Raises:
        StorageError: the URL is malformed, the SQLite file does not exist or is not an Optuna storage, the
            database cannot be reached or holds no Optuna tables. Passwords in the URL are redacted.
    """
    from tuning.storage import open_read_only

    return open_read_only(url)


@dataclass
class StudyView:
    """One study and its trials, read once from the storage; every table and plot reads from it.

    ``objectives`` are the objective names (the study's ``objectives`` attribute written by the runner, else
    Optuna's metric names, else ``value`` / ``value_0``, ``value_1``...). ``maximize`` holds one flag per
    objective.
    """

    study: optuna.Study
    trials: list[FrozenTrial]
    objectives: list[str]
    maximize: list[bool]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The study's name."""
        return self.study.study_name

    @property
    def multi_objective(self) -> bool:
        """Whether the study has more than one objective."""
        return len(self.objectives) > 1

    @functools.cached_property
    def completed(self) -> list[FrozenTrial]:
        """Completed trials in number order."""
        import optuna

        return [t for t in self.trials if t.state == optuna.trial.TrialState.COMPLETE and t.values is not None]

    @functools.cached_property
    def space(self) -> dict[str, Any] | None:
        """The resolved space the study was created with (``tuning.records.study_space``), or None for a study
        not created by ``tuning run``."""
        try:
            return records.study_space(self.study)
        except Exception:  # a study object without a storage of its own (e.g. a hand-made one in a test)
            return None

    @classmethod
    def of(cls, study: optuna.Study) -> StudyView:
        """Read ``study``'s trials once and resolve its objective names and directions."""
        import optuna

        if isinstance(study, StudyView):
            return study
        directions = study.directions
        maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in directions]
        attrs = dict(study.user_attrs)
        names = attrs.get(records.OBJECTIVES)
        if not (isinstance(names, list) and len(names) == len(directions)):
            names = study.metric_names
        if not names:
            names = ["value"] if len(directions) == 1 else [f"value_{i}" for i in range(len(directions))]
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        return cls(study=study, trials=trials, objectives=[str(n) for n in names], maximize=maximize, attrs=attrs)


def as_view(study: optuna.Study | StudyView) -> StudyView:
    """Accept a study or an already-loaded view."""
    return study if isinstance(study, StudyView) else StudyView.of(study)


def load_studies(
    study_names: Sequence[str], storage: str | None = None, *, require_completed: bool = True
) -> list[StudyView]:
    """Load the named studies from one storage, each with its trials.

    Example:
        >>> views = load_studies(["mnist-tpe", "mnist-random"], "sqlite:///mlruns/optuna.db")  # doctest: +SKIP

    Raises:
        StorageError: the storage cannot be opened, or a study name is not in it (the message lists those that are).
        EmptyStudyError: a study has no trial, or (with ``require_completed``) no completed trial.
    """
    import optuna

    if isinstance(study_names, str):
        study_names = [study_names]
    if not study_names:
        raise UserInputError("Name at least one study. Received: no study name. Fix: `tuning report STUDY`.")
    backend = open_storage(storage)
    shown = redacted(storage or default_storage())
    existing = [s.study_name for s in backend.get_all_studies()]
    views = []
    for name in study_names:
        if name not in existing:
            listing = ", ".join(sorted(existing)) if existing else "none"
            raise StorageError(
                f"No study named {name!r} in {shown}. Received: {name}. "
                f"Fix: use one of the studies in that storage ({listing}) or pass --storage."
            )
        view = StudyView.of(optuna.load_study(study_name=name, storage=backend))
        if not view.trials:
            raise EmptyStudyError(
                f"Study {name!r} has no trials. Received: {name}. "
                "Fix: run it first (`tuning run`) or pick another study."
            )
        if require_completed and not view.completed:
            raise EmptyStudyError(
                f"Study {name!r} has no completed trial, so there is no result to report. "
                f"Received: {_state_counts(view)}{_reasons(view)}. "
                "Fix: correct what made the trials fail (see the reasons), or run more trials."
            )
        views.append(view)
    return views


def default_storage() -> str:
    from tuning._defaults import default_storage_url

    return default_storage_url()


def reason_of(trial: FrozenTrial) -> str:
    """Why a trial was pruned or failed: the runner's ``reason`` attribute, else Optuna's ``fail_reason``."""
    return str(trial.user_attrs.get(records.REASON) or trial.system_attrs.get("fail_reason") or "")


def state_of(trial: FrozenTrial) -> str:
    """The state as every table writes it: complete, pruned, failed (running, waiting)."""
    return records.state_name(trial)


def _state_counts(view: StudyView) -> str:
    counts: dict[str, int] = {}
    for t in view.trials:
        counts[state_of(t)] = counts.get(state_of(t), 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def _reasons(view: StudyView, limit: int = 3) -> str:
    shown = []
    for t in view.trials:
        reason = reason_of(t)
        if reason:
            shown.append(f"trial {t.number} {state_of(t)}: {reason}")
        if len(shown) == limit:
            break
    return f" ({'; '.join(shown)})" if shown else ""
