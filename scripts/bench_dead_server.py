"""Wall time of a small study whose MLflow server dies after trial 1, against the same study untracked (issue 23).

The study: a tiny CNN (800 MNIST training images, 2 epochs, no pruner), 6 trials, run as a user runs it,
``tuning run SPACE --n-trials 6 --set train.epochs=2 --set study.pruner=none --storage sqlite:///...``:

- untracked: ``--no-tracking``;
- tracked, server dead: ``--tracking-uri http://127.0.0.1:PORT`` of a real ``mlflow server`` (its own SQLite
  store, fresh every round), SIGKILLed with its workers the moment the study prints trial 1's line; it never
  comes back, so the study ends with the ``tuning sync`` hint;
- with ``--live``, also tracked into a server that stays up: the plain cost of tracking, for reference.

The studies alternate within each round, and which goes first alternates between rounds: this machine's speed
drifts by about 10 % from one round to the next. A tracked study starts once its server is idle: a freshly
started ``mlflow server`` keeps two cores busy for about 10 s after it first answers (its job consumers start),
which a server that has been up for a while does not.

Prints, per round, the wall seconds of each study (the whole command, Python's start included) and the ratio
tracked-dead / untracked, then where the extra seconds went, read from outside from the times of the command's
own lines: start-up (to the first trial's "Precision" line: importing MLflow, checking the server, creating the
parent run), trials up to the kill (server up), trials after the kill (server dead), and the end (from the last
trial's line to the exit: the final flush and the ``tuning sync`` hint), each as tracked minus untracked; also
how long after the kill the command said the server does not answer, and the CPU seconds of each study's
process (all its threads): extra wall seconds without extra CPU seconds were spent waiting, and CPU seconds
drift less than wall seconds when other work shares the machine. The last line is the median ratio over the
rounds against the goal (at most 1.2).

Usage:
    python scripts/bench_dead_server.py [--rounds 3] [--trials 6] [--kill-after 1] [--train-size 800]
                                        [--epochs 2] [--live] [--data-dir DIR]

MNIST comes from --data-dir, else $TUNING_DATA_DIR, else a Keras download (as in ``tuning.data``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.2
#: The local server is asked directly, never through an http_proxy of the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_TRIAL_LINE = re.compile(r"^trial +(\d+) ")

SPACE = """\
data: {{dataset: mnist, train_size: {train_size}, validation_split: 0.2}}
model:
  family: cnn
  depth: {{low: 1, high: 2}}
  width: {{per_layer: [8, 16]}}
  kernel_size: [3, 5]
  dense_units: [32, 64]
  dropout: {{low: 0.0, high: 0.3, step: 0.1}}
train:
  epochs: 2
  batch_size: 64
  learning_rate: {{low: 5.0e-4, high: 5.0e-3, log: true}}
