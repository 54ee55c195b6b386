"""Every docstring example in ``tuning/`` runs and prints what it shows (``pytest --doctest-modules tuning``).

Modules that import Keras when imported are in the slow tier; the others take milliseconds.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tuning

#: Modules whose import loads Keras (and TensorFlow): seconds, so their examples run in the slow tier.
HEAVY = {"tuning.training._watch", "tuning.engines._keras_tuner", "tuning.hypermodel"}


def _modules() -> list:
    found = pkgutil.walk_packages(tuning.__path__, prefix="tuning.")
    names = sorted(m.name for m in found if not m.name.endswith("__main__"))  # importing it runs the command
    assert set(names) >= HEAVY, "a module named in HEAVY is gone: update the list"
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (output above)"
