"""``tuning.run``: a search space in, a finished (or resumed) Optuna study out.

The steps, top-down: check everything that can be checked (nothing is written before); open the storage and the
tracking location; create or load the study; recover what dead workers left; then let Optuna run the trials
(``study.optimize``), each one a :class:`tuning.trial.TrialRunner` call planned by the study's engine
(:mod:`tuning.engines`), with the study's gate (its exact total across workers), failure guard and signals as
callbacks. Tracking and progress are :class:`~tuning.observers.StudyObserver` hooks.

``n_trials`` is the study's total: trials that ended complete or pruned count, failed ones do not. Running
the same command again resumes the study and runs only the missing trials.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import optuna

from tuning import _signals, engines
from tuning import storage as storages
from tuning._keras import import_keras
from tuning.errors import StorageLostError, TooManyFailuresError, check_study_name, user_error
from tuning.observers import ObserverList, StudyObserver
from tuning.progress import ProgressDisplay
from tuning.redact import redact_text, redact_url
from tuning.study._best_model import BestModelKeeper
from tuning.study._create import GRACE_PERIOD, HEARTBEAT_INTERVAL, create_or_load, open_storage
from tuning.study._gate import COUNTED_STATES, StudyLock, TotalGate
from tuning.study._recovery import recover, take_over_stale_trials
from tuning.study._stop import StopRule
from tuning.study._workers import announce_ready
from tuning.tracking import reconcile_runs
from tuning.trial import FailureGuard, TrialRunner

if TYPE_CHECKING:
    from tuning.data import Dataset
    from tuning.engines import Engine
    from tuning.space import SearchSpace
    from tuning.training import BuildFn


def run(
    space: SearchSpace | Mapping[str, Any] | str | os.PathLike,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    build_fn: BuildFn | None = None,
    hypermodel: Any = None,
    data: Dataset | Sequence[Any] | Mapping[str, Any] | None = None,
    n_jobs: int | None = None,
    tracking: bool = True,
    tracking_uri: str | None = None,
    keep_models: bool = False,
    register_model: str | None = None,
    observers: Sequence[StudyObserver] = (),
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    data_dir: str | os.PathLike | None = None,
    verbose: bool = True,
) -> optuna.Study:
    """Run (or resume) the study a search space describes and return it.

    Example:
        >>> import tuning
        >>> space = tuning.SearchSpace.from_yaml("search_spaces/mnist_quick.yaml")  # doctest: +SKIP
        >>> study = tuning.run(space, n_trials=3)  # doctest: +SKIP
        >>> study.best_value, study.best_params  # doctest: +SKIP

    Args:
        space: a :class:`SearchSpace`, a dict of the same structure, or the path of a YAML file.
        n_trials: the study's total of complete and pruned trials (default: ``study.n_trials``).
        timeout: the study's budget in seconds (default: ``study.timeout``): no trial starts after it, and the
            trial running when it passes stops at its next epoch's end, recorded as pruned at the budget.
        storage: an Optuna RDB storage URL (default: ``study.storage``, else ``sqlite:///mlruns/optuna.db``).
        study_name: default ``study.name``; at most 100 characters, without control characters, line breaks or
            bidirectional controls (it becomes a folder and an MLflow experiment name).
        build_fn: your own ``build_fn(config) -> keras.Model``, used instead of the ``model`` section.
        hypermodel: a KerasTuner ``build(hp)`` function or ``keras_tuner.HyperModel`` (for a space whose
            ``model`` section is ``{family: hypermodel}``); its ``hp`` values are drawn by each Optuna trial.
        data: arrays ``(x_train, y_train, x_test, y_test)``, Keras's ``((x_train, y_train), (x_test, y_test))``
            (as ``keras.datasets.mnist.load_data()`` returns them), a mapping with those keys, or a
            :class:`tuning.data.Dataset`, used instead of the ``data`` section's data set.
        data_dir: a folder holding ``<dataset>.npz``, looked in instead of ``$TUNING_DATA_DIR``.
        n_jobs: trials run at once in threads (default: ``study.n_jobs``).
        tracking: track every trial in MLflow (imports MLflow only when true).
        tracking_uri: MLflow tracking URI (default: ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns/mlflow.db``).
        keep_models: log every complete trial's model as an MLflow model, not only the best one.
        register_model: register the study's best model under this name in the MLflow model registry when
            the study ends (needs tracking). Without tracking, the best model is kept in
            ``mlruns/models/<study>/best_model.keras`` instead.
        observers: extra :class:`StudyObserver` hooks (a progress display, your own logging, ...).
        heartbeat_interval, grace_period: seconds; see :data:`tuning.study.HEARTBEAT_INTERVAL` (default:
            ``$TUNING_HEARTBEAT_INTERVAL`` and ``$TUNING_GRACE_PERIOD`` when set).
        verbose: show the study's progress on standard error, as ``tuning run`` does: the study's name, a line
            per finished trial (its value, the best so far, epochs, seconds), in a terminal a live bar with the
            running trial's epoch, and where an untracked study's best model is. ``False``: silent (the command
            line passes its own :class:`~tuning.progress.ProgressDisplay` as an observer instead).

    Returns:
        The Optuna study, loaded from its storage.

    Raises:
        UserInputError: a bad space, data, storage or tracking location; nothing has been written.
        Interrupted: Ctrl-C or SIGTERM; the running trial is recorded as failed ("interrupted").
        TooManyFailuresError: ``study.max_consecutive_failures`` trials failed in a row.
        StorageLostError: the database server went away mid-study and did not come back in time.
    """
    from tuning.space import SearchSpace

    if study_name is not None:  # it becomes a folder name and an MLflow experiment name: checked before anything
        check_study_name(study_name, "study_name")
    if not isinstance(space, SearchSpace):
        space = SearchSpace.from_dict(space) if isinstance(space, Mapping) else SearchSpace.from_yaml(space)
    if study_name is None:  # the default from the space file's name too
        check_study_name(space.study.name, "the study name (study.name, by default the space file's name)",
                         fix="pass study_name=..., or set study.name in the space")
    target = n_trials if n_trials is not None else space.study.n_trials
    if target < 1:
        raise user_error("n_trials must be at least 1", received=target, fix="pass --n-trials 1 or more")
    jobs = n_jobs or space.study.n_jobs
    engine_class = engines.get(space.study.engine)
    engine_class.check(space, n_jobs=jobs)
    if register_model is not None and not tracking:
        raise user_error(
            "registering the best model needs MLflow tracking", received=f"register_model={register_model!r} "
            "with tracking off", fix="drop --no-tracking, or drop --register-model",
        )
    # Everything that can be checked is checked before anything is written.
    url = storages.resolve_url(space.study.storage if storage is None else storage)
    storages.check_writable(url)  # a local SQLite file: writable, and a SQLite database that is empty or Optuna's
    hypermodel = _hypermodel_of(space, hypermodel, build_fn)
    dataset = _load_data(space, data, data_dir)
    _check_first_build(space, hypermodel, dataset)
    engine = engine_class(space, dataset, build_fn=build_fn, hypermodel=hypermodel)
    sampler, pruner = engine.sampler(), engine.pruner()  # their options are checked here
    heartbeat = {  # the environment variables set them for `tuning run` and its --workers
        "heartbeat_interval": heartbeat_interval
        or int(os.environ.get("TUNING_HEARTBEAT_INTERVAL") or HEARTBEAT_INTERVAL),
        "grace_period": grace_period or int(os.environ.get("TUNING_GRACE_PERIOD") or GRACE_PERIOD),
    }
    # A database server is reached before the tracking location is created, a local SQLite file is created
    # after it: whichever of the two is unusable, the other has written nothing.
    local = url.startswith("sqlite")
    backend = None if local and not storages.sqlite_file_exists(url) else open_storage(url, **heartbeat)
    hooks, tracking_uri_used, keeper = _observers(_with_progress(observers, verbose, target), dataset, tracking,
                                                  tracking_uri, keep_models, register_model, url)
    if backend is None:
        backend = open_storage(url, **heartbeat)
    with _quiet_optuna():  # "A new study created in RDB": verbose says it (tuning run has its own summary)
        study = create_or_load(space, backend, _study_name(space, study_name, hypermodel), sampler, pruner)
    lock = _take_over(study, backend, space, jobs, tracking_uri_used, heartbeat["grace_period"])

    observer = ObserverList(hooks)
    runner = TrialRunner(space, dataset, observer, engine, n_jobs=jobs)
    guard = FailureGuard(space.study.max_consecutive_failures, user_code=build_fn is not None or hypermodel is not None)
    done = len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
    if verbose and not done:  # a resumed study: the progress display says how many trials it holds
        print(f"Study {study.study_name!r}: running {target} trial{'s' if target != 1 else ''} "
              f"(storage {redact_url(url)}).", file=sys.stderr)
    gate = TotalGate(
        target, grace_period=heartbeat["grace_period"], tracking_uri=tracking_uri_used,
        poll=min(2.0, heartbeat["heartbeat_interval"]), check_signals=_signals.stop_if_signalled, lock=lock,
    )
    budget = timeout if timeout is not None else space.study.timeout
    stop_rule = StopRule.of(space.study.stop_after, n_trials=target, timeout=budget)
    interrupted = False
    observer.study_started(study, space)
    announce_ready()  # tuning run --workers: the study and its MLflow run exist, the others may start
    try:
        if _signals.received:  # a Ctrl-C whose KeyboardInterrupt Python swallowed while the study was being set up
            raise KeyboardInterrupt
        with _signals.handling(_signals.raise_interrupted), _quiet_optuna(), _long_lived_objects_frozen():
            _optimize(study, engine, runner, gate, guard, stop_rule, observer, budget=budget, jobs=jobs)
    except KeyboardInterrupt:
        interrupted = True
        raise
    except Exception as exc:
        reported = _storage_error(exc, url, local)
        if reported is exc:
            raise
        interrupted = True  # the runs of the study and of its running trial end as KILLED
        raise reported from (None if isinstance(reported, StorageLostError) else exc)
    finally:
        with _signals.handling(_signals.exit_now):
            observer.study_finished(study, interrupted)
        _signals.received.clear()  # acted on: the next run in this process starts afresh
    if guard.tripped:
        raise TooManyFailuresError(guard.message())
    if verbose and keeper is not None and keeper.path is not None and keeper.path.exists():
        print(f"Best model: {keeper.path} (keras.saving.load_model; see best_model.json)", file=sys.stderr)
    return study


def _take_over(study: optuna.Study, backend: Any, space: SearchSpace, jobs: int, tracking_uri: str | None,
               grace_period: int) -> StudyLock | None:
    """Make the opened study this worker's: ride out database restarts, fail and queue again what dead workers
    left (their MLflow runs ended), queue the baselines; returns the study's lock (None for ``n_jobs`` threads)."""
    storages.ride_out_restarts(backend)  # from now on a database restart is waited out, not bad input
    # Trials of dead workers (this host at once, others by heartbeat): failed with their reason, re-run once,
    # their runs KILLED; by recover() only, here and before every trial (Optuna's own check records no reason).
    take_over_stale_trials(backend)
    # Threads (n_jobs > 1) ask for trials in whichever thread is free, not in the one the gate let in.
    lock = StudyLock(backend, study.study_name) if jobs == 1 else None
    recover(study, tracking_uri=tracking_uri, grace_period=grace_period, lock=lock)
    if tracking_uri:
        reconcile_runs(tracking_uri, study, grace_period=grace_period)
    for params in space.enqueued():
        study.enqueue_trial(params, skip_if_exists=True)
    return lock


def _optimize(study: optuna.Study, engine: Engine, runner: TrialRunner, gate: TotalGate, guard: FailureGuard,
              stop_rule: StopRule | None, observer: StudyObserver, *, budget: float | None, jobs: int) -> None:
    """Run trials until the study's total, the budget, the stop rule, the engine's last configuration or too many
    failures.

    Keras is imported before the budget's and the first trial's clocks start; the gate looks at the storage
    again after the import (it takes seconds on a loaded machine, in which other workers may finish the study).
    """
    if not gate.room(study):
        return  # nothing to do: a finished study does not import TensorFlow
    import_keras()
    engine.start(study)
    try:
        next_trial = _next_trial(gate, engine, stop_rule, observer)
        if not next_trial(study, None):
            return
        runner.deadline = gate.deadline = None if budget is None else time.monotonic() + budget
        _signals.defer()
        study.optimize(
            gate.releasing(runner),
            n_trials=None,
            timeout=budget,
            n_jobs=jobs,
            catch=(Exception,),
            callbacks=[guard, next_trial, _signals.stop_if_signalled, _signals.defer],
            gc_after_trial=False,  # training releases memory itself, before each trial
        )
        _signals.undefer()
        _signals.stop_if_signalled()  # a signal deferred while the last ask() found nothing more to do
    finally:
        gate.release()  # held when the gate found room but no trial was created (time up, Ctrl-C)
        engine.close(finished=_reached_total(study, gate.total))


def _reached_total(study: optuna.Study, total: int) -> bool:
    """Whether the study holds its total of counted trials and runs none (False when the storage cannot tell)."""
    try:
        trials = study.get_trials(deepcopy=False, states=(*COUNTED_STATES, optuna.trial.TrialState.RUNNING))
    except Exception:  # the storage failed under the study: the error that stopped it is raised next
        return False
    running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    return not running and len(trials) >= total


def _next_trial(gate: TotalGate, engine: Engine, stop_rule: StopRule | None, observer: StudyObserver) -> Any:
    """Whether a trial may start now (asked before the first trial, and an Optuna callback after each, which stops
    the study otherwise): the study's total leaves room (the gate, which then holds the study's lock until the next
    trial exists), its best value still improves (``study.stop_after``) and the engine has a configuration."""

    def may_start(study: optuna.Study) -> bool:
        if not gate.room(study, claim=True):
            return False
        reason = stop_rule.reason(study) if stop_rule is not None else None
        if reason is not None:
            gate.release()
            observer.stopped_early(study, reason)
            return False
        return engine.has_next()

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial | None) -> bool:
        if may_start(study):
            return True
        if trial is not None:  # inside study.optimize
            study.stop()
        return False

    return callback


