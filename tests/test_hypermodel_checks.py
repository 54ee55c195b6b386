"""A hypermodel is built once with default values before any trial is stored (issue 21): a build that returns no
Keras model, a model that does not fit the data, a hyperparameter named like a key of the space are refused with
exit 2 on every path (``tuning run`` on a ``family: hypermodel`` file, ``tuning.run(..., hypermodel=...)``,
``study.engine: keras_tuner``) and reported by ``tuning validate``, which also counts and lists what the build and
a ``fit`` override declare. Dict spaces get a study name of their own, and ``tuning.run`` shows its progress.

The fast tests build small models (no training); the slow ones train a few hundred MNIST images for one epoch.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_space

import tuning
from tuning import study as studies
from tuning.cli import main as cli
from tuning.errors import SpaceError, UserInputError
from tuning.space import SearchSpace

pytest.importorskip("keras_tuner")

MODELS = textwrap.dedent('''
    import keras
    import keras_tuner
    from keras import layers


    def mlp(hp, outputs=10):
        return keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(),
                                 layers.Dense(hp.Int("units", 8, 16, step=8), activation="relu"),
                                 layers.Dense(outputs, activation="softmax")])


    def returns_42(hp):
        hp.Int("units", 8, 16)
        return 42


    def three_outputs(hp):
        return mlp(hp, outputs=3)


    def unflattened(hp):
        return keras.Sequential([keras.Input((28, 28, 1)), layers.Dense(10, activation="softmax")])


    def wrong_input(hp):
        return keras.Sequential([keras.Input((32, 32, 3)), layers.Flatten(), layers.Dense(10)])


    def no_input_layer(hp):  # shapes known only once built on the images: built here to check them
        return keras.Sequential([layers.Flatten(), layers.Dense(hp.Int("units", 8, 16)), layers.Dense(4)])


    def batch_size_clash(hp):
        hp.Choice("train.batch_size", [16, 128])
        return mlp(hp)


    def learning_rate_clash(hp):  # Optuna's "Cannot set different log configuration", without a name
        hp.Float("train.learning_rate", 1e-4, 1e-2)
        return mlp(hp)


    def good(hp):
        return mlp(hp)


    class TunesBatchSize(keras_tuner.HyperModel):
        def build(self, hp):
            return mlp(hp)

        def fit(self, hp, model, *args, **kwargs):  # the keras.io pattern
            return model.fit(*args, batch_size=hp.Choice("batch_size", [16, 32]), **kwargs)


    class FitClash(TunesBatchSize):
        def fit(self, hp, model, *args, **kwargs):
            return model.fit(*args, batch_size=hp.Choice("train.batch_size", [16, 32]), **kwargs)


    class ReadsTheHistory(TunesBatchSize):
        def fit(self, hp, model, *args, **kwargs):
            history = model.fit(*args, shuffle=hp.Boolean("shuffle"), **kwargs)
            best = max(history.history["val_accuracy"])
            hp.Boolean("after_training")
            return {"val_accuracy": best}
''')

#: name in MODELS → what the refusal says (besides the hypermodel's name and `model.hypermodel`).
BAD = {
    "returns_42": ["its build(hp) returned int 42 with default values, not a Keras model",
                   "end build(hp) with `return model`"],
    "three_outputs": ["its model outputs 3 values per image, but the data has 10 classes (mnist: labels 0 to 9)",
                      "output shape (None, 3)", 'end the model with layers.Dense(10, activation="softmax")'],
    "unflattened": ["an output of shape (None, 28, 28, 10)", "after layers.Flatten()"],
    "wrong_input": ["its model takes inputs of shape (None, 32, 32, 3), but the mnist images are (None, 28, 28, 1)",
                    "keras.Input(shape=(28, 28, 1))"],
    "no_input_layer": ["its model outputs 4 values per image, but the data has 10 classes"],
    "batch_size_clash": ["its build(hp) declares the hyperparameter 'train.batch_size', which is also a key of the "
                         "space (searched: 32, 64)", "rename it in the hypermodel (e.g. 'batch_size')"],
    "learning_rate_clash": ["its build(hp) declares the hyperparameter 'train.learning_rate', which is also a key "
                            "of the space (fixed: 0.003)", "or remove train.learning_rate from the space"],
}


@pytest.fixture
def models_dir(workdir: Path) -> Path:
    (workdir / "my_models.py").write_text(MODELS)
    return workdir


def load_models(folder: Path) -> dict:
    namespace: dict = {}
    exec(compile((folder / "my_models.py").read_text(), str(folder / "my_models.py"), "exec"), namespace)
    return namespace


def hypermodel_space(reference: str | None = None, engine: str = "optuna", **study: object) -> dict:
    """``tiny_space()`` with a hypermodel, a searched batch size and (under KerasTuner) the random tuner."""
    space = tiny_space(train={"epochs": 1, "batch_size": [32, 64]}, study=study)
    space["model"] = {"family": "hypermodel", **({"hypermodel": reference} if reference else {})}
    if engine == "keras_tuner":
        space["study"] = {k: v for k, v in space["study"].items() if k != "pruner"}
        space["study"].update(engine="keras_tuner", tuner="random")
    return space


def write(folder: Path, space: dict, name: str = "space.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def nothing_written(folder: Path) -> bool:
    return not (folder / "mlruns").exists()


# ----------------------------------------------------------------------------- item 7: the first build, all paths


@pytest.mark.parametrize("name", BAD, ids=list(BAD))
def test_tuning_run_on_a_hypermodel_file_refuses_a_bad_first_build_before_any_trial(
    models_dir: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = write(models_dir, hypermodel_space(f"my_models.py:{name}"))
    assert cli(["run", str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "model.hypermodel: its " in err and f"my_models.py:{name}" in err and "Traceback" not in err
    for text in BAD[name]:
        assert text in err, (text, err)
    assert nothing_written(models_dir)  # no study, no failed trial


@pytest.mark.parametrize("engine", ["optuna", "keras_tuner"])
@pytest.mark.parametrize("name", ["returns_42", "three_outputs", "batch_size_clash"])
def test_tuning_run_refuses_a_bad_hypermodel_from_python_under_both_engines(
    models_dir: Path, engine: str, name: str
) -> None:
    build = load_models(models_dir)[name]
    with pytest.raises(SpaceError) as info:
        tuning.run(hypermodel_space(engine=engine), hypermodel=build)
    message = str(info.value)
    assert f"{name} (hypermodel=)" in message  # named, though it came from Python
    for text in BAD[name]:
        assert text in message, (text, message)
    assert nothing_written(models_dir)  # nor KerasTuner's folder


def test_a_build_that_raises_with_default_values_is_refused_before_any_trial(models_dir: Path) -> None:
    def broken(hp):
        raise RuntimeError("no model for you")

    with pytest.raises(SpaceError, match="its build.hp. raised with default values: RuntimeError: no model for "
                                         "you. Received: broken .hypermodel=."):
        tuning.run(hypermodel_space(), hypermodel=broken, tracking=False)
    assert nothing_written(models_dir)


@pytest.mark.parametrize("name", ["returns_42", "three_outputs", "batch_size_clash"])
def test_validate_reports_the_same_problems(models_dir: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    assert cli(["validate", str(write(models_dir, hypermodel_space(f"my_models.py:{name}")))]) == 2
    err = capsys.readouterr().err
    for text in BAD[name]:
        assert text in err, (text, err)
    assert nothing_written(models_dir)


def test_validate_reports_every_problem_at_once(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (models_dir / "both.py").write_text("from my_models import *\n\n\ndef both(hp):\n"
                                        "    hp.Choice('train.batch_size', [8])\n    return three_outputs(hp)\n")
    assert cli(["validate", str(write(models_dir, hypermodel_space("both.py:both")))]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "outputs 3 values per image" in err and "'train.batch_size'" in err


def test_more_output_units_than_the_labels_of_a_small_sample_are_accepted(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sample whose labels stop at 8 (a data set's last class missing) trains a Dense(10) model fine."""
    import numpy as np

    x, y = np.random.default_rng(0).integers(0, 256, (90, 28, 28), dtype="uint8"), np.arange(90) % 9
    np.savez(models_dir / "nine.npz", x_train=x, y_train=y, x_test=x[:9], y_test=y[:9])
    space = hypermodel_space("my_models.py:good")
    space["data"] = {"dataset": "npz", "path": "nine.npz"}
    assert cli(["validate", str(write(models_dir, space))]) == 0, capsys.readouterr().err
    space["model"]["hypermodel"] = "my_models.py:three_outputs"
    assert cli(["validate", str(write(models_dir, space))]) == 2
    assert "outputs 3 values per image, but the data has 9 classes (npz: labels 0 to 8)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- validate lists what is declared


