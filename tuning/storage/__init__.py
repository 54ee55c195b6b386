"""Optuna storages: resolve and check a URL, open it read-write (with heartbeats) or read-only, ride out a database
server's restart, and turn a database failing under a study into a clear error.

Example:
    >>> from tuning import storage
    >>> storage.resolve_url(None)
    'sqlite:///mlruns/optuna.db'
    >>> storage.sqlite_path("sqlite:////tmp/x.db?timeout=5")
    PosixPath('/tmp/x.db')
"""

from tuning.storage._open import (
    absolute_url,
    check_writable,
    database_cause,
    disk_is_full,
    first_start_lock,
    is_storage_failure,
    lock_folder,
    open_read_only,
    open_storage,
    resolve_url,
    sqlite_file_exists,
    sqlite_path,
    storage_failure,
)
from tuning.storage._reconnect import first_line, lost_connection, retry_seconds, ride_out_restarts

__all__ = [
    "absolute_url",
    "check_writable",
    "database_cause",
    "disk_is_full",
    "first_line",
    "first_start_lock",
    "is_storage_failure",
    "lock_folder",
    "lost_connection",
    "open_read_only",
    "open_storage",
    "resolve_url",
    "retry_seconds",
    "ride_out_restarts",
    "sqlite_file_exists",
    "sqlite_path",
    "storage_failure",
]
