"""How fast each search strategy finds good models, as a user feels it: best-so-far validation accuracy against wall
time, on this machine, interleaved with KerasTuner's Hyperband.

Contenders (each a fresh process, each with the same wall-clock budget, default 300 s):

- ``toolkit``: ``tuning.run`` with the space below and the toolkit's defaults for everything the space leaves
  unset (sampler, pruner, ``train.precision: auto``, ``train.schedule: cosine``), tracking on (its default), in
  a temporary folder;
- ``toolkit_sh``: the toolkit with successive halving whose promotions continue from a checkpoint
  (``pruner: {type: successive_halving, reduction_factor: 3}``); ``toolkit_sh_stop``: the same with Optuna's own
  successive-halving pruner (``promotion: stop``: a stopped trial is gone); ``toolkit_hyperband``: Hyperband
  with promotions that continue (``pruner: hyperband``);
- ``toolkit_dehb``: OptunaHub's DEHB sampler and pruner (``{optunahub: samplers/dehb}``; needs the ``optunahub``
  library and the package, downloaded or in ``OPTUNAHUB_CACHE_HOME``);
- ``optuna_tpe``: the same through the toolkit, set as plain Optuna and Keras run: TPE, the median pruner,
  float32 and a constant learning rate set explicitly; ``tpe_hyperband``: TPE, Optuna's own Hyperband pruner,
  float32, constant rate; ``tpe_startup5``: the defaults with 5 random trials before TPE models (not 10);
  ``median_startup2``: the median pruner comparing once 2 trials have finished, written out (the default since
  2026-12-04); ``median_startup5``: Optuna's median pruner as it comes, waiting for 5 (the default before);
  ``toolkit_constant``: the defaults with a constant learning rate;
- ``kt_hyperband``, ``kt_bayesian``, ``kt_random``: KerasTuner's ``Hyperband`` (``max_epochs`` 6, factor 3),
  ``BayesianOptimization`` and ``RandomSearch`` on the equivalent ``build(hp)``, run as KerasTuner's users run
  them (``tuner.search``), not through the toolkit.

Spaces (``--space``), both at most 6 epochs, batch 64, Adam with a learning rate 1e-4 to 1e-2 (log), on 6,000
training and 2,000 validation MNIST images (the same arrays for everyone):

- ``cnn`` (from issue 13, the one the earlier speed work was measured on): 2 conv blocks with filters {16, 32, 64}
  then {32, 64, 128}, one kernel size {3, 4, 5}, a dense head {128, 256, 512, 1024}, dropout 0-0.6;
- ``mlp`` (a second space, not used to tune anything): 1-3 dense layers of {64, 128, 256, 512} units each, a
  dropout of 0-0.5 after each.

Contenders are interleaved (seed by seed, contender by contender) so that this machine's drift hits all alike.
The clock of a contender starts once TensorFlow is imported and the data is loaded; every epoch's validation
accuracy is logged with its time, and the contender is stopped at the budget. Printed:

1. per contender and seed: trials, epochs, best accuracy, the best so far at 60, 120 and 300 s, and the seconds
   to reach the target: **KerasTuner Hyperband's median final best** over the seeds (its own result, not a fixed
   number);
2. per contender, over the seeds: the median and range of the best so far at 60, 120 and 300 s and at the end,
   the median seconds to the target (a run that never reached it counts as the budget) and how many reached it;
3. a PNG plot of the median best-so-far curve of each contender against time, with the band between the seeds'
   lowest and highest curves, and the target (``--plot``, default in the logs folder);
4. the median over seeds of the ratio of seconds to the target, each contender / kt_hyperband; the last line
   is the toolkit's defaults' (goal <= 0.5).

Usage: python scripts/bench_time_to_accuracy.py [--space cnn|mlp] [--budget 300] [--seeds 0 1 2 3 4]
                                                [--contenders a,b,...] [--plot FILE.png] [--target ACCURACY]
                                                [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import bisect
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
CONTENDERS = ("toolkit", "toolkit_sh", "toolkit_sh_stop", "toolkit_hyperband", "toolkit_dehb", "optuna_tpe",
              "tpe_hyperband", "tpe_startup5", "median_startup2", "median_startup5", "toolkit_constant",
              "kt_hyperband", "kt_bayesian", "kt_random")
#: The toolkit contenders that set some of what the toolkit's defaults choose: each one's ``study`` and
#: ``train`` entries (the rest of the space is the same for all).
EXPLICIT: dict[str, dict[str, dict[str, Any]]] = {
    "toolkit_sh": {"study": {"pruner": {"type": "successive_halving", "reduction_factor": 3}}},
    "toolkit_sh_stop": {"study": {"pruner": {"type": "successive_halving", "reduction_factor": 3,
                                             "promotion": "stop"}}},
    "toolkit_hyperband": {"study": {"pruner": {"type": "hyperband"}}},
    "toolkit_dehb": {"study": {"sampler": {"optunahub": "samplers/dehb"}, "pruner": {"optunahub": "samplers/dehb"}}},
    "optuna_tpe": {"study": {"sampler": "tpe", "pruner": "median"},
                   "train": {"precision": "float32", "schedule": "constant"}},
    "tpe_hyperband": {"study": {"sampler": "tpe", "pruner": {"type": "hyperband", "promotion": "stop"}},
                      "train": {"precision": "float32", "schedule": "constant"}},
    "tpe_startup5": {"study": {"sampler": {"type": "tpe", "n_startup_trials": 5}}},
    "median_startup2": {"study": {"pruner": {"type": "median", "n_startup_trials": 2}}},
    "median_startup5": {"study": {"pruner": "median"}},
    "toolkit_constant": {"train": {"schedule": "constant"}},
}
TARGET_FROM = "kt_hyperband"  # whose median final best is the target
CHECKPOINTS = (60.0, 120.0, 300.0)
MAX_EPOCHS = 6
BATCH_SIZE = 64
LEARNING_RATE = {"low": 1e-4, "high": 1e-2, "log": True}
FILTERS = ([16, 32, 64], [32, 64, 128])
KERNELS = [3, 4, 5]
DENSE = [128, 256, 512, 1024]
UNITS = [64, 128, 256, 512]
DATA = {"dataset": "mnist", "train_size": 8000, "validation_split": 0.25, "test_size": 0, "seed": 0}
SPACES = ("cnn", "mlp")


def toolkit_space(space: str, seed: int, pinned: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The benchmark's space in the toolkit's format; ``pinned`` adds ``study`` and ``train`` entries."""
    study: dict[str, Any] = {"name": "bench", "n_trials": 10_000, "seed": seed, **(pinned or {}).get("study", {})}
    train: dict[str, Any] = {"epochs": MAX_EPOCHS, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE,
                             **(pinned or {}).get("train", {})}
    if space == "cnn":
        model = {"family": "cnn", "depth": 2, "width": {"layers": [list(f) for f in FILTERS]},
                 "kernel_size": KERNELS, "dense_units": DENSE, "dropout": {"low": 0.0, "high": 0.6}}
    else:
        model = {"family": "mlp", "depth": {"low": 1, "high": 3}, "width": {"per_layer": UNITS},
                 "dropout": {"per_layer": {"low": 0.0, "high": 0.5}}}
    return {"data": DATA, "model": model, "train": train, "study": study}


