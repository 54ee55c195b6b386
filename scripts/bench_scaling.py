#!/usr/bin/env python
"""Counted trials per minute with 1, 2 and 4 worker processes (`tuning run --workers N`), as ratios against one.

Each round runs the same small-model study (a tiny MLP on 300 MNIST images, one epoch: latency-bound, so it
shows whether the plumbing scales rather than how fast the cores multiply matrices) once per worker count,
interleaved, each in a fresh storage. Two rates per run:

- steady: counted trials / (last trial's end - first trial's start), read from the storage: the workers' rate
  once they run;
- wall: counted trials / the command's whole run, start-up of every worker process (TensorFlow import) included.

Then the database's share of a trial: the Optuna storage calls one trial makes (ask, the parameters, the user
attributes, two reported epochs, tell), replayed against the same kind of storage, over the mean trial's duration.

Usage:
    TUNING_DATA_DIR=../shared/datasets .venv/bin/python scripts/bench_scaling.py [--rounds 1] [--trials 8]
        [--workers 1,2,4] [--storage postgresql+psycopg2://user:pw@host/db]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPACE = {
    "data": {"dataset": "mnist", "train_size": 300, "validation_split": 0.2, "test_size": 200},
    "model": {"family": "mlp", "depth": {"low": 1, "high": 2}, "width": {"per_layer": [16, 32]},
              "dropout": {"low": 0.0, "high": 0.2, "step": 0.1}},
    "train": {"epochs": 1, "batch_size": 64, "learning_rate": 0.003, "chance_epochs": 0},
    "objective": {"metric": "val_accuracy"},
    "study": {"name": "bench", "n_trials": 8, "seed": 0, "pruner": "none"},
}  # fmt: skip


def run_once(workers: int, trials: int, storage: str | None, folder: Path) -> dict[str, float]:
    """One study with ``workers`` processes; its rates and its trials' mean duration."""
    import optuna

    name = f"bench_{workers}w_{uuid.uuid4().hex[:8]}"
    space = folder / f"{name}.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "study": {**SPACE["study"], "name": name}}))
    url = storage or f"sqlite:///{folder / (name + '.db')}"
    command = [sys.executable, "-m", "tuning", "run", str(space), "--n-trials", str(trials), "--no-tracking",
               "--storage", url, "--quiet", *(["--workers", str(workers)] if workers > 1 else [])]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"tuning run --workers {workers} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    counted = [
        t for t in optuna.load_study(study_name=name, storage=url).get_trials()
        if t.state.name in ("COMPLETE", "PRUNED")
    ]  # fmt: skip
    span = (max(t.datetime_complete for t in counted) - min(t.datetime_start for t in counted)).total_seconds()
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in counted]
    return {
        "steady": 60 * len(counted) / span,
        "wall": 60 * len(counted) / wall,
        "trial_s": statistics.mean(durations),
        "counted": len(counted),
    }


def storage_seconds_per_trial(storage: str | None, folder: Path, repeats: int = 20) -> float:
    """Seconds of Optuna storage calls one trial makes, replayed (no training) and averaged."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")  # ask() outside optimize
    url = storage or f"sqlite:///{folder / 'storage_calls.db'}"
    from tuning import study as studies

    study = optuna.create_study(study_name=f"calls_{uuid.uuid4().hex[:8]}", storage=studies.open_storage(url))
    start = time.perf_counter()
    for _ in range(repeats):
        trial = study.ask()
        trial.suggest_int("model.depth", 1, 2)
        trial.suggest_categorical("model.width.1", [16, 32])
        trial.suggest_float("model.dropout", 0.0, 0.2, step=0.1)
        for key in ("sampler_seed", "seed", "worker", "mlflow_run_id", "epochs", "train_seconds", "param_count",
                    "history", "test_accuracy"):
            trial.set_user_attr(key, 1)
        for epoch in range(2):
            trial.report(0.5, epoch)
        study.tell(trial, 0.5)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--trials", type=int, default=8, help="counted trials per study")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--storage", help="an Optuna RDB URL shared by the runs (default: a SQLite file per run)")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    results: dict[int, list[dict[str, float]]] = {w: [] for w in counts}
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        folder = Path(tmp)
        for round_ in range(args.rounds):
            for workers in counts:  # interleaved: the machine's load drifts alike for every count
                result = run_once(workers, args.trials, args.storage, folder)
                results[workers].append(result)
                print(f"round {round_ + 1} workers {workers}: {result['counted']} trials, "
                      f"{result['steady']:.1f}/min steady, {result['wall']:.1f}/min wall, "
                      f"{result['trial_s']:.2f} s per trial", flush=True)  # fmt: skip
        db = storage_seconds_per_trial(args.storage, folder)
    base = {k: statistics.median(r[k] for r in results[counts[0]]) for k in ("steady", "wall")}
    print(f"\ncores: {os.cpu_count()}, trials per study: {args.trials}, rounds: {args.rounds}, "
          f"storage: {'given URL' if args.storage else 'SQLite file'}")  # fmt: skip
    print(f"{'workers':>8} {'steady/min':>11} {'ratio':>6} {'wall/min':>9} {'ratio':>6} {'s/trial':>8} {'db share':>9}")
    for workers in counts:
        steady = statistics.median(r["steady"] for r in results[workers])
        wall = statistics.median(r["wall"] for r in results[workers])
        trial_s = statistics.median(r["trial_s"] for r in results[workers])
        print(f"{workers:>8} {steady:>11.1f} {steady / base['steady']:>6.2f} {wall:>9.1f} "
              f"{wall / base['wall']:>6.2f} {trial_s:>8.2f} {db / trial_s:>8.1%}")  # fmt: skip
    print(f"storage calls of one trial: {db * 1000:.0f} ms")


if __name__ == "__main__":
    main()
