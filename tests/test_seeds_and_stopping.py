"""What a trial's record promises: its seed reproduces it (also beside another trial, ``n_jobs=2``), and
``train.early_stopping`` watches the objective, as documented. Real studies through ``tuning.run``."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_space
from optuna.trial import TrialState

import tuning
from tuning import records
from tuning.data import load_spec
from tuning.space import SearchSpace
from tuning.training import train

pytestmark = pytest.mark.slow


def test_a_trial_trained_beside_another_reproduces_from_its_recorded_seed(workdir: Path) -> None:
    d = tiny_space(study={"n_trials": 2, "name": "pair"}, train={"epochs": 2})
    study = tuning.run(d, n_jobs=2, tracking=False)
    trials = study.get_trials(states=[TrialState.COMPLETE])
    assert len(trials) >= 2  # threads may start one more than n_trials
    overlapping = [t for t in trials if any(
        o.number != t.number and o.datetime_start < t.datetime_complete and t.datetime_start < o.datetime_complete
        for o in trials
    )]
    assert overlapping  # two trials did train at the same time

    space = SearchSpace.from_dict(d)
    data = load_spec(space.data)
    for t in overlapping[:2]:  # retrained alone, with the seed it recorded
        alone = train(space.config_from_params(t.params), data, seed=t.user_attrs[records.SEED], evaluate_test=False)
        recorded = t.user_attrs[records.HISTORY]
        for metric in ("loss", "val_loss", "val_accuracy"):
            assert alone.history[metric] == pytest.approx(recorded[metric], rel=1e-5, abs=1e-6), (t.number, metric)


def test_early_stopping_watches_the_objective(workdir: Path) -> None:
    """Validation accuracy (60 images: it stalls soon) stops a trial while validation loss still falls."""
    d = tiny_space(train={"epochs": 8, "early_stopping": 1}, study={"n_trials": 2, "name": "patience"})
    study = tuning.run(d, tracking=False)
    for t in study.trials:
        history = t.user_attrs[records.HISTORY]
        watched = history["val_accuracy"]
        stop = next((i + 1 for i in range(1, len(watched)) if watched[i] <= max(watched[:i])), 8)
        assert len(watched) == stop, (t.number, history)


def test_stop_after_ends_a_study_whose_best_stopped_improving_and_a_resume_runs_nothing_more(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tiny_space(study={"name": "plateau", "n_trials": 40, "stop_after": 3}, train={"epochs": 1})

    study = tuning.run(space, tracking=False)

    done = sorted(study.get_trials(states=[TrialState.COMPLETE, TrialState.PRUNED]), key=lambda t: t.number)
    assert 4 <= len(done) < 40
    best = max((t for t in done if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    after = [t for t in done if t.number > best.number]
    assert len(after) == 3  # stopped as soon as three trials in a row did not beat the best, not later
    assert all(t.value <= best.value for t in after if t.state == TrialState.COMPLETE)
    err = capsys.readouterr().err
    assert f"Stopped early: the best value ({best.value:.4f}, trial {best.number}) has not improved" in err

    again = tuning.run(space, tracking=False)
    assert len(again.get_trials()) == len(study.get_trials())  # the rule still holds: nothing more runs
    assert "Stopped early" in capsys.readouterr().err
