"""The package's structure shows its design: its import graph has no cycle, and private names stay private.

Read from the source (``ast``), so every import counts: module-level, inside functions (lazy) and under
``if TYPE_CHECKING`` (type-only). Importing ``a.b.c`` also imports the packages ``a.b`` and ``a``: a module inside
a package is not counted as importing its own parents (Python loads a package's ``__init__`` first by design).

- no cycle: the layers run one way, e.g. ``cli`` → ``study`` → ``engines`` → ``trial`` → ``training`` → ``models``
  → ``schema``;
- no private name (``_name``) imported from another module;
- a private module (``tuning.study._gate``) imported only inside the package that holds it (``tuning.study``);
  ``tuning._signals`` and the other top-level private modules serve the whole package.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tuning"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """Every ``(module, imported name)`` ``name`` imports from the package, at any depth of its code."""
    found = []
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            found += [(base, alias.name) for alias in node.names]
    return [(base, imported) for base, imported in found if base == "tuning" or base.startswith("tuning.")]


def _target(base: str, imported: str | None) -> str:
    """The module an import loads: ``from tuning import storage`` loads ``tuning.storage``."""
    if imported and f"{base}.{imported}" in MODULES:
        return f"{base}.{imported}"
    while base not in MODULES and "." in base:
        base = base.rsplit(".", 1)[0]
    return base


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for base, imported in _imports(name, path):
            target = _target(base, imported)
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the target and the packages it lives in
                loaded = ".".join(parts[:i])
                if loaded != name and not name.startswith(loaded + "."):
                    edges[name].add(loaded)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(set(edges) | {n for targets in edges.values() for n in targets}):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle_counting_lazy_and_type_only_imports() -> None:
    edges = _graph()
    assert edges["tuning.study._run"] >= {"tuning.engines", "tuning.trial"}  # the reader sees real imports
    assert "tuning.training" in edges["tuning.trial"]
    assert _cycles(edges) == []


def _private_imports(name: str, imports: list[tuple[str, str | None]]) -> list[str]:
    """What module ``name`` imports against the rules: a private name, or a private module of another package."""
    wrong = []
    for base, imported in imports:
        target = _target(base, imported)
        if imported and imported.startswith("_") and not imported.startswith("__") and target == base:
            wrong.append(f"{name} imports the private name {imported} from {base}")
        parts = target.split(".")
        for i, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])
                if name != owner and not name.startswith(owner + "."):
                    wrong.append(f"{name} imports the private module {target} from outside {owner}")
                break
    return wrong


def test_no_private_name_or_private_module_is_imported_from_outside() -> None:
    wrong = [line for name, path in MODULES.items() for line in _private_imports(name, _imports(name, path))]
    assert wrong == []


def test_the_checks_find_what_they_look_for() -> None:
    """The checks above could pass by finding nothing at all: each one finds a planted mistake."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _private_imports("tuning.report", [("tuning.study", "_gate")]) == [
        "tuning.report imports the private module tuning.study._gate from outside tuning.study"]
    assert _private_imports("tuning.report._load", [("tuning.records", "_alive")]) == [
        "tuning.report._load imports the private name _alive from tuning.records"]
    assert _private_imports("tuning.study._run", [("tuning.study._gate", "TotalGate"), ("tuning._signals", None)]) == []
