"""Load a search-space file with PyYAML's safe loader, turning every failure into a :class:`SpaceError`.

Duplicate keys are errors (plain PyYAML keeps the last one silently); syntax errors name the line and
column (1-based). Input is bounded: a file larger than :data:`MAX_FILE_BYTES`, or a document that holds more
than :data:`MAX_NODES` values once its aliases are expanded (a "billion laughs" file), is refused before it is
built, so a hostile or mistaken file costs milliseconds and no memory.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.yaml"
    >>> _ = p.write_text("model: {family: mlp}\\n")
    >>> load(p)
    {'model': {'family': 'mlp'}}
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from tuning.errors import SpaceError

#: Largest search-space file read, in bytes; real spaces are a few kilobytes.
MAX_FILE_BYTES = 1_000_000
#: Most values (scalars, lists, mappings) a document may hold, counting each alias as the values it repeats.
MAX_NODES = 10_000


class _TooLarge(Exception):
    """The document expands to more than :data:`MAX_NODES` values."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a mapping that repeats a key and a document that expands past ``MAX_NODES``.

    Every composed node is counted with everything below it; an alias adds the size of the node it names,
    so nine levels of ten aliases count as a billion values and stop at once instead of being expanded.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            node = self.anchors.get(self.peek_event().anchor)
            self._add(self._sizes.get(id(node), 1))
            return super().compose_node(parent, index)
        before = self._nodes
        node = super().compose_node(parent, index)
        self._add(1)
        self._sizes[id(node)] = self._nodes - before
        return node

    def _add(self, n: int) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise _TooLarge()


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


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
    document larger than :data:`MAX_FILE_BYTES` characters or :data:`MAX_NODES` values (aliases expanded)."""
    if len(text) > MAX_FILE_BYTES:
        raise SpaceError("", f"the text is longer than {MAX_FILE_BYTES:,} characters, far more than a search space",
                         received=f"{len(text):,} characters", source=source,
                         fix="check that this is the search-space file; a space is a few kilobytes")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a subclass of SafeLoader
    except _TooLarge:
        raise SpaceError("", f"the document holds more than {MAX_NODES:,} values (each alias *name counts as "
                         "the values it repeats), far more than a search space", received=f"over {MAX_NODES:,} values",
                         source=source, fix="shorten the lists or use fewer aliases; a search space needs a few "
                         "hundred values at most") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = e.problem or e.context or "invalid YAML"
        if problem.startswith("duplicate key"):
            raise SpaceError("", f"{problem} at {where}", source=source,
                             fix="keep one of them (YAML would silently use the last)") from None
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
