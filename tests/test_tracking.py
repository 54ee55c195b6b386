"""MLflow tracking of studies, against real MLflow stores (SQLite files and a real `mlflow server`).

Studies run through ``tuning.run`` (tiny real Keras models on 200 MNIST rows; Ctrl-C is a real SIGINT sent by
an observer) and are read back with ``MlflowClient``. The thread and process tests drive
:class:`MlflowTracker`'s hooks directly, with synthetic epochs: their point is concurrent logging, not training.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import servers
from conftest import MNIST_DIR, ROOT, free_port, subprocess_env

import tuning
from tuning import records
from tuning.errors import TrackingError
from tuning.observers import COMPLETE, FAILED, INTERRUPTED, PRUNED, StudyObserver, TrialOutcome
from tuning.space import SearchSpace
from tuning.tracking import MlflowTracker

PYTHON = sys.executable
PASSWORD = "Sw0rdf1sh-t0ps3cret"
#: Local servers are reached directly, whatever proxy the environment names.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------- helpers (this file's own)


def _raw(name: str = "demo", objective: str = "val_accuracy", direction: str = "maximize", **study) -> dict:
    """A tiny real space: one hidden layer of 8-64 units, 2 epochs, learning rates from "learns nothing" (1e-5,
    with SGD) up."""
    return {
        "data": {"train_size": 200, "test_size": 100},
        "model": {"family": "mlp", "depth": 1, "width": {"low": 8, "high": 64, "step": 8}},
        "train": {"epochs": 2, "optimizer": ["adam", "sgd"], "chance_epochs": 0,
                  "learning_rate": {"low": 1.0e-5, "high": 0.1, "log": True}},
        "objective": [{"metric": objective, "direction": direction}],
        "study": {"name": name, "pruner": "none", "seed": 0, **study},
    }  # fmt: skip


def _space(name: str = "demo", objective: str = "val_accuracy", direction: str = "maximize", **study) -> SearchSpace:
    return SearchSpace.from_dict(_raw(name, objective, direction, **study))


def _study(space: SearchSpace, storage: str) -> optuna.Study:
    study = optuna.create_study(
        study_name=space.study.name,
        storage=storage,
        directions=[o.direction for o in space.objectives],
        load_if_exists=True,
    )
    study.set_user_attr(records.OBJECTIVES, [o.metric for o in space.objectives])
    return study


def _trial(width: int, optimizer: str = "adam", learning_rate: float = 0.01) -> dict:
    """An enqueued configuration: adam at 0.01 learns; sgd at 1e-5 stays at chance level."""
    return {"model.width": width, "train.optimizer": optimizer, "train.learning_rate": learning_rate}


LEARNS, CHANCE = ("adam", 0.01), ("sgd", 1.0e-5)
#: The width :func:`_build` refuses: its trial fails before training.
UNBUILDABLE = 24


def _build(config):
    """A user's ``build_fn``: the one hidden layer the space describes, except that width 24 cannot be built."""
    import keras

    width = config.params["model.width"]
    if width == UNBUILDABLE:
        raise ValueError(f"this model cannot be built with width {width}")
    layers = keras.layers
    return keras.Sequential(
        [keras.Input((28, 28, 1)), layers.Flatten(), layers.Dense(width, "relu"), layers.Dense(10, "softmax")]
    )


