"""One study, many workers: worker processes on PostgreSQL and SQLite, a real `mlflow server`, a SIGKILLed worker.

The slow tests start real servers (a throwaway PostgreSQL cluster, `mlflow server`) and real `tuning run`
processes training tiny MNIST models; the fast ones check the worker plan, the per-trial sampler seeds and the
study total on real SQLite storages, without training.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import subprocess_env, tiny_space
from optuna.trial import TrialState
from servers import PG_PASSWORD, mlflow_server, postgres_cluster, why_no_postgres

from tuning import records
from tuning import study as studies
from tuning.engines import TrialSeededSampler
from tuning.errors import UserInputError
from tuning.study import TotalGate, parse_gpus, worker_argv, worker_plan

PYTHON = sys.executable
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")


# ---------------------------------------------------------------------------------------------- fast: the plan


def test_gpus_give_each_worker_one_device_and_its_share_of_the_cores() -> None:
    plan = worker_plan(gpus=["0", "1"], trials_per_gpu=2, cpus=8)

    assert [env["CUDA_VISIBLE_DEVICES"] for env in plan] == ["0", "0", "1", "1"]
    assert [env["TUNING_WORKER_INDEX"] for env in plan] == ["0", "1", "2", "3"]
    assert all(env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for env in plan)
    assert {env["TUNING_CPU_THREADS"] for env in plan} == {"2"}


def test_cpu_workers_split_the_cores_and_see_no_gpu_of_a_gpu_plan() -> None:
    plan = worker_plan(workers=3, cpus=2)

    assert len(plan) == 3
    assert {env["TUNING_CPU_THREADS"] for env in plan} == {"1"}  # never zero threads
    assert all("TUNING_GPU" not in env for env in plan)


def test_gpu_lists_are_checked() -> None:
    assert parse_gpus("all", {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert parse_gpus("1", available=["0", "1"]) == ["1"]
    for bad in ("0,0", "a", "0,,1"):
        with pytest.raises(UserInputError, match="--gpus"):
            parse_gpus(bad)


def _fake_nvidia_smi(folder: Path, *gpus: str) -> str:
    """A PATH whose ``nvidia-smi`` lists ``gpus``: a stand-in for the NVIDIA driver's tool on this CPU-only machine,
    answering only the query the toolkit makes (any other call fails, so a change of query shows)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    listed = " ".join(gpus)
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = "--query-gpu=index" ] && [ "$2" = "--format=csv,noheader" ] || exit 9\n'
        f"printf '%s\\n' {listed}\n"
    )
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_a_worker_runs_the_same_command_quietly_without_the_parent_options() -> None:
    argv = ["run", "s.yaml", "--workers", "3", "--gpus=0,1", "--trials-per-gpu", "2", "--storage", "x"]
    assert worker_argv(argv) == ["run", "s.yaml", "--storage", "x", "--quiet"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--trials-per-gpu", "2"], "--trials-per-gpu needs --gpus"),
        (["--gpus", "zero"], "--gpus takes distinct GPU indices"),
    ],
)
def test_bad_worker_options_exit_2_and_write_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    from tuning.cli import main

    space = workdir / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space()))
    assert main(["run", str(space), *options]) == 2
    assert message in capsys.readouterr().err
    assert not (workdir / "mlruns").exists()


def test_gpus_on_a_machine_without_nvidia_smi_exit_2_and_write_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuning.cli import main

    space = workdir / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space()))
    empty = workdir / "no-driver"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no nvidia-smi, as on this machine (and wherever the tests run)

    assert main(["run", str(space), "--gpus", "0", "--no-tracking"]) == 2

    err = " ".join(capsys.readouterr().err.split())
    assert "--gpus needs NVIDIA GPUs and this machine has none: nvidia-smi is not installed" in err
    assert "Received: 0" in err and "leave out --gpus to train on the CPU" in err
    assert sorted(p.name for p in workdir.iterdir()) == ["no-driver", "space.yaml"]


