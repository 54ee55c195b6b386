"""Tests of tuning.report against real Optuna SQLite storages.

The studies the report reads are written by ``tuning.run`` itself (tiny real Keras MLPs on 300 MNIST images,
one of them tracked in a real MLflow SQLite store), so every record the report reads is the runner's, not a
hand-made copy. Their training happens once per session in :func:`storage`; the tests that read it are
``slow``. The fast tests use plain Optuna studies (analytic objectives, no records) and the error paths.
"""

from __future__ import annotations

import html
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
from conftest import MNIST_DIR

from tuning import records
from tuning.errors import StorageError, TooManyFailuresError, UserInputError
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
    to_html,
    to_markdown,
    write_report,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

EPOCHS = 2
#: Baselines run first, in this order: two that learn (never pruned: the pruner's first two trials), one that
#: diverges (fails: NaN loss) and one that stays at chance level (pruned by the median pruner at epoch 1).
BASELINES = [
    {"model.depth": 2, "model.width": [32, 32], "model.dropout": 0.0, "train.optimizer": "adam",
     "train.learning_rate": 0.01},
    {"model.depth": 1, "model.width": [32], "model.dropout": 0.0, "train.optimizer": "adam",
     "train.learning_rate": 0.01},
    {"model.depth": 3, "model.width": [32, 32, 32], "model.dropout": 0.0, "train.optimizer": "sgd",
     "train.learning_rate": 1000.0},
    {"model.depth": 1, "model.width": [16], "model.dropout": 0.5, "train.optimizer": "sgd",
     "train.learning_rate": 0.001},
]  # fmt: skip


