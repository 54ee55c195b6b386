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


class PostgresCluster:
    """A throwaway cluster in a temporary folder: ``url`` (SQLAlchemy, psycopg2), ``start``, ``stop``, ``restart``."""

    def __init__(self) -> None:
        bindir = postgres_bin()
        assert bindir is not None, why_no_postgres()
        self.bindir = bindir
        self.home = Path(tempfile.mkdtemp(prefix="tuning-pg-"))
        self.data = self.home / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.home, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(self.home, 0o755)
        pwfile = self.home / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self.as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        self.port = free_port()
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}",
                 "-E", "UTF8", "--no-sync")
        self.url = f"postgresql+psycopg2://postgres:{PG_PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _pg(self, program: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bindir / program), *args], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.home} -c fsync=off -c max_connections=200"
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.home / "log"), "-w", "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server (every connection breaks), wait, start it again."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def remove(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Start a fresh cluster and yield it (its ``url``: ``postgresql+psycopg2://postgres:…@127.0.0.1:PORT/postgres``)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def start_mlflow(args: list[str], cwd: Path, *, own_group: bool = False) -> subprocess.Popen:
    """Start the venv's ``mlflow`` command in ``cwd``, its stderr appended to ``cwd/mlflow.log`` (a pipe nobody
    reads would block the server once full); ``own_group``: in its own process group, so that a test can SIGKILL
    the server and its workers at once."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), *args], cwd=cwd, stdout=subprocess.DEVNULL,
        stderr=(cwd / "mlflow.log").open("a"), start_new_session=own_group,
    )  # fmt: skip


def start_mlflow_server(home: Path, port: int, *, own_group: bool = False) -> subprocess.Popen:
    """A real ``mlflow server`` on ``127.0.0.1:port`` with a SQLite store and artifacts in ``home``, answering."""
    home.mkdir(exist_ok=True)
    proc = start_mlflow(
        ["server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination",
         str(home / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        home, own_group=own_group,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health", proc, "mlflow server")
    return proc


def wait_http(url: str, proc: subprocess.Popen, what: str) -> None:
    """Wait until ``url`` answers; raise with the server's log if ``proc`` exits first."""
    for _ in range(600):
        if proc.poll() is not None:
            log = Path(proc.stderr.name).read_text() if proc.stderr else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log}")
        try:
            with _NO_PROXY.open(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url}")


def stop(proc: subprocess.Popen) -> None:
    """Terminate ``proc``, killing it after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def mlflow_server(home: Path) -> Iterator[str]:
    """Start ``mlflow server`` with a SQLite store in ``home`` and yield its URL."""
    port = free_port()
    proc = start_mlflow_server(home, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
