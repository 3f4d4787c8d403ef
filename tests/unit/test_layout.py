"""The package layout is the architecture: the product never depends on the demo or on local tooling."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ["flashfeed/core", "flashfeed/serving", "flashfeed/ingest", "flashfeed/quality",
           "spark_jobs", "plugins", "dags"]
TOOLING = ("flashfeed.demo", "flashfeed.local")


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("folder", PRODUCT)
def test_product_code_imports_neither_demo_nor_local_tooling(folder):
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in imported_modules(path) if m.startswith(TOOLING))
        for path in sorted((REPO / folder).rglob("*.py"))
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_the_checker_sees_a_tooling_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from flashfeed.local import env\n")
    assert "flashfeed.local.env" in imported_modules(module)
