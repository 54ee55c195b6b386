"""Assemble every table and plot of one or more studies, and write them as Markdown, HTML, CSV, LaTeX or JSON."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tuning.errors import printable, user_error
from tuning.report._load import StudyView, default_storage, load_studies, redacted
from tuning.report._tables import (
    SEARCH_SETTINGS,
    compare_studies,
    leaderboard,
    outcomes,
    param_importance,
    parameter_effects,
    pareto_front,
    search_method,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

FORMATS = ("md", "html", "csv", "latex", "json")


def slug(name: str) -> str:
    """A file-name-safe form of a study name: ``"mnist tpe/1"`` → ``"mnist-tpe-1"``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "study"


@dataclass
class StudyReport:
    """One study's tables in order: search (engine, sampler, pruner), leaderboard, Pareto front (multi-objective),
    effects, importance, outcomes."""

    view: StudyView
    tables: dict[str, pd.DataFrame]

    @property
    def name(self) -> str:
        """The study's name as printed: a control character or bidirectional control (a name another tool
        stored) shown as its escape, ``\\x1b``, never sent raw to a terminal."""
        return printable(self.view.name)


@dataclass
class Report:
    """Everything ``tuning report`` shows: the comparison table, each study's tables, and (on demand) the plots."""

    studies: list[StudyReport]
    comparison: pd.DataFrame
    storage: str
    top: int = 10
    target: float | None = None
    created: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table under a file-name-safe key: ``comparison``, ``<study>.leaderboard``, ``<study>.outcomes``…"""
        out = {"comparison": self.comparison}
        for section in self.studies:
            out.update({f"{slug(section.name)}.{key}": df for key, df in section.tables.items()})
        return out

    def figures(self) -> dict[str, Figure]:
        """Draw every plot: ``best_vs_time`` for all studies, then per study history, importance, parallel, curves."""
        from tuning.report import _plots

        figures = {"best_vs_time": _plots.plot_best_vs_time([s.view for s in self.studies], target=self.target)}
        for section in self.studies:
            key = slug(section.name)
            figures[f"{key}.history"] = _plots.plot_optimization_history(section.view)
            figures[f"{key}.importance"] = _plots.plot_param_importance(
                section.tables["param_importance"], title=f"Parameter importance: {section.name}"
            )
            figures[f"{key}.parallel_coordinates"] = _plots.plot_parallel_coordinates(
                section.view, importance=section.tables["param_importance"]
            )
            figures[f"{key}.learning_curves"] = _plots.plot_learning_curves(section.view, top=min(self.top, 5))
        return {key: _printable_figure(fig) for key, fig in figures.items()}

    def captions(self) -> dict[str, str]:
        """A sentence per plot, under the keys of :meth:`figures`: what it shows and how to read it.

        Example:
            >>> build_report(["tpe", "random"], target=0.97).captions()["best_vs_time"]  # doctest: +SKIP
            'Best val_accuracy so far against wall time since the first trial started, one line per study ...'
        """
        names = [s.name for s in self.studies]
        objectives = " / ".join(sorted({s.view.objectives[0] for s in self.studies}))
        which = f"one line per study ({', '.join(names)})" if len(names) > 1 else f"for study {names[0]}"
        target = f"; the dashed line is the target {self.target:g}" if self.target is not None else ""
        time = f"Best {objectives} so far against wall time since the first trial started, {which}{target}."
        captions = {"best_vs_time": time}
        for section in self.studies:
            captions.update(_study_captions(section, top=min(self.top, 5)))
        return captions


def _study_captions(section: StudyReport, top: int) -> dict[str, str]:
    """The captions of one study's plots (history, learning curves, importance, parallel coordinates)."""
    from tuning.report import _plots

    key, name, view = slug(section.name), section.name, section.view
    objective = view.objectives[0]
    best = section.tables["leaderboard"].iloc[0]
    curves = _plots.learning_curves_data(view, top=top)
    importance = section.tables["param_importance"]
    trials = importance.attrs.get("trials", len(view.completed))
    axes, total = _plots.parallel_axes(view, importance)
    captions = {
        f"{key}.history": (
            f"Optimisation history of {name}: the {objective} of each completed trial by trial number (dots) and "
            f"the best so far (line); the best, {_cell(float(best[objective]))}, came from trial {best['trial']}."
        ),
        f"{key}.learning_curves": (
            f"Learning curves of the top {curves['trial'].nunique()} trials of {name}: "
            f"{curves.attrs.get('metric')} after each epoch."
            if not curves.empty
            else f"Learning curves of {name}: no per-epoch history was recorded."
        ),
    }
    if importance.empty:
        captions[f"{key}.importance"] = f"Parameter importance in {name}: not computed ({trials} completed trials)."
        shown = f"the first {len(axes)} of its {total} parameters" if total > len(axes) else f"its {total} parameters"
        order = "in the order they were first suggested (importance not computed)"
    else:
        caveat = "" if importance.attrs.get("reliable", True) else (
            "; too few trials to be reliable, run more before trusting the ranking"
        )
        captions[f"{key}.importance"] = (
            f"Parameter importance in {name}: how much each parameter mattered to {objective}, "
            f"by {importance.attrs.get('evaluator', 'the evaluator')} on {trials} completed trials{caveat}."
        )
        shown = (
            f"the {len(axes)} most important of its {total} parameters" if total > len(axes)
            else f"its {total} parameters"
        )
        order = "most important on the left"
    captions[f"{key}.parallel_coordinates"] = (
        f"Parallel coordinates of {name}: one line per completed trial, coloured by {objective}; "
        f"the axes are {shown}, {order}."
    )
    return captions


