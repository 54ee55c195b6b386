"""Create MLflow's SQLite database safely: once among processes that start together, and never half-written.

MLflow creates its tables (and runs a dozen alembic migrations) the first time a client touches a new SQLite
file. Two processes doing that at once crash ("duplicate column name", alembic "expected to match one row"),
and a full disk leaves a half-migrated file on which every later run fails ("table ... already exists").
:func:`ensure_database` builds the tables in a temporary file beside the target, under a lock on the folder,
and moves the finished file into place: the database either does not exist or is complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from tuning.storage import first_start_lock


def ensure_database(path: Path) -> None:
    """Create MLflow's database at ``path`` if it does not exist: complete, or not at all.

    Example:
        >>> ensure_database(Path("mlruns/mlflow.db"))  # doctest: +SKIP

    Raises:
        OSError, sqlalchemy errors: the database could not be created (a full disk...); nothing is left behind.
    """
    if path.exists():
        return
    with first_start_lock(path.parent):
        if path.exists():  # another process created it while we waited for the lock
            return
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".creating", dir=path.parent)
        os.close(fd)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as a file SQLite creates itself, not mkstemp's 0600
        try:
            _create_tables(temporary)
            os.replace(temporary, path)
        except BaseException:
            for leftover in (temporary, temporary + "-journal", temporary + "-wal", temporary + "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
            raise


def looks_half_created(error: BaseException) -> bool:
    """Whether an MLflow error means its SQLite database was left half-migrated by an earlier failed start."""
    text = str(error).lower()
    signs = ("already exists", "duplicate column", "expected to match one row", "no such column", "no such table",
             "found version none")
    return any(sign in text for sign in signs)


def _create_tables(file: str) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service.utils import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH

    # "Creating initial MLflow database tables..." at INFO is not news to the user.
    db_log = logging.getLogger("mlflow.store.db.utils")
    level = db_log.level
    db_log.setLevel(max(level, logging.WARNING))
    try:
        store = SqlAlchemyStore(f"sqlite:///{file}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)  # as MlflowClient would
        store.engine.dispose()  # no connection stays open on the file once it is moved into place
    finally:
        db_log.setLevel(level)
