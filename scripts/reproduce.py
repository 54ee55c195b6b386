#!/usr/bin/env python
"""The classic MNIST tuning stories, each one fixed configuration trained by the toolkit; writes docs/results.md.

Every story is a search space whose values are all fixed, run by ``tuning.run`` on full MNIST (60,000 training
images, 10 % of them held out for validation, the 10,000 test images touched once per trained model), tracked
in MLflow like any study (study and experiment ``reproduce_<story>``, in ``mlruns/``). A story with several seeds
is one study with one trial per seed (each trial's seed is recorded on it). A study that is already complete is
read, not trained again: an interrupted reproduction resumes where it stopped.

The table also gets a row for ``search_spaces/mnist_best.yaml`` when its study (``mnist_best``) is in the same
storage: run ``scripts/tune.sh search_spaces/mnist_best.yaml --register-model mnist_best`` first.

Usage:
    TUNING_DATA_DIR=../shared/datasets python scripts/reproduce.py          # every story (about 1¾ hours here)
    python scripts/reproduce.py --only tf_tutorial,pytorch_cnn --seeds 3    # some rows again, other seeds
    python scripts/reproduce.py --table                                     # rewrite the table, train nothing
    python scripts/reproduce.py --quick      # 1,000 images, 1 epoch, one seed, tracking off: what the tests run
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a clone without installing

import tuning  # noqa: E402
from tuning import records  # noqa: E402

TUTORIAL = {"family": "cnn", "depth": 2, "width": {"layers": [32, 64]}, "kernel_size": 5, "dense_units": 1024,
            "dropout": 0.5}
TUTORIAL_TRAIN = {"batch_size": 50, "optimizer": "adam", "learning_rate": 1e-4, "epochs": 20, "precision": "auto"}
#: The tutorial trained 20,000 steps of 50 images: 50,000 training images (10,000 held out for validation) make
#: exactly that in 20 epochs of 1,000 steps. Its figures came from 55,000 training images: 5,000 more than here.
TUTORIAL_DATA = {"validation_split": 1 / 6}
MLP_TRAIN = {"batch_size": 128, "optimizer": "adam", "learning_rate": 1e-3}
BEST_STUDY = "mnist_best"
#: Its goal, compared at two decimals: 99.47% reads as 99.5% at one decimal, a tie with a goal it missed.
BEST_GOAL = "99.50%"
NOTES = [
    "Notes:",
    "",
    "- Training length: the TensorFlow tutorial trained 20,000 steps of 50 images. Its row and its table's rows train "
    "exactly that here: 20 epochs of 50,000 training images (10,000 held out for validation; the tutorial's "
    "figures come from 55,000), at a constant rate. The other rows use 54,000 training images. Every row runs in "
    "this machine's `train.precision: auto` (the precision column says what it resolved to).",
    "- The Keras tutorial's own accuracies per step are not quoted in the story this toolkit started from: its rows "
    "show what each step gives here, 3 seeds each (1 for the 50-epoch steps).",
    "- The NumPy CNN's layer list (conv, pool, dropout, flatten, dense) is built as one conv block of 8 3×3 filters, "
    "dropout 0.25, a softmax layer, plain SGD at 0.01 for 3 epochs.",
    "- The 105-experiment search's best configuration is not given exactly; its row is a CNN of that kind (conv 32/64 "
    "3×3, dense 128, dropout 0.3, rotations up to 11°, shifts and zooms up to 10%).",
    "- A row whose configuration never leaves chance accuracy is stopped by the toolkit's watchdog after "
    "`train.chance_epochs` (2) epochs, with the reason in the table; a row that learns shows its accuracy.",
]
THRESHOLDS = (0.990, 0.993, 0.995)


@dataclass(frozen=True)
class Story:
    """One row: the story's configuration and its own published figure."""

    key: str
    story: str
    figure: str
    model: dict[str, Any]
    train: dict[str, Any]
    seeds: int = 1
    data: dict[str, Any] = field(default_factory=dict)


def _mlp(depth: int, width: int, dropout: float, epochs: int, key: str, story: str) -> Story:
    return Story(key, story, "not quoted", {"family": "mlp", "depth": depth, "width": width, "dropout": dropout},
                 {**MLP_TRAIN, "epochs": epochs}, seeds=3 if epochs <= 10 else 1)


