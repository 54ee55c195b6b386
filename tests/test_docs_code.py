"""Every code block of README.md and docs/*.md does what the page says it does.

Each fenced block is read with the HTML comment on the line right before its fence, if any:

- ``python``: executed as a module, in a fresh temporary folder holding a copy of ``search_spaces/`` (the docs run
  from the project's folder), with MNIST from ``TUNING_DATA_DIR``. A block that trains (it calls ``tuning.run``,
  imports Keras, TensorFlow or MLflow at its top level, or reads studies it is ``given``) runs in the slow tier,
  **shrunk**: every space ``tuning.run`` receives gets the overrides of :data:`SHRINK` (600 images, one epoch, at
  most two trials), so a block written for a two-minute study runs in seconds; the others run in the fast tier.
  Claims a block makes about itself are ``assert`` lines in it.
- ``yaml``: parsed; a search space (or a fragment showing some of its sections) is validated with
  ``SearchSpace.from_dict``; a fragment of the ``model`` section showing alternative forms, one per line, is
  validated line by line.
- ``bash``: every ``tuning ...`` command (``python -m tuning``, ``.venv/bin/tuning``, ``scripts/tune.sh ARGS``,
  which is ``tuning run ARGS``) is parsed by the command's own parser (``tuning.cli.build_parser()``), every
  ``mlflow ...`` command by MLflow's own (click), and a script it runs must exist. Then the block's ``tuning``
  commands run in order, in-process, in a fresh folder like a Python block's (``tuning run`` shrunk with ``--set``
  and ``--quiet``), and each must exit 0; ``> FILE`` writes the command's output there. A command that names a
  database or tracking server (``postgresql://``, ``http://``) is parsed, not run: the tests that start those
  servers run such commands for real (``tests/test_scale.py``, ``tests/test_tracking.py``). ``validate`` and
  ``--version`` run in the fast tier; a block that trains or reads studies runs in the slow tier.
- ``text``: the README's command-line synopsis is checked option by option against each command's ``--help``,
  both ways; any other line that starts with ``tuning `` is parsed. A block that starts with ``$ `` is a
  transcript: ``$ cat FILE`` shows a file (the test writes it), ``$ tuning ...`` runs and must print exactly the
  lines shown under it. Other text blocks show output (benchmark
  figures, messages) and are read by people only.

Markers (the comment right before a block's fence):

- ``<!-- skip: REASON -->``: the block is not executed (a Python block is still compiled, a shell block still
  parsed, a YAML block still validated). Kept few and honest: :func:`test_skips_are_few_and_say_why`.
- ``<!-- given: studies NAME ... -->``: the block reads these studies: before it runs, they are made once per
  session (``search_spaces/mnist_quick.yaml`` under each name, shrunk, tracked in MLflow) and copied into its
  folder's ``mlruns/``.

Claims the prose around a block makes about what running it leaves behind are checked in :data:`AFTER`.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import MNIST_DIR, ROOT

from tuning import models
from tuning.cli import build_parser
from tuning.space import SearchSpace

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SECTIONS = {"data", "model", "train", "objective", "study"}
#: What shrinks a study written for minutes to seconds: the same overrides for Python blocks (on every space
#: ``tuning.run`` gets) and shell blocks (``tuning run ... --set``), and for the studies blocks are ``given``.
SHRINK = ["data.train_size=600", "data.test_size=200", "train.epochs=1", "study.n_trials=2"]
MAX_TRIALS = 2
#: At most this many blocks may be skipped (each says why).
MAX_SKIPS = 3
#: A Python block that trains or loads Keras/MLflow: slow tier.
_HEAVY_PYTHON = re.compile(r"tuning\.run\(|^(?:import|from) (?:keras|tensorflow|mlflow)\b", re.M)
_SERVER = re.compile(r"postgresql|mysql|https?://")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
_MARKER = re.compile(r"<!--\s*(?P<kind>[\w-]+):\s*(?P<value>.*?)\s*-->")


# --------------------------------------------------------------------------------------------------- the blocks
@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, with the marker before it and the heading it sits under."""

    doc: str  # "README.md", "docs/space.md"
    line: int  # of the opening fence, from 1
    lang: str
    text: str  # dedented
    heading: str
    marker: tuple[str, str] | None  # ("skip", reason), ("given", "studies a b"), ("seed", name), ...

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:{self.lang}"

    @property
    def skip(self) -> str | None:
        return self.marker[1] if self.marker and self.marker[0] == "skip" else None

    @property
    def given(self) -> list[str]:
        if not self.marker or self.marker[0] != "given":
            return []
        words = self.marker[1].split()
        assert words[:1] == ["studies"], f"{self.id}: write <!-- given: studies NAME ... -->"
        return words[1:]


