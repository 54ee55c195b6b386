"""How fast each search strategy reaches a target validation accuracy on one CNN space, on this machine.

Contenders (each a fresh process, each with the same wall-clock budget, default 300 s):

- ``toolkit``: ``tuning.run`` with the space below and the toolkit's defaults for everything the space leaves
  unset (sampler, pruner, ``train.precision: auto``, ``train.schedule: cosine``), tracking on (its default), in
  a temporary folder;
- ``optuna_tpe``: the same through the toolkit, set as plain Optuna and Keras run: TPE, the median pruner,
  float32 and a constant learning rate set explicitly;
- ``tpe_hyperband``: TPE, Optuna's Hyperband pruner (epochs as the resource, 1 to 6), float32 and a constant
  learning rate set explicitly;
- ``tpe_startup5``: the toolkit's defaults, but TPE models the trials after 5 random ones instead of 10;
- ``toolkit_constant``: the toolkit's defaults, but a constant learning rate instead of the cosine decay;
- ``kt_hyperband``, ``kt_bayesian``, ``kt_random``: KerasTuner's ``Hyperband`` (``max_epochs`` 6, factor 3),
  ``BayesianOptimization`` and ``RandomSearch`` on the equivalent ``build(hp)``, run as KerasTuner's users run
  them (``tuner.search``), not through the toolkit.

The space (from issue 13, not tuned to the toolkit): 2 conv blocks with filters {16, 32, 64} then
{32, 64, 128}, one kernel size {3, 4, 5}, a dense head {128, 256, 512, 1024}, dropout 0-0.6, Adam with a
learning rate 1e-4 to 1e-2 (log), at most 6 epochs, batch 64; 6,000 training and 2,000 validation MNIST
images (the same arrays for everyone).

Contenders are interleaved (seed by seed, contender by contender) so that this machine's drift hits all alike.
The clock of a contender starts once TensorFlow is imported and the data is loaded; every epoch's validation
accuracy is written with its time, and the contender is stopped at the budget. Prints per contender and seed:
trials, epochs trained, best validation accuracy, and seconds to 97 / 98 / 98.5 %; then medians; the last line
is the median ratio of seconds to 98 % (toolkit / kt_hyperband), where a run that did not reach 98 % counts as
the budget (a lower bound on its real time).

Usage: python scripts/bench_time_to_accuracy.py [--budget 300] [--seeds 0 1 2] [--contenders a,b,...]
                                                [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("toolkit", "optuna_tpe", "tpe_hyperband", "tpe_startup5", "toolkit_constant", "kt_hyperband",
              "kt_bayesian", "kt_random")
#: The toolkit contenders that set some of what the toolkit's defaults choose: each one's ``study`` and
#: ``train`` entries (the rest of the space is the same for all).
EXPLICIT: dict[str, dict[str, dict[str, Any]]] = {
    "optuna_tpe": {"study": {"sampler": "tpe", "pruner": "median"},
                   "train": {"precision": "float32", "schedule": "constant"}},
    "tpe_hyperband": {"study": {"sampler": "tpe", "pruner": "hyperband"},
                      "train": {"precision": "float32", "schedule": "constant"}},
    "tpe_startup5": {"study": {"sampler": {"type": "tpe", "n_startup_trials": 5}}},
    "toolkit_constant": {"train": {"schedule": "constant"}},
}
TARGETS = (0.97, 0.98, 0.985)
MAX_EPOCHS = 6
BATCH_SIZE = 64
FILTERS = ([16, 32, 64], [32, 64, 128])
KERNELS = [3, 4, 5]
DENSE = [128, 256, 512, 1024]
DATA = {"dataset": "mnist", "train_size": 8000, "validation_split": 0.25, "test_size": 0, "seed": 0}


def toolkit_space(seed: int, pinned: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The benchmark's space in the toolkit's format; ``pinned`` adds ``study`` and ``train`` entries."""
    study: dict[str, Any] = {"name": "bench", "n_trials": 10_000, "seed": seed, **(pinned or {}).get("study", {})}
    train: dict[str, Any] = {"epochs": MAX_EPOCHS, "batch_size": BATCH_SIZE,
                             "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                             **(pinned or {}).get("train", {})}
    return {
        "data": DATA,
        "model": {"family": "cnn", "depth": 2, "width": {"layers": [list(f) for f in FILTERS]},
                  "kernel_size": KERNELS, "dense_units": DENSE, "dropout": {"low": 0.0, "high": 0.6}},
        "train": train,
        "study": study,
    }


# ------------------------------------------------------------------------------------------- one contender


class _Log:
    """Appends one JSON line per event to the contender's log; times are seconds since the clock started."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", buffering=1)
        self.start = time.perf_counter()

    def write(self, **record: Any) -> None:
        self.file.write(json.dumps({"t": round(time.perf_counter() - self.start, 3), **record}) + "\n")


def run_contender(name: str, seed: int, budget: float, out: Path, data_dir: str | None) -> None:
    if data_dir:
        os.environ["TUNING_DATA_DIR"] = data_dir
    from tuning import data as data_module
    from tuning.space import DataSpec
    from tuning.training import import_keras

    import_keras()
    dataset = data_module.load_spec(DataSpec(**DATA))
    log = _Log(out)  # the clock starts here: TensorFlow is imported and the data loaded
    log.write(event="start")
    if name == "toolkit" or name in EXPLICIT:
        _run_toolkit(dataset, seed, budget, log, pinned=EXPLICIT.get(name))
    else:
        _run_keras_tuner(name, dataset, seed, log)


def _run_toolkit(dataset: Any, seed: int, budget: float, log: _Log, pinned: dict[str, Any] | None) -> None:
    import tuning
    from tuning.observers import StudyObserver

    class Recorder(StudyObserver):
        def epoch_ended(self, trial: Any, epoch: int, logs: Any) -> None:
            if "val_accuracy" in logs:
                log.write(event="epoch", trial=trial.number, val_accuracy=float(logs["val_accuracy"]))

        def trial_finished(self, trial: Any, outcome: Any) -> None:
            log.write(event="trial", trial=trial.number, state=outcome.state)

    os.chdir(tempfile.mkdtemp(prefix="bench_tta_"))
    tuning.run(toolkit_space(seed, pinned), data=dataset, timeout=budget, observers=[Recorder()])


def build_model(hp: Any) -> Any:
    """The benchmark's CNN as a KerasTuner ``build(hp)``: the same layers as the toolkit's ``cnn`` family."""
    import keras
    from keras import layers

    kernel = hp.Choice("kernel_size", KERNELS)
    x = inputs = keras.Input((28, 28, 1))
    for i, choices in enumerate(FILTERS):
        x = layers.Conv2D(hp.Choice(f"filters_{i}", choices), kernel, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(hp.Choice("dense_units", DENSE), activation="relu")(x)
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.6))(x)
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _run_keras_tuner(name: str, dataset: Any, seed: int, log: _Log) -> None:
    import keras
    import keras_tuner

    folder = tempfile.mkdtemp(prefix="bench_tta_kt_")
    common = {"objective": "val_accuracy", "seed": seed, "directory": folder, "project_name": name}
    if name == "kt_hyperband":
        tuner = keras_tuner.Hyperband(build_model, max_epochs=MAX_EPOCHS, factor=3, hyperband_iterations=100,
                                      **common)
    elif name == "kt_bayesian":
        tuner = keras_tuner.BayesianOptimization(build_model, max_trials=10_000, **common)
    else:
        tuner = keras_tuner.RandomSearch(build_model, max_trials=10_000, **common)
    trial_number = [0]

    class Recorder(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            trial_number[0] += 1

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if logs and "val_accuracy" in logs:
                log.write(event="epoch", trial=trial_number[0], val_accuracy=float(logs["val_accuracy"]))

    tuner.search(dataset.x_train, dataset.y_train, validation_data=(dataset.x_val, dataset.y_val),
                 epochs=MAX_EPOCHS, batch_size=BATCH_SIZE, callbacks=[Recorder()], verbose=0)


# ------------------------------------------------------------------------------------------- the driver


def measure(name: str, seed: int, budget: float, data_dir: str | None, folder: Path) -> dict[str, Any]:
    """Run one contender in its own process for ``budget`` seconds of its clock; summarise its log."""
    out = folder / f"{name}-{seed}.jsonl"
    command = [sys.executable, __file__, "--child", name, "--seed", str(seed), "--budget", str(budget),
               "--out", str(out)] + (["--data-dir", data_dir] if data_dir else [])
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    started: float | None = None
    while child.poll() is None:
        time.sleep(0.5)
        if started is None and out.exists() and out.stat().st_size:
            started = time.monotonic()
        if started is not None and time.monotonic() - started > budget + 2:
            break
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
    _, err = child.communicate()
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    epochs = [r for r in records if r["event"] == "epoch" and r["t"] <= budget]
    if not records:
        raise SystemExit(f"{name} (seed {seed}) wrote nothing; its error output:\n{err[-3000:]}")
    best = max((r["val_accuracy"] for r in epochs), default=0.0)
    reached = {target: next((r["t"] for r in epochs if r["val_accuracy"] >= target), None) for target in TARGETS}
    return {"contender": name, "seed": seed, "trials": len({r["trial"] for r in epochs}), "epochs": len(epochs),
            "best": best, "reached": reached}


def _fmt(seconds: float | None) -> str:
    return f"{seconds:7.1f}" if seconds is not None else "      -"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per contender and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--data-dir", default=os.environ.get("TUNING_DATA_DIR"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(ROOT))
        run_contender(args.child, args.seed, args.budget, Path(args.out), args.data_dir)
        return 0
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    folder = Path(tempfile.mkdtemp(prefix="bench_tta_logs_"))
    print(f"budget {args.budget:g} s per contender and seed; seeds {args.seeds}; logs in {folder}")
    header = "contender        seed  trials  epochs    best   s→97%   s→98%  s→98.5%"
    print(header)
    results: list[dict[str, Any]] = []
    for seed in args.seeds:
        for name in names:
            r = measure(name, seed, args.budget, args.data_dir, folder)
            results.append(r)
            print(f"{name:<16} {seed:>4}  {r['trials']:>6}  {r['epochs']:>6}  {r['best']:.4f} "
                  + " ".join(_fmt(r["reached"][t]) for t in TARGETS), flush=True)
    print("\nmedians over seeds (a target not reached counts as the budget)")
    print(header.replace("seed  ", "      "))
    medians: dict[str, float] = {}
    for name in names:
        mine = [r for r in results if r["contender"] == name]
        times = {t: statistics.median(r["reached"][t] or args.budget for r in mine) for t in TARGETS}
        reached = {t: sum(r["reached"][t] is not None for r in mine) for t in TARGETS}
        medians[name] = times[0.98]
        print(f"{name:<16}       {statistics.median(r['trials'] for r in mine):>6g}  "
              f"{statistics.median(r['epochs'] for r in mine):>6g}  "
              f"{statistics.median(r['best'] for r in mine):.4f} "
              + " ".join(f"{times[t]:7.1f}" for t in TARGETS)
              + "   reached 98%: " + f"{reached[0.98]}/{len(mine)}")
    if "toolkit" in medians and "kt_hyperband" in medians:
        ratios = []
        for seed in args.seeds:
            mine = next(r for r in results if r["contender"] == "toolkit" and r["seed"] == seed)
            theirs = next(r for r in results if r["contender"] == "kt_hyperband" and r["seed"] == seed)
            ratios.append((mine["reached"][0.98] or args.budget) / (theirs["reached"][0.98] or args.budget))
        print(f"\nmedian ratio of seconds to 98% (toolkit / kt_hyperband): {statistics.median(ratios):.2f} "
              f"(per seed: {', '.join(f'{x:.2f}' for x in ratios)}; goal <= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
