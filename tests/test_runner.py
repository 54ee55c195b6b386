"""tuning.run: real Optuna SQLite studies training real Keras models on a few hundred MNIST images.

Tracking is off here (tests/test_tracking.py covers MLflow). Each trial trains an MLP for 1-3 epochs on 240 images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from conftest import leading_trials, tiny_space, with_test_accuracy
from optuna.trial import TrialState

import tuning
from tuning import records
from tuning.errors import UserInputError
from tuning.space import TrialConfig
from tuning.training import train
from tuning.trial import trial_seed

pytestmark = pytest.mark.slow

ENQUEUED = [
    {"model.depth": 2, "model.width": [32, 16], "model.dropout": 0.1, "train.epochs": 2},
    {"model.depth": 1, "model.width": [16], "model.dropout": 0.0, "train.epochs": 1},
]


def storage_of(path: Path) -> str:
    return f"sqlite:///{path / 'optuna.db'}"


def snapshot(study: optuna.Study) -> list[tuple[Any, ...]]:
    return [(t.number, t.state, t.params, t.values, t.datetime_start) for t in study.get_trials()]


def test_run_records_every_trial(workdir: Path) -> None:
    study = tuning.run(tiny_space(), tracking=False)
    assert (workdir / "mlruns" / "optuna.db").is_file()  # the default storage
    loaded = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    trials = loaded.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert loaded.user_attrs[records.OBJECTIVES] == ["val_accuracy"]
    assert records.study_space(loaded)["model"]["family"] == "mlp"
    seeds = set()
    for t in trials:
        attrs = t.user_attrs
        history = attrs[records.HISTORY]
        assert attrs[records.EPOCHS] == t.params["train.epochs"] == len(history["val_accuracy"])
        assert t.value == history["val_accuracy"][-1]
        assert sorted(t.intermediate_values) == list(range(1, attrs[records.EPOCHS] + 1))
        assert list(t.intermediate_values.values()) == history["val_accuracy"]
        assert attrs[records.TRAIN_SECONDS] > 0
        depth = t.params["model.depth"]
        widths = [t.params[f"model.width.{i}"] for i in range(1, depth + 1)]
        units = [784, *widths, 10]
        assert attrs[records.PARAM_COUNT] == sum(a * b + b for a, b in zip(units, units[1:], strict=False))
        assert 0.0 <= attrs.get(records.TEST_ACCURACY, 0.0) <= 1.0
        assert attrs[records.SEED] == trial_seed(0, t.number)
        assert records.REASON not in attrs and records.MLFLOW_RUN_ID not in attrs
        seeds.add(attrs[records.SEED])
    assert len(seeds) == 3
    assert study.best_value == max(t.value for t in trials)
    # The test set is evaluated for the trials that led the study when they finished, the best among them.
    assert with_test_accuracy(loaded) == leading_trials(loaded)
    assert study.best_trial.number in with_test_accuracy(loaded)


def test_enqueue_resume_and_changed_space(workdir: Path) -> None:
    space = tiny_space(study={"name": "resume", "n_trials": 5, "seed": 1, "enqueue": ENQUEUED})
    storage = storage_of(workdir)
    first = snapshot(tuning.run(space, n_trials=3, storage=storage, tracking=False))
    assert len(first) == 3
    # Enqueued configurations run first, in order.
    assert first[0][2] == {"model.depth": 2, "model.width.1": 32, "model.width.2": 16, "model.dropout": 0.1,
                           "train.epochs": 2}
    assert first[1][2] == {"model.depth": 1, "model.width.1": 16, "model.dropout": 0.0, "train.epochs": 1}

    resumed = tuning.run(space, storage=storage, tracking=False)  # the space's n_trials: 5
    after = snapshot(resumed)
    assert len(after) == 5 and after[:3] == first
    assert all(t.state == TrialState.COMPLETE for t in resumed.get_trials())
    # ... and only once: no trial after them was enqueued again.
    assert [("fixed_params" in t.system_attrs) for t in resumed.get_trials()] == [True, True, False, False, False]

    assert snapshot(tuning.run(space, storage=storage, tracking=False)) == after  # complete: runs nothing

    changed = tiny_space(model={"width": {"per_layer": [16, 64]}},
                         study={"name": "resume", "n_trials": 6, "seed": 1, "enqueue": ENQUEUED[1:]})
    with pytest.raises(UserInputError) as info:
        tuning.run(changed, storage=storage, tracking=False)
    assert "different model section" in str(info.value) and "--study-name" in str(info.value)
    assert snapshot(optuna.load_study(study_name="resume", storage=storage)) == after


def test_a_study_from_an_older_toolkit_resumes_and_a_changed_space_is_still_refused(workdir: Path) -> None:
    storage = storage_of(workdir)
    older_defaults = {"precision": "float32", "schedule": "constant"}  # both defaults changed since
    tuning.run(tiny_space(train=older_defaults, study={"name": "older", "n_trials": 1}), storage=storage,
               tracking=False)
    # What an older toolkit stored: no key added since (lr_scaling).
    study = optuna.load_study(study_name="older", storage=storage)
    stored = records.study_space(study)
    del stored["train"]["lr_scaling"]
    study._storage.set_study_system_attr(study._study_id, records.SPACE_SYSTEM_ATTR, stored)

    # The schedule's default is now cosine: that changes what trials train, so the message names the key.
    with pytest.raises(UserInputError) as info:
        tuning.run(tiny_space(study={"name": "older", "n_trials": 2}), storage=storage, tracking=False)
    assert "train.schedule: the study's 'constant', now 'cosine'" in str(info.value)
    assert "precision" not in str(info.value) and "lr_scaling" not in str(info.value)
    # Setting it back resumes, under the new default precision (auto: how this machine trains, not what).
    resumed = tuning.run(tiny_space(train={"schedule": "constant"}, study={"name": "older", "n_trials": 2}),
                         storage=storage, tracking=False)
    assert [t.state for t in resumed.trials] == [TrialState.COMPLETE] * 2
    with pytest.raises(UserInputError, match="different train section"):
        tuning.run(tiny_space(train={"schedule": "constant", "batch_size": 32}, study={"name": "older", "n_trials": 3}),
                   storage=storage, tracking=False)


def test_multi_objective_val_accuracy_and_params(workdir: Path) -> None:
    space = tiny_space(objective=["val_accuracy", {"metric": "params"}], study={"name": "multi", "n_trials": 2})
    study = tuning.run(space, storage=storage_of(workdir), tracking=False)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trials = study.get_trials()
    assert len(trials) == 2
    for t in trials:
        assert t.state == TrialState.COMPLETE
        assert t.values == [t.user_attrs[records.HISTORY]["val_accuracy"][-1], t.user_attrs[records.PARAM_COUNT]]
    assert study.best_trials
    assert study.user_attrs[records.OBJECTIVES] == ["val_accuracy", "params"]
    first, second = trials  # the second is evaluated on the test set unless the first dominates it
    dominated = first.values[0] >= second.values[0] and first.values[1] <= second.values[1] \
        and first.values != second.values
    assert with_test_accuracy(study) == ({0} if dominated else {0, 1})


@pytest.mark.parametrize("test_on", ["best", "all"])
def test_the_test_set_is_evaluated_for_trials_that_lead_or_for_all_with_test_on_all(
    workdir: Path, test_on: str
) -> None:
    space = tiny_space(
        model={"depth": 1, "width": 32, "dropout": 0.0},
        train={"epochs": 1, "learning_rate": [0.003, 0.00001, 0.01]},
        study={"name": test_on, "n_trials": 3, "test_on": test_on, "enqueue": [
            {"train.learning_rate": 0.003}, {"train.learning_rate": 0.00001}, {"train.learning_rate": 0.01}]},
    )
    study = tuning.run(space, tracking=False)
    assert len(study.trials) == 3 and study.trials[1].value < study.trials[0].value  # 1e-5 barely learns
    if test_on == "all":
        assert with_test_accuracy(study) == {0, 1, 2}
    else:
        assert 1 not in with_test_accuracy(study) and with_test_accuracy(study) == leading_trials(study)
        assert study.best_trial.number in with_test_accuracy(study)
    for number in with_test_accuracy(study):
        assert 0.0 <= study.trials[number].user_attrs[records.TEST_ACCURACY] <= 1.0


def test_median_pruner_prunes_a_trial_that_learns_slower(workdir: Path) -> None:
    space = tiny_space(
        model={"depth": 1, "width": 32, "dropout": 0.0},
        train={"epochs": 3, "learning_rate": [0.003, 0.00001]},
        study={"name": "pruned", "n_trials": 2, "pruner": {"type": "median", "n_startup_trials": 1},
               "enqueue": [{"train.learning_rate": 0.003}, {"train.learning_rate": 0.00001}]},
    )
    study = tuning.run(space, storage=storage_of(workdir), tracking=False)
    good, slow = study.get_trials()
    assert good.state == TrialState.COMPLETE and sorted(good.intermediate_values) == [1, 2, 3]
    assert slow.state == TrialState.PRUNED
    # It stopped at the pruning epoch: Optuna's intermediate values, the history and the epochs agree.
    assert sorted(slow.intermediate_values) == [1]
    assert slow.user_attrs[records.EPOCHS] == 1 and len(slow.user_attrs[records.HISTORY]["val_accuracy"]) == 1
    assert slow.intermediate_values[1] < good.intermediate_values[1]
    assert "pruned by the median pruner at epoch 1" in slow.user_attrs[records.REASON]
    assert records.TEST_ACCURACY not in slow.user_attrs  # the test set is for completed trials only


@pytest.mark.parametrize("pruner", ["default", "median"])
def test_the_default_pruner_compares_from_the_third_trial_and_optunas_median_from_the_sixth(
    workdir: Path, pruner: str
) -> None:
    space = tiny_space(
        model={"depth": 1, "width": 32, "dropout": 0.0},
        train={"epochs": 2, "learning_rate": [0.003, 0.005, 0.00001]},
        study={"name": pruner, "n_trials": 3, "pruner": pruner, "enqueue": [
            {"train.learning_rate": 0.003}, {"train.learning_rate": 0.005}, {"train.learning_rate": 0.00001}]},
    )
    if pruner == "default":
        del space["study"]["pruner"]
    study = tuning.run(space, storage=storage_of(workdir), tracking=False)
    first, second, slow = study.get_trials()
    assert first.state == second.state == TrialState.COMPLETE
    if pruner == "default":  # two finished trials are enough to compare with
        assert slow.state == TrialState.PRUNED and sorted(slow.intermediate_values) == [1]
        assert "pruned by the median pruner at epoch 1" in slow.user_attrs[records.REASON]
    else:  # Optuna's MedianPruner as it comes waits for 5 finished trials
        assert slow.state == TrialState.COMPLETE and sorted(slow.intermediate_values) == [1, 2]
    assert slow.intermediate_values[1] < min(first.intermediate_values[1], second.intermediate_values[1])


@pytest.mark.parametrize("layout", ["mapping", "keras"])
def test_data_arrays_and_build_fn_from_python(
    workdir: Path, mnist_dir: str | None, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    import keras

    if mnist_dir is None:
        pytest.skip("needs a local mnist.npz")
    with np.load(Path(mnist_dir) / "mnist.npz") as npz:
        arrays: Any = {k: npz[k][:600] for k in ("x_train", "y_train", "x_test", "y_test")}
    if layout == "keras":  # as keras.datasets.mnist.load_data() returns them
        arrays = ((arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"]))
    monkeypatch.delenv("TUNING_DATA_DIR")  # only the arrays passed below are used
    built: list[TrialConfig] = []

    def build_fn(config: TrialConfig) -> keras.Model:
        built.append(config)
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(12, activation="relu"), keras.layers.Dense(10, "softmax")])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    space = tiny_space(data={"train_size": 500, "validation_split": 0.2, "test_size": 100},
                       study={"name": "arrays", "n_trials": 1})
    study = tuning.run(space, data=arrays, build_fn=build_fn, storage=storage_of(workdir), tracking=False)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE and len(built) == 1
    assert built[0].params == trial.params
    assert trial.user_attrs[records.PARAM_COUNT] == 784 * 12 + 12 + 12 * 10 + 10


def test_a_trial_retrains_from_its_params(workdir: Path) -> None:
    """The README's retraining recipe: FixedTrial(params) → space.suggest → training.train, same seed, same result."""
    from tuning import data

    space = tuning.SearchSpace.from_dict(tiny_space(study={"name": "again", "n_trials": 1}))
    (trial,) = tuning.run(space, storage=storage_of(workdir), tracking=False).get_trials()
    config = space.suggest(optuna.trial.FixedTrial(trial.params))
    result = train(config, data.load_spec(space.data), seed=trial.user_attrs[records.SEED])
    assert result.history["val_accuracy"] == trial.user_attrs[records.HISTORY]["val_accuracy"]


@pytest.mark.slow
def test_the_time_budget_stops_the_running_trial_at_an_epoch_end(workdir: Path) -> None:
    space = tiny_space(data={"train_size": 3000}, train={"epochs": 4}, study={"n_trials": 5, "timeout": 0.5})
    study = tuning.run(space, tracking=False)
    assert len(study.trials) == 1  # no trial starts after the budget
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["reason"] == "stopped at epoch 1: the study's time budget ran out"
    assert trial.user_attrs["epochs"] == 1 and list(trial.intermediate_values) == [1]


def test_hyperband_takes_its_resource_from_the_epochs() -> None:
    from tuning.engines import make_pruner

    space = tuning.SearchSpace.from_dict(tiny_space(train={"epochs": {"low": 2, "high": 9}},
                                                    study={"pruner": "hyperband"}))
    pruner = make_pruner(space)
    assert (pruner._min_resource, pruner._max_resource) == (1, 9)
    pinned = space.with_overrides(["study.pruner={type: hyperband, max_resource: 27}"])
    assert make_pruner(pinned)._max_resource == 27
