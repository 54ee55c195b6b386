"""Successive halving and Hyperband whose promotions continue from a checkpoint instead of retraining.

A trial that does not rank in the top 1/η of its rung is paused (pruned, its weights and optimizer state kept); a
later trial continues it once it does. Real training on a few hundred MNIST images, through ``tuning.run`` and
``tuning run`` (also with ``--workers 2`` and after a SIGKILL), a real SQLite storage and MLflow store.
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
from conftest import subprocess_env, tiny_space
from optuna.trial import TrialState

import tuning
from tuning import records
from tuning.config import ModelConfig, TrainConfig, TrialConfig
from tuning.training import Checkpoint, train

pytestmark = pytest.mark.slow


def _space(name: str, n_trials: int, **study: object) -> dict:
    """Learning rates from hopeless to good, 9 epochs, successive halving with η 3: rungs at epochs 1 and 3."""
    return tiny_space(
        data={"dataset": "mnist", "train_size": 600, "validation_split": 0.25, "test_size": 200},
        train={"epochs": 9, "batch_size": 64, "learning_rate": {"low": 1e-5, "high": 1e-1, "log": True}},
        study={"name": name, "n_trials": n_trials, "seed": 0,
               "pruner": {"type": "successive_halving", "reduction_factor": 3}, **study},
    )


def _continuations(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if records.CONTINUES in t.user_attrs]


def _assert_continued_from_its_checkpoint(study: optuna.Study) -> None:
    """Every continuation starts after the epoch its paused trial stopped at, with the same parameters, and carries
    the whole curve; no paused trial is continued twice."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    continuations = _continuations(list(trials.values()))
    assert continuations, "no paused trial was promoted: the checks below would pass on nothing"
    parents = [t.user_attrs[records.CONTINUES] for t in continuations if records.RETRY_OF not in t.user_attrs]
    assert len(parents) == len(set(parents))
    for t in continuations:
        parent = trials[t.user_attrs[records.CONTINUES]]
        paused = parent.user_attrs[records.PAUSED_AT]
        assert parent.state == TrialState.PRUNED
        assert parent.user_attrs[records.REASON].startswith(f"paused at epoch {paused}")
        assert t.params == parent.params
        if t.state == TrialState.COMPLETE:
            assert min(t.intermediate_values) == paused + 1 and max(t.intermediate_values) == 9  # no epoch retrained
            assert t.user_attrs[records.EPOCHS] == 9 - paused
            history = t.user_attrs[records.HISTORY]["val_accuracy"]
            assert len(history) == 9 and history[:paused] == parent.user_attrs[records.HISTORY]["val_accuracy"]


def test_paused_trials_are_continued_from_their_checkpoint_and_tracked_one_run_each(workdir: Path) -> None:
    from mlflow import MlflowClient

    study = tuning.run(_space("promoted", 14), verbose=False)

    trials = study.get_trials()
    paused = [t for t in trials if records.PAUSED_AT in t.user_attrs]
    assert paused and all(t.user_attrs[records.PAUSED_AT] in (1, 3) for t in paused)  # only at rungs
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 14
    _assert_continued_from_its_checkpoint(study)
    assert not (workdir / "mlruns" / "checkpoints" / "promoted").exists()  # cleaned once the total is reached

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("promoted")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("tuning.role") == "trial"]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == [t.number for t in trials]


def test_training_continued_from_a_checkpoint_goes_on_where_it_stopped(workdir: Path, mnist_dir: str | None) -> None:
    """The optimizer's state comes back with the weights: the cosine schedule's rate after epoch 2 of a run
    paused after epoch 1 is the uninterrupted run's, not the schedule's start again."""
    from tuning import data

    dataset = data.load("mnist", data_dir=mnist_dir, train_size=400, test_size=0)
    config = TrialConfig(ModelConfig("mlp", 1, (16,)), TrainConfig(epochs=3, learning_rate=0.01, precision="float32"))
    whole = train(config, dataset, seed=0).history["learning_rate"]
    checkpoint = workdir / "first.weights.h5"
    first = train(config, dataset, seed=0, stop_at=1, save_to=checkpoint)
    rest = train(config, dataset, seed=0, start=Checkpoint(checkpoint, 1, first.history))
    assert rest.epochs == 2 and len(rest.history["learning_rate"]) == 3
    assert rest.history["learning_rate"] == pytest.approx(whole, rel=1e-6)
    assert rest.history["learning_rate"][1] < rest.history["learning_rate"][0]  # decayed, not restarted


