"""Fault drill: break a running study in four ways and count what was lost (the goal: nothing).

1. **MLflow server killed mid-study**: a real ``mlflow server``, ``tuning run`` tracking into it, the server
   SIGKILLed after two trials. Prints trial seconds before and after the kill, the warnings, then restarts the
   server, runs ``tuning sync`` and counts trials without a finished MLflow run.
2. **SIGKILL at random points**, ``--kills`` times: ``tuning run`` is killed at a random moment, then started
   again, until the study is complete. Every trial seen COMPLETE before a kill must still be COMPLETE at the
   end; no trial may stay RUNNING; the counted total must be exact.
3. **A full disk**: the Optuna storage on a small tmpfs (as root) or, without root, a child limited by
   ``RLIMIT_FSIZE``. The study must stop with a clear message and exit 1, keep its finished trials, and
   resume to completion once there is room again.
4. **A garbled database**: a copy of the storage from 2 with random bytes over its pages. ``tuning studies``
   and ``tuning run`` must exit 2 with a message naming the file; the original is untouched.

Usage:
    python scripts/fault_drill.py                   # about 5-10 minutes on 2 cores
    python scripts/fault_drill.py --kills 8 --seed 1 --keep

MNIST comes from $TUNING_DATA_DIR (or a Keras download). Everything happens in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

SPACE = {
    "data": {"dataset": "mnist", "train_size": 300, "validation_split": 0.2, "test_size": 200},
    "model": {"family": "mlp", "depth": {"low": 1, "high": 2}, "width": {"per_layer": [16, 32]}},
    "train": {"epochs": {"low": 1, "high": 2}, "batch_size": 64, "learning_rate": 0.003, "chance_epochs": 0},
    "objective": {"metric": "val_accuracy"},
    "study": {"name": "drill", "n_trials": 8, "seed": 0, "pruner": "none"},
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def _tuning(*args: str) -> list[str]:
    return [PYTHON, "-m", "tuning", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _states(db: Path) -> dict[int, str]:
    """Trial number → state, read without changing the file (nothing if it has no tables yet)."""
    if not db.exists():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as connection:
            return dict(connection.execute("select number, state from trials").fetchall())
    except sqlite3.Error:
        return {}


def _start_server(home: Path, port: int) -> subprocess.Popen:
    home.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [str(Path(PYTHON).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
         "--artifacts-destination", str(home / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=home, stdout=subprocess.DEVNULL, stderr=(home / "server.log").open("a"), start_new_session=True,
    )  # fmt: skip
    for _ in range(600):
        try:
            with _NO_PROXY.open(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("mlflow server did not start")


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def drill_server(folder: Path) -> dict[str, object]:
    """1: the MLflow server dies after two trials, then comes back for ``tuning sync``."""
    import optuna
    from mlflow import MlflowClient

    folder.mkdir()
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "study": {**SPACE["study"], "n_trials": 6}}))
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(folder / "server", port)
    started = time.monotonic()
    run = subprocess.Popen(_tuning("run", str(space), "--tracking-uri", uri, "--quiet"), cwd=folder,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    db = folder / "mlruns" / "optuna.db"
    while sum(s == "COMPLETE" for s in _states(db).values()) < 2 and run.poll() is None:
        time.sleep(0.2)
    _kill_group(server)
    _, err = run.communicate()
    total = time.monotonic() - started
    study = optuna.load_study(study_name="drill", storage=f"sqlite:///{db}")
    seconds = [round((t.datetime_complete - t.datetime_start).total_seconds(), 1) for t in study.trials]
    server = _start_server(folder / "server", port)
    try:
        sync = subprocess.run(_tuning("sync", "drill", "--tracking-uri", uri), cwd=folder, capture_output=True,
                              text=True, env=_env())
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("drill").experiment_id], max_results=1000)
    finally:
        _kill_group(server)
    finished = {r.data.tags.get("optuna.trial_number") for r in runs
                if r.data.tags.get("tuning.role") == "trial" and r.info.status != "RUNNING"}
    missing = [t.number for t in study.trials if str(t.number) not in finished]
    return {
        "exit code": run.returncode,
        "study seconds": round(total, 1),
        "trial seconds (killed after trial 1)": seconds,
        "'does not answer' warnings": err.count("does not answer"),
        "stderr lines": len(err.splitlines()),
        "sync": sync.stdout.strip() or sync.stderr.strip()[-300:],
        "runs still RUNNING": sum(r.info.status == "RUNNING" for r in runs),
        "lost: trials without a finished run after sync": missing,
    }


def drill_sigkill(folder: Path, kills: int, rng: random.Random) -> tuple[dict[str, object], Path]:
    """2: SIGKILL ``tuning run`` at random moments, restart, until the study is complete."""
    folder.mkdir()
    space = folder / "space.yaml"
    n_trials = 40  # enough that every kill lands inside the study, not after it
    space.write_text(yaml.safe_dump({**SPACE, "study": {**SPACE["study"], "n_trials": n_trials}}))
    db = folder / "mlruns" / "optuna.db"
    seen_complete: set[int] = set()
    moments = []
    for _ in range(kills):
        proc = subprocess.Popen(_tuning("run", str(space), "--quiet"), cwd=folder, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=_env())
        moment = round(rng.uniform(2.0, 20.0), 1)  # from start-up to mid-trial
        time.sleep(moment)
        seen_complete |= {n for n, s in _states(db).items() if s == "COMPLETE"}
        proc.kill()
        proc.wait()
        moments.append(moment if proc.returncode == -signal.SIGKILL else f"{moment} (already done)")
    final = subprocess.run(_tuning("run", str(space), "--quiet"), cwd=folder, capture_output=True, text=True,
                           env=_env())
    states = _states(db)
    counted = sum(s in ("COMPLETE", "PRUNED") for s in states.values())
    lost = sorted(n for n in seen_complete if states.get(n) != "COMPLETE")
    return {
        "kills at seconds": moments,
        "final run exit code": final.returncode,
        "trials": len(states),
        "counted (complete+pruned) / n_trials": f"{counted} / {n_trials}",
        "failed (killed, re-run)": sum(s == "FAIL" for s in states.values()),
        "left RUNNING": sum(s == "RUNNING" for s in states.values()),
        "lost: trials complete before a kill, not complete now": lost,
    }, db


def drill_disk(folder: Path) -> dict[str, object]:
    """3: the storage's disk fills up mid-study; then there is room again and the study resumes."""
    folder.mkdir()
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "study": {**SPACE["study"], "n_trials": 40}}))
    small = folder / "small"
    small.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(small)], capture_output=True
    ).returncode == 0
    url = f"sqlite:///{small / 'optuna.db'}"
    limit = 600_000

    def limited() -> None:  # without root: every file of the child may grow to `limit` bytes only
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    try:
        full = subprocess.run(_tuning("run", str(space), "--storage", url, "--quiet", "--no-tracking"), cwd=folder,
                              capture_output=True, text=True, env=_env(), preexec_fn=None if mounted else limited)
        before = {n for n, s in _states(small / "optuna.db").items() if s == "COMPLETE"}
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        resumed = subprocess.run(_tuning("run", str(space), "--storage", url, "--quiet", "--no-tracking"),
                                 cwd=folder, capture_output=True, text=True, env=_env())
        after = _states(small / "optuna.db")
    finally:
        if mounted:
            subprocess.run(["umount", "--lazy", str(small)], capture_output=True)  # lazy: files may be open still
    return {
        "how": "tmpfs of 400 kB, then remounted at 64 MB" if mounted else f"RLIMIT_FSIZE {limit} bytes, then none",
        "exit code when full": full.returncode,
        "message": full.stderr.strip()[-400:],
        "traceback shown": "Traceback" in full.stderr,
        "complete when full": len(before),
        "resume exit code": resumed.returncode,
        "counted after resume / n_trials": f"{sum(s in ('COMPLETE', 'PRUNED') for s in after.values())} / 40",
        "left RUNNING": sum(s == "RUNNING" for s in after.values()),
        "lost: complete before, not complete after": sorted(n for n in before if after.get(n) != "COMPLETE"),
    }