def build_report(
    study_names: Sequence[str], storage: str | None = None, *, top: int = 10, target: float | None = None
) -> Report:
    """Load the studies from the storage and compute every table (plots are drawn by ``Report.figures``).

    Example:
        >>> report = build_report(["tpe", "random"], "sqlite:///mlruns/optuna.db", target=0.97)  # doctest: +SKIP
        >>> report.comparison[["study", "best", "trials_to_target"]]  # doctest: +SKIP

    Raises:
        StorageError: the storage cannot be opened or a study is not in it.
        EmptyStudyError: a study has no completed trial.
        UserInputError: ``top`` is below 1.
    """
    if int(top) < 1:
        raise user_error("--top must be at least 1", received=top, fix="pass --top 10")
    if target is not None and not math.isfinite(target):
        raise user_error("the target must be a finite number", received=target, fix="pass e.g. --target 0.98")
    views = load_studies(study_names, storage)
    sections = []
    for view in views:
        tables = {"search": search_method(view), "leaderboard": leaderboard(view, top=top)}
        if view.multi_objective:
            tables["pareto_front"] = pareto_front(view)
        tables["parameter_effects"] = parameter_effects(view)
        tables["param_importance"] = param_importance(view)
        tables["outcomes"] = outcomes(view)
        sections.append(StudyReport(view=view, tables=tables))
    return Report(sections, compare_studies(views, target=target), redacted(storage or default_storage()), top, target)


def write_report(
    study_names: Sequence[str],
    *,
    storage: str | None = None,
    fmt: str = "md",
    out: str | Path | None = None,
    top: int = 10,
    target: float | None = None,
    stream: TextIO | None = None,
) -> list[Path]:
    """Build the report of the named studies and write it; what ``tuning report`` runs. Returns the files written.

    Without ``out``, ``md``, ``csv``, ``latex`` and ``json`` print the tables to ``stream`` (standard output)
    and no file is written; ``html`` always writes a file, ``report.html`` in the current directory. Files
    are returned, not printed (the command line prints them). With ``out`` (a folder, created if needed)
    each format writes files there: ``report.md`` plus one PNG per plot, ``report.html`` (self-contained),
    one ``<table>.csv`` per table, ``report.tex`` plus the PNGs, or ``report.json``.

    Example:
        >>> write_report(["mnist-tpe", "mnist-random"], fmt="html", out="reports", target=0.97)  # doctest: +SKIP
        [PosixPath('reports/report.html')]

    Files are written all or none: into a staging folder first, then moved into place; a folder that cannot be
    created or written is refused before the report is computed.

    Raises:
        UserInputError: unknown format, ``top`` below 1, ``out`` is an existing file, lies under a file or cannot
            be written, or a file could not be written (nothing is left behind); and the errors of
            :func:`build_report` (StorageError, EmptyStudyError).
    """
    stream = stream if stream is not None else sys.stdout
    if fmt not in FORMATS:
        raise user_error("Unknown report format", received=fmt, fix=f"pass --format one of {', '.join(FORMATS)}")
    folder = Path(out) if out is not None else None
    if folder is not None and folder.exists() and not folder.is_dir():
        raise user_error("--out must be a folder", received=str(folder), fix="pass a folder name such as reports/")
    if folder is not None or fmt == "html":
        _check_writable(folder if folder is not None else Path.cwd())  # before the report is computed
    report = build_report(study_names, storage, top=top, target=target)
    if folder is None and fmt != "html":
        stream.write(render(report, fmt))
        return []
    return _write_files(report, fmt, folder if folder is not None else Path.cwd())


