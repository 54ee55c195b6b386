"""MLflow tracking of studies, against real MLflow stores (SQLite files and a real `mlflow server`).

The tests drive :class:`MlflowTracker` through its hooks the way the runner does (a real Optuna study,
real ``SearchSpace.suggest``, tiny real Keras models on 200 MNIST rows) and read back with ``MlflowClient``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import MNIST_DIR, ROOT, free_port, subprocess_env

from tuning import records
from tuning.errors import TrackingError
from tuning.observers import COMPLETE, FAILED, INTERRUPTED, PRUNED, TrialOutcome
from tuning.space import SearchSpace
from tuning.tracking import MlflowTracker

PYTHON = sys.executable
PASSWORD = "Sw0rdf1sh-t0ps3cret"
#: Local servers are reached directly, whatever proxy the environment names.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------- helpers (this file's own)


def _space(name: str = "demo", objective: str = "val_accuracy", direction: str = "maximize", **study) -> SearchSpace:
    return SearchSpace.from_dict(
        {
            "data": {"train_size": 200},
            "model": {"family": "mlp", "depth": 1, "width": {"low": 8, "high": 64, "step": 8}},
            "train": {"epochs": 2, "learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True}},
            "objective": [{"metric": objective, "direction": direction}],
            "study": {"name": name, **study},
        }
    )


def _study(space: SearchSpace, storage: str) -> optuna.Study:
    study = optuna.create_study(
        study_name=space.study.name,
        storage=storage,
        directions=[o.direction for o in space.objectives],
        load_if_exists=True,
    )
    study.set_user_attr(records.OBJECTIVES, [o.metric for o in space.objectives])
    return study


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, ...]:
    from tuning.data import _read

    data = _read("mnist", MNIST_DIR)  # the local copy, or Keras's download
    x, y = data["x_train"][:300], data["y_train"][:300]
    x = x.reshape(len(x), -1).astype("float32") / 255.0
    return x[:200], y[:200], x[200:], y[200:]


def _train(mnist, trial, tracker, width: int, epochs: int):
    """A tiny real Keras model trained like the runner does, reporting each epoch to the tracker."""
    import keras

    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    x, y, xv, yv = mnist
    model = keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(width, activation="relu"), keras.layers.Dense(10, "softmax")]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class Report(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            tracker.epoch_ended(trial, epoch + 1, {**logs, "epoch_seconds": time.perf_counter() - self.start})

    fit = model.fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=50, verbose=0, callbacks=[Report()])
    return model, {k: [float(v) for v in vs] for k, vs in fit.history.items()}


def _run_trial(study, space, tracker, mnist, *, width: int, state: str = COMPLETE, epochs: int = 1) -> optuna.Trial:
    """One trial through the hooks in the runner's order, then told to Optuna."""
    study.enqueue_trial({"model.width": width})
    trial = study.ask()
    config = space.suggest(trial)
    tracker.trial_started(trial, config)
    attrs: dict = {records.SEED: trial.number}
    if state == FAILED:
        outcome = TrialOutcome(FAILED, reason="the loss became NaN at epoch 1 (a lower learning_rate usually helps)")
    elif state == INTERRUPTED:
        outcome = TrialOutcome(INTERRUPTED, reason="interrupted")
    else:
        model, history = _train(mnist, trial, tracker, config.model.width[0], epochs)
        attrs.update({records.EPOCHS: epochs, records.PARAM_COUNT: model.count_params(), records.TRAIN_SECONDS: 0.5})
        attrs[records.HISTORY] = history
        if state == PRUNED:
            outcome = TrialOutcome(PRUNED, reason="pruned by the median pruner at epoch 1", history=history)
        else:
            metric = space.objectives[0].metric
            value = float(model.count_params()) if metric == "params" else history[metric][-1]
            attrs[records.TEST_ACCURACY] = 0.5
            outcome = TrialOutcome(COMPLETE, values=[value], model=model, history=history)
    outcome.user_attrs = attrs
    for key, value in {**attrs, **({records.REASON: outcome.reason} if outcome.reason else {})}.items():
        trial.set_user_attr(key, value)
    tracker.trial_finished(trial, outcome)
    if state == COMPLETE:
        study.tell(trial, outcome.values[0])
    else:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED if state == PRUNED else optuna.trial.TrialState.FAIL)
    return trial


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


