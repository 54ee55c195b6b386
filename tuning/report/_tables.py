"""The report's tables: each a function from a study (or several) to a pandas DataFrame.

Every table reads the trials once loaded into a :class:`~tuning.report._load.StudyView`; public functions
also accept an ``optuna.Study``. A table's title and any note (the importance evaluator, why a table is
empty) travel in ``DataFrame.attrs["title"]`` and ``DataFrame.attrs["note"]``.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tuning import records
from tuning.report._load import StudyView, as_view, reason_of, state_of

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from optuna.trial import FrozenTrial

#: A parameter whose distribution has at most this many possible values gets one row per value.
MAX_DISCRETE_VALUES = 10
#: Trees of the default fANOVA importance evaluator (Optuna's default is 64: 3-6x slower, same ranking here).
FANOVA_TREES = 16
#: The label of the parameter-effects row that gathers completed trials in which a parameter was not sampled.
NOT_SAMPLED = "(not sampled)"
#: Importances resting on fewer completed trials than this are flagged as not reliable: with a handful of
#: trials, the random forest behind fANOVA has too little to tell a parameter's effect from noise.
RELIABLE_TRIALS = 20


def _titled(df: pd.DataFrame, title: str, note: str = "") -> pd.DataFrame:
    df.attrs["title"] = title
    df.attrs["note"] = note
    return df


def _seconds(trial: FrozenTrial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return math.nan
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _better(maximize: bool, a: float, b: float) -> bool:
    return a > b if maximize else a < b


def _param_order(view: StudyView, trials: Sequence[FrozenTrial]) -> list[str]:
    """Parameter names in the order they were first suggested, over ``trials``."""
    names: dict[str, None] = {}
    for t in trials:
        for name in t.params:
            names.setdefault(name, None)
    return list(names)


def sort_completed(view: StudyView, objective: int = 0) -> list[FrozenTrial]:
    sign = -1.0 if view.maximize[objective] else 1.0
    return sorted(view.completed, key=lambda t: (sign * t.values[objective], t.number))


def leaderboard(study: optuna.Study | StudyView, top: int = 10) -> pd.DataFrame:
    """The ``top`` completed trials, best first, with their parameters, objective values and what they cost.

    Columns: ``rank``, ``trial``, one per objective, ``test_accuracy``, ``epochs``, ``train_seconds``,
    ``duration_seconds`` (trial start to end), ``state``, ``mlflow_run_id``, then one column per parameter
    (key path, empty where a trial did not sample it). Multi-objective studies are ranked by the first
    objective and get a ``pareto`` column. ``attrs["ids"]`` names the id columns (kept in CSV and JSON, left
    out of the Markdown, HTML and LaTeX tables) and ``attrs["key_columns"]`` those those tables always show.

    Example:
        >>> board = leaderboard(optuna.load_study(study_name="mnist", storage=url), top=5)  # doctest: +SKIP
        >>> board.loc[0, "val_accuracy"] == study.best_value  # doctest: +SKIP
        True
    """
    import pandas as pd

    view = as_view(study)
    best = sort_completed(view)[: max(int(top), 0)]
    front = {t.number for t in _pareto_trials(view)} if view.multi_objective else set()
    params = _param_order(view, best)
    rows = []
    for rank, t in enumerate(best, start=1):
        row: dict[str, Any] = {"rank": rank, "trial": t.number}
        row.update(dict(zip(view.objectives, t.values, strict=True)))
        if view.multi_objective:
            row["pareto"] = t.number in front
        row.update(
            test_accuracy=_float(t.user_attrs.get(records.TEST_ACCURACY)),
            epochs=_int(t.user_attrs.get(records.EPOCHS)),
            train_seconds=_float(t.user_attrs.get(records.TRAIN_SECONDS)),
            duration_seconds=_seconds(t),
            state=state_of(t),
            mlflow_run_id=t.user_attrs.get(records.MLFLOW_RUN_ID) or "",
        )
        for name in params:
            row[name] = t.params.get(name)
        rows.append(row)
    columns = ["rank", "trial", *view.objectives, *(["pareto"] if view.multi_objective else [])]
    columns += ["test_accuracy", "epochs", "train_seconds", "duration_seconds", "state", "mlflow_run_id", *params]
    df = pd.DataFrame(rows, columns=columns)
    df["epochs"] = df["epochs"].astype("Int64")
    df.attrs.update(ids=["mlflow_run_id"], key_columns=["rank", "trial", *view.objectives])
    order = "first objective, " if view.multi_objective else ""
    return _titled(
        df,
        "Leaderboard",
        f"Top {len(df)} of {len(view.completed)} completed trials, ranked by {order}"
        f"{view.objectives[0]} ({'max' if view.maximize[0] else 'min'}imised).",
    )


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _groups(distribution: Any, values: list[Any], bins: int) -> tuple[str, list[tuple[str, Any]]]:
    """How to group a parameter's values: ``("value", [(label, value)...])`` or ``("bin", [(label, (lo, hi))...])``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return "value", [(str(c), c) for c in distribution.choices]
    if isinstance(distribution, IntDistribution | FloatDistribution):
        low, high, step = distribution.low, distribution.high, distribution.step
        count = math.floor((high - low) / step + 1e-9) + 1 if step else math.inf
        if count <= MAX_DISCRETE_VALUES:
            observed = sorted(set(values))
            return "value", [(_fmt_number(v), v) for v in observed]
        if distribution.log:
            edges = [math.exp(math.log(low) + (math.log(high) - math.log(low)) * i / bins) for i in range(bins + 1)]
        else:
            edges = [low + (high - low) * i / bins for i in range(bins + 1)]
        if isinstance(distribution, IntDistribution):
            edges = sorted(set([low, *(math.ceil(e) for e in edges[1:-1]), high]))
        spans = list(zip(edges[:-1], edges[1:], strict=True))
        labels = []
        for i, (lo, hi) in enumerate(spans):
            close = "]" if i == len(spans) - 1 else ")"
            labels.append((f"[{_fmt_number(lo)}, {_fmt_number(hi)}{close}", (lo, hi, i == len(spans) - 1)))
        return "bin", labels
    observed = sorted({str(v) for v in values})
    return "value", [(v, v) for v in observed]


