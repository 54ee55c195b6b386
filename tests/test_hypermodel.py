"""KerasTuner hypermodels on Optuna (``family: hypermodel``), through ``tuning.run`` and ``tuning run``.

The fast tests check the ``hp`` bridge against KerasTuner's own semantics (its hyperparameters tests: conditional
scopes, ``parent_name``, name scopes, ``get`` on inactive values) with real Optuna trials, and the loading
errors through ``tuning validate``. The slow ones train real hypermodels on a few hundred MNIST images.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, leading_trials, subprocess_env, tiny_space, with_test_accuracy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import tuning
from tuning.cli import main as cli

keras_tuner = pytest.importorskip("keras_tuner")
from tuning.hypermodel import OptunaHyperParameters, to_distribution  # noqa: E402

hp_types = keras_tuner.engine.hyperparameters


def ask() -> optuna.Trial:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()


# ------------------------------------------------------------------------------------------- the hp bridge


def test_hp_is_a_real_keras_tuner_hyperparameters_drawn_by_the_trial() -> None:
    hp = OptunaHyperParameters(optuna.trial.FixedTrial({"units": 48, "lr": 0.003, "act": "tanh"}))
    assert isinstance(hp, keras_tuner.HyperParameters)
    assert hp.Int("units", 16, 64, step=16) == 48
    assert hp.Float("lr", 1e-4, 1e-2, sampling="log") == 0.003
    assert hp.Choice("act", ["relu", "tanh"]) == "tanh"
    assert hp.get("units") == 48 and hp["act"] == "tanh" and "lr" in hp
    assert hp.values == {"units": 48, "lr": 0.003, "act": "tanh"}
    assert hp.Int("units", 16, 64, step=16) == 48  # asked again: the same value, not drawn twice
    with pytest.raises(KeyError, match="does not exist"):
        hp.get("nope")


def test_inactive_hyperparameters_are_neither_drawn_nor_recorded() -> None:
    trial = ask()
    hp = OptunaHyperParameters(trial)
    a = hp.Choice("a", [1, 2, 3])
    with hp.conditional_scope("a", [v for v in (1, 2, 3) if v != a]):
        other = hp.Choice("child", [4, 5, 6])
    with hp.conditional_scope("a", [a]):
        child = hp.Choice("child", [7, 8, 9])
        assert hp.get("child") == child
    b = hp.Int("b", 0, 10, parent_name="a", parent_values=[a])
    c = hp.Int("c", 0, 10, parent_name="a", parent_values=[v for v in (1, 2, 3) if v != a])
    assert other is None and c is None
    assert child in (7, 8, 9) and 0 <= b <= 10
    assert trial.params == {"a": a, "child": child, "b": b} == hp.values
    assert trial.distributions["child"] == CategoricalDistribution((7, 8, 9))


def test_nested_conditional_and_name_scopes_as_in_keras_tuner() -> None:
    trial = optuna.trial.FixedTrial({"a": 3, "b": 6, "c": 7, "d/e": 10})
    hp = OptunaHyperParameters(trial)
    a = hp.Choice("a", [1, 2, 3])
    with hp.conditional_scope("a", [1, 3]):
        b = hp.Choice("b", [4, 5, 6])
        with hp.conditional_scope("b", 6):
            c = hp.Choice("c", [7, 8, 9])
            with hp.name_scope("d"):
                e = hp.Choice("e", [10, 11, 12])
    with hp.conditional_scope("a", 2):
        f = hp.Choice("f", [13, 14, 15])
        with hp.name_scope("g"):
            h = hp.Int("h", 0, 10)
    assert (a, b, c, e, f, h) == (3, 6, 7, 10, None, None)
    assert hp.values == {"a": 3, "b": 6, "c": 7, "d/e": 10}
    with hp.conditional_scope("a", 2), pytest.raises(ValueError, match="inactive"):
        hp.get("f")


def test_a_value_set_before_the_build_is_kept() -> None:
    hp = OptunaHyperParameters(optuna.trial.FixedTrial({}))
    hp.values["units"] = 32  # as a KerasTuner oracle populates values
    assert hp.Int("units", 16, 64) == 32


def test_each_declaration_becomes_its_optuna_distribution() -> None:
    trial = ask()
    hp = OptunaHyperParameters(trial)
    hp.Int("int_step", 6, 13, step=3)
    hp.Int("int_log", 1, 1000, sampling="log")
    hp.Int("int_log_step", 2, 32, step=2, sampling="log")
    hp.Float("float", 0.0, 0.5)
    hp.Float("float_step", 0.0, 0.55, step=0.1)
    hp.Float("float_log", 1e-5, 1e-1, sampling="log")
    hp.Choice("choice", ["adam", "sgd"])
    hp.Boolean("boolean")
    hp.Fixed("fixed", 7)
    d = trial.distributions
    assert d["int_step"] == IntDistribution(6, 12, step=3)  # KerasTuner's max 13 is not on the grid
    assert d["int_log"] == IntDistribution(1, 1000, log=True)
    assert d["int_log_step"] == CategoricalDistribution((2, 4, 8, 16, 32))  # KerasTuner multiplies by the step
    assert d["float"] == FloatDistribution(0.0, 0.5)
    assert d["float_step"] == FloatDistribution(0.0, 0.5, step=0.1)
    assert d["float_log"] == FloatDistribution(1e-5, 1e-1, log=True)
    assert d["choice"] == CategoricalDistribution(("adam", "sgd"))
    assert d["boolean"] == CategoricalDistribution((False, True))
    assert d["fixed"] == CategoricalDistribution((7,)) and trial.params["fixed"] == 7
    for name, value in trial.params.items():
        assert d[name]._contains(d[name].to_internal_repr(value)), name
    assert to_distribution(hp_types.Int("r", 1, 10, sampling="reverse_log")) == IntDistribution(1, 10)


# ------------------------------------------------------------------------------------------- validate, loading


HYPERMODEL = textwrap.dedent('''
    import keras
    from keras import layers


    def build_model(hp):
        model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten()])
        for i in range(hp.Int("num_layers", 1, 3)):
            model.add(layers.Dense(hp.Int(f"units_{i}", 8, 32, step=8), activation="relu"))
        if hp.Boolean("dropout"):
            with hp.conditional_scope("dropout", [True]):
                model.add(layers.Dropout(hp.Float("rate", 0.1, 0.5)))
        model.add(layers.Dense(10, activation=hp.Fixed("output_activation", "softmax")))
        model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 3e-2, sampling="log")),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model


    def broken(hp):
        hp.Int("units", 8, 32)
        raise RuntimeError("no model for you")


    def raises_in_trials(hp):  # its default build (chance 0) works: only the trials' values reach the error
        if hp.Float("chance", 0.0, 1.0) > 0:
            raise RuntimeError("no model for you")
        return build_model(hp)


    def returns_42_in_trials(hp):
        if hp.Float("chance", 0.0, 1.0) > 0:
            return 42
        return build_model(hp)
''')


@pytest.fixture
def hm_dir(workdir: Path) -> Path:
    (workdir / "my_models.py").write_text(HYPERMODEL)
    return workdir


def write_space(folder: Path, reference: str | None = "my_models.py:build_model", **sections: object) -> Path:
    import yaml

    space = tiny_space(**sections)
    space["model"] = {"family": "hypermodel", **({"hypermodel": reference} if reference else {})}
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def test_validate_builds_the_hypermodel_once_and_lists_what_it_declares(
    hm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["validate", str(write_space(hm_dir))]) == 0
    out = capsys.readouterr().out
    assert "hypermodel my_models.py:build_model: built once with default values" in out
    for line in ("num_layers", "units_0", "int, step 8", "dropout", "categorical", "lr", "float, log",
                 "output_activation"):
        assert line in out, line
    assert "units_1" not in out  # a default build has one layer


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("missing.py:build_model", "the file"),
        ("my_models.py:nope", "has no attribute 'nope'"),
        ("no_such_module_xyz:build", "cannot import the module no_such_module_xyz"),
        ("my_models.py:broken", "its build(hp) raised with default values: RuntimeError: no model for you"),
        ("build_model", "must be `file.py:attribute`"),
    ],
)
def test_a_bad_hypermodel_reference_exits_2_naming_it(
    hm_dir: Path, capsys: pytest.CaptureFixture[str], reference: str, expected: str
) -> None:
    assert cli(["validate", str(write_space(hm_dir, reference))]) == 2
    err = capsys.readouterr().err
    assert "model.hypermodel" in err and expected in err and reference in err


def test_a_hypermodel_file_that_raises_while_loading_exits_2(hm_dir: Path, capsys: pytest.CaptureFixture) -> None:
    (hm_dir / "bad.py").write_text("import keras\nraise ImportError('needs torchvision')\n")
    assert cli(["validate", str(write_space(hm_dir, "bad.py:build"))]) == 2
    err = capsys.readouterr().err
    assert "bad.py raised ImportError: needs torchvision" in err


def test_enqueued_values_are_checked_against_the_declared_hyperparameters(
    hm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(hm_dir, study={"enqueue": [{"num_layers": 2, "units_0": 9}]})
    assert cli(["validate", str(space)]) == 2
    assert "study.enqueue[0].units_0: must be between 8 and 32 on steps of 8" in capsys.readouterr().err


def test_a_hypermodel_space_without_a_hypermodel_is_refused_before_anything_is_written(hm_dir: Path) -> None:
    space = tuning.SearchSpace.from_yaml(write_space(hm_dir, None))
    with pytest.raises(tuning.errors.SpaceError, match="model.hypermodel: no hypermodel given"):
        tuning.run(space, tracking=False)
    with pytest.raises(tuning.errors.UserInputError, match="hypermodel= needs a space with model.family"):
        tuning.run(tiny_space(), hypermodel=lambda hp: None, tracking=False)
    assert not (hm_dir / "mlruns" / "optuna.db").exists()


# ------------------------------------------------------------------------------------------- studies


def load_module(path: Path) -> dict:
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_an_unchanged_hypermodel_runs_on_optuna_tracked_and_reported(hm_dir: Path) -> None:
    build_model = load_module(hm_dir / "my_models.py")["build_model"]
    space = tiny_space(study={"n_trials": 6, "pruner": "none", "enqueue": [{"num_layers": 3, "dropout": True}]})
    space["model"] = {"family": "hypermodel"}
    study = tuning.run(space, hypermodel=build_model)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 6
    assert trials[0].params["num_layers"] == 3 and trials[0].params["dropout"] is True  # the baseline ran first
    for t in trials:
        n = t.params["num_layers"]
        assert {f"units_{i}" for i in range(n)} <= set(t.params)
        assert not any(f"units_{i}" in t.params for i in range(n, 3))  # layers that do not exist: absent
        assert ("rate" in t.params) == t.params["dropout"]  # the Boolean guards the Float
        assert t.params["output_activation"] == "softmax"
        assert isinstance(t.distributions["lr"], FloatDistribution) and t.distributions["lr"].log
        assert 1e-3 <= t.params["lr"] <= 3e-2 and t.params["units_0"] % 8 == 0
        assert t.user_attrs.get("test_accuracy", 1.0) > 0  # the toolkit's own records, as for built-in families
    assert with_test_accuracy(study) == leading_trials(study)

    import mlflow

    mlflow.set_tracking_uri("sqlite:///mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`tuning.role` = 'trial'",
                              output_format="list")
    assert len(runs) == 6
    by_trial = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    for t in trials:  # MLflow has exactly the trial's parameters, under the hypermodel's names
        assert by_trial[t.number].data.params == {k: str(v) for k, v in t.params.items()}
        assert by_trial[t.number].info.status == "FINISHED"

    leaderboard = tuning.report.leaderboard(study)
    assert {"num_layers", "units_0", "lr"} <= {c.split(".")[-1] for c in leaderboard.columns}
    parent = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`tuning.role` = 'study'",
                                output_format="list")[0]
    best = study.user_attrs["mlflow_best_model"]  # the best model, an MLflow model on the parent run
    assert mlflow.MlflowClient().get_logged_model(best.removeprefix("models:/")).source_run_id == parent.info.run_id

    resumed = tuning.run(space, n_trials=7, hypermodel=build_model)  # resume: one more trial, none re-run
    assert len(resumed.trials) == 7 and resumed.trials[0].params == trials[0].params


@pytest.mark.slow
def test_tuning_run_with_the_shipped_hypermodel_space(workdir: Path, mnist_dir: str | None) -> None:
    src = ROOT / "search_spaces"
    for name in ("mnist_hypermodel.yaml", "mnist_hypermodel.py"):
        (workdir / name).write_text((src / name).read_text())
    command = [sys.executable, "-m", "tuning", "run", "mnist_hypermodel.yaml", "--n-trials", "2", "--no-tracking",
               "--set", "data.train_size=400", "--set", "data.test_size=100", "--set", "train.epochs=1"]
    done = subprocess.run(command, cwd=workdir, env=subprocess_env(mnist_dir), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "conv_blocks: 2" in done.stdout  # the enqueued baseline, by the hypermodel's own names
    report = subprocess.run([sys.executable, "-m", "tuning", "report", "mnist_hypermodel"], cwd=workdir,
                            env=subprocess_env(mnist_dir), capture_output=True, text=True, timeout=300)
    assert report.returncode == 0 and "conv_blocks" in report.stdout, report.stderr


@pytest.mark.slow
def test_keras_tuners_hyperxception_runs_unchanged(workdir: Path) -> None:
    from keras_tuner.applications import HyperXception

    smallest = {"conv2d_num_filters": 32, "sep_num_filters": 128, "num_residual_blocks": 2, "num_dense_layers": 1}
    space = tiny_space(data={"train_size": 200, "test_size": 50}, train={"epochs": 1, "batch_size": 32},
                       study={"n_trials": 1, "pruner": "none", "enqueue": [smallest]})
    space["model"] = {"family": "hypermodel"}
    study = tuning.run(space, hypermodel=HyperXception(input_shape=(28, 28, 1), classes=10), tracking=False)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("reason")
    assert {k: trial.params[k] for k in smallest} == smallest
    assert {"activation", "conv2d_num_filters", "kernel_size", "num_residual_blocks", "pooling",
            "learning_rate"} <= set(trial.params)
    assert trial.user_attrs["param_count"] > 100_000  # its own architecture, compiled with its own optimizer


@pytest.mark.slow
def test_a_hypermodel_fit_override_is_honoured_and_its_hyperparameters_searched(workdir: Path) -> None:
    import keras

    calls: list[int] = []

    class Tuned(keras_tuner.HyperModel):
        def build(self, hp):
            model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                      keras.layers.Dense(hp.Int("units", 8, 16, step=8), activation="relu"),
                                      keras.layers.Dense(10, activation="softmax")])
            return model  # uncompiled: compiled from the train section

        def fit(self, hp, model, *args, **kwargs):
            kwargs["batch_size"] = hp.Choice("batch_size", [16, 64])
            calls.append(kwargs["batch_size"])
            return model.fit(*args, **kwargs)

    space = tiny_space(study={"n_trials": 2, "pruner": "none"})
    space["model"] = {"family": "hypermodel"}
    study = tuning.run(space, hypermodel=Tuned())
    assert [t.params["batch_size"] for t in study.trials] == calls
    assert all(set(t.params) == {"units", "batch_size", "train.epochs"} for t in study.trials)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "reason"), [
    ("raises_in_trials", "RuntimeError: no model for you"),
    ("returns_42_in_trials", "the model builder returned int 42, not a Keras model"),  # the trainer's own check
])
def test_a_build_that_fails_with_a_trials_values_fails_the_trial_with_its_own_message(
    hm_dir: Path, name: str, reason: str
) -> None:
    """The default build works (so tuning.run starts): each trial's build fails, with its own reason."""
    build = load_module(hm_dir / "my_models.py")[name]
    space = tiny_space(study={"n_trials": 2, "pruner": "none", "max_consecutive_failures": 2})
    space["model"] = {"family": "hypermodel"}
    with pytest.raises(tuning.errors.TooManyFailuresError) as info:
        tuning.run(space, hypermodel=build, tracking=False)
    message = str(info.value)
    assert reason in message and "your own code" in message
    assert "pooling" not in message  # no hint about the space
    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all(reason in t.user_attrs["reason"] for t in study.trials)