def _storage_error(exc: Exception, url: str, local: bool) -> Exception:
    """``exc`` as the command should report it: a database server gone for good (exit 3), a storage failing
    under the study (a full disk, a damaged file: exit 1), or ``exc`` itself."""
    if not local and storages.lost_connection(exc):  # a database server gone longer than the retries waited
        return StorageLostError(
            f"lost the Optuna storage {redact_url(url)} for more than {storages.retry_seconds():.0f} s: "
            f"{redact_text(storages.first_line(exc))}. Every finished trial is saved; run the same command "
            "again once the database server is back (TUNING_STORAGE_RETRY_SECONDS waits longer)."
        )
    if storages.is_storage_failure(exc):
        return storages.storage_failure(url, exc)
    return exc


def _observers(
    given: Sequence[StudyObserver], dataset: Dataset, tracking: bool, tracking_uri: str | None, keep_models: bool,
    register_model: str | None, url: str,
) -> tuple[list[StudyObserver], str | None, BestModelKeeper | None]:
    """The study's observers: MLflow tracking (its location checked now) or the best-model keeper, then
    ``given``; with the tracking URI in use and the keeper."""
    hooks: list[StudyObserver] = list(given)
    if not tracking:
        keeper = BestModelKeeper(dataset.input_description())
        return [keeper, *hooks], None, keeper
    from tuning.tracking import MlflowTracker

    tracker = MlflowTracker(
        tracking_uri, keep_models=keep_models, storage_url=url, register_model=register_model,
        input_example=dataset.x_val[:3], model_metadata=dataset.input_description(),
    )
    tracker.check()
    return [tracker, *hooks], tracker.tracking_uri, None