def _fmt_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


def parameter_effects(study: optuna.Study | StudyView, bins: int = 5, objective: int = 0) -> pd.DataFrame:
    """Per parameter, per value (categorical, few values) or per bin (ranges): trials, mean, best, worst objective.

    Only completed trials count. For each parameter the ``trials`` column adds up to the number of completed
    trials: those in which the parameter was not sampled (a conditional parameter such as ``model.width.3``
    when ``model.depth`` is 2) form a ``(not sampled)`` row. Ranges are cut into ``bins`` equal bins of
    the parameter's distribution (equal in log scale for log ranges); empty bins are left out.

    Columns: ``parameter``, ``group`` (``value``, ``bin`` or ``not sampled``), ``value``, ``trials``,
    ``mean``, ``best``, ``worst``.

    Example:
        >>> effects = parameter_effects(study)  # doctest: +SKIP
        >>> effects.groupby("parameter")["trials"].sum().unique()  # doctest: +SKIP
        array([40])
    """
    import pandas as pd

    if bins < 1:
        raise ValueError(f"bins must be at least 1. Received: {bins}.")
    view = as_view(study)
    maximize = view.maximize[objective]
    completed = view.completed
    rows = []
    for name in sorted(_param_order(view, completed)):
        having = [t for t in completed if name in t.params]
        distribution = having[0].distributions[name]
        kind, groups = _groups(distribution, [t.params[name] for t in having], bins)
        members: list[list[float]] = [[] for _ in groups]
        for t in having:
            value = t.params[name]
            for i, (_, key) in enumerate(groups):
                if kind == "value":
                    hit = value == key or (not isinstance(key, int | float) and str(value) == str(key))
                else:
                    lo, hi, last = key
                    hit = lo <= value < hi or (last and value == hi)
                if hit:
                    members[i].append(t.values[objective])
                    break
        for (label, _), values in zip(groups, members, strict=True):
            if values:
                rows.append(_effect_row(name, kind, label, values, maximize))
        missing = [t.values[objective] for t in completed if name not in t.params]
        if missing:
            rows.append(_effect_row(name, "not sampled", NOT_SAMPLED, missing, maximize))
    df = pd.DataFrame(rows, columns=["parameter", "group", "value", "trials", "mean", "best", "worst"])
    return _titled(
        df,
        "Parameter effects",
        f"{view.objectives[objective]} of the {len(completed)} completed trials, grouped by each parameter's value "
        f"or range bin ({'higher' if maximize else 'lower'} is better).",
    )


