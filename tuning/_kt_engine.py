"""The KerasTuner engine (``study.engine: keras_tuner``): KerasTuner's own tuners pick the configurations, the
toolkit records every trial in the same Optuna study, tracking and reports as the Optuna engine.

A real ``keras_tuner.Hyperband``, ``RandomSearch`` or ``BayesianOptimization`` runs the search, with the study's
seed and its working folder under ``mlruns/keras_tuner/<study>`` (``overwrite=False``: a second run resumes it).
Each KerasTuner trial becomes one finished Optuna trial: its active hyperparameters with their Optuna
distributions (:func:`tuning.hypermodel.to_distribution`), one intermediate value per epoch, its state and
duration, and the same user attributes (:mod:`tuning.records`) the Optuna engine writes. The runner's observers
(tracking, progress) see the same hooks in the same order, so ``tuning report`` and ``tuning studies`` need
nothing new.

Built-in families run through :class:`SpaceHyperModel`: :meth:`SearchSpace.suggest` only calls
``trial.suggest_int/float/categorical(name, ...)``, so :class:`HpTrial`, whose methods call ``hp.Int``,
``hp.Float`` and ``hp.Choice`` under the same names, turns every built-in space into a ``build(hp)``; per-layer
parameters beyond the first are declared inside ``hp.conditional_scope`` on ``model.depth``, so KerasTuner samples
(and the study records) only the layers that exist. Under Hyperband ``train.epochs`` is not a hyperparameter:
its upper bound is Hyperband's ``max_epochs`` and each trial trains the epochs Hyperband gives it.

Example:
    >>> space = SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 2},
    ...                                "study": {"engine": "keras_tuner"}})  # doctest: +SKIP
    >>> tuning.run(space).trials_dataframe()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from tuning import _study, records
from tuning._defaults import RESULTS_DIR
from tuning._epoch_watch import EpochWatch
from tuning._runner import INTERRUPTED, _describe, _FailureGuard, _stop_if_signalled
from tuning.errors import NotLearningError
from tuning.hypermodel import to_distribution
from tuning.observers import COMPLETE, FAILED, PRUNED, StudyObserver, TrialOutcome
from tuning.space._specs import Fixed

if TYPE_CHECKING:
    from tuning.data import Dataset
    from tuning.space import SearchSpace, TrialConfig
    from tuning.training import BuildFn

log = logging.getLogger("tuning")

#: ``study.tuner.type`` → the KerasTuner tuner class name.
TUNERS = {"hyperband": "Hyperband", "random": "RandomSearch", "bayesian": "BayesianOptimization"}
#: Trial user attribute: KerasTuner's own view of the trial (its id; Hyperband's bracket, round, epochs).
KT_TRIAL = "keras_tuner_trial"
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
    """A space as a KerasTuner hypermodel: ``build(hp)`` builds and compiles, ``fit`` trains.

    The space's searched ``train`` values are declared on ``hp`` (through :class:`HpTrial`), then the model comes
    from the built-in family, from ``build_fn(config)``, or from the user's hypermodel (``user``: its ``build(hp)``
    and ``fit(hp, model, ...)``, unchanged). A model the build compiled keeps its optimizer and loss; an
    uncompiled one is compiled from ``train``. ``fit`` honours KerasTuner's ``epochs``/``initial_epoch``/
    ``callbacks`` (Hyperband) and takes the batch size, the epochs (other tuners) and early stopping from the
    trial's ``train`` values; a model compiled with ``categorical_crossentropy`` gets one-hot labels.

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
        from tuning.training import make_optimizer

        config = self.config(hp)
        keras.mixed_precision.set_dtype_policy(self.precision(config))
        if self.user is not None:
            model = self.user.build(hp)
        elif self.build_fn is not None:
            model = self.build_fn(config)
        else:
            model = build_model(config.model, self.data.input_shape, self.data.num_classes, config.train.augmentation)
        if not getattr(model, "compiled", False):
            steps = -(-len(self.data.x_train) // config.train.batch_size)
            model.compile(optimizer=make_optimizer(config.train, steps_per_epoch=steps),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def precision(self, config: TrialConfig) -> str:
        """The Keras dtype policy the trial trains with (``train.precision: auto`` resolved)."""
        from tuning._precision import resolve

        return resolve(config.train.precision)[0]

    def fit(self, hp: Any, model: keras.Model, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        from tuning.training import _early_stopping, _plateau, _wants_one_hot, objective_monitor

        config = self.config(hp)
        if "tuner/epochs" not in hp.values:  # Hyperband passes its own epochs and initial_epoch
            kwargs["epochs"] = config.train.epochs
        kwargs["batch_size"] = config.train.batch_size
        stopping = _early_stopping(config.train, objective_monitor(self.space))
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), *stopping, *_plateau(config.train)]
        if _wants_one_hot(model):
            x_val, y_val = kwargs["validation_data"]
            y, y_val = (keras.ops.one_hot(labels, self.data.num_classes) for labels in (y, y_val))
            kwargs["validation_data"] = (x_val, y_val)
        if self.user is not None:
            return self.user.fit(hp, model, x, y, *args, **kwargs)
        return model.fit(x, y, *args, **kwargs)


class _TrialWatch(EpochWatch):
    """The toolkit's watchdogs plus the Optuna record: the trial is created when training begins (after the
    build, so every reached hyperparameter is known) and gets one intermediate value per epoch."""

    def __init__(self, recorder: _Recorder, kt_trial: Any, seed: int) -> None:
        super().__init__(recorder.train_defaults, recorder.data.chance_accuracy, self._on_epoch)
        self.recorder = recorder
        self.kt_trial = kt_trial
        self.reached = track_reached(kt_trial.hyperparameters)  # before the build declares them
        self.seed = seed
        self.trial: optuna.Trial | None = None
        self.started = 0.0
        self.seconds = 0.0

    def __deepcopy__(self, memo: Any) -> _TrialWatch:  # KerasTuner deep-copies the search's callbacks
        return self

    def on_train_begin(self, logs: Any = None) -> None:
        self.start(int(self.params.get("epochs") or 0))
        self.started = time.perf_counter()

    def on_train_end(self, logs: Any = None) -> None:
        self.seconds = time.perf_counter() - self.started

    def start(self, epochs: int) -> optuna.Trial:
        """The trial's Optuna record, created (and announced to the observers) once."""
        if self.trial is None:
            self.trial = self.recorder.start(self.kt_trial, self.seed, epochs, self.reached)
        return self.trial

    def _on_epoch(self, epoch: int, logs: Mapping[str, float]) -> str | None:
        _stop_if_signalled()
        assert self.trial is not None
        self.recorder.observer.epoch_ended(self.trial, epoch, logs)
        value = logs.get(self.recorder.metric)
        if value is not None and math.isfinite(value):
            self.trial.report(value, epoch)
        deadline = self.recorder.deadline
        if deadline is not None and time.monotonic() >= deadline:
            return f"stopped at epoch {epoch}: the study's time budget ran out"
        return None


class _Recorder:
    """Writes KerasTuner trials into the Optuna study and drives the observers, as the Optuna engine's objective."""

    def __init__(self, study: optuna.Study, storage: Any, space: SearchSpace, data: Dataset,
                 observer: StudyObserver, hypermodel: SpaceHyperModel) -> None:
        from tuning.space import TrainConfig

        self.study = study
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.space = space
        self.data = data
        self.observer = observer
        self.hypermodel = hypermodel
        self.metric = space.objectives[0].metric
        self.deadline: float | None = None  # time.monotonic() at which the study's budget runs out
        chance = space.specs["train.chance_epochs"]
        self.train_defaults = TrainConfig(epochs=1, chance_epochs=chance.value if isinstance(chance, Fixed) else 0)

    def start(self, kt_trial: Any, seed: int, epochs: int, reached: Collection[str]) -> optuna.Trial:
        hp = kt_trial.hyperparameters
        params, distributions = active_parameters(hp, reached)
        attrs = {records.SEED: seed, records.WORKER: _study.worker_id(), KT_TRIAL: _kt_view(kt_trial)}
        template = optuna.trial.create_trial(state=TrialState.RUNNING, params=params, distributions=distributions,
                                             user_attrs=attrs)
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        trial = optuna.trial.Trial(self.study, trial_id)
        config = self._config(hp, epochs)
        self.observer.trial_started(trial, config)
        return trial

    def _config(self, hp: Any, epochs: int) -> TrialConfig:
        config = self.hypermodel.config(hp)
        return replace(config, train=replace(config.train, epochs=epochs or config.train.epochs))

    def finish(self, watch: _TrialWatch, outcome: TrialOutcome) -> None:
        """Set the user attributes, tell the observers, then record the trial's end in the storage."""
        trial = watch.start(0)
        attrs = dict(outcome.user_attrs)
        if outcome.reason:
            attrs[records.REASON] = outcome.reason
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        outcome.user_attrs = attrs
        self.observer.trial_finished(trial, outcome)
        if outcome.state == COMPLETE:
            self.study.tell(trial, values=outcome.values, skip_if_finished=True)
        elif outcome.state == PRUNED:
            self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)

    def finish_trained(self, watch: _TrialWatch, model: keras.Model | None, returned: Any) -> None:
        """Record a trial whose training returned: complete, pruned (chance level) or failed (diverged).

        ``returned`` is what the hypermodel's ``fit`` returned: its final metrics count when a custom ``fit``
        trained without Keras epochs.
        """
        from tuning.training import _returned_metrics, test_accuracy

        watch.start(0)
        history = watch.history or _returned_metrics(returned)
        attrs: dict[str, Any] = {
            records.EPOCHS: len(history.get("loss", [])),
            records.TRAIN_SECONDS: round(watch.seconds, 3),
            records.PARAM_COUNT: int(model.count_params()) if model is not None else 0,
            records.HISTORY: history,
            records.PRECISION: self.hypermodel.precision(self.hypermodel.config(watch.kt_trial.hyperparameters)),
        }
        values = history.get(self.metric)
        if watch.state == COMPLETE and not values:
            reason = f"the model reported no metric {self.metric!r}; it reported {sorted(history)}"
            self.finish(watch, TrialOutcome(FAILED, reason=reason, history=history, user_attrs=attrs))
        elif watch.state == COMPLETE:
            tested = model is not None and _study.worth_testing(self.study, [values[-1]], self.space.study.test_on)
            accuracy = test_accuracy(model, self.data) if tested else None
            if accuracy is not None:
                attrs[records.TEST_ACCURACY] = accuracy
            # The last epoch's value, as the Optuna engine records (KerasTuner ranks by the best epoch).
            self.finish(watch, TrialOutcome(COMPLETE, values=[values[-1]], model=model, history=history,
                                            user_attrs=attrs))
        else:
            state = PRUNED if watch.state == PRUNED else FAILED
            self.finish(watch, TrialOutcome(state, reason=watch.reason, history=history, user_attrs=attrs))



