"""The KerasTuner engine (``study.engine: keras_tuner``): KerasTuner's own tuners pick the configurations.

A real ``keras_tuner.Hyperband``, ``RandomSearch`` or ``BayesianOptimization`` oracle decides each trial's
hyperparameter values, with the study's seed and its working folder under ``mlruns/keras_tuner/<study>``
(reloaded by a second run). The trial itself lives exactly as the Optuna engine's do
(:class:`tuning.trial.TrialRunner` inside ``study.optimize``): the study's gate and lock, heartbeat, crash
recovery and retries, failure guard, tracking and records are the same. Only the values differ: the study's
sampler returns what KerasTuner chose (:class:`KerasTunerValues`), so each trial records its active
hyperparameters with their Optuna distributions (:func:`tuning.hypermodel.to_distribution`).

Built-in families run through :class:`SpaceHyperModel`: :meth:`SearchSpace.suggest` only calls
``trial.suggest_int/float/categorical(name, ...)``, so :class:`HpTrial`, whose methods call ``hp.Int``,
``hp.Float`` and ``hp.Choice`` under the same names, turns every built-in space into a ``build(hp)``; per-layer
parameters beyond the first are declared inside ``hp.conditional_scope`` on ``model.depth``, so KerasTuner samples
(and the study records) only the layers that exist. Under Hyperband ``train.epochs`` is not a hyperparameter:
its upper bound is Hyperband's ``max_epochs`` (the length of the learning-rate schedule) and each trial trains
the epochs Hyperband gives it; a trial Hyperband continues starts from the earlier trial's best epoch, weights and
optimizer state.

Several worker processes (``--workers``, or machines) each run their own KerasTuner search in their own folder
(``<study>.worker<i>``, seeded with the worker's index); their trials land in the one study, whose total they
share. A trial of a worker that died runs again in whichever worker comes next, outside KerasTuner's own
bookkeeping.

Example:
    >>> space = SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 2},
    ...                                "study": {"engine": "keras_tuner"}})  # doctest: +SKIP
    >>> tuning.run(space).trials_dataframe()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner
import optuna
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.engine import tuner_utils
from keras_tuner.src.engine.trial import Trial as KtTrial
from keras_tuner.src.engine.trial import TrialStatus
from optuna.distributions import BaseDistribution

from tuning import records
from tuning._defaults import RESULTS_DIR
from tuning._keras import WORKER_INDEX_ENV
from tuning.engines._base import Engine
from tuning.errors import user_error
from tuning.hypermodel import to_distribution
from tuning.observers import COMPLETE, PRUNED, TrialOutcome
from tuning.schema import TUNER_CLASSES
from tuning.space import Searched
from tuning.training import Checkpoint
from tuning.trial import TrialPlan

if TYPE_CHECKING:
    from tuning.config import TrialConfig
    from tuning.data import Dataset
    from tuning.space import SearchSpace
    from tuning.training import BuildFn

__all__ = ["HpTrial", "KerasTunerEngine", "KerasTunerValues", "SpaceHyperModel",
           "active_parameters", "track_reached"]

log = logging.getLogger("tuning")

_PER_LAYER = re.compile(r"^(model\.\w+)\.(\d+)$")


def active_parameters(hp: Any, reached: Collection[str] | None = None) -> tuple[dict[str, Any],
                                                                            dict[str, BaseDistribution]]:
    """A trial's parameters and distributions: the hyperparameters the build reached, none of ``tuner/*``.

    KerasTuner keeps a value for every hyperparameter it has ever seen (a ``units_1`` declared by an earlier,
    deeper model gets one in every later trial); ``reached`` (see :func:`track_reached`) keeps only the ones this
    trial's build asked for, so a layer that does not exist is not recorded.

    Example:
        >>> hp = keras_tuner.HyperParameters()
        >>> _ = hp.Choice("units", [8, 16])
        >>> active_parameters(hp)
        ({'units': 8}, {'units': CategoricalDistribution(choices=(8, 16))})
    """
    params: dict[str, Any] = {}
    distributions: dict[str, BaseDistribution] = {}
    for hp_obj in hp.space:
        name = hp_obj.name
        if name.startswith("tuner/") or name not in hp.values or not hp.is_active(hp_obj):
            continue
        if reached is not None and name not in reached:
            continue
        params[name] = hp.values[name]
        distributions[name] = to_distribution(hp_obj)
    return params, distributions


def track_reached(hp: Any) -> set[str]:
    """The names of the active hyperparameters ``hp.Int/Float/Choice/Boolean/Fixed`` return from now on.

    Example:
        >>> hp = keras_tuner.HyperParameters()
        >>> reached = track_reached(hp)
        >>> _ = hp.Boolean("deep")
        >>> reached
        {'deep'}
    """
    reached: set[str] = set()
    retrieve = hp._retrieve  # every declaration goes through it, KerasTuner's name scopes and conditions applied

    def tracking(hp_obj: Any) -> Any:
        value = retrieve(hp_obj)
        if hp.is_active(hp_obj):
            reached.add(hp_obj.name)
        return value

    hp._retrieve = tracking
    return reached


class HpTrial:
    """An Optuna-trial look-alike over KerasTuner's ``hp``: ``SearchSpace.suggest(HpTrial(hp))`` is a ``build(hp)``.

    ``suggest_int/float/categorical(name, ...)`` declare ``hp.Int/Float/Choice(name, ...)`` and return its value.
    A per-layer parameter ``model.<key>.<i>`` with ``i > 1`` is declared inside
    ``hp.conditional_scope("model.depth", [depths >= i])`` when the depth is searched. ``epochs_cap`` (Hyperband)
    answers ``train.epochs`` with that number instead of declaring it.

    Example:
        >>> hp = keras_tuner.HyperParameters()
        >>> HpTrial(hp).suggest_int("model.depth", 1, 3)
        1
    """

    def __init__(self, hp: Any, epochs_cap: int | None = None) -> None:
        self.hp = hp
        self.epochs_cap = epochs_cap
        self._depths: list[Any] | None = None

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> Any:
        if name == "train.epochs" and self.epochs_cap is not None:
            return self.epochs_cap
        if name == "model.depth":
            self._depths = list(range(low, high + 1, step))
        sampling = "log" if log else "linear"
        return self._declare(name, lambda: self.hp.Int(name, low, high, step=None if log else step,
                                                       sampling=sampling))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> Any:
        return self._declare(name, lambda: self.hp.Float(name, low, high, step=step,
                                                         sampling="log" if log else "linear"))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if name == "train.epochs" and self.epochs_cap is not None:
            return self.epochs_cap
        if name == "model.depth":
            self._depths = list(choices)
        return self._declare(name, lambda: self.hp.Choice(name, list(choices)))

    def _declare(self, name: str, declare: Callable[[], Any]) -> Any:
        match = _PER_LAYER.match(name)
        layer = int(match.group(2)) if match else 1
        if layer == 1 or self._depths is None:
            return declare()
        with self.hp.conditional_scope("model.depth", [d for d in self._depths if d >= layer]):
            return declare()


class SpaceHyperModel(keras_tuner.HyperModel):
    """A space as a KerasTuner hypermodel: ``build(hp)`` declares the space's searched values on ``hp`` (through
    :class:`HpTrial`) and builds the model of the built-in family, of ``build_fn(config)``, or of the user's own
    hypermodel (``user``: its ``build(hp)`` and ``fit(hp, model, ...)``, unchanged).

    The toolkit's training (:func:`tuning.training.train`) compiles an uncompiled model from ``train`` and passes
    the batch size, epochs and callbacks, so ``fit`` is the user's own or ``model.fit``.

    Example:
        >>> model = SpaceHyperModel(space, dataset, build_fn=None, epochs_cap=None)  # doctest: +SKIP
        >>> tuner = keras_tuner.RandomSearch(model, max_trials=3)  # doctest: +SKIP
    """

    def __init__(self, space: SearchSpace, data: Dataset, build_fn: BuildFn | None, epochs_cap: int | None,
                 user: keras_tuner.HyperModel | None = None) -> None:
        super().__init__(name=space.family)
        self.space = space
        self.data = data
        self.build_fn = build_fn
        self.epochs_cap = epochs_cap
        self.user = user

    def config(self, hp: Any) -> TrialConfig:
        """The trial's configuration (declares the hyperparameters the first time, reads them afterwards)."""
        return self.space.suggest(HpTrial(hp, self.epochs_cap))

    def build(self, hp: Any) -> keras.Model:
        from tuning.models import build_model

        config = self.config(hp)
        if self.user is not None:
            return self.user.build(hp)
        if self.build_fn is not None:
            return self.build_fn(config)
        return build_model(config.model, self.data.input_shape, self.data.num_classes, config.train.augmentation)

    def fit(self, hp: Any, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        if self.user is not None:
            return self.user.fit(hp, model, *args, **kwargs)
        return model.fit(*args, **kwargs)


class KerasTunerValues(optuna.samplers.BaseSampler):
    """The study's sampler under the KerasTuner engine: every parameter takes the value KerasTuner chose.

    Example:
        >>> sampler = KerasTunerValues()
        >>> sampler.values = {"units": 16}
        >>> study = optuna.create_study(sampler=sampler)
        >>> study.ask().suggest_categorical("units", [8, 16])
        16
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: Any) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.values[param_name]


class KerasTunerEngine(Engine):
    """KerasTuner's tuner (``study.tuner``) picks each trial's hyperparameters; see the module docstring."""

    name = "keras_tuner"

    def __init__(self, space: SearchSpace, data: Dataset, *, build_fn: BuildFn | None = None,
                 hypermodel: Any = None) -> None:
        super().__init__(space, data, build_fn=build_fn, hypermodel=hypermodel)
        options = dict(space.study.tuner or {"type": "hyperband"})
        self.kind = options.pop("type")
        self.options = options
        self.cap = space.max_epochs() if self.kind == "hyperband" else None
        self.model = SpaceHyperModel(space, data, build_fn, self.cap, user=hypermodel)
        self.values = KerasTunerValues()
        self.tuner: Any = None
        self._pending: Any = None  # the KerasTuner trial the next Optuna trial runs
        self._running: dict[int, Any] = {}  # Optuna trial number → its registered KerasTuner trial
        self._folder_lock: int | None = None
        self.project = space.study.name

    @classmethod
    def check(cls, space: SearchSpace, *, n_jobs: int) -> None:
        if n_jobs > 1:
            raise user_error("the keras_tuner engine runs one trial at a time", received=f"n_jobs={n_jobs}",
                             fix="leave out --n-jobs (use --workers N for trials side by side), or set "
                                 "study.engine: optuna")

    def sampler(self) -> optuna.samplers.BaseSampler:
        return self.values

    def start(self, study: optuna.Study) -> None:
        index = int(os.environ.get(WORKER_INDEX_ENV) or 0)
        project = study.study_name if index == 0 else f"{study.study_name}.worker{index}"
        self._folder_lock = _lock_project(RESULTS_DIR / "keras_tuner" / project, study.study_name)
        self.project = project
        self.tuner = _make_tuner(self.kind, self.options, self.space, self.model, self.cap, project, index)
        self._end_orphans(study)

    def has_next(self) -> bool:
        if self._pending is None:
            trial = self.tuner.oracle.create_trial(self.tuner.tuner_id)
            if trial.status != TrialStatus.RUNNING:
                return False  # STOPPED: Hyperband's iterations are done, or the space is exhausted
            self._pending = trial
        return True

    def plan(self, trial: optuna.Trial) -> TrialPlan:
        retry_of = trial.user_attrs.get(records.RETRY_OF)
        if retry_of is not None:
            kt_trial = self._retry(trial.study, int(retry_of))
        else:
            if self._pending is None and not self.has_next():
                raise RuntimeError("KerasTuner has no trial to run")  # has_next() was asked before ask()
            kt_trial, self._pending = self._pending, None
            self._running[trial.number] = kt_trial
        hp = kt_trial.hyperparameters
        self.values.values = hp.values  # live: the build adds what it declares
        reached = track_reached(hp)
        config = self.model.config(hp)  # the space's own values, declared on hp
        values = hp.values
        past = values.get("tuner/trial_id")
        start = None
        if past is not None and retry_of is None:
            start = Checkpoint(Path(self.tuner._get_checkpoint_fname(past)), int(values["tuner/initial_epoch"]))
        save_best = None
        if retry_of is None:
            save_best = tuner_utils.SaveBestEpoch(
                objective=self.tuner.oracle.objective, filepath=self.tuner._get_checkpoint_fname(kt_trial.trial_id))

        def build(_config: TrialConfig) -> keras.Model:
            model = self.model.build(hp)
            if start is not None and not model.built:  # a model built on first call: as KerasTuner does
                model.build_from_config(kt_utils.load_json(self.tuner._get_build_config_fname(past)))
            _record(trial, hp, reached)
            return model

        def fit(model: keras.Model, *args: Any, **kwargs: Any) -> Any:
            try:
                returned = self.model.fit(hp, model, *args, **kwargs)
            finally:
                _record(trial, hp, reached)  # and those a fit(hp, model, ...) declared: a tuned batch size
            if save_best is not None:  # what a later trial that continues this one builds from
                kt_utils.save_json(self.tuner._get_build_config_fname(kt_trial.trial_id),
                                            model.get_build_config())
            return returned

        return TrialPlan(
            config,
            build_fn=build,
            fit_fn=fit,
            start=start,
            stop_at=values.get("tuner/epochs"),
            callbacks=[save_best] if save_best is not None else [],
            user_attrs={records.KT_TRIAL: _kt_view(kt_trial, self.project)},
        )

    def trial_ended(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        kt_trial = self._running.pop(trial.number, None)
        if kt_trial is None:  # a retry: outside KerasTuner's bookkeeping
            return
        history = outcome.history or {}
        metric = self.space.objectives[0].metric
        if outcome.state in (COMPLETE, PRUNED) and history.get(metric):
            objective = self.tuner.oracle.objective
            results = keras.callbacks.History()
            results.history = {k: list(v) for k, v in history.items()}
            self.tuner.oracle.update_trial(
                kt_trial.trial_id, tuner_utils.convert_to_metrics_dict(results, objective),
                step=tuner_utils.get_best_step(results, objective),
            )
            kt_trial.status = TrialStatus.COMPLETED
        else:  # failed or interrupted: the toolkit's own retry runs it again, KerasTuner's does not
            kt_trial.status = TrialStatus.FAILED
            kt_trial.message = outcome.reason
        self.tuner.oracle.end_trial(kt_trial)
        self.tuner.save()

    def close(self, finished: bool) -> None:
        # A trial created for a place the study's end did not use stays KerasTuner's ongoing trial: its next run
        # runs it first (see _end_orphans).
        self._pending = None
        if self._folder_lock is not None:
            os.close(self._folder_lock)
            self._folder_lock = None

    def _retry(self, study: optuna.Study, number: int) -> Any:
        """A KerasTuner trial with the values of trial ``number`` (a dead or interrupted trial, maybe another
        worker's), trained from scratch for the epochs it had, outside this oracle's bookkeeping."""
        failed = study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, number))
        hp = self.tuner.oracle.get_space()
        hp.values.update(failed.params)
        view = failed.user_attrs.get(records.KT_TRIAL) or {}
        if "epochs" in view:  # Hyperband's: from scratch to the epoch it was to reach
            hp.values["tuner/epochs"] = view["epochs"]
        return KtTrial(hyperparameters=hp, trial_id=f"retry-{number}")

    def _end_orphans(self, study: optuna.Study) -> None:
        """KerasTuner queues the trials its last run left going (it reloads them as to be retried). One that a
        trial of the study ran was interrupted or its worker died: the toolkit retries that configuration itself,
        so KerasTuner's ends as failed. One that never started (created as the study ended) stays queued, and
        KerasTuner runs it next."""
        oracle = self.tuner.oracle
        ran = {(view.get("folder", study.study_name), view.get("id"))
               for t in study.get_trials(deepcopy=False) if (view := t.user_attrs.get(records.KT_TRIAL))}
        started = [i for i in oracle._retry_queue if (self.project, i) in ran]
        for trial_id in started:
            oracle._retry_queue.remove(trial_id)
            trial = oracle.trials[trial_id]
            trial.status = TrialStatus.FAILED
            trial.message = "its run stopped (interrupted or killed); the toolkit runs it again"
            oracle.end_trial(trial)
        if started:
            self.tuner.save()


def _record(trial: optuna.Trial, hp: Any, reached: Collection[str]) -> None:
    """Record the hyperparameters the build reached on the Optuna trial, with their Optuna distributions (the
    study's sampler, :class:`KerasTunerValues`, answers each with KerasTuner's value)."""
    params, distributions = active_parameters(hp, reached)
    for name in params:
        Searched(distributions[name]).suggest(trial, name)


def _lock_project(folder: Path, study_name: str) -> int:
    """Hold an exclusive lock on a KerasTuner project folder for this process (released when it ends).

    Raises:
        UserInputError: another process runs this KerasTuner search right now.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise user_error(
            f"another process on this machine runs the KerasTuner search of study {study_name!r} "
            f"(its folder {folder} is in use)",
            received=str(folder),
            fix="wait for it, or run the study's processes with `tuning run --workers N` (each worker gets its own "
                "folder)",
        ) from None
    return fd


def _make_tuner(kind: str, options: dict[str, Any], space: SearchSpace, hypermodel: Any, cap: int | None,
                project: str, worker: int) -> Any:
    cls = getattr(keras_tuner, TUNER_CLASSES[kind])
    seed = space.study.seed
    kwargs: dict[str, Any] = {
        "hypermodel": hypermodel,
        "objective": keras_tuner.Objective(space.objectives[0].metric,
                                           "max" if space.objectives[0].direction == "maximize" else "min"),
        # KerasTuner replaces a seed of 0 by a random one (``seed or random.randint``): 0 is passed as 1, and so on;
        # each worker its own seed, so that workers do not try the same configurations.
        "seed": None if seed is None else seed + 1 + worker,
        "directory": str(RESULTS_DIR / "keras_tuner"),
        "project_name": project,
        "overwrite": False,
        "max_consecutive_failed_trials": 10**9,  # the toolkit's own guard counts failures
        **{k: v for k, v in options.items() if v is not None or k == "hyperband_iterations"},
    }
    if kind == "hyperband":
        kwargs["max_epochs"] = cap
    else:
        kwargs["max_trials"] = None  # the study's n_trials decides (the gate), not KerasTuner's count
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # "Reloading Tuner from ..." belongs in the log, not on the screen
        tuner = cls(**kwargs)
    if out.getvalue().strip():
        log.info("%s", out.getvalue().strip())
    tuner.oracle.verbose = 0  # KerasTuner's own trial tables: the progress display shows each trial instead
    return tuner


def _kt_view(kt_trial: Any, folder: str) -> dict[str, Any]:
    """KerasTuner's view of a trial, recorded on the Optuna trial: its id in its search's folder; Hyperband's
    bracket, round and epochs, and the trial it continues."""
    values = kt_trial.hyperparameters.values
    view: dict[str, Any] = {"id": kt_trial.trial_id, "folder": folder}
    for key in ("bracket", "round", "initial_epoch", "epochs", "trial_id"):
        if f"tuner/{key}" in values:
            view["continues" if key == "trial_id" else key] = values[f"tuner/{key}"]
    return view