def _effect_row(name: str, kind: str, label: str, values: list[float], maximize: bool) -> dict[str, Any]:
    return {
        "parameter": name,
        "group": kind,
        "value": label,
        "trials": len(values),
        "mean": sum(values) / len(values),
        "best": max(values) if maximize else min(values),
        "worst": min(values) if maximize else max(values),
    }


def param_importance(
    study: optuna.Study | StudyView,
    evaluator: optuna.importance.BaseImportanceEvaluator | None = None,
    *,
    min_trials: int = 5,
    reliable_trials: int = RELIABLE_TRIALS,
) -> pd.DataFrame:
    """Each parameter's importance for each objective, from ``optuna.importance.get_param_importances``.

    The default evaluator is Optuna's default, fANOVA, as ``FanovaImportanceEvaluator(n_trees=16, seed=0)``:
    seeded so that a report is reproducible, 16 trees instead of 64 so that 1,000 trials take about 2 s
    instead of 6-13 s here (the ranking stays the same on the benchmark study). Pass ``evaluator`` for another
    one, e.g. ``optuna.importance.PedAnovaImportanceEvaluator()`` (milliseconds). Its name is in
    ``attrs["note"]`` and ``attrs["evaluator"]``. Optuna only rates the
    parameters that every completed trial has. With fewer than ``min_trials`` completed trials, or when the
    evaluator cannot rate the study, the table is empty and ``attrs["note"]`` says why.

    The note says how many completed trials the importances rest on (also ``attrs["trials"]``); with fewer
    than ``reliable_trials`` (default :data:`RELIABLE_TRIALS`, 20) it says they are not reliable and
    ``attrs["reliable"]`` is false.

    Columns: ``parameter`` and one ``importance`` column per objective (``importance`` for one objective,
    ``importance_<name>`` for several), sorted by the first.

    Example:
        >>> param_importance(study).attrs["evaluator"]  # doctest: +SKIP
        'FanovaImportanceEvaluator'
    """
    import optuna
    import pandas as pd

    view = as_view(study)
    if evaluator is None:
        evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=FANOVA_TREES, seed=0)
    name = type(evaluator).__name__
    columns = ["importance"] if not view.multi_objective else [f"importance_{o}" for o in view.objectives]
    empty = pd.DataFrame({"parameter": pd.Series(dtype=str), **{c: pd.Series(dtype=float) for c in columns}})
    completed = view.completed
    empty.attrs.update(evaluator=name, trials=len(completed), reliable=False)
    if len(completed) < min_trials:
        return _titled(
            empty,
            "Parameter importance",
            f"Not computed: {name} needs at least {min_trials} completed trials and the study has {len(completed)}.",
        )
    common = set(completed[0].params)
    for t in completed[1:]:
        common &= set(t.params)
    rated = [p for p in common if len({repr(t.params[p]) for t in completed}) > 1]
    if not rated:
        return _titled(
            empty,
            "Parameter importance",
            "Not computed: no parameter is present in every completed trial with more than one value.",
        )
    scores: dict[str, dict[str, float]] = {}
    try:
        for i, column in enumerate(columns):
            # One objective at a time, as "lower is better" (PED-ANOVA rates what leads to low targets;
            # fANOVA and MDI do not depend on the sign).
            sign = -1.0 if view.maximize[i] else 1.0
            target = (lambda t, i=i, sign=sign: sign * t.values[i]) if view.multi_objective else None
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*importances of params to achieve low `target`")
                scores[column] = optuna.importance.get_param_importances(
                    view.study, evaluator=evaluator, params=sorted(rated), target=target
                )
    except Exception as exc:  # the evaluators raise ValueError/RuntimeError on degenerate studies
        return _titled(empty, "Parameter importance", f"Not computed: {name} failed ({type(exc).__name__}: {exc}).")
    df = pd.DataFrame(
        {"parameter": sorted(rated), **{c: [scores[c].get(p, 0.0) for p in sorted(rated)] for c in columns}}
    )
    df = df.sort_values([columns[0], "parameter"], ascending=[False, True], ignore_index=True)
    skipped = sorted(set(_param_order(view, completed)) - set(rated))
    reliable = len(completed) >= reliable_trials
    note = f"Evaluator: {name} on {len(completed)} completed trials; importances sum to 1 per objective."
    if not reliable:
        note = (
            f"Not reliable: these importances rest on only {len(completed)} completed trials (fewer than "
            f"{reliable_trials}); run more trials before trusting the ranking. Evaluator: {name}; importances sum "
            "to 1 per objective."
        )
    if skipped:
        note += f" Not rated (absent from some completed trials, or constant): {', '.join(skipped)}."
    df.attrs.update(evaluator=name, trials=len(completed), reliable=reliable)
    return _titled(df, "Parameter importance", note)


