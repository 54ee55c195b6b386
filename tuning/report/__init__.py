"""Reports on finished studies, read from the Optuna storage alone: tables as pandas DataFrames, plots as Figures.

Tables: :func:`search_method` (engine, sampler and pruner), :func:`leaderboard`, :func:`parameter_effects`,
:func:`param_importance`, :func:`compare_studies`, :func:`pareto_front`, :func:`outcomes`. Plots: ``plot_*``
functions, each drawing the DataFrame of the matching ``*_data`` function; :meth:`Report.captions` says in a
sentence what each shows. :func:`write_report` is what ``tuning report`` runs. Importing this package imports
neither TensorFlow, Keras nor MLflow (pandas, Optuna and matplotlib load when first used).

Example:
    >>> import optuna
    >>> from tuning import report
    >>> study = optuna.load_study(study_name="mnist", storage="sqlite:///mlruns/optuna.db")  # doctest: +SKIP
    >>> report.leaderboard(study, top=5)  # doctest: +SKIP
"""

from __future__ import annotations

from tuning.report._load import EmptyStudyError, StudyView, load_studies, open_storage
from tuning.report._plots import (
    history_data,
    learning_curves_data,
    parallel_axes,
    parallel_coordinates_data,
    plot_best_vs_time,
    plot_learning_curves,
    plot_optimization_history,
    plot_parallel_coordinates,
    plot_param_importance,
)
from tuning.report._report import (
    FORMATS,
    Report,
    StudyReport,
    build_report,
    render,
    to_html,
    to_markdown,
    write_report,
)
from tuning.report._tables import (
    RELIABLE_TRIALS,
    compare_studies,
    leaderboard,
    outcomes,
    param_importance,
    parameter_effects,
    pareto_front,
    search_method,
    search_settings,
)

__all__ = [
    "FORMATS",
    "RELIABLE_TRIALS",
    "EmptyStudyError",
    "Report",
    "StudyReport",
    "StudyView",
    "build_report",
    "compare_studies",
    "history_data",
    "leaderboard",
    "learning_curves_data",
    "load_studies",
    "open_storage",
    "outcomes",
    "parallel_axes",
    "parallel_coordinates_data",
    "param_importance",
    "parameter_effects",
    "pareto_front",
    "plot_best_vs_time",
    "plot_learning_curves",
    "plot_optimization_history",
    "plot_parallel_coordinates",
    "plot_param_importance",
    "render",
    "search_method",
    "search_settings",
    "to_html",
    "to_markdown",
    "write_report",
]
