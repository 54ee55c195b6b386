"""Samplers and pruners from OptunaHub by name in YAML (``sampler: {optunahub: samplers/<name>}``).

A package here is a real OptunaHub package in optunahub's own on-disk cache (``OPTUNAHUB_CACHE_HOME``), where
``optunahub.load_module`` finds it without downloading (this machine has no access to github.com); the toolkit
loads it through optunahub exactly as it would after a download.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from conftest import tiny_space

from tuning.cli import main

_DEMO = '''
import optuna


class CountingSampler(optuna.samplers.RandomSampler):
    """A random sampler that keeps state in memory: the trials it has seen (one instance per study, or it resets)."""

    def __init__(self, seed=None, spread=1.0):
        super().__init__(seed=seed)
        if spread <= 0:
            raise ValueError(f"spread must be positive, got {spread}")
        self.seen = 0

    def before_trial(self, study, trial):
        self.seen += 1
        study._storage.set_trial_user_attr(trial._trial_id, "seen_by_sampler", self.seen)
'''
_TWO = _DEMO + '''

class OtherSampler(optuna.samplers.RandomSampler):
    pass
'''
_NUMBERS = itertools.count()


def _package(cache: Path, text: str) -> str:
    """Write an OptunaHub package into optunahub's cache layout; its name, unique in this process."""
    name = f"samplers/demo_{next(_NUMBERS)}"
    folder = cache / "github.com" / "optuna" / "optunahub-registry" / "main" / "package" / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(text)
    return name


@pytest.fixture
def cache(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPTUNAHUB_CACHE_HOME", str(workdir / "hub"))
    return workdir / "hub"


def _validate(cache: Path, sampler: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = cache.parent / "space.yaml"
    path.write_text(yaml.safe_dump(tiny_space(study={"sampler": sampler}), sort_keys=False))
    code = main(["validate", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_hub_sampler_by_name_validates(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _validate(cache, {"optunahub": _package(cache, _DEMO), "spread": 2.0}, capsys)
    assert code == 0 and "OK: the space is valid." in text, text


@pytest.mark.parametrize(("case", "says"), [
    ("bad option", "study.sampler: the options of CountingSampler are not accepted"),
    ("unknown option", "unexpected keyword argument 'sprad'"),
    ("not cached, offline", "study.sampler: cannot load the optunahub package samplers/nowhere_to_be_found"),
    ("two classes", "defines 2 sampler classes. Received: ['CountingSampler', 'OtherSampler']. Fix: name one"),
    ("no package", "study.sampler.optunahub: names an OptunaHub package as <kind>/<name>"),
])
def test_a_bad_hub_sampler_exits_2_naming_the_key(cache: Path, capsys: pytest.CaptureFixture[str], case: str,
                                                   says: str) -> None:
    sampler: object = {
        "bad option": {"optunahub": _package(cache, _DEMO), "spread": -1},
        "unknown option": {"optunahub": _package(cache, _DEMO), "sprad": 1},
        "not cached, offline": {"optunahub": "samplers/nowhere_to_be_found"},
        "two classes": {"optunahub": _package(cache, _TWO)},
        "no package": {"optunahub": "dehb"},
    }[case]
    code, text = _validate(cache, sampler, capsys)
    assert code == 2 and says in text, text
    assert "Traceback" not in text


@pytest.mark.slow
def test_a_study_runs_with_one_hub_sampler_kept_for_all_its_trials(cache: Path) -> None:
    import tuning

    name = _package(cache, _TWO)
    space = tiny_space(study={"name": "hub", "n_trials": 4, "sampler": {"optunahub": name, "class": "CountingSampler"}},
                       train={"epochs": 1})
    study = tuning.run(space, tracking=False, verbose=False)
    assert [t.user_attrs["seen_by_sampler"] for t in study.get_trials()] == [1, 2, 3, 4]  # one instance, its state
    assert study.get_trials()[0].params  # it sampled the space
