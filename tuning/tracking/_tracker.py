"""The MLflow tracker: one parent run per study, one nested run per trial, through ``MlflowClient``.

Only explicit run ids are used (never ``mlflow.start_run``'s global run stack), so several threads and
processes can track into the same study at once. Training threads never wait on MLflow: every call goes
to one background thread per tracker (:mod:`tuning.tracking._worker`), in order. A trial's run is created
there as soon as the trial starts, and ``trial_finished`` waits for its id (created seconds earlier) so
that the trial's ``mlflow_run_id`` user attribute is set before Optuna records the trial; it does not wait
while the server is down, nor while it refuses connections and the worker is still finding out (MLflow's
retries of the failing call). Even the trained
model's summary and ``.keras`` file are written by the worker, while the next trial trains: Keras keeps its
global state per thread, so the worker reads a finished model safely.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tuning import records
from tuning._defaults import TRACKING_FILE
from tuning.errors import TrackingError
from tuning.observers import COMPLETE, FAILED, INTERRUPTED, PRUNED, StudyObserver, TrialOutcome
from tuning.redact import redact_text, redact_url, secrets_in_url
from tuning.storage import absolute_url, disk_is_full, sqlite_path
from tuning.tracking import _artifacts, _env, _sqlite
from tuning.tracking._model import BEST_MODEL as _BEST_MODEL
from tuning.tracking._model import TRIAL_MODEL as _TRIAL_MODEL
from tuning.tracking._worker import Worker, is_connection_error
from tuning.tracking.tags import (
    PARENT_TAG,
    TAG_BEST_MODEL,
    TAG_BEST_RUN,
    TAG_BEST_TRIAL,
    TAG_BEST_VALUE,
    TAG_OBJECTIVES,
    TAG_REASON,
    TAG_ROLE,
    TAG_RUN_NAME,
    TAG_SEED,
    TAG_STATE,
    TAG_STORAGE,
    TAG_STUDY,
    TAG_TRIAL,
    trial_run_name,
)

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient

    from tuning.space import SearchSpace, TrialConfig

log = logging.getLogger("tuning.tracking")

#: MLflow run status for each trial state; a pruned trial ran as intended and stopped early: FINISHED.
RUN_STATUS = {COMPLETE: "FINISHED", PRUNED: "FINISHED", FAILED: "FAILED", INTERRUPTED: "KILLED"}

# Two processes that start the same study at the same moment each create a parent run, then keep the
# oldest; a running parent this recent with the same study and storage is one of those.
_RACE_WINDOW_MS = 10 * 60 * 1000
_MAX_TAG = 5000

#: Longest a finishing trial waits for its run's id (to link it in the trial's ``mlflow_run_id`` attribute):
#: the run was created when the trial started, so this only matters when the server is slow; while the server
#: is unreachable a trial does not wait at all. A trial whose run comes later is linked by its tags.
RUN_ID_WAIT = 2.0
#: Longest the end of a study waits for the calls still queued for MLflow when the server is slow; what is
#: left is listed with the ``tuning sync`` command that back-fills it from the Optuna storage.
FLUSH_SECONDS = 30.0
#: Longest the end of a study waits, when the server is known to be down, for one quick probe of it (the
#: kept calls are sent if it answers); never longer than the worker's interval between probes.
END_PROBE_SECONDS = 3.0
#: Timeout of the TCP connect that tells whether the server takes connections at all (the probe's first step,
#: and a finishing trial's check before it waits for its run's id).
CONNECT_SECONDS = 1.0
#: Longest the end of a study keeps waiting, beyond that, while a server that came back is still being sent
#: the calls kept during its outage (and sending makes progress).
CATCH_UP_SECONDS = 120.0
#: MLflow's own HTTP settings for this process (unless already set in the environment): few retries, short
#: timeouts, so one call to a dead server costs seconds, not minutes (MLflow's defaults: 7 retries, 120 s).
HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


class MlflowTracker(StudyObserver):
    """Mirrors a study into MLflow: a parent run for the study, a nested run per trial, live.

    Args:
        tracking_uri: where runs land: any MLflow tracking URI (``http://host:5000``, ``sqlite:///x.db``,
            ``databricks``). Default: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlruns/mlflow.db``
            with artifacts in ``mlruns/artifacts``.
        experiment: MLflow experiment name; default: the study's name.
        keep_models: also log every complete trial's model as an MLflow model (``model`` on its run); by
            default only the best model so far is logged, on the parent run (``best_model``).
        storage_url: the Optuna storage URL: a password in it is kept out of everything logged.
        input_example: a few model inputs (e.g. validation images) saved with each logged model.
        model_metadata: what the models expect (:meth:`tuning.data.Dataset.input_description`), saved in
            each logged model's metadata.
        register_model: when the study ends, register its best model under this name in the model registry.

    Example:
        >>> tracker = MlflowTracker("sqlite:///mlruns/mlflow.db")   # doctest: +SKIP
        >>> tracker.check()                                          # doctest: +SKIP
        >>> tuning.run(space, observers=[tracker], tracking=False)    # doctest: +SKIP
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        experiment: str | None = None,
        keep_models: bool = False,
        storage_url: str | None = None,
        input_example: Any = None,
        model_metadata: Mapping[str, Any] | None = None,
        register_model: str | None = None,
    ) -> None:
        from tuning._defaults import default_tracking_uri

        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment = experiment
        self.keep_models = keep_models
        self.storage_url = storage_url
        self.input_example = input_example
        self.model_metadata = dict(model_metadata or {})
        self.register_model = register_model
        #: ``models:/NAME/VERSION`` once the study's best model is registered (``register_model``).
        self.registered_uri: str | None = None
        self._secrets = secrets_in_url(self.tracking_uri) + secrets_in_url(storage_url)
        self._remote = urlsplit(self.tracking_uri).scheme in ("http", "https")  # a server: it may go away
        self._worker = Worker(
            "mlflow-tracking", self._secrets, probe=self._answers if self._remote else None, describe=self.uri
        )
        self._lock = threading.Lock()
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._experiment_name: str | None = None
        self._parent_id: str | None = None
        self._study: optuna.Study | None = None
        self._objectives: list[str] = []
        self._maximize: list[bool] = []
        self._best: list[float | None] = []
        self._counts = {COMPLETE: 0, PRUNED: 0, FAILED: 0}
        self._runs: dict[int, Future[str]] = {}
        self._logged_params: dict[int, set[str]] = {}  # trial number → parameter names already on its run
        self._parent_described = False

    # ------------------------------------------------------------------ public

    @property
    def uri(self) -> str:
        """The tracking URI with any password replaced by ``***`` (safe to print)."""
        return redact_url(self.tracking_uri)

    @property
    def parent_run_id(self) -> str | None:
        """The study's parent run, once :meth:`study_started` has run."""
        return self._parent_id

    def check(self) -> None:
        """Connect to the tracking location now; raise :class:`TrackingError` if it cannot be used.

        Example:
            >>> MlflowTracker("http://127.0.0.1:9").check()   # doctest: +SKIP
            Traceback (most recent call last):
            tuning.errors.TrackingError: cannot reach the MLflow tracking server. Received: ...
        """
        if self._client is not None:
            return
        # set_terminated would print "View run ... at ..." to stdout for every run.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        uri = self.tracking_uri
        scheme = urlsplit(uri).scheme
        if scheme == "sqlite":
            self._check_sqlite_path()
        elif scheme in ("http", "https"):
            for key, value in HTTP_SETTINGS.items():
                os.environ.setdefault(key, value)
            # urllib3 logs every retry at WARNING ("Retrying (Retry(total=1, ...))"): the worker's one warning
            # says the same once.
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
            self._check_reachable()
        elif scheme in ("", "file") and not uri.startswith("databricks"):
            self._check_directory(Path(urlsplit(uri).path if scheme else uri))
        from mlflow import MlflowClient

        path = self._sqlite_path() if scheme == "sqlite" else None
        try:
            if path is not None:
                _sqlite.ensure_database(path)  # complete or absent, created once among processes
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
        except Exception as exc:
            if path is not None and path.exists() and _sqlite.looks_half_created(exc):
                raise self._error(
                    f"the MLflow database {path} is half-created (an earlier first start stopped part-way, e.g. on "
                    "a full disk)", exc, fix=f"if it holds no runs you need, delete {path} and run again; or pass "
                    "another --tracking-uri",
                ) from None
            if path is not None and disk_is_full(exc):
                raise self._error(
                    "cannot create the MLflow database", exc, fix=f"free space on the disk holding {path.parent} "
                    "(nothing was left behind), or pass another --tracking-uri or --no-tracking",
                ) from None
            raise self._error("cannot use the MLflow tracking location", exc) from None
        if scheme == "sqlite":
            self._check_directory(self._sqlite_artifact_root())
        self._client = client
        if self.experiment:
            self._experiment_id = self._resolve_experiment(self.experiment)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far has reached MLflow, or ``timeout`` seconds; true when all sent."""
        return self._worker.flush(timeout)

    # ------------------------------------------------------------------ hooks

    def study_started(self, study: optuna.Study, space: SearchSpace) -> None:
        self.check()
        name = self.experiment or study.study_name
        if self._experiment_id is None or name != self._experiment_name:
            self._experiment_id = self._resolve_experiment(name)
        self._study = study
        objectives = study.user_attrs.get(records.OBJECTIVES) or [o.metric for o in space.objectives]
        self._objectives = [str(m) for m in objectives]
        self._maximize = [d.name == "MAXIMIZE" for d in study.directions]
        self._best = [None] * len(self._maximize)
        self._counts = {COMPLETE: 0, PRUNED: 0, FAILED: 0}
        self._parent_described = False
        self._seed_from_storage(study)
        self._parent_id = self._parent_run(study)
        study.set_user_attr(records.MLFLOW_RUN_ID, self._parent_id)
        study.set_user_attr(records.MLFLOW_EXPERIMENT, name)
        space_yaml = _artifacts.space_yaml(space)
        params = _artifacts.fixed_params(space) if hasattr(space, "specs") else {}
        self._worker.submit(
            "describe the study run", self._describe_study, self._parent_id, study.study_name, space_yaml, params
        )

    def trial_started(self, trial: optuna.Trial, config: TrialConfig) -> None:
        if self._parent_id is None:
            return
        self._start_run(trial)

    def epoch_ended(self, trial: optuna.Trial, epoch: int, logs: Mapping[str, float]) -> None:
        run = self._runs.get(trial.number)
        if run is None:
            return
        self._log_new_params(trial, run)
        stamp = int(time.time() * 1000)
        points = [(key, float(value)) for key, value in logs.items() if _is_number(value)]
        self._worker.submit(
            f"log epoch {epoch} of trial {trial.number}", self._log_epoch, run, points, stamp, epoch, trial=trial.number
        )

    def trial_finished(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        if self._parent_id is None:
            return
        with self._lock:
            run = self._runs.pop(trial.number, None)
        if run is None:  # the trial failed before trial_started (e.g. while sampling)
            run = self._start_run(trial)
            with self._lock:
                self._runs.pop(trial.number, None)
        self._log_new_params(trial, run)
        with self._lock:
            self._logged_params.pop(trial.number, None)
        self._wait_for_run_id(run)
        values = [float(v) for v in outcome.values] if outcome.state == COMPLETE and outcome.values else []
        with self._lock:
            self._counts[outcome.state if outcome.state in self._counts else FAILED] += 1
            counts = dict(self._counts)
            improved = self._improve(values)
            best = list(self._best)
        finished = _FinishedTrial(
            number=trial.number,
            run=run,
            state=outcome.state,
            values=values,
            reason=outcome.reason,
            history={k: list(v) for k, v in (outcome.history or {}).items()},
            user_attrs=dict(outcome.user_attrs or {}),
            model=outcome.model,
            improved=improved,
            counts=counts,
            best=best,
            env=_env.environment_tags(),
        )
        self._worker.submit(f"finish the run of trial {trial.number}", self._finish_trial, finished, trial=trial.number)

    def study_finished(self, study: optuna.Study, interrupted: bool) -> None:
        if self._parent_id is None:
            return
        status = "KILLED" if interrupted else "FINISHED"
        with self._lock:  # runs of trials that never reported an end (the storage failed under them)
            open_runs = dict(self._runs)
            self._runs.clear()
        for number, run in open_runs.items():
            self._worker.submit(f"end the run of trial {number}", self._end_open_run, run, status, trial=number)
        if not interrupted and _others_running(study):  # the last worker to end ends the study's run
            status = "RUNNING"
        self._worker.submit("finish the study run", self._finish_study, self._parent_id, study, status)
        if self._remote:
            # Bounded for a server. One already known down gets one quick probe, then the kept calls are sent
            # if it answers; no wait at all when a call finds it down meanwhile.
            if self._worker.offline:
                self._worker.probe_now(min(END_PROBE_SECONDS, self._worker.probe_seconds))
            complete = self._worker.flush(FLUSH_SECONDS, until_offline=True)
        else:
            complete = self.flush()
        waited = 0.0
        while not complete and not self._worker.offline and waited < CATCH_UP_SECONDS:
            left = self._worker.pending  # the server is back and the worker is sending what it kept
            complete = self._worker.flush(5.0, until_offline=True)
            waited += 5.0
            if self._worker.pending >= left:
                break  # no progress in 5 s: stop waiting
        trials, parent = self._worker.unsent()
        if trials or parent:
            listed = ", ".join(map(str, trials[:50])) + (" ..." if len(trials) > 50 else "")
            what = (f"the runs of trials {listed}" if trials else "") + (" and " if trials and parent else "")
            what += "the study's parent run" if parent else ""
            storage = f" --storage {redact_url(self.storage_url)}" if self.storage_url else ""
            log.warning(
                "MLflow tracking: %s in %s are missing or incomplete (%s). The Optuna storage holds every trial's "
                "results: back-fill MLflow from it once the server answers with\n  tuning sync %s%s "
                "--tracking-uri %s",
                what, self.uri, "the server stopped answering" if self._worker.outages else "calls failed",
                study.study_name, storage, self.uri,
            )

    def backfill(self, study: optuna.Study) -> dict[str, int]:
        """Bring MLflow up to date with the Optuna storage: create the missing runs of finished trials (with
        their parameters, per-epoch curves, final values and state), end the runs left RUNNING, and end the
        parent run when no trial runs. What ``tuning sync`` does after the tracking server was unreachable.

        Example:
            >>> MlflowTracker("http://127.0.0.1:5000").backfill(study)  # doctest: +SKIP
            {'created': 3, 'ended': 1, 'parent_ended': 1}

        Returns:
            how many trial runs were created and ended, and whether the parent run was ended (0 or 1).
        """
        from optuna.trial import TrialState

        self.check()
        name = self.experiment or study.user_attrs.get(records.MLFLOW_EXPERIMENT) or study.study_name
        self._experiment_id = self._resolve_experiment(name)
        self._study = study
        self._objectives = [str(m) for m in study.user_attrs.get(records.OBJECTIVES) or ["value"]]
        self._maximize = [d.name == "MAXIMIZE" for d in study.directions]
        self._best = [None] * len(self._maximize)
        self._counts = {COMPLETE: 0, PRUNED: 0, FAILED: 0}
        self._parent_described = True  # environment tags come from a trial's thread, not from here
        parent = self._parent_id = self._parent_run(study)
        assert self._client is not None
        runs = self._client.search_runs(
            [self._experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent}'",
            max_results=50_000,
        )
        by_number = {r.data.tags.get(TAG_TRIAL): r.info for r in runs if r.data.tags.get(TAG_ROLE) == "trial"}
        states = {TrialState.COMPLETE: COMPLETE, TrialState.PRUNED: PRUNED, TrialState.FAIL: FAILED}
        done = {"created": 0, "ended": 0, "parent_ended": 0}
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        for frozen in trials:
            state = states.get(frozen.state)
            if state is None:
                continue
            self._counts[state] += 1
            values = [float(v) for v in frozen.values] if state == COMPLETE and frozen.values else []
            self._improve(values)
            known = by_number.get(str(frozen.number))
            if known is not None and known.status != "RUNNING":
                continue
            reason = frozen.user_attrs.get(records.REASON) or frozen.system_attrs.get("fail_reason")
            if state == FAILED and reason == INTERRUPTED:  # Ctrl-C: KILLED, "trial-7 (interrupted)", as live
                state = INTERRUPTED
            run: Future[str] = Future()
            if known is None:
                self._create_trial_run(frozen, frozen.params, run)
                history = frozen.user_attrs.get(records.HISTORY) or {}
                self._log_history(run.result(), history)
                done["created"] += 1
            else:
                run.set_result(known.run_id)
                done["ended"] += 1
            self._finish_trial(_FinishedTrial(
                number=frozen.number, run=run, state=state, values=values, reason=reason,
                history={k: list(v) for k, v in (frozen.user_attrs.get(records.HISTORY) or {}).items()},
                user_attrs=dict(frozen.user_attrs), model=None, improved=False,
                counts=dict(self._counts), best=list(self._best), env={},
            ))
        running = any(t.state == TrialState.RUNNING for t in trials)
        if not running and self._client.get_run(parent).info.status == "RUNNING":
            self._finish_study(parent, study, "FINISHED")
            done["parent_ended"] = 1
        return done

    def _log_history(self, run_id: str, history: Mapping[str, Sequence[float]]) -> None:
        """Per-epoch curves of a back-filled run, ``step`` = epoch as during training."""
        from mlflow.entities import Metric

        assert self._client is not None
        stamp = int(time.time() * 1000)
        points = [
            Metric(key, float(value), stamp, epoch)
            for key, series in history.items()
            for epoch, value in enumerate(series)
            if _is_number(value) and math.isfinite(float(value))
        ]
        for start in range(0, len(points), 1000):  # MLflow accepts at most 1000 metrics per batch
            self._client.log_batch(run_id, metrics=points[start : start + 1000])

    # ------------------------------------------------------------------ checks

    def _error(self, problem: str, exc: BaseException | None = None, fix: str | None = None) -> TrackingError:
        detail = f" ({redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self._secrets)})"
        problem = problem + (detail if exc is not None else "")
        fix = fix or (
            "start the server or correct the URI (--tracking-uri or MLFLOW_TRACKING_URI), or pass --no-tracking"
        )
        return TrackingError(f"{problem}. Received: {self.uri}. Fix: {fix}.")

    def _answers(self) -> bool:
        """Whether the tracking server answers now (the worker's probe while it is offline): a TCP connect with
        a short timeout, then one light request."""
        if not self._connects(CONNECT_SECONDS):
            return False
        assert self._client is not None
        self._client.search_experiments(max_results=1)
        return True

    def _connects(self, timeout: float) -> bool:
        """Whether the tracking server's host and port take a TCP connection within ``timeout`` seconds."""
        try:
            self._connect(timeout)
        except OSError:
            return False
        return True

    def _connect(self, timeout: float) -> None:
        """Open and close a TCP connection to the tracking server; raise OSError when it cannot be opened."""
        parts = urlsplit(self.tracking_uri)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            pass

    def _check_reachable(self) -> None:
        parts = urlsplit(self.tracking_uri)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            self._connect(5)
        except OSError as exc:
            raise self._error(
                "cannot reach the MLflow tracking server",
                exc,
                fix=f"start it (`mlflow server --host {parts.hostname} --port {port}`), correct --tracking-uri "
                "or MLFLOW_TRACKING_URI, or pass --no-tracking",
            ) from None

    def _sqlite_path(self) -> Path | None:
        return sqlite_path(self.tracking_uri)

    def _sqlite_artifact_root(self) -> Path:
        """Artifacts of a SQLite-tracked experiment go beside the database: ``mlruns/artifacts``."""
        path = self._sqlite_path()
        if path is None:
            return Path(TRACKING_FILE.parent, "artifacts").resolve()
        return (path.parent / "artifacts").resolve()

    def _check_sqlite_path(self) -> None:
        path = self._sqlite_path()
        if path is None:
            return
        self._check_directory(path.parent)
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise self._error(
                "the MLflow database file is not writable", fix=f"make {path} writable or pass another --tracking-uri"
            )

    def _check_directory(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(
                f"cannot create the tracking folder {directory}",
                exc,
                fix="choose a writable location with --tracking-uri",
            ) from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise self._error(
                f"the tracking folder {directory} is not writable",
                fix="make it writable or choose another location with --tracking-uri",
            )

    # ------------------------------------------------------------------ runs

    def _resolve_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created when missing (safe when processes race to create it)."""
        from mlflow.exceptions import MlflowException

        assert self._client is not None
        client = self._client
        try:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                location = None
                if urlsplit(self.tracking_uri).scheme == "sqlite":
                    location = str(self._sqlite_artifact_root())
                try:
                    client.create_experiment(name, artifact_location=location)
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                experiment = client.get_experiment_by_name(name)
        except MlflowException as exc:
            raise self._error(f"cannot open or create the MLflow experiment {name!r}", exc) from None
        if experiment is None or experiment.lifecycle_stage == "deleted":
            raise self._error(
                f"the MLflow experiment {name!r} is deleted",
                fix=f"restore it (MLflow UI, or `mlflow experiments restore --experiment-id "
                f"{experiment.experiment_id if experiment else '?'}`), remove it for good with `mlflow gc`, "
                "or track under another experiment name",
            )
        self._experiment_name = name
        return experiment.experiment_id

    def _parent_run(self, study: optuna.Study) -> str:
        """The study's parent run: the one recorded on the study when it still exists, else a new one."""
        from mlflow.exceptions import MlflowException

        assert self._client is not None
        client = self._client
        known = study.user_attrs.get(records.MLFLOW_RUN_ID)
        if known:
            try:
                run = client.get_run(known)
            except MlflowException:
                run = None
            if (
                run is not None
                and run.info.lifecycle_stage == "active"
                and run.info.experiment_id == self._experiment_id
            ):
                if run.info.status != "RUNNING":
                    client.update_run(known, status="RUNNING")
                return known
            log.warning(
                "MLflow tracking: the study's parent run %s is not in experiment %r of %s; starting a new one",
                known,
                self._experiment_name,
                self.uri,
            )
        storage = redact_text(absolute_url(self.storage_url), self._secrets) if self.storage_url else ""
        tags = {TAG_ROLE: "study", TAG_STUDY: study.study_name}
        if storage:
            tags[TAG_STORAGE] = storage
        mine = client.create_run(self._experiment_id, run_name=study.study_name, tags=tags).info
        # Another process may have started the same study at the same moment: keep the oldest parent.
        since = mine.start_time - _RACE_WINDOW_MS
        rivals = client.search_runs(
            [self._experiment_id],
            filter_string=f"tags.`{TAG_ROLE}` = 'study' and attributes.status = 'RUNNING' "
            f"and attributes.start_time >= {since}",
            max_results=1000,
        )
        same = [
            r.info
            for r in rivals
            if r.data.tags.get(TAG_STUDY) == study.study_name and r.data.tags.get(TAG_STORAGE, "") == storage
        ]
        oldest = min([*same, mine], key=lambda info: (info.start_time, info.run_id))
        if oldest.run_id != mine.run_id:
            client.delete_run(mine.run_id)
        return oldest.run_id

    def _wait_for_run_id(self, run: Future[str]) -> None:
        """Let a finishing trial's run id reach the trial (the worker sets it) before Optuna records the trial.

        The run was created when the trial started, so it is normally there already. Otherwise this waits at most
        :data:`RUN_ID_WAIT`, and not at all when the server is down: neither once the worker knows it, nor while
        the worker's call is still failing (MLflow's retries and back-off would cost seconds): a server that
        refuses connections is down. A run created later is linked to its trial by its tags.
        """
        if run.done() or self._worker.offline:
            return
        if self._remote and not self._connects(CONNECT_SECONDS):
            return
        self._worker.wait(run, RUN_ID_WAIT)

    def _log_new_params(self, trial: optuna.Trial, run: Future[str]) -> None:
        """Log the parameters drawn since the run was created: a hypermodel draws its own while it builds."""
        params = trial.params
        with self._lock:
            logged = self._logged_params.setdefault(trial.number, set())
            new = {k: v for k, v in params.items() if k not in logged}
            logged.update(new)
        if new:
            self._worker.submit(
                f"log the parameters of trial {trial.number}", self._log_params, run, new, trial=trial.number
            )

    def _log_params(self, run: Future[str], params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        if not (run.done() and run.exception() is None):  # creating the run failed (logged)
            return
        items = [Param(key, self._safe(value)) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self._client.log_batch(run.result(), params=items[start : start + 100])  # type: ignore[union-attr]

    def _start_run(self, trial: optuna.Trial) -> Future[str]:
        """Create the trial's run in the worker; the future gives its id (set on the trial as well)."""
        run: Future[str] = Future()
        params = dict(trial.params)
        with self._lock:
            self._runs[trial.number] = run
            self._logged_params[trial.number] = set(params)
        self._worker.submit(
            f"create the run of trial {trial.number}", self._create_trial_run, trial, params, run, trial=trial.number
        )
        return run

    def _create_trial_run(self, trial: optuna.Trial, params: Mapping[str, Any], run: Future[str]) -> None:
        assert self._client is not None and self._study is not None
        if run.done():  # run again after the server went away between creating the run and logging its params
            self._log_params(run, params)
            return
        tags = {
            PARENT_TAG: self._parent_id,
            TAG_ROLE: "trial",
            TAG_STUDY: self._study.study_name,
            TAG_TRIAL: str(trial.number),
            TAG_STATE: records.RUNNING,
        }
        try:
            run_id = self._client.create_run(self._experiment_id, run_name=trial_run_name(trial.number), tags=tags)
            run_id = run_id.info.run_id
        except BaseException as exc:
            if not is_connection_error(exc):  # else the worker keeps this job and runs it again later
                run.set_exception(exc)
            raise
        with contextlib.suppress(Exception):  # a trial that ended meanwhile keeps its link in the run's tags
            trial.set_user_attr(records.MLFLOW_RUN_ID, run_id)
        run.set_result(run_id)
        self._log_params(run, params)

    def _seed_from_storage(self, study: optuna.Study) -> None:
        """Counts and best values of the trials a resumed study already holds."""
        import optuna

        for frozen in study.get_trials(deepcopy=False):
            if frozen.state == optuna.trial.TrialState.COMPLETE:
                self._counts[COMPLETE] += 1
                self._improve(list(frozen.values or []))
            elif frozen.state == optuna.trial.TrialState.PRUNED:
                self._counts[PRUNED] += 1
            elif frozen.state == optuna.trial.TrialState.FAIL:
                self._counts[FAILED] += 1

    def _improve(self, values: Sequence[float]) -> bool:
        """Update the best value of each objective; true when the first objective improved."""
        improved = False
        for i, value in enumerate(values[: len(self._best)]):
            if records.improves(value, self._best[i], self._maximize[i]):
                self._best[i] = value
                improved = improved or i == 0
        return improved

    def _log_model(self, model: Any, run_id: str, name: str, number: int) -> str | None:
        """Log a trained model as an MLflow model of ``run_id``; its id, or None (a warning) when it cannot be."""
        from tuning.tracking import _model

        assert self._client is not None and self._experiment_id is not None
        try:
            return _model.log_keras_model(
                self._client, self._experiment_id, run_id, model, name=name,
                input_example=self.input_example, metadata={**self.model_metadata, "trial": number},
                tags={TAG_STUDY: self._study.study_name if self._study else "", TAG_TRIAL: str(number)},
            )
        except Exception as exc:
            log.warning("MLflow tracking: cannot log the model of trial %d: %s", number, self._safe(exc))
            return None

    # ------------------------------------------------------------------ worker jobs

    def _describe_study(
        self, run_id: str, study_name: str, space_yaml: str | None, params: Mapping[str, Any]
    ) -> None:
        from mlflow.entities import Param, RunTag

        assert self._client is not None
        tags = {
            TAG_STUDY: study_name,
            TAG_OBJECTIVES: ", ".join(
                f"{m} ({'max' if up else 'min'})" for m, up in zip(self._objectives, self._maximize, strict=False)
            ),
        }
        self._client.log_batch(run_id, tags=[RunTag(k, self._safe(v)) for k, v in tags.items()])
        logged = self._client.get_run(run_id).data.params  # a resumed study's parent has them already
        items = [Param(k, self._safe(v, limit=6000)) for k, v in params.items() if k not in logged]
        for start in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self._client.log_batch(run_id, params=items[start : start + 100])
        if space_yaml is not None:
            self._client.log_text(run_id, self._safe(space_yaml, limit=None), "space.yaml")

    def _log_epoch(self, run: Future[str], points: list[tuple[str, float]], stamp: int, epoch: int) -> None:
        from mlflow.entities import Metric

        assert self._client is not None
        if points and run.done() and run.exception() is None:  # else creating the run failed (logged)
            self._client.log_batch(run.result(), metrics=[Metric(k, v, stamp, epoch) for k, v in points])

    def _end_open_run(self, run: Future[str], status: str) -> None:
        """End the run of a trial that never reported its end (the study stopped under it)."""
        from mlflow.entities import RunTag

        assert self._client is not None
        if not run.done() or run.exception() is not None:
            return
        state = INTERRUPTED if status == "KILLED" else FAILED
        tags = [RunTag(TAG_STATE, state)]
        number = self._client.get_run(run.result()).data.tags.get(TAG_TRIAL, "")
        if number.isdigit():  # the run list shows how it ended: "trial-7 (interrupted)"
            tags.append(RunTag(TAG_RUN_NAME, trial_run_name(int(number), state)))
        self._client.log_batch(run.result(), tags=tags)
        self._client.set_terminated(run.result(), RUN_STATUS[state])

    def _finish_trial(self, done: _FinishedTrial) -> None:
        from mlflow.entities import Metric, RunTag

        assert self._client is not None and self._parent_id is not None
        if not done.run.done() or done.run.exception() is not None:
            raise TrackingError(f"trial {done.number} has no run to finish (creating it failed, see above)")
        done.run_id = done.run.result()
        client = self._client
        stamp = int(time.time() * 1000)
        final: dict[str, float] = {f"final.{m}": v for m, v in zip(self._objectives, done.values, strict=False)}
        for attr in (records.TEST_ACCURACY, records.PARAM_COUNT, records.TRAIN_SECONDS, records.EPOCHS):
            if _is_number(done.user_attrs.get(attr)):
                final[f"final.{attr}"] = float(done.user_attrs[attr])
        # The run list tells a pruned (FINISHED) or failed run from a complete one by its name: "trial-7 (pruned)".
        tags = {TAG_STATE: done.state, TAG_RUN_NAME: trial_run_name(done.number, done.state), **done.env}
        if done.reason:
            tags[TAG_REASON] = done.reason
        if records.SEED in done.user_attrs:
            tags[TAG_SEED] = str(done.user_attrs[records.SEED])
        client.log_batch(
            done.run_id,
            metrics=[Metric(k, v, stamp, 0) for k, v in final.items()],
            tags=[RunTag(k, self._safe(v)) for k, v in tags.items()],
        )
        texts = {"history.csv": _artifacts.history_csv(done.history) if done.history else None}
        model = done.model
        done.model = None  # the trial's model is not needed after this job: let it go
        if model is not None:
            texts["model_summary.txt"] = _artifacts.model_summary(model)
        self._log_texts(done.run_id, {name: text for name, text in texts.items() if text})
        if model is not None and self.keep_models:
            self._log_model(model, done.run_id, _TRIAL_MODEL, done.number)
        client.set_terminated(done.run_id, RUN_STATUS.get(done.state, "FAILED"))

        parent_metrics = [Metric(f"trials.{state}", float(n), stamp, done.number) for state, n in done.counts.items()]
        parent_metrics += [
            Metric(f"best.{m}", float(v), stamp, done.number)
            for m, v in zip(self._objectives, done.best, strict=False)
            if v is not None
        ]
        parent_tags = []
        if not self._parent_described:  # environment tags need a thread that trained: the first trial's
            self._parent_described = True
            parent_tags = [RunTag(k, self._safe(v)) for k, v in done.env.items()]
        client.log_batch(self._parent_id, metrics=parent_metrics, tags=parent_tags)
        if model is not None and done.improved:
            self._log_best(done, model)

    def _log_texts(self, run_id: str, texts: Mapping[str, str]) -> None:
        """Text artifacts of one run in one upload (each ``log_text`` would look the run up and copy apart)."""
        if not texts:
            return
        assert self._client is not None
        with tempfile.TemporaryDirectory(prefix="tuning-mlflow-") as folder:
            for name, text in texts.items():
                Path(folder, name).write_text(text, encoding="utf-8")
            self._client.log_artifacts(run_id, folder)

    def _log_best(self, done: _FinishedTrial, model: Any) -> None:
        """Log the parent's new best model, unless another process has meanwhile logged a better one.

        The previous best model of the parent is deleted: the run keeps one ``best_model``.
        """
        assert self._client is not None and self._parent_id is not None
        from mlflow.entities import RunTag

        value = done.values[0]
        tags = self._client.get_run(self._parent_id).data.tags
        recorded = tags.get(TAG_BEST_VALUE)
        if recorded is not None:
            try:
                other = float(recorded)
            except ValueError:
                other = None
            if records.improves(other, value, self._maximize[0]):
                return
        model_id = self._log_model(model, self._parent_id, _BEST_MODEL, done.number)
        if model_id is None:
            return
        self._client.log_batch(
            self._parent_id,
            tags=[
                RunTag(TAG_BEST_TRIAL, str(done.number)),
                RunTag(TAG_BEST_VALUE, repr(value)),
                RunTag(TAG_BEST_RUN, done.run_id),
                RunTag(TAG_BEST_MODEL, model_id),
            ],
        )
        self._study_attr(records.MLFLOW_BEST_MODEL, f"models:/{model_id}")
        previous = tags.get(TAG_BEST_MODEL)
        if previous and previous != model_id:
            try:
                self._client.delete_logged_model(previous)
            except Exception as exc:  # a leftover older best model is harmless
                log.debug("cannot delete the previous best model %s: %s", previous, exc)

    def _study_attr(self, key: str, value: str) -> None:
        if self._study is not None:
            self._study.set_user_attr(key, value)

    def _register_best(self, run_id: str) -> None:
        """Register the parent's best model (possibly logged by an earlier run of the study) as a new version."""
        from tuning.tracking import _model

        assert self._client is not None and self.register_model
        model_id = self._client.get_run(run_id).data.tags.get(TAG_BEST_MODEL)
        if not model_id:
            log.warning("MLflow tracking: no model to register as %r: no trial completed", self.register_model)
            return
        self.registered_uri = _model.register(self._client, self.register_model, model_id, run_id)
        self._study_attr(records.MLFLOW_REGISTERED, self.registered_uri)

    def _finish_study(self, run_id: str, study: optuna.Study, status: str) -> None:
        assert self._client is not None
        try:
            figure = _artifacts.learning_curves_png(study, self._objectives, self._maximize)
        except Exception as exc:  # a plot is a nicety
            log.debug("no learning-curve plot: %s", exc)
            figure = None
        if figure is not None:
            self._client.log_artifact(run_id, figure)
            shutil.rmtree(os.path.dirname(figure), ignore_errors=True)
        if status != "RUNNING":  # other workers still run trials: the last one ends the run
            if self.register_model:
                self._register_best(run_id)
            self._client.set_terminated(run_id, status)

    def _safe(self, value: Any, limit: int | None = _MAX_TAG) -> str:
        text = redact_text(str(value), self._secrets)
        return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _FinishedTrial:
    """What the worker needs to close a trial's run; it drops ``model`` once the summary and file are written."""

    number: int
    run: Future[str]  # the run's id, once the worker has created it
    state: str
    values: list[float]
    reason: str | None
    history: dict[str, list[float]]
    user_attrs: dict[str, Any]
    model: Any  # the trained Keras model of a complete trial, else None
    improved: bool  # the first objective is the best so far: the model becomes the parent's best model
    counts: dict[str, int]
    best: list[float | None]
    env: dict[str, str]
    run_id: str = ""


def _others_running(study: optuna.Study) -> bool:
    """Whether other workers still run trials of the study (not this process: a trial of its own still RUNNING
    is one the storage failed to record as finished)."""
    from optuna.trial import TrialState

    me = records.worker_id()
    try:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except Exception:  # the storage is unreachable (the run ends with that error): end the study's run
        return False
    return any(t.user_attrs.get(records.WORKER) != me for t in running)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
