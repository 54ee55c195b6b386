"""``study.engine: keras_tuner``: KerasTuner's own tuners search, the toolkit records every trial in the same Optuna
storage, MLflow tracking and reports as the Optuna engine.

The fast tests check bad input through the command line (in-process) and the refusal to resume a study with
another engine or tuner. The slow ones train MLPs on 300 MNIST images through ``tuning.run`` and
``python -m tuning``.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import leading_trials, subprocess_env, tiny_space, with_test_accuracy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from tuning import records
from tuning import study as studies
from tuning.cli import main
from tuning.space import SearchSpace


def _kt_space(name: str = "kt", tuner: object = "hyperband", n_trials: int = 3, epochs: object = None) -> dict:
    """``tiny_space()`` under the KerasTuner engine (epochs 1-3 by default: Hyperband continues some trials)."""
    return tiny_space(
        study={"name": name, "engine": "keras_tuner", "tuner": tuner, "n_trials": n_trials, "pruner": "none"},
        train={"epochs": epochs or {"low": 1, "high": 3}},
    )


def _write(path: Path, space: dict) -> Path:
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def _cmd(*args: str, cwd: Path, mnist_dir: str | None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuning", *args], cwd=cwd, env=subprocess_env(mnist_dir),
                          capture_output=True, text=True)


def _storage(folder: Path) -> optuna.storages.RDBStorage:
    return studies.open_storage(f"sqlite:///{folder / 'mlruns' / 'optuna.db'}")


# ------------------------------------------------------------------------------------------------- bad input

BAD_STUDIES = {
    "unknown tuner": ({"engine": "keras_tuner", "tuner": "grid"}, ["study.tuner", "grid", "hyperband, random"]),
    "misspelt option": ({"engine": "keras_tuner", "tuner": {"type": "hyperband", "factr": 2}},
                        ["study.tuner.factr", "did you mean `factor`"]),
    "option of another tuner": ({"engine": "keras_tuner", "tuner": {"type": "random", "factor": 2}},
                                ["study.tuner.factor", "random tuner"]),
    "bad option value": ({"engine": "keras_tuner", "tuner": {"type": "hyperband", "factor": 1}},
                         ["study.tuner.factor", ">= 2", "Received: 1"]),
    "mapping without type": ({"engine": "keras_tuner", "tuner": {"factor": 2}}, ["study.tuner", "needs `type`"]),
    "tuner without the engine": ({"tuner": "random"}, ["study.tuner", "study.engine: keras_tuner"]),
    "unknown engine": ({"engine": "ray"}, ["study.engine", "optuna, keras_tuner"]),
    "sampler under keras_tuner": ({"engine": "keras_tuner", "sampler": "tpe"}, ["study.sampler", "study.tuner"]),
    "pruner under keras_tuner": ({"engine": "keras_tuner", "pruner": "median"}, ["study.pruner", "median"]),
    "n_jobs under keras_tuner": ({"engine": "keras_tuner", "n_jobs": 2}, ["study.n_jobs", "one trial at a time"]),
    "baselines under keras_tuner": ({"engine": "keras_tuner", "enqueue": [{"model.depth": 1}]},
                                    ["study.enqueue", "baseline"]),
}


@pytest.mark.parametrize("case", BAD_STUDIES, ids=list(BAD_STUDIES))
def test_bad_tuner_settings_exit_2_naming_the_key_and_write_nothing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study, says = BAD_STUDIES[case]
    space = tiny_space()
    space["study"] = {k: v for k, v in space["study"].items() if k != "pruner"} | study
    path = _write(tmp_path / "space.yaml", space)
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["run", str(path)])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    for text in says:
        assert text in err, (text, err)
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # no mlruns/, nothing half-written


def test_n_jobs_from_the_command_line_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "space.yaml", _kt_space())
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path), "--n-jobs", "2"]) == 2
    assert "the keras_tuner engine runs one trial at a time" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_a_keras_tuner_space_describes_its_tuner_and_round_trips() -> None:
    space = SearchSpace.from_dict(_kt_space(tuner={"type": "bayesian", "num_initial_points": 2}))
    assert "engine keras_tuner, tuner bayesian (num_initial_points 2, alpha 0.0001, beta 2.6)" in space.describe()
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert "sampler" not in space.to_dict()["study"]  # only the chosen engine's keys are written
    assert SearchSpace.from_dict(tiny_space()).to_dict()["study"].get("engine") is None  # Optuna spaces unchanged


# --------------------------------------------------------------------------------------------------- studies


@pytest.mark.slow
def test_hyperband_study_through_tuning_run_is_recorded_like_an_optuna_study(workdir: Path) -> None:
    from mlflow import MlflowClient

    import tuning

    space = SearchSpace.from_dict(_kt_space(tuner={"type": "hyperband", "factor": 2}, n_trials=6))
    study = tuning.run(space)

    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    declared = space.distributions()
    for t in trials:
        # Parameters with the space's own names and distributions; only the layers the model has.
        assert set(t.params) <= set(declared) and "train.epochs" not in t.params  # Hyperband decides the epochs
        assert {n: t.distributions[n] for n in t.params} == {n: declared[n] for n in t.params}
        assert ("model.width.2" in t.params) == (t.params["model.depth"] == 2)
        kt = t.user_attrs["keras_tuner_trial"]
        first = kt["initial_epoch"] + 1
        assert sorted(t.intermediate_values) == list(range(first, kt["epochs"] + 1))  # one value per epoch trained
        assert t.value == t.intermediate_values[kt["epochs"]]
        for key in (records.EPOCHS, records.TRAIN_SECONDS, records.PARAM_COUNT, records.HISTORY,
                    records.SEED, records.MLFLOW_RUN_ID):
            assert key in t.user_attrs, (key, t.user_attrs)
        assert t.user_attrs[records.EPOCHS] == kt["epochs"] - kt["initial_epoch"]
        assert t.datetime_start is not None and t.datetime_complete > t.datetime_start
    assert with_test_accuracy(study) == leading_trials(study)  # the test set: once for each trial that led the study
    continued = [t for t in trials if "continues" in t.user_attrs["keras_tuner_trial"]]
    assert continued, "Hyperband with max_epochs 3 and factor 2 continues its best trials"
    by_kt_id = {t.user_attrs["keras_tuner_trial"]["id"]: t for t in trials}
    for t in continued:
        assert t.params == by_kt_id[t.user_attrs["keras_tuner_trial"]["continues"]].params
    assert (workdir / "mlruns" / "keras_tuner" / "kt" / "oracle.json").is_file()  # KerasTuner's own folder

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kt")
    runs = client.search_runs([experiment.experiment_id])
    parent = study.user_attrs[records.MLFLOW_RUN_ID]
    nested = {r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert set(nested) == {t.user_attrs[records.MLFLOW_RUN_ID] for t in trials}
    one = nested[trials[0].user_attrs[records.MLFLOW_RUN_ID]]
    assert one.info.status == "FINISHED" and "val_accuracy" in one.data.metrics
    assert one.data.params["model.depth"] == str(trials[0].params["model.depth"])

    report = tuning.report.build_report(["kt"], "sqlite:///mlruns/optuna.db")
    row = report.comparison.iloc[0]
    assert row["study"] == "kt" and row["complete"] == 6 and row["best"] == pytest.approx(study.best_value)


@pytest.mark.slow
@pytest.mark.parametrize("tuner", ["random", "bayesian"])
def test_random_and_bayesian_tuners_search_the_epochs_too(workdir: Path, tuner: str) -> None:
    import tuning

    study = tuning.run(_kt_space(name=tuner, tuner=tuner, n_trials=3), tracking=False)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:
        assert t.distributions["train.epochs"] == IntDistribution(1, 3)
        assert t.user_attrs[records.EPOCHS] == t.params["train.epochs"] == len(t.intermediate_values)
        assert isinstance(t.distributions["model.dropout"], FloatDistribution)
        assert isinstance(t.distributions["model.width.1"], CategoricalDistribution)


@pytest.mark.slow
def test_cli_optuna_and_keras_tuner_studies_side_by_side_in_one_report(workdir: Path, mnist_dir: str | None) -> None:
    optuna_space = _write(workdir / "tpe.yaml", tiny_space(study={"name": "tpe", "n_trials": 3}))
    kt_space = _write(workdir / "hb.yaml", _kt_space(name="from_the_file", n_trials=3))
    for path in (optuna_space, kt_space):
        out = _cmd("run", str(path), "--no-tracking", "--study-name", path.stem, cwd=workdir, mnist_dir=mnist_dir)
        assert out.returncode == 0, out.stderr
        assert f"Study {path.stem}: 3 complete" in out.stdout
    assert sorted(p.name for p in (workdir / "mlruns" / "keras_tuner").iterdir()) == ["hb"]  # the study's name

    resumed = _cmd("run", str(kt_space), "--no-tracking", "--study-name", "hb", "--n-trials", "5", cwd=workdir,
                   mnist_dir=mnist_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "Study hb: 5 complete" in resumed.stdout  # the study's total, KerasTuner's folder reloaded
    hb = optuna.load_study(study_name="hb", storage=_storage(workdir)).get_trials()
    assert [t.user_attrs["keras_tuner_trial"]["id"] for t in hb] == [f"{i:04d}" for i in range(5)]  # resumed, not anew

    listed = _cmd("studies", cwd=workdir, mnist_dir=mnist_dir)
    assert listed.returncode == 0, listed.stderr
    assert "tpe" in listed.stdout and "hb" in listed.stdout

    report = _cmd("report", "tpe", "hb", "--out", "report", cwd=workdir, mnist_dir=mnist_dir)
    assert report.returncode == 0, report.stderr
    text = (workdir / "report" / "report.md").read_text()
    comparison = [line for line in text.splitlines() if line.startswith("|") and ("tpe" in line or "hb" in line)]
    assert any("| tpe" in line for line in comparison) and any("| hb" in line for line in comparison), text


def _rows(db: Path, query: str) -> list[tuple]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute(query).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


@pytest.mark.slow
def test_ctrl_c_records_the_running_trial_as_interrupted_and_resume_reruns_it(
    workdir: Path, mnist_dir: str | None
) -> None:
    space = _kt_space(name="stop", tuner="random", n_trials=3, epochs=15)  # long enough to interrupt
    path = _write(workdir / "stop.yaml", space)
    db = workdir / "mlruns" / "optuna.db"
    proc = subprocess.Popen([sys.executable, "-m", "tuning", "run", str(path)], cwd=workdir,
                            env=subprocess_env(mnist_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    query = ("SELECT t.number FROM trials t JOIN trial_intermediate_values v ON v.trial_id = t.trial_id "
             "WHERE t.state = 'RUNNING' GROUP BY t.number")
    while proc.poll() is None and not _rows(db, query):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    study = optuna.load_study(study_name="stop", storage=_storage(workdir))
    stopped, queued = study.get_trials()
    assert stopped.state == TrialState.FAIL and stopped.user_attrs[records.REASON] == "interrupted"
    assert queued.state == TrialState.WAITING and queued.user_attrs[records.RETRY_OF] == stopped.number

    done = _cmd("run", str(path), "--n-trials", "1", "--quiet", cwd=workdir, mnist_dir=mnist_dir)
    assert done.returncode == 0, done.stderr
    trials = optuna.load_study(study_name="stop", storage=_storage(workdir)).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == stopped.params  # the interrupted configuration runs again first
    assert trials[1].user_attrs[records.RETRY_OF] == stopped.number  # as the Optuna engine's retries do

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    statuses = [client.get_run(t.user_attrs[records.MLFLOW_RUN_ID]).info.status for t in trials]
    assert statuses == ["KILLED", "FINISHED"]  # tracked as the Optuna engine's trials are


@pytest.mark.slow
def test_diverging_trials_fail_with_their_reason_and_the_guard_stops_the_search(
    workdir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import tuning
    from tuning.errors import TooManyFailuresError

    space = _kt_space(name="nan", tuner="random", n_trials=5, epochs=2)
    space["model"]["depth"] = 2  # two layers at this learning rate diverge at the first epoch
    # In float32 the loss becomes NaN at once; in mixed bfloat16 some trials end at a finite 1e24 instead.
    space["train"].update({"optimizer": "sgd", "learning_rate": 1.0e6, "batch_size": 32, "precision": "float32"})
    space["study"]["max_consecutive_failures"] = 2

    with pytest.raises(TooManyFailuresError, match="2 trials failed in a row"):
        tuning.run(space, tracking=False)
    assert "Traceback" not in capfd.readouterr().err  # KerasTuner's own traceback printing is off

    trials = optuna.load_study(study_name="nan", storage=_storage(workdir)).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2  # stopped by the guard, not after n_trials
    for t in trials:
        assert "the loss became nan" in t.user_attrs[records.REASON]
        assert t.user_attrs[records.EPOCHS] == 1 and t.params  # recorded like any trial


def _build(hp: object) -> object:
    """A KerasTuner user's build(hp): a searched depth loop, a Boolean guarding a Float, a log-sampled rate."""
    import keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten()])
    for i in range(hp.Int("layers", 1, 2)):
        model.add(keras.layers.Dense(hp.Choice(f"units_{i}", [8, 16]), activation="relu"))
    if hp.Boolean("dropout"):
        with hp.conditional_scope("dropout", [True]):
            model.add(keras.layers.Dropout(hp.Float("rate", 0.1, 0.3, step=0.1)))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.slow