def test_validate_counts_and_lists_what_the_build_and_fit_declare(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = hypermodel_space("my_models.py:TunesBatchSize")
    space["train"]["batch_size"] = 64
    space["train"]["learning_rate"] = [0.001, 0.003]
    assert cli(["validate", str(write(models_dir, space))]) == 0
    out = capsys.readouterr().out
    summary = out.splitlines()[0]
    assert ": hypermodel, 3 parameters (1 in the space, 1 declared by a default build(hp), 1 by fit(hp, ...))" \
        in summary, summary
    build_table, fit_table = out.split("declares:")[1:3]
    assert "units" in build_table and "batch_size" not in build_table
    assert "batch_size" in fit_table and "16, 32" in fit_table and "units" not in fit_table
    assert "its fit passes model.fit batch_size=16 (with default values)" in out


def test_validate_without_a_fit_override_counts_the_builds_parameters(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["validate", str(write(models_dir, hypermodel_space("my_models.py:good")))]) == 0
    out = capsys.readouterr().out
    assert "hypermodel, 2 parameters (1 in the space, 1 declared by a default build(hp))" in out
    assert "fit(hp, model, ...)" not in out and "fit passes" not in out


def test_a_fit_that_needs_a_real_training_run_is_listed_up_to_that_point(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["validate", str(write(models_dir, hypermodel_space("my_models.py:ReadsTheHistory")))]) == 0
    out = capsys.readouterr().out
    assert "shuffle" in out.split("declares:")[2] and "after_training" not in out
    assert "note: its fit(hp, model, ...) stopped in the dry run (KeyError: 'val_accuracy'" in out


def test_validate_refuses_a_fit_hyperparameter_named_like_a_space_key(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["validate", str(write(models_dir, hypermodel_space("my_models.py:FitClash")))]) == 2
    err = capsys.readouterr().err
    assert "its fit(hp, model, ...) declares the hyperparameter 'train.batch_size'" in err


# ----------------------------------------------------------------------------- dict spaces: names, refusal's fix


def test_each_dict_space_gets_a_study_name_of_its_own() -> None:
    one = SearchSpace.from_dict(tiny_space() | {"study": {}})
    again = SearchSpace.from_dict(tiny_space() | {"study": {"n_trials": 40}})  # more trials: the same study
    other = SearchSpace.from_dict(tiny_space(train={"epochs": 3}) | {"study": {}})
    assert one.study.name.startswith("tuning-") and one.study.name == again.study.name != other.study.name
    assert SearchSpace.from_dict(tiny_space()).study.name == "tiny"  # a name given is kept
    assert SearchSpace.from_dict(one.to_dict()) == one  # written back with its name


def test_resuming_with_another_space_says_how_to_start_a_new_study_from_python_too(workdir: Path) -> None:
    (workdir / "mlruns").mkdir()
    storage = studies.open_storage(f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}")
    studies.create_or_load(SearchSpace.from_dict(tiny_space()), storage, "tiny", None, None)
    with pytest.raises(UserInputError) as info:
        studies.create_or_load(SearchSpace.from_dict(tiny_space(train={"epochs": 3})), storage, "tiny", None, None)
    assert 'pass --study-name NEW (tuning run) or study_name="NEW" (tuning.run)' in str(info.value)
    assert optuna.load_study(study_name="tiny", storage=storage).get_trials() == []


@pytest.mark.slow
def test_two_dict_spaces_of_hypermodels_run_side_by_side_and_show_their_progress(
    models_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    good = load_models(models_dir)["good"]
    first = {"data": tiny_space()["data"], "model": {"family": "hypermodel"}, "train": {"epochs": 1},
             "study": {"n_trials": 1}}
    second = {**first, "train": {"epochs": 2}}

    one = tuning.run(first, hypermodel=good, tracking=False)
    err = capfd.readouterr().err
    assert one.study_name.startswith("good-")  # after the build function and the space
    assert f"Study '{one.study_name}': running 1 trial (storage sqlite:///mlruns/optuna.db)." in err
    assert [line.split()[:3] for line in err.splitlines() if line.startswith("trial ")] == [["trial", "0", "complete"]]
    assert "A new study created" not in err  # Optuna's own line: the one above says it

    two = tuning.run(second, hypermodel=good, tracking=False)  # was refused: "already exists with a different ..."
    assert two.study_name.startswith("good-") and two.study_name != one.study_name
    assert [t.state.name for t in two.trials] == ["COMPLETE"] and two.trials[0].user_attrs["epochs"] == 2
    assert f"Study '{two.study_name}': running 1 trial" in capfd.readouterr().err

    again = tuning.run(first, hypermodel=good, tracking=False)  # the same space: its study, resumed
    assert again.study_name == one.study_name and len(again.trials) == 1
    assert f"Resuming study '{one.study_name}': 1 of 1 trials done, nothing to run" in capfd.readouterr().err

    third = {**first, "train": {"epochs": 1, "batch_size": 32}}
    quiet = tuning.run(third, hypermodel=good, tracking=False, verbose=False)  # a new study, silently
    assert quiet.study_name not in (one.study_name, two.study_name)
    err = capfd.readouterr().err
    assert "trial " not in err and "Study '" not in err and "A new study created" not in err and "Precision" not in err