def _pareto_trials(view: StudyView) -> list[FrozenTrial]:
    """Completed trials that no other completed trial dominates (better or equal everywhere, better somewhere)."""
    import numpy as np

    completed = view.completed
    if not completed:
        return []
    signs = np.array([1.0 if m else -1.0 for m in view.maximize])
    points = np.array([t.values for t in completed], dtype=float) * signs  # larger is better everywhere
    front = []
    for i, p in enumerate(points):
        dominated = np.any(np.all(points >= p, axis=1) & np.any(points > p, axis=1))
        if not dominated:
            front.append(completed[i])
    return front


def pareto_front(study: optuna.Study | StudyView) -> pd.DataFrame:
    """The completed trials on the Pareto front of a multi-objective study, sorted by the first objective.

    The trials are those of ``study.best_trials``. Columns: ``trial``, one per objective, ``test_accuracy``,
    ``param_count``, ``epochs``, then the parameters. Empty (with a note) for a single-objective study.

    Example:
        >>> sorted(pareto_front(study)["trial"]) == sorted(t.number for t in study.best_trials)  # doctest: +SKIP
        True
    """
    import pandas as pd

    view = as_view(study)
    if not view.multi_objective:
        return _titled(
            pd.DataFrame(columns=["trial", *view.objectives]),
            "Pareto front",
            "Single-objective study: the leaderboard's first row is the best trial.",
        )
    front = sorted(_pareto_trials(view), key=lambda t: ((-1 if view.maximize[0] else 1) * t.values[0], t.number))
    params = _param_order(view, front)
    rows = []
    for t in front:
        row: dict[str, Any] = {"trial": t.number, **dict(zip(view.objectives, t.values, strict=True))}
        row.update(
            test_accuracy=_float(t.user_attrs.get(records.TEST_ACCURACY)),
            param_count=_int(t.user_attrs.get(records.PARAM_COUNT)),
            epochs=_int(t.user_attrs.get(records.EPOCHS)),
        )
        row.update({p: t.params.get(p) for p in params})
        rows.append(row)
    df = pd.DataFrame(rows, columns=["trial", *view.objectives, "test_accuracy", "param_count", "epochs", *params])
    df[["param_count", "epochs"]] = df[["param_count", "epochs"]].astype("Int64")
    df.attrs["key_columns"] = ["trial", *view.objectives]
    goals = ", ".join(f"{o} ({'max' if m else 'min'})" for o, m in zip(view.objectives, view.maximize, strict=True))
    return _titled(
        df, "Pareto front", f"{len(df)} of {len(view.completed)} completed trials are not dominated on {goals}."
    )


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_STATE_ORDER = {"complete": 0, "pruned": 1, "failed": 2, "running": 3, "waiting": 4}