STORIES = [
    Story("tf_tutorial", "TensorFlow tutorial CNN: conv 32 and 64 filters 5×5, max-pool, dense 1024, dropout 0.5, "
          "Adam 1e-4, batch 50", "99.22%", TUTORIAL, TUTORIAL_TRAIN, data=TUTORIAL_DATA),
    Story("table_16_32", "its table: 16 and 32 filters", "99.12%",
          {**TUTORIAL, "width": {"layers": [16, 32]}}, TUTORIAL_TRAIN, data=TUTORIAL_DATA),
    Story("table_3x3", "its table: 3×3 kernels", "99.12%", {**TUTORIAL, "kernel_size": 3}, TUTORIAL_TRAIN,
          data=TUTORIAL_DATA),
    Story("table_4x4", "its table: 4×4 kernels", "99.25%", {**TUTORIAL, "kernel_size": 4}, TUTORIAL_TRAIN,
          data=TUTORIAL_DATA),
    Story("table_64_128_2048", "its table: 64 and 128 filters, dense 2048", "9.8% (never learned)",
          {**TUTORIAL, "width": {"layers": [64, 128]}, "dense_units": 2048}, TUTORIAL_TRAIN, data=TUTORIAL_DATA),
    _mlp(1, 50, 0.0, 10, "mlp_50", "Keras tutorial MLP: 784-50-10"),
    _mlp(1, 500, 0.0, 10, "mlp_500", "… 500 wide"),
    _mlp(5, 50, 0.0, 10, "mlp_5x50", "… 5×50 deep"),
    _mlp(5, 50, 0.2, 10, "mlp_5x50_dropout", "… with dropout 0.2"),
    _mlp(5, 50, 0.2, 50, "mlp_5x50_50_epochs", "… 50 epochs"),
    _mlp(5, 500, 0.2, 50, "mlp_5x500", "… 5×500, dropout 0.2, 50 epochs"),
    Story("pytorch_cnn", "PyTorch CNN: conv 32 5×5, conv 32 5×5, conv 64 3×3, dense 64, Adam 1e-3", "98.85%",
          {"family": "cnn", "depth": 3, "width": {"layers": [32, 32, 64]}, "kernel_size": {"layers": [5, 5, 3]},
           "dense_units": 64, "dropout": 0.5},
          {"batch_size": 64, "optimizer": "adam", "learning_rate": 1e-3, "epochs": 10}),
    Story("numpy_cnn", "NumPy CNN: conv 8 3×3, max-pool, dropout, flatten, dense", "90%",
          {"family": "cnn", "depth": 1, "width": 8, "kernel_size": 3, "dense_units": 0, "dropout": 0.25},
          {"batch_size": 32, "optimizer": "sgd", "learning_rate": 0.01, "epochs": 3}, seeds=3),
    Story("augment", "105 tracked experiments, dropout and augmentation: their best", "99%",
          {"family": "cnn", "depth": 2, "width": {"layers": [32, 64]}, "kernel_size": 3, "dense_units": 128,
           "dropout": 0.3},
          {"batch_size": 128, "optimizer": "adam", "learning_rate": 1e-3, "epochs": 10,
           "augmentation": {"rotation": 0.03, "shift": 0.1, "zoom": 0.1}}),
]


def space_of(story: Story, *, quick: bool, seeds: int | None) -> dict[str, Any]:
    """The story's fixed search space: one trial per seed; ``quick``: 1,000 images and one epoch.

    Example:
        >>> space = space_of(STORIES[0], quick=True, seeds=None)
        >>> space["study"]["name"], space["study"]["n_trials"], space["train"]["epochs"]
        ('reproduce_quick_tf_tutorial', 1, 1)
    """
    data: dict[str, Any] = {"dataset": "mnist", "validation_split": 0.1, **story.data}
    train = {"schedule": "constant", **story.train}  # every story trained at a constant rate
    n = seeds or story.seeds
    if quick:
        data.update(train_size=1000, test_size=1000)
        train["epochs"] = 1
        n = 1
    prefix = "reproduce_quick_" if quick else "reproduce_"
    return {"data": data, "model": story.model, "train": train, "objective": "val_accuracy",
            "study": {"name": prefix + story.key, "n_trials": n, "seed": 0, "pruner": "none",
                      "test_on": "all"}}  # every seed's test accuracy is the measurement


