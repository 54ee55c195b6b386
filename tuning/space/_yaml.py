"""Load a search-space file with PyYAML's safe loader, turning every failure into a :class:`SpaceError`.

Duplicate keys are errors (plain PyYAML keeps the last one silently), merge keys (``<<: *defaults``) work as YAML
defines them; syntax errors name the line and column (1-based). Input is bounded: a file larger than
:data:`MAX_FILE_BYTES`, a document that holds more than :data:`MAX_NODES` values once its aliases are expanded
(a "billion laughs" file), or one nested deeper than :data:`MAX_DEPTH` levels is refused before it is built, so
a hostile or mistaken file costs milliseconds and no memory. :func:`check_limits` holds a dict built in Python
(``SearchSpace.from_dict``) to the same two limits.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.yaml"
    >>> _ = p.write_text("model: {family: mlp}\\n")
    >>> load(p)
    {'model': {'family': 'mlp'}}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml

from tuning.errors import SpaceError

#: Largest search-space file read, in bytes; real spaces are a few kilobytes.
MAX_FILE_BYTES = 1_000_000
#: Most values (scalars, lists, mappings) a document may hold, counting each alias as the values it repeats.
MAX_NODES = 10_000
#: Deepest nesting of lists and mappings, the top-level mapping being level 1 and counting the values at the
#: bottom: a search space reaches 6 (``study.enqueue[0].model.width[1]``); Python's recursion limit, around 1,000.
MAX_DEPTH = 20

_MERGE_TAG = "tag:yaml.org,2002:merge"
_TOO_LARGE_FIX = "shorten the lists or use fewer aliases; a search space needs a few hundred values at most"
_TOO_DEEP = f"nests lists and mappings deeper than {MAX_DEPTH} levels; a search space needs 6 at most"
_TOO_DEEP_FIX = "check the brackets and the indentation: each `{`, `[` or indented block opens a level"


class _TooLarge(Exception):
    """The document expands to more than :data:`MAX_NODES` values."""


class _TooDeep(Exception):
    """The document nests deeper than :data:`MAX_DEPTH` levels at ``mark``."""

    def __init__(self, mark: Any) -> None:
        super().__init__()
        self.mark = mark


class _Duplicate(Exception):
    """A mapping repeats a key: ``node`` repeats ``first`` (both are key nodes)."""

    def __init__(self, key: Any, node: yaml.Node, first: yaml.Node) -> None:
        super().__init__()
        self.key, self.node, self.first = key, node, first


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing a mapping that repeats a key and a document past ``MAX_NODES`` or ``MAX_DEPTH``.

    Every composed node is counted with everything below it, and its height (the levels below it, itself
    included) is kept: an alias adds the size and the height of the node it names, so nine levels of ten aliases
    count as a billion values, and an alias nested under its own anchor's copies counts as deep as it expands,
    without being expanded. Keys are compared when their mapping is composed, before any merge key (``<<``)
    copies keys in.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._sizes: dict[int, int] = {}
        self._depth = 0  # the level of the node being composed (the top-level mapping is 1)
        self._deepest = 0  # the deepest level reached so far inside the node being composed, aliases expanded
        self._heights: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            self._add(self._sizes.get(id(node), 1))
            self._reach(self._depth + self._heights.get(id(node), 1), event.start_mark)
            return super().compose_node(parent, index)
        before, outer = self._nodes, self._deepest
        self._depth += 1
        self._deepest = self._depth
        self._reach(self._depth, self.peek_event().start_mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._add(1)
        self._sizes[id(node)] = self._nodes - before
        self._heights[id(node)] = self._deepest - self._depth
        self._deepest = max(outer, self._deepest)
        if isinstance(node, yaml.MappingNode):
            self._check_keys(node)
        return node

    def _add(self, n: int) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise _TooLarge()

    def _reach(self, level: int, mark: Any) -> None:
        self._deepest = max(self._deepest, level)
        if level > MAX_DEPTH:
            raise _TooDeep(mark)

    def _check_keys(self, node: yaml.MappingNode) -> None:
        """Refuse a key written twice in ``node``; the keys a merge key brings in may be overridden (YAML 1.1)."""
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue  # a complex key is refused by the constructor ("found unhashable key")
            key = self.construct_object(key_node)
            if key in seen:
                raise _Duplicate(key, key_node, seen[key])
            seen[key] = key_node


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"


def _duplicate_error(dup: _Duplicate, path: str, source: str | None) -> SpaceError:
    where, first = _where(dup.node.start_mark), _where(dup.first.start_mark)
    if isinstance(dup.key, bool):  # `yes`, `on`, `y`, `true` ... are one key for YAML 1.1
        written = [dup.first.value, dup.node.value]
        return SpaceError(
            path, f"duplicate key {dup.node.value!r} at {where}: YAML reads an unquoted yes, no, on, off, y, n, "
            f"true or false as a boolean, so it is the same key as {dup.first.value!r} at {first} (both {dup.key})",
            received=written, source=source, fix="quote a key meant as a word ('on': ...), or keep one of them",
        )
    return SpaceError(path, f"duplicate key {dup.key!r} at {where} (first at {first})", source=source,
                      fix="keep one of them (YAML would silently use the last)")


def _parse(text: str, path: str, source: str | None, what: str = "the document") -> Any:
    """``text`` as YAML, within the limits; every failure but a syntax error is a :class:`SpaceError` at ``path``.

    Raises:
        yaml.YAMLError: a syntax error (each caller words it for its own input).
    """
    if len(text) > MAX_FILE_BYTES:
        raise SpaceError(path, f"{what} is longer than {MAX_FILE_BYTES:,} characters, far more than a search "
                         "space", received=f"{len(text):,} characters", source=source,
                         fix="check that this is the search-space file; a space is a few kilobytes")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a subclass of SafeLoader
    except _TooLarge:
        raise SpaceError(path, f"{what} holds more than {MAX_NODES:,} values (each alias *name counts as the "
                         "values it repeats), far more than a search space", received=f"over {MAX_NODES:,} values",
                         source=source, fix=_TOO_LARGE_FIX) from None
    except _TooDeep as e:
        raise SpaceError(path, f"{what} {_TOO_DEEP} (level {MAX_DEPTH + 1} at {_where(e.mark)})",
                         source=source, fix=_TOO_DEEP_FIX) from None
    except _Duplicate as e:
        raise _duplicate_error(e, path, source) from None


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``path`` as YAML and return its top-level mapping; raise :class:`SpaceError` naming the file."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SpaceError("", "search-space file not found", received=source,
                         fix="check the path (relative paths start from the current directory)") from None
    except IsADirectoryError:
        raise SpaceError("", "expected a YAML file, found a directory", received=source,
                         fix="name the .yaml file inside it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError("", "cannot read the search-space file", received=f"{source} ({e})",
                         fix="check the file's permissions and that it is UTF-8 text") from None
    if len(text) > MAX_FILE_BYTES:
        raise SpaceError("", f"the file is larger than {MAX_FILE_BYTES:,} characters, far more than a search space",
                         received=f"{source} ({os.path.getsize(source):,} bytes)",
                         fix="check that this is the search-space file; a space is a few kilobytes") from None
    return loads(text, source=source)


def loads(text: str, *, source: str | None = None) -> dict[str, Any]:
    """Parse YAML text holding a search space; raise :class:`SpaceError` for bad YAML, a non-mapping, or a
    document larger than :data:`MAX_FILE_BYTES` characters or :data:`MAX_NODES` values (aliases expanded), or
    nested deeper than :data:`MAX_DEPTH` levels.

    Example:
        >>> loads("base: &b {epochs: 2}\\ntrain: {<<: *b, batch_size: 32}")["train"]
        {'epochs': 2, 'batch_size': 32}
    """
    try:
        data = _parse(text, "", source)
    except yaml.MarkedYAMLError as e:
        where = _where(e.problem_mark or e.context_mark)
        problem = e.problem or e.context or "invalid YAML"
        raise SpaceError("", f"YAML syntax error at {where}: {problem}", source=source,
                         fix="fix the YAML at that position (indentation, colons, brackets, quotes)") from None
    except yaml.YAMLError as e:
        raise SpaceError("", f"not valid YAML: {e}", source=source, fix="check the file is YAML") from None
    if data is None:
        raise SpaceError("", "the file is empty", source=source,
                         fix="write at least `model: {family: cnn}` and `train: {epochs: 2}`")
    if not isinstance(data, dict):
        raise SpaceError("", "the top level must be a mapping of sections (data, model, train, objective, study)",
                         received=type(data).__name__, source=source,
                         fix="start the file with `model:` and `train:` sections")
    return data


def load_value(text: str, path: str) -> Any:
    """One value written as YAML (``--set path=text``), with the limits and checks of a whole file.

    Example:
        >>> load_value("{low: 1, high: 3}", "model.depth")
        {'low': 1, 'high': 3}

    Raises:
        SpaceError: at ``path``: not YAML, a repeated key, or past a limit.
    """
    try:
        return _parse(text, path, None, "the value")
    except yaml.YAMLError as e:
        raise SpaceError(path, f"the value is not valid YAML ({e.__class__.__name__})", received=text,
                         fix="quote it, or write e.g. [16, 32] or {low: 1, high: 3}") from None


def check_limits(data: Any, *, source: str | None = None) -> None:
    """Hold a space built in Python to the limits of a YAML file: at most :data:`MAX_NODES` values (a list or
    dict met twice counts twice) and :data:`MAX_DEPTH` levels; a dict that contains itself is refused too.

    The walk keeps its own stack, so neither a deep nor a self-containing dict can exhaust Python's recursion.

    Example:
        >>> check_limits({"model": {"family": "mlp"}, "train": {"epochs": 1}})
        >>> deep: dict = {}
        >>> deep["again"] = deep
        >>> check_limits({"model": deep})
        Traceback (most recent call last):
        ...
        tuning.errors.SpaceError: model.again.again.again…: the space nests lists and mappings deeper than 20 levels...

    Raises:
        SpaceError: naming where the space became too deep, or how many values it holds.
    """
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(data, 1, ())]
    count = 0
    while stack:
        value, level, where = stack.pop()
        count += 1
        if level > MAX_DEPTH:
            raise SpaceError(_path(where), f"the space {_TOO_DEEP}", source=source,
                             fix="nest 6 levels at most (a dict that contains itself is infinitely deep)")
        if not isinstance(value, Mapping | list | tuple):
            continue
        if count + len(stack) + len(value) > MAX_NODES:  # counted before a list of a billion items is walked
            raise SpaceError("", f"the space holds more than {MAX_NODES:,} values (a list or dict met twice counts "
                             "twice), far more than a search space", received=f"over {MAX_NODES:,} values",
                             source=source, fix=_TOO_LARGE_FIX)
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        stack += [(v, level + 1, (*where, k)) for k, v in items]


def _path(where: tuple[Any, ...]) -> str:
    """The key path of the first few levels of ``where``: ``study.enqueue[0].x…``."""
    text = ""
    for part in where[:4]:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text + ("…" if len(where) > 4 else "")
