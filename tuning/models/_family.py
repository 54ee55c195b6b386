"""What a model family is: its keys, how a trial's values become its configuration, and how it is built.

A family is one module under ``tuning/models/`` holding a :class:`Family` subclass and one line in
``tuning/models/__init__.py`` registering it. The parser, ``describe``/``validate`` and ``docs/space.md``'s key
tables read :attr:`Family.keys`; sampling calls :meth:`Family.resolve`; training calls :meth:`Family.build`.
``docs/families.md`` walks through adding one.

Example:
    >>> from tuning.models import get
    >>> get("mlp").keys["depth"].default
    1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from tuning.schema import Key

if TYPE_CHECKING:
    import keras

    from tuning.config import Augmentation


class Draw(Protocol):
    """How a family reads one trial's values: ``draw("width", layer=2)`` samples or returns the fixed value.

    Names are the family's own keys, without ``model.``; a per-layer key needs ``layer`` (1-based).
    ``trial`` is the Optuna trial (or ``FixedTrial``) itself, for families that sample define-by-run.
    """

    trial: Any

    def __call__(self, key: str, layer: int | None = None) -> Any: ...

    def layers(self, key: str, depth: int) -> tuple[Any, ...]:
        """One value per layer ``1..depth``: drawn per layer for a per-layer key, else one shared value."""
        ...


class Family:
    """A model family. Subclasses set :attr:`name`, :attr:`keys` and :attr:`summary` and implement the methods.

    ``keys`` maps each ``model.<key>`` the family accepts (``family`` itself excepted) to its :class:`Key`, in
    sampling order. A family with per-layer keys must have an integer ``depth`` key: ``{per_layer: ...}``
    expands up to ``model.depth``.
    """

    name: ClassVar[str]
    keys: ClassVar[Mapping[str, Key]]
    summary: ClassVar[str] = ""
    #: True when the family's parameters are known only once it builds (a KerasTuner hypermodel): they are
    #: drawn while building, and ``study.enqueue`` entries may name them freely.
    define_by_run: ClassVar[bool] = False

    def resolve(self, draw: Draw) -> Any:
        """The trial's configuration of this family, from its values (``draw``); no Keras import here."""
        raise NotImplementedError

    def check_buildable(self, config: Any, input_shape: tuple[int, ...]) -> None:
        """Raise :class:`~tuning.errors.ConfigurationError` if ``config`` cannot be built for ``input_shape``."""

    def count_params(self, config: Any, input_shape: tuple[int, ...], num_classes: int) -> int | None:
        """The model's parameter count, computed without building it (``None`` when the family cannot tell).

        :func:`tuning.models.build_model` refuses a configuration above :data:`tuning.models.MAX_PARAMS`
        before Keras allocates anything, so an absurd width or depth fails its trial instead of the process.
        """
        return None

    def build(
        self, config: Any, input_shape: tuple[int, ...], num_classes: int, augmentation: Augmentation | None = None
    ) -> keras.Model:
        """The (uncompiled) Keras model of ``config``; call :meth:`check_buildable` first."""
        raise NotImplementedError

    @property
    def per_layer_keys(self) -> tuple[str, ...]:
        """The keys that may hold one value per layer."""
        return tuple(name for name, key in self.keys.items() if key.per_layer)

    def key_table(self) -> str:
        """The family's keys as the markdown table ``docs/space.md`` shows (a test keeps the two equal).

        Example:
            >>> from tuning.models import get
            >>> print(get("hypermodel").key_table())  # doctest: +NORMALIZE_WHITESPACE
            | key | searchable | per layer | default | allowed |
            |---|---|---|---|---|
            | `hypermodel` | no |  | null | `file.py:attribute` (next to the space file) or `package.module:attribute` |
        """
        rows = ["| key | searchable | per layer | default | allowed |", "|---|---|---|---|---|"]
        for name, key in self.keys.items():
            default = "(required)" if key.required else _markdown_value(key.default)
            allowed = ", ".join(f"`{c}`" for c in key.choices) if key.choices else key.limits()
            if key.kind == "str" and not key.choices:
                allowed = ""
            allowed = "; ".join(part for part in (allowed, key.doc) if part)
            rows.append(f"| `{name}` | {'yes' if key.searchable else 'no'} | {'yes' if key.per_layer else ''} "
                        f"| {default} | {allowed} |")
        return "\n".join(rows)

    def __repr__(self) -> str:
        return f"<model family {self.name!r}>"


def _markdown_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"