def _space(name: str, n_trials: int, lr: tuple[float, float] = (1.0e-3, 1.0), **study: object) -> dict:
    """A tiny real space: MLPs of 1-3 layers, 2 epochs on 240 MNIST images, learning rates in ``lr``."""
    return {
        "data": {"dataset": "mnist", "train_size": 300, "validation_split": 0.2, "test_size": 100},
        "model": {"family": "mlp", "depth": {"low": 1, "high": 3}, "width": {"per_layer": [16, 32]},
                  "dropout": {"low": 0.0, "high": 0.5, "step": 0.1}},
        "train": {"epochs": EPOCHS, "batch_size": 64, "optimizer": ["adam", "sgd"], "chance_epochs": 0,
                  "learning_rate": {"low": lr[0], "high": lr[1], "log": True}},
        "objective": {"metric": "val_accuracy"},
        "study": {"name": name, "n_trials": n_trials, "seed": 0, **study},
    }  # fmt: skip


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite storage written by ``tuning.run``: a tracked TPE study with pruning (complete, pruned and
    failed trials), an untracked random study, a multi-objective one, one whose every trial fails, an empty one.
    About 25 tiny trials, trained once for the whole module.
    """
    import tuning

    home = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{home / 'optuna.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(home)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        if MNIST_DIR:
            mp.setenv("TUNING_DATA_DIR", MNIST_DIR)
        pruner = {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0}
        tpe = _space("tpe", 7, (1.0e-3, 1000.0), sampler={"type": "tpe", "n_startup_trials": 5}, pruner=pruner,
                     enqueue=BASELINES)  # fmt: skip
        tuning.run(tpe, storage=url, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
        tuning.run(_space("random", 7, sampler={"type": "random"}, pruner="none"), storage=url, tracking=False)
        multi = _space("multi", 5, (1.0e-3, 0.1), sampler={"type": "random"}, pruner="none")
        multi["train"]["optimizer"] = "adam"
        multi["objective"] = [{"metric": "val_accuracy"}, {"metric": "params", "direction": "minimize"}]
        tuning.run(multi, storage=url, tracking=False)
        failing = _space("all-failed", 1, pruner="none", max_consecutive_failures=2)
        failing["model"] = {"family": "cnn", "depth": 5, "width": 8, "kernel_size": 3, "dense_units": 16}
        with pytest.raises(TooManyFailuresError):
            tuning.run(failing, storage=url, tracking=False)
    optuna.create_study(study_name="empty", storage=url)
    return url


def _load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def _completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=[optuna.trial.TrialState.COMPLETE])


def _target(storage: str) -> float:
    """A value both the TPE and the random study reached."""
    return min(_load(storage, "tpe").best_value, _load(storage, "random").best_value)


# ------------------------------------------------------------------------------------------------------ tables
@pytest.mark.slow
def test_fixture_has_every_outcome(storage: str) -> None:
    states = {t.state for t in _load(storage, "tpe").trials}
    assert {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL} <= states


@pytest.mark.slow
def test_leaderboard_best_equals_study_best_value(storage: str) -> None:
    study = _load(storage, "tpe")
    board = leaderboard(study, top=2)
    assert len(board) == 2
    assert board.loc[0, "val_accuracy"] == study.best_value
    assert board.loc[0, "trial"] == study.best_trial.number
    assert board["val_accuracy"].is_monotonic_decreasing
    assert list(board["rank"]) == [1, 2]
    for _, row in board.iterrows():
        trial = study.trials[row["trial"]]
        if records.TEST_ACCURACY in trial.user_attrs:  # the trials that led when they finished
            assert row["test_accuracy"] == trial.user_attrs[records.TEST_ACCURACY]
        else:
            assert pd.isna(row["test_accuracy"])
        assert row["epochs"] == EPOCHS
        assert row["mlflow_run_id"] == trial.user_attrs[records.MLFLOW_RUN_ID] and len(row["mlflow_run_id"]) == 32
        assert row["train.learning_rate"] == trial.params["train.learning_rate"]
        assert row["duration_seconds"] == (trial.datetime_complete - trial.datetime_start).total_seconds()
    assert set(board["state"]) == {"complete"}


@pytest.mark.slow
def test_leaderboard_top_larger_than_completed_lists_all(storage: str) -> None:
    study = _load(storage, "random")
    assert len(leaderboard(study, top=1000)) == len(_completed(study))


@pytest.mark.slow
def test_parameter_effect_counts_add_up_to_completed_trials(storage: str) -> None:
    study = _load(storage, "tpe")
    completed = _completed(study)
    effects = parameter_effects(study)
    sums = effects.groupby("parameter")["trials"].sum()
    assert set(sums.index) == {p for t in completed for p in t.params}
    assert (sums == len(completed)).all(), sums
    width2 = effects[effects["parameter"] == "model.width.2"]
    assert "(not sampled)" in set(width2["value"])
    assert width2.loc[width2["value"] == "(not sampled)", "trials"].item() == sum(
        "model.width.2" not in t.params for t in completed
    )


@pytest.mark.slow
def test_parameter_effects_numbers_for_a_categorical_value(storage: str) -> None:
    study = _load(storage, "tpe")
    effects = parameter_effects(study)
    row = effects[(effects["parameter"] == "train.optimizer") & (effects["value"] == "adam")].iloc[0]
    values = [t.value for t in _completed(study) if t.params["train.optimizer"] == "adam"]
    assert row["group"] == "value"
    assert row["trials"] == len(values)
    assert row["mean"] == pytest.approx(sum(values) / len(values))
    assert (row["best"], row["worst"]) == (max(values), min(values))


@pytest.mark.slow
def test_parameter_effects_bins_log_range(storage: str) -> None:
    study = _load(storage, "random")
    effects = parameter_effects(study, bins=3)
    lr = effects[effects["parameter"] == "train.learning_rate"]
    assert set(lr["group"]) == {"bin"}
    assert set(lr["value"]) <= {"[0.001, 0.01)", "[0.01, 0.1)", "[0.1, 1]"}
    in_first = [t.value for t in _completed(study) if t.params["train.learning_rate"] < 1e-2]
    first = lr[lr["value"] == "[0.001, 0.01)"]
    assert first["trials"].sum() == len(in_first)
    depth = effects[effects["parameter"] == "model.depth"]
    assert set(depth["value"]) <= {"1", "2", "3"} and set(depth["group"]) == {"value"}


@pytest.mark.slow
def test_param_importance_names_evaluator_and_sums_to_one(storage: str) -> None:
    study = _load(storage, "random")
    completed = _completed(study)
    table = param_importance(study)
    assert table.attrs["evaluator"] == "FanovaImportanceEvaluator"
    assert "FanovaImportanceEvaluator" in table.attrs["note"]
    in_every = set.intersection(*(set(t.params) for t in completed))
    assert set(table["parameter"]) == {p for p in in_every if len({repr(t.params[p]) for t in completed}) > 1}
    assert {"model.depth", "train.learning_rate"} <= set(table["parameter"])
    assert table["importance"].sum() == pytest.approx(1.0)
    assert table["importance"].is_monotonic_decreasing
    assert any(name in table.attrs["note"] for name in ("model.width.2", "model.width.3"))  # conditional: not rated
    # A tiny study: the note says how many trials the ranking rests on, and that it is not reliable.
    assert table.attrs["trials"] == len(completed) < 20 and not table.attrs["reliable"]
    assert table.attrs["note"].startswith(f"Not reliable: these importances rest on only {len(completed)} completed")


@pytest.mark.slow
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


@pytest.mark.slow
def test_compare_studies_target_trials_time_and_epochs(storage: str) -> None:
    tpe, rnd = _load(storage, "tpe"), _load(storage, "random")
    target = _target(storage)
    table = compare_studies([tpe, rnd], target=target).set_index("study")
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
        first = next(t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value >= target)
        assert bool(row["reached"])
        assert row["trials_to_target"] == first.number + 1
        assert row["epochs_to_target"] == sum(t.user_attrs.get(records.EPOCHS, 0) for t in trials[: first.number + 1])
        assert row["seconds_to_target"] == (first.datetime_complete - trials[0].datetime_start).total_seconds()


@pytest.mark.slow
def test_compare_studies_unreached_target(storage: str) -> None:
    row = compare_studies([_load(storage, "random")], target=1.5).iloc[0]
    assert not row["reached"] and pd.isna(row["trials_to_target"]) and math.isnan(row["seconds_to_target"])
    assert "target" not in compare_studies([_load(storage, "random")]).columns


@pytest.mark.slow
def test_pareto_front_matches_optuna_best_trials(storage: str) -> None:
    study = _load(storage, "multi")
    front = pareto_front(study)
    assert sorted(front["trial"]) == sorted(t.number for t in study.best_trials)
    assert list(front.columns[:3]) == ["trial", "val_accuracy", "params"]
    assert front["val_accuracy"].is_monotonic_decreasing
    assert pareto_front(_load(storage, "tpe")).empty
    board = leaderboard(study, top=100)
    assert set(board.loc[board["pareto"], "trial"]) == set(front["trial"])


@pytest.mark.slow
def test_outcomes_counts_and_reasons(storage: str) -> None:
    study = _load(storage, "tpe")
    table = outcomes(study)
    assert table["trials"].sum() == len(study.trials)
    by_state = table.groupby("state")["trials"].sum()
    assert by_state["pruned"] == sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    failed = table[table["state"] == "failed"]
    assert len(failed) >= 1 and all(r.startswith("the loss became") for r in failed["reason"])
    assert all(r.startswith("pruned by the median pruner") for r in table.loc[table["state"] == "pruned", "reason"])
    assert list(dict.fromkeys(table["state"])) == ["complete", "pruned", "failed"]


# ------------------------------------------------------------------------------------------------------- plots
@pytest.mark.slow
def test_history_data_best_so_far(storage: str) -> None:
    study = _load(storage, "tpe")
    data = history_data(study)
    assert len(data) == len(study.trials)
    assert data["best_so_far"].dropna().is_monotonic_increasing
    assert data["best_so_far"].iloc[-1] == study.best_value
    assert data["elapsed_seconds"].is_monotonic_increasing


@pytest.mark.slow
def test_learning_curves_data_from_history_attr(storage: str) -> None:
    study = _load(storage, "tpe")
    data = learning_curves_data(study, top=2)
    assert data.attrs["metric"] == "val_accuracy"
    assert list(data.groupby("rank")["trial"].first()) == list(leaderboard(study, top=2)["trial"])
    best = data[data["rank"] == 1]
    assert list(best["value"]) == study.best_trial.user_attrs[records.HISTORY]["val_accuracy"]
    fig = plot_learning_curves(study, top=2)
    assert len(fig.axes[0].lines) == 2
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= EPOCHS]
    assert ticks and all(float(t).is_integer() for t in fig.axes[0].get_xticks())  # epochs: no 1.25, 1.5


@pytest.mark.slow
def test_parallel_coordinates_data_scaled(storage: str) -> None:
    study = _load(storage, "tpe")
    data = parallel_coordinates_data(study)
    assert len(data) == len(_completed(study))
    axes = list(data.attrs["ticks"])
    assert "train.learning_rate" in axes
    values = data[axes].stack().dropna()
    assert values.between(0, 1).all()
    assert data["model.width.2"].isna().any()  # not sampled when depth < 2
    fig = plot_parallel_coordinates(study)
    assert len(fig.axes[0].lines) == len(data) + len(axes)  # one line per trial, one vertical per axis


@pytest.mark.slow
def test_figures_render_to_png(storage: str, tmp_path: Path) -> None:
    study = _load(storage, "tpe")
    figures = {
        "history": plot_optimization_history(study),
        "time": plot_best_vs_time([study, _load(storage, "random")], target=_target(storage)),
        "importance": plot_param_importance(param_importance(study)),
    }
    assert len(figures["time"].axes[0].get_legend().get_texts()) == 3  # two studies and the target
    for name, fig in figures.items():
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------------------------ formats
@pytest.mark.slow
def test_csv_round_trip_keeps_numbers(storage: str, tmp_path: Path) -> None:
    target = _target(storage)
    paths = write_report(
        ["tpe", "random"], storage=storage, fmt="csv", out=tmp_path, target=target, stream=io.StringIO()
    )
    report = build_report(["tpe", "random"], storage, target=target)
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


@pytest.mark.slow
def test_csv_to_stream_splits_into_tables(storage: str) -> None:
    stream = io.StringIO()
    assert write_report(["tpe"], storage=storage, fmt="csv", stream=stream) == []
    parts = re.split(r"^# (\S+)\n", stream.getvalue(), flags=re.MULTILINE)[1:]
    tables = {key: pd.read_csv(io.StringIO(text)) for key, text in zip(parts[::2], parts[1::2], strict=True)}
    assert set(tables) == {
        "comparison",
        "tpe.search",
        "tpe.leaderboard",
        "tpe.parameter_effects",
        "tpe.param_importance",
        "tpe.outcomes",
    }
    assert tables["comparison"].loc[0, "best"] == _load(storage, "tpe").best_value


@pytest.mark.slow
def test_json_round_trip(storage: str) -> None:
    stream = io.StringIO()
    write_report(["tpe", "multi"], storage=storage, fmt="json", stream=stream, target=_target(storage))
    document = json.loads(stream.getvalue())
    assert document["comparison"][0]["best"] == _load(storage, "tpe").best_value
    tpe = document["studies"]["tpe"]
    assert tpe["leaderboard"][0]["val_accuracy"] == _load(storage, "tpe").best_value
    assert "FanovaImportanceEvaluator" in tpe["notes"]["param_importance"]
    assert len(document["studies"]["multi"]["pareto_front"]) == len(_load(storage, "multi").best_trials)
    assert document["studies"]["multi"]["directions"] == ["maximize", "minimize"]


#: How the fixture's two studies search, as their spaces say (:func:`storage`).
SEARCH = {
    "tpe": {"engine": "optuna", "sampler": "tpe (n_startup_trials=5)",
            "pruner": "median (n_startup_trials=2, n_warmup_steps=0)"},
    "random": {"engine": "optuna", "sampler": "random", "pruner": "none"},
}  # fmt: skip


@pytest.mark.slow
def test_every_format_says_which_engine_sampler_and_pruner_each_study_used(storage: str, tmp_path: Path) -> None:
    report = build_report(["tpe", "random"], storage)
    write_report(["tpe", "random"], storage=storage, fmt="csv", out=tmp_path, stream=io.StringIO())
    comparison = pd.read_csv(tmp_path / "comparison.csv").set_index("study")
    document = json.loads(render(report, "json"))
    by_study = {row["study"]: row for row in document["comparison"]}
    markdown, page, latex = render(report, "md"), to_html(report, {}), render(report, "latex")
    for name, expected in SEARCH.items():
        # CSV and JSON: columns of the comparison (no KerasTuner tuner), and the study's own "search" table.
        assert comparison.loc[name, list(expected)].to_dict() == expected
        assert pd.isna(comparison.loc[name, "tuner"]) and by_study[name]["tuner"] is None
        assert {k: by_study[name][k] for k in expected} == expected
        search = pd.read_csv(tmp_path / f"{name}.search.csv")
        assert dict(zip(search["setting"], search["value"], strict=True)) == expected
        assert {r["setting"]: r["value"] for r in document["studies"][name]["search"]} == expected
        # Markdown, HTML, LaTeX: a row per setting in the comparison, and the study's section opens with them.
        section = markdown.split(f"## Study {name}\n")[1].split("\n## ")[0]
        assert section.index("### Search") < section.index("### Leaderboard")
        html_section = page.split(f"<h2>Study {name}</h2>")[1].split("<h2>")[0]
        latex_section = latex.split(rf"\subsection*{{Study {name}}}")[1].split(r"\subsection*")[0]
        for setting, value in expected.items():
            assert f"| {setting} | {value} |" in section
            assert f"<td>{setting}</td>\n      <td>{html.escape(value)}</td>" in html_section
            assert re.search(rf"{setting} +& +{re.escape(value.replace('_', chr(92) + '_'))} +\\\\", latex_section)
    comparison_md = markdown.split("## Comparison")[1].split("## Study")[0]
    for setting in ("engine", "sampler", "pruner"):
        assert f"| {setting} | {SEARCH['tpe'][setting]} | {SEARCH['random'][setting]} |" in comparison_md
    assert "| tuner |" not in comparison_md  # no study here has a KerasTuner tuner
    comparison_html = page.split("<h2>Comparison</h2>")[1].split("<h2>Study")[0]
    assert f"<td>{html.escape(SEARCH['tpe']['sampler'])}</td>" in comparison_html
    comparison_latex = latex.split(r"\subsection*{Comparison}")[1].split(r"\subsection*{Study")[0]
    assert re.search(r"sampler +& +tpe \(n\\_startup\\_trials=5\) +& +random", comparison_latex)


def test_a_study_tuning_did_not_create_says_its_search_is_not_recorded(plain: str) -> None:
    report = build_report(["plain", "other"], plain)
    assert report.comparison[["engine", "sampler", "pruner", "tuner"]].isna().all().all()
    search = report.tables()["plain.search"]
    assert search.empty and search.attrs["note"].startswith("Not recorded: the study was not created by `tuning run`")
    markdown = render(report, "md")
    assert "| engine | not recorded | not recorded |" in markdown
    assert "Not recorded: the study was not created by `tuning run`" in markdown.split("## Study plain")[1]


@pytest.mark.slow
def test_run_ids_are_in_csv_and_json_but_not_in_the_tables_people_read(storage: str, tmp_path: Path) -> None:
    study = _load(storage, "tpe")
    run_ids = {t.user_attrs[records.MLFLOW_RUN_ID] for t in study.trials}
    write_report(["tpe"], storage=storage, fmt="csv", out=tmp_path, stream=io.StringIO())
    board = pd.read_csv(tmp_path / "tpe.leaderboard.csv")
    assert set(board["mlflow_run_id"]) <= run_ids and len(set(board["mlflow_run_id"])) == len(board)
    report = build_report(["tpe"], storage)
    assert json.loads(render(report, "json"))["studies"]["tpe"]["leaderboard"][0]["mlflow_run_id"] in run_ids
    for fmt in ("md", "latex"):
        text = render(report, fmt)
        assert not any(run_id in text for run_id in run_ids), fmt
        assert "Ids (mlflow" in text and "are in the CSV and JSON output" in text


@pytest.mark.slow
def test_markdown_and_latex_to_stream(storage: str) -> None:
    report = build_report(["random"], storage, top=3)
    text = render(report, "md")
    assert text.count("\n### ") == 6 and "| rank | trial | val_accuracy |" in text
    assert f"{_load(storage, 'random').best_value:.4g}" in text
    latex = render(report, "latex")
    assert latex.count(r"\begin{tabular}") == 6 and r"train.learning\_rate" in latex


@pytest.mark.slow
def test_markdown_out_writes_report_and_plots(storage: str, tmp_path: Path) -> None:
    paths = write_report(["tpe", "random"], storage=storage, fmt="md", out=tmp_path / "r", stream=io.StringIO())
    assert paths[0] == tmp_path / "r" / "report.md"
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) == 1 + 2 * 4
    text = paths[0].read_text()
    assert all(f"]({p.name})" in text for p in pngs)


@pytest.mark.slow
def test_html_without_out_writes_in_cwd(storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stream = io.StringIO()
    paths = write_report(["random"], storage=storage, fmt="html", stream=stream)
    assert paths == [tmp_path / "report.html"]
    assert stream.getvalue() == ""  # files are returned; the command line prints them
    page = paths[0].read_text()
    assert page.count("<table") == 6 and page.count('src="data:image/png;base64,') == 5


# ------------------------------------------------------------------------ at a glance (plain Optuna studies, fast)
def _objective(trial: optuna.Trial) -> float:
    """Six parameters; only the last two numbers suggested matter (``p4`` most), ``fixed`` never changes."""
    xs = [trial.suggest_float(f"p{i}", 0.0, 1.0) for i in range(5)]
    trial.suggest_categorical("fixed", ["same"])
    return 1.0 - 4.0 * (xs[4] - 0.3) ** 2 - 1.0 * xs[3]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Plain Optuna studies in SQLite (no toolkit records): "plain" (22 trials), "other" (8), "few" (6), "empty".

    The trials are computed in memory and written with ``add_trials``: three times faster than optimizing
    against SQLite, the same rows.
    """
    url = f"sqlite:///{tmp_path_factory.mktemp('plain') / 'optuna.db'}"
    for name, n_trials, seed in (("plain", 22, 0), ("other", 8, 1), ("few", 6, 2)):
        scratch = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
        scratch.optimize(_objective, n_trials=n_trials)
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        study.set_metric_names(["score"])
        study.add_trials(scratch.trials)
    optuna.create_study(study_name="empty", storage=url)
    return url


