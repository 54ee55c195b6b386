"""The study's total across workers: start a trial only while the counted and running trials leave room for it.

``n_trials`` is the study's total of complete and pruned trials, however many workers (threads, processes,
machines) share the study. Before each trial every worker counts, in the shared storage, the counted trials and
the RUNNING ones (every worker's):

- counted >= total: the study is done, the worker ends;
- counted + running < total: there is room, the worker starts a trial;
- otherwise the running trials may finish the study: the worker waits (polling the storage, and failing the
  trials of dead workers through :func:`tuning._recovery.recover`). If one of them fails, or its worker dies and
  its trial is failed and queued again, the waiting worker takes that place; if they complete, it ends.

So a study ends with exactly ``n_trials`` counted trials. The one exception is a race: workers that pass the
check within the same database round trip (milliseconds) may together start up to ``workers - 1`` trials more.
Waiting workers are released by the same event (a trial failing, a dead worker's trial recovered), so each one
released after waiting sleeps a random fraction of the poll interval and checks again: the race stays possible
but rare.

Example:
    >>> gate = TotalGate(total=30, grace_period=90)                   # doctest: +SKIP
    >>> study.optimize(objective, callbacks=[gate])                   # doctest: +SKIP
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuning import _recovery

COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)

__all__ = ["COUNTED_STATES", "TotalGate"]


class TotalGate:
    """An Optuna callback that stops this worker when the study's total is reached, or waits for room.

    Args:
        total: the study's total of counted (complete and pruned) trials.
        grace_period: seconds without a heartbeat after which a trial's worker is taken as dead.
        tracking_uri: where the MLflow runs of dead workers' trials are ended (None: no tracking).
        deadline: ``time.monotonic()`` after which no new trial starts (the study's timeout), or None.
        poll: seconds between two looks at the storage while waiting.
        check_signals: called while waiting, raises when the user interrupted (Ctrl-C).
    """

    def __init__(
        self,
        total: int,
        *,
        grace_period: int,
        tracking_uri: str | None = None,
        deadline: float | None = None,
        poll: float = 2.0,
        check_signals: Callable[[], None] = lambda: None,
    ) -> None:
        self.total = total
        self.grace_period = grace_period
        self.tracking_uri = tracking_uri
        self.deadline = deadline
        self.poll = poll
        self.check_signals = check_signals

    def __call__(self, study: optuna.Study, trial: FrozenTrial | None = None) -> None:
        if not self.room(study):
            study.stop()

    def room(self, study: optuna.Study) -> bool:
        """True when this worker may start a trial now; False when the study is done (or its time is up).

        Waits while the running trials could complete the study.
        """
        waited = False
        while True:
            _recovery.recover(study, tracking_uri=self.tracking_uri, grace_period=self.grace_period)
            trials = study.get_trials(deepcopy=False, states=(*COUNTED_STATES, TrialState.RUNNING))
            counted = sum(t.state != TrialState.RUNNING for t in trials)
            running = len(trials) - counted
            if counted >= self.total:
                return False
            if counted + running < self.total:
                if not waited:
                    return True
                # Workers waiting together are released by the same event: spread them out and look again,
                # so that they do not all start a trial for the one place that opened.
                waited = False
                time.sleep(random.uniform(0, self.poll))
                continue
            waited = True
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return False
            self.check_signals()
            time.sleep(self.poll)
