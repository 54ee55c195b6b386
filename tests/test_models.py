"""tuning.models: the seed configurations build exactly, impossible ones fail before training, build_fn works.

Builds real Keras models (no training except the build_fn test, which trains one epoch on 300 images).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from tuning.errors import ConfigurationError
from tuning.models import build_model, check_buildable
from tuning.space import Augmentation, ModelConfig, SearchSpace, TrainConfig, TrialConfig

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
MNIST = (28, 28, 1)


def layers_of(model: object, kind: str) -> list:
    return [layer for layer in model.layers if type(layer).__name__ == kind]  # type: ignore[attr-defined]


def test_tf_tutorial_cnn_builds_exactly() -> None:
    cfg = SearchSpace.from_yaml(SPACES / "mnist_cnn.yaml").config_from_params(
        SearchSpace.from_yaml(SPACES / "mnist_cnn.yaml").enqueued()[0]
    ).model
    model = build_model(cfg, MNIST, 10)
    convs = layers_of(model, "Conv2D")
    assert [c.filters for c in convs] == [32, 64]
    assert [tuple(c.kernel_size) for c in convs] == [(5, 5), (5, 5)]
    assert [c.padding for c in convs] == ["same", "same"]
    assert len(layers_of(model, "MaxPooling2D")) == 2
    dense = layers_of(model, "Dense")
    assert [d.units for d in dense] == [1024, 10]
    assert [d.rate for d in layers_of(model, "Dropout")] == [0.5]
    assert model.output_shape == (None, 10)
    assert model.count_params() == 3_274_634  # the tutorial's 5x5x1x32+32 + 5x5x32x64+64 + 3136x1024+1024 + 1024x10+10


@pytest.mark.parametrize(
    ("depth", "width", "dropout", "params"),
    [
        (1, 50, 0.0, 784 * 50 + 50 + 50 * 10 + 10),  # 784-50-10: 39,760
        (1, 500, 0.0, 784 * 500 + 500 + 500 * 10 + 10),  # 500 wide: 397,510
        (5, 50, 0.0, 784 * 50 + 50 + 4 * (50 * 50 + 50) + 50 * 10 + 10),  # 5 x 50 deep
        (5, 500, 0.2, 784 * 500 + 500 + 4 * (500 * 500 + 500) + 500 * 10 + 10),  # 5 x 500 with dropout 0.2
    ],
)
def test_keras_tutorial_mlps(depth: int, width: int, dropout: float, params: int) -> None:
    space = SearchSpace.from_yaml(SPACES / "mnist_mlp.yaml")
    entry = next(e for e in space.enqueued()
                 if (e["model.depth"], e["model.width"], e["model.dropout"]) == (depth, width, dropout))
    model = build_model(space.config_from_params({**entry, "train.epochs": 5}).model, MNIST, 10)
    dense = layers_of(model, "Dense")
    assert [d.units for d in dense] == [width] * depth + [10]
    assert all(d.activation.__name__ == "relu" for d in dense[:-1]) and dense[-1].activation.__name__ == "softmax"
    assert [d.rate for d in layers_of(model, "Dropout")] == ([dropout] * depth if dropout else [])
    assert model.count_params() == params


def test_pytorch_style_cnn() -> None:
    space = SearchSpace.from_yaml(SPACES / "mnist_pytorch_cnn.yaml")
    model = build_model(space.config_from_params(space.enqueued()[0]).model, MNIST, 10)
    convs = layers_of(model, "Conv2D")
    assert [c.filters for c in convs] == [32, 32, 64]
    assert [tuple(c.kernel_size) for c in convs] == [(5, 5), (5, 5), (3, 3)]
    pools = layers_of(model, "MaxPooling2D")
    assert len(pools) == 3 and pools[-1].output.shape[1:] == (3, 3, 64)  # 28 -> 14 -> 7 -> 3, each pooled
    assert [d.units for d in layers_of(model, "Dense")] == [64, 10]
    assert [d.rate for d in layers_of(model, "Dropout")] == [0.5]


def test_too_many_pooling_blocks_fails_before_building() -> None:
    cfg = ModelConfig(family="cnn", depth=6, width=(8,) * 6, kernel_size=(3,) * 6, dense_units=16)
    with pytest.raises(ConfigurationError) as info:
        check_buildable(cfg, MNIST)
    message = str(info.value)
    assert "too many pooling blocks for 28×28" in message and "block 5" in message and "model.depth" in message
    with pytest.raises(ConfigurationError, match="too many pooling blocks"):
        build_model(cfg, MNIST, 10)
    check_buildable(ModelConfig(family="cnn", depth=4, width=(8,) * 4, kernel_size=(3,) * 4), MNIST)  # 28→1 fits


def test_valid_padding_kernels_too_large() -> None:
    cfg = ModelConfig(family="cnn", depth=3, width=(8, 8, 8), kernel_size=(7, 7, 7), padding="valid")
    with pytest.raises(ConfigurationError, match="conv block 3 .*kernel 7.*padding valid"):
        check_buildable(cfg, MNIST)


def test_cnn_on_flat_vectors_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="family: mlp"):
        check_buildable(ModelConfig(family="cnn", depth=1, width=(8,), kernel_size=(3,)), (784,))


def test_batch_norm_and_augmentation_layers() -> None:
    cfg = ModelConfig(family="mlp", depth=2, width=(16, 8), dropout=(0.1, 0.0), batch_norm=True)
    model = build_model(cfg, MNIST, 10, Augmentation(rotation=0.05, shift=0.1, zoom=0.1))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[1:4] == ["RandomRotation", "RandomTranslation", "RandomZoom"]
    assert kinds.count("BatchNormalization") == 2 and kinds.count("Dropout") == 1
    assert layers_of(model, "Dense")[0].activation.__name__ == "linear"  # relu comes after the normalisation


@pytest.mark.slow
def test_build_fn_escape_hatch(mnist_dir: str | None) -> None:
    """A user's build_fn replaces the model section; an uncompiled model is compiled from the train section."""
    import keras

    from tuning import data
    from tuning.training import train

    seen: list[TrialConfig] = []

    def build_fn(config: TrialConfig) -> keras.Model:
        seen.append(config)
        return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(config.params.get("units", 24), activation="relu"),
                                 keras.layers.Dense(10, activation="softmax")])

    ds = data.load("mnist", path=mnist_dir, train_size=300, validation_split=0.2, test_size=100)
    cfg = TrialConfig(ModelConfig("mlp", 1, (999,)), TrainConfig(epochs=1, learning_rate=0.003, schedule="constant"),
                      {"units": 24})  # a constant rate stays readable on the optimizer after training
    result = train(cfg, ds, seed=0, build_fn=build_fn)
    assert seen == [cfg]
    assert result.state == "complete" and result.param_count == 784 * 24 + 24 + 24 * 10 + 10
    assert result.model.optimizer.__class__.__name__ == "Adam"
    assert np.isclose(float(result.model.optimizer.learning_rate), 0.003)
    assert result.test_accuracy is not None and 0.0 <= result.test_accuracy <= 1.0