@pytest.mark.slow  # nvidia-smi (a stand-in listing GPUs 0 and 1) runs as a subprocess
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--gpus", "7"], "--gpus names GPU 7, which this machine does not have (nvidia-smi lists GPUs 0, 1)"),
        (["--gpus", "1,2,3"], "--gpus names GPUs 2, 3, which this machine does not have"),
        (["--gpus", "0,1", "--workers", "3"], "--workers and --gpus disagree"),
    ],
)
def test_gpus_the_machine_does_not_have_exit_2_and_write_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, options: list[str],
    message: str,
) -> None:
    from tuning.cli import main

    space = workdir / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space()))
    monkeypatch.setenv("PATH", _fake_nvidia_smi(workdir / "driver", "0", "1"))

    assert main(["run", str(space), *options]) == 2

    assert message in " ".join(capsys.readouterr().err.split())
    assert not (workdir / "mlruns").exists()


# ---------------------------------------------------------------------------------------------- fast: seeds, total


def _tpe_study(storage: Any) -> optuna.Study:
    study = optuna.create_study(study_name="seeds", storage=storage, load_if_exists=True)
    study.sampler = TrialSeededSampler(lambda seed: optuna.samplers.TPESampler(seed=seed), seed=0)
    return study


def _draw(study: optuna.Study) -> tuple[int, float]:
    trial = study.ask()
    return trial.number, trial.suggest_float("x", 0.0, 1.0)


def test_workers_with_the_same_study_seed_draw_different_configurations_reproducibly() -> None:
    storage = optuna.storages.InMemoryStorage()
    workers = [_tpe_study(storage) for _ in range(3)]  # three processes' view of one study, same seed
    draws = [_draw(w) for w in workers]

    assert len({x for _, x in draws}) == 3
    seeds = [t.user_attrs[records.SAMPLER_SEED] for t in workers[0].get_trials()]
    assert len(set(seeds)) == 3
    again = _tpe_study(optuna.storages.InMemoryStorage())  # the same study replayed by one worker
    assert [_draw(again) for _ in range(3)] == draws