def summarise(trials: list[Any]) -> dict[str, Any]:
    """A row's measured columns from a story's finished trials (one per seed)."""
    done = [t for t in trials if records.TEST_ACCURACY in t.user_attrs]
    accuracies = [t.user_attrs[records.TEST_ACCURACY] for t in done]
    stopped = [t for t in trials if t.state.name == "PRUNED"]
    seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete]
    mean = statistics.mean(accuracies) if accuracies else None
    if accuracies:
        spread = f" ± {statistics.stdev(accuracies):.2%}" if len(accuracies) > 1 else ""
        result = f"{statistics.mean(accuracies):.2%}{spread}"
    else:
        result = "—"
    if stopped:
        reason = stopped[0].user_attrs.get(records.REASON, "pruned")
        result += f" (stopped after {stopped[0].user_attrs.get('epochs', '?')} epoch(s): {reason})"
    return {
        "result": result,
        "mean": mean,
        "seeds": len(trials),
        "epochs": "/".join(sorted({str(t.user_attrs.get("epochs", "?")) for t in trials})),
        "minutes": f"{statistics.mean(seconds) / 60:.1f}" if seconds else "—",
        "precision": "/".join(sorted({str(t.user_attrs.get("precision", "float32")) for t in trials})),
    }


def best_study_row(storage: str) -> dict[str, Any] | None:
    """The ``mnist_best`` study's best model and its time to 99.0 / 99.3 / 99.5 % test accuracy, if it ran.

    The best model so far (by validation accuracy, as the study chooses) is followed in the order trials
    finished; the time to a threshold is when that model's test accuracy first reached it, counted from the
    study's first trial start.
    """
    import optuna

    try:
        study = optuna.load_study(study_name=BEST_STUDY, storage=storage)
    except KeyError:
        return None
    finished = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.datetime_complete)
    if not finished:
        return None
    start = min(t.datetime_start for t in study.trials if t.datetime_start)
    best = None
    reached: dict[float, tuple[float, int]] = {}  # threshold → (seconds, the trial whose model reached it)
    for trial in finished:
        if best is None or trial.value > best.value:
            best = trial
        for threshold in THRESHOLDS:
            if threshold not in reached and best.user_attrs.get(records.TEST_ACCURACY, 0) >= threshold:
                reached[threshold] = ((trial.datetime_complete - start).total_seconds(), best.number)
    assert best is not None
    last = max(t.datetime_complete for t in study.trials if t.datetime_complete)
    times = ", ".join(f"{th:.1%}: " + (f"{reached[th][0] / 60:.0f} min (trial {reached[th][1]})" if th in reached
                                       else "not reached") for th in THRESHOLDS)
    accuracy = best.user_attrs.get(records.TEST_ACCURACY)
    return {"result": f"{accuracy:.2%}" if accuracy is not None else "—", "accuracy": accuracy,
            "trials": len(study.trials), "minutes": f"{(last - start).total_seconds() / 60:.0f}",
            "epochs": best.user_attrs.get("epochs", "?"), "times": times, "best_trial": best.number,
            # baselines given in advance (study.enqueue): queued trials that are not a retry or a promotion
            "enqueued": sum(t.system_attrs.get("fixed_params") is not None and records.RETRY_OF not in t.user_attrs
                            and records.CONTINUES not in t.user_attrs for t in study.trials),
            "precision": best.user_attrs.get("precision", "float32")}


