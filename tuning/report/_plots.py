"""The report's plots, each split in two: ``*_data`` computes a DataFrame (tested), ``plot_*`` draws it.

Figures are plain ``matplotlib.figure.Figure`` objects drawn on the Agg canvas: no pyplot, no global state,
nothing is ever shown. Save one with ``fig.savefig("history.png")``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tuning import records
from tuning.errors import printable
from tuning.report._load import StudyView, as_view, state_of
from tuning.report._tables import param_importance, sort_completed

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from matplotlib.figure import Figure


def _figure(width: float = 7.0, height: float = 4.0) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def history_data(study: optuna.Study | StudyView, objective: int = 0) -> pd.DataFrame:
    """One row per finished trial in completion order: value, best-so-far and wall time since the study started.

    Columns: ``study``, ``trial``, ``state``, ``value`` (NaN unless complete), ``best_so_far`` (best completed
    value up to this trial), ``elapsed_seconds`` (from the first trial's start to this trial's end).

    Example:
        >>> history_data(study)["best_so_far"].iloc[-1] == study.best_value  # doctest: +SKIP
        True
    """
    import pandas as pd

    view = as_view(study)
    maximize = view.maximize[objective]
    starts = [t.datetime_start for t in view.trials if t.datetime_start is not None]
    origin = min(starts) if starts else None
    finished = sorted(
        (t for t in view.trials if t.datetime_complete is not None), key=lambda t: (t.datetime_complete, t.number)
    )
    values = [t.values[objective] if state_of(t) == "complete" and t.values else math.nan for t in finished]
    rows = [
        {
            "study": view.name,
            "trial": t.number,
            "state": state_of(t),
            "value": value,
            "best_so_far": best,
            "elapsed_seconds": (t.datetime_complete - origin).total_seconds(),
        }
        for t, value, best in zip(finished, values, records.best_so_far(values, maximize), strict=True)
    ]
    df = pd.DataFrame(rows, columns=["study", "trial", "state", "value", "best_so_far", "elapsed_seconds"])
    df.attrs.update(objective=view.objectives[objective], maximize=maximize)
    return df


def _integer_axis(axis: Any) -> None:
    """Ticks only at whole numbers (epochs, trial numbers): no 1.25, 1.5."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def plot_optimization_history(study: optuna.Study | StudyView) -> Figure:
    """Each completed trial's objective value by trial number, with the best value so far as a step line.

    Example:
        >>> plot_optimization_history(study).savefig("history.png")  # doctest: +SKIP
    """
    view = as_view(study)  # the trials are read once, here
    data = history_data(view)
    fig = _figure()
    ax = fig.add_subplot()
    done = data[data["state"] == "complete"]
    ax.scatter(done["trial"], done["value"], s=12, alpha=0.6, label="completed trial")
    ordered = data.sort_values("trial")
    best = records.best_so_far(ordered["value"].tolist(), data.attrs["maximize"])
    ax.step(ordered["trial"], best, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel=data.attrs["objective"], title=f"Optimisation history: {view.name}")
    _integer_axis(ax.xaxis)
    ax.legend(loc="best")
    return fig


def plot_best_vs_time(studies: Sequence[optuna.Study | StudyView], target: float | None = None) -> Figure:
    """Best value so far against wall time, several studies on one axis (with the target as a line).

    Example:
        >>> plot_best_vs_time([tpe, random], target=0.97).savefig("best_vs_time.png")  # doctest: +SKIP
    """
    fig = _figure()
    ax = fig.add_subplot()
    label = "value"
    for i, view in enumerate(as_view(study) for study in studies):
        data = history_data(view)
        label = data.attrs["objective"]
        ax.step(data["elapsed_seconds"], data["best_so_far"], where="post", color=f"C{i}", label=view.name)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", label=f"target {target:g}")
    ax.set(xlabel="wall time since the study started (s)", ylabel=f"best {label}", title="Best value against wall time")
    ax.legend(loc="best")
    return fig


