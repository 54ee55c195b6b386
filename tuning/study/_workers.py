"""``tuning run --workers N`` / ``--gpus``: several worker processes on this machine, one progress display.

Each worker is the same ``tuning run`` command in a subprocess (``--quiet``), joining the one study in the
shared storage exactly as workers on other machines do: the storage hands out trials, the study's total is kept
by :class:`~tuning.study.TotalGate`, crashed workers are recovered by :func:`~tuning.study.recover`. This parent
process only plans the workers' environments, starts them (the first alone until the study exists, so that two
processes never create the same database at once), prints one line per finished trial from the storage, forwards
Ctrl-C and SIGTERM once to every worker, and prints the summary.

Each worker gets its share of the CPU cores (``TUNING_CPU_THREADS``, applied with ``tf.config.threading``
before TensorFlow starts) and, with ``--gpus``, one GPU (``CUDA_VISIBLE_DEVICES``, memory growth on).

Example:
    >>> [env["CUDA_VISIBLE_DEVICES"] for env in worker_plan(gpus=["0", "1"], trials_per_gpu=2, cpus=8)]
    ['0', '0', '1', '1']
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuning import tracking
from tuning._keras import GPU_ENV, THREADS_ENV, WORKER_INDEX_ENV
from tuning.errors import printable, user_error
from tuning.progress import trial_line
from tuning.study._create import open_storage
from tuning.study._gate import COUNTED_STATES
from tuning.study._recovery import recover

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

__all__ = ["announce_ready", "parse_gpus", "run_workers", "worker_argv", "worker_plan"]

#: Environment variables a worker reads (set by :func:`worker_plan`).
READY_ENV = "TUNING_READY_FILE"

_OWN_OPTIONS = {"--workers": True, "--gpus": True, "--trials-per-gpu": True}


def parse_gpus(text: str, environ: dict[str, str] | None = None, available: Sequence[str] | None = None) -> list[str]:
    """The GPU ids of ``--gpus``: a comma-separated list, or ``all`` (``CUDA_VISIBLE_DEVICES``, else nvidia-smi);
    each one a GPU this machine has (``available``, by default the indices ``nvidia-smi`` lists).

    Checked before anything is written: a GPU the machine does not have would silently train on the CPU.

    Example:
        >>> parse_gpus("0, 2", available=["0", "1", "2"])
        ['0', '2']

    Raises:
        UserInputError: an empty or malformed list, a GPU the machine does not have, or no GPU at all (no
            nvidia-smi, or it lists none).
    """
    environ = os.environ if environ is None else environ
    if text.strip() == "all":
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        ids = [g.strip() for g in visible.split(",") if g.strip()] if visible else _nvidia_smi_gpus()[0]
        if not ids:
            raise user_error(
                "--gpus all found no GPU on this machine (nvidia-smi lists none, CUDA_VISIBLE_DEVICES is unset)",
                received=text, fix="install the NVIDIA driver, list the GPUs (--gpus 0,1), or use --workers N",
            )
        return ids
    ids = [g.strip() for g in text.split(",")]
    if not ids or any(not g.isdigit() for g in ids) or len(set(ids)) != len(ids):
        raise user_error(
            "--gpus takes distinct GPU indices separated by commas, or all",
            received=text, fix="pass e.g. --gpus 0,1 or --gpus all",
        )
    present, why_none = (list(available), "none is available") if available is not None else _nvidia_smi_gpus()
    if not present:
        raise user_error(
            f"--gpus needs NVIDIA GPUs and this machine has none: {why_none}", received=text,
            fix="leave out --gpus to train on the CPU (--workers N for several CPU workers), or install the "
                "NVIDIA driver on a machine with GPUs",
        )
    missing = [g for g in ids if g not in present]
    if missing:
        listed = ", ".join(present)
        raise user_error(
            f"--gpus names {'GPU' if len(missing) == 1 else 'GPUs'} {', '.join(missing)}, which this machine does "
            f"not have (nvidia-smi lists {'GPU' if len(present) == 1 else 'GPUs'} {listed})", received=text,
            fix=f"pass GPUs among {listed}, or --gpus all",
        )
    return ids


def _nvidia_smi_gpus() -> tuple[list[str], str]:
    """The GPU indices ``nvidia-smi`` lists, and why there are none when the list is empty."""
    if shutil.which("nvidia-smi") is None:
        return [], "nvidia-smi is not installed (no NVIDIA driver)"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi could not run ({exc})"
    if out.returncode != 0:
        said = (out.stdout + out.stderr).strip().splitlines()
        return [], f"nvidia-smi failed ({printable(said[0]) if said else f'exit code {out.returncode}'})"
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()], "nvidia-smi lists no GPU"


def worker_plan(
    *, workers: int | None = None, gpus: Sequence[str] = (), trials_per_gpu: int = 1, cpus: int | None = None
) -> list[dict[str, str]]:
    """The environment each worker process gets: its index, its share of CPU threads, its GPU if any.

    With ``gpus``, ``trials_per_gpu`` workers per GPU (``CUDA_VISIBLE_DEVICES`` set to that GPU, memory growth
    on); otherwise ``workers`` CPU workers, which see no GPU.

    Example:
        >>> worker_plan(workers=2, cpus=8)[1]["TUNING_CPU_THREADS"]
        '4'
    """
    cpus = cpus or os.cpu_count() or 1
    devices: list[str | None] = [g for g in gpus for _ in range(trials_per_gpu)] if gpus else [None] * (workers or 1)
    threads = str(max(1, cpus // len(devices)))
    plan = []
    for index, gpu in enumerate(devices):
        env = {WORKER_INDEX_ENV: str(index), THREADS_ENV: threads, "TF_NUM_INTRAOP_THREADS": threads,
               "TF_NUM_INTEROP_THREADS": "1" if int(threads) < 4 else "2"}
        if gpu is None:
            env["CUDA_VISIBLE_DEVICES"] = "" if gpus else os.environ.get("CUDA_VISIBLE_DEVICES", "")
        else:
            env.update({"CUDA_VISIBLE_DEVICES": gpu, GPU_ENV: gpu, "TF_FORCE_GPU_ALLOW_GROWTH": "true"})
        plan.append(env)
    return plan


def announce_ready() -> None:
    """In a worker: tell the parent the study exists (the other workers may start now)."""
    path = os.environ.get(READY_ENV)
    if path:
        Path(path).touch()


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The ``tuning run`` arguments of one worker: the user's, without the parent's own options, quiet.

    Example:
        >>> worker_argv(["run", "s.yaml", "--workers", "3", "--n-trials=9"])
        ['run', 's.yaml', '--n-trials=9', '--quiet']
    """
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _OWN_OPTIONS:
            skip = "=" not in arg
            continue
        out.append(arg)
    return [*out, "--quiet"] if "--quiet" not in out else out