def _check_writable(folder: Path) -> None:
    """Refuse a report folder (``--out``) that cannot be created or written, before anything is computed.

    Raises:
        UserInputError: a file where a folder of the path should be, or a folder that cannot be written (tried
            for real with a probe file, so a read-only mount is caught also as root).
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise user_error(f"cannot write the report: {existing} is a file, not a folder", received=str(folder),
                         fix="pass --out with a folder path that has no file on the way, e.g. --out reports/")
    try:
        fd, probe = tempfile.mkstemp(prefix=".tuning-probe-", dir=existing)
    except OSError as exc:
        raise user_error(f"cannot write the report: {existing} is not writable ({exc.strerror or exc})",
                         received=str(folder), fix="pass --out with a folder you can write, e.g. --out reports/",
                         ) from None
    os.close(fd)
    os.unlink(probe)


def _write_files(report: Report, fmt: str, folder: Path) -> list[Path]:
    """Write the report's files into ``folder`` all or none: each is written into a staging folder first and
    moved into place once every one is written; on failure the staging folder and the folders created for the
    report are removed.

    Raises:
        UserInputError: a file could not be written (a full disk, a folder that became read-only).
    """
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    staging: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tuning-report-", dir=folder))
        names = _render_files(report, fmt, staging)
        written = []
        for name in names:
            os.replace(staging / name, folder / name)
            written.append(folder / name)
        return written
    except OSError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
            staging = None
        for path in created:  # innermost first; only if still empty
            with contextlib.suppress(OSError):
                path.rmdir()
        where = f" ({exc.filename})" if exc.filename else ""
        raise user_error(f"cannot write the report into {folder}: {exc.strerror or exc}{where}; nothing was written",
                         received=str(folder), fix="free space or pass --out with a folder you can write") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _render_files(report: Report, fmt: str, folder: Path) -> list[str]:
    """Write every file of ``fmt`` into ``folder``; their names, the main file first."""
    if fmt == "csv":
        tables = report.tables()
        for key, df in tables.items():
            _write(folder / f"{key}.csv", df.to_csv(index=False))
        return [f"{key}.csv" for key in tables]
    if fmt in ("json", "html"):
        name = f"report.{fmt}"
        _write(folder / name, to_json(report) if fmt == "json" else to_html(report))
        return [name]
    images = {}
    for key, fig in report.figures().items():
        fig.savefig(folder / f"{key}.png")
        images[key] = f"{key}.png"
    name = "report.md" if fmt == "md" else "report.tex"
    _write(folder / name, to_markdown(report, images) if fmt == "md" else to_latex(report, images))
    return [name, *images.values()]


def _write(path: Path, text: str) -> Path:
    path.write_text(_printable_lines(text), encoding="utf-8")
    return path


def _printable_lines(text: str) -> str:
    """``text`` with every control character but its line breaks escaped (a study or parameter name, or a value
    stored by another tool, may hold ESC or U+202E): what a report prints or writes never drives a terminal."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _printable_figure(fig: Figure) -> Figure:
    """``fig`` with every text in it (titles, legends, annotations) escaped as :func:`_printable_lines` escapes a
    report's text: a name stored by another tool shows ``\\x1b`` in a plot too, never a missing glyph. (Tick
    labels of names are drawn only when the figure is saved: the plots escape those themselves.)"""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_text(printable(text.get_text()))
    return fig


def render(report: Report, fmt: str) -> str:
    """The report as one text in ``fmt`` (``md``, ``html``, ``csv``, ``latex``, ``json``), without plot files.

    Example:
        >>> print(render(build_report(["mnist"]), "md"))  # doctest: +SKIP
    """
    if fmt == "md":
        return _printable_lines(to_markdown(report))
    if fmt == "html":
        return _printable_lines(to_html(report))
    if fmt == "latex":
        return _printable_lines(to_latex(report))
    if fmt == "json":
        return to_json(report)  # JSON escapes every control character itself
    if fmt == "csv":
        return _printable_lines("\n".join(f"# {key}\n{df.to_csv(index=False)}" for key, df in report.tables().items()))
    raise user_error("Unknown report format", received=fmt, fix=f"use one of {', '.join(FORMATS)}")