def plot_param_importance(importance: pd.DataFrame, title: str = "Parameter importance") -> Figure:
    """Horizontal bars of the :func:`~tuning.report.param_importance` table (first objective's column).

    Example:
        >>> plot_param_importance(param_importance(study)).savefig("importance.png")  # doctest: +SKIP
    """
    fig = _figure(7.0, max(2.5, 0.35 * len(importance) + 1.2))
    ax = fig.add_subplot()
    if importance.empty:
        ax.text(
            0.5,
            0.5,
            importance.attrs.get("note", "No importance computed."),
            ha="center",
            va="center",
            wrap=True,
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return fig
    column = importance.columns[1]
    ordered = importance.iloc[::-1]
    ax.barh([printable(p) for p in ordered["parameter"]], ordered[column], color="C0")  # labels drawn later
    trials = importance.attrs.get("trials")
    if trials is not None:
        title += f" ({trials} trials{'' if importance.attrs.get('reliable', True) else ': not reliable'})"
    ax.set(xlabel=f"{column} ({importance.attrs.get('evaluator', '')})", title=title)
    return fig


def parallel_axes(
    study: optuna.Study | StudyView, importance: pd.DataFrame | None = None, max_params: int = 8
) -> tuple[list[str], int]:
    """The parameters worth an axis, most important first, and how many parameters there are in all.

    Parameters rated by ``importance`` (a :func:`~tuning.report.param_importance` table; computed when not
    given) come first, by decreasing importance; the others (conditional or constant ones, or all of them
    when the importance could not be computed) follow in the order they were first suggested.

    Example:
        >>> parallel_axes(study, max_params=3)  # doctest: +SKIP
        (['train.learning_rate', 'model.depth', 'model.dropout'], 7)
    """
    view = as_view(study)
    suggested: dict[str, None] = {}
    for t in view.completed:
        suggested.update(dict.fromkeys(t.params))
    if importance is None:
        importance = param_importance(view)
    ranked = [p for p in importance["parameter"] if p in suggested] if not importance.empty else []
    ordered = ranked + [p for p in suggested if p not in ranked]
    return ordered[:max_params], len(ordered)


def parallel_coordinates_data(
    study: optuna.Study | StudyView,
    params: Sequence[str] | None = None,
    max_params: int = 8,
    importance: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Completed trials as lines across parameter axes, each axis scaled to [0, 1].

    Without ``params``, the axes are the ``max_params`` most important parameters, most important first
    (see :func:`parallel_axes`; pass the ``importance`` table to avoid computing it again).
    Numbers are scaled between the distribution's bounds (in log scale for log ranges), categories are spread
    evenly in the order of their choices; a parameter a trial did not sample is NaN. The first column is the
    objective, raw; ``attrs["ticks"]`` maps each axis to ``[(position, label), ...]``; ``attrs["of"]`` is the
    number of parameters the axes were chosen from.

    Example:
        >>> parallel_coordinates_data(study).columns[:2].tolist()  # doctest: +SKIP
        ['trial', 'val_accuracy']
    """
    import pandas as pd
    from optuna.distributions import CategoricalDistribution

    view = as_view(study)
    completed = view.completed
    by_importance = False
    if params is None:
        importance = param_importance(view) if importance is None else importance
        by_importance = not importance.empty
        params, total = parallel_axes(view, importance, max_params)
    else:
        total = len(params)
    objective = view.objectives[0]
    data: dict[str, list[Any]] = {"trial": [t.number for t in completed], objective: [t.values[0] for t in completed]}
    ticks: dict[str, list[tuple[float, str]]] = {}
    for name in params:
        dist = next((t.distributions[name] for t in completed if name in t.params), None)
        column: list[float] = []
        if isinstance(dist, CategoricalDistribution):
            n = len(dist.choices)
            pos = {repr(c): (i / (n - 1) if n > 1 else 0.5) for i, c in enumerate(dist.choices)}
            ticks[name] = [(pos[repr(c)], str(c)) for c in dist.choices]
            column = [pos[repr(t.params[name])] if name in t.params else math.nan for t in completed]
        elif dist is not None:
            lo, hi, log = float(dist.low), float(dist.high), bool(getattr(dist, "log", False))

            def scale(x: float, lo: float = lo, hi: float = hi, log: bool = log) -> float:
                if hi == lo:
                    return 0.5
                return (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo)) if log else (x - lo) / (hi - lo)

            ticks[name] = [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")]
            column = [scale(float(t.params[name])) if name in t.params else math.nan for t in completed]
        data[name] = column
    df = pd.DataFrame(data)
    df.attrs.update(ticks=ticks, objective=objective, maximize=view.maximize[0], of=total, by_importance=by_importance)
    return df


def plot_parallel_coordinates(
    study: optuna.Study | StudyView, max_params: int = 8, importance: pd.DataFrame | None = None
) -> Figure:
    """Parallel coordinates of the completed trials, coloured by the objective (best trials drawn on top).

    The axes are the ``max_params`` most important parameters, most important on the left (see
    :func:`parallel_coordinates_data`).

    Example:
        >>> plot_parallel_coordinates(study).savefig("parallel.png")  # doctest: +SKIP
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    view = as_view(study)  # the trials are read once, here
    data = parallel_coordinates_data(view, max_params=max_params, importance=importance)
    objective, ticks = data.attrs["objective"], data.attrs["ticks"]
    axes = list(ticks)
    fig = _figure(max(6.0, 1.3 * len(axes) + 2), 4.5)
    ax = fig.add_subplot()
    values = data[objective]
    norm = Normalize(values.min(), values.max() if values.max() > values.min() else values.min() + 1)
    cmap = colormaps["viridis" if data.attrs["maximize"] else "viridis_r"]
    order = values.sort_values(ascending=data.attrs["maximize"]).index
    for i in order:
        ys = [data.at[i, a] for a in axes]
        ax.plot(range(len(axes)), ys, color=cmap(norm(values[i])), alpha=0.5, linewidth=1)
    for x, name in enumerate(axes):
        ax.axvline(x, color="black", linewidth=0.6)
        for pos, label in ticks[name]:
            ax.annotate(label, (x, pos), textcoords="offset points", xytext=(3, 0), fontsize=7, va="center")
    ax.set_xticks(range(len(axes)), [printable(a) for a in axes], rotation=20, ha="right", fontsize=8)
    ax.set_yticks([])
    title = f"Parallel coordinates: {view.name}"
    if data.attrs["of"] > len(axes):
        which = "most important" if data.attrs["by_importance"] else "first suggested"
        title += f" (the {len(axes)} {which} of {data.attrs['of']} parameters)"
    ax.set(title=title)
    fig.colorbar(cmap_mappable(cmap, norm), ax=ax, label=objective)
    return fig


def cmap_mappable(cmap: Any, norm: Any) -> Any:
    """A ScalarMappable for a colour bar (kept apart so the import stays inside functions)."""
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


def learning_curves_data(study: optuna.Study | StudyView, top: int = 5, metric: str | None = None) -> pd.DataFrame:
    """Per-epoch values of one metric for the ``top`` best completed trials, from their ``history`` attribute.

    The metric is the objective when the history holds it (``val_accuracy``), else the first ``val_*`` metric,
    else the first one recorded. Columns: ``trial``, ``rank``, ``epoch`` (from 1), ``metric``, ``value``.

    Example:
        >>> learning_curves_data(study, top=3)["trial"].nunique()  # doctest: +SKIP
        3
    """
    import pandas as pd

    view = as_view(study)
    best = sort_completed(view)[:top]
    histories = [(t, t.user_attrs.get(records.HISTORY) or {}) for t in best]
    if metric is None:
        keys = [k for _, h in histories for k in h]
        candidates = [view.objectives[0]] + [k for k in keys if k.startswith("val_")] + keys
        metric = next((k for k in candidates if k in keys), None)
    rows = []
    for rank, (t, history) in enumerate(histories, start=1):
        for epoch, value in enumerate(history.get(metric, []) if metric else [], start=1):
            rows.append({"trial": t.number, "rank": rank, "epoch": epoch, "metric": metric, "value": float(value)})
    df = pd.DataFrame(rows, columns=["trial", "rank", "epoch", "metric", "value"])
    df.attrs["metric"] = metric
    return df


def plot_learning_curves(study: optuna.Study | StudyView, top: int = 5) -> Figure:
    """The learning curves of the ``top`` best trials (objective metric per epoch).

    Example:
        >>> plot_learning_curves(study, top=3).savefig("curves.png")  # doctest: +SKIP
    """
    view = as_view(study)  # the trials are read once, here
    data = learning_curves_data(view, top=top)
    fig = _figure()
    ax = fig.add_subplot()
    for (rank, trial), curve in data.groupby(["rank", "trial"], sort=True):
        ax.plot(curve["epoch"], curve["value"], marker="o", markersize=3, label=f"#{rank}: trial {trial}")
    if data.empty:
        ax.text(0.5, 0.5, "No per-epoch history recorded.", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(loc="best", fontsize=8)
    ax.set(
        xlabel="epoch",
        ylabel=data.attrs.get("metric") or "metric",
        title=f"Learning curves of the top {data['trial'].nunique()} trials: {view.name}",
    )
    _integer_axis(ax.xaxis)
    return fig
