"""What the toolkit costs on top of plain Keras: the same fixed configurations, bare and through ``tuning.run``.

N fixed MLPs (2 hidden layers, widths spread over 64..512, default 8) are trained on the same MNIST arrays
(default 10,000 training images) by

- the toolkit: ``tuning.run`` on a space whose study enqueues exactly those N configurations, ``n_trials=N``,
  a new study in an Optuna SQLite storage, with MLflow tracking ON into a SQLite tracking database (both files
  created once during the warm-up, as a project's ``mlruns/`` holds them), and again with tracking OFF;
- a bare Keras loop body: build a Sequential model, compile, fit with validation data, evaluate on the test
  set, ``keras.backend.clear_session()`` first (what a careful hand-written script does), passing the NumPy
  arrays as the tutorials do (``--bare-tensors``: tensors converted once, as ``tuning`` does, so that the
  ratio isolates the toolkit's plumbing).

The two alternate model by model, so that both sides of every pair run within seconds of each other: this
machine's speed drifts by 10-30% within a minute, which made whole-round comparisons swing from 0.89 to 1.26.
After each toolkit trial, an observer trains the same configuration bare; the bare seconds are timed apart
and taken out of the toolkit's. Each toolkit figure therefore includes everything ``tuning.run`` does: opening
the storage, creating the study and its MLflow parent run, Optuna's per-trial writes, tracking, and the study's
summary at the end.

In a study, MLflow's background thread logs a finished trial while the next trial trains. So that it does
here too, and not while the bare model trains, the bare model runs inside the trial's end, before the tracker
hands the trial to its thread: the observer first waits until MLflow has logged the trial's epochs (that wait
is the toolkit's), then trains bare with MLflow idle; the trial's run is finished afterwards, while the next
trial trains, as in any study.

Prints, per round, the toolkit's and the bare loop's wall-clock and CPU seconds (this process, all threads)
and their ratio; then the ratios over all rounds (goal: at most 1.03).

Usage: python scripts/bench_overhead.py [--n 8] [--rounds 4] [--epochs 1] [--data-dir DIR] [--no-tracking]
                                        [--bare-tensors]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuning import data as data_module  # noqa: E402
from tuning.observers import StudyObserver  # noqa: E402
from tuning.training import import_keras  # noqa: E402

BATCH_SIZE = 128
LEARNING_RATE = 1e-3
SEED = 0


@dataclass
class Measure:
    """Wall-clock seconds, those inside ``model.fit``, and this process's CPU seconds (every thread)."""

    wall: float
    fit: float
    cpu: float

    def __add__(self, other: Measure) -> Measure:
        return Measure(self.wall + other.wall, self.fit + other.fit, self.cpu + other.cpu)

    def __sub__(self, other: Measure) -> Measure:
        return Measure(self.wall - other.wall, self.fit - other.fit, self.cpu - other.cpu)


ZERO = Measure(0.0, 0.0, 0.0)