def test_parallel_coordinates_axes_are_the_most_important_parameters(plain: str) -> None:
    study = _load(plain, "plain")
    importance = param_importance(study)
    data = parallel_coordinates_data(study, max_params=3, importance=importance)
    axes = list(data.attrs["ticks"])
    assert len(axes) == 3 and data.attrs["of"] == 6
    assert set(axes[:2]) == {"p4", "p3"}  # suggested last, mattering most: the first 3 suggested would miss both
    assert axes == list(importance["parameter"])[:3]
    assert set(list(parallel_coordinates_data(study).attrs["ticks"])[:2]) == {"p4", "p3"}  # computes the importance
    title = plot_parallel_coordinates(study, max_params=3, importance=importance).axes[0].get_title()
    assert "the 3 most important of 6 parameters" in title
    # Without importances (too few trials for the evaluator), the axes are the first suggested, and say so.
    unrated = param_importance(study, min_trials=1000)
    data = parallel_coordinates_data(study, max_params=3, importance=unrated)
    assert list(data.attrs["ticks"]) == ["p0", "p1", "p2"] and not data.attrs["by_importance"]
    title = plot_parallel_coordinates(study, max_params=3, importance=unrated).axes[0].get_title()
    assert "the 3 first suggested of 6 parameters" in title


