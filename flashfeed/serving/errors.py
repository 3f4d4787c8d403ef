"""Errors of the serving store: every message names the cause and, where there is one, the next step.

One module for all of them, so the Airflow operators and the API can catch `ServingStoreError`
(or one kind) without knowing which part of the store raised it.
"""
from __future__ import annotations


class ServingStoreError(RuntimeError):
    """Base class: every message names the cause and, where there is one, the next step."""


class ManifestError(ServingStoreError):
    """The manifest is missing, malformed, or disagrees with the files it lists."""


class ChecksumMismatchError(ManifestError):
    """A feeds file's bytes differ from what the manifest recorded: refuse to load."""


class PayloadError(ServingStoreError):
    """A payload line cannot become a table item (bad JSON, wrong keys, duplicate)."""


class PayloadTooLargeError(PayloadError):
    """A payload would exceed DynamoDB's 400 KB item limit."""


class LoadError(ServingStoreError):
    """Writing to DynamoDB failed after bounded retries."""


class VerificationError(ServingStoreError):
    """The loaded table disagrees with the manifest: it must not be flipped to."""


class FlipConflictError(ServingStoreError):
    """The served version is not the one the flip expected: another flip won."""

    def __init__(self, message: str, served_version: str | None):
        super().__init__(message)
        self.served_version = served_version


class TableNotFoundError(ServingStoreError):
    """A feeds table that should exist does not (or is not ACTIVE)."""


class NotLoadedError(ServingStoreError):
    """A version has no `loaded` mark: its load failed, is running, or was never verified."""


class RollbackError(ServingStoreError):
    """A rollback cannot be done as asked (nothing served, no previous version, ...)."""


class CoverageError(ServingStoreError):
    """The new version covers too few members compared with the served one: refuse to flip."""


class OlderVersionError(FlipConflictError):
    """The flip would serve a version older than the one served (allow_older_version not set)."""


class ServedVersionReloadError(ServingStoreError):
    """A load of the version served right now, without reload_served_version: refused."""


class LeaseError(ServingStoreError):
    """The control item's lease (flips, rollbacks, retention) stayed held by another holder."""

    def __init__(self, message: str, holder: str | None):
        super().__init__(message)
        self.holder = holder
