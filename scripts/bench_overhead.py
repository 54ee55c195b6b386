"""What the toolkit costs on top of plain Keras: the same fixed configurations, bare and through ``tuning.run``.

N fixed MLPs (2 hidden layers, widths spread over 64..512, default 8) are trained on the same MNIST arrays
(default 10,000 training images) by

- a bare Keras loop: build a Sequential model, compile, fit with validation data, evaluate on the test set,
  ``keras.backend.clear_session()`` between models (what a careful hand-written script does);
- the toolkit: ``tuning.run`` on a space whose study enqueues exactly those N configurations, ``n_trials=N``,
  a fresh Optuna SQLite storage in a temporary folder, MLflow tracking ON into a temporary SQLite tracking
  database (created once during the warm-up, as a project's ``mlruns/mlflow.db`` is), and again with
  tracking OFF.

Everything runs in one process; TensorFlow, Optuna and MLflow are warmed up before any timing; rounds
alternate and swap their order (bare first in even rounds, last in odd ones) so that a drift in machine
speed hits both sides. Prints each round's seconds and the ratios toolkit / bare (goal: at most 1.03).

Usage: python scripts/bench_overhead.py [--n 8] [--rounds 3] [--epochs 1] [--data-dir DIR] [--no-tracking]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuning import data as data_module  # noqa: E402
from tuning._keras import import_keras  # noqa: E402

BATCH_SIZE = 128
LEARNING_RATE = 1e-3
SEED = 0
#: Seconds of each ``tuning.run`` call spent outside its trials (storage, study, enqueue, MLflow parent run).
SETUP: dict[str, list[float]] = {}


def widths(n: int) -> list[int]:
    """``n`` distinct widths spread evenly over 64..512."""
    if n == 1:
        return [256]
    return sorted({round(64 + i * (512 - 64) / (n - 1)) for i in range(n)})


def bare_keras(ds: data_module.Dataset, sizes: list[int], epochs: int, freeze: bool) -> tuple[float, float]:
    """Train every configuration with plain Keras; return the seconds it took, and those inside ``fit``.

    With ``freeze``, the objects alive before the loop are frozen out of the garbage collector as
    ``tuning.run`` does (``gc.freeze()``), so the ratio measures the toolkit's plumbing alone; without it, the
    bare loop also pays full collections over everything this process has loaded (MLflow, Optuna, pandas).
    """
    keras = import_keras()
    if freeze:
        gc.collect()
        gc.freeze()
    start = time.perf_counter()
    try:
        return _bare_loop(keras, ds, sizes, epochs, start)
    finally:
        if freeze:
            gc.unfreeze()


def _bare_loop(keras: Any, ds: data_module.Dataset, sizes: list[int], epochs: int, start: float) -> tuple[float, float]:
    fitting = 0.0
    for width in sizes:
        keras.backend.clear_session()
        keras.utils.set_random_seed(SEED)
        model = keras.Sequential([
            keras.Input(ds.input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(ds.num_classes, activation="softmax"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        fit_start = time.perf_counter()
        model.fit(ds.x_train, ds.y_train, batch_size=BATCH_SIZE, epochs=epochs,
                  validation_data=(ds.x_val, ds.y_val), verbose=0)
        fitting += time.perf_counter() - fit_start
        model.evaluate(ds.x_test, ds.y_test, batch_size=256, verbose=0)
    return time.perf_counter() - start, fitting


def space(sizes: list[int], epochs: int, name: str) -> dict[str, Any]:
    """The space whose study trains exactly ``sizes``, in order (random sampler, no pruner, no watchdog)."""
    return {
        "data": {"dataset": "mnist"},
        "model": {"family": "mlp", "depth": 2, "width": sizes, "dropout": 0.0, "activation": "relu"},
        "train": {"epochs": epochs, "batch_size": BATCH_SIZE, "optimizer": "adam", "learning_rate": LEARNING_RATE,
                  "chance_epochs": 0},
        "objective": "val_accuracy",
        "study": {"name": name, "sampler": "random", "pruner": "none", "n_trials": len(sizes), "seed": SEED,
                  "enqueue": [{"model.width": w} for w in sizes]},
    }


def toolkit(
    ds: data_module.Dataset, sizes: list[int], epochs: int, tracking_uri: str | None, tag: str
) -> tuple[float, float]:
    """Train every configuration through ``tuning.run``; return the seconds, and those inside ``fit``.

    Each call uses a fresh Optuna SQLite storage; "inside fit" is the sum of the trials' ``train_seconds``.
    """
    import tuning
    from tuning import records

    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as folder:
        storage = f"sqlite:///{Path(folder) / 'optuna.db'}"
        start = time.perf_counter()
        study = tuning.run(space(sizes, epochs, tag), data=ds, storage=storage, tracking=tracking_uri is not None,
                           tracking_uri=tracking_uri)
        seconds = time.perf_counter() - start
        trained = sorted(t.params["model.width"] for t in study.trials if t.state.name == "COMPLETE")
        if trained != sorted(sizes):
            raise RuntimeError(f"the toolkit trained {trained}, expected {sorted(sizes)}")
        fitting = sum(t.user_attrs[records.TRAIN_SECONDS] for t in study.trials)
        in_trials = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials)
        SETUP.setdefault(tag.rsplit("_", 1)[0], []).append(seconds - in_trials)
    return seconds, fitting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="configurations per round (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per configuration (default 1)")
    parser.add_argument("--train-size", type=int, default=11_112, help="images before the 10%% validation split")
    parser.add_argument("--data-dir", help="folder holding mnist.npz (default: $TUNING_DATA_DIR, else Keras)")
    parser.add_argument("--no-tracking", action="store_true", help="only the tracking-off figure (no MLflow)")
    parser.add_argument(
        "--bare-without-freeze", action="store_true",
        help="let the bare loop's garbage collector walk every loaded object, as a script in this process would "
             "(by default it freezes them like tuning.run, so the ratio is the toolkit's plumbing alone)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line per round
    if args.data_dir is None and (ROOT.parent / "shared" / "datasets" / "mnist.npz").is_file():
        args.data_dir = os.environ.get("TUNING_DATA_DIR") or str(ROOT.parent / "shared" / "datasets")
    ds = data_module.load("mnist", path=args.data_dir, train_size=args.train_size, validation_split=0.1)
    sizes = widths(args.n)
    tracking = not args.no_tracking
    if tracking:
        try:
            import tuning.tracking  # noqa: F401
        except ImportError:
            print("tuning.tracking is not available: measuring with tracking off only (--no-tracking).")
            tracking = False

    with tempfile.TemporaryDirectory(prefix="bench_overhead_mlflow_") as mlflow_dir:
        tracking_uri = f"sqlite:///{Path(mlflow_dir) / 'mlflow.db'}" if tracking else None
        print(f"{len(sizes)} MLPs 784-w-w-10, w in {sizes}; {args.epochs} epochs, batch {BATCH_SIZE}, "
              f"{len(ds.x_train)} training / {len(ds.x_val)} validation / {len(ds.x_test)} test images")
        # Warm-up: TensorFlow's first graph, Optuna's and MLflow's imports and database schemas.
        bare_keras(ds, sizes[:1], 1, freeze=True)
        toolkit(ds, sizes[:1], 1, tracking_uri, "warmup_on")
        if tracking:
            toolkit(ds, sizes[:1], 1, None, "warmup_off")

        runs: dict[str, Callable[[int], tuple[float, float]]] = {
            "bare": lambda r: bare_keras(ds, sizes, args.epochs, freeze=not args.bare_without_freeze)
        }
        if tracking:
            runs["tracking on"] = lambda r: toolkit(ds, sizes, args.epochs, tracking_uri, f"bench_on_{r}")
        runs["tracking off"] = lambda r: toolkit(ds, sizes, args.epochs, None, f"bench_off_{r}")
        times: dict[str, list[float]] = {k: [] for k in runs}
        outside: dict[str, list[float]] = {k: [] for k in runs}  # seconds outside model.fit
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                total, fitting = runs[name](r)
                times[name].append(total)
                outside[name].append(total - fitting)
            row = "  ".join(f"{k} {times[k][-1]:6.2f} s ({outside[k][-1]:5.2f} outside fit)" for k in runs)
            ratios = "  ".join(f"{k}/bare {times[k][-1] / times['bare'][-1]:.3f}" for k in runs if k != "bare")
            print(f"round {r + 1} ({' → '.join(order)}): {row}   {ratios}")

    bare = times["bare"]
    print(f"\nper model, bare Keras: {statistics.median(bare) / len(sizes):.2f} s (median round / {len(sizes)})")
    for name in runs:
        if name == "bare":
            continue
        per_round = [t / b for t, b in zip(times[name], bare, strict=True)]
        total = sum(times[name]) / sum(bare)
        verdict = "ok" if total <= 1.03 else "above the 1.03 goal"
        print(f"toolkit ({name}) / bare: total {total:.3f}, median round {statistics.median(per_round):.3f}, "
              f"rounds {', '.join(f'{x:.3f}' for x in per_round)}   [{verdict}]")
    per_model = {k: statistics.median(v) / len(sizes) for k, v in outside.items()}
    print("seconds per model outside model.fit (build, compile, evaluate, and for the toolkit Optuna, MLflow, "
          "callbacks): " + ", ".join(f"{k} {v:.3f}" for k, v in per_model.items()))
    for tag, name in (("bench_on", "tracking on"), ("bench_off", "tracking off")):
        if SETUP.get(tag):
            print(f"toolkit ({name}): {statistics.median(SETUP[tag]):.2f} s per study outside its trials "
                  "(fresh Optuna storage, study, enqueue, MLflow parent run and summary)")
    print("(a shared 2-core machine is noisy: compare the rounds, not only the totals)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
