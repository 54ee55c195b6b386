"""One storage module: reading commands never write, bad storages leave nothing behind, first starts are safe.

Fast tests call the command line in-process (no training); the ones that start processes or mount a small
file system are marked slow.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import MNIST_DIR, subprocess_env, tiny_space

from tuning import storage as storages
from tuning.cli import main

GOOD = str(Path(__file__).resolve().parent / "bad_inputs" / "good.yaml")


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _notes(folder: Path) -> Path:
    path = folder / "notes.db"
    with sqlite3.connect(path) as db:
        db.execute("create table notes (x text)")
        db.execute("insert into notes values ('keep me')")
    db.close()
    return path


def _optuna_db(folder: Path) -> Path:
    """A real Optuna storage holding study ``s`` with one complete trial, closed (no -wal file left)."""
    path = folder / "optuna.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    storage.engine.dispose()
    return path


@pytest.mark.parametrize("command", [["studies"], pytest.param(["report", "s"], marks=pytest.mark.slow)])
def test_reading_a_sqlite_file_that_is_not_optuna_exits_2_and_leaves_it_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _notes(tmp_path)
    before = _digest(tmp_path)
    assert main([*command, "--storage", "sqlite:///notes.db"]) == 2
    err = capsys.readouterr().err
    assert "not an Optuna storage" in err and "notes" in err and "was not changed" in err
    assert _digest(tmp_path) == before  # same bytes, no -wal, -shm or journal file


@pytest.mark.parametrize("command", [
    ["studies"], pytest.param(["report", "s", "--format", "csv", "--out", "out"], marks=pytest.mark.slow)
])
def test_reading_an_optuna_storage_creates_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _optuna_db(tmp_path)
    before = _digest(tmp_path)
    assert main([*command, "--storage", "sqlite:///optuna.db"]) == 0
    after = {k: v for k, v in _digest(tmp_path).items() if not k.startswith("out")}
    assert after == before


@pytest.mark.parametrize(("content", "says"), [
    (os.urandom(4096), "is not a SQLite database"),
    (b"these are my notes\n", "is not a SQLite database (it starts with b'these ar'"),
])
def test_a_storage_that_is_not_a_database_exits_2_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], content: bytes, says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.db").write_bytes(content)
    assert main(["run", GOOD, "--storage", "sqlite:///x.db"]) == 2
    assert says in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.db"]  # no mlruns/, no mlflow.db, no artifacts/
    assert (tmp_path / "x.db").read_bytes() == content


def test_a_garbled_optuna_storage_is_refused_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    path = _optuna_db(tmp_path)
    with open(path, "r+b") as f:  # keep the header, garble the pages after it
        f.seek(100)
        f.write(os.urandom(path.stat().st_size - 100))
    assert main(["run", GOOD, "--storage", "sqlite:///optuna.db", "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "optuna.db" in err and "damaged" in err and "backup" in err
    assert "Traceback" not in err and "exceeding max length" not in err


def test_storage_urls_are_parsed_in_one_place() -> None:
    assert storages.sqlite_path("sqlite:///mlruns/optuna.db?timeout=5") == Path("mlruns/optuna.db")
    assert storages.sqlite_path("sqlite:////abs/o.db") == Path("/abs/o.db")
    assert storages.sqlite_path("sqlite://") is None and storages.sqlite_path("postgresql://u@h/db") is None
    assert storages.resolve_url("postgresql+psycopg2://u:p@h/db") == "postgresql+psycopg2://u:p@h/db"


def _read_only_mount(folder: Path) -> None:
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs as root here: {done.stderr.decode().strip()}")


@pytest.mark.slow  # mounts a file system
def test_a_read_only_storage_folder_exits_2_and_leaves_no_mlruns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _read_only_mount(tmp_path / "ro")
    try:
        assert main(["run", GOOD, "--storage", "sqlite:///ro/optuna.db"]) == 2
        assert "not writable" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]
    finally:
        subprocess.run(["umount", "--lazy", str(tmp_path / "ro")], capture_output=True)


@pytest.mark.slow  # imports MLflow and creates its tables
def test_mlflow_database_is_complete_or_absent_and_a_half_created_one_is_explained(tmp_path: Path) -> None:
    from tuning.errors import TrackingError
    from tuning.tracking import MlflowTracker
    db = tmp_path / "mlflow.db"
    MlflowTracker(f"sqlite:///{db}").check()  # creates it
    assert db.exists() and oct(db.stat().st_mode & 0o777) != oct(0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "mlflow.db"]  # the temporary file was moved
    half = tmp_path / "half" / "mlflow.db"  # a copy, as another process's first start left it (MLflow keeps one
    half.parent.mkdir()                      # store per URI in a process: this one must not have opened it)
    shutil.copyfile(db, half)
    with sqlite3.connect(half) as connection:  # tables made, migrations not recorded: a first start cut short
        connection.execute("delete from alembic_version")
    connection.close()
    with pytest.raises(TrackingError, match="half-created") as info:
        MlflowTracker(f"sqlite:///{half}").check()
    assert f"delete {half}" in str(info.value)


@pytest.mark.slow  # starts processes that train
@pytest.mark.parametrize("tracking", [True, False])
def test_processes_starting_together_in_an_empty_folder_all_succeed(tmp_path: Path, tracking: bool) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space(study={"n_trials": 3}, train={"epochs": 1})))
    args = [sys.executable, "-m", "tuning", "run", str(space), "--quiet"] + ([] if tracking else ["--no-tracking"])
    procs = [subprocess.Popen(args, cwd=tmp_path, env=subprocess_env(MNIST_DIR), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=900), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code == 0, err
        for crash in ("already exists", "duplicate column", "expected to match one row", "Traceback"):
            assert crash not in err, err
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")
    assert sum(t.state.name == "COMPLETE" for t in study.trials) >= 3


def _in_another_process(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow  # trains, and starts processes
def test_a_second_run_in_one_process_keeps_the_storage_shared_with_other_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found while scripts/reproduce.py ran its stories one after another in one process and `sqlite3` read the
    # storage from a shell: the next story's start opened the database file to read its first bytes, which (POSIX
    # locks are per process) dropped the locks of the connection still open from the story before; the shell's
    # reader, closing, then believed it was the last user and deleted the write-ahead log under the running study.
    # A trial that finished afterwards was written into the deleted log: lost, the trial stayed RUNNING.
    import tuning

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "optuna.db"
    url = f"sqlite:///{db}"
    first = tuning.run(tiny_space(study={"name": "first", "n_trials": 1}), storage=url, tracking=False,
                       data_dir=MNIST_DIR)  # its storage stays open in this process, as in a notebook
    tuning.run(tiny_space(study={"name": "second", "n_trials": 1}), storage=url, tracking=False, data_dir=MNIST_DIR)

    # Another process reads the storage and closes it: optuna-dashboard, a notebook, `sqlite3` in a shell.
    listed = _in_another_process(f"import optuna; print(optuna.get_all_study_names({url!r}))")
    assert "second" in listed

    first.set_user_attr("written_after_the_reader", True)  # a write from this process ...
    seen = _in_another_process(
        f"import optuna; print(optuna.load_study(study_name='first', storage={url!r}).user_attrs)")
    assert "written_after_the_reader" in seen  # ... that every other process sees
