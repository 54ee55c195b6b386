"""What Optuna's own tools (optuna-dashboard, the ``optuna`` command) show of a study this toolkit created.

Fast: studies are created in a real SQLite storage, nothing trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from conftest import tiny_space

from tuning import records
from tuning import study as studies
from tuning.errors import UserInputError
from tuning.space import SearchSpace

PASSWORD = "s3cr3t-pw"


def _create(tmp_path: Path, **overrides: object) -> optuna.Study:
    space = SearchSpace.from_dict(tiny_space(**overrides))
    storage = studies.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    return studies.create_or_load(space, storage, "tools", None, None)


def test_objective_is_named_and_rows_stay_short(tmp_path: Path) -> None:
    _create(tmp_path, study={"storage": f"postgresql://tuner:{PASSWORD}@db.example.com/optuna"})
    loaded = optuna.load_study(study_name="tools", storage=f"sqlite:///{tmp_path / 'optuna.db'}")

    assert loaded.metric_names == ["val_accuracy"]  # not "Objective 0" in optuna-dashboard
    assert len(json.dumps(loaded.user_attrs)) < 200  # `optuna studies` prints every user attribute
    assert set(loaded.user_attrs) == {records.SPACE_HASH, records.OBJECTIVES}
    stored = records.study_space(loaded)
    assert stored["model"]["family"] == "mlp"
    assert stored["study"]["storage"] == "postgresql://tuner:***@db.example.com/optuna"
    raw = (tmp_path / "optuna.db").read_bytes()
    assert PASSWORD.encode() not in raw  # nowhere in the storage


def test_resume_check_still_sees_a_changed_section(tmp_path: Path) -> None:
    _create(tmp_path)
    _create(tmp_path, study={"n_trials": 9})  # the study section may change
    with pytest.raises(UserInputError, match="different model section"):
        _create(tmp_path, model={"family": "mlp", "depth": 3, "width": 8})


def test_a_study_created_before_keeps_resuming(tmp_path: Path) -> None:
    """Studies of earlier versions hold the whole space as a user attribute: their resume check still works."""
    space = SearchSpace.from_dict(tiny_space())
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    old = optuna.create_study(study_name="tools", storage=url, direction="maximize")
    old.set_user_attr(records.SPACE, space.to_dict())
    with pytest.raises(UserInputError, match="different train section"):
        _create(tmp_path, train={"epochs": 3, "batch_size": 64, "learning_rate": 0.003, "chance_epochs": 0})
    assert records.study_space(optuna.load_study(study_name="tools", storage=url))["model"]["family"] == "mlp"