def _hypermodel_of(space: SearchSpace, given: Any, build_fn: Any) -> Any:
    """The study's KerasTuner hypermodel (``hypermodel=`` or ``model.hypermodel``), loaded; None for other families.

    Raises:
        UserInputError: a hypermodel for another family, both a hypermodel and a build_fn, none for a
            ``hypermodel`` space, or one that cannot be loaded.
    """
    if space.family != "hypermodel":
        if given is not None:
            raise user_error("hypermodel= needs a space with model.family: hypermodel",
                             received=f"model.family: {space.family}", fix="write model: {family: hypermodel}")
        return None
    if build_fn is not None:
        raise user_error("pass either build_fn= or hypermodel=, not both", fix="keep hypermodel= for a build(hp)")
    from tuning import hypermodel as bridge

    return bridge.as_hypermodel(given) if given is not None else bridge.for_space(space)


def _with_progress(observers: Sequence[StudyObserver], verbose: bool, n_trials: int) -> list[StudyObserver]:
    """``observers`` and, when ``verbose`` and none is given, the command line's progress display on standard
    error (a live bar in a terminal; in a notebook, a log or a pipe only its lines: one per finished trial)."""
    if not verbose or any(isinstance(o, ProgressDisplay) for o in observers):
        return list(observers)
    from rich.console import Console

    return [*observers, ProgressDisplay(Console(stderr=True, highlight=False, soft_wrap=True), n_trials)]


