"""``tuning.run``: a search space in, a finished (or resumed) Optuna study out.

The loop stays thin: Optuna runs the trials, :class:`_Objective` trains one configuration, and everything
else (tracking, progress) is a :class:`~tuning.observers.StudyObserver`.

``n_trials`` is the study's total: trials that ended complete or pruned count, failed ones do not. Running
the same command again resumes the study and runs only the missing trials.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from tuning import _precision, _reconnect, _recovery, _signals, _storage, _study, _workers, records
from tuning._gate import COUNTED_STATES, StudyLock, TotalGate
from tuning._redact import redact_text, redact_url
from tuning._sampling import TrialSeededSampler
from tuning.errors import ConfigurationError, NotLearningError, StorageLostError, TooManyFailuresError, user_error
from tuning.observers import COMPLETE, FAILED, INTERRUPTED, PRUNED, ObserverList, StudyObserver, TrialOutcome

if TYPE_CHECKING:
    from tuning.data import Dataset
    from tuning.space import SearchSpace
    from tuning.training import BuildFn

log = logging.getLogger("tuning")



class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped the study; ``signum`` says which (exit code ``128 + signum``)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
        study_name: default ``study.name``.
        build_fn: your own ``build_fn(config) -> keras.Model``, used instead of the ``model`` section.
        hypermodel: a KerasTuner ``build(hp)`` function or ``keras_tuner.HyperModel`` (for a space whose
            ``model`` section is ``{family: hypermodel}``); its ``hp`` values are drawn by each Optuna trial.
        data: arrays ``(x_train, y_train, x_test, y_test)``, a mapping with those keys, or a
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
        heartbeat_interval, grace_period: seconds; see ``tuning._study.HEARTBEAT_INTERVAL`` (default:
            ``$TUNING_HEARTBEAT_INTERVAL`` and ``$TUNING_GRACE_PERIOD`` when set).
        verbose: say on standard error how many trials a resumed study holds and how many will run, and
            where an untracked study's best model is (the command line shows its own progress instead).

    Returns:
        The Optuna study, loaded from its storage.

    Raises:
        UserInputError: a bad space, data, storage or tracking location; nothing has been written.
        Interrupted: Ctrl-C or SIGTERM; the running trial is recorded as failed ("interrupted").
        TooManyFailuresError: ``study.max_consecutive_failures`` trials failed in a row.
        StorageLostError: the database server went away mid-study and did not come back in time.
    """
    from tuning.space import SearchSpace

    if not isinstance(space, SearchSpace):
        space = SearchSpace.from_dict(space) if isinstance(space, Mapping) else SearchSpace.from_yaml(space)
    target = n_trials if n_trials is not None else space.study.n_trials
    if target < 1:
        raise user_error("n_trials must be at least 1", received=target, fix="pass --n-trials 1 or more")
    name = study_name or space.study.name
    if space.study.engine == "keras_tuner" and (n_jobs or 1) > 1:
        raise user_error("the keras_tuner engine runs one trial at a time", received=f"n_jobs={n_jobs}",
                         fix="leave out --n-jobs, or set study.engine: optuna")
    if register_model is not None and not tracking:
        raise user_error(
            "registering the best model needs MLflow tracking", received=f"register_model={register_model!r} "
            "with tracking off", fix="drop --no-tracking, or drop --register-model",
        )
    # Everything that can be checked is checked before anything is written.
    pruner = _study.make_pruner(space)
    url = _storage.resolve_url(storage or space.study.storage)
    _storage.check_writable(url)  # a local SQLite file: writable, and a SQLite database that is empty or Optuna's
    hypermodel = _hypermodel_of(space, hypermodel, build_fn)
    dataset = _load_data(space, data, data_dir)
    heartbeat = {  # the environment variables set them for `tuning run` and its --workers
        "heartbeat_interval": heartbeat_interval
        or int(os.environ.get("TUNING_HEARTBEAT_INTERVAL") or _study.HEARTBEAT_INTERVAL),
        "grace_period": grace_period or int(os.environ.get("TUNING_GRACE_PERIOD") or _study.GRACE_PERIOD),
    }
    # A database server is reached before the tracking location is created, a local SQLite file is created
    # after it: whichever of the two is unusable, the other has written nothing.
    local = url.startswith("sqlite")
    storage_obj = None if local and not _study.sqlite_file_exists(url) else _study.open_storage(url, **heartbeat)
    sampler = _sampler(space)  # seeded per trial from the study seed and the trial number; checked here
    hooks: list[StudyObserver] = list(observers)
    tracker = keeper = None
    if tracking:
        from tuning.tracking import MlflowTracker

        tracker = MlflowTracker(
            tracking_uri, keep_models=keep_models, storage_url=url, register_model=register_model,
            input_example=dataset.x_val[:3], model_metadata=dataset.input_description(),
        )
        tracker.check()
        hooks.insert(0, tracker)
    else:
        from tuning._best_model import BestModelKeeper

        keeper = BestModelKeeper(dataset.input_description())
        hooks.insert(0, keeper)
    if storage_obj is None:
        storage_obj = _study.open_storage(url, **heartbeat)
    study = _study.create_or_load(space, storage_obj, name, sampler, pruner)
    _reconnect.ride_out_restarts(storage_obj)  # from now on a database restart is waited out, not bad input
    tracking_uri_used = tracker.tracking_uri if tracker is not None else None
    # Trials of dead workers (this host at once, others by heartbeat): failed with their reason, re-run once,
    # their runs KILLED; by recover() only, here and before every trial (Optuna's own check records no reason).
    _recovery.take_over_stale_trials(storage_obj)
    jobs = n_jobs or space.study.n_jobs
    # Threads (n_jobs > 1) ask for trials in whichever thread is free, not in the one the gate let in.
    lock = StudyLock(storage_obj, study.study_name) if jobs == 1 else None
    _recovery.recover(study, tracking_uri=tracking_uri_used, grace_period=heartbeat["grace_period"], lock=lock)
    if tracking_uri_used:
        _recovery.reconcile_runs(tracking_uri_used, study, grace_period=heartbeat["grace_period"])
    for params in space.enqueued():
        study.enqueue_trial(params, skip_if_exists=True)

    observer = ObserverList(hooks)
    budget = timeout if timeout is not None else space.study.timeout
    objective = _Objective(space, dataset, observer, build_fn, jobs, hypermodel)
    user_code = build_fn is not None or hypermodel is not None
    guard = _FailureGuard(space.study.max_consecutive_failures, user_code=user_code)
    done = _count(study)
    if verbose and done:
        print(resume_message(study.study_name, done, target), file=sys.stderr)
    gate = TotalGate(
        target,
        grace_period=heartbeat["grace_period"],
        tracking_uri=tracking_uri_used,
        poll=min(2.0, heartbeat["heartbeat_interval"]),
        check_signals=_stop_if_signalled,
        lock=lock,
    )
    interrupted = False
    observer.study_started(study, space)
    _workers.announce_ready()  # tuning run --workers: the study and its MLflow run exist, the others may start
    try:
        if _signalled:  # a Ctrl-C whose KeyboardInterrupt Python swallowed while the study was being set up
            raise KeyboardInterrupt
        with _on_signals(_raise_interrupted), _quiet_optuna(), _long_lived_objects_frozen():
            try:
                if _room_after_importing_keras(gate, study, claim=space.study.engine == "optuna"):
                    if verbose:
                        print(_precision.describe(space.specs["train.precision"].value), file=sys.stderr)
                    objective.deadline = gate.deadline = None if budget is None else time.monotonic() + budget
                    if space.study.engine == "keras_tuner":
                        from tuning import _kt_engine

                        _kt_engine.search(study, storage_obj, space, dataset, observer, target=target,
                                          timeout=budget, guard=guard, build_fn=build_fn, hypermodel=hypermodel)
                    else:
                        _defer_signals()
                        study.optimize(
                            gate.releasing(objective),
                            n_trials=None,
                            timeout=budget,
                            n_jobs=jobs,
                            catch=(Exception,),
                            callbacks=[guard, gate, _stop_if_signalled, _defer_signals],
                            gc_after_trial=False,  # training releases memory itself, before each trial
                        )
            finally:
                gate.release()  # held when the gate found room but no trial was created (time up, Ctrl-C)
            _deferring.clear()
            _stop_if_signalled()  # a signal deferred while the last ask() found nothing more to do
    except KeyboardInterrupt:
        interrupted = True
        raise
    except Exception as exc:
        if not local and _reconnect.lost_connection(exc):  # a database server gone longer than the retries waited
            interrupted = True
            raise StorageLostError(
                f"lost the Optuna storage {redact_url(url)} for more than {_reconnect.retry_seconds():.0f} s: "
                f"{redact_text(_reconnect.first_line(exc))}. Every finished trial is saved; run the same command "
                "again once the database server is back (TUNING_STORAGE_RETRY_SECONDS waits longer)."
            ) from None
        if not _storage.is_storage_failure(exc):
            raise
        interrupted = True  # the runs of the study and of its running trial end as KILLED
        raise _storage.storage_failure(url, exc) from exc
    finally:
        with _on_signals(_exit_now):
            observer.study_finished(study, interrupted)
        _signalled.clear()  # acted on: the next run in this process starts afresh
    if guard.tripped:
        raise TooManyFailuresError(guard.message())
    if verbose and keeper is not None and keeper.path is not None and keeper.path.exists():
        print(f"Best model: {keeper.path} (keras.saving.load_model; see best_model.json)", file=sys.stderr)
    return study


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


