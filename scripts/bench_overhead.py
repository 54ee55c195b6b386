"""What the toolkit costs on top of plain Keras: the same fixed configurations, bare and through ``tuning.run``.

N fixed MLPs (2 hidden layers, widths spread over 64..512, default 8) are trained on the same MNIST arrays
(default 10,000 training images) by

- a bare Keras loop: build a Sequential model, compile, fit with validation data, evaluate on the test set,
  ``keras.backend.clear_session()`` between models (what a careful hand-written script does), passing the
  NumPy arrays as the tutorials do (``--bare-tensors``: tensors converted once, as ``tuning`` does, so that
  the ratio isolates the toolkit's plumbing);
- the toolkit: ``tuning.run`` on a space whose study enqueues exactly those N configurations, ``n_trials=N``,
  a new study in an Optuna SQLite storage and MLflow tracking ON into a SQLite tracking database (both files
  created once during the warm-up, as a project's ``mlruns/`` holds them), and again with tracking OFF.

Everything runs in one process; TensorFlow, Optuna and MLflow are warmed up before any timing; rounds
alternate and swap their order (bare first in even rounds, last in odd ones) so that a drift in machine
speed hits both sides. Prints each round's wall-clock and CPU seconds (this process, all threads) and the
ratios toolkit / bare (goal: at most 1.03). The wall-clock ratio is the goal's measure; on a shared machine
whose speed drifts by 10-30% within a minute, the CPU-time ratio is the steadier figure.

Usage: python scripts/bench_overhead.py [--n 8] [--rounds 5] [--epochs 1] [--data-dir DIR] [--no-tracking]
                                        [--bare-tensors] [--bare-without-freeze]
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuning import data as data_module  # noqa: E402
from tuning._keras import import_keras  # noqa: E402

BATCH_SIZE = 128
LEARNING_RATE = 1e-3
SEED = 0
#: Seconds of each ``tuning.run`` call spent outside its trials (study, enqueue, MLflow parent run, summary).
SETUP: dict[str, list[float]] = {}


@dataclass
class Measure:
    """One side of one round: wall-clock seconds, those inside ``model.fit``, and this process's CPU seconds."""

    wall: float
    fit: float
    cpu: float


