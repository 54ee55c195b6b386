"""Nothing lost: Ctrl-C, SIGTERM and kill -9 of a real `tuning run` process, then the same command again.

The slow tests drive the real command line in a subprocess on real MNIST images and read the real Optuna
storage (and MLflow store) it leaves behind. The fast ones check the crash-recovery rules of
``tuning.study.recover_dead_workers`` on a real SQLite storage with a real dead process id.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import subprocess_env, tiny_space
from optuna.trial import TrialState

import tuning
from tuning import records
from tuning import study as studies
from tuning.observers import StudyObserver, TrialOutcome
from tuning.study import StudyLock

PYTHON = sys.executable
N_TRIALS = 2
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")


# ---------------------------------------------------------------------------------------------- helpers


def _write_space(folder: Path, **study: Any) -> Path:
    """A space whose trials last a few seconds (2,000 images, 6 epochs), so a signal lands mid-trial."""
    space = tiny_space(
        data={"dataset": "mnist", "train_size": 2000, "validation_split": 0.2, "test_size": 200},
        model={"family": "mlp", "depth": {"low": 1, "high": 2}, "width": {"per_layer": [32, 64]},
               "dropout": {"low": 0.0, "high": 0.3, "step": 0.1}},
        train={"epochs": 6, "batch_size": 32, "learning_rate": 0.002, "chance_epochs": 0},
        study={"name": "nothing_lost", "n_trials": N_TRIALS, "seed": 0, "pruner": "none", **study},
    )
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def _command(space: Path, tracking: bool) -> list[str]:
    return [PYTHON, "-m", "tuning", "run", str(space), *([] if tracking else ["--no-tracking"])]


def _env(mnist_dir: str | None) -> dict[str, str]:
    return subprocess_env(mnist_dir, PYTHONUNBUFFERED="1")


def _start(workdir: Path, mnist_dir: str | None, tracking: bool = False) -> subprocess.Popen:
    space = workdir / "space.yaml"
    return subprocess.Popen(
        _command(space, tracking), cwd=workdir, env=_env(mnist_dir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _run(workdir: Path, mnist_dir: str | None, tracking: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(workdir / "space.yaml", tracking), cwd=workdir, env=_env(mnist_dir), capture_output=True, text=True
    )


def _rows(db: Path, query: str) -> list[tuple]:
    """Read the storage with plain sqlite3 (SELECT only, and only once the file exists)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute(query).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def _wait_mid_trial(proc: subprocess.Popen, db: Path) -> int:
    """Wait until one trial is complete and another is RUNNING with an epoch reported; its number."""
    while proc.poll() is None:
        complete = _rows(db, "SELECT count(*) FROM trials WHERE state = 'COMPLETE'")
        running = _rows(
            db,
            "SELECT t.number FROM trials t JOIN trial_intermediate_values v ON v.trial_id = t.trial_id "
            "WHERE t.state = 'RUNNING' GROUP BY t.number",
        )
        if complete and complete[0][0] >= 1 and running:
            return running[0][0]
        time.sleep(0.05)
    out, err = proc.communicate()
    raise AssertionError(f"the study ended before a trial could be interrupted ({proc.returncode}):\n{out}\n{err}")


def _trials(workdir: Path) -> list[optuna.trial.FrozenTrial]:
    storage = studies.open_storage(f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}")
    return optuna.load_study(study_name="nothing_lost", storage=storage).get_trials()


def _assert_study_complete(trials: list[optuna.trial.FrozenTrial]) -> None:
    states = [t.state for t in trials]
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == N_TRIALS, states
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states


# ---------------------------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_ctrl_c_mid_trial_keeps_finished_trials_and_resume_completes(workdir: Path, mnist_dir: str | None) -> None:
    _write_space(workdir)
    db = workdir / "mlruns" / "optuna.db"
    proc = _start(workdir, mnist_dir, tracking=True)
    number = _wait_mid_trial(proc, db)
    finished_before = _rows(db, "SELECT number, state FROM trials WHERE state = 'COMPLETE' ORDER BY number")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == 130, err
    assert "Interrupted." in err and "Resume with the same command" in err
    assert "Traceback" not in err
    trials = {t.number: t for t in _trials(workdir)}
    interrupted = trials[number]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs[records.REASON] == "interrupted"
    assert all(trials[n].state == TrialState.COMPLETE for n, _ in finished_before)  # nothing finished is lost
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    queued = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert len(queued) == 1 and queued[0].user_attrs[records.RETRY_OF] == number

    resumed = _run(workdir, mnist_dir, tracking=True)
    assert resumed.returncode == 0, resumed.stderr
    after = _trials(workdir)
    _assert_study_complete(after)
    rerun = [t for t in after if t.user_attrs.get(records.RETRY_OF) == number]
    assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE
    assert rerun[0].params == interrupted.params  # the interrupted configuration ran again, once

    _assert_mlflow_agrees(workdir, after, killed=number)


