"""The ``tuning`` command: run, validate, studies, report.

Exit codes: 0 done, 1 the study stopped after too many failed trials, 2 bad input (nothing written),
3 the database server went away mid-study and did not come back, 130 interrupted by Ctrl-C, 143 by SIGTERM.
``tuning --help`` and ``tuning validate`` import neither TensorFlow nor MLflow.

Example:
    $ tuning validate search_spaces/mnist_quick.yaml
    $ tuning run search_spaces/mnist_quick.yaml --n-trials 5 --set train.epochs=2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuning import _signals
from tuning._defaults import RESULTS_DIR
from tuning.errors import StorageFailedError, StorageLostError, TooManyFailuresError, UserInputError
from tuning.report import FORMATS  # standard library only: --help stays light

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from tuning.space import SearchSpace


#: The arguments ``main`` was called with (None: ``sys.argv``), passed on to ``--workers`` processes.
_ARGV: list[str] | None = None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tuning`` command."""
    parser = argparse.ArgumentParser(
        prog="tuning",
        description="Tune Keras models with Optuna from a declarative search space; track every trial in MLflow.",
        epilog="Results land in ./mlruns by default (Optuna: mlruns/optuna.db, MLflow: mlruns/mlflow.db).",
    )
    from tuning import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run or resume the study a space file describes")
    run.add_argument("space", help="search-space YAML file")
    run.add_argument("--n-trials", type=int, help="total complete+pruned trials of the study (default: study.n_trials)")
    run.add_argument("--timeout", type=float, help="the study's budget in seconds: no trial starts after it, "
                     "and the running trial stops at its next epoch end")
    _storage_option(run)
    run.add_argument("--study-name", help="default: study.name, else the space file's name")
    _set_option(run)
    run.add_argument("--n-jobs", type=int, help="trials at once, in threads (default: study.n_jobs)")
    run.add_argument("--data-dir", help="folder holding <dataset>.npz (instead of $TUNING_DATA_DIR)")
    run.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else mlruns/mlflow.db)"
    )
    run.add_argument("--no-tracking", action="store_true", help="do not track in MLflow (MLflow is not imported)")
    run.add_argument(
        "--keep-models", action="store_true", help="log every trial's model as an MLflow model, not only the best"
    )
    run.add_argument(
        "--register-model", metavar="NAME", help="register the study's best model in the MLflow model registry"
    )
    run.add_argument("--quiet", action="store_true", help="print only the final summary")
    run.add_argument("--workers", type=int, help="worker processes on this machine, sharing its CPU cores (default 1)")
    run.add_argument("--gpus", help="one worker per GPU: GPU indices (0,1) or all")
    run.add_argument("--trials-per-gpu", type=int, help="workers (trials at once) per GPU with --gpus (default 1)")

    validate = sub.add_parser("validate", help="check a space file and print its parameters")
    validate.add_argument("space", help="search-space YAML file")
    _set_option(validate)

    studies = sub.add_parser("studies", help="list the studies in a storage")
    _storage_option(studies)

    sync = sub.add_parser(
        "sync", help="back-fill MLflow from the Optuna storage (after the tracking server was unreachable)"
    )
    sync.add_argument("study", metavar="STUDY", help="study name")
    _storage_option(sync)
    sync.add_argument("--tracking-uri", help="MLflow tracking URI (as for run)")

    report = sub.add_parser("report", help="comparison tables and plots of one or more studies")
    report.add_argument("studies", nargs="+", metavar="STUDY", help="study names")
    _storage_option(report)
    report.add_argument("--format", default="md", choices=FORMATS)
    report.add_argument("--out", help="folder to write the report into (default: print tables)")
    report.add_argument("--top", type=int, default=10, help="trials in the leaderboard (default 10)")
    report.add_argument("--target", type=float, help="objective value to reach, for the study comparison")
    return parser


def _storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///mlruns/optuna.db)")