def test_a_users_build_hp_runs_unchanged_under_the_keras_tuner_engine(workdir: Path) -> None:
    import tuning

    space = _kt_space(name="hm", tuner="random", n_trials=6, epochs=1)
    space["model"] = {"family": "hypermodel"}
    space["train"]["batch_size"] = [32, 64]  # the space's own searched training values are searched too

    study = tuning.run(space, hypermodel=_build, tracking=False)

    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6, [t.user_attrs.get("reason") for t in trials]
    for t in trials:
        p = t.params
        assert set(p) >= {"layers", "units_0", "dropout", "lr", "train.batch_size"}
        assert ("units_1" in p) == (p["layers"] == 2)  # a layer that does not exist is not recorded
        assert ("rate" in p) == p["dropout"]  # nor a Float its Boolean switched off
        assert t.distributions["lr"] == FloatDistribution(1e-3, 1e-2, log=True) and 1e-3 <= p["lr"] <= 1e-2
        assert t.distributions["dropout"] == CategoricalDistribution((False, True))
        assert t.distributions["train.batch_size"] == CategoricalDistribution((32, 64))
        assert t.user_attrs[records.EPOCHS] == 1
    assert with_test_accuracy(study) == leading_trials(study)  # the test set: once for each trial that led the study
    assert {t.params["layers"] for t in trials} == {1, 2}  # both branches were taken: the checks above could fail
    assert {t.params["dropout"] for t in trials} == {False, True}


