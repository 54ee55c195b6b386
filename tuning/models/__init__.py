"""Model families, one module each, and the registry the search space and training look them up in.

Built in: ``mlp`` (:mod:`tuning.models.mlp`), ``cnn`` (:mod:`tuning.models.cnn`) and ``hypermodel``
(:mod:`tuning.models.hypermodel`: a KerasTuner ``build(hp)``). Adding a family is one new module with a
:class:`Family` subclass plus one :func:`register` line below; ``docs/families.md`` shows the recipe.

Example:
    >>> from tuning.models import get, names
    >>> names()
    ('cnn', 'mlp', 'hypermodel')
    >>> sorted(get("cnn").per_layer_keys)
    ['kernel_size', 'width']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tuning.errors import ConfigurationError
from tuning.models._family import Draw, Family

if TYPE_CHECKING:
    import keras

    from tuning.config import Augmentation

__all__ = ["BUILT_IN", "MAX_PARAMS", "Draw", "Family", "build_model", "check_buildable", "get", "names", "register"]

_FAMILIES: dict[str, Family] = {}

#: The largest model a trial may build: 100 million parameters are 0.4 GB of float32 weights, and about 1.6 GB
#: with their gradients and Adam's two moments. A larger configuration fails its trial before Keras allocates it.
MAX_PARAMS = 100_000_000


def register(family: Family) -> Family:
    """Make ``family`` available as ``model.family: <family.name>``; returns it.

    Example:
        >>> register(get("mlp")) is get("mlp")
        True
    """
    keys = family.keys
    if "family" in keys:
        raise ValueError(f"family {family.name!r} must not declare a `family` key")
    if family.per_layer_keys and ("depth" not in keys or keys["depth"].kind != "int"):
        raise ValueError(f"family {family.name!r} has per-layer keys, so it needs an integer `depth` key")
    _FAMILIES[family.name] = family
    return family


def names() -> tuple[str, ...]:
    """The registered family names, in registration order."""
    return tuple(_FAMILIES)


def get(name: str) -> Family:
    """The family registered as ``name``; :class:`KeyError` if there is none."""
    return _FAMILIES[name]


def check_buildable(config: Any, input_shape: tuple[int, ...]) -> None:
    """Raise :class:`ConfigurationError` if ``config`` cannot be built for ``input_shape``, before any training."""
    _family_of(config).check_buildable(config, input_shape)


def _check_size(family: Family, config: Any, input_shape: tuple[int, ...], num_classes: int) -> None:
    count = family.count_params(config, input_shape, num_classes)
    if count is not None and count > MAX_PARAMS:
        raise ConfigurationError(
            f"the model would have {count:,} parameters, more than the {MAX_PARAMS:,} a trial may build "
            f"(about {count * 16 / 1e9:.1f} GB with gradients and optimizer state); lower model.depth or the widths"
        )


def build_model(
    config: Any, input_shape: tuple[int, ...], num_classes: int, augmentation: Augmentation | None = None
) -> keras.Model:
    """Build (not compile) the model of ``config`` (a family's resolved configuration, e.g. ``ModelConfig``)."""
    family = _family_of(config)
    family.check_buildable(config, input_shape)
    _check_size(family, config, input_shape, num_classes)
    return family.build(config, input_shape, num_classes, augmentation)


def _family_of(config: Any) -> Family:
    name = getattr(config, "family", None)
    if name not in _FAMILIES:
        raise ConfigurationError(f"unknown model family {name!r}; registered: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


#: The built-in families: module ``tuning/models/<name>.py`` defines ``FAMILY``. Adding one is a new module and
#: its name here; the order is the order of the docs and of error messages.
BUILT_IN = ("cnn", "mlp", "hypermodel")

for _module in BUILT_IN:
    register(importlib.import_module(f"tuning.models.{_module}").FAMILY)