def test_the_new_family_recipe_in_the_docs_works(monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import sys
    import types

    from tuning import models

    doc = (Path(__file__).resolve().parent.parent / "docs" / "families.md").read_text(encoding="utf-8")
    code = textwrap.dedent(re.search(r"```python\n(.*?)```", doc, re.S)[1])
    module = types.ModuleType("tuning_models_resnet")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "docs/families.md", "exec"), module.__dict__)
    monkeypatch.setattr(models, "_FAMILIES", dict(models._FAMILIES))  # the registration ends with the test
    models.register(module.FAMILY)
    space = SearchSpace.from_dict({"model": {"family": "resnet", "depth": {"low": 1, "high": 4},
                                             "width": {"per_layer": [16, 32, 64]}}, "train": {"epochs": 1}})
    assert list(space.distributions()) == ["model.depth", "model.width.1", "model.width.2", "model.width.3",
                                           "model.width.4"]
    cfg = space.config_from_params({"model.depth": 2, "model.width.1": 16, "model.width.2": 64}).model
    assert (cfg.family, cfg.depth, cfg.width) == ("resnet", 2, (16, 64))
    model = build_model(cfg, MNIST, 10)
    assert sorted(layer.filters for layer in layers_of(model, "Conv2D")) == [16, 16, 64, 64]
    assert model.output_shape == (None, 10)
    with pytest.raises(Exception, match="only a cnn has kernels; family is resnet"):
        SearchSpace.from_dict({"model": {"family": "resnet", "kernel_size": 3}, "train": {"epochs": 1}})


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(family="cnn", depth=2, width=(32, 64), kernel_size=(5, 5), dense_units=1024, dropout=(0.5,)),
        ModelConfig(family="cnn", depth=3, width=(8, 16, 4), kernel_size=(3, 5, 3), padding="valid",
                    batch_norm=True, dense_units=0),
        ModelConfig(family="cnn", depth=1, width=(8,), kernel_size=(3,), pool_size=1, dense_units=16),
        ModelConfig(family="mlp", depth=3, width=(50, 20, 7), dropout=(0.0, 0.0, 0.0), batch_norm=True),
    ],
)
def test_parameter_counts_are_known_before_building(cfg: ModelConfig) -> None:
    from tuning import models

    assert models.get(cfg.family).count_params(cfg, MNIST, 10) == build_model(cfg, MNIST, 10).count_params()


