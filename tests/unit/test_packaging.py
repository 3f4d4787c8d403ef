"""pyproject.toml declares what the code needs, as ranges, and requirements.txt pins a version of
each inside its range: `pip install flashfeed -c requirements.txt` installs the tested set.

The wheel itself, installed without the checkout, is tested in tests/test_installed_package.py.
"""
from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
OWN_PACKAGES = {"flashfeed", "spark_jobs", "flashfeed_airflow"}
# Which declared dependencies may provide the imports of which folder.
PRODUCT = ["flashfeed/core", "flashfeed/serving", "flashfeed/ingest", "flashfeed/quality", "flashfeed/cli.py",
           "spark_jobs", "plugins", "dags"]
LOCAL_TOOLING = ["flashfeed/local", "flashfeed/demo"]
TESTS = ["tests"]


def pinned_versions() -> dict[str, str]:
    """{canonical name: version} of requirements.txt's `name==version` lines."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, separator, version = requirement.partition("==")
            assert separator, f"requirements.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version.strip()
    return pins


def declared(*groups: str) -> list[Requirement]:
    """The requirements of the runtime (`dependencies`) and of the named extras, without the
    project's references to its own extras (`flashfeed[local]`)."""
    lines = list(PROJECT["dependencies"]) + [line for group in groups
                                             for line in PROJECT["optional-dependencies"][group]]
    return [requirement for requirement in map(Requirement, lines)
            if canonicalize_name(requirement.name) != canonicalize_name(PROJECT["name"])]


def test_every_declared_dependency_is_pinned_inside_its_range():
    pins = pinned_versions()
    problems = []
    for requirement in declared(*PROJECT["optional-dependencies"]):
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement} is not pinned in requirements.txt")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement}: requirements.txt pins {pinned}, outside the range")
    assert problems == []


def test_declared_ranges_are_ranges_not_pins():
    for requirement in declared(*PROJECT["optional-dependencies"]):
        assert requirement.specifier, f"{requirement.name}: no lower bound"
        assert all(spec.operator in (">=", "<") for spec in requirement.specifier), \
            f"{requirement}: a range (>=, <), the pin is requirements.txt's"


def third_party_imports(folder: Path) -> dict[str, str]:
    """{top-level module: first file:line importing it} of the .py files under `folder` (or the
    file), module-level and function-level imports alike; the standard library and the
    project's own packages left out, as are the modules next to the importing file."""
    found = {}
    for path in sorted([folder] if folder.is_file() else folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for top in {name.split(".")[0] for name in names}:
                if (top in sys.stdlib_module_names or top in OWN_PACKAGES or top == "tests"
                        or path.with_name(f"{top}.py").exists()):
                    continue
                found.setdefault(top, f"{path.relative_to(REPO)}:{node.lineno}")
    return found


@pytest.mark.parametrize(("folders", "groups"), [(PRODUCT, ()), (LOCAL_TOOLING, ("local",)),
                                                  (TESTS, ("local", "test"))], ids=["product", "local", "tests"])
def test_every_imported_distribution_is_declared(folders, groups):
    """An import is covered when a declared distribution provides it (e.g. `yaml` by PyYAML,
    `airflow` by apache-airflow's parts or its providers): importable here by chance is not enough."""
    providers = importlib.metadata.packages_distributions()
    allowed = {canonicalize_name(requirement.name) for requirement in declared(*groups)}
    # apache-airflow is a meta-package: its code is in apache-airflow-core and -task-sdk.
    if "apache-airflow" in allowed:
        allowed |= {"apache-airflow-core", "apache-airflow-task-sdk"}
    uncovered = {}
    for folder in folders:
        for module, where in third_party_imports(REPO / folder).items():
            if not allowed & {canonicalize_name(name) for name in providers.get(module, [])}:
                uncovered[module] = f"{where} (installed from {providers.get(module, 'nothing')})"
    assert uncovered == {}, f"declare these in pyproject.toml {['dependencies', *groups]}"


def test_the_wheel_lists_every_package_of_the_checkout():
    """pyproject.toml names its packages one by one: a new sub-package must be added there."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = {"flashfeed": REPO / "flashfeed", "spark_jobs": REPO / "spark_jobs",
               "flashfeed_airflow": REPO / "plugins" / "flashfeed_airflow"}
    found = {".".join([name, *init.parent.relative_to(folder).parts])
             for name, folder in folders.items() for init in folder.rglob("__init__.py")}
    assert found - listed == set()