class CtrlCAt(StudyObserver):
    """Presses Ctrl-C (a real SIGINT to this process) after the first epoch of the trial with this width."""

    def __init__(self, width: int) -> None:
        self.width = width

    def epoch_ended(self, trial, epoch, logs) -> None:
        if trial.params.get("model.width") == self.width:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in ``tmp_path`` with MNIST from the local copy and no MLFLOW_TRACKING_URI."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if MNIST_DIR:
        monkeypatch.setenv("TUNING_DATA_DIR", MNIST_DIR)
    return tmp_path


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri: str, experiment: str):
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("tuning.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("tuning.role") == "trial"]
    return client, parents, trials


def _logged_models(client, run_id: str) -> list:
    """The MLflow logged models whose source is run ``run_id`` (deleted ones are not listed)."""
    experiment = client.get_run(run_id).info.experiment_id
    return [m for m in client.search_logged_models([experiment]) if m.source_run_id == run_id]


def _model_files(client, model_id: str, folder: Path) -> Path:
    """A logged model's files, downloaded into ``folder``."""
    import mlflow

    location = client.get_logged_model(model_id).artifact_location
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(folder)))


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a fresh SQLite store, serving artifacts."""
    with servers.mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


# ---------------------------------------------------------------- one study, embedded SQLite


@pytest.mark.slow
def test_study_mirrors_into_one_parent_and_a_nested_run_per_trial(in_tmp):
    tmp_path = in_tmp
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    plan = [(16, LEARNS, COMPLETE), (32, LEARNS, COMPLETE), (8, CHANCE, PRUNED), (UNBUILDABLE, LEARNS, FAILED),
            (64, LEARNS, INTERRUPTED)]  # fmt: skip
    # The median pruner prunes from the third trial on: the one at chance level is far below the median.
    raw = _raw("mirror", pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
               enqueue=[_trial(w, *how) for w, how, _ in plan])  # fmt: skip
    space = SearchSpace.from_dict(raw)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the fifth trial
        tuning.run(space, n_trials=4, storage=storage, tracking_uri=uri, build_fn=_build, observers=[CtrlCAt(64)])
    _, (parent,), _ = _runs(uri, "mirror")
    assert parent.info.status == "KILLED"
    # Resumed: the interrupted configuration runs again, first.
    study = tuning.run(space, n_trials=4, storage=storage, tracking_uri=uri, build_fn=_build)
    states = [*(state for *_, state in plan), COMPLETE]
    assert [records_state(t) for t in study.trials] == states

    client, parents, runs = _runs(uri, "mirror")  # experiment named after the study
    assert len(parents) == 1 and len(runs) == len(states)
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert study.user_attrs[records.MLFLOW_RUN_ID] == parent.info.run_id
    assert study.user_attrs[records.MLFLOW_EXPERIMENT] == "mirror"
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    expected_status = {COMPLETE: "FINISHED", PRUNED: "FINISHED", FAILED: "FAILED", INTERRUPTED: "KILLED"}
    for frozen, state in zip(study.trials, states, strict=True):
        run = by_number[frozen.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert frozen.user_attrs[records.MLFLOW_RUN_ID] == run.info.run_id
        assert run.data.params == {k: str(v) for k, v in frozen.params.items()}
        assert run.info.status == expected_status[state]
        assert run.info.run_name == RUN_NAMES[state].format(frozen.number)  # a pruned run tells apart at a glance
        assert run.data.tags["tuning.state"] == state
        assert run.data.tags["optuna.study_name"] == "mirror"
        assert run.data.tags["env.device"].startswith(("CPU", "GPU"))
        assert run.data.tags["env.optuna"] == optuna.__version__
        if state != COMPLETE:
            assert run.data.tags["tuning.reason"] == frozen.user_attrs[records.REASON]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        if state in (COMPLETE, PRUNED):  # trained: one point per epoch per Keras metric, step = epoch
            epochs = frozen.user_attrs[records.EPOCHS]
            assert epochs == (2 if state == COMPLETE else 1)
            for metric in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"):
                points = client.get_metric_history(run.info.run_id, metric)
                assert sorted(p.step for p in points) == list(range(1, epochs + 1)), metric
            assert "history.csv" in artifacts
        if state == COMPLETE:
            assert run.data.metrics["final.val_accuracy"] == pytest.approx(frozen.value)
            assert run.data.metrics["final.param_count"] == frozen.user_attrs[records.PARAM_COUNT]
            test = frozen.user_attrs.get(records.TEST_ACCURACY)  # for the trials that led when they finished
            assert run.data.metrics.get("final.test_accuracy") == (None if test is None else pytest.approx(test))
            assert "model_summary.txt" in artifacts and "model.keras" not in artifacts
    # The parent: counts, best so far, the space as resolved, the best model, the curves.
    assert parent.data.metrics["trials.complete"] == 3
    assert parent.data.metrics["trials.pruned"] == 1
    assert parent.data.metrics["trials.failed"] == 2  # failed and interrupted
    assert parent.data.metrics["best.val_accuracy"] == pytest.approx(study.best_value)
    assert parent.data.tags["tuning.best_trial"] == str(study.best_trial.number)
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"space.yaml", "learning_curves.png"} <= parent_files
    (best,) = _logged_models(client, parent.info.run_id)  # the best model: an MLflow model on the parent
    assert best.name == "best_model" and best.model_id == parent.data.tags["tuning.best_model_id"]
    import yaml

    space_file = client.download_artifacts(parent.info.run_id, "space.yaml", str(tmp_path))
    assert yaml.safe_load(Path(space_file).read_text()) == space.to_dict()
    summary = client.download_artifacts(by_number[0].info.run_id, "model_summary.txt", str(tmp_path))
    assert "Total params" in Path(summary).read_text()
    history = client.download_artifacts(by_number[0].info.run_id, "history.csv", str(tmp_path))
    assert Path(history).read_text().splitlines()[0].startswith("epoch,")
    assert len(Path(history).read_text().splitlines()) == 3  # header + 2 epochs


#: The name of a trial's run in MLflow's run list, by how the trial ended.
RUN_NAMES = {COMPLETE: "trial-{}", PRUNED: "trial-{} (pruned)", FAILED: "trial-{} (failed)",
             INTERRUPTED: "trial-{} (interrupted)"}  # fmt: skip


@pytest.mark.slow
def test_sync_backfills_runs_named_and_ended_as_live_tracking_would(in_tmp):
    """``tuning sync`` into an empty SQLite tracking store: every trial of a study run without tracking gets its
    run, with the name and status the live tracker gives (a pruned run FINISHED as "trial-2 (pruned)", an
    interrupted one KILLED)."""
    from tuning.cli import main

    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    storage = f"sqlite:///{in_tmp / 'optuna.db'}"
    plan = [(16, LEARNS, COMPLETE), (32, LEARNS, COMPLETE), (8, CHANCE, PRUNED), (UNBUILDABLE, LEARNS, FAILED),
            (64, LEARNS, INTERRUPTED)]  # fmt: skip
    raw = _raw("backfill", pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
               enqueue=[_trial(w, *how) for w, how, _ in plan])  # fmt: skip
    space = SearchSpace.from_dict(raw)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the fifth trial
        tuning.run(space, n_trials=4, storage=storage, tracking=False, build_fn=_build, observers=[CtrlCAt(64)])
    study = tuning.run(space, n_trials=4, storage=storage, tracking=False, build_fn=_build)
    states = [records_state(t) for t in study.trials]
    assert states == [*(state for *_, state in plan), COMPLETE]

    assert main(["sync", "backfill", "--storage", storage, "--tracking-uri", uri]) == 0
    _, (parent,), runs = _runs(uri, "backfill")
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    expected_status = {COMPLETE: "FINISHED", PRUNED: "FINISHED", FAILED: "FAILED", INTERRUPTED: "KILLED"}
    assert sorted(by_number) == list(range(len(states)))
    for number, state in enumerate(states):
        run = by_number[number]
        assert (run.info.run_name, run.info.status, run.data.tags["tuning.state"]) == (
            RUN_NAMES[state].format(number), expected_status[state], state)
    assert parent.info.status == "FINISHED"


def records_state(trial: optuna.trial.FrozenTrial) -> str:
    """The observer state a finished trial had: complete, pruned, failed, or interrupted (failed, so recorded)."""
    if trial.state == optuna.trial.TrialState.FAIL:
        return INTERRUPTED if trial.user_attrs.get(records.REASON) == INTERRUPTED else FAILED
    return {optuna.trial.TrialState.COMPLETE: COMPLETE, optuna.trial.TrialState.PRUNED: PRUNED}[trial.state]


@pytest.mark.slow
def test_best_model_is_replaced_when_a_trial_beats_it_and_every_model_kept_on_request(in_tmp):
    import keras

    tmp_path = in_tmp
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # trial 1 (width 16) beats trial 0; trial 2 does not beat trial 1
    raw = _raw("shrinking", objective="params", direction="minimize", enqueue=[_trial(w) for w in (48, 16, 32)])
    study = tuning.run(raw, n_trials=3, storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=uri,
                       keep_models=True)  # fmt: skip

    client, (parent,), runs = _runs(uri, "shrinking")
    assert parent.data.tags["tuning.best_trial"] == "1"
    (logged,) = _logged_models(client, parent.info.run_id)  # the earlier best is deleted: one best_model
    best = keras.saving.load_model(_model_files(client, logged.model_id, tmp_path) / "data" / "model.keras")
    assert best.count_params() == study.trials[1].user_attrs[records.PARAM_COUNT]
    history = client.get_metric_history(parent.info.run_id, "best.params")
    assert [p.value for p in sorted(history, key=lambda p: p.step)] == [
        study.trials[0].value, study.trials[1].value, study.trials[1].value
    ]  # fmt: skip
    for run in runs:  # keep_models: every complete trial also holds its own MLflow model
        assert [m.name for m in _logged_models(client, run.info.run_id)] == ["model"]


@pytest.mark.slow
def test_resumed_study_continues_under_the_same_parent_run(in_tmp):
    tmp_path = in_tmp
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    raw = _raw("resume", enqueue=[_trial(8)])
    with pytest.raises(KeyboardInterrupt):  # session 0: Ctrl-C in its only trial
        tuning.run(raw, n_trials=1, storage=storage, tracking_uri=uri, observers=[CtrlCAt(8)])
    _, parents, _ = _runs(uri, "resume")
    assert parents[0].info.status == "KILLED"
    tuning.run(raw, n_trials=1, storage=storage, tracking_uri=uri)  # session 1: runs it again, to the end
    client, parents, runs = _runs(uri, "resume")
    assert parents[0].info.status == "FINISHED"
    assert len(parents) == 1 and len(runs) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    failed = client.get_metric_history(parents[0].info.run_id, "trials.failed")
    # The second session, whose trial completed, counted the first session's trial.
    assert max(failed, key=lambda p: (p.step, p.timestamp)).value == 1
    assert parents[0].data.metrics["trials.complete"] == 1


@pytest.mark.slow
def test_embedded_default_lands_in_mlruns(in_tmp, monkeypatch):
    tmp_path = in_tmp
    raw = _raw("default-place", enqueue=[_trial(8)])
    raw["train"]["epochs"] = 1
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # one process, two folders: each study is tracked in its own folder's mlruns/
    tuning.run({**raw, "study": {**raw["study"], "name": "first"}}, n_trials=1)
    # Logging the best model must not leave MLflow's current URI in the environment (MLflow writes it there).
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.chdir(tmp_path)
    tuning.run(raw, n_trials=1)
    assert (elsewhere / "mlruns" / "mlflow.db").is_file()
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    client, (parent,), _ = _runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "default-place")
    assert Path(parent.info.artifact_uri).resolve().is_relative_to(tmp_path / "mlruns" / "artifacts")
    assert (Path(parent.info.artifact_uri) / "space.yaml").is_file()


# ---------------------------------------------------------------- secrets


@pytest.mark.slow
def test_a_password_in_the_storage_url_never_reaches_mlflow(in_tmp, caplog):
    """The space names a password-protected storage (a study section others would share) and a trial fails
    with an error quoting it; the study itself runs on a local SQLite file, as nothing here serves PostgreSQL."""
    import keras

    tmp_path = in_tmp
    storage_url = f"postgresql://tuner:{PASSWORD}@db.internal:5432/optuna"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def build_fn(config):
        if config.params["model.width"] == 16:
            raise RuntimeError(f"OperationalError: could not connect to {storage_url}")
        return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(config.params["model.width"], activation="relu"),
                                 keras.layers.Dense(10, activation="softmax")])  # fmt: skip

    raw = _raw("secret", storage=storage_url, enqueue=[_trial(16), _trial(8)])  # fails, then completes
    tuning.run(raw, n_trials=1, storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=uri,
               keep_models=True, build_fn=build_fn)  # fmt: skip

    client, parents, runs = _runs(uri, "secret")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    seen, names = [], []
    for run in parents + runs:
        seen += [json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(run.data.metrics)]
        local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
        files = [p for p in local.rglob("*") if p.is_file()]
        names += [p.name for p in files]
        seen += [p.read_bytes().decode("latin-1") for p in files]
        for model in _logged_models(client, run.info.run_id):  # the MLflow models: MLmodel, metadata, ...
            folder = _model_files(client, model.model_id, tmp_path / model.model_id)
            seen += [p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file()]
            names += [p.name for p in folder.rglob("*") if p.is_file()]
    assert {"space.yaml", "model.keras", "MLmodel", "history.csv", "model_summary.txt"} <= set(names)
    text = "\n".join(seen)
    assert "tuner:***@db.internal" in text  # the URL is there, redacted (space.yaml, the reason)
    assert PASSWORD not in text
    assert PASSWORD not in caplog.text


# ---------------------------------------------------------------- unusable locations


def test_unreachable_server_is_a_tracking_error_before_any_trial(tmp_path):
    port = free_port()
    tracker = MlflowTracker(f"http://admin:{PASSWORD}@127.0.0.1:{port}")
    with pytest.raises(TrackingError) as err:
        tracker.check()
    message = str(err.value)
    assert "cannot reach the MLflow tracking server" in message
    assert f"Received: http://admin:***@127.0.0.1:{port}" in message
    assert "Fix: start it" in message and PASSWORD not in message


def test_unwritable_location_is_a_tracking_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the tracking folder should be")
    with pytest.raises(TrackingError, match="cannot create the tracking folder") as err:
        MlflowTracker(f"sqlite:///{blocker / 'mlflow.db'}").check()
    assert "Fix: choose a writable location" in str(err.value)


@pytest.mark.slow  # creating an MLflow SQLite store runs all its schema migrations: about a second, more when loaded
def test_deleted_experiment_is_a_tracking_error_naming_the_fix(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(TrackingError, match="experiment 'gone' is deleted") as err:
        MlflowTracker(uri, experiment="gone").check()
    assert "mlflow experiments restore" in str(err.value)


@pytest.mark.slow
def test_importing_tracking_does_not_import_mlflow():
    code = (
        "import sys, tuning.tracking, tuning.redact; print(sorted({'mlflow', 'tensorflow', 'keras'} & {*sys.modules}))"
    )
    out = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- a real server, threads, processes


@pytest.mark.slow
def test_two_threads_track_into_one_study_on_a_server_and_stdout_stays_clean(tmp_path, mlflow_server, capfd):
    import threading

    space = _space("threads")
    study = _study(space, f"sqlite:///{tmp_path / 'optuna.db'}")
    tracker = MlflowTracker(mlflow_server)
    tracker.check()
    tracker.study_started(study, space)
    errors: list[BaseException] = []
    asking = threading.Lock()

    def worker(offset: int) -> None:
        try:
            for i in range(3):
                state = (COMPLETE, PRUNED, FAILED)[i]
                with asking:  # SQLite cannot lock rows: two threads may pop the same enqueued trial
                    study.enqueue_trial({"model.width": 8 * (offset + 2 * i + 1)})
                    trial = study.ask()
                tracker.trial_started(trial, space.suggest(trial))
                for epoch in (1, 2):
                    tracker.epoch_ended(trial, epoch, {"loss": 1.0 / epoch, "val_accuracy": 0.1 * epoch})
                values = [0.1 * (offset + i)] if state == COMPLETE else None
                outcome = TrialOutcome(
                    state,
                    values=values,
                    reason=None if state == COMPLETE else f"{state} here",
                    history={"loss": [1.0, 0.5], "val_accuracy": [0.1, 0.2]},
                )
                tracker.trial_finished(trial, outcome)
                if state == COMPLETE:
                    study.tell(trial, values[0])
                else:
                    study.tell(
                        trial, state=optuna.trial.TrialState.PRUNED if state == PRUNED else optuna.trial.TrialState.FAIL
                    )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tracker.study_finished(study, interrupted=False)
    assert not errors
    assert capfd.readouterr().out == ""  # no "View run ... at ..." lines

    client, parents, runs = _runs(mlflow_server, "threads")
    assert len(parents) == 1 and len(runs) == 6
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == list(range(6))
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 2
        assert run.data.params == {
            k: str(v) for k, v in study.trials[int(run.data.tags["optuna.trial_number"])].params.items()
        }
    assert {r.info.status for r in runs} == {"FINISHED", "FAILED"}
    assert parents[0].data.metrics["trials.complete"] == 2


_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import optuna
    from tuning.observers import TrialOutcome
    from tuning.space import SearchSpace
    from tuning.tracking import MlflowTracker

    uri, storage, start_at, space_json = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    import json
    space = SearchSpace.from_dict(json.loads(space_json))
    study = optuna.load_study(study_name=space.study.name, storage=storage)
    tracker = MlflowTracker(uri)
    tracker.check()
    time.sleep(max(0.0, start_at - time.time()))  # both processes start the study at the same moment
    tracker.study_started(study, space)
    for i in range(2):
        trial = study.ask()
        tracker.trial_started(trial, space.suggest(trial))
        tracker.epoch_ended(trial, 1, {"loss": 0.5, "val_accuracy": 0.5})
        tracker.trial_finished(trial, TrialOutcome("complete", values=[0.5], history={"loss": [0.5]}))
        study.tell(trial, 0.5)
    tracker.study_finished(study, interrupted=False)
    """
)