def _set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
        help="override a key of the space, e.g. --set train.epochs=3 (repeatable; VALUE is read as YAML)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tuning`` command; returns the exit code."""
    global _ARGV
    _signals.install()  # a Ctrl-C Python swallows in a finalizer while the heavy modules load is still seen
    _ARGV = list(argv) if argv is not None else None
    results_existed = RESULTS_DIR.exists()
    try:  # Ctrl-C while the heavy modules load: no traceback, nothing left behind
        args = build_parser().parse_args(argv)
        _redact_logs(args)
        import optuna
        from rich.console import Console

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what Optuna's would
        console = Console(highlight=False, soft_wrap=True)
        errors = Console(stderr=True, highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted before anything started; nothing was written.\n")
        return 130
    try:
        try:
            return _COMMANDS[args.command](args, console)
        except Exception as exc:
            if _signals.interruption(exc) is not None:  # a Ctrl-C that a library turned into an error of its
                raise KeyboardInterrupt from None  # own (SQLAlchemy's "Can't reconnect until ...", a SystemError)
            raise
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", None)
        if signum is None:  # before the study's first trial (or a command that runs no trials)
            if not results_existed:
                _remove_empty_folders(RESULTS_DIR)
            errors.print("[bold yellow]Interrupted.[/] " + (
                "No trial had started. Run the same command to start again." if args.command == "run" else ""
            ))
            return 130
        errors.print(
            "[bold yellow]Interrupted.[/] Finished trials are saved; the running one is recorded as failed "
            "(interrupted) and runs again first on resume. Resume with the same command.",
        )
        return 128 + signum
    except UserInputError as exc:
        errors.print(f"[bold red]error:[/] {_safe(exc)}", markup=True)
        return 2
    except TooManyFailuresError as exc:
        errors.print(f"[bold red]stopped:[/] {exc}")
        return 1
    except StorageLostError as exc:
        errors.print(f"[bold red]stopped:[/] {_safe(exc)}", markup=True)
        return 3
    except StorageFailedError as exc:
        errors.print(f"[bold red]error:[/] {_safe(exc)}", markup=True)
        return 1
    except Exception as exc:  # a database that fails outside a study's trials: say which and what to do
        from tuning import storage as _storage

        if not _storage.is_storage_failure(exc):
            raise
        url = _storage.resolve_url(getattr(args, "storage", None))
        failure = _storage.storage_failure(url, exc, while_doing="reading it" if args.command != "run" else "in use")
        errors.print(f"[bold red]error:[/] {_safe(failure)}", markup=True)
        return 2 if args.command != "run" else 1


def _remove_empty_folders(folder: Path) -> None:
    """Remove ``folder`` and its subfolders if they hold no file (what an early Ctrl-C may leave)."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True) + [folder]:
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()  # fails, and is left, when not empty


def _redact_logs(args: argparse.Namespace) -> None:
    """Every log line (ours, Optuna's, MLflow's) goes through one handler that masks URL passwords."""
    import logging

    import optuna

    from tuning.redact import RedactingFilter, secrets_in_url

    urls = [getattr(args, "storage", None), getattr(args, "tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")]
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter([s for url in urls for s in secrets_in_url(url)]))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    optuna.logging.disable_default_handler()  # Optuna's records reach the root handler instead
    optuna.logging.enable_propagation()


def _safe(exc: BaseException) -> str:
    from rich.markup import escape

    from tuning.errors import printable
    from tuning.redact import redact_text

    # A value the user gave (a study name, a key) may hold control characters: shown escaped, line by line.
    return escape("\n".join(printable(line) for line in redact_text(str(exc)).split("\n")))


def _load_space(args: argparse.Namespace) -> SearchSpace:
    from tuning.space import SearchSpace

    space = SearchSpace.from_yaml(args.space)
    return space.with_overrides(args.overrides) if args.overrides else space


def _cmd_validate(args: argparse.Namespace, console: Console) -> int:
    from tuning import engines

    space = _load_space(args)
    if space.study.engine == "optuna":  # their options are checked by building them
        engines.make_sampler(space, space.study.seed)
        engines.make_pruner(space)
    lines = [space.describe()]
    if space.family == "hypermodel":  # built once with default values, as KerasTuner and `tuning run` do
        import re

        from tuning import data, hypermodel
        from tuning.errors import DataError

        reference = space.specs["model.hypermodel"].value  # type: ignore[union-attr]
        notes = []
        try:  # as `tuning run` loads it: the model's input and output are checked against it
            dataset = data.load_spec(space.data)
        except DataError as exc:
            dataset = None
            notes.append(f"the data could not be loaded, the model's input and output are not checked: {exc}")
        built = hypermodel.check_first_build(hypermodel.for_space(space), space, dataset, reference=reference,
                                             dry_fit=True)
        own = len(space.distributions())
        counts = [f"{own} in the space"] if own else []
        counts += [f"{len(built.build_names)} declared by a default build(hp)"]
        counts += [f"{len(built.fit_names)} by fit(hp, ...)"] if built.fit_names else []
        total = own + len(built.hp.space)
        lines[0] = re.sub(r"(: hypermodel, )\d+ parameters?", lambda m: f"{m.group(1)}{total} parameter"
                          f"{'s' if total != 1 else ''} ({', '.join(counts)})", lines[0], count=1)
        lines.append(f"  hypermodel {reference}: built once with default values; it declares:")
        lines.append("    " + hypermodel.describe_declared(built.hp, built.build_names).replace("\n", "\n    "))
        if built.fit_names:
            lines.append("  its fit(hp, model, ...), called once with a model.fit that trains nothing, declares:")
            lines.append("    " + hypermodel.describe_declared(built.hp, built.fit_names).replace("\n", "\n    "))
        if built.fit_received:
            lines.append("  its fit passes model.fit " + ", ".join(f"{k}={v!r}" for k, v in built.fit_received.items())
                         + " (with default values)")
        notes += built.notes + hypermodel.check_enqueued(space.enqueued(), built.hp)
        lines += [f"  note: {note}" for note in notes]
    console.print("\n".join(lines), markup=False, soft_wrap=True)
    console.print("OK: the space is valid.")
    return 0


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from tuning.progress import ProgressDisplay
    from tuning.study import run

    space = _load_space(args)
    from tuning.errors import check_study_name

    if args.study_name is not None:  # an empty one would silently mean the default
        check_study_name(args.study_name, "--study-name")
    else:  # before --workers start: study.name, by default the space file's name
        check_study_name(space.study.name, "the study name (study.name, by default the space file's name)",
                         fix="pass --study-name NAME, or set study.name in the space")
    for name, value in (("--n-trials", args.n_trials), ("--n-jobs", args.n_jobs)):
        if value is not None and value < 1:
            from tuning.errors import user_error

            raise user_error(f"{name} must be at least 1", received=value, fix=f"pass {name} 1 or more")
    if args.timeout is not None and not args.timeout > 0:
        from tuning.errors import user_error

        raise user_error("--timeout must be a positive number of seconds", received=args.timeout,
                         fix="pass e.g. --timeout 600, or leave it out to run all trials")
    n_trials = args.n_trials or space.study.n_trials
    if args.workers is not None or args.gpus is not None or args.trials_per_gpu is not None:
        plan = _worker_plan(args)
        if len(plan) > 1 or args.gpus is not None:  # one GPU too: the worker must see only that GPU
            return _run_workers(args, space, plan, n_trials, console)
    observers = [] if args.quiet else [ProgressDisplay(console, n_trials)]
    study = run(
        space,
        n_trials=args.n_trials,
        timeout=args.timeout,
        storage=args.storage,
        study_name=args.study_name,
        n_jobs=args.n_jobs,
        tracking=not args.no_tracking,
        tracking_uri=args.tracking_uri,
        keep_models=args.keep_models,
        register_model=args.register_model,
        observers=observers,
        data_dir=args.data_dir,
        verbose=False,  # the progress display says it (and --quiet silences it)
    )
    _print_summary(study, console, tracking=not args.no_tracking, tracking_uri=args.tracking_uri)
    return 0


def _worker_plan(args: argparse.Namespace) -> list[dict[str, str]]:
    from tuning.errors import user_error
    from tuning.study import parse_gpus, worker_plan

    for name, value in (("--workers", args.workers), ("--trials-per-gpu", args.trials_per_gpu)):
        if value is not None and value < 1:
            raise user_error(f"{name} must be at least 1", received=value, fix=f"pass {name} 1 or more")
    if args.gpus is None:
        if args.trials_per_gpu is not None:
            raise user_error("--trials-per-gpu needs --gpus", received=args.trials_per_gpu,
                             fix="add --gpus 0,1 (or all), or use --workers N for CPU workers")
        return worker_plan(workers=args.workers or 1)
    gpus = parse_gpus(args.gpus)
    per_gpu = args.trials_per_gpu or 1
    if args.workers is not None and args.workers != len(gpus) * per_gpu:
        raise user_error(
            "--workers and --gpus disagree: --gpus runs --trials-per-gpu workers on each GPU",
            received=f"--workers {args.workers} --gpus {args.gpus} --trials-per-gpu {per_gpu}",
            fix="leave out --workers when you pass --gpus",
        )
    return worker_plan(gpus=gpus, trials_per_gpu=per_gpu)


def _run_workers(
    args: argparse.Namespace, space: SearchSpace, plan: list[dict[str, str]], n_trials: int, console: Console
) -> int:
    """``tuning run --workers N`` / ``--gpus``: the same command in N worker processes, one display here."""
    from rich.console import Console as RichConsole

    from tuning import storage as _storage
    from tuning._defaults import default_tracking_uri
    from tuning.study import run_workers

    url = _storage.resolve_url(args.storage or space.study.storage)
    tracking_uri = None if args.no_tracking else (args.tracking_uri or default_tracking_uri())
    argv = sys.argv[1:] if _ARGV is None else _ARGV
    code, study = run_workers(
        argv, plan, storage_url=url, study_name=args.study_name or space.study.name, total=n_trials,
        tracking_uri=tracking_uri, console=console, errors=RichConsole(stderr=True, highlight=False),
        quiet=args.quiet,
    )
    if study is not None:
        _print_summary(study, console, tracking=not args.no_tracking, tracking_uri=args.tracking_uri)
    return code


def _print_summary(study: optuna.Study, console: Console, *, tracking: bool, tracking_uri: str | None) -> None:
    import shlex

    from optuna.trial import TrialState
    from rich.markup import escape

    from tuning import records
    from tuning.errors import printable

    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    console.print(
        f"\nStudy [bold]{escape(printable(study.study_name))}[/]: {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed."
    )
    metrics = study.user_attrs.get(records.OBJECTIVES, ["value"])
    if not counts[TrialState.COMPLETE]:
        console.print("No trial completed yet.")
        return
    best_trials = study.best_trials if len(metrics) > 1 else [study.best_trial]
    for best in best_trials[:5]:
        values = "  ".join(f"{m} {v:.4f}" for m, v in zip(metrics, best.values, strict=False))
        test = best.user_attrs.get(records.TEST_ACCURACY)
        test_text = f"  test_accuracy {test:.4f}" if test is not None else ""
        console.print(f"Best trial {best.number}: {values}{test_text}")
        for key, value in best.params.items():
            shown = f"{value:.6g}" if isinstance(value, float) else value  # 0.30000000000000004 → 0.3
            console.print(f"  {key}: {shown}", highlight=False)
    _print_model(study, console, tracking=tracking, tracking_uri=tracking_uri)
    console.print(f"Report:   tuning report {escape(shlex.quote(printable(study.study_name)))}")
    if tracking and not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        console.print("MLflow:   mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db")


def _print_model(study: optuna.Study, console: Console, *, tracking: bool, tracking_uri: str | None = None) -> None:
    """Where the best model is: an MLflow model (and its registry version), or a file when tracking is off.

    For an MLflow model, also the ``mlflow models predict`` command that runs it: with ``--env-manager local``,
    without which MLflow builds a new Python environment from the internet (it fails offline).
    """
    import shlex

    from tuning import records
    from tuning.redact import redact_url

    if tracking:
        uri = study.user_attrs.get(records.MLFLOW_BEST_MODEL)
        if uri:
            console.print(f"Model:    {uri}  (mlflow.pyfunc.load_model; float32 images scaled to [0, 1])")
            store = redact_url(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlruns/mlflow.db")
            console.print(
                f"Predict:  MLFLOW_TRACKING_URI={shlex.quote(store)} mlflow models predict -m {shlex.quote(uri)} "
                "-i input.json "
                "--env-manager local  (or `mlflow models serve`; --env-manager local runs it in this environment, "
                "offline)",
                highlight=False, markup=False,
            )
        registered = study.user_attrs.get(records.MLFLOW_REGISTERED)
        if registered:
            console.print(f"Registry: {registered}")
        return
    from tuning.study import best_model_path

    path = best_model_path(study.study_name)
    if path.exists():
        console.print(f"Model:    {path}  (keras.saving.load_model; what it expects: {path.with_suffix('.json')})")


def _cmd_studies(args: argparse.Namespace, console: Console) -> int:
    from tuning.study import list_studies

    rows = list_studies(args.storage)
    if not rows:
        console.print("No study in this storage yet.")
        return 0
    from rich.table import Table
    from rich.text import Text

    from tuning.errors import printable

    columns = list(rows[0])
    table = Table(*(c.replace("_", " ") for c in columns))
    table.columns[0].no_wrap = True
    for row in rows:  # as plain text (a name is no markup), escape sequences shown, never sent to the terminal
        table.add_row(*(Text(printable(str(row[c]))) for c in columns))
    # At its natural width: a study name is never cut, whatever the terminal's (or a pipe's 80) columns.
    from rich.measure import Measurement

    width = console.width
    console.width = max(width, Measurement.get(console, console.options.update(width=100_000), table).maximum)
    try:
        console.print(table, crop=False)
    finally:
        console.width = width
    return 0


def _cmd_sync(args: argparse.Namespace, console: Console) -> int:
    import optuna

    from tuning import storage as _storage
    from tuning.errors import StorageError
    from tuning.tracking import MlflowTracker

    url = _storage.resolve_url(args.storage)
    backend = _storage.open_read_only(url)  # the Optuna storage is only read
    try:
        study = optuna.load_study(study_name=args.study, storage=backend)
    except KeyError:
        names = ", ".join(sorted(s.study_name for s in backend.get_all_studies())) or "none"
        raise StorageError(
            f"no study named {args.study!r} in the storage. Received: {args.study}. Fix: use one of: {names}."
        ) from None
    tracker = MlflowTracker(args.tracking_uri, storage_url=url)
    done = tracker.backfill(study)
    console.print(
        f"MLflow {tracker.uri} is up to date with study {study.study_name}: {done['created']} trial run(s) "
        f"created, {done['ended']} ended" + (", parent run ended." if done["parent_ended"] else ".")
    )
    return 0


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    import math

    from tuning.errors import user_error
    from tuning.report import write_report

    if args.target is not None and not math.isfinite(args.target):  # argparse's float() reads "nan" and "inf"
        raise user_error("--target must be a finite number: the objective value the studies should reach",
                         received=args.target, fix="pass e.g. --target 0.98, or leave it out")

    paths = write_report(
        args.studies, storage=args.storage, fmt=args.format, out=args.out, top=args.top, target=args.target,
        stream=sys.stdout,
    )
    for path in paths:
        console.print(f"wrote {path}")
    return 0


_COMMANDS: dict[str, Any] = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "studies": _cmd_studies,
    "report": _cmd_report,
    "sync": _cmd_sync,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