def doc_blocks() -> list[Block]:
    """Every fenced block of README.md and docs/*.md, indented ones (inside lists) included."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
            marker = _MARKER.fullmatch(before)
            headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.M)
            found.append(Block(
                doc=doc.relative_to(ROOT).as_posix(), line=text.count("\n", 0, match.start()) + 1,
                lang=match["lang"], text=textwrap.dedent(match["body"]), heading=headings[-1] if headings else "",
                marker=(marker["kind"], marker["value"]) if marker else None,
            ))  # fmt: skip
    return found


BLOCKS = doc_blocks()


def _of(lang: str, slow: Callable[[Block], bool] | None = None) -> list:
    return [
        pytest.param(b, id=b.id, marks=[pytest.mark.slow] if slow is not None and slow(b) else [])
        for b in BLOCKS
        if b.lang == lang
    ]


def test_every_block_has_a_known_language() -> None:
    assert {b.lang for b in BLOCKS} <= {"python", "yaml", "bash", "text"}, {b.id for b in BLOCKS if not b.lang}
    assert {"README.md", "docs/space.md", "docs/tracking.md", "docs/report.md"} <= {b.doc for b in BLOCKS}
    assert len([b for b in BLOCKS if b.lang == "yaml"]) >= 8 and len(_RUNNABLE) >= 3


def test_skips_are_few_and_say_why() -> None:
    skipped = [b for b in BLOCKS if b.skip is not None]
    assert len(skipped) <= MAX_SKIPS, [b.id for b in skipped]
    for block in skipped:
        assert len(block.skip.split()) >= 4, f"{block.id}: say why it is skipped: <!-- skip: REASON -->"


# ------------------------------------------------------------------------------------------------------- a folder
@pytest.fixture(scope="session")
def given_studies(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[str]], Path]:
    """Make (once per session) the studies blocks are given, in one folder; returns a function that makes the
    named ones and gives that folder's ``mlruns``."""
    from tuning.cli import main

    home = tmp_path_factory.mktemp("given")
    shutil.copytree(ROOT / "search_spaces", home / "search_spaces")
    made: set[str] = set()

    def make(names: list[str]) -> Path:
        with pytest.MonkeyPatch.context() as mp:
            _isolate(mp, home)
            for name in names:
                if name not in made:
                    sets = [word for s in SHRINK for word in ("--set", s)]
                    argv = ["run", "search_spaces/mnist_quick.yaml", "--study-name", name, *sets, "--quiet"]
                    assert main(argv) == 0, f"could not make the given study {name}"
                    made.add(name)
        return home / "mlruns"

    return make


def _isolate(mp: pytest.MonkeyPatch, folder: Path) -> None:
    mp.chdir(folder)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    if MNIST_DIR:
        mp.setenv("TUNING_DATA_DIR", MNIST_DIR)


@pytest.fixture
def folder(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Block], Path]]:
    """A function that prepares the block's fresh folder (search_spaces/, its given studies) and moves there."""

    def prepare(block: Block) -> Path:
        shutil.copytree(ROOT / "search_spaces", tmp_path / "search_spaces")
        if block.given:
            mlruns = request.getfixturevalue("given_studies")(block.given)
            shutil.copytree(mlruns, tmp_path / "mlruns")
        _isolate(monkeypatch, tmp_path)
        return tmp_path

    yield prepare


# --------------------------------------------------------------------------------------------------------- python
def _python_is_slow(block: Block) -> bool:
    return bool(block.given or _HEAVY_PYTHON.search(block.text))