def drill_garble(folder: Path, db: Path, rng: random.Random) -> dict[str, object]:
    """4: a garbled copy of a real storage is refused by reading and running commands; the original is intact."""
    folder.mkdir()
    copy = folder / "garbled.db"
    with contextlib.closing(sqlite3.connect(db)) as connection:  # a consistent copy, WAL included
        connection.execute(f"VACUUM INTO '{copy}'")
    original = db.read_bytes()
    data = bytearray(copy.read_bytes())
    for _ in range(8):  # keep the 100-byte header, garble 8 runs of 512 bytes
        at = rng.randrange(100, max(101, len(data) - 512))
        data[at : at + 512] = os.urandom(512)
    copy.write_bytes(bytes(data))
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    studies = subprocess.run(_tuning("studies", "--storage", f"sqlite:///{copy}"), cwd=folder, capture_output=True,
                             text=True, env=_env())
    run = subprocess.run(_tuning("run", str(space), "--storage", f"sqlite:///{copy}", "--quiet", "--no-tracking"),
                         cwd=folder, capture_output=True, text=True, env=_env())
    return {
        "studies exit code": studies.returncode,
        "studies message": (studies.stderr or studies.stdout).strip()[-300:],
        "run exit code": run.returncode,
        "run message": (run.stderr or run.stdout).strip()[-300:],
        "traceback shown": "Traceback" in studies.stderr + run.stderr,
        "original storage unchanged": db.read_bytes() == original,
    }


def _print(title: str, result: dict[str, object]) -> None:
    print(f"\n== {title}")
    for key, value in result.items():
        print(f"  {key}: {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs in drill 2 (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="tuning-fault-drill-"))
    print(f"fault drill in {base} (seed {args.seed})")
    lost = 0
    try:
        result = drill_server(base / "server")
        _print("1. MLflow server SIGKILLed after two trials, restarted for `tuning sync`", result)
        lost += len(result["lost: trials without a finished run after sync"])  # type: ignore[arg-type]
        result, db = drill_sigkill(base / "sigkill", args.kills, rng)
        _print(f"2. tuning run SIGKILLed {args.kills} times at random moments, then run to the end", result)
        lost += len(result["lost: trials complete before a kill, not complete now"])  # type: ignore[arg-type]
        result = drill_disk(base / "disk")
        _print("3. the storage's disk fills up mid-study, then has room again", result)
        lost += len(result["lost: complete before, not complete after"])  # type: ignore[arg-type]
        _print("4. a garbled copy of the storage from drill 2", drill_garble(base / "garble", db, rng))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nlost: {lost} finished trial(s) in all drills")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