@pytest.mark.parametrize("first, then", [
    ({}, {"engine": "keras_tuner"}),
    ({"engine": "keras_tuner", "tuner": {"type": "hyperband", "factor": 3}},
     {"engine": "keras_tuner", "tuner": {"type": "hyperband", "factor": 2}}),
], ids=["optuna then keras_tuner", "another hyperband factor"])
def test_resuming_a_study_with_another_engine_or_tuner_is_refused(workdir: Path, first: dict, then: dict) -> None:
    """KerasTuner reloads its saved oracle and would silently keep the old tuner's options: refused (a
    UserInputError: exit 2), checked where ``tuning.run`` loads an existing study."""
    from tuning.errors import UserInputError

    def space(study: dict) -> SearchSpace:
        base = tiny_space()
        base["study"] = {"name": "same", "pruner": "none", **study}
        return SearchSpace.from_dict(base)

    (workdir / "mlruns").mkdir()
    storage = _storage(workdir)
    studies.create_or_load(space(first), storage, "same", None, None)

    with pytest.raises(UserInputError) as info:
        studies.create_or_load(space(then), storage, "same", None, None)
    assert "study 'same' already exists with the" in str(info.value) and "--study-name NEW" in str(info.value)
    assert optuna.load_study(study_name="same", storage=storage).get_trials() == []