def test_importance_says_how_many_trials_it_rests_on_and_when_it_is_not_reliable(plain: str) -> None:
    many, few = param_importance(_load(plain, "plain")), param_importance(_load(plain, "few"))
    assert many.attrs["reliable"] and many.attrs["trials"] == 22
    assert "on 22 completed trials" in many.attrs["note"] and "reliable" not in many.attrs["note"]
    assert not few.attrs["reliable"] and few.attrs["trials"] == 6 and not few.empty
    assert few.attrs["note"].startswith("Not reliable: these importances rest on only 6 completed trials (fewer than")
    assert plot_param_importance(few).axes[0].get_title().endswith("(6 trials: not reliable)")
    assert plot_param_importance(many).axes[0].get_title().endswith("(22 trials)")


def test_a_table_not_computed_shows_its_reason_and_no_empty_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="two", storage=url, direction="maximize")
    study.optimize(_objective, n_trials=2)
    report = build_report(["two"], url)

    markdown, latex = render(report, "md"), render(report, "latex")
    importance = markdown.split("### Parameter importance")[1].split("###")[0]
    assert "Not computed:" in importance and "needs at least 5 completed trials and the study has 2" in importance
    assert "(empty)" not in importance
    latex_importance = latex.split("Parameter importance}")[1].split("subsubsection")[0]
    assert "Not computed:" in latex_importance and "(empty)" not in latex_importance
    page = render(report, "html")
    assert "Not computed:" in page and 'data-table="two.param_importance"' not in page