# ----------------------------------------------------------------------------------------------- display helpers
def _cell(value: Any) -> str:
    if value is None or value is _NA() or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e9 else f"{value:.4g}"
    return str(value)


def _NA() -> Any:  # noqa: N802 - pandas.NA, imported late
    import pandas as pd

    return pd.NA


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as short text: 4 significant digits, empty for missing values."""
    shown = df.astype(object).map(_cell) if not df.empty else df.astype(str)
    shown.attrs = dict(df.attrs)
    return shown


def _compact(df: pd.DataFrame) -> pd.DataFrame:
    """A table as people read it: without id columns (``attrs["ids"]``, kept in CSV and JSON) and, when it has
    several rows, without the columns that are the same in every row (named in the note instead).

    Columns in ``attrs["key_columns"]`` (rank, trial, objectives) always stay.
    """
    ids = [c for c in df.attrs.get("ids", []) if c in df.columns]
    keep = set(df.attrs.get("key_columns", df.columns))
    same = []
    if len(df) > 1 and "key_columns" in df.attrs:
        for column in df.columns:
            if column in keep or column in ids:
                continue
            values = {_cell(v) for v in df[column].astype(object)}
            if len(values) == 1:
                same.append(column)
    if not ids and not same:
        return df
    shown = df.drop(columns=[*ids, *same])
    shown.attrs = dict(df.attrs)
    note = df.attrs.get("note", "")
    if same:
        listed = "; ".join(f"{c} {_cell(df[c].iloc[0]) or '(empty)'}" for c in same)
        note += f" Same in every row: {listed}."
    if ids:
        note += f" Ids ({', '.join(ids)}) are in the CSV and JSON output."
    shown.attrs["note"] = note.strip()
    return shown


def _side_by_side(comparison: pd.DataFrame, target: float | None) -> pd.DataFrame:
    """The comparison as people read it: one column per study, one row per question (best, cost to target...)."""
    import pandas as pd

    rows: list[tuple[str, list[str]]] = []

    def add(label: str, column: str, missing: str = "") -> None:
        if column in comparison:
            rows.append((label, [_cell(v) or missing for v in comparison[column].astype(object)]))

    for setting in SEARCH_SETTINGS:  # what each column is: how the study searched
        if setting != "tuner" or comparison[setting].notna().any():
            add(setting, setting, "not recorded" if setting == "engine" else "—")
    objectives = set(comparison["objective"])
    add("best " + objectives.pop() if len(objectives) == 1 else "best", "best")
    if len(set(comparison["objective"])) > 1:
        add("objective", "objective")
    add("best trial", "best_trial")
    if target is not None:
        add(f"trials to {target:g}", "trials_to_target", "not reached")
        add(f"wall seconds to {target:g}", "seconds_to_target", "not reached")
        add(f"epochs to {target:g}", "epochs_to_target", "not reached")
    add("epochs spent (all trials)", "total_epochs")
    add("wall seconds", "wall_seconds")
    add("training seconds", "train_seconds")
    rows.append(
        (
            "trials: complete / pruned / failed",
            [f"{r.trials}: {r.complete} / {r.pruned} / {r.failed}" for r in comparison.itertuples()],
        )
    )
    table = pd.DataFrame(
        [[label, *cells] for label, cells in rows], columns=["", *(printable(str(s)) for s in comparison["study"])]
    )
    table.attrs = dict(comparison.attrs)
    note = "One column per study. Epochs spent counts every trial, pruned and failed ones included."
    if target is not None:
        note += f" To {target:g}: until the first completed trial that reached it, counting the trials before it."
    table.attrs["note"] = note
    return table


def _blocks(report: Report) -> list[tuple[str, ...]]:
    """The report in reading order: ``("section", heading)``, ``("table", heading, key)``, ``("figure", key)``.

    With several studies the comparison and the best-so-far-against-time plot come first; then each study's
    tables, its history and learning curves after the leaderboard, its importance and parallel coordinates
    after the importance table.
    """
    several = len(report.studies) > 1
    blocks: list[tuple[str, ...]] = [
        ("section", "Comparison" if several else "Summary"),
        ("table", "Studies side by side" if several else f"Study {report.studies[0].name}", "comparison"),
        ("figure", "best_vs_time"),
    ]
    after = {"leaderboard": ("history", "learning_curves"), "param_importance": ("importance", "parallel_coordinates")}
    for section in report.studies:
        key = slug(section.name)
        blocks.append(("section", f"Study {section.name}"))
        for name, df in section.tables.items():
            blocks.append(("table", str(df.attrs.get("title", name)), f"{key}.{name}"))
            blocks += [("figure", f"{key}.{plot}") for plot in after.get(name, ())]
    return blocks


def _shown_tables(report: Report) -> dict[str, pd.DataFrame]:
    """Every table as shown in Markdown, HTML and LaTeX (the CSV and JSON keep :meth:`Report.tables`)."""
    shown = {key: _compact(df) for key, df in report.tables().items()}
    shown["comparison"] = _side_by_side(report.comparison, report.target)
    return shown


def _header(report: Report) -> str:
    names = ", ".join(s.name for s in report.studies)
    return f"Studies {names} in {report.storage}, reported {report.created}."


# ------------------------------------------------------------------------------------------------------- Markdown
def _md_table(df: pd.DataFrame) -> str:
    shown = _display(df)
    if shown.empty:
        return "_(empty)_\n"

    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    numeric = [df[c].dtype.kind in "iuf" for c in df.columns]
    lines = [row(df.columns), "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += [row(r) for r in shown.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_markdown(report: Report, images: dict[str, str] | None = None) -> str:
    """The report as Markdown: the comparison first, then per study a heading, note and table per table; with
    ``images`` (plot key → PNG file name), each plot where it belongs, with its caption.

    Example:
        >>> print(to_markdown(build_report(["mnist"])))  # doctest: +SKIP
    """
    tables = _shown_tables(report)
    captions = report.captions() if images else {}
    parts = [f"# Tuning report\n\n{_header(report)}\n"]
    for kind, *rest in _blocks(report):
        if kind == "section":
            parts.append(f"## {rest[0]}\n")
        elif kind == "table":
            heading, key = rest
            df = tables[key]
            parts.append(f"### {heading}\n")
            if df.attrs.get("note"):
                parts.append(f"_{df.attrs['note']}_\n")
            if not (df.empty and df.attrs.get("note")):  # a table not computed: its note says why
                parts.append(_md_table(df))
        elif images and rest[0] in images:
            caption = captions[rest[0]]
            parts.append(f"![{caption}]({images[rest[0]]})\n\n_{caption}_\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
table.data { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0; }
table.data th, table.data td { border: 1px solid #ccc; padding: 0.2em 0.4em; text-align: left; }
table.data th { background: #f0f0f0; } table.data tr:nth-child(even) td { background: #fafafa; }
div.wide { overflow-x: auto; max-width: 100%; }
p.note { color: #555; font-style: italic; } figure { margin: 1em 0; } img { max-width: 100%; }
"""