class _Signals:
    """Forwards SIGINT/SIGTERM to the workers (once each time) and remembers the first one."""

    def __init__(self, procs: list[subprocess.Popen]) -> None:
        self.procs = procs
        self.received: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signum)


def run_workers(
    argv: Sequence[str],
    plan: list[dict[str, str]],
    *,
    storage_url: str,
    study_name: str,
    total: int,
    tracking_uri: str | None,
    console: Console,
    errors: Console,
    quiet: bool = False,
) -> tuple[int, optuna.Study | None]:
    """Start one ``tuning run`` worker per entry of ``plan``, show progress, and return (exit code, study)."""
    command = [sys.executable, "-m", "tuning", *worker_argv(argv)]
    ready = Path(tempfile.mkdtemp(prefix="tuning-workers-")) / "ready"
    procs: list[subprocess.Popen] = []
    signals = _Signals(procs)
    previous = {s: signal.signal(s, signals) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        procs.append(_start(command, plan[0], ready))
        while not ready.exists() and procs[0].poll() is None and signals.received is None:
            time.sleep(0.2)
        if not ready.exists():  # the first worker stopped before the study existed: bad input, or Ctrl-C
            code = procs[0].wait()
            return (128 + signals.received if signals.received else _code(code)), None
        for env in plan[1:]:
            if signals.received is None:
                procs.append(_start(command, env, ready))
        if not quiet:
            from rich.markup import escape

            console.print(
                f"Study [bold]{escape(printable(study_name))}[/]: {len(procs)} worker processes (pids "
                f"{', '.join(str(p.pid) for p in procs)}), {total} trials in total."
            )
        study = _load(storage_url, study_name)
        _follow(study, procs, None if quiet else console)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        shutil.rmtree(ready.parent, ignore_errors=True)
    codes = [_code(p.returncode) for p in procs]
    for index, (proc, code) in enumerate(zip(procs, codes, strict=True)):
        if code not in (0, 130, 143):
            errors.print(f"worker {index} (pid {proc.pid}) ended with exit code {code}")
    _finish(study, tracking_uri, total)
    if signals.received is not None:
        return 128 + signals.received, study
    if len(study.get_trials(deepcopy=False, states=COUNTED_STATES)) >= total:
        return 0, study
    return next((c for c in codes if c != 0), 1), study


def _start(command: list[str], env: dict[str, str], ready: Path) -> subprocess.Popen:
    # A session of its own: the terminal's Ctrl-C reaches the parent only, which forwards it exactly once.
    return subprocess.Popen(
        command, env={**os.environ, **env, READY_ENV: str(ready)}, stdout=subprocess.DEVNULL, start_new_session=True
    )


def _code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _load(storage_url: str, study_name: str) -> optuna.Study:
    import optuna

    return optuna.load_study(study_name=study_name, storage=open_storage(storage_url))


def _follow(study: optuna.Study, procs: list[subprocess.Popen], console: Console | None) -> None:
    """Print each trial that finishes (unless ``console`` is None) until every worker has exited."""
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    best: tuple[float, int] | None = None
    maximize = study.directions[0].name == "MAXIMIZE"
    metrics = study.user_attrs.get("objectives", ["value"])
    while True:
        alive = any(p.poll() is None for p in procs)
        for trial in study.get_trials(deepcopy=False):
            if not trial.state.is_finished() or trial.number in seen:
                continue
            seen.add(trial.number)
            if trial.state.name == "COMPLETE" and len(trial.values or []) == 1:
                value = trial.values[0]
                if best is None or (value > best[0] if maximize else value < best[0]):
                    best = (value, trial.number)
            if console is not None:
                console.print(trial_line(trial, metrics, best), highlight=False)
        if not alive:
            return
        time.sleep(1.0)


def _finish(study: optuna.Study, tracking_uri: str | None, total: int) -> None:
    """After the last worker: fail what dead workers left RUNNING, close the study's MLflow run."""
    recover(study, tracking_uri=tracking_uri)
    if tracking_uri:
        tracking.close_study_run(tracking_uri, study, total)
