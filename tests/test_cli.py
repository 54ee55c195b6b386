"""The ``tuning`` command, run for real in subprocesses (``python -m tuning`` and the ``tuning`` console script).

The fast tests import no TensorFlow; the ``run`` tests train MLPs on 240 MNIST images (about 6 s of TensorFlow
start-up per subprocess).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, subprocess_env, tiny_space
from optuna.trial import TrialState

from tuning import records

HEAVY = ("tensorflow", "keras", "mlflow")
SCRIPT = Path(sys.executable).parent / "tuning"



def tuning_cmd(
    *args: str, cwd: Path, mnist_dir: str | None = None, script: bool = False
) -> subprocess.CompletedProcess:
    """Run the command as users do: ``python -m tuning ARGS``, or the installed ``tuning`` script."""
    prefix = [str(SCRIPT)] if script else [sys.executable, "-m", "tuning"]
    return subprocess.run([*prefix, *args], cwd=cwd, env=subprocess_env(mnist_dir), capture_output=True, text=True)


def heavy_modules_after(code: str, cwd: Path) -> list[str]:
    """Run ``code`` in a fresh interpreter and return which of TensorFlow, Keras, MLflow it imported."""
    probe = f"{code}\nimport sys\nprint('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=subprocess_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.rsplit("HEAVY", 1)[1].strip())


def write_space(path: Path, **overrides: object) -> Path:
    path.write_text(yaml.safe_dump(tiny_space(**overrides), sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------------ no TensorFlow


@pytest.mark.slow
def test_import_tuning_loads_no_heavy_module(tmp_path: Path) -> None:
    assert heavy_modules_after("import tuning; tuning.SearchSpace; tuning.errors; tuning.records", tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["validate", "search_spaces/mnist_quick.yaml"],
                                  ["validate", "search_spaces/mnist_cnn.yaml", "--set", "train.epochs=3"]])
def test_help_and_validate_load_no_heavy_module(argv: list[str]) -> None:
    code = f"import tuning.cli\ntry:\n    rc = tuning.cli.main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
    code += "assert rc == 0, rc"
    assert heavy_modules_after(code, ROOT) == []


@pytest.mark.slow
@pytest.mark.parametrize("script", [False, True], ids=["python -m tuning", "tuning script"])
def test_help_lists_the_commands(tmp_path: Path, script: bool) -> None:
    if script and not SCRIPT.exists():
        pytest.skip("the tuning console script is not installed (pip install -e .)")
    out = tuning_cmd("--help", cwd=tmp_path, script=script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: tuning")
    for command in ("run", "validate", "studies", "report"):
        assert command in out.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_validate_prints_the_parameters(tmp_path: Path) -> None:
    out = tuning_cmd("validate", str(ROOT / "search_spaces" / "mnist_quick.yaml"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for name in ("model.depth", "model.width.{1..2}", "model.kernel_size", "train.epochs", "train.learning_rate"):
        assert name in out.stdout
    assert "0.0005 … 0.005" in out.stdout  # the learning rate's range
    assert "8 parameters" in out.stdout and "OK: the space is valid." in out.stdout
    assert list(tmp_path.iterdir()) == []  # validating writes nothing


@pytest.mark.slow
def test_validate_with_set(tmp_path: Path) -> None:
    out = tuning_cmd("validate", str(ROOT / "search_spaces" / "mnist_quick.yaml"), "--set", "train.epochs=7",
                     "--set", "model.width={per_layer: [8, 16]}", "--set", "study.n_trials=4", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "train.epochs=7" in out.stdout and "8, 16   (per layer)" in out.stdout and "4 trials" in out.stdout
    bad = tuning_cmd("validate", str(ROOT / "search_spaces" / "mnist_quick.yaml"), "--set", "model.depht=2",
                     cwd=tmp_path)
    assert bad.returncode == 2 and "model.depht" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_space_exits_2_with_key_path_and_writes_nothing(tmp_path: Path, command: str) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text("model:\n  family: mlp\n  width: {per_layer: [16, -3]}\ntrain:\n  epochs: 0\n")
    out = tuning_cmd(command, str(space), cwd=tmp_path)
    assert out.returncode == 2
    assert "model.width.per_layer[1]" in out.stderr and "train.epochs" in out.stderr
    assert "Traceback" not in out.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]  # no mlruns/, no database


@pytest.mark.slow
def test_studies_on_a_missing_storage_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    out = tuning_cmd("studies", "--storage", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.slow
def test_run_resume_and_studies(tmp_path: Path, mnist_dir: str | None) -> None:
    """``run --n-trials 3`` then the same command without it: the space's 5 trials, the first three unchanged."""
    space = write_space(
        tmp_path / "tiny.yaml",
        train={"epochs": 2, "learning_rate": [0.003, 0.00001]},
        study={"name": "cli", "n_trials": 5, "pruner": {"type": "median", "n_startup_trials": 1},
               "enqueue": [{"train.learning_rate": 0.003}, {"train.learning_rate": 0.00001}]},
    )
    first = tuning_cmd("run", str(space), "--n-trials", "3", "--no-tracking", "--set", "train.batch_size=32",
                       cwd=tmp_path, mnist_dir=mnist_dir, script=SCRIPT.exists())
    assert first.returncode == 0, first.stderr
    assert "Study cli:" in first.stdout and "Best trial" in first.stdout
    storage = "sqlite:///mlruns/optuna.db"
    db = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    before = [(t.params, t.values, t.datetime_start, t.state) for t in optuna.load_study(study_name="cli",
                                                                                         storage=db).get_trials()]
    assert len(before) == 3
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # --no-tracking

    again = tuning_cmd("run", str(space), "--no-tracking", "--set", "train.batch_size=32", "--quiet",
                       cwd=tmp_path, mnist_dir=mnist_dir)
    assert again.returncode == 0, again.stderr
    assert "Precision:" in first.stdout and "Precision:" not in again.stdout + again.stderr  # --quiet
    study = optuna.load_study(study_name="cli", storage=db)
    trials = study.get_trials()
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(trials) == len(counted) == 5
    assert [(t.params, t.values, t.datetime_start, t.state) for t in trials[:3]] == before
    assert records.study_space(study)["train"]["batch_size"] == 32  # --set reached the study
    assert trials[1].state == TrialState.PRUNED  # learning rate 1e-5 against the median of trial 0

    listed = tuning_cmd("studies", "--storage", storage, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if re.search(r"\bcli\b", line))
    numbers = [int(n) for n in re.findall(r"(?<![\d.])\d+(?![\d.])", row)]
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    assert numbers[:4] == [count[TrialState.COMPLETE], count[TrialState.PRUNED], count[TrialState.FAIL], 0]
    assert f"{study.best_value:.4f}" in row


@pytest.mark.slow
def test_shipped_quick_space_runs_end_to_end(tmp_path: Path, mnist_dir: str | None) -> None:
    """search_spaces/mnist_quick.yaml itself, cut to one trial on 1,000 images, tracked in MLflow as by default."""
    out = tuning_cmd("run", str(ROOT / "search_spaces" / "mnist_quick.yaml"), "--n-trials", "1",
                     "--set", "data.train_size=1000", cwd=tmp_path, mnist_dir=mnist_dir)
    assert out.returncode == 0, out.stderr
    assert "Study mnist_quick: 1 complete, 0 pruned, 0 failed." in out.stdout
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    (trial,) = optuna.load_study(study_name="mnist_quick",
                                 storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}").get_trials()
    assert trial.params["model.kernel_size"] == 3 and trial.params["train.batch_size"] == 64  # the enqueued baseline
    assert trial.user_attrs["epochs"] == 3 and trial.value > 0.5
    assert trial.user_attrs.get("mlflow_run_id")
    # The default precision (auto) is said once, as the hardware resolved it, and recorded on the trial.
    assert out.stdout.count(f"Precision: {trial.user_attrs['precision']} (auto: ") == 1, out.stdout
