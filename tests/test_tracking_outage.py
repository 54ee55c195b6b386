"""MLflow tracking while the tracking server is down (issue 23): a real ``mlflow server`` SIGKILLed (with its
workers) in the middle of a real study run in this process (``tuning.run``, ``tuning.cli.main``; tiny Keras
MLPs on MNIST), and restarted on the same port and store.

What is checked is behaviour, never time. Every HTTP request this process sends to the server's port is
counted below MLflow's retries (urllib3's connection pool: each attempt counts), and so are the tracker's own
TCP connects, its probes and every wait of a training thread on the tracking worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
import servers
import yaml
from conftest import MNIST_DIR, free_port, tiny_space

import tuning
from tuning import tracking
from tuning.observers import StudyObserver

pytestmark = pytest.mark.slow

#: The probe interval of these tests: short, so that several probes fall while the server is down.
PROBE_SECONDS = 1.0
#: Trial numbers of the outage: the server is killed as trial 1 ends, is known down at trial 2's end, stays down
#: for the whole of trial 3 and is restarted as trial 3 ends; trials 4 to 6 run with it back.
KILL_AT, CONFIRM_AT, RESTART_AT, N_TRIALS = 1, 2, 3, 7
#: A guard against a hang, not a measurement: the longest the test waits for the worker to notice the outage.
GUARD_SECONDS = 300


@dataclass
class Event:
    """Something that happened in this process: when (time.monotonic), in which thread, what; for an HTTP
    attempt also when it ended (a urllib3 retry is made from inside the attempt it retries)."""

    at: float
    thread: str
    what: str
    result: Any = None
    ended: float = float("nan")


@dataclass
class Wiretap:
    """Every HTTP attempt and tracker TCP connect to ``port``, every probe, every wait of a thread on the worker,
    and every tracking warning, in the order they happened."""

    port: int
    http: list[Event] = field(default_factory=list)
    connects: list[Event] = field(default_factory=list)
    probes: list[Event] = field(default_factory=list)
    waits: list[Event] = field(default_factory=list)
    warnings: list[Event] = field(default_factory=list)

    def first(self, text: str) -> float:
        """When the first warning containing ``text`` was logged."""
        found = [w.at for w in self.warnings if text in w.what]
        assert found, f"no warning says {text!r}: {[w.what for w in self.warnings]}"
        return found[0]


def _note(into: list[Event], what: str, result: Any = None) -> None:
    into.append(Event(time.monotonic(), threading.current_thread().name, what, result))


@contextlib.contextmanager
def wiretap(port: int, probe_seconds: float) -> Iterator[Wiretap]:
    """Record, in this process, what reaches ``port`` and what the tracker does about it (see :class:`Wiretap`)."""
    import urllib3

    tap = Wiretap(port)
    pool = urllib3.connectionpool.HTTPConnectionPool
    urlopen, connect = pool.urlopen, socket.create_connection
    answers, wait = tracking.MlflowTracker._answers, tracking.Worker.wait

    def tapped_urlopen(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self.port != port:
            return urlopen(self, method, url, *args, **kwargs)
        # a retry comes back through here: each attempt is one event
        event = Event(time.monotonic(), threading.current_thread().name, f"{method} {url}", result="raised")
        tap.http.append(event)
        try:
            response = urlopen(self, method, url, *args, **kwargs)
            event.result = "answered"
            return response
        finally:
            event.ended = time.monotonic()

    def tapped_connect(address: Any, *args: Any, **kwargs: Any) -> Any:
        if address[1] == port:
            _note(tap.connects, str(address))
        return connect(address, *args, **kwargs)

    def tapped_answers(self: Any) -> bool:
        event = Event(time.monotonic(), threading.current_thread().name, "probe", result="raised")
        tap.probes.append(event)
        event.result = answers(self)
        return event.result

    def tapped_wait(self: Any, future: Future, timeout: float) -> bool:
        _note(tap.waits, f"wait {timeout}")
        return wait(self, future, timeout)

    class Warnings(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                _note(tap.warnings, record.getMessage())

    handler = Warnings()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pool, "urlopen", tapped_urlopen)
        mp.setattr(socket, "create_connection", tapped_connect)
        mp.setattr(tracking.MlflowTracker, "_answers", tapped_answers)
        mp.setattr(tracking.Worker, "wait", tapped_wait)
        mp.setattr(tracking.Worker, "probe_seconds", probe_seconds)
        for key, value in tracking.HTTP_SETTINGS.items():  # what a study sets; restored afterwards
            mp.setenv(key, value)
        logging.getLogger("tuning.tracking").addHandler(handler)
        try:
            yield tap
        finally:
            logging.getLogger("tuning.tracking").removeHandler(handler)


class Server:
    """A real ``mlflow server`` on ``port`` with its store in ``home``: killed (SIGKILL to its process group) and
    started again on the same port and store."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = servers.start_mlflow_server(home, self.port, own_group=True)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for _ in range(200):  # its workers die with it: wait until the port refuses connections
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.05)

    def start(self) -> None:
        self.proc = servers.start_mlflow_server(self.home, self.port, own_group=True)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.1)


