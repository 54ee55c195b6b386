"""What a new user meets on the command line: --version, `tuning studies` in full, --data-dir, the model lines
of the summary and --register-model. In-process ``tuning.cli.main``; the ``run`` cases train (slow tier)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_space

import tuning
from tuning.cli import main

LONG = "tpe_against_random_on_the_tutorial_cnn_with_augmentation_and_a_rather_long_name_seed_0"


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Optuna SQLite file with its tables, made once: creating them costs about a second here."""
    path = tmp_path_factory.mktemp("template") / "optuna.db"
    optuna.storages.RDBStorage(f"sqlite:///{path}")
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"tuning {tuning.__version__}"


def test_studies_shows_long_names_in_full_and_waiting_trials(tmp_path: Path, empty_db: Path, capsys) -> None:
    shutil.copy(empty_db, tmp_path / "optuna.db")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name=LONG, storage=url, direction="maximize")
    study.enqueue_trial({"x": 1})
    study.enqueue_trial({"x": 2})
    capsys.readouterr()
    assert main(["studies", "--storage", url]) == 0  # not a terminal: rich would assume 80 columns
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "study" in line and "waiting" in line)
    row = next(line for line in out.splitlines() if LONG in line)  # the whole name, on one line
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    names = [c.strip() for c in header.strip("┃ ").split("┃")]
    assert dict(zip(names, cells, strict=True))["waiting"] == "2"


@pytest.mark.slow
def test_data_dir_and_register_model_from_the_command_line(
    workdir: Path, mnist_dir: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if mnist_dir is None:
        pytest.skip("needs a local mnist.npz for --data-dir")
    monkeypatch.delenv("TUNING_DATA_DIR")  # only --data-dir says where MNIST is
    space = workdir / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space(study={"n_trials": 2, "name": "cli_model"})))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    code = main(["run", str(space), "--data-dir", mnist_dir, "--tracking-uri", uri, "--register-model", "cli-best",
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "TUNING_DATA_DIR" not in os.environ  # passed to the loader, not through the environment
    assert "Model:    models:/m-" in out
    assert "Registry: models:/cli-best/1" in out

    code = main(["run", str(space), "--data-dir", mnist_dir, "--no-tracking", "--study-name", "offline", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"Model:    {Path('mlruns', 'models', 'offline', 'best_model.keras')}" in out
