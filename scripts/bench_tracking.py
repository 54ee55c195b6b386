"""Per-trial cost of MLflow tracking, as ratios against an untracked baseline measured in the same run.

Trains the same small Keras MLP (about 1.6 s per trial on a 2-core CPU) through the tracker's hooks,
alternating untracked and tracked trials so that both see the same machine load, and prints:

- wall time per trial, tracked / untracked;
- time the trial's own thread spends inside the tracker's hooks (what training waits for);
- MlflowClient.create_run latency (synchronous at trial start) and the final flush.

Usage:
    python scripts/bench_tracking.py                 # embedded SQLite (the default location)
    python scripts/bench_tracking.py --server        # also against a local `mlflow server`
    python scripts/bench_tracking.py --trials 10 --rows 4000 --epochs 2

MNIST comes from --data-dir, else $TUNING_DATA_DIR, else a Keras download (as in ``tuning.data``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The local server is asked directly, never through an http_proxy of the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Timed:
    """Wraps an observer and adds up the time each hook takes in the calling thread."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds, self.by_hook = inner, 0.0, {}

    def __getattr__(self, hook):
        fn = getattr(self.inner, hook)

        def timed(*args):
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent = time.perf_counter() - start
                self.seconds += spent
                self.by_hook[hook] = self.by_hook.get(hook, 0.0) + spent

        return timed


def _server(home: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(exe), "server", "--backend-store-uri", f"sqlite:///{home / 's.db'}", "--artifacts-destination",
         str(home / "art"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(300):
        try:
            _NO_PROXY.open(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("mlflow server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per mode (default 8)")
    parser.add_argument("--rows", type=int, default=4000, help="training rows (default 4000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--server", action="store_true", help="also track into a local mlflow server")
    parser.add_argument("--data-dir", help="folder holding mnist.npz (default: $TUNING_DATA_DIR, else Keras)")
    args = parser.parse_args()

    from tuning.training import import_keras

    keras = import_keras()  # TensorFlow's start-up lines stay hidden
    import optuna

    from tuning import data
    from tuning.observers import TrialOutcome
    from tuning.tracking import MlflowTracker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ds = data.load("mnist", path=args.data_dir, train_size=args.rows + 1000, validation_split=1000 / (args.rows + 1000))
    x, y = ds.x_train.reshape(len(ds.x_train), -1), ds.y_train
    xv, yv = ds.x_val.reshape(len(ds.x_val), -1), ds.y_val

    home = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    server = None
    try:
        modes: dict[str, object] = {"untracked": None, "sqlite": MlflowTracker(f"sqlite:///{home / 'mlflow.db'}")}
        if args.server:
            server, url = _server(home)
            modes["server"] = MlflowTracker(url)

        class FakeSpace:  # what study_started reads
            def to_dict(self):
                return {"bench": True}

        studies, hooks, walls = {}, {}, {m: [] for m in modes}
        for mode, tracker in modes.items():
            study = optuna.create_study(study_name=f"bench-{mode}", storage=f"sqlite:///{home / 'optuna.db'}",
                                        direction="maximize")  # fmt: skip
            study.set_user_attr("objectives", ["val_accuracy"])
            studies[mode] = study
            if tracker is not None:
                tracker.check()
                hooks[mode] = Timed(tracker)
                hooks[mode].study_started(study, FakeSpace())

        def one_trial(mode: str) -> None:
            study, hook = studies[mode], hooks.get(mode)
            trial = study.ask()
            width = trial.suggest_categorical("model.width", [256])
            start = time.perf_counter()
            if hook:
                hook.trial_started(trial, None)
            keras.utils.clear_session()
            model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(width, activation="relu"),
                                      keras.layers.Dense(10, activation="softmax")])  # fmt: skip
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

            class Report(keras.callbacks.Callback):
                def on_epoch_end(self, epoch, logs=None):
                    if hook:
                        hook.epoch_ended(trial, epoch + 1, dict(logs or {}))

            fit = model.fit(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=64, verbose=0,
                            callbacks=[Report()])  # fmt: skip
            value = fit.history["val_accuracy"][-1]
            if hook:
                attrs = {"epochs": args.epochs, "param_count": model.count_params(), "train_seconds": 1.0}
                hook.trial_finished(trial, TrialOutcome("complete", [value], None, model, fit.history, attrs))
            study.tell(trial, value)
            walls[mode].append(time.perf_counter() - start)

        for mode in modes:  # warm-up: TensorFlow start, first model, first MLflow calls
            one_trial(mode)
        for mode in walls:
            walls[mode].clear()
        for tracker in modes.values():
            if tracker is not None:
                tracker.flush()
        for hook in hooks.values():
            hook.seconds, hook.by_hook = 0.0, {}
        for _ in range(args.trials):
            for mode in modes:
                one_trial(mode)

        from mlflow import MlflowClient

        base = statistics.median(walls["untracked"])
        print(f"{args.trials} trials per mode, {args.rows} rows x {args.epochs} epochs; untracked median {base:.3f} s")
        print(f"{'mode':<10} {'median s':>9} {'ratio':>7} {'hooks ms/trial':>15} {'create_run ms':>14} {'flush s':>8}")
        for mode, tracker in modes.items():
            med = statistics.median(walls[mode])
            hook_ms = hook_ms_text = create_text = flush_text = "-"
            if tracker is not None:
                hook_ms = hooks[mode].seconds / args.trials * 1000
                hook_ms_text = f"{hook_ms:.1f}"
                start = time.perf_counter()
                hooks[mode].study_finished(studies[mode], False)
                flush_text = f"{time.perf_counter() - start:.2f}"
                client = MlflowClient(tracker.tracking_uri)
                exp = client.get_experiment_by_name(f"bench-{mode}").experiment_id
                lat = []
                for _ in range(20):
                    t = time.perf_counter()
                    run = client.create_run(exp, run_name="latency")
                    lat.append(time.perf_counter() - t)
                    client.delete_run(run.info.run_id)
                create_text = f"{statistics.median(lat) * 1000:.1f}"
            print(f"{mode:<10} {med:>9.3f} {med / base:>7.3f} {hook_ms_text:>15} {create_text:>14} {flush_text:>8}")
        for mode, hook in hooks.items():
            parts = ", ".join(f"{name} {sec / args.trials * 1000:.1f}" for name, sec in hook.by_hook.items())
            print(f"{mode}: ms per trial in the trial's thread by hook: {parts}")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