@pytest.mark.slow
def test_a_keras_tuner_build_passed_as_build_fn_says_to_use_hypermodel(hm_dir: Path) -> None:
    build_model = load_module(hm_dir / "my_models.py")["build_model"]
    space = tiny_space(study={"n_trials": 1, "pruner": "none", "max_consecutive_failures": 1})
    with pytest.raises(tuning.errors.TooManyFailuresError, match="goes to hypermodel="):
        tuning.run(space, build_fn=build_model, tracking=False)


# ------------------------------------------------------------------------------------------- a tuned batch size

BATCH_TUNED = textwrap.dedent('''
    import json
    from pathlib import Path

    import keras
    import keras_tuner
    from keras import layers


    def seen(**what):
        with Path("fit_calls.jsonl").open("a") as f:
            f.write(json.dumps(what) + "\\n")


    class StepsSeen(keras.callbacks.Callback):
        """Notes how many steps an epoch of this fit really has: the training images over the batch size."""

        def on_train_begin(self, logs=None):
            seen(steps=self.params["steps"])


    class BatchTuned(keras_tuner.HyperModel):
        def build(self, hp):
            return keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(),
                                     layers.Dense(hp.Int("units", 8, 16, step=8), activation="relu"),
                                     layers.Dense(10, activation="softmax")])

        def fit(self, hp, model, *args, **kwargs):  # the keras.io pattern, and a callback that notes the steps
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), StepsSeen()]
            return model.fit(*args, batch_size=hp.Choice("batch_size", [16, 32]), **kwargs)


    class ReturnsMetrics(BatchTuned):
        def fit(self, hp, model, x, y, validation_data, epochs, **kwargs):  # its own loop, a dict of metrics back
            model.fit(x, y, batch_size=hp.Choice("batch_size", [16, 32]), epochs=epochs, verbose=0,
                      callbacks=[StepsSeen()])
            logs = model.evaluate(*validation_data, verbose=0, return_dict=True)
            seen(returned=logs["accuracy"])
            return {"val_accuracy": logs["accuracy"], "val_loss": logs["loss"]}
''')