def test_leaderboard_shows_what_differs_and_names_what_does_not(plain: str) -> None:
    report = build_report(["plain"], plain, top=5)
    board = report.tables()["plain.leaderboard"]
    assert {"mlflow_run_id", "state", "fixed"} <= set(board.columns)  # CSV and JSON keep every column
    text = render(report, "md")
    header = next(line for line in text.splitlines() if line.startswith("| rank | trial |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:3] == ["rank", "trial", "score"] and "p4" in columns and "duration_seconds" in columns
    assert not {"mlflow_run_id", "state", "fixed", "test_accuracy", "epochs"} & set(columns)
    assert "Same in every row: " in text and "state complete" in text and "fixed same" in text
    assert "Ids (mlflow_run_id) are in the CSV and JSON output." in text
    page = to_html(report, {})  # the tables only: drawing the plots is not the point here
    assert "<th>mlflow" not in page and "<th>p4</th>" in page
    assert "<th>duration_<wbr>seconds</th>" in page  # long names may wrap: the table fits the page


def test_two_studies_start_with_the_comparison_side_by_side_and_one_time_plot(plain: str) -> None:
    report = build_report(["plain", "other"], plain, target=0.9)
    text = to_markdown(report, images={key: f"{key}.png" for key in report.captions()})
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Comparison", "## Study plain", "## Study other"]
    comparison = text.split("## Comparison")[1].split("## Study plain")[0]
    assert "|  | plain | other |" in comparison
    for row in ("| best score |", "| trials to 0.9 |", "| wall seconds to 0.9 |", "| epochs to 0.9 |",
                "| epochs spent (all trials) |"):  # fmt: skip
        assert row in comparison, row
    assert comparison.count("](best_vs_time.png)") == 1 and text.count("best_vs_time.png)") == 1
    expected = compare_studies([_load(plain, "plain"), _load(plain, "other")], target=0.9)
    trials_row = next(line for line in comparison.splitlines() if line.startswith("| trials to 0.9 |"))
    cells = [str(v) if not pd.isna(v) else "not reached" for v in expected["trials_to_target"]]
    assert trials_row == "| trials to 0.9 | " + " | ".join(cells) + " |"
    page = to_html(report, {"best_vs_time": plot_best_vs_time([s.view for s in report.studies])})
    assert page.index("<h2>Comparison</h2>") < page.index('data-plot="best_vs_time"') < page.index("<h2>Study plain")
    assert page.count('data-plot="best_vs_time"') == 1
    assert len(plot_best_vs_time([_load(plain, "plain"), _load(plain, "other")]).axes[0].get_lines()) == 2


def test_plot_captions_are_sentences(plain: str) -> None:
    report = build_report(["plain", "other"], plain, target=0.9)
    captions = report.captions()
    figures = report.figures()
    assert set(captions) == set(figures)
    for key, caption in captions.items():
        assert caption[0].isupper() and caption.endswith(".") and key not in caption, caption
    assert "one line per study (plain, other)" in captions["best_vs_time"]
    assert "the dashed line is the target 0.9" in captions["best_vs_time"]
    assert "the axes are its 6 parameters, most important on the left" in captions["plain.parallel_coordinates"]
    assert "on 22 completed trials" in captions["plain.importance"]
    assert "too few trials to be reliable" in build_report(["few"], plain).captions()["few.importance"]
    page = to_html(report, {key: figures[key] for key in ("best_vs_time", "plain.history")})  # PNGs take time
    for key in ("best_vs_time", "plain.history"):
        assert f"<figcaption>{captions[key]}</figcaption>" in page
    md = to_markdown(report, images={key: f"{key}.png" for key in captions})
    assert f"![{captions['plain.history']}](plain.history.png)" in md


def test_trial_axis_shows_whole_numbers(plain: str) -> None:
    ax = plot_optimization_history(_load(plain, "few")).axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())


# ------------------------------------------------------------------------------------------------------- errors
def test_unknown_study_lists_existing(plain: str) -> None:
    with pytest.raises(StorageError) as info:
        write_report(["nope"], storage=plain, stream=io.StringIO())
    assert isinstance(info.value, UserInputError)
    assert "'nope'" in str(info.value) and "empty, few, other, plain" in str(info.value)


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
    with pytest.raises(StorageError, match="not an Optuna storage"):
        load_studies(["tpe"], f"sqlite:///{other}")
    assert other.read_bytes() == before


def test_unreachable_server_redacts_password() -> None:
    with pytest.raises(StorageError) as info:
        load_studies(["tpe"], "postgresql://alice:s3cret-pw@127.0.0.1:1/optuna")
    assert "s3cret-pw" not in str(info.value)
    assert "alice:***@127.0.0.1" in str(info.value)


def test_path_instead_of_url_suggests_sqlite(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a database URL"):
        load_studies(["tpe"], str(tmp_path / "optuna.db"))


def test_empty_study(plain: str) -> None:
    with pytest.raises(EmptyStudyError, match="'empty' has no trials"):
        write_report(["empty"], storage=plain, stream=io.StringIO())


@pytest.mark.slow
def test_study_without_completed_trial_gives_reasons(storage: str) -> None:
    with pytest.raises(EmptyStudyError) as info:
        write_report(["tpe", "all-failed"], storage=storage, stream=io.StringIO())
    assert "no completed trial" in str(info.value) and "2 fail" in str(info.value)
    assert "too many pooling blocks" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"fmt": "pdf"}, "Unknown report format"), ({"top": 0}, "--top must be at least 1")],
)
def test_bad_options(plain: str, kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        write_report(["plain"], storage=plain, stream=io.StringIO(), **kwargs)


def test_out_that_is_a_file(plain: str, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserInputError, match="--out must be a folder"):
        write_report(["plain"], storage=plain, fmt="csv", out=tmp_path / "f", stream=io.StringIO())


# --------------------------------------------------------------------------------------------- headless browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(storage: str, tmp_path: Path) -> None:
    (page,) = write_report(
        ["tpe", "random", "multi"], storage=storage, fmt="html", out=tmp_path, target=_target(storage),
        stream=io.StringIO(),
    )
    report = build_report(["tpe", "random", "multi"], storage, target=_target(storage))
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
    shown = {key: df for key, df in report.tables().items() if not (df.empty and df.attrs.get("note"))}
    assert dom.count("<table") == len(shown)
    for key, df in report.tables().items():
        if key in shown:
            assert f'data-table="{key}"' in dom
        else:  # not computed: the reason instead of a table
            assert html.escape(df.attrs["note"], quote=False) in dom and f'data-table="{key}"' not in dom
    figures = 1 + 3 * 4
    assert dom.count("<img") == figures
    assert f'data-decoded="{figures}"' in dom


# ------------------------------------------------------------------------------------------ end to end with Keras
@pytest.mark.slow
def test_report_compares_two_real_keras_studies(storage: str, tmp_path: Path) -> None:
    tpe, rnd = _load(storage, "tpe"), _load(storage, "random")
    target = _target(storage)  # both reach it
    paths = write_report(
        ["tpe", "random"],
        storage=storage,
        fmt="csv",
        out=tmp_path / "out",
        target=target,
        stream=io.StringIO(),
    )
    comparison = pd.read_csv(tmp_path / "out" / "comparison.csv").set_index("study")
    for study in (tpe, rnd):
        row = comparison.loc[study.study_name]
        assert row["best"] == study.best_value
        assert row["trials"] == len(study.trials) >= 7
        assert row["total_epochs"] == sum(t.user_attrs[records.EPOCHS] for t in study.trials)
        assert bool(row["reached"]) and 1 <= row["trials_to_target"] <= len(study.trials)
        board = pd.read_csv(tmp_path / "out" / f"{study.study_name}.leaderboard.csv")
        assert board.loc[0, "val_accuracy"] == study.best_value
        assert board.loc[0, "test_accuracy"] == study.best_trial.user_attrs[records.TEST_ACCURACY]
        curves = learning_curves_data(study, top=1)
        assert list(curves["value"]) == study.best_trial.user_attrs[records.HISTORY]["val_accuracy"]
    assert len(paths) == 1 + 2 * 5  # the comparison, then each study's search, leaderboard, effects, importance,
    # outcomes
