"""The study in its storage: opened with the toolkit's heartbeat settings, created or loaded (a resume must keep its
space), its space recorded; and the list of a storage's studies.

Nothing here trains; everything here fails fast with a :class:`~tuning.errors.UserInputError` naming the key.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import optuna

from tuning import records
from tuning.errors import user_error
from tuning.storage import open_read_only
from tuning.storage import open_storage as open_rdb_storage
from tuning.study._recovery import MAX_RETRY

if TYPE_CHECKING:
    from tuning.space import SearchSpace

#: Seconds between a running trial's heartbeats, and how old a heartbeat may get before its trial is stale.
HEARTBEAT_INTERVAL = 30
GRACE_PERIOD = 90

#: How to start a new study instead, for both callers: the command line and ``tuning.run``.
_NEW_STUDY = "pass --study-name NEW (tuning run) or study_name=\"NEW\" (tuning.run)"


def open_storage(url: str, *, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD) -> Any:
    """Open a study's storage read-write with the toolkit's heartbeat settings (see :mod:`tuning.storage`).

    Example:
        >>> storage = open_storage("sqlite:///mlruns/optuna.db")  # doctest: +SKIP

    Raises:
        StorageError: the storage cannot be opened.
    """
    return open_rdb_storage(
        url, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=MAX_RETRY
    )


def create_or_load(space: SearchSpace, storage: Any, name: str, sampler: Any, pruner: Any) -> optuna.Study:
    """Create the study, or load it when it exists with the same space (a resume).

    Raises:
        UserInputError: the study exists with different objectives or a different data/model/train section.
    """
    directions = [o.direction for o in space.objectives]
    if _exists(storage, name):
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        _check_same_space(study, space, directions)
    else:
        try:
            study = optuna.create_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner, directions=directions
            )
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it a moment ago
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        record_space(study, space)
    return study


def record_space(study: optuna.Study, space: SearchSpace) -> None:
    """Record the space on a new study: the objective names where Optuna's tools read them, the resolved space
    (its storage password masked) as a system attribute, and only its short hash among the user attributes.

    ``optuna studies`` and optuna-dashboard print every user attribute: the whole space (about 3,000
    characters) made each row unreadable. Resume checks read it back with :func:`records.study_space`.
    """
    metrics = [o.metric for o in space.objectives]
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(metrics)  # optuna-dashboard labels the objective with it
    resolved = records.without_password(space.to_dict())
    study._storage.set_study_system_attr(study._study_id, records.SPACE_SYSTEM_ATTR, resolved)
    study.set_user_attr(records.SPACE_HASH, records.space_hash(resolved))
    study.set_user_attr(records.OBJECTIVES, metrics)


def _exists(storage: Any, name: str) -> bool:
    """Whether the storage holds a study called ``name`` (one query, however many studies it holds)."""
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def _check_same_space(study: optuna.Study, space: SearchSpace, directions: list[str]) -> None:
    stored_directions = [d.name.lower() for d in study.directions]
    if stored_directions != directions:
        raise user_error(
            f"study {study.study_name!r} already exists with directions {stored_directions}",
            received=directions,
            fix=f"use the same objective to resume it, or {_NEW_STUDY} for a new study",
        )
    stored = records.study_space(study) or {}
    new = space.to_dict()
    changed = {k: _differences(k, stored[k], new.get(k)) for k in ("data", "model", "train", "objective")
               if k in stored}
    changed = {k: lines for k, lines in changed.items() if lines}
    before, now = _engine_of(stored.get("study")), _engine_of(new.get("study"))
    if "study" in stored and before != now:  # KerasTuner's saved state would silently keep the old tuner
        raise user_error(
            f"study {study.study_name!r} already exists with {_engine_text(before)}; resuming it with "
            f"{_engine_text(now)} would mix two searches",
            received=f"study.engine: {now[0]}, study.tuner: {now[1]}",
            fix=f"{_NEW_STUDY} to start a new study, or restore study.engine and study.tuner",
        )
    if changed:
        raise user_error(
            f"study {study.study_name!r} already exists with a different {' and '.join(changed)} section; "
            "resuming it would mix trials of two spaces",
            received="; ".join(line for lines in changed.values() for line in lines),
            fix=f"{_NEW_STUDY} to start a new study, or set each key listed to the study's value "
                "(a key you did not write may have a new default)",
        )


#: Keys that say how this machine trains, not what is searched: a study may mix them (``auto`` resolves per worker).
_HOW_NOT_WHAT = ("precision",)


def _differences(section: str, stored: Any, new: Any) -> list[str]:
    """How a space section differs from the one a study was created with, one ``key: study's → now`` per key.

    A key the stored section lacks was added to the toolkit later, with a default that keeps the old behaviour,
    so it does not count; nor does ``train.precision`` (see :data:`_HOW_NOT_WHAT`): its default became ``auto``,
    and workers on different hardware resolve ``auto`` differently anyway.

    Example:
        >>> _differences("train", {"epochs": 3, "schedule": "constant"}, {"epochs": 3, "schedule": "cosine", "x": 1})
        ["train.schedule: the study's 'constant', now 'cosine'"]
    """
    if not isinstance(stored, dict) or not isinstance(new, dict):
        return [] if stored == new else [f"{section}: the study's {stored!r}, now {new!r}"]
    return [f"{section}.{key}: the study's {stored[key]!r}, now {new.get(key)!r}"
            for key in sorted(set(stored) - set(_HOW_NOT_WHAT)) if stored[key] != new.get(key)]


def _engine_of(study_section: Any) -> tuple[str, Any]:
    """``(engine, tuner)`` of a stored or new ``study`` section (spaces stored before engines existed: Optuna)."""
    section = study_section or {}
    return section.get("engine", "optuna"), section.get("tuner")


def _engine_text(engine: tuple[str, Any]) -> str:
    return "the optuna engine" if engine[1] is None else f"the {engine[0]} engine and tuner {engine[1]}"


def list_studies(url: str | None) -> list[dict[str, Any]]:
    """One row per study in the storage: trial counts by state, best value and trial (single objective).

    The storage is opened read-only (:func:`tuning.storage.open_read_only`): nothing is created or changed.

    Example:
        >>> list_studies("sqlite:///mlruns/optuna.db")  # doctest: +SKIP
        [{'study': 'mnist_quick', 'complete': 12, 'pruned': 6, 'failed': 0, 'running': 0, 'waiting': 0, ...}]
    """
    from optuna.trial import TrialState

    backend = open_read_only(url)
    rows = []
    for summary in optuna.get_all_study_summaries(backend, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=backend)
        trials = study.get_trials(deepcopy=False)
        count = {s: sum(t.state == s for t in trials) for s in TrialState}
        best_value: Any = "-"
        best_trial: Any = "-"
        if len(study.directions) == 1 and count[TrialState.COMPLETE]:
            best_value, best_trial = f"{study.best_value:.4f}", study.best_trial.number
        rows.append({
            "study": summary.study_name,
            **{records.OPTUNA_STATES[s.name]: count[s] for s in _LISTED_STATES},
            "best_value": best_value,
            "best_trial": best_trial,
        })
    return rows


#: The trial states ``tuning studies`` counts, in its column order.
_LISTED_STATES = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.WAITING,
)
