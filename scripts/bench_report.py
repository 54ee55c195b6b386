"""How long the report takes on a 1,000-trial study, against loading that study's trials from SQLite.

Creates a temporary SQLite storage with one study of N trials (default 1,000) written like the runner
writes them (parameters by key path, per-epoch history, epochs, train_seconds, param_count, test_accuracy,
reason, mlflow_run_id; 70 % complete, 25 % pruned, 5 % failed), then times each table, the plots and the
whole HTML report. The baseline is ``optuna.load_study`` + ``study.get_trials()`` on the same storage,
measured in the same run; every figure is printed with its ratio to it.

Usage: python scripts/bench_report.py [--trials 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tuning import records
from tuning.report import (
    build_report,
    compare_studies,
    leaderboard,
    load_studies,
    outcomes,
    param_importance,
    parameter_effects,
    to_html,
)

EPOCHS = 10


def make_study(url: str, name: str, n_trials: int, seed: int = 0) -> None:
    """Write ``n_trials`` realistic finished trials into a new study with ``study.add_trials``."""
    rng = random.Random(seed)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr(records.OBJECTIVES, ["val_accuracy"])
    clock = dt.datetime(2026, 11, 1, 9, 0, 0)
    trials = []
    for number in range(n_trials):
        depth = rng.randint(1, 3)
        params: dict[str, Any] = {"model.depth": depth}
        dists: dict[str, Any] = {"model.depth": IntDistribution(1, 3)}
        for layer in range(1, depth + 1):
            params[f"model.width.{layer}"] = rng.choice([16, 32, 64, 128])
            dists[f"model.width.{layer}"] = CategoricalDistribution([16, 32, 64, 128])
        params["model.dropout"] = round(rng.uniform(0, 0.6), 1)
        dists["model.dropout"] = FloatDistribution(0.0, 0.6, step=0.1)
        params["train.learning_rate"] = math.exp(rng.uniform(math.log(1e-4), math.log(1e-2)))
        dists["train.learning_rate"] = FloatDistribution(1e-4, 1e-2, log=True)
        params["train.batch_size"] = rng.choice([32, 50, 128])
        dists["train.batch_size"] = CategoricalDistribution([32, 50, 128])
        roll = rng.random()
        state = TrialState.COMPLETE if roll < 0.7 else TrialState.PRUNED if roll < 0.95 else TrialState.FAIL
        epochs = EPOCHS if state == TrialState.COMPLETE else rng.randint(1, EPOCHS - 1)
        ceiling = 0.99 - 0.02 * abs(math.log10(params["train.learning_rate"]) + 3) - 0.03 * params["model.dropout"]
        curve = [ceiling * (1 - 0.6 ** (e + 1)) + rng.gauss(0, 0.002) for e in range(epochs)]
        attrs: dict[str, Any] = {
            records.EPOCHS: epochs,
            records.TRAIN_SECONDS: 3.1 * epochs,
            records.PARAM_COUNT: 784 * params["model.width.1"] + 10_000 * depth,
            records.HISTORY: {"loss": [1 - a for a in curve], "val_accuracy": curve, "accuracy": curve},
            records.MLFLOW_RUN_ID: f"{number:032x}",
            records.SEED: number,
        }
        if state == TrialState.COMPLETE:
            attrs[records.TEST_ACCURACY] = curve[-1] - 0.003
        elif state == TrialState.PRUNED:
            attrs[records.REASON] = f"pruned at epoch {epochs}: val_accuracy {curve[-1]:.4f} below the median"
        else:
            attrs[records.REASON] = "loss became NaN at epoch 1"
        start = clock
        clock += dt.timedelta(seconds=3.1 * epochs + 0.5)
        trials.append(
            create_trial(
                state=state,
                value=curve[-1] if state == TrialState.COMPLETE else None,
                params=params,
                distributions=dists,
                user_attrs=attrs,
                intermediate_values=dict(enumerate(curve, start=1)),
            )
        )
        trials[-1].datetime_start, trials[-1].datetime_complete = start, clock
    study.add_trials(trials)


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of ``repeat`` calls."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    """Build the study, time everything, print seconds and ratios to the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        start = time.perf_counter()
        make_study(url, "bench", args.trials)
        print(f"wrote {args.trials} trials in {time.perf_counter() - start:.2f} s ({url})")

        baseline = timed(lambda: optuna.load_study(study_name="bench", storage=url).get_trials(), args.repeat)
        (view,) = load_studies(["bench"], url)
        figures: dict[str, float] = {
            "load_studies (open storage, load, checks)": timed(lambda: load_studies(["bench"], url), args.repeat),
            "leaderboard (top 10)": timed(lambda: leaderboard(view, top=10), args.repeat),
            "parameter_effects": timed(lambda: parameter_effects(view), args.repeat),
            "param_importance (fANOVA, 16 trees)": timed(lambda: param_importance(view), args.repeat),
            "param_importance (fANOVA, Optuna's 64 trees)": timed(
                lambda: param_importance(view, optuna.importance.FanovaImportanceEvaluator(seed=0)), 1
            ),
            "param_importance (PED-ANOVA)": timed(
                lambda: param_importance(view, optuna.importance.PedAnovaImportanceEvaluator()), args.repeat
            ),
            "compare_studies (with target)": timed(lambda: compare_studies([view], target=0.97), args.repeat),
            "outcomes": timed(lambda: outcomes(view), args.repeat),
        }
        report = build_report(["bench"], url, target=0.97)
        figures["all plots (draw, no PNG)"] = timed(report.figures, args.repeat)
        figures["whole HTML report (load + tables + PNGs)"] = timed(
            lambda: to_html(build_report(["bench"], url, target=0.97)), args.repeat
        )
        print(f"baseline: optuna.load_study + get_trials = {baseline:.3f} s (median of {args.repeat})")
        print(f"{'step':<45} {'seconds':>8} {'x baseline':>11}")
        for step, seconds in figures.items():
            print(f"{step:<45} {seconds:8.3f} {seconds / baseline:11.1f}")


if __name__ == "__main__":
    main()