class _Recording:
    """Mixed into a KerasTuner tuner class: each trial is recorded, and the search stops when the study is done."""

    recorder: _Recorder
    remaining: Callable[[], int]
    oracle: Any

    def pre_create_trial(self) -> None:
        # KerasTuner counts every trial it ever made (failed ones, earlier runs); the study counts complete and
        # pruned ones: its limit is moved before every trial so that the study's n_trials decides.
        self.oracle.max_trials = max(1, len(self.oracle.trials) + self.remaining())

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        from tuning.training import _forget_custom_gradients

        # KerasTuner clears the Keras session and collects garbage before each build; the toolkit adds what
        # clear_session() misses (the previous trials' custom gradients, see tuning.training.release_memory).
        _forget_custom_gradients()
        seed = _study.trial_seed(self.recorder.space.study.seed, int(trial.trial_id))
        keras.utils.set_random_seed(seed)
        watch = _TrialWatch(self.recorder, trial, seed)
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), watch]
        try:
            results = super().run_trial(trial, *args, **kwargs)  # type: ignore[misc]
        except KeyboardInterrupt:
            watch.start(0)
            self.recorder.finish(watch, TrialOutcome(INTERRUPTED, reason=INTERRUPTED, history=watch.history))
            raise
        except Exception as exc:
            watch.start(0)
            self.recorder.finish(watch, TrialOutcome(FAILED, reason=_describe(exc), history=watch.history))
            raise
        returned = results[-1] if isinstance(results, list) and results else results
        self.recorder.finish_trained(watch, watch.model, returned)
        if watch.state == FAILED:
            raise NotLearningError(watch.reason)  # KerasTuner marks the trial invalid and goes on
        return results