@pytest.mark.slow
def test_a_trial_too_large_to_build_fails_with_its_reason_and_the_study_goes_on(workdir: Path) -> None:
    from conftest import tiny_space

    import tuning

    space = tiny_space(model={"depth": 3, "width": {"per_layer": [16, 60_000]}}, train={"epochs": 1},
                       study={"n_trials": 2, "enqueue": [{"model.width": [60_000, 60_000, 16]}]})
    study = tuning.run(space, tracking=False)
    states = {t.number: (t.state.name, t.user_attrs.get("reason", "")) for t in study.trials}
    huge = [reason for state, reason in states.values() if state == "FAIL"]
    assert huge and all("parameters, more than the 100,000,000 a trial may build" in r for r in huge)
    assert sum(state == "COMPLETE" for state, _ in states.values()) == 2


def test_a_model_too_large_to_build_fails_before_keras_allocates_it() -> None:
    huge = ModelConfig(family="mlp", depth=3, width=(60_000, 60_000, 7), dropout=(0.0, 0.0, 0.0))
    with pytest.raises(ConfigurationError, match=r"3,647,580,087 parameters, more than the 100,000,000"):
        build_model(huge, MNIST, 10)


@pytest.mark.parametrize(
    ("space", "assignment", "message"),
    [
        ("mnist_cnn.yaml", "model.kernel_size=200", "model.kernel_size: must be an integer in [1, 64]"),
        ("mnist_mlp.yaml", "model.depth=1000000000", "model.depth: must be an integer in [1, 100]"),
        ("mnist_cnn.yaml", "model.width={per_layer: [16, 100000]}",
         "model.width.per_layer[1]: must be an integer in [1, 8192]"),
    ],
)
def test_absurd_sizes_are_refused_by_validate(space: str, assignment: str, message: str,
                                              capsys: pytest.CaptureFixture) -> None:
    from tuning.cli import main

    assert main(["validate", str(SPACES / space), "--set", assignment]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_a_batch_normalised_cnn_validates_as_well_as_it_trains_from_the_first_epoch(workdir: Path) -> None:
    """Keras's default moving-average momentum (0.99) left the validation statistics near their initial values
    for hundreds of steps: 96% training accuracy, 24% validation accuracy, and pruners misled."""
    from conftest import tiny_space

    import tuning

    space = tiny_space(
        data={"train_size": 1500, "validation_split": 0.2, "test_size": 500},
        model={"family": "cnn", "depth": 2, "convs_per_block": 2, "width": {"layers": [16, 32]},
               "kernel_size": 3, "batch_norm": True, "dense_units": 64, "dropout": 0.0},
        train={"epochs": 2, "batch_size": 32, "learning_rate": 0.002},
        study={"n_trials": 1},
    )
    trial = tuning.run(space, tracking=False).trials[0]
    history = trial.user_attrs["history"]
    assert history["accuracy"][-1] > 0.8, history  # it learned ...
    assert history["val_accuracy"][-1] > history["accuracy"][-1] - 0.15, history  # ... and validation says so
    assert trial.user_attrs["test_accuracy"] > 0.8