@pytest.mark.slow
def test_two_processes_starting_one_study_at_once_share_one_parent(tmp_path, mlflow_server):
    raw = {
        "data": {"train_size": 200},
        "model": {"family": "mlp", "depth": 1, "width": {"low": 8, "high": 64, "step": 8}},
        "train": {"epochs": 1},
        "study": {"name": "processes"},
    }
    space = SearchSpace.from_dict(raw)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    _study(space, storage)
    script = tmp_path / "worker.py"
    script.write_text(_PROCESS_SCRIPT)
    start_at = str(time.time() + 8)  # after both processes have imported MLflow and Optuna
    env = subprocess_env()
    procs = [
        subprocess.Popen([PYTHON, str(script), mlflow_server, storage, start_at, json.dumps(raw)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert [out for out, _ in outputs] == ["", ""]

    client, parents, runs = _runs(mlflow_server, "processes")
    assert len(parents) == 1, [p.info.run_id for p in parents]
    assert len(runs) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    study = optuna.load_study(study_name="processes", storage=storage)
    assert study.user_attrs[records.MLFLOW_RUN_ID] == parents[0].info.run_id


# ---------------------------------------------------------------- end to end: `tuning run`, then the UI

_E2E_SPACE = """\
data: {train_size: 300}
model: {family: mlp, depth: 1, width: {low: 8, high: 64, step: 8}}
train: {epochs: 1}
study: {name: e2e}
"""


@pytest.mark.slow
def test_tuning_run_tracks_every_trial_and_the_readme_ui_command_serves_them(tmp_path):
    (tmp_path / "space.yaml").write_text(_E2E_SPACE)
    env = subprocess_env(MNIST_DIR)
    run = subprocess.run(
        [PYTHON, "-m", "tuning.cli", "run", "space.yaml", "--n-trials", "2", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "View run" not in run.stdout

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client, parents, trials = _runs(uri, "e2e")
    assert len(parents) == 1 and len(trials) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" and "val_accuracy" in r.data.metrics for r in trials)

    # The summary's command that runs the best model works here, offline, as printed (--env-manager local).
    line = next(line for line in run.stdout.splitlines() if line.startswith("Predict:  "))
    command = shlex.split(line.removeprefix("Predict:  ").split("  (")[0])
    assignments = dict(word.split("=", 1) for word in command[:1])
    assert command[1:4] == ["mlflow", "models", "predict"] and command[-2:] == ["--env-manager", "local"]
    (tmp_path / "input.json").write_text(json.dumps({"inputs": [[[[0.5]] * 28] * 28] * 3}))  # 3 float32 images
    predicted = subprocess.run([str(Path(PYTHON).parent / "mlflow"), *command[2:]], cwd=tmp_path,
                               env={**env, **assignments}, capture_output=True, text=True)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    probabilities = json.loads(predicted.stdout[predicted.stdout.index('{"predictions"'):])["predictions"]
    assert len(probabilities) == 3 and all(len(p) == 10 and abs(sum(p) - 1) < 1e-3 for p in probabilities)

    # The command the README gives, from the project folder.
    port = free_port()
    ui = servers.start_mlflow(["ui", "--backend-store-uri", "sqlite:///mlruns/mlflow.db", "--port", str(port)],
                              tmp_path)
    try:
        servers.wait_http(f"http://127.0.0.1:{port}/health", ui, "mlflow ui")
        experiment = client.get_experiment_by_name("e2e").experiment_id
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment], "max_results": 100}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with _NO_PROXY.open(request, timeout=30) as response:
            served = json.load(response)["runs"]
        roles = sorted(next(t["value"] for t in r["data"]["tags"] if t["key"] == "tuning.role") for r in served)
        assert roles == ["study", "trial", "trial"]
        listing = f"http://127.0.0.1:{port}/api/2.0/mlflow/artifacts/list?run_id={parents[0].info.run_id}"
        with _NO_PROXY.open(listing, timeout=30) as response:
            files = {f["path"] for f in json.load(response).get("files", [])}
        assert "space.yaml" in files
        assert parents[0].data.tags["tuning.best_model_id"].startswith("m-")  # the best model, logged
    finally:
        servers.stop(ui)


@pytest.mark.slow
def test_tuning_run_with_an_unreachable_tracking_server_exits_2_before_training(tmp_path):
    (tmp_path / "space.yaml").write_text(_E2E_SPACE)
    env = subprocess_env(MNIST_DIR)
    uri = f"http://user:{PASSWORD}@127.0.0.1:{free_port()}"
    run = subprocess.run(
        [PYTHON, "-m", "tuning.cli", "run", "space.yaml", "--n-trials", "1", "--tracking-uri", uri],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2, run.stderr
    assert "cannot reach the MLflow tracking server" in run.stderr
    assert PASSWORD not in run.stderr + run.stdout
    storage = tmp_path / "mlruns" / "optuna.db"
    assert not storage.exists() or not optuna.get_all_study_names(f"sqlite:///{storage}")