@pytest.mark.slow
def test_the_time_budget_stops_the_running_trial_at_an_epoch_end_as_pruned(workdir: Path) -> None:
    import tuning

    space = _kt_space(name="budget", tuner="random", n_trials=5, epochs=500)  # far more than 2 s of training

    study = tuning.run(space, timeout=2, tracking=False)

    (trial,) = study.get_trials()  # no trial starts after the budget
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs[records.REASON].endswith("the study's time budget ran out")
    assert 1 <= trial.user_attrs[records.EPOCHS] < 500 and len(trial.intermediate_values) == trial.user_attrs["epochs"]


@pytest.mark.slow
def test_hyperxception_runs_unchanged_under_the_keras_tuner_engine(workdir: Path) -> None:
    """KerasTuner's own application, compiled with categorical cross-entropy: it gets one-hot labels here too."""
    import keras_tuner

    import tuning

    space = _kt_space(name="xception", tuner="random", n_trials=1, epochs=1)
    space["model"] = {"family": "hypermodel"}

    study = tuning.run(space, hypermodel=keras_tuner.applications.HyperXception(input_shape=(28, 28, 1), classes=10),
                       tracking=False)

    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get(records.REASON)
    assert {"activation", "kernel_size"} <= set(trial.params)  # its own hyperparameter names
    assert 0.0 <= trial.value <= 1.0 and 0.0 <= trial.user_attrs[records.TEST_ACCURACY] <= 1.0