class _Clock:
    """Wall-clock and process CPU time since construction."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def measure(self, fit: float) -> Measure:
        return Measure(time.perf_counter() - self.wall, fit, time.process_time() - self.cpu)


def widths(n: int) -> list[int]:
    """``n`` distinct widths spread evenly over 64..512."""
    if n == 1:
        return [256]
    return sorted({round(64 + i * (512 - 64) / (n - 1)) for i in range(n)})


def bare_model(keras: Any, arrays: tuple[Any, ...], input_shape: tuple[int, ...], classes: int, width: int,
               epochs: int) -> Measure:
    """One configuration, trained and tested the way a hand-written Keras script does it."""
    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    clock = _Clock()
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Flatten(),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dense(classes, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    fit_start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, validation_data=(x_val, y_val), verbose=0)
    fitting = time.perf_counter() - fit_start
    model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    return clock.measure(fitting)


class BareAfterEachTrial(StudyObserver):
    """Trains each toolkit trial's configuration bare, right after the trial, and keeps the two apart.

    Listed before the tracker, so that it runs before the tracker's own ``trial_finished``. ``bare`` sums the
    bare models; ``paused`` is what this observer spent (bare models included, the wait for MLflow excluded),
    to be taken out of the toolkit's own measure.
    """

    def __init__(self, ds: data_module.Dataset, arrays: tuple[Any, ...], epochs: int, tracker: Any) -> None:
        self.keras = import_keras()
        self.ds, self.arrays, self.epochs, self.tracker = ds, arrays, epochs, tracker
        self.bare = ZERO
        self.paused = ZERO

    def trial_finished(self, trial: Any, outcome: Any) -> None:
        if self.tracker is not None:
            self.tracker.flush()  # the trial's epochs reach MLflow on the toolkit's clock, not the bare model's
        clock = _Clock()
        measure = bare_model(self.keras, self.arrays, self.ds.input_shape, self.ds.num_classes,
                             trial.params["model.width"], self.epochs)
        self.bare = self.bare + measure
        self.paused = self.paused + clock.measure(0.0)  # model.fit seconds are counted from the trials


def space(sizes: list[int], epochs: int, name: str) -> dict[str, Any]:
    """The space whose study trains exactly ``sizes``, in order (random sampler, no pruner, no watchdog)."""
    return {
        "data": {"dataset": "mnist"},
        "model": {"family": "mlp", "depth": 2, "width": sizes, "dropout": 0.0, "activation": "relu"},
        "train": {"epochs": epochs, "batch_size": BATCH_SIZE, "optimizer": "adam", "learning_rate": LEARNING_RATE,
                  "schedule": "constant", "chance_epochs": 0},  # the bare loop's constant rate
        "objective": "val_accuracy",
        "study": {"name": name, "sampler": "random", "pruner": "none", "n_trials": len(sizes), "seed": SEED,
                  "enqueue": [{"model.width": w} for w in sizes]},
    }


def round_pair(
    ds: data_module.Dataset, arrays: tuple[Any, ...], sizes: list[int], epochs: int, storage: str,
    tracking_uri: str | None, name: str,
) -> tuple[Measure, Measure]:
    """One study through ``tuning.run`` with a bare model after each trial; returns (toolkit, bare)."""
    import tuning
    from tuning import records

    tracker = None
    if tracking_uri is not None:
        from tuning.tracking import MlflowTracker

        tracker = MlflowTracker(tracking_uri, storage_url=storage)
    bare = BareAfterEachTrial(ds, arrays, epochs, tracker)
    observers = [o for o in (bare, tracker) if o is not None]
    clock = _Clock()
    study = tuning.run(space(sizes, epochs, name), data=ds, storage=storage, tracking=False, observers=observers)
    fitting = sum(t.user_attrs[records.TRAIN_SECONDS] for t in study.trials)
    whole = clock.measure(fitting)
    trained = sorted(t.params["model.width"] for t in study.trials if t.state.name == "COMPLETE")
    if trained != sorted(sizes):
        raise RuntimeError(f"the toolkit trained {trained}, expected {sorted(sizes)}")
    return whole - bare.paused, bare.bare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="configurations per study (default 8)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, each one study per setting (default 4)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per configuration (default 1)")
    parser.add_argument("--train-size", type=int, default=11_112, help="images before the 10%% validation split")
    parser.add_argument("--data-dir", help="folder holding mnist.npz (default: $TUNING_DATA_DIR, else Keras)")
    parser.add_argument("--no-tracking", action="store_true", help="only the tracking-off figure (no MLflow)")
    parser.add_argument(
        "--bare-tensors", action="store_true",
        help="the bare loop gets tensors converted once, as tuning does, instead of NumPy arrays that Keras "
             "converts at every fit and evaluate: the ratio then measures the toolkit's plumbing alone",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line per round
    if args.data_dir is None and (ROOT.parent / "shared" / "datasets" / "mnist.npz").is_file():
        args.data_dir = os.environ.get("TUNING_DATA_DIR") or str(ROOT.parent / "shared" / "datasets")
    ds = data_module.load("mnist", path=args.data_dir, train_size=args.train_size, validation_split=0.1)
    arrays: tuple[Any, ...] = (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test)
    if args.bare_tensors:
        import_keras()  # TensorFlow's start-up lines stay hidden
        import tensorflow as tf

        arrays = tuple(tf.convert_to_tensor(a) for a in arrays)
    sizes = widths(args.n)
    settings = {"tracking off": False} if args.no_tracking else {"tracking on": True, "tracking off": False}

    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as folder:
        os.chdir(folder)  # whatever a study keeps beside its results (mlruns/) stays in the temporary folder
        storage = f"sqlite:///{Path(folder) / 'optuna.db'}"
        mlflow_uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        print(f"{len(sizes)} MLPs 784-w-w-10, w in {sizes}; {args.epochs} epochs, batch {BATCH_SIZE}, "
              f"{len(ds.x_train)} training / {len(ds.x_val)} validation / {len(ds.x_test)} test images; "
              f"the bare loop passes {'tensors converted once' if args.bare_tensors else 'NumPy arrays'}")
        # Warm-up: TensorFlow's first graphs, Optuna's and MLflow's imports, both database files.
        started = time.perf_counter()
        round_pair(ds, arrays, sizes[:1], 1, storage, mlflow_uri if not args.no_tracking else None, "warmup")
        first = time.perf_counter() - started

        results: dict[str, list[tuple[Measure, Measure]]] = {k: [] for k in settings}
        for r in range(args.rounds):
            order = list(settings) if r % 2 == 0 else list(reversed(settings))
            cells = []
            for name in order:
                uri = mlflow_uri if settings[name] else None
                toolkit, bare = round_pair(ds, arrays, sizes, args.epochs, storage, uri, f"{name[9:]}_{r}")
                results[name].append((toolkit, bare))
                cells.append(f"  {name:13s} toolkit {toolkit.wall:6.2f} s / bare {bare.wall:6.2f} s = "
                             f"{toolkit.wall / bare.wall:.3f} (cpu {toolkit.cpu / bare.cpu:.3f})")
            print(f"round {r + 1}:\n" + "\n".join(cells), flush=True)
        os.chdir(home)

    report(results, len(sizes), first)
    return 0


def report(results: dict[str, list[tuple[Measure, Measure]]], n: int, first_study_seconds: float) -> None:
    """Ratios toolkit / bare over all rounds (wall-clock and CPU), and where the toolkit's extra time goes."""
    bare_all = [b for pairs in results.values() for _, b in pairs]
    print(f"\nper model, bare Keras: {statistics.median(b.wall for b in bare_all) / n:.2f} s (median study / {n})")
    for name, pairs in results.items():
        for label, attr in (("wall-clock", "wall"), ("CPU time", "cpu")):
            rounds = [getattr(t, attr) / getattr(b, attr) for t, b in pairs]
            total = sum(getattr(t, attr) for t, _ in pairs) / sum(getattr(b, attr) for _, b in pairs)
            verdict = "ok" if total <= 1.03 else "above the 1.03 goal"
            print(f"toolkit ({name}) / bare, {label}: all rounds {total:.3f}, median round "
                  f"{statistics.median(rounds):.3f}, rounds {', '.join(f'{x:.3f}' for x in rounds)}   [{verdict}]")
        outside = statistics.median((t.wall - t.fit) - (b.wall - b.fit) for t, b in pairs) / n
        fit = sum(t.fit for t, _ in pairs) / sum(b.fit for _, b in pairs)
        print(f"  {name}: the toolkit spends {outside * 1000:+.0f} ms per model more than bare outside model.fit "
              f"(its study set-up and summary included); inside model.fit, toolkit / bare = {fit:.3f}")
    print(f"once per project: the warm-up study (one model, bare and toolkit), which created both database files, "
          f"took {first_study_seconds:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
