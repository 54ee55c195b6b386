"""Bad input, as a new user who has read only the README would give it: exit 2, a message naming the problem.

Every case runs the real `tuning` command in a subprocess from an empty folder, with the default tracking on
(as a new user would), and checks the exit code, that the message names the key path, file or URL (with any
password replaced by ``***``), that no traceback is shown, and that the folder holds nothing new afterwards:
no ``mlruns/``, no database file. The space files are in ``tests/bad_inputs/``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, free_port, subprocess_env

BAD = Path(__file__).resolve().parent / "bad_inputs"
GOOD = str(BAD / "good.yaml")
SECRETS = ("hunter2", "s3cret")


@dataclass
class Case:
    """One mistake: the command's arguments, what the message must say, files to put in the folder first."""

    args: list[str]
    says: list[str]
    setup: Callable[[Path], None] = field(default=lambda folder: None)


def _file(name: str, content: str | bytes = "") -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return setup


def _folder(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).mkdir(parents=True)


CASES: dict[str, Case] = {
    # The space file.
    "space file missing": Case(["run", "nope.yaml"], ["search-space file not found", "nope.yaml"]),
    "validate a missing file": Case(["validate", "nope.yaml"], ["search-space file not found", "nope.yaml"]),
    "space is a folder": Case(["run", "."], ["found a directory"]),
    "space file empty": Case(["run", "empty.yaml"], ["the file is empty", "empty.yaml"], _file("empty.yaml")),
    "space not YAML": Case(["run", str(BAD / "not_yaml.yaml")], ["YAML syntax error at line 2", "not_yaml.yaml"]),
    "space is prose": Case(["run", str(BAD / "prose.txt")], ["top level must be a mapping", "prose.txt"]),
    "space is binary": Case(["run", "space.yaml"], ["space.yaml"], _file("space.yaml", b"\x89PNG\r\n\x1a\n\x00\xff")),
    "misspelt section": Case(["run", str(BAD / "typo_section.yaml")], ["modle: unknown key", "did you mean `model`"]),
    "reversed range": Case(["run", str(BAD / "reversed_range.yaml")], ["model.depth.low", "low=4, high=1"]),
    "unknown model family": Case(["run", str(BAD / "unknown_family.yaml")], ["model.family", "transformer"]),
    "unknown sampler": Case(["run", str(BAD / "unknown_sampler.yaml")], ["study.sampler", "bayesian"]),
    "misspelt sampler option": Case(["run", str(BAD / "bad_sampler_option.yaml")],
                                    ["study.sampler", "n_startup_trial"]),
    "python tag in YAML": Case(["run", str(BAD / "python_tag.yaml")], ["python/object/apply:os.system"]),
    "space nested 5,000 levels": Case(["run", "deep.yaml"], ["nests lists and mappings deeper than 20 levels"],
                                      _file("deep.yaml", "model: {family: mlp, width: " + "[" * 5000 + "]" * 5000
                                            + "}\ntrain: {epochs: 1}\n")),
    "YAML merge key overriding a key, and a bad one": Case(["run", str(BAD / "merge_keys.yaml")],
                                                           ["study.enqueue[1].train.learning_rate", "0.005"]),
    # Options that contradict each other or make no sense.
    "multi-objective with a pruner": Case(["run", str(BAD / "multi_objective_pruner.yaml")],
                                          ["study.pruner", "cannot prune a multi-objective study"]),
    "zero trials": Case(["run", GOOD, "--n-trials", "0"], ["--n-trials must be at least 1"]),
    "zero jobs": Case(["run", GOOD, "--n-jobs", "0"], ["--n-jobs must be at least 1"]),
    "negative timeout": Case(["run", GOOD, "--timeout", "-5"], ["--timeout must be a positive number"]),
    "--set unknown key": Case(["run", GOOD, "--set", "train.epoch=2"], ["train.epoch", "did you mean `epochs`"]),
    "--set without =": Case(["run", GOOD, "--set", "epochs"], ["--set", "key.path=value"]),
    "--set broken YAML": Case(["run", GOOD, "--set", "model.width=[16, 32"], ["model.width", "not valid YAML"]),
    "empty study name": Case(["run", GOOD, "--study-name", ""], ["--study-name must not be empty"]),
    "study name with an escape sequence": Case(["run", GOOD, "--study-name", "evil\x1b[2J\u202e"],
                                               ["--study-name must not hold control characters", "evil\\x1b[2J"]),
    "study name of 5,000 characters": Case(["run", GOOD, "--study-name", "n" * 5000],
                                           ["--study-name is longer than 100 characters", "(5,000 characters)"]),
    # Data.
    "data.path missing": Case(["run", str(BAD / "missing_data_file.yaml")], ["data.path does not exist",
                                                                             "data/mnist_copy.npz"]),
    "data file not an npz": Case(["run", GOOD, "--data-dir", "data"], ["cannot read", "mnist.npz"],
                                 _file("data/mnist.npz", "x,y\n1,2\n")),
    # Storage.
    "storage URL malformed": Case(["run", GOOD, "--storage", "not-a-url"], ["storage URL is malformed", "not-a-url"]),
    "storage kind unknown": Case(["run", GOOD, "--storage", "redis://tuner:hunter2@localhost:6379"],
                                 ["cannot open the Optuna storage redis://tuner:***@localhost:6379"]),
    "storage unreachable": Case(["run", GOOD, "--storage", "postgresql://tuner:hunter2@127.0.0.1:PORT/optuna"],
                                ["cannot open the Optuna storage postgresql://tuner:***@127.0.0.1:PORT/optuna"]),
    "storage folder missing": Case(["run", GOOD, "--storage", "sqlite:///nowhere/optuna.db"],
                                   ["folder of the SQLite storage does not exist", "nowhere"]),
    "storage in memory": Case(["run", GOOD, "--storage", "sqlite:///:memory:"],
                              ["an in-memory SQLite storage keeps nothing", "sqlite:///:memory:"]),
    "studies of a missing storage": Case(["studies", "--storage", "sqlite:///missing.db"],
                                         ["does not exist", "sqlite:///missing.db"]),
    "storage is a folder": Case(["run", GOOD, "--storage", "sqlite:///runs"],
                                ["SQLite storage is a folder", "sqlite:///runs", "sqlite:///runs/optuna.db"],
                                _folder("runs")),
    "studies of a folder": Case(["studies", "--storage", "sqlite:///runs"],
                                ["SQLite storage is a folder", "sqlite:///runs/optuna.db"], _folder("runs")),
    "report without a study": Case(["report", "nosuch"], ["does not exist", "optuna.db"]),
    "report target not a number": Case(["report", "nosuch", "--target", "nan"], ["--target must be a finite number"]),
    "report folder under a file": Case(["report", "nosuch", "--out", "notes.txt/report"],
                                       ["notes.txt is a file, not a folder"], _file("notes.txt", "hi")),
    # Tracking.
    "tracking server unreachable": Case(["run", GOOD, "--tracking-uri", "http://tuner:s3cret@127.0.0.1:PORT"],
                                        ["cannot reach the MLflow tracking server", "http://tuner:***@127.0.0.1:PORT"]),
    "tracking folder under a file": Case(["run", GOOD, "--tracking-uri", "sqlite:///notes.txt/mlflow.db"],
                                         ["cannot create the tracking folder", "notes.txt"], _file("notes.txt", "hi")),
    "tracking folder cannot exist": Case(["run", GOOD, "--tracking-uri", "/proc/tuning/mlruns"],
                                         ["cannot create the tracking folder /proc/tuning/mlruns"]),
}


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_names_the_problem_and_leaves_nothing_behind(
    name: str, tmp_path: Path, mnist_dir: str | None
) -> None:
    case = CASES[name]
    port = str(free_port())
    args = [a.replace("PORT", port) for a in case.args]
    says = [s.replace("PORT", port) for s in case.says]
    case.setup(tmp_path)
    before = _listing(tmp_path)
    env = subprocess_env(mnist_dir)

    proc = subprocess.run([sys.executable, "-m", "tuning", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)

    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    message = " ".join(proc.stderr.split())  # the console may wrap long lines
    assert message.startswith("error: "), output
    for fragment in says:
        assert fragment in message, f"{fragment!r} not in: {message}"
    assert "Fix:" in message or "fix" in message.lower()
    assert "Traceback" not in output
    for secret in SECRETS:
        assert secret not in output
    assert _listing(tmp_path) == before  # no mlruns/, no database file, nothing else
    assert not (ROOT / "pwned").exists() and not (tmp_path / "pwned").exists()
