"""The search-space package through its public API: parsing, errors, sampling, enqueue, overrides, grid, describe.

Fast: real Optuna studies (in memory) with trivial objectives, no TensorFlow.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import merge_sections

from tuning import models
from tuning.errors import SpaceError, UserInputError
from tuning.space import DataSpec, ModelConfig, Objective, SearchSpace, StudySpec, TrialConfig

SPACES = Path(__file__).parent / "spaces"
GOOD = sorted(SPACES.glob("*.yaml"))
DOCS = Path(__file__).parent.parent / "docs" / "space.md"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def base(**sections: Any) -> dict[str, Any]:
    """A minimal valid cnn space, with ``sections`` merged in key by key."""
    return merge_sections({"model": {"family": "cnn"}, "train": {"epochs": 2}}, sections)


def mlp(**model: Any) -> dict[str, Any]:
    return {"model": {"family": "mlp", **model}, "train": {"epochs": 1}}


def run_study(space: SearchSpace, n_trials: int, sampler: optuna.samplers.BaseSampler | None = None,
              enqueue: bool = False) -> tuple[optuna.Study, list[TrialConfig]]:
    """Run a real in-memory study whose objective samples the space; return it and the configurations."""
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    if enqueue:
        for params in space.enqueued():
            study.enqueue_trial(params)
    configs: list[TrialConfig] = []

    def objective(trial: optuna.Trial) -> float:
        configs.append(space.suggest(trial))
        return 0.0

    study.optimize(objective, n_trials=n_trials)
    return study, configs


def error_of(d: Any) -> SpaceError:
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_dict(d)
    return info.value


# ----------------------------------------------------------------------------------------------- good spaces


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_spaces_load_and_round_trip(path: Path, tmp_path: Path) -> None:
    space = SearchSpace.from_yaml(path)
    assert space.source == str(path)
    assert space.study.name == path.stem
    d = space.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert SearchSpace.from_dict(d) == space
    assert SearchSpace.from_dict(d).to_dict() == d
    copy_path = tmp_path / "copy.yaml"
    copy_path.write_text(yaml.safe_dump(d))
    assert SearchSpace.from_yaml(copy_path) == space


def test_example_space_attributes() -> None:
    space = SearchSpace.from_yaml(SPACES / "mnist_quick.yaml")
    assert space.data == DataSpec(dataset="mnist", train_size=10000, validation_split=0.1)
    assert space.objectives == (Objective("val_accuracy", "maximize"),)
    assert space.family == "cnn"
    assert space.study.sampler == {"type": "tpe"} and space.study.pruner == {"type": "median"}
    assert (space.study.n_trials, space.study.seed, space.study.n_jobs) == (30, 0, 1)
    assert space.study.max_consecutive_failures == 5 and space.study.storage is None
    lr = space.distributions()["train.learning_rate"]
    assert isinstance(lr, optuna.distributions.FloatDistribution)
    assert (lr.low, lr.high, lr.log) == (1e-4, 1e-2, True)
    assert list(space.distributions()) == [
        "model.depth", "model.width.1", "model.width.2", "model.width.3", "model.kernel_size",
        "model.dense_units", "model.dropout", "train.epochs", "train.batch_size", "train.learning_rate"]


def test_defaults_are_filled_per_family() -> None:
    cnn = SearchSpace.from_dict(base()).config_from_params({})
    assert cnn.model == ModelConfig(family="cnn", depth=2, width=(32, 32), dropout=(0.0,), kernel_size=(3, 3),
                                    dense_units=128, padding="same", pool_size=2)
    assert cnn.train.batch_size == 128 and cnn.train.optimizer == "adam" and cnn.train.learning_rate == 0.001
    m = SearchSpace.from_dict(mlp()).config_from_params({})
    assert m.model == ModelConfig(family="mlp", depth=1, width=(128,), dropout=(0.0,))
    space = SearchSpace.from_dict(mlp())
    assert space.study.name == space.default_name() and space.study.enqueue == ()  # a dict: named by its hash
    assert space.study == StudySpec(name=space.default_name())
    # Optuna's median pruner comparing from the third trial; `pruner: median` written is Optuna's as it comes
    assert space.study.pruner == {"type": "median", "n_startup_trials": 2}
    assert SearchSpace.from_dict(mlp() | {"study": {"pruner": "median"}}).study.pruner == {"type": "median"}
    assert space.data == DataSpec()


def test_scientific_notation_strings_are_numbers() -> None:
    # PyYAML reads 1e-4 (no decimal point) as a string: bounds, choices and scalars all accept it.
    text = """
model: {family: mlp, dropout: [0, 1e-1]}
train:
  epochs: 2
  learning_rate: {low: 1e-4, high: 1e-2, log: true}
  momentum: 5e-1
