"""Shared fixtures and helpers: where MNIST is, a tiny real space, a clean working directory per test, the
environment of a ``python -m tuning`` subprocess, a free local port."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The tests' mlflow servers (and the README's `mlflow ui`) start without MLflow's job runner: it serves GenAI jobs
# the toolkit never submits, and each start of it costs about 20 s of CPU on this 2-core machine.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


def _data_dir() -> str | None:
    env = os.environ.get("TUNING_DATA_DIR")
    if env:
        return env
    shared = ROOT.parent / "shared" / "datasets"
    return str(shared) if (shared / "mnist.npz").is_file() else None  # else Keras downloads it


#: Folder holding mnist.npz for the tests, or None (then Keras downloads MNIST).
MNIST_DIR = _data_dir()


@pytest.fixture(scope="session")
def mnist_dir() -> str | None:
    """Folder holding mnist.npz (TUNING_DATA_DIR, else ../shared/datasets), or None to let Keras download."""
    return MNIST_DIR


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_dir: str | None) -> Path:
    """A fresh working directory (results land in its mlruns/), with TUNING_DATA_DIR set for MNIST."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if mnist_dir:
        monkeypatch.setenv("TUNING_DATA_DIR", mnist_dir)
    return tmp_path


def tiny_space(**overrides: object) -> dict:
    """A real MNIST space that trains in about a second per trial: 300 images, an MLP, 1-2 epochs.

    Keyword arguments replace whole sections or keys: ``tiny_space(study={"n_trials": 2})`` merges into
    the section.
    """
    space: dict = {
        "data": {"dataset": "mnist", "train_size": 300, "validation_split": 0.2, "test_size": 200},
        "model": {"family": "mlp", "depth": {"low": 1, "high": 2}, "width": {"per_layer": [16, 32]},
                  "dropout": {"low": 0.0, "high": 0.2, "step": 0.1}},
        "train": {"epochs": {"low": 1, "high": 2}, "batch_size": 64, "learning_rate": 0.003,
                  "chance_epochs": 0},
        "objective": {"metric": "val_accuracy"},
        "study": {"name": "tiny", "n_trials": 3, "seed": 0, "pruner": "none"},
    }
    return merge_sections(space, overrides)


def merge_sections(space: dict, overrides: Mapping[str, Any]) -> dict:
    """``space`` with each override merged into its section key by key (a non-dict value replaces it)."""
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(space.get(section), dict):
            space[section] = {**space[section], **value}
        else:
            space[section] = value
    return space


def subprocess_env(mnist_dir: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m tuning`` (or script) subprocess: this checkout importable, no
    ``MLFLOW_TRACKING_URI`` (results land in the subprocess's folder), MNIST from ``mnist_dir`` when given."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if mnist_dir:
        env["TUNING_DATA_DIR"] = mnist_dir
    return {**env, **extra}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leading_trials(study: Any) -> set[int]:
    """The complete trials of a one-objective study whose value beat every earlier complete trial's (the ones
    ``study.test_on: best`` evaluates on the test set); trials finish in number order in the tests using it."""
    maximize = study.direction.name == "MAXIMIZE"
    best: float | None = None
    numbers = set()
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state.name == "COMPLETE" and (best is None or (t.value > best if maximize else t.value < best)):
            numbers.add(t.number)
            best = t.value
    return numbers


def with_test_accuracy(study: Any) -> set[int]:
    """The trials that carry a test accuracy."""
    return {t.number for t in study.get_trials(deepcopy=False) if "test_accuracy" in t.user_attrs}


#: Fixtures that start a real server, and the marker they give the tests that use them (``-m "not postgres"``).
SERVER_FIXTURES = {"postgres": "postgres", "own_postgres": "postgres", "tracking_server": "server",
                   "mlflow_server": "server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the real servers it starts: ``server`` (``mlflow server``), ``postgres`` (PostgreSQL)."""
    for item in items:
        for fixture, marker in SERVER_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