def _assert_mlflow_agrees(workdir: Path, trials: list[optuna.trial.FrozenTrial], killed: int | None) -> None:
    """One MLflow run per trial, ended with the trial's state; the interrupted one KILLED; none left RUNNING."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("nothing_lost")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_id = {r.info.run_id: r for r in runs}
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    trial_runs = [r for r in runs if r.data.tags.get("tuning.role") == "trial"]
    assert len(trial_runs) == len(trials)
    expected = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "FINISHED", TrialState.FAIL: "FAILED"}
    for trial in trials:
        run = by_id[trial.user_attrs[records.MLFLOW_RUN_ID]]
        assert run.data.tags["optuna.trial_number"] == str(trial.number)
        want = "KILLED" if trial.number == killed else expected[trial.state]
        assert run.info.status == want, (trial.number, trial.state, run.info.status)
        if trial.state == TrialState.FAIL:
            assert run.data.tags["tuning.reason"] == trial.user_attrs[records.REASON]


@pytest.mark.slow
def test_sigterm_then_second_signal_exits_at_once_and_resume_completes(
    workdir: Path, mnist_dir: str | None
) -> None:
    _write_space(workdir)
    db = workdir / "mlruns" / "optuna.db"
    proc = _start(workdir, mnist_dir)
    _wait_mid_trial(proc, db)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)  # impatient: the second one must not wait for the clean-up
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert "resume" in err.lower()

    resumed = _run(workdir, mnist_dir)
    assert resumed.returncode == 0, resumed.stderr
    trials = _trials(workdir)
    _assert_study_complete(trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1  # the trial that was running, whichever way the second signal caught it
    assert failed[0].user_attrs[records.REASON] in ("interrupted", studies.dead_worker_reason(proc.pid))
    reruns = [t for t in trials if t.user_attrs.get(records.RETRY_OF) == failed[0].number]
    assert len(reruns) == 1 and reruns[0].params == failed[0].params


@pytest.mark.slow
def test_kill_9_mid_trial_then_resume_fails_the_stale_trial_and_reruns_it_once(
    workdir: Path, mnist_dir: str | None
) -> None:
    _write_space(workdir)
    db = workdir / "mlruns" / "optuna.db"
    proc = _start(workdir, mnist_dir, tracking=True)
    number = _wait_mid_trial(proc, db)
    proc.kill()
    proc.communicate(timeout=60)
    assert _rows(db, f"SELECT state FROM trials WHERE number = {number}") == [("RUNNING",)]

    resumed = _run(workdir, mnist_dir, tracking=True)  # at once: long before the 90 s heartbeat grace period
    assert resumed.returncode == 0, resumed.stderr
    trials = {t.number: t for t in _trials(workdir)}
    _assert_study_complete(list(trials.values()))
    stale = trials[number]
    assert stale.state == TrialState.FAIL
    assert stale.user_attrs[records.REASON] == studies.dead_worker_reason(proc.pid)
    reruns = [t for t in trials.values() if t.user_attrs.get(records.RETRY_OF) == number]
    assert len(reruns) == 1  # re-run once, not lost and not twice
    assert reruns[0].params == stale.params and reruns[0].state == TrialState.COMPLETE
    assert reruns[0].system_attrs[records.RETRY_HISTORY] == [number]
    # The dead process's run is ended as KILLED with the reason, not left RUNNING.
    _assert_mlflow_agrees(workdir, list(trials.values()), killed=number)


# ---------------------------------------------------------------------------------------------- recovery rules


def _dead_pid() -> int:
    proc = subprocess.Popen([PYTHON, "-c", "pass"])
    proc.wait()
    return proc.pid


def _study_with_running_trial(url: str, worker: str, **storage: Any) -> tuple[optuna.Study, optuna.Trial]:
    study = optuna.create_study(study_name="s", storage=studies.open_storage(url, **storage))
    trial = study.ask()
    trial.suggest_int("model.depth", 1, 4)
    trial.suggest_float("train.learning_rate", 1e-4, 1e-2, log=True)
    trial.set_user_attr(records.WORKER, worker)
    return study, trial


@pytest.mark.slow
def test_a_dead_local_worker_s_trial_is_failed_with_its_reason_and_queued_once(tmp_path: Path) -> None:
    pid = _dead_pid()
    study, trial = _study_with_running_trial(f"sqlite:///{tmp_path}/o.db", f"{socket.gethostname()}:{pid}")

    recovered = studies.recover_dead_workers(study)

    assert [t.number for t in recovered] == [trial.number]
    failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs[records.REASON] == f"the worker process {pid} died (killed or crashed)"
    assert retry.state == TrialState.WAITING and retry.params == failed.params
    assert retry.user_attrs == {records.RETRY_OF: failed.number}
    # A second start, and Optuna's own heartbeat path, find nothing more to do.
    assert studies.recover_dead_workers(study) == []
    optuna.storages.fail_stale_trials(study)
    assert len(study.get_trials()) == 2


@pytest.mark.slow
def test_the_queued_retry_runs_the_same_configuration(tmp_path: Path) -> None:
    study, trial = _study_with_running_trial(f"sqlite:///{tmp_path}/o.db", f"{socket.gethostname()}:{_dead_pid()}")
    studies.recover_dead_workers(study)

    rerun = study.ask()  # what the next run's first trial gets
    assert rerun.suggest_int("model.depth", 1, 4) == trial.params["model.depth"]
    assert rerun.suggest_float("train.learning_rate", 1e-4, 1e-2, log=True) == trial.params["train.learning_rate"]


@pytest.mark.slow
def test_a_retry_that_dies_too_is_failed_but_not_retried_again(tmp_path: Path) -> None:
    host = socket.gethostname()
    study, _ = _study_with_running_trial(f"sqlite:///{tmp_path}/o.db", f"{host}:{_dead_pid()}")
    studies.recover_dead_workers(study)
    retry = study.ask()
    retry.suggest_int("model.depth", 1, 4)
    retry.set_user_attr(records.WORKER, f"{host}:{_dead_pid()}")

    assert [t.number for t in studies.recover_dead_workers(study)] == [retry.number]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.FAIL]  # no third trial queued


@pytest.mark.slow
def test_live_workers_and_other_hosts_are_left_to_the_heartbeat(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)"])
    try:
        study, mine = _study_with_running_trial(f"sqlite:///{tmp_path}/o.db", f"{socket.gethostname()}:{sleeper.pid}")
        other = study.ask()
        other.set_user_attr(records.WORKER, f"another-host.example:{_dead_pid()}")
        own = study.ask()
        own.set_user_attr(records.WORKER, records.worker_id())  # this very process
        assert studies.recover_dead_workers(study) == []
        assert all(t.state == TrialState.RUNNING for t in study.get_trials())
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
def test_the_heartbeat_path_and_the_dead_worker_path_do_not_both_retry(tmp_path: Path) -> None:
    # A stale heartbeat AND a dead local worker: whichever path runs first retries; the other does nothing.
    for first in ("heartbeat", "recovery"):
        url = f"sqlite:///{tmp_path}/{first}.db"
        worker = f"{socket.gethostname()}:{_dead_pid()}"
        study, trial = _study_with_running_trial(url, worker, heartbeat_interval=1, grace_period=1)
        study._storage.record_heartbeat(trial._trial_id)
        time.sleep(2.5)  # let the heartbeat go stale
        if first == "heartbeat":
            optuna.storages.fail_stale_trials(study)
            assert studies.recover_dead_workers(study) == []
        else:
            assert len(studies.recover_dead_workers(study)) == 1
            optuna.storages.fail_stale_trials(study)
        states = [t.state for t in study.get_trials()]
        assert states == [TrialState.FAIL, TrialState.WAITING], (first, states)


@pytest.mark.slow
def test_a_dead_trial_is_failed_and_its_retry_queued_in_one_step_under_the_study_s_lock(tmp_path: Path) -> None:
    # Reproduction (three workers on PostgreSQL): a worker failed a dead trial, and before it queued the retry
    # another worker, counting under the study's lock, saw the place freed and started a new trial instead;
    # the study reached its total with the retry left WAITING, never run.
    study, _ = _study_with_running_trial(f"sqlite:///{tmp_path}/o.db", f"{socket.gethostname()}:{_dead_pid()}")
    recovering = threading.Thread(
        target=studies.recover, args=(study,), kwargs={"lock": StudyLock(study._storage, study.study_name)}
    )
    with StudyLock(study._storage, study.study_name):  # another worker counts the trials and creates its own
        recovering.start()
        recovering.join(timeout=2)
        assert recovering.is_alive()  # waiting for the lock, the dead trial untouched
        assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]
    recovering.join()
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.WAITING]


@pytest.mark.slow
def test_a_stale_trial_is_failed_with_its_reason_by_tuning_never_by_optuna_s_own_check(
    tmp_path: Path, mnist_dir: str | None
) -> None:
    # Reproduction: with workers on two machines, Optuna's own fail_stale_trials (run before each ask()) raced
    # recover() and now and then failed a dead worker's trial with no reason recorded.
    space = tuning.SearchSpace.from_dict(tiny_space(study={"name": "stale", "n_trials": 1, "seed": 0}))
    url = f"sqlite:///{tmp_path}/optuna.db"
    options: dict[str, Any] = dict(storage=url, tracking=False, heartbeat_interval=1, grace_period=1,
                                   data_dir=mnist_dir, verbose=False)
    study = tuning.run(space, **options)  # a worker's study, as its trials see it
    lost = study.ask()  # a trial of a worker on another machine, which then dies
    space.suggest(lost)
    lost.set_user_attr(records.WORKER, "machine-b:4242")
    study._storage.record_heartbeat(lost._trial_id)
    time.sleep(2.5)  # its heartbeat goes stale

    optuna.storages.fail_stale_trials(study)  # what Optuna does in this worker before its next ask()
    assert study._storage.get_trial(lost._trial_id).state == TrialState.RUNNING  # left to tuning's recovery

    trials = tuning.run(space, n_trials=2, **options).get_trials()
    assert trials[lost.number].state == TrialState.FAIL
    assert trials[lost.number].user_attrs[records.REASON] == studies.heartbeat_reason(1, "machine-b:4242")
    (retry,) = [t for t in trials if t.user_attrs.get(records.RETRY_OF) == lost.number]
    assert retry.params == lost.params and retry.state == TrialState.COMPLETE


# ---------------------------------------------------------------------------------------------- a signal in a finalizer


class _Finalizer:
    """Sends Ctrl-C to this process from inside a ``__del__``, as happens when a signal arrives during garbage
    collection: Python runs the handler there and swallows its exception ("Exception ignored in ...")."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):  # the handler runs at the next check, still inside __del__
            pass


