"""The README tells the truth about the project's files: every shipped space validates and is named, the results
table is the one ``scripts/reproduce.py`` wrote, ``scripts/tune.sh`` passes its arguments on.

Every code block of the README and docs/*.md (YAML examples, the Python example, shell commands) is run or
checked by tests/test_docs_code.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ROOT

from tuning.space import SearchSpace


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
