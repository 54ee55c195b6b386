"""Tests of tuning.report against real Optuna SQLite storages written with the runner's records contract.

A tiny analytic "training" function stands in for Keras: it reports one objective value per epoch, gets
pruned by a real MedianPruner, fails for some configurations, and sets the same user attributes as the
runner (epochs, train_seconds, param_count, history, test_accuracy, reason, mlflow_run_id, seed).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tuning import records
from tuning.errors import StorageError, UserInputError
from tuning.report import (
    EmptyStudyError,
    build_report,
    compare_studies,
    history_data,
    leaderboard,
    learning_curves_data,
    load_studies,
    outcomes,
    parallel_coordinates_data,
    param_importance,
    parameter_effects,
    pareto_front,
    plot_best_vs_time,
    plot_learning_curves,
    plot_optimization_history,
    plot_parallel_coordinates,
    plot_param_importance,
    render,
    write_report,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

EPOCHS = 4
TARGET = 0.9


def _fake_training(trial: optuna.Trial, *, tracked: bool = True, report: bool = True) -> float:
    """Suggest like the runner does (key paths), 'train' analytically, record the contract's attributes."""
    depth = trial.suggest_int("model.depth", 1, 3)
    widths = [trial.suggest_categorical(f"model.width.{i}", [16, 32, 64]) for i in range(1, depth + 1)]
    lr = trial.suggest_float("train.learning_rate", 1e-4, 1e-1, log=True)
    optimizer = trial.suggest_categorical("train.optimizer", ["adam", "sgd"])
    dropout = trial.suggest_float("model.dropout", 0.0, 0.5)
    params = sum(w * 100 for w in widths) + 10
    trial.set_user_attr(records.PARAM_COUNT, params)
    trial.set_user_attr(records.SEED, trial.number)
    if tracked:
        trial.set_user_attr(records.MLFLOW_RUN_ID, f"run{trial.number:04d}")
    if optimizer == "sgd" and lr < 3e-4:
        trial.set_user_attr(records.EPOCHS, 1)
        trial.set_user_attr(records.REASON, "loss became NaN at epoch 1")
        raise RuntimeError("loss became NaN at epoch 1")
    ceiling = (
        0.99 - 0.05 * abs(math.log10(lr) + 2.5) - 0.1 * dropout - (0.03 if optimizer == "sgd" else 0) + 0.01 * depth
    )
    history: dict[str, list[float]] = {"loss": [], "val_accuracy": []}
    for epoch in range(1, EPOCHS + 1):
        acc = ceiling * (1 - 0.5**epoch)
        history["val_accuracy"].append(acc)
        history["loss"].append(1 - acc)
        if report:  # Optuna cannot prune multi-objective trials
            trial.report(acc, epoch)
        if report and trial.should_prune():
            _record_epochs(trial, history, epoch)
            trial.set_user_attr(records.REASON, f"pruned at epoch {epoch}: val_accuracy {acc:.3f} below the median")
            raise optuna.TrialPruned()
    _record_epochs(trial, history, EPOCHS)
    trial.set_user_attr(records.TEST_ACCURACY, acc - 0.005)
    return acc


def _record_epochs(trial: optuna.Trial, history: dict[str, list[float]], epochs: int) -> None:
    trial.set_user_attr(records.HISTORY, history)
    trial.set_user_attr(records.EPOCHS, epochs)
    trial.set_user_attr(records.TRAIN_SECONDS, 0.5 * epochs)


def _multi(trial: optuna.Trial) -> tuple[float, float]:
    acc = _fake_training(trial, tracked=False, report=False)
    return acc, float(trial.user_attrs[records.PARAM_COUNT])


