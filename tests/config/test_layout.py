"""The layout the docs describe (docs/architecture.md, "The layers"), checked where
import-linter cannot: the tests' own tree."""

from __future__ import annotations

import ast

from tests.support.processes import ROOT


def _imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_test_module_imports_another_test_module_or_a_conftest():
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for module in _imported_modules(path):
            if module.startswith("tests.") and not module.startswith(("tests.support", "tests.settings")):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == [], "shared test helpers belong in tests/support/:\n" + "\n".join(offenders)


def test_the_shared_helpers_import_no_test_module():
    for path in sorted((ROOT / "tests" / "support").rglob("*.py")):
        imported = {m for m in _imported_modules(path) if m.startswith("tests.")}
        assert imported <= {m for m in imported if m.startswith("tests.support")}, path