#: tiny_space(): 300 images, 60 of them for validation.
TRAIN_IMAGES = 240


def batch_size_space(engine: str = "optuna") -> dict:
    """``tiny_space()`` with a hypermodel, three one-epoch trials, ``train.batch_size`` 64 (4 steps an epoch)."""
    space = tiny_space(train={"epochs": 1, "batch_size": 64}, study={"n_trials": 3, "pruner": "none"})
    space["model"] = {"family": "hypermodel"}
    if engine == "keras_tuner":
        space["study"] = {k: v for k, v in space["study"].items() if k != "pruner"}
        space["study"].update(engine="keras_tuner", tuner="random")
    return space


def fit_calls(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "fit_calls.jsonl").read_text().splitlines()]


def assert_batch_size_tuned_and_used(study: optuna.Study, folder: Path) -> None:
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3, [t.user_attrs.get("reason") for t in trials]
    steps = [call["steps"] for call in fit_calls(folder) if "steps" in call]
    assert len(steps) == len(trials)
    for trial, seen in zip(trials, steps, strict=True):
        assert trial.distributions["batch_size"] == CategoricalDistribution((16, 32))  # recorded as a parameter
        assert seen == math.ceil(TRAIN_IMAGES / trial.params["batch_size"])  # used: 15 or 8 steps, not 4 (64)
        assert set(trial.params) == {"units", "batch_size"}