def _count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


def _sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The space's sampler, seeded per trial from the study seed (see :mod:`tuning._sampling`)."""
    if space.study.sampler["type"] == "qmc":  # its seed is its scrambling: one for the whole study
        return _study.make_sampler(space, space.study.seed)
    return TrialSeededSampler(lambda seed: _study.make_sampler(space, seed), space.study.seed)


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


class _Objective:
    """Trains one trial's configuration and records what happened on the trial."""

    def __init__(
        self, space: SearchSpace, data: Dataset, observer: StudyObserver, build_fn: BuildFn | None, n_jobs: int,
        hypermodel: Any = None,
    ) -> None:
        self.space = space
        self.deadline: float | None = None  # time.monotonic() at which the study's budget runs out
        self.n_jobs = n_jobs
        self.data = data
        self.observer = observer
        self.build_fn = build_fn
        self.hypermodel = hypermodel
        self.metrics = [o.metric for o in space.objectives]
        # Optuna prunes single-objective studies only, on a metric Keras reports every epoch.
        single = len(self.metrics) == 1 and self.metrics[0] not in records.MEASURED_OBJECTIVES
        self.reported = self.metrics[0] if single else None
        self.pruner_name = space.study.pruner["type"]
        from tuning.training import objective_monitor

        self.monitor = objective_monitor(space)  # what train.early_stopping watches

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        from tuning.training import test_accuracy, train

        config = self.space.suggest(trial)
        seed = _study.trial_seed(self.space.study.seed, trial.number)
        trial.set_user_attr(records.SEED, seed)
        trial.set_user_attr(records.WORKER, _study.worker_id())
        if os.environ.get("TUNING_GPU"):
            trial.set_user_attr(records.DEVICE, f"GPU {os.environ['TUNING_GPU']}")
        _deferring.clear()  # the trial is recorded with its worker: a signal may interrupt it now
        self.observer.trial_started(trial, config)
        build_fn, fit_fn = self.build_fn, None
        if self.hypermodel is not None:
            from tuning.hypermodel import OptunaHyperParameters

            hp, hypermodel = OptunaHyperParameters(trial), self.hypermodel
            build_fn = lambda _config: hypermodel.build(hp)  # noqa: E731
            fit_fn = lambda model, *args, **kwargs: hypermodel.fit(hp, model, *args, **kwargs)  # noqa: E731
        try:
            _stop_if_signalled()  # one that came while asking: this trial is recorded as interrupted
            result = train(
                config, self.data, seed=seed, on_epoch=self._epoch_hook(trial), build_fn=build_fn, fit_fn=fit_fn,
                exclusive=self.n_jobs == 1, monitor=self.monitor, evaluate_test=False,
            )
            values = [result.metric(m) for m in self.metrics] if result.state == COMPLETE else []
            if values and _study.worth_testing(trial.study, values, self.space.study.test_on):
                result.test_accuracy = test_accuracy(result.model, self.data, config.train.batch_size)
        except KeyboardInterrupt:
            self._finish(trial, TrialOutcome(INTERRUPTED, reason=INTERRUPTED))
            # Its configuration runs again first when the study is resumed.
            trial.study.enqueue_trial(trial.params, user_attrs={_recovery.RETRY_OF: trial.number})
            raise
        except Exception as exc:
            self._finish(trial, TrialOutcome(FAILED, reason=_describe(exc)))
            raise
        attrs: dict[str, Any] = {
            records.EPOCHS: result.epochs,
            records.TRAIN_SECONDS: round(result.train_seconds, 3),
            records.PARAM_COUNT: result.param_count,
            records.HISTORY: result.history,
            records.PRECISION: result.precision,
        }
        if result.test_accuracy is not None:
            attrs[records.TEST_ACCURACY] = result.test_accuracy
        if result.state == FAILED:
            self._finish(trial, TrialOutcome(FAILED, reason=result.reason, history=result.history, user_attrs=attrs))
            raise NotLearningError(result.reason)
        if result.state == PRUNED:
            self._finish(trial, TrialOutcome(PRUNED, reason=result.reason, history=result.history, user_attrs=attrs))
            raise optuna.TrialPruned(result.reason)
        self._finish(
            trial,
            TrialOutcome(COMPLETE, values=values, model=result.model, history=result.history, user_attrs=attrs),
        )
        return values[0] if len(values) == 1 else values

    def _epoch_hook(self, trial: optuna.Trial) -> Any:
        def on_epoch(epoch: int, logs: Mapping[str, float]) -> str | None:
            _stop_if_signalled()
            self.observer.epoch_ended(trial, epoch, logs)
            if self.reported is not None and self.reported in logs:
                trial.report(logs[self.reported], epoch)
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return f"stopped at epoch {epoch}: the study's time budget ran out"
            if self.reported is None or self.reported not in logs:
                return None
            value = logs[self.reported]
            if trial.should_prune():
                return f"pruned by the {self.pruner_name} pruner at epoch {epoch} ({self.reported} {value:.4f})"
            return None

        return on_epoch

    def _finish(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        attrs = dict(outcome.user_attrs)
        if outcome.reason:
            attrs[records.REASON] = outcome.reason
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        outcome.user_attrs = attrs
        self.observer.trial_finished(trial, outcome)


def _describe(exc: BaseException) -> str:
    """One sentence for a failed trial: the error's own message for ours, type and message otherwise."""
    if isinstance(exc, ConfigurationError | NotLearningError):
        return f"cannot build this configuration: {exc}" if isinstance(exc, ConfigurationError) else str(exc)
    first = _message_line(str(exc))
    if isinstance(exc, AttributeError) and "'TrialConfig' object has no attribute" in first:
        return (f"{type(exc).__name__}: {first[:300]} (build_fn= receives the trial's TrialConfig; a KerasTuner "
                "build(hp) goes to hypermodel= with model.family: hypermodel)")
    if "OOM" in first or isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError":
        return f"out of memory: {type(exc).__name__}: {first[:300]} (a smaller batch_size or width usually helps)"
    return f"{type(exc).__name__}: {first[:300]}"


def _message_line(text: str) -> str:
    """The line of an error message that says what went wrong.

    TensorFlow's graph errors start with "Graph execution error:" and a traceback of the graph's Python code;
    the cause ("Received a label value of 9 which is outside the valid range of [0, 3)") is the last line.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Graph execution error"):
        causes = [line for line in lines[1:] if not line.startswith(("File ", "[[", "Detected at node"))]
        if causes:
            return causes[-1]
    return lines[0]


class _FailureGuard:
    """Stops the study after ``limit`` failed trials in a row: by then the space itself is most likely wrong."""

    def __init__(self, limit: int, user_code: bool = False) -> None:
        self.limit = limit
        self.user_code = user_code
        self.failures: list[tuple[int, str]] = []
        self.tripped = False
        self._lock = threading.Lock()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.record(trial):
            study.stop()

    def record(self, trial: optuna.trial.FrozenTrial) -> bool:
        """Count a finished trial; true when this one trips the guard (the study must stop)."""
        with self._lock:
            if trial.state != TrialState.FAIL:
                self.failures.clear()
                return False
            reason = str(trial.user_attrs.get(records.REASON, "no reason recorded"))
            if reason == INTERRUPTED:
                return False
            self.failures.append((trial.number, reason))
            if len(self.failures) >= self.limit and not self.tripped:
                self.tripped = True
                return True
            return False

    def message(self) -> str:
        reasons = "\n".join(f"  trial {n}: {r}" for n, r in self.failures[-self.limit :])
        if self.user_code:
            return (
                f"{len(self.failures)} trials failed in a row, so the study stopped:\n{reasons}\n"
                "The model comes from your own code (build_fn= or a hypermodel): the reasons above are its own "
                "errors. Run it once by hand with the values of one of these trials and fix it. Raise "
                "study.max_consecutive_failures to tolerate more."
            )
        return (
            f"{len(self.failures)} trials failed in a row, so the study stopped:\n{reasons}\n"
            "The space most likely has a mistake: check the values these reasons point at (too many pooling "
            "blocks for the input size, a learning rate so high the loss diverges, a batch size or width too "
            "large for memory). Raise study.max_consecutive_failures to tolerate more."
        )


def _room_after_importing_keras(gate: TotalGate, study: optuna.Study, *, claim: bool) -> bool:
    """Whether this worker may start its first trial, with Keras imported before the budget's and the first
    trial's clocks start. The gate looks at the storage again after the import: the import takes seconds on a
    loaded machine, in which other workers may finish the study. Also waits while other workers' running trials
    may finish the study. With ``claim``, a True answer holds the study's lock until the first trial exists.
    """
    if not gate.room(study):
        return False  # nothing to do: a finished study does not import TensorFlow
    from tuning._keras import import_keras

    import_keras()
    return gate.room(study, claim=claim)


@contextmanager
def _on_signals(handler: Any) -> Iterator[None]:
    """Handle SIGINT and SIGTERM with ``handler`` inside the block (main thread only; elsewhere a no-op).

    An :class:`Interrupted` that Python swallows (raised inside a finalizer or a weakref callback) is not printed
    as "Exception ignored in ... Traceback": the signal is in ``_signalled``, and the study stops at the next
    epoch or trial boundary."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _signals.quiet_on_ctrl_c(previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for s, h in previous.items():
            signal.signal(s, h)


#: Signals received (``tuning._signals``): an exception raised while a finalizer runs (garbage collection
#: between trials, TensorFlow's weakref callbacks) is swallowed by Python ("Exception ignored in ..."), so the
#: runner checks this before its study starts and at every epoch and trial boundary, and stops there instead.
_signalled = _signals.received


#: Set from the end of one trial until the next has recorded its worker: a signal then is only remembered, so
#: that Optuna's ``ask()`` never leaves a trial RUNNING without a worker (nothing could recover it at once).
_deferring = threading.Event()


def _defer_signals(*_: Any) -> None:
    """Remember, not raise, SIGINT/SIGTERM until the next trial has recorded its worker (an Optuna callback)."""
    _deferring.set()


def _raise_interrupted(signum: int, frame: Any) -> None:
    """SIGTERM ends the running trial cleanly, exactly like Ctrl-C; a second signal then exits at once."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _exit_now)
    _signalled.append(signum)
    if not _deferring.is_set():
        raise Interrupted(signum)


def _stop_if_signalled(*_: Any) -> None:
    """Raise :class:`Interrupted` if a signal came whose exception was swallowed (also an Optuna callback)."""
    if _signalled:
        raise Interrupted(_signalled[-1])


def _exit_now(signum: int, frame: Any) -> None:
    """While finishing up after an interruption, a second signal exits at once (the storage is consistent).

    A trial this leaves RUNNING is failed and queued again by the next run (``tuning._recovery``).
    """
    os.write(2, b"\nInterrupted again: exiting now. Run the same command to resume.\n")
    os._exit(128 + signum)


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