def _breakable_headers(table_html: str) -> str:
    """Let long column names (``model.width.1``, ``duration_seconds``) wrap after ``.`` and ``_``, so that a
    leaderboard fits the page instead of scrolling sideways."""
    return re.sub(
        r"<th>([^<]*)</th>", lambda m: "<th>" + re.sub(r"([._])", r"\1<wbr>", m.group(1)) + "</th>", table_html
    )


def _png_base64(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def to_html(report: Report, figures: dict[str, Figure] | None = None) -> str:
    """One self-contained HTML page: every table, and every plot embedded as a base64 PNG with its caption.

    Example:
        >>> Path("report.html").write_text(to_html(build_report(["mnist"])))  # doctest: +SKIP
    """
    figures = report.figures() if figures is None else figures
    captions = report.captions()
    tables = _shown_tables(report)
    body = [f"<h1>Tuning report</h1>\n<p>{html.escape(_header(report))}</p>"]
    for kind, *rest in _blocks(report):
        if kind == "section":
            body.append(f"<h2>{html.escape(rest[0])}</h2>")
        elif kind == "table":
            heading, key = rest
            df, tag = tables[key], html.escape(key)
            body.append(f'<h3 id="{tag}">{html.escape(heading)}</h3>')
            if df.attrs.get("note"):
                body.append(f'<p class="note">{html.escape(df.attrs["note"])}</p>')
            if df.empty and df.attrs.get("note"):
                continue  # a table not computed: its note says why
            if df.empty:
                body.append(f'<table class="data" data-table="{tag}"><tr><td>(empty)</td></tr></table>')
            else:
                table_html = _breakable_headers(
                    _display(df)
                    .to_html(index=False, escape=True, classes="data", border=0)
                    .replace("<table ", f'<table data-table="{tag}" ', 1)
                )
                body.append(f'<div class="wide">{table_html}</div>')
        elif rest[0] in figures:
            key, caption = html.escape(rest[0]), html.escape(captions[rest[0]])
            body.append(
                f'<figure><img alt="{caption}" data-plot="{key}" '
                f'src="data:image/png;base64,{_png_base64(figures[rest[0]])}"><figcaption>{caption}</figcaption></figure>'
            )
    title = html.escape("Tuning report: " + ", ".join(s.name for s in report.studies))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# ---------------------------------------------------------------------------------------------------------- LaTeX
def to_latex(report: Report, images: dict[str, str] | None = None) -> str:
    """A standalone LaTeX document (booktabs tables; with ``images``, the PNG plots as figures).

    Example:
        >>> Path("report.tex").write_text(to_latex(build_report(["mnist"])))  # doctest: +SKIP
    """

    def esc(text: str) -> str:
        for a, b in (
            ("\\", r"\textbackslash{}"),
            ("&", r"\&"),
            ("%", r"\%"),
            ("$", r"\$"),
            ("#", r"\#"),
            ("_", r"\_"),
            ("{", r"\{"),
            ("}", r"\}"),
            ("~", r"\textasciitilde{}"),
            ("^", r"\^{}"),
        ):
            text = text.replace(a, b) if a != "\\" else text.replace(a, "\x00")
        return text.replace("\x00", r"\textbackslash{}")

    parts = [
        r"\documentclass{article}",
        r"\usepackage[margin=1.5cm,landscape]{geometry}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\begin{document}",
        r"\section*{Tuning report}",
        esc(_header(report)),
    ]
    tables = _shown_tables(report)
    captions = report.captions() if images else {}
    for kind, *rest in _blocks(report):
        if kind == "section":
            parts.append(rf"\subsection*{{{esc(rest[0])}}}")
            continue
        if kind == "figure":
            if images and rest[0] in images:
                parts += [
                    r"\begin{figure}[h]\centering",
                    rf"\includegraphics[width=0.8\linewidth]{{{images[rest[0]]}}}",
                    rf"\caption{{{esc(captions[rest[0]])}}}\end{{figure}}",
                ]
            continue
        heading, key = rest
        df = tables[key]
        parts.append(rf"\subsubsection*{{{esc(heading)}}}")
        if df.attrs.get("note"):
            parts.append(rf"\emph{{{esc(df.attrs['note'])}}}\\")
        if df.empty:
            if not df.attrs.get("note"):  # a table not computed: its note says why
                parts.append(r"(empty)")
            continue
        shown = _display(df)
        shown.columns = [esc(str(c)) for c in shown.columns]
        shown = shown.map(esc)
        parts.append(r"{\small" + "\n" + shown.to_latex(index=False, escape=False) + "}")
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------------------- JSON
def to_json(report: Report) -> str:
    """The report as one JSON document: ``comparison`` and per study each table as a list of records.

    Numbers keep full precision; missing values are ``null``. Each table's title and note are under ``notes``.

    Example:
        >>> json.loads(to_json(build_report(["mnist"])))["studies"]["mnist"]["leaderboard"][0]  # doctest: +SKIP
    """

    def records(df: pd.DataFrame) -> list[dict[str, Any]]:
        plain = df.astype(object)
        return plain.where(df.notna(), None).to_dict(orient="records")

    document: dict[str, Any] = {
        "storage": report.storage,
        "created": report.created,
        "target": report.target,
        "comparison": records(report.comparison),
        "studies": {},
    }
    for section in report.studies:
        document["studies"][section.view.name] = {  # its true name: JSON escapes every control character
            "objectives": section.view.objectives,
            "directions": ["maximize" if m else "minimize" for m in section.view.maximize],
            **{key: records(df) for key, df in section.tables.items()},
            "notes": {key: df.attrs.get("note", "") for key, df in section.tables.items()},
        }
    return json.dumps(document, indent=2, default=_json_scalar, allow_nan=False) + "\n"


def _json_scalar(value: Any) -> Any:
    """numpy scalars as Python numbers (``json`` writes floats with ``repr``: full precision)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON. Received: {value!r}.")