@pytest.fixture
def batch_tuned(workdir: Path) -> dict:
    (workdir / "batch_tuned.py").write_text(BATCH_TUNED)
    return load_module(workdir / "batch_tuned.py")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["optuna", "keras_tuner"])
def test_a_fit_that_tunes_the_batch_size_runs_from_python(workdir: Path, batch_tuned: dict, engine: str) -> None:
    """``model.fit(*args, batch_size=hp.Choice(...), **kwargs)`` failed every trial ("got multiple values for
    keyword argument 'batch_size'"): the toolkit's batch size is now only model.fit's default."""
    study = tuning.run(batch_size_space(engine), hypermodel=batch_tuned["BatchTuned"](), tracking=False)
    assert_batch_size_tuned_and_used(study, workdir)


@pytest.mark.slow
def test_a_fit_that_tunes_the_batch_size_runs_from_a_space_file(workdir: Path, batch_tuned: dict,
                                                                 mnist_dir: str | None) -> None:
    space = batch_size_space()
    space["model"]["hypermodel"] = "batch_tuned.py:BatchTuned"
    (workdir / "space.yaml").write_text(yaml.safe_dump(space))
    done = subprocess.run([sys.executable, "-m", "tuning", "run", "space.yaml", "--no-tracking"], cwd=workdir,
                          env=subprocess_env(mnist_dir), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Study tiny: 3 complete" in done.stdout and "batch_size: " in done.stdout  # the best trial's
    assert_batch_size_tuned_and_used(optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db"),
                                     workdir)


@pytest.mark.slow
def test_a_fit_that_returns_a_dict_of_metrics_gives_the_trials_value(workdir: Path, batch_tuned: dict) -> None:
    study = tuning.run(batch_size_space(), hypermodel=batch_tuned["ReturnsMetrics"](), tracking=False)
    assert_batch_size_tuned_and_used(study, workdir)
    returned = [call["returned"] for call in fit_calls(workdir) if "returned" in call]
    assert [t.value for t in study.trials] == pytest.approx(returned)
    assert all(t.user_attrs["history"]["val_accuracy"] == [t.value] for t in study.trials)
