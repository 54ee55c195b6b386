"""Turning a space's ``study`` section into Optuna objects: storage, sampler, pruner, the study itself.

Nothing here trains; everything here fails fast with a :class:`~tuning.errors.UserInputError` naming the key.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from tuning import _storage, records
from tuning._recovery import MAX_RETRY, host_name
from tuning.errors import SpaceError

if TYPE_CHECKING:
    from tuning.space import SearchSpace

#: Seconds between a running trial's heartbeats, and how old a heartbeat may get before its trial is stale.
HEARTBEAT_INTERVAL = 30
GRACE_PERIOD = 90

def open_storage(url: str, *, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD) -> Any:
    """Open the study's storage read-write with this module's heartbeat settings (see :mod:`tuning._storage`).

    Raises:
        StorageError: the storage cannot be opened.
    """
    return _storage.open_storage(
        url, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=MAX_RETRY
    )


#: Every ``study.sampler`` type and its Optuna class: the one list (the space's schema reads it).
SAMPLER_CLASSES = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
    "nsga2": "NSGAIISampler",
}
#: Every ``study.pruner`` type and its Optuna class: the one list (the space's schema reads it).
PRUNER_CLASSES = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "patient": "PatientPruner",
    "none": "NopPruner",
}


def absolute_url(url: str) -> str:
    """The storage URL with a relative SQLite path made absolute: it then means something on a tracking server.

    Example:
        >>> import os
        >>> absolute_url("sqlite:///mlruns/optuna.db") == f"sqlite:///{os.path.abspath('mlruns/optuna.db')}"
        True
        >>> absolute_url("postgresql://u@db/optuna")
        'postgresql://u@db/optuna'
    """
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path, _, query = url[len(prefix):].partition("?")
    if not path or path == ":memory:" or os.path.isabs(path):
        return url
    return prefix + os.path.abspath(path) + (f"?{query}" if query else "")


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
    return _make_pruner(dict(space.study.pruner), "study.pruner", _max_epochs(space))


def _max_epochs(space: SearchSpace) -> int | None:
    from tuning.space._parse import largest_value

    return largest_value(space.specs.get("train.epochs"))


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


def trial_seed(space_seed: int | None, trial_number: int) -> int:
    """Seed of one trial's training, from the study seed and the trial number (random when the seed is null)."""
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
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return records.leads(values, (t.values for t in done), [d.name.lower() for d in study.directions])


def worker_id() -> str:
    """``host:pid`` of this process, recorded on each trial so a crashed worker's trials can be recognised."""
    return f"{host_name()}:{os.getpid()}"


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
        study.set_metric_names(metrics)  # optuna-dashboard and the optuna CLI label the objective with it
    resolved = records.without_password(space.to_dict())
    study._storage.set_study_system_attr(study._study_id, records.SPACE_SYSTEM_ATTR, resolved)
    study.set_user_attr(records.SPACE_HASH, records.space_hash(resolved))
    study.set_user_attr(records.OBJECTIVES, metrics)


def sqlite_file_exists(url: str) -> bool:
    """Whether a SQLite storage URL names a file that exists (opening it then creates nothing)."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return bool(database) and database != ":memory:" and Path(database).exists()


def _exists(storage: Any, name: str) -> bool:
    """Whether the storage holds a study called ``name`` (one query, however many studies it holds)."""
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def _check_same_space(study: optuna.Study, space: SearchSpace, directions: list[str]) -> None:
    from tuning.errors import user_error

    stored_directions = [d.name.lower() for d in study.directions]
    if stored_directions != directions:
        raise user_error(
            f"study {study.study_name!r} already exists with directions {stored_directions}",
            received=directions,
            fix="use the same objective to resume it, or --study-name NEW for a new study",
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
            fix="pass --study-name NEW to start a new study, or restore study.engine and study.tuner",
        )
    if changed:
        raise user_error(
            f"study {study.study_name!r} already exists with a different {' and '.join(changed)} section; "
            "resuming it would mix trials of two spaces",
            received="; ".join(line for lines in changed.values() for line in lines),
            fix="pass --study-name NEW to start a new study, or set each key listed to the study's value "
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

    The storage is opened read-only (:func:`tuning._storage.open_read_only`): nothing is created or changed.

    Example:
        >>> list_studies("sqlite:///mlruns/optuna.db")  # doctest: +SKIP
        [{'study': 'mnist_quick', 'complete': 12, 'pruned': 6, 'failed': 0, 'running': 0, 'waiting': 0, ...}]
    """
    from optuna.trial import TrialState

    storage = _storage.open_read_only(url)
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
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