def search(
    study: optuna.Study,
    storage: Any,
    space: SearchSpace,
    data: Dataset,
    observer: StudyObserver,
    *,
    target: int,
    timeout: float | None,
    guard: _FailureGuard,
    build_fn: BuildFn | None = None,
    hypermodel: Any = None,
) -> None:
    """Run the space's KerasTuner tuner until ``target`` trials of the study are complete or pruned.

    The search also ends when the tuner itself is done (Hyperband's ``hyperband_iterations``), when ``guard`` trips
    (``study.max_consecutive_failures`` failed trials in a row), or when the ``timeout`` budget (seconds) runs out:
    no trial starts after it, and the running one stops at its next epoch's end, recorded as pruned.

    ``build_fn`` (a builder of a built-in family's configuration) or ``hypermodel`` (a ``keras_tuner.HyperModel``
    for ``model.family: hypermodel``, used unchanged) replace the family's own builder.

    Example:
        >>> search(study, storage, space, dataset, observer, target=10, timeout=None,
        ...        guard=_FailureGuard(5))  # doctest: +SKIP
    """
    from tuning.training import _as_tensors

    options = dict(space.study.tuner or {"type": "hyperband"})
    kind = options.pop("type")
    cap = space.max_epochs() if kind == "hyperband" else None
    model = SpaceHyperModel(space, data, build_fn, cap, user=hypermodel)
    recorder = _Recorder(study, storage, space, data, observer, model)
    recorder.deadline = None if timeout is None else time.monotonic() + timeout

    def remaining() -> int:
        if guard.tripped or (recorder.deadline is not None and time.monotonic() >= recorder.deadline):
            return 0
        return max(0, target - len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))))

    tuner = _make_tuner(kind, options, space, model, cap, target, study.study_name)
    tuner.recorder = recorder
    tuner.remaining = remaining
    tuner.on_trial_end = _counting(tuner, study, guard)
    x_train, y_train, x_val, y_val = _as_tensors(data)[:4]
    fit: dict[str, Any] = {"validation_data": (x_val, y_val), "verbose": 0}
    with warnings.catch_warnings(), _kt_tracebacks_off():
        # A Hyperband trial that continues an earlier one loads its weights before the optimizer is built:
        # Keras warns on every such trial that the optimizer's saved state is skipped (it starts afresh).
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        tuner.search(x_train, y_train, **fit)


