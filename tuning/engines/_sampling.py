"""One sampler seed per trial: workers that start together sample different configurations, reproducibly.

Several processes (or machines) that build the same sampler with the same seed draw the same random numbers,
so the first trials of workers started together were identical. :class:`TrialSeededSampler` instead samples
each trial with a fresh sampler seeded from the study seed and the trial's number (unique in the study, handed
out by the storage), and records that seed on the trial (user attribute ``sampler_seed``). Workers then draw
different configurations, a resumed study does not replay its first trials, and any trial's draw can be
repeated from the study seed and its number. Samplers keep their state in the storage (TPE, CMA-ES, NSGA-II,
grid, GP read the finished trials from it), so a fresh sampler per trial loses nothing; the QMC sampler's
scrambling is its seed and is kept for the whole study.

Example:
    >>> sampler = TrialSeededSampler(lambda seed: optuna.samplers.TPESampler(seed=seed), seed=0)  # doctest: +SKIP
    >>> study.sampler = sampler  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from tuning import records

__all__ = ["TrialSeededSampler", "sampler_seed"]


def sampler_seed(study_seed: int | None, trial_number: int) -> int:
    """The seed of trial ``trial_number``'s sampler: derived from the study seed, random when it is null.

    Example:
        >>> sampler_seed(0, 3) == sampler_seed(0, 3) != sampler_seed(0, 4)
        True
    """
    if study_seed is None:
        return int.from_bytes(os.urandom(4), "little") % (2**31)
    import numpy as np

    return int(np.random.SeedSequence([study_seed % (2**32), trial_number, 0x5EED]).generate_state(1)[0]) % (2**31)


class TrialSeededSampler(BaseSampler):
    """Samples each trial with ``factory(sampler_seed(seed, trial.number))`` and records the seed on the trial.

    Args:
        factory: builds the configured sampler for a given seed (``tuning._study.make_sampler``).
        seed: the study seed (``study.seed``); null draws each trial's seed at random (still recorded).
    """

    def __init__(self, factory: Callable[[int | None], BaseSampler], seed: int | None) -> None:
        self._factory = factory
        self._seed = seed
        self._fallback = factory(seed)
        self._samplers: dict[int, BaseSampler] = {}
        self._lock = threading.Lock()

    def _sampler(self, trial: FrozenTrial) -> BaseSampler:
        with self._lock:
            return self._samplers.get(trial.number, self._fallback)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        seed = sampler_seed(self._seed, trial.number)
        sampler = self._factory(seed)
        with self._lock:
            self._samplers[trial.number] = sampler
        study._storage.set_trial_user_attr(trial._trial_id, records.SAMPLER_SEED, seed)
        sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        with self._lock:
            sampler = self._samplers.pop(trial.number, self._fallback)
        sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()
