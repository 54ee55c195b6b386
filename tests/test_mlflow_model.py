"""The study's best model as users load it: an MLflow model (registry, pyfunc), or a file without tracking.

Every test runs a real study through ``tuning.run`` on tiny real MNIST data and reads the result back the way a
user would: ``mlflow.pyfunc.load_model``, ``MlflowClient``, ``keras.saving.load_model``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import tiny_space

import tuning
from tuning import records
from tuning.data import load_spec


@pytest.fixture
def tracking_uri(workdir: Path):
    """A fresh SQLite tracking store; MLflow's current URI is put back after the test (it sets it to load)."""
    previous = mlflow.get_tracking_uri()
    yield f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(previous)


@pytest.mark.slow
def test_best_model_is_an_mlflow_model_that_predicts_and_is_registered(workdir: Path, tracking_uri: str) -> None:
    space = tiny_space(study={"n_trials": 3, "name": "served"})
    study = tuning.run(space, tracking_uri=tracking_uri, keep_models=True, register_model="mnist-best")
    mlflow.set_tracking_uri(tracking_uri)  # as a user loading the model does (the run never needed it)

    uri = study.user_attrs[records.MLFLOW_BEST_MODEL]
    assert uri.startswith("models:/m-")
    model = mlflow.pyfunc.load_model(uri)
    images = load_spec(tuning.SearchSpace.from_dict(space).data).x_test[:5]  # float32 in [0, 1], (5, 28, 28, 1)
    probabilities = np.asarray(model.predict(images))
    assert probabilities.shape == (5, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    # The model says what it expects: signature, input example and the preprocessing in its metadata.
    info = model.metadata
    assert info.get_input_schema().to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 28, 28, 1)}}
    ]
    assert "scaled to [0, 1]" in info.metadata["preprocessing"]
    assert info.metadata["trial"] == study.best_trial.number
    assert info.saved_input_example_info is not None

    client = mlflow.MlflowClient(tracking_uri)
    (version,) = client.search_model_versions("name = 'mnist-best'")
    assert version.source == uri
    assert study.user_attrs[records.MLFLOW_REGISTERED] == "models:/mnist-best/1"
    mlflow.pyfunc.load_model("models:/mnist-best/1").predict(images[:2])

    parent = client.get_run(study.user_attrs[records.MLFLOW_RUN_ID])
    experiment = parent.info.experiment_id
    logged = list(client.search_logged_models([experiment]))
    on_parent = [m for m in logged if m.source_run_id == parent.info.run_id]
    assert [m.name for m in on_parent] == ["best_model"]  # earlier bests are replaced, not piled up
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    kept = {m.source_run_id for m in logged if m.name == "model"}
    assert kept == {t.user_attrs[records.MLFLOW_RUN_ID] for t in complete}  # --keep-models: every trial's model
    # The parent run: the space's fixed values as parameters, the storage as an absolute URL.
    assert parent.data.params["train.batch_size"] == "64"
    assert parent.data.params["data.train_size"] == "300"
    assert parent.data.params["objective.metric"] == "val_accuracy"
    assert "model.depth" not in parent.data.params  # searched: on the trials' runs
    assert parent.data.tags["tuning.storage"] == f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}"


@pytest.mark.slow
def test_without_tracking_the_best_model_is_kept_on_disk_and_a_resume_says_what_it_runs(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    space = tiny_space(study={"n_trials": 2, "name": "offline"})
    study = tuning.run(space, tracking=False)
    path = workdir / "mlruns" / "models" / "offline" / "best_model.keras"
    assert f"Best model: {Path('mlruns', 'models', 'offline', 'best_model.keras')}" in capsys.readouterr().err
    about = json.loads(path.with_suffix(".json").read_text())
    assert about["trial"] == study.best_trial.number and about["value"] == pytest.approx(study.best_value)
    assert about["input_shape"] == [-1, 28, 28, 1] and "scaled to [0, 1]" in about["preprocessing"]
    model = keras.saving.load_model(path)
    assert model.count_params() == study.best_trial.user_attrs[records.PARAM_COUNT]

    tuning.run(space, tracking=False)
    err = capsys.readouterr().err
    assert "Resuming study 'offline': 2 of 2 trials done, nothing to run" in err
    tuning.run(space, n_trials=3, tracking=False)
    assert "Resuming study 'offline': 2 of 3 trials done, running 1 more." in capsys.readouterr().err
    assert not os.environ.get("MLFLOW_TRACKING_URI")
    assert not (workdir / "mlruns" / "mlflow.db").exists()


def test_register_model_needs_tracking(workdir: Path) -> None:
    with pytest.raises(tuning.errors.UserInputError, match="needs MLflow tracking"):
        tuning.run(tiny_space(), tracking=False, register_model="x")
    assert not (workdir / "mlruns").exists()  # nothing half-written