def test_promotion_stop_keeps_optuna_s_own_pruner(workdir: Path) -> None:
    space = _space("in_place", 6)
    space["study"]["pruner"]["promotion"] = "stop"
    study = tuning.run(space, tracking=False, verbose=False)
    trials = study.get_trials()
    assert not _continuations(trials) and not [t for t in trials if records.PAUSED_AT in t.user_attrs]
    assert "pruned by the successive_halving pruner" in " ".join(t.user_attrs.get(records.REASON, "") for t in trials)


def _running_continuation(db: Path) -> tuple[int, int] | None:
    """``(number, pid)`` of a RUNNING continuation that has trained an epoch, read with sqlite3."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            rows = conn.execute(
                "SELECT t.number, w.value_json FROM trials t "
                "JOIN trial_user_attributes c ON c.trial_id = t.trial_id AND c.key = 'continues' "
                "JOIN trial_user_attributes w ON w.trial_id = t.trial_id AND w.key = 'worker' "
                "JOIN trial_intermediate_values v ON v.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING' GROUP BY t.number").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return None
    return (rows[0][0], int(rows[0][1].strip('"').rpartition(":")[2])) if rows else None


def test_a_continuation_killed_with_its_process_resumes_from_the_same_checkpoint(
    workdir: Path, mnist_dir: str | None
) -> None:
    path = workdir / "space.yaml"
    path.write_text(yaml.safe_dump(_space("killed", 14), sort_keys=False))
    command = [sys.executable, "-m", "tuning", "run", str(path), "--no-tracking"]
    proc = subprocess.Popen(command, cwd=workdir, env=subprocess_env(mnist_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    db = workdir / "mlruns" / "optuna.db"
    victim = None
    while proc.poll() is None and victim is None:
        victim = _running_continuation(db)
        time.sleep(0.05)
    assert victim is not None and victim[1] == proc.pid, proc.communicate()
    proc.send_signal(signal.SIGKILL)  # in the middle of a continuation
    proc.communicate(timeout=60)
    assert (workdir / "mlruns" / "checkpoints" / "killed").is_dir()  # the paused trials' checkpoints survive

    resumed = subprocess.run(command, cwd=workdir, env=subprocess_env(mnist_dir), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{db}")
    trials = {t.number: t for t in study.get_trials()}
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = trials[victim[0]]
    assert killed.state == TrialState.FAIL
    (retry,) = [t for t in trials.values() if t.user_attrs.get(records.RETRY_OF) == killed.number]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.user_attrs[records.CONTINUES] == killed.user_attrs[records.CONTINUES]  # the same checkpoint
    paused = trials[killed.user_attrs[records.CONTINUES]].user_attrs[records.PAUSED_AT]
    assert min(retry.intermediate_values) == paused + 1  # continued, not retrained
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials.values()) == 14
    _assert_continued_from_its_checkpoint(study)
    assert not (workdir / "mlruns" / "checkpoints" / "killed").exists()


def test_workers_promote_each_paused_trial_once(workdir: Path, mnist_dir: str | None) -> None:
    path = workdir / "space.yaml"
    path.write_text(yaml.safe_dump(_space("workers", 16), sort_keys=False))
    done = subprocess.run([sys.executable, "-m", "tuning", "run", str(path), "--no-tracking", "--workers", "2"],
                          cwd=workdir, env=subprocess_env(mnist_dir), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="workers", storage=f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}")
    trials = study.get_trials()
    assert len({t.user_attrs[records.WORKER] for t in trials}) == 2  # both workers ran trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 16  # the exact total
    _assert_continued_from_its_checkpoint(study)
    assert not (workdir / "mlruns" / "checkpoints" / "workers").exists()