study: {timeout: 3e2}
"""
    assert yaml.safe_load(text)["train"]["learning_rate"]["low"] == "1e-4"
    d = yaml.safe_load(text)
    space = SearchSpace.from_dict(d)
    dist = space.distributions()["train.learning_rate"]
    assert (dist.low, dist.high) == (0.0001, 0.01)
    assert space.distributions()["model.dropout"].choices == (0.0, 0.1)
    assert space.config_from_params({"model.dropout": 0.1, "train.learning_rate": 1e-3}).train.momentum == 0.5
    with pytest.raises(SpaceError, match="train.learning_rate: missing from the parameters"):
        space.config_from_params({"model.dropout": 0.1})
    assert space.study.timeout == 300.0
    assert SearchSpace.from_dict(base(train={"epochs": "1e1"})).config_from_params({}).train.epochs == 10


def test_float_keys_give_float_distributions_even_for_integer_bounds() -> None:
    space = SearchSpace.from_dict(mlp(dropout={"low": 0, "high": 0.5}) | {
        "train": {"epochs": 1, "augmentation": {"rotation": {"low": 0, "high": 1}}}})
    dist = space.distributions()
    assert isinstance(dist["model.dropout"], optuna.distributions.FloatDistribution)
    assert isinstance(dist["train.augmentation.rotation"], optuna.distributions.FloatDistribution)
    assert space.to_dict()["train"]["augmentation"]["rotation"] == {"low": 0.0, "high": 1.0}
    depth = SearchSpace.from_dict(mlp(depth={"low": 1, "high": 3})).distributions()["model.depth"]
    assert isinstance(depth, optuna.distributions.IntDistribution)


def test_multi_objective_defaults_pruner_to_none_and_directions() -> None:
    space = SearchSpace.from_yaml(SPACES / "multi_objective.yaml")
    assert space.objectives == (Objective("val_accuracy", "maximize"), Objective("params", "minimize"))
    assert space.directions == ["maximize", "minimize"]
    assert space.study.pruner == {"type": "none"}
    assert space.study.seed is None and space.study.timeout == 600.0
    # an explicit contradicting direction is the user's choice
    space = SearchSpace.from_dict(base(objective={"metric": "val_loss", "direction": "maximize"}))
    assert space.objectives == (Objective("val_loss", "maximize"),)
    assert SearchSpace.from_dict(base(objective="loss")).directions == ["minimize"]


def test_sampler_and_pruner_options_are_kept() -> None:
    space = SearchSpace.from_dict(base(study={"sampler": {"type": "tpe", "n_startup_trials": 5},
                                              "pruner": {"type": "percentile", "percentile": 25.0}}))
    assert space.study.sampler == {"type": "tpe", "n_startup_trials": 5}
    assert space.study.pruner == {"type": "percentile", "percentile": 25.0}


# ----------------------------------------------------------------------------------------------- bad spaces

BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("low>high", base(model={"depth": {"low": 3, "high": 1}}), "model.depth.low", "must not exceed high"),
    ("log with low 0", base(model={"dropout": {"low": 0, "high": 0.5, "log": True}}), "model.dropout.low",
     "log range needs low > 0"),
    ("log and step", base(train={"learning_rate": {"low": "1e-4", "high": "1e-2", "log": True, "step": 0.001}}),
     "train.learning_rate.log", "cannot be combined"),
    ("step 0", base(model={"dropout": {"low": 0, "high": 0.5, "step": 0}}), "model.dropout.step", "> 0"),
    ("step negative int", base(model={"depth": {"low": 1, "high": 3, "step": -1}}), "model.depth.step", ">= 1"),
    ("step not dividing", base(model={"dropout": {"low": 0, "high": 0.5, "step": 0.2}}), "model.dropout.step",
     "whole number of steps"),
    ("dropout 1", base(model={"dropout": {"low": 0.0, "high": 1.0}}), "model.dropout.high", "in [0, 1)"),
    ("width 0", base(model={"width": 0}), "model.width", "an integer in [1, 8192]"),
    ("float bound on int key", base(model={"depth": {"low": 1.5, "high": 3}}), "model.depth.low", "an integer"),
    ("per_layer bad item", base(model={"width": {"per_layer": [16, "abc"]}}), "model.width.per_layer[1]",
     "an integer in [1, 8192]"),
    ("empty choice", base(train={"batch_size": []}), "train.batch_size", "empty list"),
    ("bool for number (yes)", base(train={"epochs": True}), "train.epochs", "not a boolean"),
    ("not a number", base(train={"learning_rate": "fast"}), "train.learning_rate", "Received: fast"),
    ("unknown section", base(objectives="val_accuracy"), "objectives", "did you mean `objective`"),
    ("unknown model key", base(model={"widht": 64}), "model.widht", "did you mean `width`"),
    ("cnn key on mlp", mlp(kernel_size=3), "model.kernel_size", "only a cnn has kernels; family is mlp"),
    ("per-layer dropout on cnn", base(model={"dropout": {"per_layer": [0.1, 0.2]}}), "model.dropout",
     "per-layer dropout is for an mlp"),
    ("per-layer activation", base(model={"activation": {"per_layer": ["relu"]}}), "model.activation",
     "cannot vary per layer"),
    ("layers shorter than depth", base(model={"depth": [1, 3], "width": {"layers": [32, 64]}}),
     "model.width.layers", "model.depth can reach 3"),
    ("per_layer and layers", base(model={"width": {"per_layer": [1], "layers": [2]}}), "model.width",
     "either {per_layer"),
    ("family missing", {"model": {"depth": 2}, "train": {"epochs": 1}}, "model.family", "required"),
    ("model section empty", {"model": None, "train": {"epochs": 1}}, "model.family", "required"),
    ("family searched", base(model={"family": ["cnn", "mlp"]}), "model.family", "one study tunes one family"),
    ("epochs missing", {"model": {"family": "cnn"}, "train": {}}, "train.epochs", "required"),
    ("train missing", {"model": {"family": "cnn"}}, "train", "required section"),
    ("section not mapping", base(train=[1, 2]), "train", "must be a mapping"),
    ("activation typo", base(model={"activation": "rleu"}), "model.activation", "did you mean `relu`"),
    ("range on a string key", base(train={"optimizer": {"low": 1, "high": 2}}), "train.optimizer",
     "needs a numeric key"),
    ("range missing high", base(model={"depth": {"low": 1}}), "model.depth", "a range needs `high`"),
    ("range unknown key", base(train={"learning_rate": {"low": 0.1, "high": 0.2, "logg": True}}),
     "train.learning_rate.logg", "did you mean `log`"),
    ("duplicate choice", base(model={"width": [32, 32]}), "model.width[1]", "appears twice"),
    ("nested choice", base(model={"width": [[16, 32]]}), "model.width[0]", "single value"),
    ("npz without path", base(data={"dataset": "npz"}), "data.path", "required when dataset is npz"),
    ("searched data", base(data={"train_size": [100, 200]}), "data.train_size", "not searchable"),
    ("validation_split 1", base(data={"validation_split": 1.0}), "data.validation_split", "in (0, 1)"),
    ("unknown dataset", base(data={"dataset": "mnsit"}), "data.dataset", "did you mean `mnist`"),
    ("metric typo", base(objective="val_acc"), "objective", "did you mean `val_accuracy`"),
    ("duplicate metric", base(objective=["val_accuracy", {"metric": "val_accuracy"}]), "objective[1]",
     "duplicate metric"),
    ("bad direction", base(objective={"metric": "loss", "direction": "max"}), "objective.direction",
     "maximize, minimize"),
    ("empty objectives", base(objective=[]), "objective", "names no objective"),
    ("pruned multi-objective", base(objective=["val_accuracy", "params"], study={"pruner": "median"}),
     "study.pruner", "cannot prune a multi-objective"),
    ("sampler typo", base(study={"sampler": "tpee"}), "study.sampler", "did you mean `tpe`"),
    ("pruner without type", base(study={"pruner": {"percentile": 25}}), "study.pruner", "needs `type`"),
    ("n_trials 0", base(study={"n_trials": 0}), "study.n_trials", ">= 1"),
    ("timeout 0", base(study={"timeout": 0}), "study.timeout", "> 0"),
    ("unknown study key", base(study={"n_trial": 5}), "study.n_trial", "did you mean `n_trials`"),
    ("grid without step", base(study={"sampler": "grid"}, train={"learning_rate": {"low": 0.001, "high": 0.1}}),
     "train.learning_rate", "grid sampler needs a step"),
    ("augmentation out of range", base(train={"augmentation": {"rotation": 1.5}}), "train.augmentation.rotation",
     "in [0, 1]"),
    ("augmentation typo", base(train={"augmentation": {"rotate": 0.1}}), "train.augmentation.rotate",
     "did you mean `rotation`"),
    ("fixed key searched", base(train={"precision": ["float32", "mixed_bfloat16"]}), "train.precision",
     "not searchable"),
    ("bool key given a string", base(model={"batch_norm": "yes"}), "model.batch_norm", "true or false"),
    ("negative chance_epochs", base(train={"chance_epochs": -1}), "train.chance_epochs", ">= 0"),
    ("enqueue outside", base(model={"depth": [1, 2]}, study={"enqueue": [{"model.depth": 5}]}),
     "study.enqueue[0].model.depth", "outside the space: must be one of 1, 2"),
    ("enqueue off the step grid", base(model={"dropout": {"low": 0, "high": 0.6, "step": 0.1}},
                                       study={"enqueue": [{"model.dropout": 0.55}]}),
     "study.enqueue[0].model.dropout", "on steps of 0.1"),
    ("enqueue unknown key", base(model={"width": [16, 32]}, study={"enqueue": [{"model.widht": 16}]}),
     "study.enqueue[0].model.widht", "did you mean `model.width`"),
    ("enqueue fixed mismatch", base(study={"enqueue": [{"train.optimizer": "sgd"}]}),
     "study.enqueue[0].train.optimizer", "is fixed at 'adam'"),
    ("enqueue list vs depth", base(model={"depth": [1, 2], "width": {"per_layer": [16, 32]}},
                                   study={"enqueue": [{"model.depth": 2, "model.width": [16, 32, 32]}]}),
     "study.enqueue[0].model.width", "the entry's depth is 2"),
    ("enqueue layer beyond depth", base(model={"depth": [1, 2], "width": {"per_layer": [16, 32]}},
                                       study={"enqueue": [{"model.depth": 1, "model.width.2": 16}]}),
     "study.enqueue[0].model.width.2", "layer 2 does not exist"),
    ("enqueue list for a shared key", base(model={"width": [16, 32]}, study={"enqueue": [{"model.width": [16]}]}),
     "study.enqueue[0].model.width", "shared by every layer"),
    ("enqueue per-layer bad item", base(model={"depth": 2, "width": {"per_layer": [16, 32]}},
                                       study={"enqueue": [{"model.width": [16, 64]}]}),
     "study.enqueue[0].model.width[1]", "outside the space"),
    ("enqueue not a list", base(study={"enqueue": {"model.depth": 2}}), "study.enqueue", "must be a list"),
    ("enqueue entry not a mapping", base(study={"enqueue": [3]}), "study.enqueue[0]", "must be a mapping"),
    ("enqueue wrong type", base(model={"depth": [1, 2]}, study={"enqueue": [{"model.depth": "two"}]}),
     "study.enqueue[0].model.depth", "Received: two"),
    ("top level not a mapping", [1, 2], "", "must be a mapping of sections"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("d", "path", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_space_names_path_and_problem(d: dict[str, Any], path: str, fragment: str) -> None:
    err = error_of(d)
    assert isinstance(err, UserInputError)
    matching = [e for e in err.errors if e.path == path]
    assert matching, f"no error at {path!r}; got {[e.path for e in err.errors]}: {err}"
    assert any(fragment in str(e) for e in matching), str(err)
    assert path in str(err)


def test_errors_say_what_was_received_and_how_to_fix() -> None:
    err = error_of(base(model={"dropout": {"low": 0.0, "high": 1.0}}))
    assert str(err) == ("model.dropout.high: must be a number in [0, 1). Received: 1.0. "
                        "Fix: use a value in [0, 1).")
    err = error_of(mlp(kernel_size=3))
    assert str(err) == "model.kernel_size: only a cnn has kernels; family is mlp. Fix: remove it or set family: cnn."


def test_an_unknown_family_is_reported_once() -> None:
    err = error_of({"model": {"family": "rnn"}, "train": {"epochs": 1}})
    assert [e.path for e in err.errors] == ["model.family"] and "did you mean `cnn`" in str(err)


def test_all_problems_are_reported_at_once() -> None:
    err = error_of({"model": {"family": "cnn", "depth": 0, "width": [], "widht": 3},
                    "train": {"epochs": "x", "batch_size": {"low": 64, "high": 32}},
                    "study": {"n_trials": -1}})
    paths = [e.path for e in err.errors]
    assert paths.count("model.depth") == 1
    for path in ("model.width", "model.widht", "train.epochs", "train.batch_size.low", "study.n_trials"):
        assert path in paths
    assert str(err).startswith(f"{len(err.errors)} problems:")


def test_yaml_file_problems(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"line 4, column 6") as info:
        SearchSpace.from_yaml(SPACES / "bad" / "syntax.yaml")
    assert info.value.source == str(SPACES / "bad" / "syntax.yaml")
    assert "syntax.yaml" in str(info.value)
    with pytest.raises(SpaceError, match="duplicate key 'depth' at line 4, column 3"):
        SearchSpace.from_yaml(SPACES / "bad" / "duplicate_key.yaml")
    with pytest.raises(SpaceError, match="top level must be a mapping.*Received: list"):
        SearchSpace.from_yaml(SPACES / "bad" / "top_level_list.yaml")
    with pytest.raises(SpaceError, match="file is empty"):
        SearchSpace.from_yaml(SPACES / "bad" / "empty.yaml")
    with pytest.raises(SpaceError, match="file not found.*nope.yaml"):
        SearchSpace.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(SpaceError, match="found a directory"):
        SearchSpace.from_yaml(tmp_path)
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SpaceError, match="cannot read"):
        SearchSpace.from_yaml(tmp_path / "binary.yaml")
    (tmp_path / "unsafe.yaml").write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(SpaceError, match="line 1"):
        SearchSpace.from_yaml(tmp_path / "unsafe.yaml")


def test_yaml_semantic_problems_name_the_file() -> None:
    path = SPACES / "bad" / "many_problems.yaml"
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_yaml(path)
    text = str(info.value)
    assert text.startswith(f"4 problems in {path}:")
    assert [e.path for e in info.value.errors] == [
        "model.widht", "model.kernel_size", "train.epochs", "train.learning_rate.low"]
    assert "YAML reads yes/no" in text


# ----------------------------------------------------------------------------------------------- sampling


def test_per_layer_params_follow_the_sampled_depth() -> None:
    space = SearchSpace.from_dict(mlp(depth={"low": 1, "high": 4}, width={"per_layer": [16, 32, 64]},
                                      dropout={"per_layer": {"low": 0.0, "high": 0.5}}))
    study, configs = run_study(space, 30)
    depths = set()
    for trial, cfg in zip(study.trials, configs, strict=True):
        depth = trial.params["model.depth"]
        depths.add(depth)
        expected = {"model.depth"} | {f"model.{k}.{i}" for k in ("width", "dropout") for i in range(1, depth + 1)}
        assert set(trial.params) == expected
        assert cfg.params == trial.params
        assert cfg.model.depth == depth and len(cfg.model.width) == depth and len(cfg.model.dropout) == depth
        assert cfg.model.width == tuple(trial.params[f"model.width.{i}"] for i in range(1, depth + 1))
        assert all(w in (16, 32, 64) for w in cfg.model.width)
    assert depths == {1, 2, 3, 4}


def test_shared_width_is_one_parameter_for_every_layer() -> None:
    space = SearchSpace.from_dict(base(model={"depth": [1, 3], "width": [8, 16], "kernel_size": [3, 5]}))
    study, configs = run_study(space, 10)
    for trial, cfg in zip(study.trials, configs, strict=True):
        assert set(trial.params) == {"model.depth", "model.width", "model.kernel_size"}
        assert cfg.model.width == (trial.params["model.width"],) * cfg.model.depth
        assert cfg.model.kernel_size == (trial.params["model.kernel_size"],) * cfg.model.depth
        assert cfg.model.dropout == (0.0,)


def test_layers_mode_fixed_and_searched_layers() -> None:
    space = SearchSpace.from_yaml(SPACES / "pytorch_cnn.yaml")
    study, configs = run_study(space, 5, sampler=optuna.samplers.TPESampler(seed=1))
    for trial, cfg in zip(study.trials, configs, strict=True):
        assert not any(name.startswith("model.") for name in trial.params)
        assert cfg.model.width == (32, 32, 64) and cfg.model.kernel_size == (5, 5, 3)
        assert cfg.model.dense_units == 64 and cfg.model.pool_size == 2
        assert 1e-4 <= cfg.train.learning_rate <= 1e-1 and cfg.train.optimizer in ("adam", "sgd")
    space = SearchSpace.from_dict(base(model={"depth": [1, 2], "width": {"layers": [[8, 16], 32, 64]}}))
    assert list(space.distributions()) == ["model.depth", "model.width.1"]
    study, configs = run_study(space, 8)
    for trial, cfg in zip(study.trials, configs, strict=True):
        assert cfg.model.width[1:] == (32,) * (cfg.model.depth - 1)
        assert cfg.model.width[0] == trial.params["model.width.1"]


def test_fixed_values_are_not_optuna_params() -> None:
    space = SearchSpace.from_yaml(SPACES / "tf_tutorial_cnn.yaml")
    study, configs = run_study(space, 1)
    assert study.trials[0].params == {}
    cfg = configs[0]
    assert cfg.model == ModelConfig(family="cnn", depth=2, width=(32, 64), dropout=(0.5,), kernel_size=(5, 5),
                                    dense_units=1024)
    assert (cfg.train.batch_size, cfg.train.learning_rate, cfg.train.epochs) == (50, 1e-4, 2)


def test_one_element_list_is_still_a_parameter() -> None:
    space = SearchSpace.from_dict(base(train={"batch_size": [64]}))
    study, configs = run_study(space, 1)
    assert study.trials[0].params == {"train.batch_size": 64}
    assert configs[0].train.batch_size == 64


def test_suggest_with_fixed_trial_and_config_from_params() -> None:
    space = SearchSpace.from_yaml(SPACES / "multi_objective.yaml")
    params = {"model.depth": 2, "model.width.1": 100, "model.width.2": 20, "model.dropout.1": 0.1,
              "model.dropout.2": 0.25, "model.activation": "gelu", "model.batch_norm": True,
              "train.learning_rate": 0.001, "train.augmentation.shift": 0.05}
    cfg = space.suggest(optuna.trial.FixedTrial(params))
    assert cfg.params == params
    assert cfg.model == ModelConfig(family="mlp", depth=2, width=(100, 20), dropout=(0.1, 0.25),
                                    activation="gelu", batch_norm=True)
    assert cfg.train.augmentation.shift == 0.05 and cfg.train.augmentation.active
    assert cfg.train.optimizer == "adamw"
    assert space.config_from_params(params) == cfg


# ----------------------------------------------------------------------------------------------- enqueue


def test_enqueue_expands_per_layer_lists_and_runs_first() -> None:
    space = SearchSpace.from_yaml(SPACES / "mnist_quick.yaml")
    entry = {"model.depth": 2, "model.width.1": 32, "model.width.2": 64, "model.kernel_size": 5,
             "model.dense_units": 1024, "model.dropout": 0.5}
    assert space.enqueued() == [entry]
    study, configs = run_study(space, 2, enqueue=True)
    assert study.trials[0].params.items() >= entry.items()
    assert configs[0].model.width == (32, 64) and configs[0].model.kernel_size == (5, 5)
    assert configs[0].model.dropout == (0.5,)


def test_enqueue_forms() -> None:
    space = SearchSpace.from_dict(mlp(depth={"low": 1, "high": 3}, width={"per_layer": [16, 32, 64]},
                                      activation="relu") | {
        "train": {"epochs": 1, "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
        "study": {"enqueue": [
            {"model.depth": 3, "model.width": 32},          # scalar: every layer of the entry's depth
            {"model.width": 16},                            # no depth: every layer the model can have
            {"model.width.2": 64, "train.learning_rate": "1e-3"},  # one layer; string number
            {"model.activation": "relu", "model.depth": 1},  # a fixed key equal to its value is dropped
            {},
        ]}})
    assert space.enqueued() == [
        {"model.depth": 3, "model.width.1": 32, "model.width.2": 32, "model.width.3": 32},
        {"model.width.1": 16, "model.width.2": 16, "model.width.3": 16},
        {"model.width.2": 64, "train.learning_rate": 0.001},
        {"model.depth": 1},
        {},
    ]
    # partial entries: Optuna samples the rest, and unused layers are not recorded
    study, configs = run_study(space, 5, enqueue=True)
    assert study.trials[0].params["model.width.3"] == 32
    assert configs[3].model.depth == 1 and set(study.trials[3].params) == {"model.depth", "model.width.1",
                                                                           "train.learning_rate"}


def test_enqueue_in_layers_mode_checks_each_layer_spec() -> None:
    d = base(model={"depth": 2, "width": {"layers": [[16, 32], 64]}},
             study={"enqueue": [{"model.width": [32, 64]}]})
    assert SearchSpace.from_dict(d).enqueued() == [{"model.width.1": 32}]
    d["study"]["enqueue"] = [{"model.width": [32, 128]}]
    err = error_of(d)
    assert err.path == "study.enqueue[0].model.width[1]" and "is fixed at 64" in str(err)


def test_enqueue_rejects_key_given_twice() -> None:
    err = error_of(base(model={"depth": 2, "width": {"per_layer": [16, 32]}},
                        study={"enqueue": [{"model.width": [16, 32], "model.width.2": 16}]}))
    assert err.path == "study.enqueue[0].model.width.2" and "given twice" in str(err)


# ----------------------------------------------------------------------------------------------- overrides


def test_with_overrides() -> None:
    space = SearchSpace.from_yaml(SPACES / "mnist_quick.yaml")
    new = space.with_overrides(["train.epochs=3", "model.width={per_layer: [8, 16, 32, 64]}", "study.n_trials=4",
                                "train.learning_rate.high=1e-3", "data.train_size=500",
                                "train.augmentation.rotation=[0.0, 0.1]"])
    assert new.source == space.source and new.study.name == "mnist_quick"
    assert new.config_from_params({"model.depth": 1, "model.width.1": 8, "model.kernel_size": 3,
                                   "model.dense_units": 128, "model.dropout": 0.0, "train.batch_size": 32,
                                   "train.learning_rate": 1e-3, "train.augmentation.rotation": 0.1}).train.epochs == 3
    assert new.distributions()["model.width.1"].choices == (8, 16, 32, 64)
    assert new.distributions()["train.learning_rate"].high == 1e-3
    assert new.study.n_trials == 4 and new.data.train_size == 500
    assert space.study.n_trials == 30  # the original is untouched
    assert space.with_overrides([]) == space


def test_overrides_win_over_enqueued_values() -> None:
    space = SearchSpace.from_dict(base(model={"depth": {"low": 1, "high": 2}, "width": {"per_layer": [16, 32]}},
                                       train={"epochs": 1, "learning_rate": {"low": 1.0e-4, "high": 1.0e-2}},
                                       study={"enqueue": [{"model.depth": 2, "model.width": [16, 32],
                                                           "train.learning_rate": 0.005},
                                                          {"model.width.1": 32}]}))
    # Fixing a key drops it from every entry; an entry left empty is dropped; a changed bound drops the value.
    quick = space.with_overrides(["model.width=16", "train.learning_rate.high=0.001"])
    assert quick.enqueued() == [{"model.depth": 2}]
    with pytest.raises(SpaceError):  # the enqueued value no longer fits: without the override rule this is an error
        SearchSpace.from_dict({**base(model={"depth": {"low": 1, "high": 2}, "width": {"per_layer": [16, 32]}}),
                               "study": {"enqueue": [{"train.learning_rate": 0.005}]},
                               "train": {"epochs": 1, "learning_rate": {"low": 1.0e-4, "high": 1.0e-3}}})


def test_with_overrides_errors() -> None:
    space = SearchSpace.from_yaml(SPACES / "mnist_quick.yaml")
    with pytest.raises(SpaceError) as info:
        space.with_overrides(["train.epochs", "model.depth.low=5", "objective.metric.x=1"])
    paths = [e.path for e in info.value.errors]
    assert paths == ["--set", "objective.metric.x"]
    assert "expects key.path=value" in str(info.value) and "objective.metric is not a mapping" in str(info.value)
    with pytest.raises(SpaceError) as info:
        space.with_overrides(["model.depth.low=5"])  # applied, then the space is checked again
    assert info.value.path == "model.depth.low" and "must not exceed high" in str(info.value)
    assert info.value.source == space.source
    with pytest.raises(SpaceError, match="not valid YAML"):
        space.with_overrides(["model.width=[16, 32"])


# ----------------------------------------------------------------------------------------------- grid, describe


def test_grid_and_grid_sampler_cover_every_combination() -> None:
    space = SearchSpace.from_yaml(SPACES / "keras_mlps.yaml")
    grid = space.grid()
    assert grid == {"model.depth": [1, 5], "model.width": [50, 500], "model.dropout": [0.0, 0.2]}
    study, _ = run_study(space, 8, sampler=optuna.samplers.GridSampler(grid, seed=0))
    combos = {(t.params["model.depth"], t.params["model.width"], t.params["model.dropout"]) for t in study.trials}
    assert len(combos) == 8
    stepped = SearchSpace.from_dict(base(model={"dropout": {"low": 0.0, "high": 0.3, "step": 0.1},
                                                "depth": {"low": 2, "high": 6, "step": 2},
                                                "width": {"per_layer": [4, 8]}}))
    assert stepped.grid() == {"model.depth": [2, 4, 6], **{f"model.width.{i}": [4, 8] for i in range(1, 7)},
                              "model.dropout": [0.0, 0.1, 0.2, 0.3]}
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_yaml(SPACES / "mnist_quick.yaml").grid()
    assert info.value.path == "train.learning_rate" and "needs a step" in str(info.value)


def test_describe() -> None:
    text = SearchSpace.from_yaml(SPACES / "mnist_quick.yaml").describe()
    lines = text.splitlines()
    assert lines[0] == (f"space mnist_quick ({SPACES / 'mnist_quick.yaml'}): cnn, 8 parameters, "
                        "objective val_accuracy (maximize)")
    assert re.search(r"^  parameter +kind +values$", lines[1])
    assert re.search(r"^  model\.depth +int +1 … 3$", text, re.M)
    assert re.search(r"^  model\.width\.\{1\.\.3\} +categorical +16, 32, 64, 128 +\(per layer\)$", text, re.M)
    assert re.search(r"^  train\.learning_rate +float, log +0\.0001 … 0\.01$", text, re.M)
    assert re.search(r"^  model\.dropout +float, step 0\.1 +0 … 0\.6$", text, re.M)
    assert "model.family=cnn" in text and "model.activation=relu" in text and "train.optimizer=adam" in text
    assert lines[-1] == "  study: sampler tpe, pruner median, 30 trials, seed 0, 1 enqueued configuration"
    # the default pruner differs from `pruner: median` (written above) only in its options, which are shown
    assert SearchSpace.from_dict(mlp()).describe().splitlines()[-1].startswith(
        "  study: sampler tpe, pruner median (n_startup_trials 2), 20 trials")
    assert all(len(line) <= 110 for line in lines[1:])
    pytorch = SearchSpace.from_yaml(SPACES / "pytorch_cnn.yaml").describe()
    assert "model.kernel_size=[5, 5, 3] (per layer)" in pytorch and "4 parameters" in pytorch
    multi = SearchSpace.from_yaml(SPACES / "multi_objective.yaml").describe()
    assert "objectives val_accuracy (maximize), params (minimize)" in multi
    assert "pruner none" in multi and "seed random" in multi


# ----------------------------------------------------------------------------------------------- packaging, docs


def test_import_does_not_load_heavy_modules() -> None:
    code = ("import sys, tuning.space; from tuning.space import SearchSpace; "
            "SearchSpace.from_dict({'model': {'family': 'cnn'}, 'train': {'epochs': 1}}).describe(); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]"


def _doc_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)


def test_docs_yaml_examples_are_valid_spaces() -> None:
    blocks = [b for b in _doc_blocks() if re.search(r"^model:", b, re.M)]
    assert len(blocks) >= 6
    for block in blocks:
        SearchSpace.from_dict(yaml.safe_load(block))


def test_docs_cover_every_key() -> None:
    from tuning import schema as _schema

    text = DOCS.read_text(encoding="utf-8")
    tables = (_schema.DATA, _schema.TRAIN, _schema.AUGMENTATION, _schema.STUDY)
    for name in [k for table in tables for k in table] + list(_schema.STUDY_SPECIAL) + list(_schema.METRICS):
        assert f"| `{name}`" in text, name
    for value in _schema.ACTIVATIONS + _schema.OPTIMIZERS + _schema.SAMPLERS + _schema.PRUNERS + _schema.DATASETS:
        assert f"`{value}`" in text, value


def test_docs_show_each_familys_own_key_table() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in models.names():
        table = models.get(name).key_table()
        assert f"### `family: {name}`" in text and table in text, (
            f"docs/space.md is out of date for family {name}: paste tuning.models.get({name!r}).key_table()")


def test_docs_seed_configurations_match_the_models() -> None:
    spaces = {m[1]: SearchSpace.from_dict(yaml.safe_load(m[2])) for m in
              re.finditer(r"<!-- seed: (\w+) -->\n```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)}
    tf = spaces["tf_tutorial_cnn"].config_from_params({}).model
    assert (tf.depth, tf.width, tf.kernel_size, tf.dense_units, tf.dropout) == (2, (32, 64), (5, 5), 1024, (0.5,))
    mlps = spaces["keras_mlps"]
    widths = {(e["model.depth"], e["model.width"], e.get("model.dropout", 0.0)) for e in mlps.enqueued()}
    assert widths == {(1, 50, 0.0), (1, 500, 0.0), (5, 50, 0.0), (1, 500, 0.2), (5, 500, 0.0)}
    small = spaces["keras_small_cnn"].config_from_params({}).model
    assert (small.depth, small.width, small.kernel_size, small.pool_size, small.dense_units) == (
        1, (32,), (3,), 2, 100)
    torch = spaces["pytorch_cnn"].config_from_params({"train.epochs": 2, "train.optimizer": "sgd",
                                                      "train.learning_rate": 0.01, "train.momentum": 0.9}).model
    assert (torch.width, torch.kernel_size, torch.pool_size, torch.dense_units) == ((32, 32, 64), (5, 5, 3), 2, 64)


def test_round_trip_keeps_overridable_raw_copy_independent() -> None:
    d = base(model={"width": [16, 32]})
    original = copy.deepcopy(d)
    space = SearchSpace.from_dict(d)
    d["model"]["width"].append(64)
    assert d != original and space.to_dict()["model"]["width"] == [16, 32]
    assert space.with_overrides(["train.epochs=4"]).distributions()["model.width"].choices == (16, 32)


@pytest.mark.parametrize(("stop_after", "says"), [
    (0, "study.stop_after: must be an integer >= 1. Received: 0"),
    ({"trails": 5}, "study.stop_after.trails: unknown key in study.stop_after. Fix: did you mean `trials`?"),
    ({"share": 1.5}, "study.stop_after.share: must be a number in (0, 1]. Received: 1.5"),
    ({"seconds": -3}, "study.stop_after.seconds: must be a number > 0. Received: -3"),
])
def test_bad_stop_after_names_its_key(stop_after: object, says: str) -> None:
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_dict({"model": {"family": "mlp"}, "train": {"epochs": 1}, "study": {"stop_after": stop_after}})
    assert says in str(info.value)


def test_stop_after_is_a_number_of_trials_or_a_mapping_and_round_trips() -> None:
    base = {"model": {"family": "mlp"}, "train": {"epochs": 1}}
    assert SearchSpace.from_dict({**base, "study": {"stop_after": 7}}).study.stop_after == {"trials": 7}
    both = SearchSpace.from_dict({**base, "study": {"stop_after": {"trials": 20, "share": 0.25}}})
    assert both.study.stop_after == {"trials": 20, "share": 0.25}
    assert SearchSpace.from_dict(both.to_dict()) == both
    assert SearchSpace.from_dict(base).study.stop_after is None
