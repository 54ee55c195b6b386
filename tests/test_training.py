"""tuning.training: one real trial on a few hundred MNIST images: history, watchdogs, pruning hook, seeding.

Real Keras training, 1-3 epochs on 300 images (about a second per trial after TensorFlow starts).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import tiny_space

from tuning import data
from tuning.errors import ConfigurationError
from tuning.space import ModelConfig, TrainConfig, TrialConfig
from tuning.training import TrainResult, train

pytestmark = pytest.mark.slow

MLP = ModelConfig("mlp", 1, (32,))


@pytest.fixture(scope="module")
def mnist(mnist_dir: str | None) -> data.Dataset:
    return data.load("mnist", path=mnist_dir, train_size=300, validation_split=0.2, test_size=200)


def config(model: ModelConfig = MLP, **train: object) -> TrialConfig:
    options: dict = {"epochs": 2, "batch_size": 32, "learning_rate": 0.003, "chance_epochs": 0, **train}
    return TrialConfig(model, TrainConfig(**options))


def test_a_trial_trains_and_records_history_per_epoch(mnist: data.Dataset) -> None:
    calls: list[tuple[int, dict]] = []
    result = train(config(epochs=3, learning_rate=0.01), mnist, seed=1,
                   on_epoch=lambda epoch, logs: calls.append((epoch, dict(logs))))
    assert result.state == "complete" and result.reason is None and result.epochs == 3
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds", "learning_rate"):
        assert len(result.history[key]) == 3, key
    assert [epoch for epoch, _ in calls] == [1, 2, 3]
    assert [logs["val_accuracy"] for _, logs in calls] == result.history["val_accuracy"]
    assert result.history["loss"][-1] < result.history["loss"][0]  # it learns
    assert result.history["val_accuracy"][-1] > 0.5
    rates = result.history["learning_rate"]  # the default schedule (cosine) decays the rate to 0 at the last epoch
    assert 0.01 > rates[0] > rates[1] > rates[2] == pytest.approx(0.0, abs=1e-9)
    assert result.param_count == 784 * 32 + 32 + 32 * 10 + 10
    assert result.train_seconds >= sum(result.history["epoch_seconds"]) > 0
    assert result.test_accuracy is not None and result.test_accuracy > 0.5
    assert result.metric("val_accuracy") == result.history["val_accuracy"][-1]
    assert result.metric("params") == result.param_count


def test_epoch_hook_prunes_and_stops_training(mnist: data.Dataset) -> None:
    result = train(config(epochs=4), mnist, seed=0, on_epoch=lambda epoch, logs: "enough" if epoch == 2 else None)
    assert (result.state, result.reason, result.epochs) == ("pruned", "enough", 2)
    assert len(result.history["val_accuracy"]) == 2
    assert result.test_accuracy is None  # the test set is evaluated for completed trials only


def test_nan_loss_fails_the_trial_with_its_reason(mnist: data.Dataset) -> None:
    # SGD at 1e6 keeps a finite (1e30) loss on this data: the chance watchdog catches that one (below).
    result = train(config(optimizer="sgd", learning_rate=1e10, epochs=3), mnist, seed=0)
    assert result.state == "failed"
    assert "diverged" in result.reason and "learning rate" in result.reason
    assert result.epochs == 1 and not math.isfinite(result.history["loss"][-1])
    assert result.test_accuracy is None


@pytest.mark.parametrize(("optimizer", "learning_rate"), [("adam", 0.0), ("sgd", 1e6)])
def test_a_model_at_chance_level_is_pruned(mnist: data.Dataset, optimizer: str, learning_rate: float) -> None:
    result = train(config(optimizer=optimizer, learning_rate=learning_rate, epochs=4, chance_epochs=2), mnist, seed=0)
    assert result.state == "pruned" and result.epochs == 2
    assert "chance" in result.reason and f"{mnist.chance_accuracy:.4f}" in result.reason


def test_chance_watchdog_leaves_a_learning_model_alone(mnist: data.Dataset) -> None:
    result = train(config(epochs=2, chance_epochs=1), mnist, seed=0)
    assert result.state == "complete" and result.epochs == 2


def test_same_seed_same_history_other_seed_other_history(mnist: data.Dataset) -> None:
    cnn = ModelConfig("cnn", 1, (8,), dropout=(0.3,), kernel_size=(3,), dense_units=16)
    runs = [train(config(cnn, epochs=2), mnist, seed=seed) for seed in (5, 5, 6)]
    first, again, other = (r.history for r in runs)
    assert first["val_accuracy"] == again["val_accuracy"] and first["loss"] == again["loss"]
    assert first["loss"] != other["loss"]


def test_training_on_the_converted_tensors_matches_keras_on_the_numpy_arrays(mnist: data.Dataset) -> None:
    import gc
    import weakref

    import keras

    from tuning import training
    from tuning.models import build_model

    cfg = config(ModelConfig("mlp", 1, (16,), dropout=(0.2,)), epochs=2, precision="float32", schedule="constant")
    ours = train(cfg, mnist, seed=3).history
    keras.backend.clear_session()
    keras.utils.set_random_seed(3)
    keras.mixed_precision.set_dtype_policy("float32")
    model = build_model(cfg.model, mnist.input_shape, mnist.num_classes)
    model.compile(optimizer=training.make_optimizer(cfg.train), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    plain = model.fit(mnist.x_train, mnist.y_train, batch_size=32, epochs=2,
                      validation_data=(mnist.x_val, mnist.y_val), verbose=0).history
    assert ours["loss"] == plain["loss"] and ours["val_accuracy"] == plain["val_accuracy"]
    # The tensor copy is made once and lives as long as its data set, not longer.
    copy = data.from_arrays((mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test))
    train(config(epochs=1), copy, seed=0)
    tensors = training.as_tensors(copy)
    assert training.as_tensors(copy) is tensors
    kept = [weakref.ref(t) for t in tensors]
    del copy, tensors
    gc.collect()
    assert [ref() for ref in kept] == [None] * 6


def test_unbuildable_configuration_raises_before_training(mnist: data.Dataset) -> None:
    deep = ModelConfig("cnn", 6, (4,) * 6, kernel_size=(3,) * 6)
    with pytest.raises(ConfigurationError, match="too many pooling blocks"):
        train(config(deep), mnist, seed=0)


def test_early_stopping_and_unknown_metric(mnist: data.Dataset) -> None:
    result = train(config(learning_rate=0.0, epochs=5, early_stopping=1), mnist, seed=0)
    assert result.state == "complete" and result.epochs < 5  # val_loss cannot improve with learning rate 0
    with pytest.raises(ConfigurationError, match="no metric 'val_auc'"):
        TrainResult("complete", None, history={"loss": [1.0]}).metric("val_auc")


def test_auto_precision_follows_the_hardware() -> None:
    import tensorflow as tf

    from tuning.training import resolve_precision

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU decides auto precision on this machine")
    cases = (({"avx512f", "amx_bf16"}, "mixed_bfloat16"), ({"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
             ({"avx512f", "avx2"}, "float32"))
    for flags, expected in cases:
        policy, why = resolve_precision("auto", cpu_flags=flags)
        assert policy == expected and why.startswith("auto: ")
    assert resolve_precision("mixed_float16") == ("mixed_float16", "as set in train.precision")
    assert resolve_precision("mixed_bfloat16", cpu_flags={"amx_bf16"}) == ("mixed_bfloat16",
                                                                          "as set in train.precision")
    policy, why = resolve_precision("mixed_bfloat16", cpu_flags={"avx512f", "avx2"})  # set, but nothing runs it
    assert policy == "mixed_bfloat16" and "emulates it" in why and "set train.precision to auto" in why


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["auto", "mixed_bfloat16"])
def test_the_precision_a_trial_trained_with_is_said_and_recorded(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    import tensorflow as tf

    import tuning
    from tuning.training import _precision, resolve_precision

    if precision != "auto":  # a space written on a machine with bfloat16 units, run on one without
        if tf.config.list_physical_devices("GPU"):
            pytest.skip("a GPU runs bfloat16 on this machine")
        monkeypatch.setattr(_precision, "_cpu_flags", lambda: frozenset({"avx512f", "avx2"}))
    train = {"epochs": 1} if precision == "auto" else {"epochs": 1, "precision": precision}  # auto: the default
    study = tuning.run(tiny_space(train=train, study={"n_trials": 1}), tracking=False)
    policy, why = resolve_precision(precision)
    assert study.trials[0].user_attrs["precision"] == policy
    assert f"Precision: {policy} ({why})" in capsys.readouterr().err
    if precision != "auto":
        assert "emulates it" in why


@pytest.mark.slow
@pytest.mark.parametrize(("rule", "rates"), [("linear", [0.002, 0.008]), ("sqrt", [0.004 / 2**0.5, 0.004 * 2**0.5]),
                                            ("none", [0.004, 0.004])])
def test_a_scaling_rule_moves_the_learning_rate_with_the_batch_size(workdir: Path, rule: str, rates: list) -> None:
    import tuning

    space = tiny_space(
        train={"epochs": 1, "batch_size": [32, 128], "learning_rate": 0.004, "lr_scaling": rule,
               "lr_reference_batch": 64, "schedule": "constant"},
        study={"n_trials": 2, "enqueue": [{"train.batch_size": 32}, {"train.batch_size": 128}]},
    )
    study = tuning.run(space, tracking=False)
    used = [t.user_attrs["history"]["learning_rate"][0] for t in study.trials]
    assert [t.params["train.batch_size"] for t in study.trials] == [32, 128]
    assert used == pytest.approx(rates, rel=1e-6)


def test_cosine_schedule_decays_the_learning_rate_to_zero_at_the_last_epoch(mnist: data.Dataset) -> None:
    result = train(config(epochs=3, schedule="cosine"), mnist, seed=0)
    rates = result.history["learning_rate"]
    steps = -(-len(mnist.x_train) // 32)
    expected = [0.003 * 0.5 * (1 + math.cos(math.pi * epoch * steps / (3 * steps))) for epoch in (1, 2, 3)]
    assert rates == pytest.approx(expected, abs=1e-6)  # the rate in use after each epoch
    assert rates[-1] == pytest.approx(0.0, abs=1e-9)


def test_plateau_schedule_halves_the_learning_rate_when_val_loss_stalls(mnist: data.Dataset) -> None:
    # A tiny learning rate with SGD: val_loss barely moves, so it stops improving within a few epochs.
    result = train(config(epochs=6, schedule="plateau", optimizer="sgd", learning_rate=1e-9), mnist, seed=0)
    rates = result.history["learning_rate"]
    assert rates[0] == pytest.approx(1e-9) and min(rates) <= 1e-9 / 2 * (1 + 1e-4)  # halved at least once
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:], strict=False))