@contextlib.contextmanager
def _kt_tracebacks_off() -> Iterator[None]:
    """KerasTuner prints the traceback of every failed trial to standard error (its ``config.DEBUG``, on by
    default); the toolkit records the reason on the trial and shows it in the progress display instead."""
    from keras_tuner.src import config

    previous = config.DEBUG
    config.DEBUG = False
    try:
        yield
    finally:
        config.DEBUG = previous


def _counting(tuner: Any, study: optuna.Study, guard: _FailureGuard) -> Callable[[Any], None]:
    """``on_trial_end`` that also feeds the study's last trial to the failure guard."""
    on_trial_end = tuner.on_trial_end

    def counted(kt_trial: Any) -> None:
        on_trial_end(kt_trial)
        last = study.get_trials(deepcopy=False)[-1:]
        if last:
            guard.record(last[0])

    return counted


def _make_tuner(kind: str, options: dict[str, Any], space: SearchSpace, hypermodel: Any, cap: int | None,
                target: int, study_name: str) -> Any:
    base = getattr(keras_tuner, TUNERS[kind])
    cls = type(f"Recording{base.__name__}", (_Recording, base), {})
    seed = space.study.seed
    kwargs: dict[str, Any] = {
        "hypermodel": hypermodel,
        "objective": keras_tuner.Objective(space.objectives[0].metric,
                                           "max" if space.objectives[0].direction == "maximize" else "min"),
        # KerasTuner replaces a seed of 0 by a random one (``seed or random.randint``): 0 is passed as 1, and so on.
        "seed": None if seed is None else seed + 1,
        "directory": str(RESULTS_DIR / "keras_tuner"),
        "project_name": study_name,  # --study-name included: one folder per Optuna study
        "overwrite": False,
        "max_consecutive_failed_trials": 10**9,  # the toolkit's own guard counts failures
        **{k: v for k, v in options.items() if v is not None or k == "hyperband_iterations"},
    }
    if kind == "hyperband":
        kwargs["max_epochs"] = cap
    else:
        kwargs["max_trials"] = target
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # "Reloading Tuner from ..." belongs in the log, not on the screen
        tuner = cls(**kwargs)
    if out.getvalue().strip():
        log.info("%s", out.getvalue().strip())
    return tuner


def _kt_view(kt_trial: Any) -> dict[str, Any]:
    values = kt_trial.hyperparameters.values
    view: dict[str, Any] = {"id": kt_trial.trial_id}
    for key in ("bracket", "round", "initial_epoch", "epochs", "trial_id"):
        if f"tuner/{key}" in values:
            view["continues" if key == "trial_id" else key] = values[f"tuner/{key}"]
    return view

