"""The test tree's layout: test modules share code through ``tests.support`` and conftest fixtures only.

A test module importing another (``from tests.gateway.test_proxy import post``) ties two suites
together and hides a shared helper where nobody looks for it; shared code lives in ``tests/support/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SUPPORT = TESTS / "support"


def _test_modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if ".venv" not in p.parts and SUPPORT not in p.parents)


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted name) of every module, and every name from a module, that the code imports."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}".replace("..", ".")) for alias in node.names)
    return found


def _test_module_imports(source: str, stems: set[str]) -> list[tuple[int, str]]:
    """Imports naming a test module: ``tests.gateway.test_proxy``, ``from tests.gateway import test_proxy``,
    relative ones, and bare ``test_x`` (pytest puts package-less test directories on sys.path)."""
    first: dict[int, str] = {}
    for lineno, name in _imported(ast.parse(source)):
        if any(part in stems for part in name.split(".")):
            first.setdefault(lineno, name)
    return sorted(first.items())


def test_no_test_module_imports_another() -> None:
    modules = _test_modules()
    stems = {path.stem for path in modules}
    offenders = [f"{path.relative_to(TESTS.parent)}:{lineno} imports {name}"
                 for path in modules for lineno, name in _test_module_imports(path.read_text(), stems)]
    assert not offenders, "test modules import other test modules; move the helper to tests/support/:\n" + \
        "\n".join(offenders)


def test_the_support_package_holds_no_tests() -> None:
    assert not list(SUPPORT.rglob("test_*.py")), "tests/support/ is helpers only; tests go beside it"


def test_the_check_catches_each_spelling() -> None:
    stems = {path.stem for path in _test_modules()}
    assert {"test_proxy", "test_storage", "test_frameworks_core"} <= stems
    source = ("from tests.gateway.test_proxy import post\nimport tests.gateway.test_storage\n"
              "from tests.gateway import test_cli_keys\nfrom .test_proxy import MESSAGES\n"
              "import test_frameworks_core\nfrom tests.support.client import post\nimport pytest\n")
    assert [lineno for lineno, _ in _test_module_imports(source, stems)] == [1, 2, 3, 4, 5]