def write_table(rows: list[tuple[Story, dict[str, Any] | None]], best: dict[str, Any] | None, out: Path,
                command: str) -> None:
    lines = [
        "# The MNIST stories, reproduced",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} (see `scripts/reproduce.py`). Full MNIST: "
        "54,000 training and 6,000 validation images (from the 60,000), the 10,000 test images evaluated once per "
        "trained model (the TensorFlow tutorial's rows: 50,000 and 10,000, see the notes). Accuracy is on the test "
        "set, mean ± standard deviation over the seeds; minutes are wall "
        "time per seed on this machine (2 CPU cores, no GPU). One line re-runs a row: "
        "`python scripts/reproduce.py --only KEY`.",
        "",
        "| story | its figure | toolkit (test) | beaten? | seeds | epochs | minutes | precision | key |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for story, row in rows:
        if row is None:
            lines.append(f"| {story.story} | {story.figure} | not run yet | | | | | | `{story.key}` |")
            continue
        lines.append(f"| {story.story} | {story.figure} | {row['result']} | {verdict(story.figure, row['mean'])} | "
                     f"{row['seeds']} | {row['epochs']} | {row['minutes']} | {row['precision']} | `{story.key}` |")
    if best is not None:
        lines += [
            f"| `search_spaces/mnist_best.yaml`: a study, its best model | {BEST_GOAL} (the goal) | {best['result']} | "
            f"{verdict(BEST_GOAL, best['accuracy'])} | {best['trials']} trials | {best['epochs']} | "
            f"{best['minutes']} (study) | {best['precision']} | `scripts/tune.sh search_spaces/mnist_best.yaml` |",
            "",
            f"`mnist_best`, time from its first trial to its best model's test accuracy: {best['times']}. Its best "
            f"model is trial {best['best_trial']}'s; configurations given in advance: {best['enqueued'] or 'none'}.",
        ]
    lines += ["", *NOTES]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def verdict(figure: str, accuracy: float | None) -> str:
    """Whether the toolkit's test accuracy beat a story's figure ("99.22%"), compared at the figure's own
    precision (Keras's float32 accuracy 9,922/10,000 reads 0.99220002: a tie, not a win); "—" where there is
    none to beat.

    Example:
        >>> verdict("99.22%", 0.9930), verdict("99.22%", 0.9922000169754028), verdict("99.22%", 0.9901)
        ('yes', 'tied', 'no')
        >>> verdict("99.50%", 0.9947)  # a goal missed by 0.03 points, though 99.47% reads as 99.5%
        'no'
        >>> verdict("not quoted", 0.98)
        '—'
    """
    match = re.match(r"(\d+)(?:\.(\d+))?%", figure)
    if match is None or accuracy is None:
        return "—"
    decimals = len(match.group(2) or "")
    measured, quoted = round(accuracy * 100, decimals), float(match.group(0)[:-1])
    return "yes" if measured > quoted else "tied" if measured == quoted else "no"


def finished_trials(storage: str, name: str) -> list[Any] | None:
    """The complete and pruned trials of study ``name``, or None if it was never run."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")] or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated story keys to train (default: all): " +
                        ", ".join(s.key for s in STORIES))
    parser.add_argument("--seeds", type=int, help="seeds per story (default: 3 for the MLPs of 10 epochs and the "
                        "NumPy CNN, 1 for the others: about 1¾ hours in all on 2 cores)")
    parser.add_argument("--quick", action="store_true",
                        help="1,000 images, 1 epoch, one seed, no tracking: minutes, not the reproduction")
    parser.add_argument("--table", action="store_true", help="train nothing: write the table from the storage")
    parser.add_argument("--out", type=Path, help="the table (default: docs/results.md; with --quick, "
                        "mlruns/results_quick.md)")
    parser.add_argument("--storage", default="sqlite:///mlruns/optuna.db", help="Optuna storage URL")
    parser.add_argument("--data-dir", help="a folder holding mnist.npz (default: $TUNING_DATA_DIR, else download)")
    args = parser.parse_args(argv)
    chosen = [] if args.table else STORIES
    if args.only:
        keys = args.only.split(",")
        unknown = sorted(set(keys) - {s.key for s in STORIES})
        if unknown:
            parser.error(f"unknown story {', '.join(unknown)}; choose from {', '.join(s.key for s in STORIES)}")
        chosen = [s for s in STORIES if s.key in keys]
    out = args.out or (Path("mlruns") / "results_quick.md" if args.quick else ROOT / "docs" / "results.md")
    for story in chosen:
        space = space_of(story, quick=args.quick, seeds=args.seeds)
        print(f"{story.key}: {space['study']['n_trials']} seed(s) × {space['train']['epochs']} epoch(s) ...",
              file=sys.stderr, flush=True)
        study = tuning.run(space, storage=args.storage, tracking=not args.quick, data_dir=args.data_dir,
                           verbose=False)
        row = summarise([t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")])
        print(f"{story.key}: {row['result']} ({row['minutes']} min per seed)", flush=True)
    rows = []  # every story run so far in this storage, not only this time's
    for story in STORIES:
        trials = finished_trials(args.storage, space_of(story, quick=args.quick, seeds=None)["study"]["name"])
        rows.append((story, summarise(trials) if trials else None))
    best = None if args.quick else best_study_row(args.storage)
    write_table(rows, best, out, "python scripts/reproduce.py" + (" --quick" if args.quick else ""))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
