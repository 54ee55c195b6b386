"""The ``hypermodel`` family: a KerasTuner hypermodel (a ``build(hp)`` function or a ``keras_tuner.HyperModel``)
builds the model, and every ``hp`` value it asks for is drawn by the Optuna trial (define-by-run).

The family has one key, ``hypermodel``: ``file.py:attribute`` (a file next to the space file) or
``package.module:attribute``. From Python, ``tuning.run(space, hypermodel=obj)`` passes the object itself and
the key may be left out. Loading, the ``hp`` bridge and the declared hyperparameters are in
:mod:`tuning.hypermodel`.

Example:
    >>> FAMILY.resolve(lambda key, layer=None: "my_models.py:build_model")
    HyperModelConfig(reference='my_models.py:build_model', family='hypermodel')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuning.models._family import Draw, Family
from tuning.schema import Key


@dataclass(frozen=True)
class HyperModelConfig:
    """A hypermodel trial's model: which hypermodel builds it (``None`` when passed from Python)."""

    reference: str | None
    family: str = "hypermodel"


class HyperModelFamily(Family):
    name = "hypermodel"
    summary = "your KerasTuner build(hp) function or HyperModel; its hp values are searched"
    define_by_run = True
    keys = {
        "hypermodel": Key("str", None, searchable=False, nullable=True, noun="a hypermodel",
                          doc="`file.py:attribute` (next to the space file) or `package.module:attribute`"),
    }

    def resolve(self, draw: Draw) -> HyperModelConfig:
        return HyperModelConfig(reference=draw("hypermodel"))

    def build(self, config: Any, input_shape: tuple[int, ...], num_classes: int, augmentation: Any = None) -> Any:
        from tuning.errors import ConfigurationError

        raise ConfigurationError(
            "a hypermodel builds its own model: tuning.run loads it (model.hypermodel or hypermodel=) and calls "
            "its build(hp)"
        )


FAMILY = HyperModelFamily()