def build_cnn(hp: Any) -> Any:
    """The CNN space as a KerasTuner ``build(hp)``: the same layers as the toolkit's ``cnn`` family."""
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
    return _compiled(keras.Model(inputs, layers.Dense(10, activation="softmax")(x)), hp)


def build_mlp(hp: Any) -> Any:
    """The MLP space as a KerasTuner ``build(hp)``: the same layers as the toolkit's ``mlp`` family."""
    import keras
    from keras import layers

    x = inputs = keras.Input((28, 28, 1))
    x = layers.Flatten()(x)
    for i in range(hp.Int("depth", 1, 3)):
        x = layers.Dense(hp.Choice(f"units_{i}", UNITS), activation="relu")(x)
        x = layers.Dropout(hp.Float(f"dropout_{i}", 0.0, 0.5))(x)
    return _compiled(keras.Model(inputs, layers.Dense(10, activation="softmax")(x)), hp)


def _compiled(model: Any, hp: Any) -> Any:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


# ------------------------------------------------------------------------------------------- one contender


class _Log:
    """Appends one JSON line per event to the contender's log; times are seconds since the clock started."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", buffering=1)
        self.start = time.perf_counter()

    def write(self, **record: Any) -> None:
        self.file.write(json.dumps({"t": round(time.perf_counter() - self.start, 3), **record}) + "\n")


def run_contender(name: str, space: str, seed: int, budget: float, out: Path, data_dir: str | None) -> None:
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
        _run_toolkit(toolkit_space(space, seed, EXPLICIT.get(name)), dataset, budget, log)
    else:
        _run_keras_tuner(name, build_cnn if space == "cnn" else build_mlp, dataset, seed, log)


def _run_toolkit(space: dict[str, Any], dataset: Any, budget: float, log: _Log) -> None:
    import tuning
    from tuning.observers import StudyObserver

    class Recorder(StudyObserver):
        def epoch_ended(self, trial: Any, epoch: int, logs: Any) -> None:
            if "val_accuracy" in logs:
                log.write(event="epoch", trial=trial.number, val_accuracy=float(logs["val_accuracy"]))

        def trial_finished(self, trial: Any, outcome: Any) -> None:
            log.write(event="trial", trial=trial.number, state=outcome.state)

    os.chdir(tempfile.mkdtemp(prefix="bench_tta_"))
    tuning.run(space, data=dataset, timeout=budget, observers=[Recorder()], verbose=False)


def _run_keras_tuner(name: str, build: Any, dataset: Any, seed: int, log: _Log) -> None:
    import keras
    import keras_tuner

    folder = tempfile.mkdtemp(prefix="bench_tta_kt_")
    common = {"objective": "val_accuracy", "seed": seed, "directory": folder, "project_name": name}
    if name == "kt_hyperband":
        tuner = keras_tuner.Hyperband(build, max_epochs=MAX_EPOCHS, factor=3, hyperband_iterations=100, **common)
    elif name == "kt_bayesian":
        tuner = keras_tuner.BayesianOptimization(build, max_trials=10_000, **common)
    else:
        tuner = keras_tuner.RandomSearch(build, max_trials=10_000, **common)
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


def measure(name: str, space: str, seed: int, budget: float, data_dir: str | None, folder: Path) -> dict[str, Any]:
    """Run one contender in its own process for ``budget`` seconds of its clock; its best-so-far curve."""
    out = folder / f"{space}-{name}-{seed}.jsonl"
    command = [sys.executable, __file__, "--child", name, "--space", space, "--seed", str(seed), "--budget",
               str(budget), "--out", str(out)] + (["--data-dir", data_dir] if data_dir else [])
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
    if not records:
        raise SystemExit(f"{name} (seed {seed}) wrote nothing; its error output:\n{err[-3000:]}")
    epochs = [r for r in records if r["event"] == "epoch" and r["t"] <= budget]
    curve: list[tuple[float, float]] = []  # (seconds, best so far), each time the best improved
    for r in epochs:
        if not curve or r["val_accuracy"] > curve[-1][1]:
            curve.append((r["t"], r["val_accuracy"]))
    return {"contender": name, "seed": seed, "trials": len({r["trial"] for r in epochs}), "epochs": len(epochs),
            "curve": curve, "best": curve[-1][1] if curve else 0.0}


def best_at(curve: list[tuple[float, float]], seconds: float) -> float:
    """The best so far at ``seconds`` (0 before the first epoch ended)."""
    i = bisect.bisect_right([t for t, _ in curve], seconds)
    return curve[i - 1][1] if i else 0.0


def seconds_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """When the best so far first reached ``target`` (None: never)."""
    return next((t for t, best in curve if best >= target), None)


def plot(results: list[dict[str, Any]], names: list[str], budget: float, target: float | None, path: Path,
         title: str, target_source: str) -> None:
    """The median best-so-far curve of each contender against time, with the band between its seeds' extremes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [budget * i / 300 for i in range(301)]
    figure, axes = plt.subplots(figsize=(8, 5))
    finals = [] if target is None else [target]
    for name in names:
        curves = [r["curve"] for r in results if r["contender"] == name]
        values = [[best_at(c, t) for c in curves] for t in grid]
        median = [statistics.median(v) for v in values]
        line = axes.plot(grid, median, label=f"{name} (median of {len(curves)} seeds)")[0]
        axes.fill_between(grid, [min(v) for v in values], [max(v) for v in values], alpha=0.15,
                          color=line.get_color())
        finals.append(median[-1])
    if target is not None:
        axes.axhline(target, color="black", linestyle=":", label=f"target {target:.4f} ({target_source})")
    axes.set_ylim(max(0.0, min(finals) - 0.04), min(1.0, max(finals) + 0.01))  # the part where they differ
    axes.set_xlabel("seconds (each contender's own clock, TensorFlow imported and data loaded)")
    axes.set_ylabel("best validation accuracy so far")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", choices=SPACES, default="cnn")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per contender and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--contenders", default="toolkit,kt_hyperband")
    parser.add_argument("--plot", help="where to write the PNG plot (default: in the logs folder)")
    parser.add_argument("--target", type=float,
                        help=f"a fixed target accuracy instead of {TARGET_FROM}'s median final best (when comparing "
                             f"toolkit contenders without running {TARGET_FROM}: an earlier run's target)")
    parser.add_argument("--data-dir", default=os.environ.get("TUNING_DATA_DIR"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(ROOT))
        run_contender(args.child, args.space, args.seed, args.budget, Path(args.out), args.data_dir)
        return 0
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    folder = Path(tempfile.mkdtemp(prefix="bench_tta_logs_"))
    marks = [c for c in CHECKPOINTS if c <= args.budget]
    print(f"space {args.space}; budget {args.budget:g} s per contender and seed; seeds {args.seeds}; logs in {folder}")
    results: list[dict[str, Any]] = []
    header = ("contender           seed  trials  epochs    best " + " ".join(f"@{c:>4.0f}s" for c in marks))
    print(header)
    for seed in args.seeds:
        for name in names:
            r = measure(name, args.space, seed, args.budget, args.data_dir, folder)
            results.append(r)
            print(f"{name:<19} {seed:>4}  {r['trials']:>6}  {r['epochs']:>6}  {r['best']:.4f} "
                  + " ".join(f"{best_at(r['curve'], c):.4f}" for c in marks), flush=True)

    theirs = [r["best"] for r in results if r["contender"] == TARGET_FROM]
    target = args.target if args.target is not None else statistics.median(theirs) if theirs else None
    print(f"\ntarget: {target:.4f} (--target)" if args.target is not None else
          f"\ntarget: {TARGET_FROM}'s median final best, {target:.4f}" if target is not None else
          f"\nno target: {TARGET_FROM} did not run (--target sets one)")
    print("per contender over the seeds: median [lowest, highest] best so far; seconds to the target (median, a "
          "run that never reached it counts as the budget), and how many reached it")
    for name in names:
        mine = [r for r in results if r["contender"] == name]
        cells = []
        for c in sorted({*marks, args.budget}):  # the budget is also a mark when it is 60, 120 or 300 s
            at = [best_at(r["curve"], c) for r in mine]
            label = "end" if c == args.budget else f"{c:.0f}s"
            cells.append(f"{label} {statistics.median(at):.4f} [{min(at):.4f}, {max(at):.4f}]")
        line = f"{name:<19} " + "  ".join(cells)
        if target is not None:
            times = [seconds_to(r["curve"], target) for r in mine]
            reached = sum(t is not None for t in times)
            line += (f"  to target {statistics.median(t if t is not None else args.budget for t in times):6.1f} s "
                     f"({reached}/{len(mine)})")
        print(line)

    path = Path(args.plot) if args.plot else folder / f"best_so_far_{args.space}.png"
    plot(results, names, args.budget, target, path,
         f"Best so far, {args.space} space, {len(args.seeds)} seeds × {args.budget:g} s",
         target_source="--target" if args.target is not None else f"{TARGET_FROM}'s median best")
    print(f"plot: {path}")
    if args.target is None and theirs:  # the toolkit's defaults last: the last line is the goal's
        for name in sorted((n for n in names if n != TARGET_FROM), key=lambda n: n == "toolkit"):
            ratios = []
            for seed in args.seeds:
                mine = next(r for r in results if r["contender"] == name and r["seed"] == seed)
                kt = next(r for r in results if r["contender"] == TARGET_FROM and r["seed"] == seed)
                ratios.append((seconds_to(mine["curve"], target) or args.budget)
                              / (seconds_to(kt["curve"], target) or args.budget))
            print(f"median ratio of seconds to {TARGET_FROM}'s median best ({name} / {TARGET_FROM}): "
                  f"{statistics.median(ratios):.2f} (per seed: {', '.join(f'{x:.2f}' for x in ratios)}; "
                  "goal <= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