def _study_name(space: SearchSpace, given: str | None, hypermodel: Any) -> str:
    """The study's name: ``given``, else the space's. A space given as a dict without ``study.name`` is named
    after a hash of its sections (:meth:`SearchSpace.default_name`); with a hypermodel, after the hypermodel's
    build function or class too (``build_model-3f2a1c9d``), so that two hypermodels are two studies."""
    if given:
        return given
    if hypermodel is not None and space.study.name == space.default_name():
        label = re.sub(r"[^\w.-]", "", getattr(hypermodel, "name", None) or type(hypermodel).__name__)
        return space.default_name(label or "tuning")
    return space.study.name


def _check_first_build(space: SearchSpace, hypermodel: Any, dataset: Dataset) -> None:
    """Build a hypermodel once with default values, as KerasTuner does, before any trial is stored: a build that
    raises or returns no Keras model, a model that does not fit the data, or a hyperparameter named like a key of
    the space is refused (:func:`tuning.hypermodel.check_first_build`), instead of failing every trial."""
    if hypermodel is None:
        return
    from tuning import hypermodel as bridge

    bridge.check_first_build(hypermodel, space, dataset, reference=space.specs["model.hypermodel"].value)


def _load_data(space: SearchSpace, data: Any, data_dir: str | os.PathLike | None) -> Dataset:
    from tuning import data as data_module

    if isinstance(data, data_module.Dataset):
        return data
    if data is None:
        return data_module.load_spec(space.data, data_dir=data_dir)
    spec = space.data
    return data_module.from_arrays(
        data,
        train_size=spec.train_size,
        validation_split=spec.validation_split,
        test_size=spec.test_size,
        seed=spec.seed,
    )


@contextmanager
def _long_lived_objects_frozen() -> Iterator[None]:
    """Keep what exists before the first trial (modules, data, storage: half a million objects once TensorFlow,
    Optuna and MLflow are loaded) out of the garbage collector's full passes while trials run.

    Each trial starts with a full collection (``clear_session``) and Keras allocates enough per step to trigger
    more; every one of them walked all those objects again (0.1 to 0.5 s each here). New objects are collected as
    usual; the old ones are unfrozen afterwards. No collection first: it would cost a study 0.2-0.4 s to save the
    little garbage that lives until the study ends.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's own per-trial log lines would repeat the progress display; keep its errors only."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
