"""Value specs: a fixed value, a searched Optuna distribution, or one spec per layer.

A searched value is an :mod:`optuna.distributions` object (``IntDistribution``, ``FloatDistribution``,
``CategoricalDistribution``), which checks its own bounds; this module adds only what a YAML space needs
on top: the YAML form, membership of an enqueued value, grid values, and sampling through a trial.

Example:
    >>> from optuna.distributions import IntDistribution
    >>> Searched(IntDistribution(1, 3)).to_yaml()
    {'low': 1, 'high': 3}
    >>> PerLayer("layers", (Fixed(5), Fixed(5), Fixed(3))).spec_for(3)
    Fixed(value=3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


@dataclass(frozen=True)
class Fixed:
    """A value that is not searched: not an Optuna parameter, not recorded in ``trial.params``."""

    value: Any

    def to_yaml(self) -> Any:
        """The YAML form: the value itself."""
        return self.value


@dataclass(frozen=True)
class Searched:
    """A searched value, described by an Optuna distribution."""

    distribution: BaseDistribution

    def to_yaml(self) -> Any:
        """The YAML form: a list of choices, or ``{low, high, step?, log?}``."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return list(d.choices)
        assert isinstance(d, IntDistribution | FloatDistribution)
        out: dict[str, Any] = {"low": d.low, "high": d.high}
        if d.step is not None and not (isinstance(d, IntDistribution) and d.step == 1):
            out["step"] = d.step
        if d.log:
            out["log"] = True
        return out

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one the distribution can produce (in the list; in bounds and on the step grid)."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return any(type(value) is type(c) and value == c for c in d.choices) or (
                isinstance(value, int | float) and not isinstance(value, bool)
                and any(isinstance(c, int | float) and not isinstance(c, bool) and value == c for c in d.choices)
            )
        assert isinstance(d, IntDistribution | FloatDistribution)
        if not d.low <= value <= d.high:
            return False
        if d.step is None:
            return True
        k = (value - d.low) / d.step
        return math.isclose(k, round(k), abs_tol=1e-8)

    def grid_values(self) -> list[Any] | None:
        """Every value of a choice or a stepped range; ``None`` for a continuous range."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return list(d.choices)
        if isinstance(d, IntDistribution):
            return list(range(d.low, d.high + 1, d.step))
        assert isinstance(d, FloatDistribution)
        if d.step is None:
            return None
        n = int(round((d.high - d.low) / d.step))
        return [float(f"{d.low + i * d.step:.12g}") for i in range(n + 1)]

    def allowed(self) -> str:
        """What the distribution allows, in words, for error messages."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return "one of " + ", ".join(format_value(c) for c in d.choices)
        assert isinstance(d, IntDistribution | FloatDistribution)
        step = f" on steps of {format_value(d.step)} from {format_value(d.low)}" if d.step not in (None, 1) else ""
        return f"between {format_value(d.low)} and {format_value(d.high)}{step}"

    def kind(self) -> str:
        """A short kind for ``describe()``: ``int``, ``float, log``, ``float, step 0.1``, ``categorical``."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return "categorical"
        base = "int" if isinstance(d, IntDistribution) else "float"
        if d.log:
            return f"{base}, log"
        if d.step is not None and d.step != 1:
            return f"{base}, step {format_value(d.step)}"
        return base

    def values_text(self) -> str:
        """The values for ``describe()``: ``16, 32, 64`` or ``0.0001 … 0.01``."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return ", ".join(format_value(c) for c in d.choices)
        assert isinstance(d, IntDistribution | FloatDistribution)
        return f"{format_value(d.low)} … {format_value(d.high)}"

    def suggest(self, trial: Any, name: str) -> Any:
        """Sample this value through ``trial`` (an ``optuna.Trial`` or ``FixedTrial``) under ``name``."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(name, list(d.choices))
        if isinstance(d, IntDistribution):
            return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        assert isinstance(d, FloatDistribution)
        return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)


Spec = Fixed | Searched


@dataclass(frozen=True)
class PerLayer:
    """One value per layer: ``per_layer`` draws each layer from one spec, ``layers`` gives a spec per layer.

    Layer ``i`` (1-based) is the Optuna parameter ``<key>.<i>`` when its spec is searched.
    """

    mode: str  # "per_layer" | "layers"
    specs: tuple[Spec, ...]

    def spec_for(self, layer: int) -> Spec:
        """The spec of layer ``layer`` (1-based)."""
        return self.specs[0] if self.mode == "per_layer" else self.specs[layer - 1]

    def to_yaml(self) -> Any:
        """The YAML form: ``{per_layer: <spec>}`` or ``{layers: [<spec>, ...]}``."""
        if self.mode == "per_layer":
            return {"per_layer": self.specs[0].to_yaml()}
        return {"layers": [s.to_yaml() for s in self.specs]}


AnySpec = Fixed | Searched | PerLayer


def format_value(x: Any) -> str:
    """A value as a space shows it: ``true``/``false``, ``0.0001`` as ``0.0001``, ``1e-05`` as ``1e-05``.

    Example:
        >>> format_value(True), format_value(0.30000000000000004), format_value(64)
        ('true', '0.3', '64')
    """
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)
