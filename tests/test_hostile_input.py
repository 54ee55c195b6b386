"""Input a hostile user or another tool may give: deep nesting, escape sequences in names, absurd names, an in-memory
storage, a report folder that cannot be written, and the YAML corners that look wrong but are valid.

Each case goes through the public path in-process (``tuning.cli.main``, ``tuning.run``, ``SearchSpace``): no
training, no subprocess. Bad input exits 2 with one message (what, received, fix), no traceback, nothing written;
nothing a study name holds ever reaches the terminal raw.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_space

import tuning
from tuning.cli import main
from tuning.errors import SpaceError, UserInputError
from tuning.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = "model: {family: mlp}\ntrain: {epochs: 1}\n"
#: What must never be printed raw: ESC, BEL, NUL, a newline inside a name, RIGHT-TO-LEFT OVERRIDE.
RAW = ("\x1b", "\x07", "\x00", "\u202e")


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())  # the console may wrap long lines


def _space_file(folder: Path, text: str = GOOD, name: str = "space.yaml") -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


# ------------------------------------------------------------------------------------------- nesting depth


def test_yaml_nested_5000_levels_exits_2_without_a_recursion_error(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = _space_file(workdir, f"model: {{family: mlp, width: {_nested(5000)}}}\ntrain: {{epochs: 1}}\n")

    code, _, err = _cli(capsys, "run", space)

    assert code == 2
    assert "the document nests lists and mappings deeper than 20 levels" in err
    assert "(level 21 at line 1, column 47)" in err and "Fix: check the brackets" in err
    assert "Recursion" not in err
    assert sorted(p.name for p in workdir.iterdir()) == ["space.yaml"]


def test_aliases_count_as_deep_as_they_expand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Each line nests 8 levels (within the limit) but repeats the one before inside it: 8 + 8 + 8 expanded.
    text = (f"model:\n  family: mlp\n  width: &a {_nested(8)}\n  depth: &b [[[[[[[*a]]]]]]]\n"
            "  dropout: [[[[[[[*b]]]]]]]\ntrain: {epochs: 1}\n")
    code, _, err = _cli(capsys, "validate", _space_file(tmp_path, text))

    assert code == 2
    assert "deeper than 20 levels; a search space needs 6 at most (level 21 at line 5, column 19)" in err


def test_a_space_nested_as_deep_as_a_real_one_is_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ("model: {family: mlp, depth: [1, 2], width: {layers: [{low: 8, high: 16}, [8, 16]]}}\n"
            "train: {epochs: 1}\nstudy: {enqueue: [{model.depth: 2, model.width: [8, 16]}]}\n")
    code, out, _ = _cli(capsys, "validate", _space_file(tmp_path, text))
    assert code == 0 and "OK: the space is valid." in out


def test_a_deep_set_value_or_key_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = _space_file(tmp_path)

    code, _, err = _cli(capsys, "validate", space, "--set", f"train.epochs={_nested(5000)}")
    assert code == 2
    assert err.startswith("error: train.epochs: the value nests lists and mappings deeper than 20 levels")

    code, _, err = _cli(capsys, "validate", space, "--set", "train" + ".a" * 5000 + "=1")
    assert code == 2
    assert err.startswith("error: train.a.a.a…: the space nests lists and mappings deeper than 20 levels")


def test_a_dict_nested_5000_levels_or_containing_itself_is_refused_from_python(workdir: Path) -> None:
    deep = tiny_space()
    level = deep["train"]
    for _ in range(5000):
        level["more"] = {}
        level = level["more"]
    with pytest.raises(SpaceError, match=r"^train\.more\.more\.more…: the space nests .* deeper than 20 levels"):
        SearchSpace.from_dict(deep)

    looped = tiny_space()
    looped["model"]["again"] = looped
    with pytest.raises(SpaceError, match="a dict that contains itself is infinitely deep"):
        tuning.run(looped, tracking=False)
    assert list(workdir.iterdir()) == []  # nothing written


def test_a_dict_holding_a_billion_values_is_refused_without_walking_them() -> None:
    space = tiny_space()
    huge: list = [0] * 10
    for _ in range(9):  # a billion values, each list shared ten times: nothing to walk one by one
        huge = [huge] * 10
    space["model"]["width"] = huge
    with pytest.raises(SpaceError, match="holds more than 10,000 values"):
        SearchSpace.from_dict(space)


# ------------------------------------------------------------------------------------------- YAML corners


MERGE = """
model: {family: mlp, depth: [1, 2], width: [16, 32]}
train: {epochs: 1, learning_rate: [0.001, 0.003]}
study:
  enqueue:
    - &small {model.depth: 1, model.width: 16, train.learning_rate: 0.001}
    - {<<: *small, train.learning_rate: 0.003}
    - <<: *small
      model.depth: 2