class _WrappedByCCode:
    """What C code does with a Ctrl-C it meets: TensorFlow's ``Flatten``, interrupted while it imports, raises
    ``SystemError: <built-in function __import__> returned a result with an exception set``, caused by the
    ``KeyboardInterrupt`` (seen in CI: a worker printed that traceback after one Ctrl-C)."""

    def __del__(self) -> None:
        _ctrl_c_as_system_error()


def _ctrl_c_as_system_error() -> None:
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):  # the handler runs at the next check
            pass
    except KeyboardInterrupt as ctrl_c:
        raise SystemError("<built-in function __import__> returned a result with an exception set") from ctrl_c


class _SignalFromFinalizer(StudyObserver):
    """Makes a finalizer (``finalizer``, a class with a ``__del__``) run after the first trial."""

    def __init__(self, finalizer: type) -> None:
        self.finalizer = finalizer

    def trial_finished(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        if trial.number == 0:
            self.finalizer()


@pytest.mark.slow
@pytest.mark.parametrize("finalizer", [_Finalizer, _WrappedByCCode], ids=["bare", "wrapped_by_c_code"])
def test_a_ctrl_c_swallowed_by_a_finalizer_still_stops_the_study_and_prints_no_traceback(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, finalizer: type
) -> None:
    space = tiny_space(study={"name": "swallowed", "n_trials": 3, "seed": 0, "pruner": "none"})
    unraisable: list[Any] = []  # what Python would print as "Exception ignored in ... Traceback"
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    with pytest.raises(KeyboardInterrupt):
        tuning.run(space, tracking=False, observers=[_SignalFromFinalizer(finalizer)])

    assert [u.exc_value for u in unraisable] == []

    storage = studies.open_storage("sqlite:///mlruns/optuna.db")
    trials = optuna.load_study(study_name="swallowed", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE]  # stopped after the trial the signal came in


@pytest.mark.slow
def test_a_ctrl_c_that_a_library_turns_into_its_own_error_mid_trial_is_an_interruption(workdir: Path) -> None:
    space = tiny_space(study={"name": "wrapped_mid_trial", "n_trials": 2, "seed": 0, "pruner": "none"})

    def build(config: Any) -> Any:
        _ctrl_c_as_system_error()  # a Ctrl-C while the trial builds its model, re-raised by C code as its own

    with pytest.raises(KeyboardInterrupt) as stopped:
        tuning.run(space, tracking=False, build_fn=build)

    assert getattr(stopped.value, "signum", None) == signal.SIGINT  # the command exits 130 and says "Interrupted."
    (trial, retry) = optuna.load_study(study_name="wrapped_mid_trial", storage="sqlite:///mlruns/optuna.db").trials
    assert trial.state == TrialState.FAIL and trial.user_attrs[records.REASON] == "interrupted"
    assert retry.state == TrialState.WAITING and retry.user_attrs[records.RETRY_OF] == 0  # runs first on resume
