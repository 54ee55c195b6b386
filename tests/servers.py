"""Real servers for the scale-out tests: a throwaway PostgreSQL cluster and an ``mlflow server``, on 127.0.0.1.

PostgreSQL comes from Debian's ``postgresql`` package (``scripts/test.sh`` installs it when run as root):
``initdb`` and ``pg_ctl`` run as the unprivileged ``postgres`` user (through ``runuser`` when the tests run as
root), with password authentication, in a temporary folder removed afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import free_port

#: The password of the test cluster's superuser: the tests check that it never shows anywhere.
PG_PASSWORD = "pg-S3cret-7f2a"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (initdb, pg_ctl), or None when not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl and shutil.which("initdb") else None


def why_no_postgres() -> str | None:
    """Why no test cluster can start here (None when it can)."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (apt-get install postgresql; scripts/test.sh does it as root)"
    if os.geteuid() == 0 and (shutil.which("runuser") is None or _no_user("postgres")):
        return "running as root without a 'postgres' user to run the server as"
    return None


def _no_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return True
    return False


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a fresh cluster and yield its SQLAlchemy URL (``postgresql+psycopg2://postgres:…@127.0.0.1:PORT/postgres``)."""
    bindir = postgres_bin()
    assert bindir is not None, why_no_postgres()
    home = Path(tempfile.mkdtemp(prefix="tuning-pg-"))
    data = home / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    os.chmod(home, 0o755)
    pwfile = home / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
         f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {home} -c fsync=off -c max_connections=200"
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql+psycopg2://postgres:{PG_PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def mlflow_server(home: Path) -> Iterator[str]:
    """Start ``mlflow server`` with a SQLite store in ``home`` and yield its URL."""
    port = free_port()
    log = (home / "mlflow.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server",
         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=home, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}: {(home / 'mlflow.log').read_text()}")
            try:
                with _NO_PROXY.open(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
