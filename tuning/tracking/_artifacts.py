"""The files a run holds: the resolved space as YAML, the model summary, the history CSV, a plot."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tuning import records

if TYPE_CHECKING:
    import optuna

_MAX_CURVES = 200


def space_yaml(space: Any) -> str | None:
    """The resolved search space as YAML (``yaml.safe_dump(space.to_dict())``), or None without one."""
    import yaml

    to_dict = getattr(space, "to_dict", None)
    if to_dict is None:
        return None
    return yaml.safe_dump(to_dict(), sort_keys=False, allow_unicode=True)


def fixed_params(space: Any) -> dict[str, Any]:
    """The resolved space's fixed values, as parameters of the study's parent run.

    The ``data`` section, every ``model`` and ``train`` key that is not searched (each trial's run holds the
    searched ones) and the objective; the ``study`` section may change between runs of a study, so it is left
    out (``space.yaml`` holds it).

    Example:
        >>> from tuning.space import SearchSpace
        >>> space = SearchSpace.from_dict({"model": {"family": "mlp", "depth": [1, 2]}, "train": {"epochs": 3}})
        >>> params = fixed_params(space)
        >>> params["train.epochs"], params["data.dataset"], "model.depth" in params
        (3, 'mnist', False)
    """
    from tuning.space import Fixed

    resolved = space.to_dict()
    params: dict[str, Any] = {f"data.{k}": v for k, v in resolved["data"].items() if v is not None}
    params.update({path: spec.value for path, spec in space.specs.items() if isinstance(spec, Fixed)})
    for i, objective in enumerate(resolved["objective"]):
        suffix = "" if i == 0 else f".{i}"
        params[f"objective.metric{suffix}"] = objective.get("metric")
        params[f"objective.direction{suffix}"] = objective.get("direction")
    return {k: v for k, v in params.items() if v is not None}


def model_summary(model: Any) -> str | None:
    """``model.summary()`` as text (box-drawing table), or None when Keras cannot summarise it."""
    lines: list[str] = []
    try:
        model.summary(print_fn=lambda line, line_break=False: lines.append(line))
    except Exception:
        return None
    return "\n".join(lines)


def history_csv(history: Mapping[str, Sequence[float]]) -> str:
    """One row per epoch (``epoch`` from 1), one column per metric, in the history's order.

    Example:
        >>> history_csv({"loss": [0.5, 0.25], "val_accuracy": [0.8, 0.9]}).splitlines()
        ['epoch,loss,val_accuracy', '1,0.5,0.8', '2,0.25,0.9']
    """
    names = list(history)
    epochs = max((len(v) for v in history.values()), default=0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *names])
    for i in range(epochs):
        writer.writerow([i + 1, *(history[n][i] if i < len(history[n]) else "" for n in names)])
    return out.getvalue()


def learning_curves_png(study: optuna.Study, objectives: Sequence[str], maximize: Sequence[bool]) -> str | None:
    """Draw every trial's per-epoch curve of the first objective (best trial highlighted) into a PNG.

    Returns the PNG's path in a new temporary folder (the caller removes it), or None when no trial
    has a per-epoch history of that metric. Uses matplotlib's Figure API (thread-safe, no pyplot).
    """
    import optuna

    trials = [
        t
        for t in study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        )
        if isinstance(t.user_attrs.get(records.HISTORY), dict)
    ]
    if not trials:
        return None
    histories = [t.user_attrs[records.HISTORY] for t in trials]
    metric = next((m for m in [*objectives[:1], "val_loss", "loss"] if any(m in h and h[m] for h in histories)), None)
    if metric is None:
        return None
    best_number = None
    if len(maximize) == 1:
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
        if complete:
            pick = max if maximize[0] else min
            best_number = pick(complete, key=lambda t: t.values[0]).number

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for trial, history in list(zip(trials, histories, strict=True))[-_MAX_CURVES:]:
        curve = history.get(metric) or []
        if not curve:
            continue
        epochs = range(1, len(curve) + 1)
        if trial.number == best_number:
            axes.plot(epochs, curve, color="C3", linewidth=2.5, label=f"best: trial {trial.number}", zorder=3)
        else:
            pruned = trial.state == optuna.trial.TrialState.PRUNED
            axes.plot(epochs, curve, color="0.6" if pruned else "C0", alpha=0.5, linewidth=1)
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.set_title(f"{study.study_name}: {metric} per epoch ({len(trials)} trials; grey = pruned)")
    axes.grid(alpha=0.3)
    if best_number is not None:
        axes.legend(loc="best")
    folder = tempfile.mkdtemp(prefix="tuning-plot-")
    path = os.path.join(folder, "learning_curves.png")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path