def _wait_http(url: str, proc: subprocess.Popen, what: str) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            log = Path(proc.stderr.name).read_text() if proc.stderr else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log}")
        try:
            with _NO_PROXY.open(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url}")


def _start_mlflow(args: list[str], cwd: Path) -> subprocess.Popen:
    """Start the venv's ``mlflow`` command in ``cwd``, its stderr in ``cwd/mlflow.log``.

    A pipe nobody reads would block the server once full.
    """
    return subprocess.Popen(
        [str(Path(PYTHON).parent / "mlflow"), *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=(cwd / "mlflow.log").open("w"),
        text=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a fresh SQLite store, serving artifacts."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = _start_mlflow(
        ["server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
         "--artifacts-destination", str(home / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=home,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, "mlflow server")
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


# ---------------------------------------------------------------- one study, embedded SQLite


@pytest.mark.slow
def test_study_mirrors_into_one_parent_and_a_nested_run_per_trial(tmp_path, mnist):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = _space("mirror")
    study = _study(space, f"sqlite:///{tmp_path / 'optuna.db'}")
    tracker = MlflowTracker(uri)
    tracker.check()
    tracker.study_started(study, space)
    plan = [(16, COMPLETE, 2), (32, COMPLETE, 2), (8, PRUNED, 1), (24, FAILED, 0), (40, INTERRUPTED, 0)]
    trials = [_run_trial(study, space, tracker, mnist, width=w, state=s, epochs=e) for w, s, e in plan]
    tracker.study_finished(study, interrupted=False)

    client, parents, runs = _runs(uri, "mirror")  # experiment named after the study
    assert len(parents) == 1 and len(runs) == len(plan)
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert study.user_attrs[records.MLFLOW_RUN_ID] == parent.info.run_id
    assert study.user_attrs[records.MLFLOW_EXPERIMENT] == "mirror"
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    expected_status = {COMPLETE: "FINISHED", PRUNED: "FINISHED", FAILED: "FAILED", INTERRUPTED: "KILLED"}
    for trial, (_, state, epochs) in zip(trials, plan, strict=True):
        frozen = study.trials[trial.number]
        run = by_number[trial.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert frozen.user_attrs[records.MLFLOW_RUN_ID] == run.info.run_id
        assert run.data.params == {k: str(v) for k, v in frozen.params.items()}
        assert run.info.status == expected_status[state]
        assert run.data.tags["tuning.state"] == state
        assert run.data.tags["optuna.study_name"] == "mirror"
        assert run.data.tags["env.device"].startswith(("CPU", "GPU"))
        assert run.data.tags["env.optuna"] == optuna.__version__
        if state != COMPLETE:
            assert run.data.tags["tuning.reason"] == frozen.user_attrs[records.REASON]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        if epochs:  # trained: one point per epoch per Keras metric, step = epoch
            for metric in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"):
                points = client.get_metric_history(run.info.run_id, metric)
                assert sorted(p.step for p in points) == list(range(1, epochs + 1)), metric
            assert "history.csv" in artifacts
        if state == COMPLETE:
            assert run.data.metrics["final.val_accuracy"] == pytest.approx(frozen.value)
            assert run.data.metrics["final.param_count"] == frozen.user_attrs[records.PARAM_COUNT]
            assert run.data.metrics["final.test_accuracy"] == 0.5
            assert "model_summary.txt" in artifacts and "model.keras" not in artifacts
    # The parent: counts, best so far, the space as resolved, the best model, the curves.
    assert parent.data.metrics["trials.complete"] == 2
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


@pytest.mark.slow
def test_best_model_is_replaced_when_a_trial_beats_it_and_every_model_kept_on_request(tmp_path, mnist):
    import keras

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = _space("smallest", objective="params", direction="minimize")
    study = _study(space, f"sqlite:///{tmp_path / 'optuna.db'}")
    tracker = MlflowTracker(uri, experiment="shrinking", keep_models=True)
    tracker.check()
    tracker.study_started(study, space)
    for width in (48, 16, 32):  # trial 1 (width 16) beats trial 0; trial 2 does not beat trial 1
        _run_trial(study, space, tracker, mnist, width=width)
    tracker.study_finished(study, interrupted=False)

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


def test_resumed_study_continues_under_the_same_parent_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = _space("resume")
    for session in range(2):
        study = _study(space, storage)
        tracker = MlflowTracker(uri)
        tracker.check()
        tracker.study_started(study, space)
        _run_trial(study, space, tracker, None, width=8 + 8 * session, state=FAILED)
        tracker.study_finished(study, interrupted=session == 0)
        _, parents, _ = _runs(uri, "resume")
        assert parents[0].info.status == ("KILLED" if session == 0 else "FINISHED")

    client, parents, runs = _runs(uri, "resume")
    assert len(parents) == 1 and len(runs) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    counts = client.get_metric_history(parents[0].info.run_id, "trials.failed")
    assert max(p.value for p in counts) == 2  # the second session counted the first session's trial


def test_embedded_default_lands_in_mlruns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = _space("default-place")
    tracker = MlflowTracker()
    assert tracker.uri == "sqlite:///mlruns/mlflow.db"
    tracker.check()  # creates mlruns/
    study = _study(space, "sqlite:///mlruns/optuna.db")
    tracker.study_started(study, space)
    _run_trial(study, space, tracker, None, width=8, state=FAILED)
    tracker.study_finished(study, interrupted=False)
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    client, (parent,), _ = _runs("sqlite:///mlruns/mlflow.db", "default-place")
    assert Path(parent.info.artifact_uri).resolve().is_relative_to(tmp_path / "mlruns" / "artifacts")
    assert (Path(parent.info.artifact_uri) / "space.yaml").is_file()


# ---------------------------------------------------------------- secrets


@pytest.mark.slow
def test_a_password_in_the_storage_url_never_reaches_mlflow(tmp_path, mnist, caplog):
    storage_url = f"postgresql://tuner:{PASSWORD}@db.internal:5432/optuna"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = _space("secret", storage=storage_url)
    study = _study(space, f"sqlite:///{tmp_path / 'optuna.db'}")
    tracker = MlflowTracker(uri, storage_url=storage_url, keep_models=True)
    tracker.check()
    tracker.study_started(study, space)
    _run_trial(study, space, tracker, mnist, width=8)
    study.enqueue_trial({"model.width": 16})
    trial = study.ask()
    tracker.trial_started(trial, space.suggest(trial))
    reason = f"OperationalError: could not connect to {storage_url}"
    tracker.trial_finished(trial, TrialOutcome(FAILED, reason=reason))
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    tracker.study_finished(study, interrupted=False)

    client, parents, runs = _runs(uri, "secret")
    assert len(runs) == 2
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
    assert "tuner:***@db.internal" in text  # the URL is there, redacted (space.yaml, the reason, the tag)
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


def test_deleted_experiment_is_a_tracking_error_naming_the_fix(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(TrackingError, match="experiment 'gone' is deleted") as err:
        MlflowTracker(uri, experiment="gone").check()
    assert "mlflow experiments restore" in str(err.value)


def test_importing_tracking_does_not_import_mlflow():
    code = (
        "import sys, tuning.tracking, tuning._redact; print(sorted({'mlflow', 'tensorflow', 'keras'} & {*sys.modules}))"
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

    # The command the README gives, from the project folder.
    port = free_port()
    ui = _start_mlflow(["ui", "--backend-store-uri", "sqlite:///mlruns/mlflow.db", "--port", str(port)], cwd=tmp_path)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", ui, "mlflow ui")
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
        _stop(ui)


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