def outcomes(study: optuna.Study | StudyView, max_numbers: int = 20) -> pd.DataFrame:
    """How the trials ended: one row per state and recorded reason, with the count and the trial numbers.

    The reason is the ``reason`` user attribute the runner writes on pruned and failed trials (Optuna's own
    ``fail_reason`` when it is missing). Reasons that differ only in their numbers share a row, where the
    numbers show as ``#`` ("pruned at epoch #: val_accuracy # below the median (# varies)").

    Columns: ``state``, ``reason``, ``trials``, ``trial_numbers`` (the
    first ``max_numbers``, then ``…``).

    Example:
        >>> outcomes(study)[["state", "trials"]].groupby("state").sum()  # doctest: +SKIP
    """
    import pandas as pd

    view = as_view(study)
    groups: dict[tuple[str, str], list[FrozenTrial]] = {}
    for t in view.trials:
        groups.setdefault((state_of(t), _NUMBER.sub("#", reason_of(t))), []).append(t)
    rows = []
    for (state, pattern), trials in sorted(
        groups.items(), key=lambda kv: (_STATE_ORDER.get(kv[0][0], 9), -len(kv[1]), kv[0][1])
    ):
        numbers = [t.number for t in trials]
        reasons = {reason_of(t) for t in trials}
        reason = reasons.pop() if len(reasons) == 1 else f"{pattern} (# varies)"
        shown = ", ".join(str(n) for n in numbers[:max_numbers]) + (", …" if len(numbers) > max_numbers else "")
        rows.append({"state": state, "reason": reason, "trials": len(numbers), "trial_numbers": shown})
    df = pd.DataFrame(rows, columns=["state", "reason", "trials", "trial_numbers"])
    counts = df.groupby("state", sort=False)["trials"].sum()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    return _titled(df, "Outcomes", f"{len(view.trials)} trials: {summary}.")


#: What :func:`search_settings` describes, in order.
SEARCH_SETTINGS = ("engine", "sampler", "pruner", "tuner")


