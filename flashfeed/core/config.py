"""Where things live and the one file of tunables (`include/flashfeed.yaml`).

Locations come from the environment so that the same code runs on a laptop and on a
cluster; behaviour comes only from the config file, with per-group overrides. The file is
validated once per process against its schema (`flashfeed/core/settings.py`): every value
handed out already has its type and range.
"""
from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from flashfeed.core.settings import Settings, validate

PACKAGE_DIR = Path(__file__).resolve().parents[1]   # the `flashfeed` package
REPO_ROOT = PACKAGE_DIR.parent                       # the repository, when flashfeed runs from a checkout
# The wheel copies the checkout's folders that the code reads at run time, dags/ and include/,
# into the package (pyproject.toml, [tool.setuptools]); plugins/flashfeed_airflow and spark_jobs/
# are installed as packages of their own.
INSTALLED_PROJECT = PACKAGE_DIR / "_project"
IS_INSTALLED = INSTALLED_PROJECT.is_dir()
PROJECT_ROOT = INSTALLED_PROJECT if IS_INSTALLED else REPO_ROOT
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "include" / "flashfeed.yaml"


def project_path(*parts: str) -> Path:
    """A file or folder of the project's layout, e.g. `project_path("include", "sql")`: the
    checkout's when flashfeed runs from one (make install's editable install), else the copy
    installed inside the package (`pip install flashfeed`). dags/ and include/ are in both."""
    return PROJECT_ROOT.joinpath(*parts)


def flashfeed_home() -> Path:
    """All local state (lake, DynamoDB data, Airflow home, logs) lives here: FLASHFEED_HOME, else
    `.flashfeed/` of the checkout, or of the user's home for an installed package."""
    default = Path.home() / ".flashfeed" if IS_INSTALLED else REPO_ROOT / ".flashfeed"
    return Path(os.environ.get("FLASHFEED_HOME", default)).resolve()


def lake_root() -> str:
    """Root URI of the lake: a local folder by default, `s3a://bucket/prefix` in production."""
    root = os.environ.get("FLASHFEED_LAKE") or str(flashfeed_home() / "lake")
    return root.rstrip("/")


def config_path() -> Path:
    return Path(os.environ.get("FLASHFEED_CONFIG", DEFAULT_CONFIG_PATH))


def load_settings(path: str | Path | None = None) -> Settings:
    """The config file, validated (a ConfigError names every unknown or out-of-range key)."""
    return _settings(str(path or config_path()))


@lru_cache(maxsize=8)
def _settings(source: str) -> Settings:
    with open(source, encoding="utf-8") as handle:
        return validate(yaml.safe_load(handle) or {}, source)


@lru_cache(maxsize=8)
def _validated(path: str) -> dict[str, Any]:
    return _settings(path).model_dump(by_alias=True)


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """The validated config file as sections of plain values (a fresh copy: callers may change it in tests)."""
    return copy.deepcopy(_validated(str(path or config_path())))


def group_settings(config: dict[str, Any], section: str, group: str) -> dict[str, Any]:
    """A section's defaults with the group's overrides applied (`group_overrides: {"13": {...}}`)."""
    settings = {k: v for k, v in config[section].items() if k != "group_overrides"}
    overrides = (config[section].get("group_overrides") or {}).get(str(group)) or {}
    unknown = set(overrides) - set(settings)
    if unknown:
        raise ValueError(
            f"config {section}.group_overrides.{group} sets unknown keys {sorted(unknown)}; "
            f"known keys: {sorted(settings)}"
        )
    settings.update(overrides)
    return settings