class Outage(StudyObserver):
    """Kills the server as trial KILL_AT ends; at trial CONFIRM_AT's end waits until the tracker has said that the
    server does not answer and ``probes`` probes found it down; restarts it as trial ``restart_at`` ends (None:
    never). Notes when."""

    def __init__(self, server: Server, tap: Wiretap, restart_at: int | None, probes: int = 2) -> None:
        self.server, self.tap, self.restart_at, self.probes = server, tap, restart_at, probes
        self.killing = self.killed = self.restarting = self.back = float("nan")

    def trial_finished(self, trial: Any, outcome: Any) -> None:
        if trial.number == KILL_AT:
            self.killing = time.monotonic()  # a call in flight may notice the kill before kill() returns
            self.server.kill()
            self.killed = time.monotonic()  # the port refuses connections from here on
        elif trial.number == CONFIRM_AT:
            _wait_until(lambda: any("does not answer" in w.what for w in self.tap.warnings)
                        and sum(p.result is False for p in self.tap.probes) >= self.probes,
                        "the worker marking the server down")  # fmt: skip
        elif trial.number == self.restart_at:
            self.restarting = time.monotonic()
            self.server.start()
            self.back = time.monotonic()


@dataclass
class Story:
    """What one study through an outage left behind."""

    tap: Wiretap
    outage: Outage
    study: Any
    url: str

    def down(self, events: list[Event]) -> list[Event]:
        """The events from the kill until the restart began: the server's port was closed all along."""
        return [e for e in events if self.outage.killed <= e.at < self.outage.restarting]


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """A study of N_TRIALS tiny trials tracked into a real server killed after trial 1 and back after trial 3."""
    folder = tmp_path_factory.mktemp("outage")
    server = Server(folder / "server")
    try:
        with wiretap(server.port, PROBE_SECONDS) as tap, pytest.MonkeyPatch.context() as mp:
            mp.chdir(folder)
            mp.delenv("MLFLOW_TRACKING_URI", raising=False)
            if MNIST_DIR:
                mp.setenv("TUNING_DATA_DIR", MNIST_DIR)
            outage = Outage(server, tap, restart_at=RESTART_AT)
            study = tuning.run(tiny_space(study={"name": "outage", "n_trials": N_TRIALS}),
                               storage=f"sqlite:///{folder / 'optuna.db'}", tracking_uri=server.url,
                               observers=[outage], verbose=False)  # fmt: skip
        yield Story(tap, outage, study, server.url)
    finally:
        server.kill()


def test_while_the_server_is_down_only_probes_reach_it_and_no_trial_waits(story: Story) -> None:
    tap, outage = story.tap, story.outage
    assert outage.killed < outage.restarting < outage.back, "the outage did not happen as planned"
    noticed = tap.first("does not answer")
    assert outage.killing < noticed < outage.restarting
    # The first failing call (with MLflow's own retries of it) is all that was sent to the dead server; once the
    # worker marked it down, nothing else was: the probe's TCP connect was refused, so not even its request.
    # That call may have been in flight when the kill came (then the worker can notice before kill() returns).
    failing = [e for e in tap.http if e.ended >= outage.killing and e.at < noticed]
    assert failing, "no call reached the dead server: the outage was not exercised"
    assert {e.result for e in failing} == {"raised"}, failing
    assert {e.thread for e in failing} == {"mlflow-tracking"}
    assert len({e.what for e in failing}) == 1, failing  # one call ...
    assert len(failing) <= 1 + int(tracking.HTTP_SETTINGS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]), failing  # ... retried
    assert [e for e in story.down(tap.http) if e.at >= noticed] == []
    # Probes: from the worker's thread only, at most one every PROBE_SECONDS, each finding the server down.
    probes = story.down(tap.probes)
    assert len(probes) >= 2 and {p.thread for p in probes} == {"mlflow-tracking"}
    assert all(p.result is False for p in probes), probes
    gaps = [b.at - a.at for a, b in zip(probes, probes[1:], strict=False)]
    assert min(gaps) >= PROBE_SECONDS - 0.05, gaps
    assert len([c for c in story.down(tap.connects) if c.at >= noticed]) == len([p for p in probes if p.at >= noticed])
    # No training thread waited on the tracking worker while the server was down (not even for a run's id).
    assert story.down(tap.waits) == []