objective: {{metric: val_accuracy, direction: maximize}}
study: {{name: dead_server, seed: 0}}
"""


@dataclass
class Study:
    """One ``tuning run``: its wall seconds, the seconds at which its lines were printed, its exit code."""

    wall: float = 0.0
    cpu: float = 0.0  # user + system seconds of the command's process, all threads
    code: int | None = None
    precision: float | None = None  # the first trial starts
    trials: dict[int, float] = field(default_factory=dict)  # trial number -> when its line was printed
    kill: float | None = None
    down_warning: float | None = None  # "does not answer"
    sync_hint: bool = False

    def phases(self, kill_after: int) -> dict[str, float]:
        """Seconds of start-up, trials up to ``kill_after``, the trials after it, and the end."""
        last = max(self.trials.values())
        first = self.precision if self.precision is not None else 0.0
        marker = self.trials[kill_after]
        return {"start-up": first, "trials to the kill": marker - first, "trials after": last - marker,
                "end": self.wall - last}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--trials", type=int, default=6, help="trials per study (default 6)")
    parser.add_argument("--kill-after", type=int, default=1, help="kill the server at this trial's line (default 1)")
    parser.add_argument("--train-size", type=int, default=800, help="MNIST training images (default 800)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial (default 2)")
    parser.add_argument("--live", action="store_true", help="also a tracked study whose server stays up")
    parser.add_argument("--data-dir", help="folder holding mnist.npz (default: $TUNING_DATA_DIR, else Keras)")
    args = parser.parse_args()
    if not 0 <= args.kill_after < args.trials - 1:
        parser.error("--kill-after must name a trial before the last one")

    home = Path(tempfile.mkdtemp(prefix="bench-dead-server-"))
    env = _environment(args.data_dir)
    space = home / "space.yaml"
    space.write_text(SPACE.format(train_size=args.train_size))
    modes = ["untracked", "dead"] + (["live"] if args.live else [])
    print(f"{args.trials} trials of a tiny CNN ({args.train_size} MNIST images, {args.epochs} epochs); the server is "
          f"SIGKILLed at trial {args.kill_after}'s line; {args.rounds} interleaved rounds", flush=True)
    results: dict[str, list[Study]] = {mode: [] for mode in modes}
    try:
        for r in range(args.rounds):
            order = modes if r % 2 == 0 else modes[::-1]
            for mode in order:
                folder = home / f"{mode}-{r}"
                folder.mkdir()
                results[mode].append(_study(mode, args, space, folder, env))
            _report_round(r, results, args.kill_after)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    _summary(results, args.kill_after)


def _environment(data_dir: str | None) -> dict[str, str]:
    """The studies' environment: this checkout importable, MNIST from an absolute folder, no tracking URI."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    folder = data_dir or os.environ.get("TUNING_DATA_DIR")
    if folder:  # the studies run in temporary folders: a relative path would point nowhere
        env["TUNING_DATA_DIR"] = str(Path(folder).resolve())
    return env


def _study(mode: str, args: argparse.Namespace, space: Path, folder: Path, env: dict[str, str]) -> Study:
    """Run one study in ``folder``: untracked, or tracked into a server of its own (killed when ``mode`` is dead)."""
    command = [sys.executable, "-m", "tuning", "run", str(space), "--n-trials", str(args.trials),
               "--set", f"train.epochs={args.epochs}", "--set", "study.pruner=none",
               "--storage", f"sqlite:///{folder / 'optuna.db'}"]  # fmt: skip
    server = None
    if mode == "untracked":
        command.append("--no-tracking")
    else:
        server, url = _start_server(folder)
        command += ["--tracking-uri", url]
    try:
        return _watch(command, folder, env, server if mode == "dead" else None, args.kill_after)
    finally:
        if server is not None:
            _kill(server)


def _watch(command: list[str], folder: Path, env: dict[str, str], victim: subprocess.Popen | None,
           kill_after: int) -> Study:
    """Run ``command``, noting when each line is printed; SIGKILL ``victim`` at trial ``kill_after``'s line."""
    done = Study()
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        now = time.perf_counter() - start
        lines.append(line)
        trial = _TRIAL_LINE.match(line)
        if trial:
            done.trials[int(trial.group(1))] = now
            if victim is not None and done.kill is None and int(trial.group(1)) == kill_after:
                _kill(victim)
                done.kill = now
        elif line.startswith("Precision:") and done.precision is None:
            done.precision = now
        elif "does not answer" in line and done.down_warning is None:
            done.down_warning = now
        elif "tuning sync" in line:
            done.sync_hint = True
    _, status, usage = os.wait4(proc.pid, 0)
    done.wall = time.perf_counter() - start
    done.code = proc.returncode = os.waitstatus_to_exitcode(status)
    done.cpu = usage.ru_utime + usage.ru_stime
    if done.code != 0 or len(done.trials) <= kill_after:
        sys.exit(f"the study failed (exit code {done.code}):\n{''.join(lines[-40:])}")
    return done


