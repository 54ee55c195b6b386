"""Memory over a long study: 100 small trials in one process, resident memory after trials 10, 50 and 100.

Goal (issue 5): growth from trial 10 to trial 100 under 100 MB. The first run has tracking off; a second run
with MLflow tracking on (into a throwaway SQLite store) follows (skip it with --no-tracked-run). Resident memory
is read from /proc/self/status (VmRSS), so this runs on Linux.

Usage:
    TUNING_DATA_DIR=../shared/datasets .venv/bin/python scripts/bench_memory.py [--trials 100]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tuning  # noqa: E402
from tuning.observers import StudyObserver, TrialOutcome  # noqa: E402

GOAL_MB = 100.0


def rss_mb() -> float:
    """Resident memory of this process in MB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class MemoryProbe(StudyObserver):
    """Records resident memory when the trials numbered in ``at`` (1-based count of finished trials) end."""

    def __init__(self, at: tuple[int, ...]) -> None:
        self.at = at
        self.finished = 0
        self.rss: dict[int, float] = {}

    def trial_finished(self, trial: Any, outcome: TrialOutcome) -> None:
        self.finished += 1
        if self.finished in self.at:
            self.rss[self.finished] = rss_mb()
            print(f"  after trial {self.finished:>3}: {self.rss[self.finished]:8.1f} MB", flush=True)


def space(name: str, n_trials: int) -> dict:
    """An MLP on 500 MNIST images, 1 epoch: about a second per trial once TensorFlow runs."""
    return {
        "data": {"dataset": "mnist", "train_size": 500, "validation_split": 0.2, "test_size": 200},
        "model": {"family": "mlp", "depth": {"low": 1, "high": 3}, "width": {"per_layer": [16, 32, 64]},
                  "dropout": {"low": 0.0, "high": 0.3, "step": 0.1}},
        "train": {"epochs": 1, "batch_size": [32, 64], "learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
                  "chance_epochs": 0},
        "objective": {"metric": "val_accuracy"},
        "study": {"name": name, "n_trials": n_trials, "seed": 0, "pruner": "none", "sampler": "random"},
    }


def measure(folder: Path, n_trials: int, tracking: bool) -> float | None:
    checkpoints = tuple(sorted({min(10, n_trials), min(50, n_trials), n_trials}))
    probe = MemoryProbe(checkpoints)
    label = "tracking on (MLflow, SQLite)" if tracking else "tracking off"
    print(f"{n_trials} trials, {label}: start {rss_mb():.1f} MB", flush=True)
    tuning.run(
        space(f"memory_{'tracked' if tracking else 'plain'}", n_trials),
        storage=f"sqlite:///{folder / 'optuna.db'}",
        tracking=tracking,
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        observers=[probe],
    )
    first, last = checkpoints[0], checkpoints[-1]
    if first not in probe.rss or last not in probe.rss:
        print("  (the study did not reach the checkpoints)")
        return None
    growth = probe.rss[last] - probe.rss[first]
    print(f"  growth trial {first} -> {last}: {growth:+.1f} MB = {growth / GOAL_MB:.2f} x the {GOAL_MB:.0f} MB goal "
          f"({'met' if growth < GOAL_MB else 'NOT met'})", flush=True)
    return growth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--no-tracked-run", action="store_true", help="skip the run with MLflow tracking on")
    args = parser.parse_args()
    logging.getLogger("tuning").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        results = {"off": measure(Path(tmp), args.trials, tracking=False)}
        if not args.no_tracked_run:
            results["on"] = measure(Path(tmp), args.trials, tracking=True)
    failed = [k for k, v in results.items() if v is not None and v >= GOAL_MB]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