def _spec_text(spec: Any) -> str | None:
    """A sampler, pruner or tuner as written in the space, as one line: ``median (n_startup_trials=3)``."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        return str(spec)
    options = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "type" and v is not None)
    return f"{spec.get('type')} ({options})" if options else str(spec.get("type"))


def search_settings(study: optuna.Study | StudyView) -> dict[str, str | None]:
    """How a study chose and stopped its trials: its ``engine``, ``sampler`` and ``pruner`` (Optuna's engine) or
    ``tuner`` (KerasTuner's), each with the options the space gave, read from the space the study was created
    with. A setting the engine does not have is None; all are None for a study ``tuning run`` did not create.

    Example:
        >>> search_settings(study)  # doctest: +SKIP
        {'engine': 'optuna', 'sampler': 'tpe (n_startup_trials=5)', 'pruner': 'median', 'tuner': None}
    """
    view = as_view(study)
    section = (view.space or {}).get("study")
    if not isinstance(section, dict):
        return dict.fromkeys(SEARCH_SETTINGS)
    return {
        "engine": str(section.get("engine") or "optuna"),
        "sampler": _spec_text(section.get("sampler")),
        "pruner": _spec_text(section.get("pruner")),
        "tuner": _spec_text(section.get("tuner")),
    }


def search_method(study: optuna.Study | StudyView) -> pd.DataFrame:
    """One study's :func:`search_settings` as a table (``setting``, ``value``): the first table of its section.

    Rows: ``engine``, then the ``sampler`` and ``pruner`` of Optuna's engine or the ``tuner`` of KerasTuner's.

    Example:
        >>> search_method(study)  # doctest: +SKIP
             setting                     value
        0     engine                    optuna
        1    sampler  tpe (n_startup_trials=5)
        2     pruner                    median
    """
    import pandas as pd

    view = as_view(study)
    settings = search_settings(view)
    if settings["engine"] is None:
        df = pd.DataFrame(columns=["setting", "value"])
        return _titled(df, "Search", "Not recorded: the study was not created by `tuning run`, which stores its space.")
    rows = [{"setting": key, "value": value} for key, value in settings.items() if value is not None]
    note = f"How study {view.name} chose its trials and stopped them early, from the space it was created with."
    return _titled(pd.DataFrame(rows, columns=["setting", "value"]), "Search", note)


def compare_studies(studies: Sequence[optuna.Study | StudyView], target: float | None = None) -> pd.DataFrame:
    """Several studies side by side: best value, cost, outcome counts and, with ``target``, the cost to reach it.

    One row per study. Columns: ``study``, ``objective``, ``direction``, ``engine``, ``sampler``, ``pruner``,
    ``tuner`` (:func:`search_settings`), ``best``, ``best_trial``, ``trials``,
    ``complete``, ``pruned``, ``failed``, ``total_epochs`` (sum of the ``epochs`` attribute over every trial:
    what the study really trained), ``train_seconds`` (sum), ``wall_seconds`` (first trial start to last trial
    end). With ``target``: ``target``, ``reached``, ``trials_to_target`` (trials finished, in order of
    completion, up to and including the first completed trial at or beyond the target), ``epochs_to_target``
    and ``seconds_to_target`` (wall time from the study's first trial start to that trial's end). Multi-
    objective studies are compared on their first objective.

    Example:
        >>> compare_studies([tpe, random], target=0.97)[["study", "trials_to_target"]]  # doctest: +SKIP
    """
    import pandas as pd

    rows = []
    for study in studies:
        view = as_view(study)
        maximize = view.maximize[0]
        best_trial = sort_completed(view)[0] if view.completed else None
        starts = [t.datetime_start for t in view.trials if t.datetime_start is not None]
        ends = [t.datetime_complete for t in view.trials if t.datetime_complete is not None]
        origin = min(starts) if starts else None
        states = [state_of(t) for t in view.trials]
        row: dict[str, Any] = {
            "study": view.name,
            "objective": view.objectives[0],
            "direction": "maximize" if maximize else "minimize",
            **search_settings(view),
            "best": best_trial.values[0] if best_trial else math.nan,
            "best_trial": best_trial.number if best_trial else None,
            "trials": len(view.trials),
            "complete": states.count("complete"),
            "pruned": states.count("pruned"),
            "failed": states.count("failed"),
            "total_epochs": sum(_int(t.user_attrs.get(records.EPOCHS)) or 0 for t in view.trials),
            "train_seconds": sum(
                _float(t.user_attrs.get(records.TRAIN_SECONDS))
                for t in view.trials
                if records.TRAIN_SECONDS in t.user_attrs
            ),
            "wall_seconds": (max(ends) - origin).total_seconds() if ends and origin else math.nan,
        }
        if target is not None:
            row.update(_to_target(view, float(target), origin))
        rows.append(row)
    df = pd.DataFrame(rows)
    for column in ("best_trial", "trials_to_target", "epochs_to_target"):
        if column in df:
            df[column] = df[column].astype("Int64")
    note = "Studies side by side; total_epochs sums the epochs every trial trained, pruned and failed ones included."
    if target is not None:
        note += (
            f" Target {target:g}: trials, epochs and wall time until the first completed trial reached it "
            "(empty where it was never reached)."
        )
    return _titled(df, "Study comparison", note)


def _to_target(view: StudyView, target: float, origin: Any) -> dict[str, Any]:
    maximize = view.maximize[0]
    finished = sorted(
        (t for t in view.trials if t.datetime_complete is not None), key=lambda t: (t.datetime_complete, t.number)
    )
    epochs = 0
    for count, t in enumerate(finished, start=1):
        epochs += _int(t.user_attrs.get(records.EPOCHS)) or 0
        if state_of(t) == "complete" and t.values and (t.values[0] >= target if maximize else t.values[0] <= target):
            return {
                "target": target,
                "reached": True,
                "trials_to_target": count,
                "epochs_to_target": epochs,
                "seconds_to_target": (t.datetime_complete - origin).total_seconds(),
            }
    return {
        "target": target,
        "reached": False,
        "trials_to_target": None,
        "epochs_to_target": None,
        "seconds_to_target": math.nan,
    }