"""


def test_yaml_merge_keys_work_and_their_keys_may_be_overridden(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _space_file(tmp_path, MERGE)

    code, out, err = _cli(capsys, "validate", path)

    assert code == 0, err
    assert "3 enqueued configurations" in out
    assert SearchSpace.from_yaml(path).enqueued() == [
        {"model.depth": 1, "model.width": 16, "train.learning_rate": 0.001},
        {"model.depth": 1, "model.width": 16, "train.learning_rate": 0.003},
        {"model.depth": 2, "model.width": 16, "train.learning_rate": 0.001},
    ]


def test_a_key_written_twice_beside_a_merge_key_is_still_a_duplicate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = MERGE.replace("{<<: *small, train.learning_rate: 0.003}",
                         "{<<: *small, train.learning_rate: 0.003, train.learning_rate: 0.001}")
    code, _, err = _cli(capsys, "validate", _space_file(tmp_path, text))

    assert code == 2
    assert "duplicate key 'train.learning_rate' at line 7, column 48 (first at line 7, column 20)" in err


def test_a_duplicate_boolean_key_says_yaml_reads_yes_and_on_as_booleans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(capsys, "validate", _space_file(tmp_path, GOOD + "data: {yes: 1, on: 2}\n"))

    assert code == 2
    assert ("duplicate key 'on' at line 3, column 16: YAML reads an unquoted yes, no, on, off, y, n, true or false "
            "as a boolean, so it is the same key as 'yes' at line 3, column 8 (both True)") in err
    assert "Fix: quote a key meant as a word ('on': ...)" in err


# ------------------------------------------------------------------------------------------- sampler, pruner


def test_every_bad_sampler_and_pruner_option_is_reported_at_once(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD + ("study:\n  sampler: {type: tpe, n_startup_trial: 5, n_ei_candidates: many}\n"
                   "  pruner: {type: median, n_warmup_step: 2}\n")
    space = _space_file(workdir, text)

    for command in ("validate", "run"):
        code, _, err = _cli(capsys, command, space)
        assert code == 2
        assert "3 problems in" in err
        assert "study.sampler.n_startup_trial: unknown key in the tpe sampler's options. Fix: did you mean " \
               "`n_startup_trials`?" in err
        assert "study.sampler.n_ei_candidates: must be an integer. Received: many" in err
        assert "study.pruner.n_warmup_step: unknown key in the median pruner's options. Fix: did you mean " \
               "`n_warmup_steps`?" in err
    assert sorted(p.name for p in workdir.iterdir()) == ["space.yaml"]


@pytest.mark.parametrize(("study", "message"), [
    ("{sampler: {type: tpe, n_startup_trials: abc}}", "study.sampler.n_startup_trials: must be an integer"),
    ("{sampler: {type: tpe, prior_weight: 1e-4}}",
     "study.sampler.prior_weight: must be a number or null. Received: 1e-4. Fix: see optuna.samplers.TPESampler "
     "for what prior_weight means (YAML reads 1e-4 as text: write 1.0e-4)"),
    ("{sampler: {type: nsga2, population_size: 1}}",
     "study.sampler: optuna.samplers.NSGAIISampler refuses these options: `population_size` must be greater than"),
    ("{sampler: {type: tpe, seed: 3}}", "study.sampler.seed: is set by the toolkit, not an option to write. "
                                        "Received: 3. Fix: the sampler's seed comes from study.seed"),
    ("{sampler: {type: tpe, gamma: 2}}", "study.sampler.gamma: takes a Python function"),
    ("{pruner: {type: percentile, percentile: 150}}", "Percentile must be between 0 and 100 inclusive"),
    ("{pruner: {type: patient, patience: 2, wrapped: {type: median, n_startup_trials: -1}}}",
     "study.pruner.wrapped: optuna.pruners.MedianPruner refuses these options: Number of startup trials cannot"),
])
def test_a_bad_sampler_or_pruner_value_alone_is_refused_by_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], study: str, message: str
) -> None:
    code, _, err = _cli(capsys, "validate", _space_file(tmp_path, GOOD + f"study: {study}\n"))
    assert code == 2
    assert message in err


def test_good_sampler_and_pruner_options_still_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = GOOD + ("study:\n  sampler: {type: tpe, n_startup_trials: 5, multivariate: true, n_ei_candidates: 12}\n"
                   "  pruner: {type: patient, patience: 1, min_delta: 0.001, "
                   "wrapped: {type: hyperband, max_resource: auto}}\n")
    code, out, err = _cli(capsys, "validate", _space_file(tmp_path, text))
    assert code == 0, err


# ------------------------------------------------------------------------------------------- study names


BAD_NAMES = {
    "ESC": ("evil\x1b[31mred", "must not hold control characters, line breaks or bidirectional controls "
                               "(it holds \\x1b). Received: evil\\x1b[31mred"),
    "BEL": ("ring\x07", "(it holds \\x07)"),
    "NUL": ("nul\x00byte", "(it holds \\x00)"),
    "RTL override": ("invoice\u202efdp.exe", "(it holds \\u202e)"),
    "newline": ("two\nlines", "(it holds \\n)"),
    "empty": ("", "must not be empty. Received: ''"),
    "blank": ("   ", "must not be empty. Received: ' "),  # the message's spaces are collapsed below
    "dot dot": ("..", "cannot be . or .."),
    "5,000 characters": ("n" * 5000, "is longer than 100 characters (255 bytes in UTF-8)"),
    "101 characters": ("n" * 101, "it has 101"),
    "86 CJK characters, 258 bytes": ("漢" * 86, "is longer than 100 characters (255 bytes in UTF-8)"),
}


@pytest.mark.parametrize("case", list(BAD_NAMES))
def test_a_bad_study_name_exits_2_before_anything_is_written(
    workdir: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    name, says = BAD_NAMES[case]
    space = _space_file(workdir, yaml.safe_dump(tiny_space()))

    code, out, err = _cli(capsys, "run", space, "--study-name", name, "--no-tracking")

    assert code == 2
    assert err.startswith("error: --study-name ") and says in err and "Fix:" in err
    assert not any(c in out + err for c in RAW)
    assert sorted(p.name for p in workdir.iterdir()) == ["space.yaml"]
    with pytest.raises(UserInputError, match="study_name"):
        tuning.run(space, study_name=name, tracking=False)
    assert sorted(p.name for p in workdir.iterdir()) == ["space.yaml"]


def test_a_bad_study_name_in_the_space_is_a_space_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "validate", _space_file(tmp_path, GOOD + 'study: {name: "mnist\\e[2J\\u202e"}\n'))

    assert code == 2
    assert "study.name: must not hold control characters, line breaks or bidirectional controls (it holds \\x1b, " \
           "\\u202e). Received: mnist\\x1b[2J\\u202e" in err
    assert not any(c in out + err for c in RAW)


def test_a_study_name_of_100_characters_is_fine_and_101_is_not() -> None:
    assert SearchSpace.from_dict({**tiny_space(), "study": {"name": "n" * 100}}).study.name == "n" * 100
    with pytest.raises(SpaceError, match="study.name: is longer than 100 characters"):
        SearchSpace.from_dict({**tiny_space(), "study": {"name": "n" * 101}})


def test_a_default_study_name_from_a_long_file_name_is_refused_before_anything_is_written(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = _space_file(workdir, yaml.safe_dump({**tiny_space(), "study": {"n_trials": 1}}), "s" * 120 + ".yaml")

    code, _, err = _cli(capsys, "run", space, "--no-tracking")

    assert code == 2
    assert "the study name (study.name, by default the space file's name) is longer than 100 characters" in err
    assert "Fix: pass --study-name NAME, or set study.name in the space" in err
    assert sorted(p.name for p in workdir.iterdir()) == [Path(space).name]


#: A name another tool may have stored: an escape sequence, a bell, rich markup, a newline, a right-to-left override.
STORED = "evil\x1b[2J\x07[/]\nname\u202eabc"
SHOWN = "evil\\x1b[2J\\x07[/]\\nname\\u202eabc"


@pytest.fixture
def stored_by_another_tool(workdir: Path) -> str:
    url = f"sqlite:///{workdir / 'other.db'}"
    study = optuna.create_study(study_name=STORED, storage=url, direction="maximize")
    # a parameter name and a choice with control characters too: the report's plots show them as labels
    study.optimize(lambda t: t.suggest_float("x\x07", 0.0, 1.0) + len(t.suggest_categorical("c", ["a\x1b", "b"])),
                   n_trials=6)
    return url


def test_studies_shows_a_stored_name_escaped_never_raw(
    stored_by_another_tool: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["studies", "--storage", stored_by_another_tool])
    out = capsys.readouterr().out

    assert code == 0
    assert SHOWN in out
    assert not any(c in out for c in RAW)


@pytest.mark.parametrize("fmt", ["md", "csv", "latex", "html", "json"])
def test_report_shows_a_stored_name_escaped_never_raw(
    stored_by_another_tool: str, workdir: Path, capsys: pytest.CaptureFixture[str], fmt: str,
    recwarn: pytest.WarningsRecorder,
) -> None:
    code = main(["report", STORED, "--storage", stored_by_another_tool, "--format", fmt])
    out = capsys.readouterr().out
    if fmt == "html":  # always a file, report.html in the current folder, its plots drawn in it
        out = (workdir / "report.html").read_text()
        assert not [str(w.message) for w in recwarn if "missing from font" in str(w.message)]  # drawn escaped

    assert code == 0
    assert not any(c in out for c in RAW)
    if fmt == "json":
        assert list(json.loads(out)["studies"]) == [STORED]  # JSON keeps the true name, escaped by JSON itself
    elif fmt in ("md", "html"):
        assert SHOWN in out
    else:  # CSV keeps the name's line break inside a quoted cell; LaTeX escapes the backslashes in its own way
        assert "x1b[2J" in out


def test_report_files_hold_a_stored_name_escaped(
    stored_by_another_tool: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", STORED, "--storage", stored_by_another_tool, "--format", "csv", "--out", "out"]) == 0
    capsys.readouterr()
    files = sorted((workdir / "out").iterdir())
    assert files and all(p.name.startswith(("comparison", "evil-x1b-2J-x07-nname-u202eabc")) for p in files)
    text = "".join(p.read_text() for p in files)
    assert "evil\\x1b[2J\\x07[/]" in text and not any(c in text for c in RAW)


# ------------------------------------------------------------------------------------------- storage, report


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite:///file::memory:?cache=shared",
                                 "sqlite:///file:x?mode=memory&uri=true"])
def test_an_in_memory_storage_is_refused_with_the_reason(
    workdir: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    space = _space_file(workdir, yaml.safe_dump(tiny_space()))
    for argv in (["run", space, "--storage", url, "--no-tracking"], ["studies", "--storage", url]):
        code, _, err = _cli(capsys, *argv)
        assert code == 2
        assert "an in-memory SQLite storage keeps nothing: the study and its finished trials vanish" in err
        assert f"Received: {url}" in err and "Fix: pass a file, e.g. --storage sqlite:///mlruns/optuna.db" in err
    assert sorted(p.name for p in workdir.iterdir()) == ["space.yaml"]


@pytest.mark.parametrize("target", ["nan", "inf", "-inf"])
def test_report_target_must_be_a_finite_number(capsys: pytest.CaptureFixture[str], target: str) -> None:
    code, _, err = _cli(capsys, "report", "mnist", f"--target={target}")
    assert code == 2
    assert "--target must be a finite number" in err
    assert f"Received: {float(target)}" in err and not math.isfinite(float(target))


@pytest.mark.parametrize(("out", "says"), [
    ("notes.txt/report", "cannot write the report: notes.txt is a file, not a folder. Received: notes.txt/report"),
    ("notes.txt/a/b", "notes.txt is a file, not a folder"),
    ("/proc", "cannot write the report: /proc is not writable"),
    ("/proc/tuning/report", "cannot write the report: /proc is not writable"),
])
def test_report_out_that_cannot_be_written_exits_2_and_writes_nothing(
    stored_by_another_tool: str, workdir: Path, capsys: pytest.CaptureFixture[str], out: str, says: str
) -> None:
    (workdir / "notes.txt").write_text("notes\n")
    before = sorted(p.name for p in workdir.iterdir())

    code, _, err = _cli(capsys, "report", STORED, "--storage", stored_by_another_tool, "--out", out)

    assert code == 2
    assert says in err and "Fix: pass --out with a folder" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in workdir.iterdir()) == before