def _create(
    storage: str, name: str, sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner, n_trials: int
) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize")
    study.set_user_attr(records.OBJECTIVES, ["val_accuracy"])
    study.optimize(_fake_training, n_trials=n_trials, catch=(RuntimeError,))
    return study


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite storage with a TPE+pruning study, a random study, a multi-objective one and two degenerate ones."""
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'optuna.db'}"
    _create(
        url,
        "tpe",
        optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        40,
    )
    _create(url, "random", optuna.samplers.RandomSampler(seed=1), optuna.pruners.NopPruner(), 25)
    multi = optuna.create_study(
        study_name="multi",
        storage=url,
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=2),
    )
    multi.set_user_attr(records.OBJECTIVES, ["val_accuracy", "params"])
    multi.optimize(_multi, n_trials=30, catch=(RuntimeError,))
    optuna.create_study(study_name="empty", storage=url)
    failing = optuna.create_study(study_name="all-failed", storage=url)
    failing.optimize(_always_fails, n_trials=2, catch=(RuntimeError,))
    return url


def _always_fails(trial: optuna.Trial) -> float:
    trial.set_user_attr(records.REASON, "model cannot be built: 3 pooling blocks shrink 28x28 below 1x1")
    raise RuntimeError("configuration error")


def _load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def _completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=[optuna.trial.TrialState.COMPLETE])


# ------------------------------------------------------------------------------------------------------ tables
def test_fixture_has_every_outcome(storage: str) -> None:
    states = {t.state for t in _load(storage, "tpe").trials}
    assert {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL} <= states


def test_leaderboard_best_equals_study_best_value(storage: str) -> None:
    study = _load(storage, "tpe")
    board = leaderboard(study, top=7)
    assert len(board) == 7
    assert board.loc[0, "val_accuracy"] == study.best_value
    assert board.loc[0, "trial"] == study.best_trial.number
    assert board["val_accuracy"].is_monotonic_decreasing
    assert list(board["rank"]) == list(range(1, 8))
    for _, row in board.iterrows():
        trial = study.trials[row["trial"]]
        assert row["test_accuracy"] == trial.user_attrs[records.TEST_ACCURACY]
        assert row["epochs"] == EPOCHS
        assert row["mlflow_run_id"] == f"run{trial.number:04d}"
        assert row["train.learning_rate"] == trial.params["train.learning_rate"]
        assert row["duration_seconds"] == (trial.datetime_complete - trial.datetime_start).total_seconds()
    assert set(board["state"]) == {"complete"}


def test_leaderboard_top_larger_than_completed_lists_all(storage: str) -> None:
    study = _load(storage, "random")
    assert len(leaderboard(study, top=1000)) == len(_completed(study))


def test_parameter_effect_counts_add_up_to_completed_trials(storage: str) -> None:
    study = _load(storage, "tpe")
    completed = _completed(study)
    effects = parameter_effects(study)
    sums = effects.groupby("parameter")["trials"].sum()
    assert set(sums.index) == {p for t in completed for p in t.params}
    assert (sums == len(completed)).all(), sums
    width3 = effects[effects["parameter"] == "model.width.3"]
    assert "(not sampled)" in set(width3["value"])
    assert width3.loc[width3["value"] == "(not sampled)", "trials"].item() == sum(
        "model.width.3" not in t.params for t in completed
    )


def test_parameter_effects_numbers_for_a_categorical_value(storage: str) -> None:
    study = _load(storage, "tpe")
    effects = parameter_effects(study)
    row = effects[(effects["parameter"] == "train.optimizer") & (effects["value"] == "adam")].iloc[0]
    values = [t.value for t in _completed(study) if t.params["train.optimizer"] == "adam"]
    assert row["group"] == "value"
    assert row["trials"] == len(values)
    assert row["mean"] == pytest.approx(sum(values) / len(values))
    assert (row["best"], row["worst"]) == (max(values), min(values))


def test_parameter_effects_bins_log_range(storage: str) -> None:
    study = _load(storage, "random")
    effects = parameter_effects(study, bins=3)
    lr = effects[effects["parameter"] == "train.learning_rate"]
    assert set(lr["group"]) == {"bin"}
    assert set(lr["value"]) <= {"[0.0001, 0.001)", "[0.001, 0.01)", "[0.01, 0.1]"}
    in_first = [t.value for t in _completed(study) if t.params["train.learning_rate"] < 1e-3]
    first = lr[lr["value"] == "[0.0001, 0.001)"]
    assert first["trials"].sum() == len(in_first)
    depth = effects[effects["parameter"] == "model.depth"]
    assert set(depth["value"]) <= {"1", "2", "3"} and set(depth["group"]) == {"value"}


def test_param_importance_names_evaluator_and_sums_to_one(storage: str) -> None:
    table = param_importance(_load(storage, "tpe"))
    assert table.attrs["evaluator"] == "FanovaImportanceEvaluator"
    assert "FanovaImportanceEvaluator" in table.attrs["note"]
    assert set(table["parameter"]) == {
        "model.depth",
        "model.width.1",
        "train.learning_rate",
        "train.optimizer",
        "model.dropout",
    }
    assert table["importance"].sum() == pytest.approx(1.0)
    assert table["importance"].is_monotonic_decreasing
    assert "model.width.2" in table.attrs["note"]  # conditional: named as not rated


def test_param_importance_other_evaluator_and_multi_objective(storage: str) -> None:
    table = param_importance(_load(storage, "multi"), optuna.importance.PedAnovaImportanceEvaluator())
    assert table.attrs["evaluator"] == "PedAnovaImportanceEvaluator"
    assert list(table.columns) == ["parameter", "importance_val_accuracy", "importance_params"]
    assert table["importance_params"].sum() == pytest.approx(1.0)


def test_param_importance_falls_back_with_too_few_trials(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'few.db'}", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    table = param_importance(study)
    assert table.empty
    assert "needs at least 5 completed trials and the study has 2" in table.attrs["note"]


def test_compare_studies_target_trials_time_and_epochs(storage: str) -> None:
    tpe, rnd = _load(storage, "tpe"), _load(storage, "random")
    table = compare_studies([tpe, rnd], target=TARGET).set_index("study")
    for study in (tpe, rnd):
        row = table.loc[study.study_name]
        trials = study.trials
        assert row["best"] == study.best_value
        assert row["trials"] == len(trials)
        assert row["total_epochs"] == sum(t.user_attrs.get(records.EPOCHS, 0) for t in trials)
        for state, name in (
            (optuna.trial.TrialState.COMPLETE, "complete"),
            (optuna.trial.TrialState.PRUNED, "pruned"),
            (optuna.trial.TrialState.FAIL, "failed"),
        ):
            assert row[name] == sum(t.state == state for t in trials)
        # Sequential studies: completion order is number order.
        first = next(t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value >= TARGET)
        assert bool(row["reached"])
        assert row["trials_to_target"] == first.number + 1
        assert row["epochs_to_target"] == sum(t.user_attrs.get(records.EPOCHS, 0) for t in trials[: first.number + 1])
        assert row["seconds_to_target"] == (first.datetime_complete - trials[0].datetime_start).total_seconds()
        assert row["wall_seconds"] == (trials[-1].datetime_complete - trials[0].datetime_start).total_seconds()
    assert table.loc["tpe", "pruned"] > 0 and table.loc["random", "pruned"] == 0


def test_compare_studies_unreached_target(storage: str) -> None:
    row = compare_studies([_load(storage, "random")], target=1.5).iloc[0]
    assert not row["reached"] and pd.isna(row["trials_to_target"]) and math.isnan(row["seconds_to_target"])
    assert "target" not in compare_studies([_load(storage, "random")]).columns


def test_pareto_front_matches_optuna_best_trials(storage: str) -> None:
    study = _load(storage, "multi")
    front = pareto_front(study)
    assert sorted(front["trial"]) == sorted(t.number for t in study.best_trials)
    assert list(front.columns[:3]) == ["trial", "val_accuracy", "params"]
    assert front["val_accuracy"].is_monotonic_decreasing
    assert pareto_front(_load(storage, "tpe")).empty
    board = leaderboard(study, top=100)
    assert set(board.loc[board["pareto"], "trial"]) == set(front["trial"])


def test_outcomes_counts_and_reasons(storage: str) -> None:
    study = _load(storage, "tpe")
    table = outcomes(study)
    assert table["trials"].sum() == len(study.trials)
    by_state = table.groupby("state")["trials"].sum()
    assert by_state["pruned"] == sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    failed = table[table["state"] == "failed"]
    assert set(failed["reason"]) == {"loss became NaN at epoch 1"}
    assert all(r.startswith("pruned at epoch") for r in table.loc[table["state"] == "pruned", "reason"])
    assert list(dict.fromkeys(table["state"])) == ["complete", "pruned", "failed"]


# ------------------------------------------------------------------------------------------------------- plots
def test_history_data_best_so_far(storage: str) -> None:
    study = _load(storage, "tpe")
    data = history_data(study)
    assert len(data) == len(study.trials)
    assert data["best_so_far"].dropna().is_monotonic_increasing
    assert data["best_so_far"].iloc[-1] == study.best_value
    assert data["elapsed_seconds"].is_monotonic_increasing


def test_learning_curves_data_from_history_attr(storage: str) -> None:
    study = _load(storage, "tpe")
    data = learning_curves_data(study, top=3)
    assert data.attrs["metric"] == "val_accuracy"
    assert list(data.groupby("rank")["trial"].first()) == list(leaderboard(study, top=3)["trial"])
    best = data[data["rank"] == 1]
    assert list(best["value"]) == study.best_trial.user_attrs[records.HISTORY]["val_accuracy"]
    assert len(plot_learning_curves(study, top=3).axes[0].lines) == 3


def test_parallel_coordinates_data_scaled(storage: str) -> None:
    study = _load(storage, "tpe")
    data = parallel_coordinates_data(study)
    assert len(data) == len(_completed(study))
    axes = list(data.attrs["ticks"])
    assert "train.learning_rate" in axes
    values = data[axes].stack().dropna()
    assert values.between(0, 1).all()
    assert data["model.width.3"].isna().any()  # not sampled when depth < 3
    fig = plot_parallel_coordinates(study)
    assert len(fig.axes[0].lines) == len(data) + len(axes)  # one line per trial, one vertical per axis


def test_figures_render_to_png(storage: str, tmp_path: Path) -> None:
    study = _load(storage, "tpe")
    figures = {
        "history": plot_optimization_history(study),
        "time": plot_best_vs_time([study, _load(storage, "random")], target=TARGET),
        "importance": plot_param_importance(param_importance(study)),
    }
    assert len(figures["time"].axes[0].get_legend().get_texts()) == 3  # two studies and the target
    for name, fig in figures.items():
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------------------------ formats
def test_csv_round_trip_keeps_numbers(storage: str, tmp_path: Path) -> None:
    paths = write_report(
        ["tpe", "random"], storage=storage, fmt="csv", out=tmp_path, target=TARGET, stream=io.StringIO()
    )
    report = build_report(["tpe", "random"], storage, target=TARGET)
    assert {p.name for p in paths} == {f"{k}.csv" for k in report.tables()}
    for key, expected in report.tables().items():
        back = pd.read_csv(tmp_path / f"{key}.csv")
        assert list(back.columns) == list(expected.columns), key
        assert len(back) == len(expected), key
        for column in expected.columns:
            if expected[column].dtype.kind in "iuf" or str(expected[column].dtype) == "Int64":
                pd.testing.assert_series_equal(
                    back[column].astype(float), expected[column].astype(float), check_names=False, rtol=0, atol=0
                )
    board = pd.read_csv(tmp_path / "tpe.leaderboard.csv")
    assert board.loc[0, "val_accuracy"] == _load(storage, "tpe").best_value


def test_csv_to_stream_splits_into_tables(storage: str) -> None:
    stream = io.StringIO()
    assert write_report(["tpe"], storage=storage, fmt="csv", stream=stream) == []
    parts = re.split(r"^# (\S+)\n", stream.getvalue(), flags=re.MULTILINE)[1:]
    tables = {key: pd.read_csv(io.StringIO(text)) for key, text in zip(parts[::2], parts[1::2], strict=True)}
    assert set(tables) == {
        "comparison",
        "tpe.leaderboard",
        "tpe.parameter_effects",
        "tpe.param_importance",
        "tpe.outcomes",
    }
    assert tables["comparison"].loc[0, "best"] == _load(storage, "tpe").best_value


def test_json_round_trip(storage: str) -> None:
    stream = io.StringIO()
    write_report(["tpe", "multi"], storage=storage, fmt="json", stream=stream, target=TARGET)
    document = json.loads(stream.getvalue())
    assert document["comparison"][0]["best"] == _load(storage, "tpe").best_value
    tpe = document["studies"]["tpe"]
    assert tpe["leaderboard"][0]["val_accuracy"] == _load(storage, "tpe").best_value
    assert "FanovaImportanceEvaluator" in tpe["notes"]["param_importance"]
    assert len(document["studies"]["multi"]["pareto_front"]) == len(_load(storage, "multi").best_trials)
    assert document["studies"]["multi"]["directions"] == ["maximize", "minimize"]


def test_markdown_and_latex_to_stream(storage: str) -> None:
    report = build_report(["tpe"], storage, top=3)
    text = render(report, "md")
    assert text.count("## ") == 5 and "| rank | trial | val_accuracy |" in text
    assert f"{_load(storage, 'tpe').best_value:.4g}" in text
    latex = render(report, "latex")
    assert latex.count(r"\begin{tabular}") == 5 and r"train.learning\_rate" in latex


def test_markdown_out_writes_report_and_plots(storage: str, tmp_path: Path) -> None:
    paths = write_report(["tpe", "random"], storage=storage, fmt="md", out=tmp_path / "r", stream=io.StringIO())
    assert paths[0] == tmp_path / "r" / "report.md"
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) == 1 + 2 * 4
    text = paths[0].read_text()
    assert all(f"]({p.name})" in text for p in pngs)


def test_html_without_out_writes_in_cwd(storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stream = io.StringIO()
    paths = write_report(["random"], storage=storage, fmt="html", stream=stream)
    assert paths == [tmp_path / "report.html"]
    assert stream.getvalue() == ""  # files are returned; the command line prints them
    page = paths[0].read_text()
    assert page.count("<table") == 5 and page.count('src="data:image/png;base64,') == 5


# ------------------------------------------------------------------------------------------------------- errors
def test_unknown_study_lists_existing(storage: str) -> None:
    with pytest.raises(StorageError) as info:
        write_report(["nope"], storage=storage, stream=io.StringIO())
    assert isinstance(info.value, UserInputError)
    assert "'nope'" in str(info.value) and "all-failed, empty, multi, random, tpe" in str(info.value)


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "optuna.db"
    with pytest.raises(StorageError, match="does not exist"):
        load_studies(["tpe"], f"sqlite:///{missing}")
    assert not missing.exists() and not missing.parent.exists()


def test_default_storage_is_mlruns_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError, match="mlruns/optuna.db"):
        load_studies(["tpe"])
    assert not (tmp_path / "mlruns").exists()


def test_sqlite_file_without_optuna_tables_is_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("create table notes (x text)")
    before = other.read_bytes()
    with pytest.raises(StorageError, match="Cannot open the Optuna storage"):
        load_studies(["tpe"], f"sqlite:///{other}")
    assert other.read_bytes() == before


def test_unreachable_server_redacts_password() -> None:
    with pytest.raises(StorageError) as info:
        load_studies(["tpe"], "postgresql://alice:s3cret-pw@127.0.0.1:1/optuna")
    assert "s3cret-pw" not in str(info.value)
    assert "alice:***@127.0.0.1" in str(info.value)


def test_path_instead_of_url_suggests_sqlite(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="must be a database URL"):
        load_studies(["tpe"], str(tmp_path / "optuna.db"))


def test_empty_study(storage: str) -> None:
    with pytest.raises(EmptyStudyError, match="'empty' has no trials"):
        write_report(["empty"], storage=storage, stream=io.StringIO())


def test_study_without_completed_trial_gives_reasons(storage: str) -> None:
    with pytest.raises(EmptyStudyError) as info:
        write_report(["tpe", "all-failed"], storage=storage, stream=io.StringIO())
    assert "no completed trial" in str(info.value) and "2 fail" in str(info.value)
    assert "3 pooling blocks" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"fmt": "pdf"}, "Unknown report format"), ({"top": 0}, "--top must be at least 1")],
)
def test_bad_options(storage: str, kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        write_report(["tpe"], storage=storage, stream=io.StringIO(), **kwargs)


def test_out_that_is_a_file(storage: str, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserInputError, match="--out must be a folder"):
        write_report(["tpe"], storage=storage, fmt="csv", out=tmp_path / "f", stream=io.StringIO())


# --------------------------------------------------------------------------------------------- headless browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(storage: str, tmp_path: Path) -> None:
    (page,) = write_report(
        ["tpe", "random", "multi"], storage=storage, fmt="html", out=tmp_path, target=TARGET, stream=io.StringIO()
    )
    report = build_report(["tpe", "random", "multi"], storage, target=TARGET)
    # A copy with a probe script: after load, record how many images the browser really decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load', () => { document.body.dataset.decoded = "
            "[...document.images].filter(i => i.complete && i.naturalWidth > 100).length; });</script></body>",
        )
    )
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "shot.png"
    env = {**os.environ, "HOME": str(tmp_path)}
    # The timeout only guards against a hung browser; it asserts nothing about speed.
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", probe.as_uri()], check=True, capture_output=True, text=True, env=env,
        timeout=300,
    ).stdout
    tables = len(report.tables())
    assert dom.count("<table") == tables
    for key in report.tables():
        assert f'data-table="{key}"' in dom
    figures = 1 + 3 * 4
    assert dom.count("<img") == figures
    assert f'data-decoded="{figures}"' in dom


# ------------------------------------------------------------------------------------------ end to end with Keras

def _tiny_space(name: str, sampler: str, pruner: str) -> dict:
    return {
        "data": {"dataset": "mnist", "train_size": 300, "validation_split": 0.2, "test_size": 100},
        "model": {"family": "mlp", "depth": {"low": 1, "high": 2}, "width": [16, 32]},
        "train": {"epochs": 2, "batch_size": 50, "learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "study": {"name": name, "sampler": sampler, "pruner": pruner, "n_trials": 3, "seed": 0},
    }


@pytest.mark.slow
def test_report_compares_two_real_keras_studies(workdir: Path) -> None:
    import tuning

    tmp_path = workdir
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    for name, sampler, pruner in (("tpe-pruned", "tpe", "median"), ("random-plain", "random", "none")):
        tuning.run(_tiny_space(name, sampler, pruner), storage=url, tracking=False)
    tpe, rnd = _load(url, "tpe-pruned"), _load(url, "random-plain")
    target = min(tpe.best_value, rnd.best_value)  # both reach it
    paths = write_report(
        ["tpe-pruned", "random-plain"],
        storage=url,
        fmt="csv",
        out=tmp_path / "out",
        target=target,
        stream=io.StringIO(),
    )
    comparison = pd.read_csv(tmp_path / "out" / "comparison.csv").set_index("study")
    for study in (tpe, rnd):
        row = comparison.loc[study.study_name]
        assert row["best"] == study.best_value
        assert row["trials"] == len(study.trials) >= 3
        assert row["total_epochs"] == sum(t.user_attrs[records.EPOCHS] for t in study.trials)
        assert bool(row["reached"]) and 1 <= row["trials_to_target"] <= len(study.trials)
        board = pd.read_csv(tmp_path / "out" / f"{study.study_name}.leaderboard.csv")
        assert board.loc[0, "val_accuracy"] == study.best_value
        assert board.loc[0, "test_accuracy"] == study.best_trial.user_attrs[records.TEST_ACCURACY]
        curves = learning_curves_data(study, top=1)
        assert list(curves["value"]) == study.best_trial.user_attrs[records.HISTORY]["val_accuracy"]
    assert len(paths) == 1 + 2 * 4
