"""Virtual environments without the checkout, for the tests of the installed package
(tests/test_installed_package.py) and of executors without flashfeed (tests/e2e/test_spark_cluster.py).

- `pinned_environment`: a fresh venv holding requirements.txt's pinned set and no flashfeed,
  as a Spark worker has it.
- `installed_environment`: the same plus the wheel built from the checkout (`pip install
  --no-deps`), as an Airflow worker has it.

The pinned set is not downloaded again: `pip install --no-deps -r requirements.txt` took 3 to 4
minutes here (pyspark alone is a 455 MB sdist fetched from PyPI on every install). The fresh
venv gets the files of the project's own .venv instead, which `make install` filled from
requirements.txt, as hard links (seconds, no disk space), without flashfeed's editable
install; every pin is checked to be there at its version. Hard links are safe here: pip and
Python replace files, they never write into one in place.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from: pyproject.toml's readme, packages and package data.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "flashfeed", "spark_jobs", "plugins", "dags", "include")
# flashfeed's editable install in the project's venv (make install's `pip install -e .`).
EDITABLE_INSTALL = ("__editable__*flashfeed*", "flashfeed-*.dist-info", "__editable___flashfeed*")
# Distributions a venv has that requirements.txt does not pin.
UNPINNED = {"pip", "setuptools", "wheel"}
COMMAND_TIMEOUT_SECONDS = 300


class Environment(NamedTuple):
    root: Path
    python: Path
    site_packages: Path

    @property
    def bin(self) -> Path:
        return self.python.parent

    def env(self, **extra: str) -> dict[str, str]:
        """A process environment with only this venv on PATH before the system's, and no
        PYTHONPATH: nothing of the checkout can be imported by accident."""
        checkout_venv = Path(sys.prefix, "bin").resolve()
        system_path = [p for p in os.environ.get("PATH", "").split(os.pathsep)
                       if p and not Path(p).resolve().is_relative_to(REPO) and Path(p).resolve() != checkout_venv]
        keep = {key: os.environ[key] for key in ("HOME", "JAVA_HOME", "LANG", "TMPDIR") if key in os.environ}
        return {**keep, "PATH": os.pathsep.join([str(self.bin), *system_path]), **extra}


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_SECONDS)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def pinned_versions() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        name, _, version = line.split("#", 1)[0].strip().partition("==")
        if name:
            pins[canonicalize_name(name)] = version.strip()
    return pins


def pinned_environment(root: Path) -> Environment:
    """A fresh venv in `root` with the pinned set (see the module docstring) and no flashfeed."""
    from packaging.utils import canonicalize_name

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=COMMAND_TIMEOUT_SECONDS)
    python = root / "bin" / "python"
    site_packages = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             root, {}).stdout.strip())
    shutil.rmtree(site_packages)
    shutil.copytree(sysconfig.get_paths()["purelib"], site_packages, symlinks=True, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns(*EDITABLE_INSTALL))
    installed = {canonicalize_name(dist.metadata["Name"]): dist.version
                 for dist in importlib.metadata.distributions(path=[str(site_packages)])}
    pins = pinned_versions()
    assert {name: installed.get(name) for name in pins if installed.get(name) != pins[name]} == {}, \
        "the project's .venv does not hold requirements.txt's versions: run `make install`"
    assert set(installed) - set(pins) <= UNPINNED, f"not pinned in requirements.txt: {set(installed) - set(pins)}"
    environment = Environment(root, python, site_packages)
    found = run([python, "-c", "import importlib.util; print(importlib.util.find_spec('flashfeed'))"],
                root, environment.env()).stdout.strip()
    assert found == "None", f"the pinned venv can import flashfeed: {found}"
    return environment


def build_wheel(work: Path) -> Path:
    """The wheel of a copy of the checkout's sources (the build writes build/ next to them)."""
    source = work / "source"
    source.mkdir()
    for name in WHEEL_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", work / "dist", source],
        work, {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (wheel,) = (work / "dist").glob("flashfeed-*.whl")
    return wheel


def installed_environment(root: Path, wheel: Path) -> Environment:
    """A fresh venv with the pinned set and the wheel, installed without its dependencies."""
    environment = pinned_environment(root)
    run([environment.python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel], root,
        environment.env(PIP_DISABLE_PIP_VERSION_CHECK="1"))
    return environment


def _link_or_copy(source: str, target: str) -> str:
    try:
        os.link(source, target)
    except OSError:          # another file system: copy (slower, same result)
        shutil.copy2(source, target)
    return target
