"""No import cycles in majordomo_gateway: module-level imports, TYPE_CHECKING blocks and imports
inside functions left out (neither runs when the importing module loads)."""

from __future__ import annotations

import ast
from pathlib import Path

import majordomo_gateway
import pytest

PACKAGE = "majordomo_gateway"
ROOT = Path(majordomo_gateway.__file__).parent


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                pending.extend(node.body)
            pending.extend(node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.With):
            pending.extend(node.body)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        for node in _top_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # "from pkg import mod" imports the submodule when there is one, else a name of pkg.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                           for alias in node.names]
            for target in targets:
                # Importing a.b.c runs a/__init__ and a/b/__init__ too; the nearest known module counts.
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def _in_storage_or_auth(cycle: list[str]) -> bool:
    return any(m.startswith((f"{PACKAGE}.storage", f"{PACKAGE}.auth")) for m in cycle)


def test_the_graph_sees_the_package() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.storage.sqlite" in graph
    assert f"{PACKAGE}.storage.records" in graph[f"{PACKAGE}.storage.sqlite"]
    assert f"{PACKAGE}.storage.records" in graph[f"{PACKAGE}.auth.keys"]


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_in_storage_or_auth() -> None:
    cycles = [c for c in find_cycles(import_graph()) if _in_storage_or_auth(c)]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycles_anywhere_in_the_package() -> None:
    cycles = find_cycles(import_graph())
    if cycles and not any(_in_storage_or_auth(c) for c in cycles):
        # Outside storage and auth these modules are being restructured by others; shown, not failed.
        pytest.xfail("import cycles outside storage/auth: " + "; ".join(" <-> ".join(c) for c in cycles))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def package_graph() -> dict[str, set[str]]:
    """The same graph between the package's first-level parts (storage, auth, proxy, ...)."""
    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        graph.setdefault(part(module), set()).update(part(t) for t in targets if part(t) != part(module))
    for targets in list(graph.values()):
        for target in targets:
            graph.setdefault(target, set())
    return graph


def test_storage_and_auth_do_not_import_each_other() -> None:
    cycles = [c for c in find_cycles(package_graph()) if _in_storage_or_auth(c)]
    assert not cycles, "cycles between parts of the package: " + "; ".join(" <-> ".join(c) for c in cycles)
    assert f"{PACKAGE}.auth" not in package_graph()[f"{PACKAGE}.storage"]
