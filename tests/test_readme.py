"""The documentation tells the truth: every YAML example validates, every shipped space validates, and the
README's Python example runs (on a few hundred images, tracking off).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from tuning import models
from tuning.space import SearchSpace

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SECTIONS = {"data", "model", "train", "objective", "study"}


def blocks(language: str) -> list[tuple[str, int, str]]:
    """``(file name, block number, text)`` of every fenced block in ``language`` in README.md and docs/*.md."""
    found = []
    for doc in DOCS:
        fenced = re.findall(rf"^```{language}\n(.*?)^```", doc.read_text(encoding="utf-8"), re.S | re.M)
        for i, text in enumerate(fenced):
            found.append((doc.relative_to(ROOT).as_posix(), i, text))
    return found


YAML_BLOCKS = blocks("yaml")


def test_the_docs_have_yaml_examples() -> None:
    names = {name for name, _, _ in YAML_BLOCKS}
    assert "README.md" in names and "docs/space.md" in names
    assert len(YAML_BLOCKS) >= 8


@pytest.mark.parametrize(("name", "number", "text"), YAML_BLOCKS, ids=[f"{n}#{i}" for n, i, _ in YAML_BLOCKS])
def test_yaml_example_validates(name: str, number: int, text: str) -> None:
    d = yaml.safe_load(text)
    assert isinstance(d, dict), f"{name} block {number} is not a mapping"
    if set(d) <= SECTIONS:
        # A whole space, or a fragment showing some sections: the others get their smallest valid form.
        filled = {"model": {"family": "mlp"}, "train": {"epochs": 1}, **d} if "model" not in d else d
        SearchSpace.from_dict(filled, source=f"{name} block {number}")
        return
    # A fragment of the model section showing alternative forms, one per line: each line must be valid.
    lines = [line for line in text.splitlines() if line.split("#")[0].strip()]
    for line in lines:
        fragment = yaml.safe_load(line)
        assert set(fragment) <= set(models.get("cnn").keys), f"{name} block {number}: {line!r} is no cnn key"
        SearchSpace.from_dict({"model": {"family": "cnn", "depth": 3, **fragment}, "train": {"epochs": 1}},
                              source=f"{name} block {number}: {line}")


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_space_validates(path: Path) -> None:
    space = SearchSpace.from_yaml(path)
    assert space.study.name == path.stem  # the file name names the study
    for params in space.enqueued():  # every baseline is a complete configuration of this space
        space.config_from_params({**_defaults_for_missing(space, params), **params})


def _defaults_for_missing(space: SearchSpace, params: dict) -> dict:
    """Enqueued entries may leave parameters to the sampler; fill them with each distribution's first value."""
    out = {}
    for name, dist in space.distributions().items():
        out[name] = dist.choices[0] if hasattr(dist, "choices") else dist.low
    return out


def test_the_readme_results_table_is_the_one_scripts_reproduce_wrote() -> None:
    def rows(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("| ") and "toolkit (test)" not in line]

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Results: the stories reproduced", 1)[1].split("\n## ", 1)[0]
    assert rows(section) == rows((ROOT / "docs" / "results.md").read_text(encoding="utf-8"))


def test_the_readme_names_every_shipped_space() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in (ROOT / "search_spaces").glob("*.yaml"):
        assert f"`{path.name}`" in readme, path.name


@pytest.mark.slow
def test_readme_python_example_runs(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    python = [text for name, _, text in blocks("python") if name == "README.md"]
    assert len(python) == 1
    code = python[0]
    assert 'tuning.SearchSpace.from_yaml("search_spaces/mnist_quick.yaml")' in code and "tracking=False" in code
    # Tiny overrides: 600 images, one conv block, one epoch, two trials; everything else as written.
    tiny = ('space = space.with_overrides(["data.train_size=600", "data.test_size=200", "study.enqueue=[]", '
            '"model.depth=1", "train.epochs=1"])\n')
    code = re.sub(r"^(space = .*\n)", lambda m: m[1] + tiny, code, count=1, flags=re.M)
    code = code.replace("n_trials=5", "n_trials=2").replace("search_spaces/", f"{ROOT}/search_spaces/")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    study = namespace["study"]
    assert len(study.trials) == 2
    printed = capsys.readouterr().out
    assert f"{study.best_value} {study.best_params}" in printed
    assert (workdir / "mlruns" / "optuna.db").is_file() and not (workdir / "mlruns" / "mlflow.db").exists()


@pytest.mark.slow
def test_tune_sh_passes_a_space_and_options_to_tuning_run() -> None:
    """``scripts/tune.sh search_spaces/mnist_cnn.yaml --n-trials 10``, as the README shows: the arguments reach
    ``tuning run`` (they once went to the set-up script, which tried to install ``tuning[search_spaces/...]``)."""
    import hashlib
    import subprocess
    import sys

    venv = Path(sys.prefix)
    stamp = venv / ".tuning-installed"
    installed = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or not any(line.startswith(installed + " ") for line in stamp.read_text().splitlines()):
        pytest.skip("this environment was not set up by scripts/test.sh (tune.sh would install into it)")
    command = ["bash", str(ROOT / "scripts" / "tune.sh"), "search_spaces/mnist_cnn.yaml", "--n-trials", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TUNING_VENV": str(venv)})
    assert "Installing" not in done.stderr, done.stderr  # the project is installed: nothing to do
    assert done.returncode == 2, done.stderr  # tuning run itself refused the 0 ...
    assert "--n-trials must be at least 1. Received: 0" in done.stderr  # ... given to the script