class _Clock:
    """Wall-clock and process CPU time (every thread: TensorFlow's, the MLflow worker's) since construction."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def measure(self, fit: float) -> Measure:
        return Measure(time.perf_counter() - self.wall, fit, time.process_time() - self.cpu)


def widths(n: int) -> list[int]:
    """``n`` distinct widths spread evenly over 64..512."""
    if n == 1:
        return [256]
    return sorted({round(64 + i * (512 - 64) / (n - 1)) for i in range(n)})


def bare_keras(ds: data_module.Dataset, sizes: list[int], epochs: int, freeze: bool, tensors: bool) -> Measure:
    """Train every configuration with plain Keras.

    With ``freeze``, the objects alive before the loop are frozen out of the garbage collector as
    ``tuning.run`` does (``gc.freeze()``), so the ratio measures the toolkit's plumbing alone; without it, the
    bare loop also pays full collections over everything this process has loaded (MLflow, Optuna, pandas).
    With ``tensors``, the arrays are converted to tensors once, before the clock starts, as ``tuning`` does.
    """
    keras = import_keras()
    arrays: tuple[Any, ...] = (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test)
    if tensors:
        import tensorflow as tf

        arrays = tuple(tf.convert_to_tensor(a) for a in arrays)
    if freeze:
        gc.collect()
        gc.freeze()
    try:
        return _bare_loop(keras, ds, arrays, sizes, epochs)
    finally:
        if freeze:
            gc.unfreeze()


def _bare_loop(keras: Any, ds: data_module.Dataset, arrays: tuple[Any, ...], sizes: list[int], epochs: int) -> Measure:
    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    clock = _Clock()
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
        model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, validation_data=(x_val, y_val), verbose=0)
        fitting += time.perf_counter() - fit_start
        model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    return clock.measure(fitting)


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
    ds: data_module.Dataset, sizes: list[int], epochs: int, storage: str, tracking_uri: str | None, tag: str
) -> Measure:
    """Train every configuration through ``tuning.run`` as a new study ``tag`` in ``storage``.

    "Inside fit" is the sum of the trials' ``train_seconds``.
    """
    import tuning
    from tuning import records

    clock = _Clock()
    study = tuning.run(space(sizes, epochs, tag), data=ds, storage=storage, tracking=tracking_uri is not None,
                       tracking_uri=tracking_uri)
    fitting = sum(t.user_attrs[records.TRAIN_SECONDS] for t in study.trials)
    result = clock.measure(fitting)
    trained = sorted(t.params["model.width"] for t in study.trials if t.state.name == "COMPLETE")
    if trained != sorted(sizes):
        raise RuntimeError(f"the toolkit trained {trained}, expected {sorted(sizes)}")
    in_trials = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials)
    SETUP.setdefault(tag.rsplit("_", 1)[0], []).append(result.wall - in_trials)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="configurations per round (default 8)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per configuration (default 1)")
    parser.add_argument("--train-size", type=int, default=11_112, help="images before the 10%% validation split")
    parser.add_argument("--data-dir", help="folder holding mnist.npz (default: $TUNING_DATA_DIR, else Keras)")
    parser.add_argument("--no-tracking", action="store_true", help="only the tracking-off figure (no MLflow)")
    parser.add_argument(
        "--bare-tensors", action="store_true",
        help="the bare loop passes tensors converted once, as tuning does, instead of NumPy arrays that Keras "
             "converts at every fit and evaluate: the ratio then measures the toolkit's plumbing alone",
    )
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

    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as folder:
        storage = f"sqlite:///{Path(folder) / 'optuna.db'}"
        tracking_uri = f"sqlite:///{Path(folder) / 'mlflow.db'}" if tracking else None
        bare_kind = "tensors converted once" if args.bare_tensors else "NumPy arrays"
        print(f"{len(sizes)} MLPs 784-w-w-10, w in {sizes}; {args.epochs} epochs, batch {BATCH_SIZE}, "
              f"{len(ds.x_train)} training / {len(ds.x_val)} validation / {len(ds.x_test)} test images; "
              f"the bare loop passes {bare_kind}")
        # Warm-up: TensorFlow's first graph, Optuna's and MLflow's imports, both database files.
        bare_keras(ds, sizes[:1], 1, freeze=True, tensors=args.bare_tensors)
        first = toolkit(ds, sizes[:1], 1, storage, tracking_uri, "warmup_on")
        if tracking:
            toolkit(ds, sizes[:1], 1, storage, None, "warmup_off")

        bare_freeze = not args.bare_without_freeze
        runs: dict[str, Callable[[int], Measure]] = {
            "bare": lambda r: bare_keras(ds, sizes, args.epochs, freeze=bare_freeze, tensors=args.bare_tensors)
        }
        if tracking:
            runs["tracking on"] = lambda r: toolkit(ds, sizes, args.epochs, storage, tracking_uri, f"bench_on_{r}")
        runs["tracking off"] = lambda r: toolkit(ds, sizes, args.epochs, storage, None, f"bench_off_{r}")
        results: dict[str, list[Measure]] = {k: [] for k in runs}
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                results[name].append(runs[name](r))
            row = "  ".join(
                f"{k} {m.wall:6.2f} s ({m.wall - m.fit:4.2f} outside fit, cpu {m.cpu:6.2f} s)"
                for k, m in ((k, v[-1]) for k, v in results.items())
            )
            ratios = "  ".join(
                f"{k}/bare {results[k][-1].wall / results['bare'][-1].wall:.3f} "
                f"(cpu {results[k][-1].cpu / results['bare'][-1].cpu:.3f})"
                for k in runs if k != "bare"
            )
            print(f"round {r + 1} ({' → '.join(order)}): {row}   {ratios}", flush=True)

    report(results, len(sizes), first_study_seconds=first.wall)
    return 0


def report(results: dict[str, list[Measure]], n: int, first_study_seconds: float) -> None:
    """The summary: ratios against the bare loop (wall-clock and CPU), and where the toolkit's extra time goes."""
    bare = results["bare"]
    print(f"\nper model, bare Keras: {statistics.median(m.wall for m in bare) / n:.2f} s (median round / {n})")
    for name, measures in results.items():
        if name == "bare":
            continue
        for label, attr in (("wall-clock", "wall"), ("CPU time", "cpu")):
            rounds = [getattr(m, attr) / getattr(b, attr) for m, b in zip(measures, bare, strict=True)]
            total = sum(getattr(m, attr) for m in measures) / sum(getattr(b, attr) for b in bare)
            median = statistics.median(rounds)
            verdict = "ok" if median <= 1.03 else "above the 1.03 goal"
            print(f"toolkit ({name}) / bare, {label}: median round {median:.3f}, total {total:.3f}, "
                  f"rounds {', '.join(f'{x:.3f}' for x in rounds)}   [{verdict}]")
    outside = {k: statistics.median(m.wall - m.fit for m in v) / n for k, v in results.items()}
    print("seconds per model outside model.fit (build, compile, evaluate, and for the toolkit Optuna, MLflow, "
          "callbacks): " + ", ".join(f"{k} {v:.3f}" for k, v in outside.items()))
    for tag, name in (("bench_on", "tracking on"), ("bench_off", "tracking off")):
        if SETUP.get(tag):
            print(f"toolkit ({name}): {statistics.median(SETUP[tag]):.2f} s per study outside its trials "
                  "(study, enqueue, MLflow parent run and summary)")
    print(f"once per project: the warm-up's first study (one model), which created both database files, took "
          f"{first_study_seconds:.2f} s")
    print("(a shared 2-core machine is noisy: compare the rounds, not only the totals)")


if __name__ == "__main__":
    sys.exit(main())