def _start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """A real ``mlflow server`` (SQLite store in ``folder``) in its own process group, answering and idle."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=(folder / "mlflow.log").open("w"), start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"mlflow server exited with {proc.returncode}: {(folder / 'mlflow.log').read_text()[-2000:]}")
        try:
            with _NO_PROXY.open(f"{url}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.2)
    else:
        _kill(proc)
        sys.exit("mlflow server did not answer in 120 s")
    if not _wait_idle(proc.pid):
        print("  (the mlflow server was still busy starting after 180 s: the tracked study competes with it)",
              flush=True)
    return proc, url


def _wait_idle(group: int, limit: float = 180.0) -> bool:
    """Wait until the processes of ``group`` use less than 0.2 CPU seconds per second (at most ``limit`` s);
    false when they did not settle."""
    if not Path("/proc/self/stat").exists():  # not Linux: the server's start-up settles in about 10 s here
        time.sleep(15)
        return True
    previous = _group_cpu(group)
    for _ in range(int(limit)):
        time.sleep(1.0)
        now = _group_cpu(group)
        if now - previous < 0.2:
            return True
        previous = now
    return False


def _group_cpu(group: int) -> float:
    """CPU seconds used so far by the live processes of process group ``group`` (from /proc)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:  # fields after the name: state, ppid, pgrp, ..., utime (11), stime (12)
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group (the server and its workers) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _report_round(r: int, results: dict[str, list[Study]], kill_after: int) -> None:
    base, dead = results["untracked"][r], results["dead"][r]
    print(f"round {r + 1}: untracked {base.wall:.1f} s, tracked with the server killed {dead.wall:.1f} s = "
          f"{dead.wall / base.wall:.3f}", flush=True)
    if "live" in results:
        live = results["live"][r]
        print(f"  tracked with the server up {live.wall:.1f} s = {live.wall / base.wall:.3f}", flush=True)
    extra = _extra(base, dead, kill_after)
    print("  extra seconds (tracked-dead - untracked): " + ", ".join(f"{k} {v:+.1f}" for k, v in extra.items()),
          flush=True)
    print(f"  CPU seconds: untracked {base.cpu:.1f}, tracked-dead {dead.cpu:.1f} ({dead.cpu - base.cpu:+.1f})",
          flush=True)
    noticed = f"{dead.down_warning - dead.kill:.1f} s after the kill" if dead.down_warning and dead.kill else "never"
    print(f"  'does not answer' warning: {noticed}; tuning sync hint: {'yes' if dead.sync_hint else 'NO'}", flush=True)


def _extra(base: Study, other: Study, kill_after: int) -> dict[str, float]:
    mine, theirs = other.phases(kill_after), base.phases(kill_after)
    return {k: mine[k] - theirs[k] for k in mine}


def _summary(results: dict[str, list[Study]], kill_after: int) -> None:
    pairs = list(zip(results["untracked"], results["dead"], strict=True))
    print("\nmedian extra seconds per phase (tracked-dead - untracked): " + ", ".join(
        f"{k} {statistics.median(_extra(b, d, kill_after)[k] for b, d in pairs):+.1f}"
        for k in _extra(*pairs[0], kill_after)
    ))  # fmt: skip
    if "live" in results:
        live = [lv.wall / b.wall for b, lv in zip(results["untracked"], results["live"], strict=True)]
        print(f"tracked with the server up / untracked: median {statistics.median(live):.3f}, rounds "
              f"{', '.join(f'{x:.3f}' for x in live)}")
    cpu = [d.cpu / b.cpu for b, d in pairs]
    print(f"CPU seconds, tracked with the server killed / untracked: median {statistics.median(cpu):.3f}, rounds "
          f"{', '.join(f'{x:.3f}' for x in cpu)}")
    ratios = [d.wall / b.wall for b, d in pairs]
    median = statistics.median(ratios)
    verdict = "ok" if median <= GOAL else f"above the {GOAL} goal"
    print(f"tracked with the server killed / untracked: median {median:.3f}, rounds "
          f"{', '.join(f'{x:.3f}' for x in ratios)}   [{verdict}]")


if __name__ == "__main__":
    main()
