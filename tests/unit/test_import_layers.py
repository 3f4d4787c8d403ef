"""The modules of each package form layers a reader can follow top-down: no import cycles.

Every import counts, at module level and inside functions alike: an import deferred into a
function (for parse-time speed of the DAGs, or to reach pyspark only in a Spark job) still
means the module needs the other one, and a cycle through it makes both modules one unit to
read. Only imports between the project's own modules (flashfeed, spark_jobs and the Airflow
package flashfeed_airflow) are edges; third-party imports are not.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"flashfeed": REPO / "flashfeed", "spark_jobs": REPO / "spark_jobs",
            "flashfeed_airflow": REPO / "plugins" / "flashfeed_airflow"}


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    """{dotted module name: file} of every module of the packages (a package is its __init__)."""
    modules = {}
    for package, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement imports (`from a import b`: a.b, a module or a name)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    prefix = node.module
    if node.level:   # relative: from its own package, or the package `level - 1` steps above
        parts = module.split(".")
        base = parts[:len(parts) - node.level + (1 if is_package else 0)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    return [f"{prefix}.{alias.name}" for alias in node.names]


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """{module: {imported project module: line of the first import}}; `from a.b import c` is an
    edge to a.b.c when that is a module, else to a.b (the module that defines c)."""
    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = _imported_names(node, module, path.name == "__init__.py")
                for target in filter(None, (known(name) for name in names)):
                    if target != module:
                        edges.setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        for target in graph.get(module, {}):
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            component = []
            while component[-1:] != [module]:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def describe(component: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    return "; ".join(f"{modules[a].relative_to(REPO)}:{line} imports {b}"
                     for a in component for b, line in sorted(graph[a].items()) if b in component)


def test_no_import_cycles_in_flashfeed_spark_jobs_and_the_airflow_package():
    modules = module_files(PACKAGES)
    graph = import_graph(modules)
    assert {"flashfeed.core.config", "spark_jobs.common", "flashfeed_airflow.alerts"} <= set(graph)
    assert [describe(component, graph, modules) for component in cycles(graph)] == []


def test_the_checker_sees_a_cycle_closed_by_an_import_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from pkg.high import g\n    return g\n")
    (package / "high.py").write_text("from pkg import low\n\ndef g():\n    return low\n")
    (package / "other.py").write_text("from . import low\n")
    graph = import_graph(module_files({"pkg": package}))
    assert graph["pkg.low"] == {"pkg.high": 2} and graph["pkg.other"] == {"pkg.low": 1}
    assert cycles(graph) == [["pkg.high", "pkg.low"]]
