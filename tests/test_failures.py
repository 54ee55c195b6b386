"""Failing trials stay isolated: an unbuildable configuration, a NaN loss, a training error, memory that runs out.

Each trial that fails is recorded as failed with its reason and the study goes on to its ``n_trials``; only
``study.max_consecutive_failures`` failures in a row stop it, with a message pointing at the likely mistake.
Real Keras training on a few hundred MNIST images, real SQLite storages.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from conftest import subprocess_env, tiny_space
from optuna.trial import TrialState

import tuning
from tuning import records
from tuning.errors import TooManyFailuresError

pytestmark = pytest.mark.slow

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def _cnn_space(depth: Any, **study: Any) -> dict:
    """A tiny cnn (4 filters, 1 epoch, 300 images); pool size 2 on 28×28 allows 4 blocks at most."""
    return tiny_space(
        model={"family": "cnn", "depth": depth, "width": {"per_layer": [4]}, "kernel_size": 3,
               "dense_units": 16, "dropout": 0.0, "pool_size": 2},
        train={"epochs": 1, "batch_size": 64, "learning_rate": 0.003, "chance_epochs": 0},
        study={"name": "deep_cnn", "sampler": {"type": "random"}, "pruner": "none", "seed": 0, **study},
    )


def test_unbuildable_configurations_fail_with_their_reason_and_the_study_finishes(workdir: Path) -> None:
    space = _cnn_space(
        {"low": 1, "high": 6},
        n_trials=4,
        max_consecutive_failures=10,
        enqueue=[{"model.depth": 6}, {"model.depth": 1}, {"model.depth": 5}],
    )

    study = tuning.run(space, tracking=False)

    trials = study.get_trials()
    assert sum(t.state in COUNTED for t in trials) == 4
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert {t.params["model.depth"] for t in failed} >= {5, 6}
    for trial in trials:
        depth = trial.params["model.depth"]
        assert (trial.state == TrialState.FAIL) == (depth >= 5), (depth, trial.state)
    for trial in failed:
        reason = trial.user_attrs[records.REASON]
        assert reason.startswith("cannot build this configuration: too many pooling blocks for 28×28 inputs")
        assert f"depth {trial.params['model.depth']}" in reason
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_a_nan_loss_fails_that_trial_only(workdir: Path) -> None:
    space = tiny_space(
        train={"epochs": 2, "batch_size": 32, "optimizer": "sgd", "learning_rate": [0.01, 1.0e10], "chance_epochs": 0},
        study={"name": "nan", "n_trials": 2, "pruner": "none", "max_consecutive_failures": 5,
               "enqueue": [{"train.learning_rate": 1.0e10}, {"train.learning_rate": 0.01}]},
    )

    study = tuning.run(space, tracking=False)

    first, second, *rest = study.get_trials()
    assert first.state == TrialState.FAIL
    assert "nan" in first.user_attrs[records.REASON].lower() or "inf" in first.user_attrs[records.REASON].lower()
    assert second.state == TrialState.COMPLETE
    assert sum(t.state in COUNTED for t in study.get_trials()) == 2


def _builder(config: Any) -> Any:
    """A user's own builder: width 16 runs out of memory, width 32 gives a head with too few classes."""
    import keras

    width = config.params["model.width.1"]
    if width == 16:
        np.empty(2**40, dtype="float64")  # 8 TiB: a real allocation that fails with MemoryError
    classes = 3 if width == 32 else 10  # labels go up to 9: training itself raises
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(classes,
                              activation="softmax")])
    return model


def test_errors_while_building_or_training_fail_that_trial_with_its_reason(workdir: Path) -> None:
    space = tiny_space(
        model={"family": "mlp", "depth": 1, "width": {"per_layer": [16, 32, 64]}},
        train={"epochs": 1, "batch_size": 64, "learning_rate": 0.003, "chance_epochs": 0},
        study={"name": "errors", "n_trials": 1, "pruner": "none", "sampler": {"type": "random"},
               "enqueue": [{"model.width": [16]}, {"model.width": [32]}, {"model.width": [64]}]},
    )

    study = tuning.run(space, tracking=False, build_fn=_builder)

    by_width = {t.params["model.width.1"]: t for t in study.get_trials()}
    oom = by_width[16].user_attrs[records.REASON]
    assert by_width[16].state == TrialState.FAIL and oom.startswith("out of memory: ")
    assert "batch_size" in oom  # the hint
    bad_labels = by_width[32].user_attrs[records.REASON]
    assert by_width[32].state == TrialState.FAIL
    assert bad_labels.startswith("InvalidArgumentError") and "label" in bad_labels.lower()
    assert by_width[64].state == TrialState.COMPLETE


def test_many_failures_in_a_row_stop_the_study_with_a_hint(workdir: Path) -> None:
    space = _cnn_space(6, n_trials=10, max_consecutive_failures=3)

    with pytest.raises(TooManyFailuresError) as info:
        tuning.run(space, tracking=False)

    message = str(info.value)
    assert message.startswith("3 trials failed in a row, so the study stopped")
    assert "trial 0: cannot build this configuration: too many pooling blocks" in message
    assert "too many pooling blocks for the input size" in message  # where to look
    assert "study.max_consecutive_failures" in message  # how to tolerate more
    storage = optuna.storages.RDBStorage("sqlite:///mlruns/optuna.db")
    trials = optuna.load_study(study_name="deep_cnn", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 3


def test_the_command_exits_1_after_the_default_five_failures_in_a_row(workdir: Path) -> None:
    space = _cnn_space(6, n_trials=10)
    (workdir / "deep.yaml").write_text(yaml.safe_dump(space))
    env = subprocess_env()

    proc = subprocess.run([sys.executable, "-m", "tuning", "run", "deep.yaml", "--no-tracking"], cwd=workdir,
                          env=env, capture_output=True, text=True)

    assert proc.returncode == 1, proc.stderr
    assert "5 trials failed in a row" in proc.stderr
    assert "Raise study.max_consecutive_failures" in proc.stderr
    assert "Traceback" not in proc.stderr
