"""Training throughput of the TensorFlow tutorial CNN: the toolkit's settings against the tutorial's own.

The model is the tutorial's (conv 32 and 64 filters 5×5, max-pool, dense 1024, dropout 0.5, Adam 1e-4). Each
setting trains the same MNIST images for one epoch, twice (the first epoch, with graph tracing, is not
counted), alternating setting by setting so that this machine's drift hits all alike:

- ``bare``: plain Keras ``model.fit`` on NumPy arrays, float32, batch 50 (the tutorial's setup): the baseline;
- ``toolkit``: the same configuration through ``tuning.training.train`` (the toolkit's trial loop), float32,
  batch 50;
- ``toolkit-auto-256`` / ``toolkit-auto-1024``: through the toolkit with ``train.precision: auto`` (what this
  machine's hardware gets: ``mixed_bfloat16`` with AMX or a recent GPU, float32 otherwise) at batch 256 / 1024;
- ``toolkit-bf16-256`` / ``toolkit-bf16-1024``: ``mixed_bfloat16`` forced, to show what bfloat16 does here.

Prints images per second for each, the ratio to the baseline, and the share of this machine's matrix-multiply
ceiling (measured in the same run with ``tf.matmul`` on 4096×4096 matrices, in float32 and bfloat16) that the
training reaches, counting 3 × the forward pass's multiply-adds as the training FLOPs.

With ``--to-accuracy TARGET``, it measures instead how long each setup trains on MNIST (all 60,000 training
images by default, ``--images`` fewer) until its test accuracy reaches TARGET, evaluating the 10,000 test images
after every epoch (inside the epoch's time, for both alike), at most ``--max-epochs`` epochs:

- ``tutorial``: plain Keras, float32, batch 50, Adam 1e-4 (the tutorial's own setup): the baseline;
- ``toolkit``: through the toolkit, ``train.precision: auto``, batch 1024, and the learning rate moved with the
  batch by the toolkit's linear scaling rule (``lr_scaling: linear`` from the tutorial's 1e-4 at batch 50, so
  2.05e-3), kept constant (the race has no known end for a schedule to decay towards).

It prints each setup's test accuracy after every epoch and the seconds until the target, then the ratio
(tutorial / toolkit): how many times sooner the toolkit's setting reaches the same test accuracy.

Usage: python scripts/bench_throughput.py [--images 12000] [--rounds 2] [--data-dir DIR]
       python scripts/bench_throughput.py --to-accuracy 0.99 [--max-epochs 8] [--images N] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuning import data as data_module  # noqa: E402
from tuning.space import DataSpec, ModelConfig, TrainConfig, TrialConfig  # noqa: E402
from tuning.training import import_keras  # noqa: E402

TUTORIAL = ModelConfig(family="cnn", depth=2, width=(32, 64), kernel_size=(5, 5), dense_units=1024, dropout=(0.5,))
#: Multiply-adds of one forward pass ×2 (FLOPs): conv1 28·28·32·25, conv2 14·14·64·800, dense 3136·1024, 1024·10.
FORWARD_FLOPS = 2 * (28 * 28 * 32 * 25 + 14 * 14 * 64 * 800 + 3136 * 1024 + 1024 * 10)
SETTINGS = {  # name: (through the toolkit?, precision, batch size)
    "bare": (False, "float32", 50),
    "toolkit": (True, "float32", 50),
    "toolkit-auto-256": (True, "auto", 256),
    "toolkit-auto-1024": (True, "auto", 1024),
    "toolkit-bf16-256": (True, "mixed_bfloat16", 256),
    "toolkit-bf16-1024": (True, "mixed_bfloat16", 1024),
}


def matmul_ceiling(dtype: str, n: int = 4096, repeats: int = 10) -> float:
    """GFLOP/s of ``tf.matmul`` on n×n matrices in ``dtype`` (best of ``repeats``)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def one_epoch(name: str, dataset: Any) -> float:
    """Seconds of the second of two epochs of ``name``'s setting (the first traces the graph)."""
    keras = import_keras()
    through_toolkit, precision, batch = SETTINGS[name]
    if through_toolkit:
        from tuning.training import train

        cfg = TrialConfig(TUTORIAL, TrainConfig(epochs=2, batch_size=batch, learning_rate=1e-4, precision=precision,
                                                chance_epochs=0))
        result = train(cfg, dataset, seed=0, evaluate_test=False)
        return result.history["epoch_seconds"][-1]
    from tuning.models import build_model

    keras.backend.clear_session()
    keras.mixed_precision.set_dtype_policy(precision)
    model = build_model(TUTORIAL, dataset.input_shape, dataset.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds = time.perf_counter() - self.start

    timer = Timer()
    model.fit(dataset.x_train, dataset.y_train, batch_size=batch, epochs=2,
              validation_data=(dataset.x_val, dataset.y_val), callbacks=[timer], verbose=0)
    return timer.seconds


def epochs_to_accuracy(name: str, dataset: Any, target: float, max_epochs: int) -> list[tuple[float, float]]:
    """``(seconds, test accuracy)`` after each epoch of ``name`` (``tutorial`` or ``toolkit``) until ``target``.

    ``dataset``'s validation set is the test set, so Keras evaluates it at the end of every epoch.
    """
    keras = import_keras()
    if name == "toolkit":
        from tuning.training import train

        cfg = TrialConfig(TUTORIAL, TrainConfig(epochs=max_epochs, batch_size=1024, learning_rate=1e-4,
                                                lr_scaling="linear", lr_reference_batch=50, schedule="constant",
                                                precision="auto", chance_epochs=0))
        reached = lambda epoch, logs: "reached" if logs["val_accuracy"] >= target else None  # noqa: E731
        history = train(cfg, dataset, seed=0, on_epoch=reached, evaluate_test=False).history
        return list(zip(history["epoch_seconds"], history["val_accuracy"], strict=True))
    from tuning.models import build_model

    keras.backend.clear_session()
    keras.mixed_precision.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    model = build_model(TUTORIAL, dataset.input_shape, dataset.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    epochs: list[tuple[float, float]] = []

    class Race(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            epochs.append((time.perf_counter() - self.start, float(logs["val_accuracy"])))
            self.model.stop_training = epochs[-1][1] >= target

    model.fit(dataset.x_train, dataset.y_train, batch_size=50, epochs=max_epochs,
              validation_data=(dataset.x_val, dataset.y_val), callbacks=[Race()], verbose=0)
    return epochs


def race(target: float, max_epochs: int, images: int | None) -> None:
    """Print the ``--to-accuracy`` race: each setup's test accuracy per epoch and its seconds to ``target``."""
    import dataclasses

    full = data_module.load_spec(DataSpec(train_size=images, validation_split=0.01))
    dataset = dataclasses.replace(full, x_val=full.x_test, y_val=full.y_test)  # Keras evaluates the test set
    print(f"{len(dataset.x_train)} training images, {len(dataset.x_val)} test images; target test accuracy "
          f"{target:.2%}, at most {max_epochs} epochs")
    to_target: dict[str, float | None] = {}
    for name in ("tutorial", "toolkit"):
        epochs = epochs_to_accuracy(name, dataset, target, max_epochs)
        elapsed, to_target[name] = 0.0, None
        for number, (seconds, accuracy) in enumerate(epochs, 1):
            elapsed += seconds
            print(f"{name:<9} epoch {number}: {elapsed:7.1f} s, test accuracy {accuracy:.4f}", flush=True)
            if accuracy >= target and to_target[name] is None:
                to_target[name] = elapsed
    for name, seconds in to_target.items():
        print(f"{name:<9} seconds to {target:.2%}: " + (f"{seconds:.1f}" if seconds else f"not in {max_epochs} epochs"))
    if to_target["tutorial"] and to_target["toolkit"]:
        print(f"ratio (tutorial / toolkit) at equal test accuracy: {to_target['tutorial'] / to_target['toolkit']:.2f}x")
    else:
        print("ratio (tutorial / toolkit) at equal test accuracy: - (a setup did not reach the target)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=None,
                        help="training images (default 12,000 before 1/6 validation; with --to-accuracy 60,000)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--to-accuracy", type=float, help="race to this test accuracy instead (e.g. 0.99)")
    parser.add_argument("--max-epochs", type=int, default=8, help="with --to-accuracy: epochs at most")
    args = parser.parse_args(argv)
    if args.data_dir:
        os.environ["TUNING_DATA_DIR"] = args.data_dir
    if args.to_accuracy is not None:
        import_keras()
        race(args.to_accuracy, args.max_epochs, args.images)
        return 0
    names = [n for n in args.settings.split(",") if n]
    import_keras()
    from tuning.training import resolve_precision as resolve

    policy, why = resolve("auto")
    dataset = data_module.load_spec(DataSpec(train_size=args.images or 12000, validation_split=1 / 6, test_size=0))
    n_images = len(dataset.x_train)
    print(f"{n_images} training images per epoch; train.precision auto → {policy} ({why})")
    seconds: dict[str, list[float]] = {n: [] for n in names}
    measured: dict[str, list[float]] = {"float32": [], "mixed_bfloat16": []}
    for r in range(args.rounds):
        measured["float32"].append(matmul_ceiling("float32"))
        measured["mixed_bfloat16"].append(matmul_ceiling("bfloat16"))
        print(f"round {r + 1}: matmul ceiling float32 {measured['float32'][-1]:.0f} GFLOP/s, bfloat16 "
              f"{measured['mixed_bfloat16'][-1]:.0f} GFLOP/s", flush=True)
        for name in names:
            seconds[name].append(one_epoch(name, dataset))
            print(f"round {r + 1}: {name:<18} {n_images / seconds[name][-1]:8.0f} images/s", flush=True)
    ceilings = {k: statistics.median(v) for k, v in measured.items()}
    base = n_images / statistics.median(seconds["bare"]) if "bare" in seconds else None
    print("\nsetting              images/s  vs bare  share of the matmul ceiling")
    for name in names:
        rate = n_images / statistics.median(seconds[name])
        precision = SETTINGS[name][1] if SETTINGS[name][1] != "auto" else policy
        ceiling = ceilings["mixed_bfloat16" if "bfloat16" in precision else "float32"]
        share = rate * 3 * FORWARD_FLOPS / 1e9 / ceiling
        ratio = f"{rate / base:7.2f}x" if base else "      -"
        print(f"{name:<20} {rate:9.0f}  {ratio}  {share:6.1%} ({precision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