def test_kept_calls_are_sent_when_the_server_is_back_and_every_run_ends_with_its_trial(story: Story) -> None:
    from mlflow import MlflowClient

    tap, study = story.tap, story.study
    assert tap.first("answers again") > story.outage.restarting
    assert not [w for w in tap.warnings if "tuning sync" in w.what], tap.warnings  # nothing left to back-fill
    client = MlflowClient(story.url)
    runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id], max_results=100)
    trials = {int(r.data.tags["optuna.trial_number"]): r for r in runs if r.data.tags.get("tuning.role") == "trial"}
    parents = [r for r in runs if r.data.tags.get("tuning.role") == "study"]
    assert sorted(trials) == [t.number for t in study.trials]  # trial 3 ran wholly while the server was down
    for frozen in study.trials:
        run = trials[frozen.number]
        state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}[frozen.state.name]
        assert run.data.tags["tuning.state"] == state, (frozen.number, run.data.tags)
        assert run.info.status == tracking.RUN_STATUS[state], (frozen.number, run.info.status)
        assert run.data.params == {k: str(v) for k, v in frozen.params.items()}
        if state == "complete":
            assert run.data.metrics["final.val_accuracy"] == pytest.approx(frozen.value)
            steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
            assert steps == set(range(1, frozen.user_attrs["epochs"] + 1)), (frozen.number, steps)
    assert [p.info.status for p in parents] == ["FINISHED"]
    complete = sum(t.state.name == "COMPLETE" for t in study.trials)
    assert parents[0].data.metrics["trials.complete"] == complete


def test_a_server_that_never_comes_back_costs_one_quick_probe_at_the_end_and_sync_backfills_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tuning import study as studies
    from tuning.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if MNIST_DIR:
        monkeypatch.setenv("TUNING_DATA_DIR", MNIST_DIR)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space(study={"name": "gone", "n_trials": 5})))
    server = Server(tmp_path / "server")
    # No periodic probe during this study (one every hour): the only probe is the one its end asks for.
    with wiretap(server.port, probe_seconds=3600.0) as tap:
        outage = Outage(server, tap, restart_at=None, probes=0)
        run = studies.run
        # The command's own study, with the observer that kills the server added to its progress display.
        monkeypatch.setattr(studies, "run", lambda *a, observers=(), **k: run(*a, observers=[*observers, outage], **k))
        try:
            code = main(["run", str(space), "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
                         "--tracking-uri", server.url])  # fmt: skip
        finally:
            server.kill()
        ended = time.monotonic()
    assert code == 0
    noticed = tap.first("does not answer")
    hint = tap.first("tuning sync gone")
    assert f"--tracking-uri {server.url}" in next(w.what for w in tap.warnings if w.at == hint)
    listed = re.search(r"the runs of trials ([\d, ]+) and the study's parent run", caplog.text)
    assert listed and {2, 3, 4} <= {int(n) for n in listed.group(1).split(", ")}, caplog.text  # after the kill
    assert len([w for w in tap.warnings if "does not answer" in w.what]) == 1
    assert [e for e in tap.http if e.at >= noticed] == []  # the kept calls were not tried again
    # Trials 3 and 4 ran with the server known down; at the end of the study, one probe at once (none was due
    # for an hour), refused; then the hint.
    assert [(p.thread, p.result) for p in tap.probes] == [("mlflow-tracking", False)]
    assert noticed < tap.probes[0].at < hint < ended
    assert [w for w in tap.waits if w.at >= outage.killed] == []
    assert "Traceback" not in caplog.text

    # The server comes back: the hint's `tuning sync` back-fills every run, ended as live tracking would have.
    from mlflow import MlflowClient

    server.start()
    try:
        storage = f"sqlite:///{tmp_path / 'optuna.db'}"
        assert main(["sync", "gone", "--storage", storage, "--tracking-uri", server.url]) == 0
        client = MlflowClient(server.url)
        runs = client.search_runs([client.get_experiment_by_name("gone").experiment_id], max_results=100)
    finally:
        server.kill()
    trials = {int(r.data.tags["optuna.trial_number"]): r for r in runs if r.data.tags.get("tuning.role") == "trial"}
    study = optuna.load_study(study_name="gone", storage=storage)
    assert sorted(trials) == [t.number for t in study.trials] == list(range(5))
    for frozen in study.trials:
        state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}[frozen.state.name]
        assert trials[frozen.number].info.status == tracking.RUN_STATUS[state], frozen.number
        if state == "complete":
            assert trials[frozen.number].data.metrics["final.val_accuracy"] == pytest.approx(frozen.value)
    assert [r.info.status for r in runs if r.data.tags.get("tuning.role") == "study"] == ["FINISHED"]
