"""Where results land when the user names no storage and no tracking location.

Everything goes under ``./mlruns`` (relative to the working directory, like MLflow's own default), so one
folder holds a project's studies and their tracking:

- ``mlruns/optuna.db``: the Optuna storage (SQLite), unless ``--storage URL`` or ``study.storage``;
- ``mlruns/mlflow.db`` and ``mlruns/artifacts/``: MLflow tracking, unless ``--tracking-uri`` or
  ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import os
from pathlib import Path

RESULTS_DIR = Path("mlruns")
STORAGE_FILE = RESULTS_DIR / "optuna.db"
TRACKING_FILE = RESULTS_DIR / "mlflow.db"
ARTIFACTS_DIR = RESULTS_DIR / "artifacts"

#: Environment variable naming a folder that holds data sets as ``<dataset>.npz`` (Keras's layout).
DATA_DIR_ENV = "TUNING_DATA_DIR"


def default_storage_url() -> str:
    """The Optuna storage used when none is given: ``sqlite:///mlruns/optuna.db``."""
    return f"sqlite:///{STORAGE_FILE.as_posix()}"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``mlruns/mlflow.db`` in the working directory, as an absolute URL.

    Absolute, because MLflow keeps one store per URI string for the life of the process: a relative
    ``sqlite:///mlruns/mlflow.db`` would stay bound to the folder of the first study a process tracked, and a
    later study run from another folder (a notebook that changes directory, a test suite) would be logged there.

    Example:
        >>> default_tracking_uri().endswith("/mlruns/mlflow.db")  # doctest: +SKIP
        True
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{TRACKING_FILE.resolve().as_posix()}"