def _shrunk_run(real: Callable) -> Callable:
    """``tuning.run`` with :data:`SHRINK` applied to the space it is given, and at most two trials."""

    def run(space, **kwargs):
        if not isinstance(space, SearchSpace):
            space = SearchSpace.from_dict(space) if isinstance(space, dict) else SearchSpace.from_yaml(space)
        if kwargs.get("n_trials"):
            kwargs["n_trials"] = min(kwargs["n_trials"], MAX_TRIALS)
        return real(space.with_overrides(SHRINK), **kwargs)

    return run


def run_python(block: Block, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Execute a Python block as a module (dataclasses need one in ``sys.modules``); its namespace."""
    import tuning

    monkeypatch.setattr(tuning, "run", _shrunk_run(tuning.run))
    module = types.ModuleType(f"docs_block_{abs(hash(block.id))}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(block.text, block.id, "exec"), module.__dict__)
    return module.__dict__


@pytest.mark.parametrize("block", _of("python", _python_is_slow))
def test_python_block_runs(
    block: Block, folder: Callable[[Block], Path], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    code = compile(block.text, block.id, "exec")  # even a skipped block must be valid Python
    if block.skip is not None:
        pytest.skip(block.skip)
    assert code is not None
    where = folder(block)
    namespace = run_python(block, monkeypatch)
    check = AFTER.get((block.doc, block.heading))
    if check is not None:
        check(block, where, namespace, capfd, monkeypatch)


def _readme_from_python(block: Block, where: Path, namespace: dict, capfd, monkeypatch) -> None:
    """README "From Python": it prints the best value and parameters, keeps the best model as a Keras file
    without tracking (no MLflow database), and run again says on standard error that nothing is left to run."""
    study = namespace["study"]
    assert len(study.trials) == MAX_TRIALS
    assert f"{study.best_value} {study.best_params}" in capfd.readouterr().out
    assert (where / "mlruns" / "models" / "mnist_quick_python" / "best_model.keras").is_file()
    assert (where / "mlruns" / "optuna.db").is_file() and not (where / "mlruns" / "mlflow.db").exists()
    run_python(block, monkeypatch)
    message = f"Resuming study 'mnist_quick_python': {MAX_TRIALS} of {MAX_TRIALS} trials done, nothing to run"
    assert message in capfd.readouterr().err


def _tracking_the_model(block: Block, where: Path, namespace: dict, capfd, monkeypatch) -> None:
    """docs/tracking.md "The model": the MLflow model gives one row of 10 class probabilities per image."""
    probabilities, images = namespace["probabilities"], namespace["images"]
    assert probabilities.shape == (len(images), 10)
    assert abs(float(probabilities.sum(axis=1).mean()) - 1.0) < 1e-3


def _report_python(block: Block, where: Path, namespace: dict, capfd, monkeypatch) -> None:
    """docs/report.md "Python API": it saved the plot and wrote the HTML page it says."""
    assert (where / "time.png").read_bytes()[:4] == b"\x89PNG"
    assert (where / "reports" / "report.html").is_file()
    assert namespace["full"].captions()["best_vs_time"].startswith("Best val_accuracy so far against wall time since")


#: Checks of what the prose around a block says running it does, by (page, heading).
AFTER: dict[tuple[str, str], Callable] = {
    ("README.md", "From Python"): _readme_from_python,
    ("docs/tracking.md", "The model"): _tracking_the_model,
    ("docs/report.md", "Python API"): _report_python,
}


def test_every_after_check_finds_its_block() -> None:
    places = {(b.doc, b.heading) for b in BLOCKS if b.lang == "python"}
    assert set(AFTER) <= places, set(AFTER) - places


# ----------------------------------------------------------------------------------------------------------- yaml
@pytest.mark.parametrize("block", _of("yaml"))
def test_yaml_block_validates(block: Block) -> None:
    d = yaml.safe_load(block.text)
    assert isinstance(d, dict), f"{block.id} is not a mapping"
    if set(d) <= SECTIONS:
        # A whole space, or a fragment showing some sections: the others get their smallest valid form.
        filled = {"model": {"family": "mlp"}, "train": {"epochs": 1}, **d} if "model" not in d else d
        SearchSpace.from_dict(filled, source=block.id)
        return
    # A fragment of the model section showing alternative forms, one per line: each line must be valid.
    for line in (line for line in block.text.splitlines() if line.split("#")[0].strip()):
        fragment = yaml.safe_load(line)
        assert set(fragment) <= set(models.get("cnn").keys), f"{block.id}: {line!r} is no cnn key"
        SearchSpace.from_dict({"model": {"family": "cnn", "depth": 3, **fragment}, "train": {"epochs": 1}},
                              source=f"{block.id}: {line}")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------- shell
@dataclass(frozen=True)
class Command:
    """One command line of a shell block: what runs it (``tuning``, ``mlflow``, ``script``, ``other``)."""

    kind: str
    args: list[str]
    env: dict[str, str]
    out: str | None  # "> FILE"


def shell_commands(text: str) -> list[Command]:
    """The commands of a shell block: continuations joined, comments dropped, ``VAR=value`` prefixes split off."""
    commands = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        out = None
        if ">" in words:
            at = words.index(">")
            words, out = words[:at], words[at + 1]
        env = {}
        while words and re.match(r"[A-Za-z_]\w*=", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        program, rest = words[0], words[1:]
        name = program.rsplit("/", 1)[-1]
        if name == "tuning":
            commands.append(Command("tuning", rest, env, out))
        elif name.startswith("python") and rest[:2] == ["-m", "tuning"]:
            commands.append(Command("tuning", rest[2:], env, out))
        elif name == "tune.sh":  # scripts/tune.sh ARGS is `tuning run ARGS`, mnist_quick.yaml by default
            default = [] if rest and not rest[0].startswith("-") else ["search_spaces/mnist_quick.yaml"]
            commands.append(Command("tuning", ["run", *default, *rest], env, out))
        elif name == "mlflow":
            commands.append(Command("mlflow", rest, env, out))
        elif program.startswith("scripts/") or (name.startswith("python") and rest[:1] and rest[0].endswith(".py")):
            commands.append(Command("script", [program if program.startswith("scripts/") else rest[0]], env, out))
        else:
            commands.append(Command("other", words, env, out))
    return commands


def parse_tuning(args: list[str]) -> None:
    """Parse a ``tuning`` command line with the command's own parser; a usage error fails the test."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            build_parser().parse_args(args)
    except SystemExit as exc:
        assert exc.code == 0, f"tuning {shlex.join(args)}: {err.getvalue()}"


def parse_mlflow(args: list[str]) -> None:
    """Parse an ``mlflow`` command line with MLflow's own (click) parser, without running it."""
    import click
    from mlflow.cli import cli

    command: click.Command = cli
    context = click.Context(cli, info_name="mlflow")
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest, f"mlflow {shlex.join(args)}: no subcommand"
        name = rest.pop(0)
        sub = command.get_command(context, name)
        assert sub is not None, f"mlflow {shlex.join(args)}: no command {name!r}"
        command, context = sub, click.Context(sub, info_name=name, parent=context)
    try:
        command.make_context(context.info_name, rest, parent=context.parent)
    except click.ClickException as exc:
        pytest.fail(f"mlflow {shlex.join(args)}: {exc.format_message()}")


def _cheap(command: Command) -> bool:
    return command.args[:1] in (["validate"], ["--version"])


def _runs(command: Command) -> bool:
    return command.kind == "tuning" and not any(_SERVER.search(a) for a in command.args)


def _shell_is_slow(block: Block) -> bool:
    return bool(block.given) or any(_runs(c) and not _cheap(c) for c in shell_commands(block.text))


@pytest.mark.parametrize("block", _of("bash"))
def test_shell_block_commands_parse(block: Block) -> None:
    commands = shell_commands(block.text)
    assert commands, f"{block.id}: no command"
    for command in commands:
        if command.kind == "tuning":
            parse_tuning(command.args)
        elif command.kind == "mlflow":
            parse_mlflow(command.args)
        elif command.kind == "script":
            assert (ROOT / command.args[0]).is_file(), f"{block.id}: no file {command.args[0]}"


_RUNNABLE = [p for p in _of("bash", _shell_is_slow) if any(_runs(c) for c in shell_commands(p.values[0].text))]


@pytest.mark.parametrize("block", _RUNNABLE)
def test_shell_block_runs(
    block: Block, folder: Callable[[Block], Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuning.cli import main

    if block.skip is not None:
        pytest.skip(block.skip)
    where = folder(block)
    for command in shell_commands(block.text):
        if not _runs(command):
            continue
        for key, value in command.env.items():
            if key != "TUNING_DATA_DIR":  # MNIST comes from the test's own TUNING_DATA_DIR
                monkeypatch.setenv(key, value)
        args = list(command.args)
        if args[:1] == ["run"]:
            if "--n-trials" in args:
                at = args.index("--n-trials") + 1
                args[at] = str(min(int(args[at]), MAX_TRIALS))
            args += [word for s in SHRINK for word in ("--set", s)] + ["--quiet"]
        capsys.readouterr()
        try:
            code = main(args)
        except SystemExit as exc:  # --version, --help
            code = exc.code
        printed = capsys.readouterr()
        assert code == 0, f"tuning {shlex.join(args)} exited {code}:\n{printed.err}"
        if command.out:
            (where / command.out).write_text(printed.out, encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------- text
def _synopsis() -> Block:
    (block,) = [b for b in BLOCKS if b.doc == "README.md" and b.lang == "text" and "tuning run SPACE.yaml" in b.text]
    return block


def test_readme_synopsis_lists_each_commands_options_as_its_help_does() -> None:
    lines = re.sub(r"\n\s+(?=\[)", " ", _synopsis().text).splitlines()  # continuation lines start with [
    listed: dict[str, set[str]] = {}
    for line in lines:
        words = line.split()
        sub = words[1]  # run, validate, ... or --version
        listed.setdefault(sub, set()).update(re.findall(r"(?<![\w-])--[a-z][\w-]*", " ".join(words[2:])))
    parser_help = io.StringIO()
    with contextlib.redirect_stdout(parser_help), pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    commands = set(re.findall(r"^    (\w+)  ", parser_help.getvalue(), re.M))  # under "positional arguments"
    assert commands == set(listed) - {"--version"}, "the synopsis lists every command of `tuning --help`"
    for sub in commands:
        text = io.StringIO()
        with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
            build_parser().parse_args([sub, "--help"])
        options = set(re.findall(r"^ {2,}(?:-\w, )?(--[a-z][\w-]*)", text.getvalue(), re.M)) - {"--help"}
        assert listed[sub] == options, f"tuning {sub}: synopsis {sorted(listed[sub])}, --help {sorted(options)}"


@pytest.mark.parametrize("block", _of("text"))
def test_commands_shown_in_text_blocks_parse(block: Block) -> None:
    for line in block.text.splitlines():
        if line.startswith(("tuning ", "$ tuning ")) and "[" not in line:  # a command, not a synopsis
            parse_tuning(shlex.split(line.removeprefix("$ "))[1:])


_TRANSCRIPTS = [p for p in _of("text") if p.values[0].text.startswith("$ ")]


def transcript(text: str) -> list[tuple[list[str], list[str]]]:
    """A transcript's commands (``$ ...`` lines, as words), each with the lines shown under it."""
    steps: list[tuple[list[str], list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((shlex.split(line[2:]), []))
        else:
            steps[-1][1].append(line)
    return steps


@pytest.mark.parametrize("block", _TRANSCRIPTS)
def test_text_transcript_is_what_it_prints(
    block: Block, folder: Callable[[Block], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A text block of ``$ `` lines is a transcript: ``$ cat FILE`` shows a file (written here), ``$ tuning ...``
    prints exactly the lines under it (standard output, then standard error)."""
    from tuning.cli import main

    where = folder(block)
    for words, shown in transcript(block.text):
        if words[0] == "cat":
            (where / words[1]).write_text("\n".join(shown) + "\n", encoding="utf-8")
            continue
        assert words[0] == "tuning" and _cheap(Command("tuning", words[1:], {}, None)), (
            f"{block.id}: a transcript shows `cat FILE` and cheap tuning commands (validate), not {shlex.join(words)}")
        capsys.readouterr()
        main(words[1:])
        printed = capsys.readouterr()
        assert (printed.out + printed.err).splitlines() == shown