@pytest.fixture(scope="module")
def sqlite_storage(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One SQLite storage for the fast tests (each makes its own study): its tables are created once."""
    return studies.open_storage(f"sqlite:///{tmp_path_factory.mktemp('storage')}/o.db")


def _study_with(storage: Any, states: list[TrialState], worker: str | None = None) -> optuna.Study:
    study = optuna.create_study(storage=storage)
    for state in states:
        trial = study.ask()
        if worker:
            trial.set_user_attr(records.WORKER, worker)
        if state != TrialState.RUNNING:
            study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    return study


def test_the_gate_ends_a_worker_once_the_total_is_counted(sqlite_storage: Any) -> None:
    study = _study_with(sqlite_storage, [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
    assert not TotalGate(2, grace_period=90).room(study)
    assert TotalGate(3, grace_period=90).room(study)  # the failed trial does not count


def test_the_gate_does_not_start_a_trial_the_running_ones_may_make_surplus(sqlite_storage: Any) -> None:
    study = _study_with(sqlite_storage, [TrialState.COMPLETE, TrialState.RUNNING], worker=records.worker_id())
    gate = TotalGate(2, grace_period=90, deadline=time.monotonic(), poll=0.01)  # time is up: do not wait
    assert not gate.room(study)
    assert TotalGate(3, grace_period=90).room(study)


def test_the_gate_takes_the_place_of_a_dead_worker_s_trial(sqlite_storage: Any) -> None:
    dead = subprocess.Popen([PYTHON, "-c", "pass"])
    dead.wait()
    worker = f"{records.host_name()}:{dead.pid}"
    study = _study_with(sqlite_storage, [TrialState.COMPLETE, TrialState.RUNNING], worker=worker)

    assert TotalGate(2, grace_period=90).room(study)  # the dead trial is failed and queued: room again
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]


def test_threads_never_pop_the_same_enqueued_trial_from_sqlite(sqlite_storage: Any) -> None:
    storage = sqlite_storage
    study = optuna.create_study(study_name="pop", storage=storage)
    popped_twice = 0
    for round_ in range(6):
        study.enqueue_trial({"x": round_})
        barrier = threading.Barrier(4)
        popped: list[int | None] = []

        def pop(barrier: threading.Barrier = barrier, popped: list[int | None] = popped) -> None:
            view = optuna.load_study(study_name="pop", storage=storage)  # each thread its own study, as n_jobs does
            barrier.wait()
            popped.append(view._pop_waiting_trial_id())

        threads = [threading.Thread(target=pop) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ids = [p for p in popped if p is not None]
        popped_twice += len(ids) > 1
        for trial_id in ids:
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
    assert popped_twice == 0


# ---------------------------------------------------------------------------------------------- slow: servers


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    reason = why_no_postgres()
    if reason:
        pytest.skip(reason)
    with postgres_cluster() as cluster:
        yield cluster.url


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


def _space_file(folder: Path, name: str, n_trials: int, train_size: int = 300, epochs: Any = 1) -> Path:
    space = tiny_space(
        data={"dataset": "mnist", "train_size": train_size, "validation_split": 0.2, "test_size": 200},
        train={"epochs": epochs, "batch_size": 32, "learning_rate": 0.003, "chance_epochs": 0},
        study={"name": name, "n_trials": n_trials, "seed": 0, "pruner": "none"},
    )
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def _env(mnist_dir: str | None, **extra: str) -> dict[str, str]:
    return subprocess_env(mnist_dir, PYTHONUNBUFFERED="1", TUNING_HEARTBEAT_INTERVAL="1", TUNING_GRACE_PERIOD="4",
                          **extra)


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def _sql(url: str, query: str) -> list[Any]:
    """Rows of a read-only query (Optuna's storage would create its tables while a worker creates them)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql(query))
    except sqlalchemy.exc.ProgrammingError:  # no tables yet
        return []
    finally:
        engine.dispose()


def _wait_for_running_trial(url: str, name: str, worker: str, proc: subprocess.Popen) -> int:
    """The number of the first trial ``worker`` (``host:pid``) runs, once it has trained an epoch."""
    for _ in range(1200):
        assert proc.poll() is None, proc.communicate()
        for trial in _trials(url, name):
            mine = trial.state == TrialState.RUNNING and trial.user_attrs.get(records.WORKER) == worker
            if mine and (trial.intermediate_values or trial.user_attrs.get(records.MLFLOW_RUN_ID)):
                return trial.number
        time.sleep(0.1)
    raise AssertionError(f"worker {worker} never ran a trial")


def _assert_one_run_per_trial(tracking: str, name: str, trials: list[optuna.trial.FrozenTrial]) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    trial_runs = [r for r in runs if r.data.tags.get("tuning.role") == "trial"]
    numbers = sorted(int(r.data.tags["optuna.trial_number"]) for r in trial_runs)
    assert numbers == sorted(t.number for t in trials)  # one run per trial, none twice
    by_id = {r.info.run_id: r for r in trial_runs}
    for trial in trials:
        run = by_id[trial.user_attrs[records.MLFLOW_RUN_ID]]
        want = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "FINISHED"}.get(trial.state)
        if trial.state == TrialState.FAIL:
            want = "KILLED"
            assert run.data.tags["tuning.reason"] == trial.user_attrs[records.REASON]
        assert run.info.status == want, (trial.number, trial.state, run.info.status)
    return runs


@pytest.mark.slow
def test_three_workers_on_postgres_and_an_mlflow_server_survive_a_sigkilled_worker(
    tmp_path: Path, postgres: str, tracking_server: str, mnist_dir: str | None
) -> None:
    name, total = "three_workers", 6
    space = _space_file(tmp_path, name, total, train_size=800, epochs=2)
    command = [PYTHON, "-m", "tuning", "run", str(space), "--storage", postgres, "--tracking-uri", tracking_server]
    # The worker to kill says it is on another machine: only the heartbeat can tell the others it died.
    hosts = [socket.gethostname(), socket.gethostname(), "machine-b"]
    procs: list[subprocess.Popen] = []
    for host in hosts:  # the first creates the database and the study, the others join it
        procs.append(subprocess.Popen(command, cwd=tmp_path, env=_env(mnist_dir, TUNING_HOST=host),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        while not _sql(postgres, f"SELECT 1 FROM studies WHERE study_name = '{name}'"):
            assert procs[0].poll() is None, procs[0].communicate()
            time.sleep(0.2)
    victim = procs[2]
    killed = _wait_for_running_trial(postgres, name, f"machine-b:{victim.pid}", victim)
    victim.kill()
    outputs = [p.communicate(timeout=600) for p in procs]

    assert [p.returncode for p in procs[:2]] == [0, 0], outputs
    trials = _trials(postgres, name)
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.number for t in trials}) == len(trials)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == total  # exact, no overshoot
    dead = next(t for t in trials if t.number == killed)
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs.get(records.REASON) == studies.heartbeat_reason(4, f"machine-b:{victim.pid}"), outputs
    reruns = [t for t in trials if t.user_attrs.get(records.RETRY_OF) == killed]
    assert len(reruns) == 1 and reruns[0].params == dead.params and reruns[0].state == TrialState.COMPLETE
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [killed]
    assert len({t.user_attrs[records.SAMPLER_SEED] for t in trials}) == len(trials)

    runs = _assert_one_run_per_trial(tracking_server, name, trials)
    parent = next(r for r in runs if r.data.tags.get("tuning.role") == "study")
    assert parent.info.status == "FINISHED"
    _assert_password_nowhere(PG_PASSWORD, tracking_server, runs, [text for out in outputs for text in out])


def _kt_space_file(folder: Path, name: str, n_trials: int) -> Path:
    """A KerasTuner-engine space: random search over the tiny MLP, 8 epochs on 4,000 images (about 5 s a trial,
    so that a second worker starts while the first still runs trials)."""
    space = yaml.safe_load(_space_file(folder, name, n_trials, train_size=4000, epochs=8).read_text())
    space["study"] = {"name": name, "n_trials": n_trials, "seed": 0, "engine": "keras_tuner", "tuner": "random"}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def _assert_recovered_once(trials: list[optuna.trial.FrozenTrial], killed: int, reason: str, total: int) -> None:
    """Nothing left RUNNING or WAITING, the exact total, the killed trial failed with ``reason`` and run again once."""
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == total
    dead = next(t for t in trials if t.number == killed)
    assert dead.state == TrialState.FAIL and dead.user_attrs.get(records.REASON) == reason
    (rerun,) = [t for t in trials if t.user_attrs.get(records.RETRY_OF) == killed]
    assert rerun.params == dead.params and rerun.state == TrialState.COMPLETE
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [killed]


@pytest.mark.slow
def test_keras_tuner_workers_on_postgres_survive_a_sigkilled_worker(
    tmp_path: Path, postgres: str, tracking_server: str, mnist_dir: str | None
) -> None:
    """``study.engine: keras_tuner`` with ``--workers 2``: each worker its own KerasTuner search, one study; a
    worker killed in the middle of a trial is recovered by the other (same machine: at once)."""
    name, total = "kt_workers", 6
    space = _kt_space_file(tmp_path, name, total)
    proc = subprocess.Popen([PYTHON, "-m", "tuning", "run", str(space), "--workers", "2", "--storage", postgres,
                             "--tracking-uri", tracking_server], cwd=tmp_path, env=_env(mnist_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = _wait_for_worker(postgres, name, proc)
    killed = _wait_for_running_trial(postgres, name, victim, proc)
    os.kill(int(victim.rpartition(":")[2]), signal.SIGKILL)
    out, err = proc.communicate(timeout=600)

    assert proc.returncode == 0, (out, err)
    assert "ended with exit code 137" in err  # the parent says which worker died
    trials = _trials(postgres, name)
    _assert_recovered_once(trials, killed, studies.dead_worker_reason(int(victim.rpartition(":")[2])), total)
    assert {t.user_attrs[records.KT_TRIAL]["folder"] for t in trials} >= {name, f"{name}.worker1"}  # two searches
    _assert_one_run_per_trial(tracking_server, name, trials)


@pytest.mark.slow
def test_a_keras_tuner_worker_dying_on_another_machine_is_recovered_by_heartbeat(
    tmp_path: Path, postgres: str, mnist_dir: str | None
) -> None:
    """Two KerasTuner-engine workers on two "machines" (their own folders, another host name): the one killed
    is only known dead by its stale heartbeat; the other fails its trial with that reason and runs it again."""
    name, total = "kt_machines", 5
    procs = []
    for host in (socket.gethostname(), "machine-b"):
        folder = tmp_path / host
        folder.mkdir()
        command = [PYTHON, "-m", "tuning", "run", str(_kt_space_file(folder, name, total)), "--storage", postgres,
                   "--no-tracking"]
        procs.append(subprocess.Popen(command, cwd=folder, env=_env(mnist_dir, TUNING_HOST=host),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        while not _sql(postgres, f"SELECT 1 FROM studies WHERE study_name = '{name}'"):
            assert procs[0].poll() is None, procs[0].communicate()
            time.sleep(0.2)
    victim = procs[1]
    killed = _wait_for_running_trial(postgres, name, f"machine-b:{victim.pid}", victim)
    victim.kill()
    outputs = [p.communicate(timeout=600) for p in procs]

    assert procs[0].returncode == 0, outputs
    trials = _trials(postgres, name)
    _assert_recovered_once(trials, killed, studies.heartbeat_reason(4, f"machine-b:{victim.pid}"), total)


def _wait_for_worker(url: str, name: str, proc: subprocess.Popen) -> str:
    """The ``host:pid`` of a ``--workers`` worker other than the first, once it runs a trial."""
    for _ in range(1200):
        assert proc.poll() is None, proc.communicate()
        workers = {t.user_attrs.get(records.WORKER) for t in _trials_or_none(url, name)
                   if t.state == TrialState.RUNNING and t.user_attrs.get(records.KT_TRIAL, {}).get("folder") != name}
        workers.discard(None)
        if workers:
            return sorted(workers)[0]
        time.sleep(0.1)
    raise AssertionError("the second worker never ran a trial")


def _trials_or_none(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return _trials(url, name)
    except KeyError:  # the study does not exist yet
        return []


def _assert_password_nowhere(password: str, tracking: str, runs: list[Any], outputs: list[str]) -> None:
    from mlflow import MlflowClient

    assert not [o for o in outputs if password in o]
    for run in runs:
        assert password not in repr(run.data.params) + repr(run.data.tags)
    client = MlflowClient(tracking_uri=tracking)
    parent = next(r for r in runs if r.data.tags.get("tuning.role") == "study")
    folder = client.download_artifacts(parent.info.run_id, "space.yaml")
    assert password not in Path(folder).read_text()


# A worker whose storage creates trials slowly: a loaded machine or a distant database, where the time from
# the gate's look at the total to the trial's creation grows. It waits for the go file with Keras imported.
_SLOW_CREATE_WORKER = """
import pathlib, sys, time
import optuna, yaml
import tuning
from tuning.training import import_keras

import_keras()
created = optuna.storages.RDBStorage._create_new_trial  # what Optuna's cached storage calls
def slow_create(self, *args, **kwargs):
    time.sleep(3.0)
    return created(self, *args, **kwargs)
optuna.storages.RDBStorage._create_new_trial = slow_create
go = pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
tuning.run(yaml.safe_load(pathlib.Path(sys.argv[1]).read_text()), storage=sys.argv[3], tracking=False,
           verbose=False)
"""


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_workers_that_look_at_the_total_together_start_no_surplus_trial(
    database: str, tmp_path: Path, request: pytest.FixtureRequest, mnist_dir: str | None
) -> None:
    url = request.getfixturevalue("postgres") if database == "postgres" else f"sqlite:///{tmp_path / 'o.db'}"
    name = f"together_{database}"
    space = _space_file(tmp_path, name, 1)
    optuna.create_study(study_name=name, storage=url, direction="maximize")  # the workers all load it
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([PYTHON, "-c", _SLOW_CREATE_WORKER, str(space), str(go), url], cwd=tmp_path,
                         env=_env(mnist_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    time.sleep(1)
    go.touch()
    outputs = [p.communicate(timeout=600) for p in procs]

    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert [t.state for t in _trials(url, name)] == [TrialState.COMPLETE]  # one trial: the total, not three


@pytest.mark.slow
def test_workers_2_on_sqlite_run_the_total_once_with_one_display(workdir: Path, mnist_dir: str | None) -> None:
    space = _space_file(workdir, "two_workers", 4)
    done = subprocess.run(
        [PYTHON, "-m", "tuning", "run", str(space), "--workers", "2"], cwd=workdir, env=_env(mnist_dir),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    url = f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}"
    trials = _trials(url, "two_workers")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({t.user_attrs[records.WORKER] for t in trials}) <= 2
    assert len({t.user_attrs[records.SAMPLER_SEED] for t in trials}) == 4
    for trial in trials:  # one progress line per trial, from the parent only
        assert done.stdout.count(f"trial {trial.number:>3}  complete") == 1, done.stdout
    assert "2 worker processes" in done.stdout and "Best trial" in done.stdout
    runs = _assert_one_run_per_trial(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}", "two_workers", trials)
    assert next(r for r in runs if r.data.tags.get("tuning.role") == "study").info.status == "FINISHED"


def _running(db: Path) -> list[int]:
    """The numbers of the RUNNING trials (read with sqlite3: opening the file with Optuna would create tables)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return [n for (n,) in conn.execute("SELECT number FROM trials WHERE state = 'RUNNING' ORDER BY number")]
    except sqlite3.OperationalError:  # the tables are being created
        return []


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_with_130_and_leaves_nothing_running(workdir: Path, mnist_dir: str | None) -> None:
    # Trials of 40 epochs: the first worker's trial is still running when the second worker's starts, however
    # slowly the second one starts (under CI's load, 6 epochs sometimes ended in between).
    space = _space_file(workdir, "interrupted_workers", 20, train_size=2000, epochs=40)
    proc = subprocess.Popen(
        [PYTHON, "-m", "tuning", "run", str(space), "--workers", "2", "--no-tracking"], cwd=workdir,
        env=_env(mnist_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    db = workdir / "mlruns" / "optuna.db"
    url = f"sqlite:///{db}"
    deadline = time.monotonic() + 300  # a guard against a hang, not a measurement
    while len(running := _running(db)) < 2:  # both workers busy
        assert time.monotonic() < deadline and proc.poll() is None, f"the two workers never ran together: {running}"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)

    assert proc.returncode == 130, err
    trials = _trials(url, "interrupted_workers")
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t.number for t in trials if t.user_attrs.get(records.REASON) == "interrupted"]
    assert interrupted == running, [(t.number, t.state.name, t.user_attrs) for t in trials]
    # A Ctrl-C landing in a garbage-collection finalizer makes Python print "Exception ignored in ..." with its
    # traceback (docs/robustness.md); any other traceback is a bug.
    assert err.count("Traceback") == err.count("Exception ignored in"), err


@pytest.mark.slow
def test_gpus_run_one_worker_per_device_recorded_on_each_trial(workdir: Path, mnist_dir: str | None) -> None:
    space = _space_file(workdir, "gpu_workers", 3)
    path = _fake_nvidia_smi(workdir / "driver", "0", "1")  # TensorFlow, without a GPU, trains on the CPU
    done = subprocess.run(
        [PYTHON, "-m", "tuning", "run", str(space), "--gpus", "0,1", "--no-tracking"], cwd=workdir,
        env=_env(mnist_dir, PATH=path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    trials = _trials(f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}", "gpu_workers")
    assert len(trials) == 3
    assert {t.user_attrs[records.DEVICE] for t in trials} <= {"GPU 0", "GPU 1"}
    workers = {t.user_attrs[records.WORKER]: t.user_attrs[records.DEVICE] for t in trials}
    assert len(set(workers.values())) == len(workers)  # one device per worker process


@pytest.mark.slow
def test_a_trial_killed_between_ask_and_recording_its_worker_is_failed_after_the_grace_period(
    workdir: Path, mnist_dir: str | None
) -> None:
    space = _space_file(workdir, "ask_then_die", 2)
    url = f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}"
    env = _env(mnist_dir)
    first = subprocess.run([PYTHON, "-m", "tuning", "run", str(space), "--no-tracking", "--n-trials", "1"],
                           cwd=workdir, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    killer = f"import optuna, os; s = optuna.load_study(study_name='ask_then_die', storage='{url}'); s.ask(); " \
             "os.kill(os.getpid(), 9)"
    subprocess.run([PYTHON, "-c", killer], cwd=workdir, env=env)
    assert [t.state for t in _trials(url, "ask_then_die")] == [TrialState.COMPLETE, TrialState.RUNNING]
    time.sleep(5)  # past the 4 s grace period of _env

    done = subprocess.run([PYTHON, "-m", "tuning", "run", str(space), "--no-tracking"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    trials = _trials(url, "ask_then_die")
    assert trials[1].state == TrialState.FAIL
    assert trials[1].user_attrs[records.REASON] == studies.NO_WORKER_REASON
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2


@pytest.mark.slow
def test_a_finished_trial_s_run_left_running_is_closed_with_its_final_values(
    workdir: Path, mnist_dir: str | None
) -> None:
    from mlflow import MlflowClient

    space = _space_file(workdir, "reconcile", 1)
    env = _env(mnist_dir)
    command = [PYTHON, "-m", "tuning", "run", str(space)]
    assert subprocess.run(command, cwd=workdir, env=env, capture_output=True).returncode == 0
    url = f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}"
    trial = _trials(url, "reconcile")[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    # What a SIGKILL right after the trial's progress line leaves: the trial COMPLETE, its run RUNNING, bare.
    experiment = client.get_experiment_by_name("reconcile")
    bare = client.create_run(experiment.experiment_id, run_name="trial-0", tags={
        "tuning.role": "trial", "optuna.study_name": "reconcile", "optuna.trial_number": "0"}).info.run_id
    client.delete_run(trial.user_attrs[records.MLFLOW_RUN_ID])
    with sqlite3.connect(workdir / "mlruns" / "optuna.db") as conn:  # point the finished trial at the bare run
        conn.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = ?",
                     (f'"{bare}"', records.MLFLOW_RUN_ID))

    again = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)  # its worker is dead
    assert again.returncode == 0, again.stderr
    run = client.get_run(bare)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tuning.state"] == "complete"
    assert run.data.metrics["final.val_accuracy"] == pytest.approx(trial.value)


@pytest.fixture
def own_postgres() -> Iterator[Any]:
    """A cluster of this test's own, to restart or stop."""
    reason = why_no_postgres()
    if reason:
        pytest.skip(reason)
    with postgres_cluster() as cluster:
        yield cluster


def _wait_for_trial(url: str, name: str, proc: subprocess.Popen, done: int = 1) -> None:
    for _ in range(1200):
        assert proc.poll() is None, proc.communicate()
        rows = _sql(url, f"SELECT count(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                         f"WHERE s.study_name = '{name}' AND t.state = 'COMPLETE'")  # fmt: skip
        if rows and rows[0][0] >= done:
            return
        time.sleep(0.2)
    raise AssertionError("no trial finished")


@pytest.mark.slow
def test_a_database_restart_mid_study_is_waited_out_with_one_warning(
    tmp_path: Path, own_postgres: Any, mnist_dir: str | None
) -> None:
    name, total = "restarted", 4
    space = _space_file(tmp_path, name, total, train_size=800, epochs=2)
    proc = subprocess.Popen(
        [PYTHON, "-m", "tuning", "run", str(space), "--storage", own_postgres.url, "--no-tracking"], cwd=tmp_path,
        env=_env(mnist_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_trial(own_postgres.url, name, proc)
    own_postgres.restart(down_seconds=4)
    out, err = proc.communicate(timeout=600)

    assert proc.returncode == 0, err
    assert err.count("does not answer") <= 1 and "Traceback" not in err
    trials = _trials(own_postgres.url, name)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == total
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert PG_PASSWORD not in out + err


@pytest.mark.slow
def test_a_database_gone_for_good_ends_the_worker_with_exit_3_and_a_clear_message(
    tmp_path: Path, own_postgres: Any, mnist_dir: str | None
) -> None:
    name = "gone"
    space = _space_file(tmp_path, name, 50, train_size=800, epochs=2)
    proc = subprocess.Popen(
        [PYTHON, "-m", "tuning", "run", str(space), "--storage", own_postgres.url, "--no-tracking"], cwd=tmp_path,
        env=_env(mnist_dir, TUNING_STORAGE_RETRY_SECONDS="5"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    _wait_for_trial(own_postgres.url, name, proc)
    own_postgres.stop()
    out, err = proc.communicate(timeout=600)

    assert proc.returncode == 3, err
    assert "lost the Optuna storage" in err and "run the same command again" in err
    assert "Traceback" not in err and PG_PASSWORD not in out + err
    own_postgres.start()
    assert sum(t.state == TrialState.COMPLETE for t in _trials(own_postgres.url, name)) >= 1  # nothing lost
