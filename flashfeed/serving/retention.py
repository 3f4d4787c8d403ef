"""Retention (which feeds tables to delete) and rollback (which version to serve again).

Each is a pure policy on plain data, with no I/O (`retention_plan`, `rollback_target_version`,
`check_rollback_target`), and a thin function that reads the control item and the tables, calls
the policy and applies it (`apply_retention`, `rollback_target`, `rollback`).

Both hold the control item's lease (`control.control_lease`) while they read the pointer and
write the control item, so a rollback, a flip and retention never interleave. Retention removes
a version's loaded mark with a conditional write (`control.retire_loaded`: only a version older
than the served one and not the previous one), and deletes the version's tables (the first and
any `-r<N>` reloads) only after that write succeeded, after giving the lease back: without its
mark no flip or rollback can serve it any more. A version's table replaced by a reload of it
stays until retention deletes the version.
"""
from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from flashfeed.serving.control import TABLE, control_lease, flip, loaded_versions, retire_loaded, served_version
from flashfeed.serving.errors import FlipConflictError, NotLoadedError, RollbackError, TableNotFoundError
from flashfeed.serving.tables import (
    VERSION_PATTERN,
    delete_table,
    describe_table,
    feeds_table,
    feeds_tables,
    feeds_versions,
    table_exists,
)

logger = logging.getLogger(__name__)

Log = logging.Logger | logging.LoggerAdapter


# --- retention: the policy ---------------------------------------------------------------------

@dataclass(frozen=True)
class RetentionPlan:
    keep: int
    served: str
    previous: str | None
    protected: frozenset[str]       # never deleted: the last `keep` served versions, served, previous
    delete: list[str]               # older than the served version and not protected, oldest first
    not_yet_flipped: list[str]      # newer than the served version (a dry run, a load in progress): kept
    history_missing: bool           # the control item predates `history`: only served and previous count


def check_keep(keep: int) -> int:
    """`serving.retain_versions` as an int, at least 1 (the served version is always kept)."""
    if int(keep) < 1:
        raise ValueError(f"serving.retain_versions must be at least 1, got {keep}")
    return int(keep)


def last_served(history: list[str], keep: int) -> list[str]:
    """The last `keep` distinct versions of a flip history (oldest flip first), newest first:
    a version served twice (a rollback) counts once, at its latest flip."""
    recent: list[str] = []
    for version in reversed(history):
        if version not in recent:
            recent.append(version)
        if len(recent) == keep:
            break
    return recent


def retention_plan(keep: int, served: str, previous: str | None, history: list[str],
                   versions: list[str]) -> RetentionPlan:
    """Which of `versions` (those with a feeds table) to delete when `served` is served after
    `previous`, with flip `history` (oldest first): those older than `served` that are not
    among the last `keep` served versions, nor `served` or `previous` whatever `keep` is.
    Without a history, only `served` and `previous` are protected."""
    keep = check_keep(keep)
    history_missing = not history
    if history_missing:
        history = [v for v in (previous, served) if v]
    protected = set(last_served(history, keep)) | {served}
    if previous:
        protected.add(previous)
    return RetentionPlan(
        keep=keep, served=served, previous=previous, protected=frozenset(protected),
        delete=[v for v in versions if v not in protected and v < served],
        not_yet_flipped=[v for v in versions if v > served and v not in protected],
        history_missing=history_missing,
    )


def pointer_unchanged(plan: RetentionPlan, now: dict | None) -> bool:
    """The control item still serves what the plan was made for (same served and previous)."""
    return bool(now) and now["version"] == plan.served and now.get("previous") == plan.previous


# --- retention: applied ------------------------------------------------------------------------

def _log_plan(plan: RetentionPlan, versions: list[str], log: Log) -> None:
    if plan.history_missing:
        log.warning("Retention: the control item has no flip history (flipped before history was kept); "
                    "keeping only the served and previous versions and anything newer")
    newer = plan.not_yet_flipped
    log.info("Retention (keep %d): served %s, previous %s, keeping %s%s; deleting %s",
             plan.keep, plan.served, plan.previous or "-",
             ", ".join(sorted(plan.protected & set(versions))) or "none",
             f" and not-yet-flipped {', '.join(newer)}" if newer else "",
             ", ".join(plan.delete) or "nothing")


def _delete_tables(tables: list[str], client, keep: int, log: Log) -> list[str]:
    """Start deleting a retired version's tables; the names of those it deleted."""
    deleted = []
    for table in tables:
        description = describe_table(client, table)
        if description is None or description.get("TableStatus") == "DELETING":
            log.info("Retention: %s is already gone or being deleted; skipped", table)
            continue
        skipped = delete_table(client, table)
        if skipped:
            log.info("Retention: %s is already gone or busy (%s); skipped", table, skipped)
            continue
        log.info("Retention: deleted %s (older than the last %d served versions)", table, keep)
        deleted.append(table)
    return deleted


def apply_retention(client, prefix: str | None, keep: int, log: Log = logger) -> list[str]:
    """Delete the feeds tables of versions older than the last `keep` served ones; returns the
    deleted tables.

    Never deleted, whatever `keep` is: the served and the previous version (control item), and
    any table newer than the served version (loaded but not flipped yet, e.g. a dry run or a
    load in progress). "Last served" = the distinct versions of the control item's `history`,
    newest flip first. Under the control item's lease: the plan, then per version a re-read of
    the pointer (retention stops if it changed) and the conditional removal of its loaded mark
    (`control.retire_loaded`); a version whose removal is refused (it became served or previous)
    is kept. Then, with the lease given back, the retired versions' tables are deleted.
    """
    keep = check_keep(keep)
    with control_lease(client, prefix, "retention", log=log):
        served = served_version(client, prefix)
        if served is None:
            log.info("Retention: nothing is served yet; no table is deleted")
            return []
        tables_by_version = feeds_tables(client, prefix)
        versions = list(tables_by_version)
        plan = retention_plan(keep, served["version"], served.get("previous"), served.get("history") or [], versions)
        _log_plan(plan, versions, log)
        retired = []
        for version in plan.delete:
            now = served_version(client, prefix)
            if not pointer_unchanged(plan, now):
                log.warning("Retention stopped: the served version changed from %s to %s while deleting; "
                            "%d old versions left for the next run", plan.served, now and now["version"],
                            len(plan.delete) - len(retired))
                break
            if retire_loaded(client, prefix, version, log):
                retired.append(version)
    deleted = []
    for version in retired:        # no loaded mark any more: nothing can serve them
        deleted.extend(_delete_tables(tables_by_version[version], client, keep, log))
    if retired:
        log.info("Retention: %d tables of %d versions deleted (%s)", len(deleted), len(retired), ", ".join(retired))
    return deleted


# --- rollback: the policy ----------------------------------------------------------------------

def rollback_target_version(served: dict | None, requested: str | None, retained: list[str]) -> str:
    """The version a rollback serves: `requested`, else the served pointer's `previous`.

    `served` is the served pointer ({version, previous, ...}, None when nothing is served);
    `retained` the versions that still have a feeds table, named in the refusals.
    """
    if served is None:
        raise RollbackError("nothing is served yet, so there is nothing to roll back from; a first version is "
                            "served by flashfeed_launch_feeds")
    target = (requested or "").strip() or served.get("previous")
    if not target:
        raise RollbackError(
            f"{served['version']} is served and the control item records no previous version; give "
            f"target_version explicitly (retained versions: {', '.join(retained) or 'none'})"
        )
    if not VERSION_PATTERN.match(target):
        raise ValueError(f"target version {target!r} is not YYYYMMDDtHHMM, e.g. 20261122t1100: set param "
                         f"target_version to a retained version ({', '.join(retained) or 'none'}) or leave it "
                         "empty for the previous one")
    return target


def check_rollback_target(target: str, table: str, table_active: bool, loaded: Collection[str],
                          retained: list[str]) -> None:
    """Refuse a target (not served now) whose feeds `table` is not ACTIVE or that has no loaded mark."""
    if not table_active:
        raise TableNotFoundError(
            f"cannot roll back to {target}: its table {table} does not exist (or is not ACTIVE), retention "
            f"may have deleted it. Versions that still have a table: {', '.join(retained) or 'none'}"
        )
    if target not in loaded:
        raise NotLoadedError(
            f"cannot roll back to {target}: its table exists but has no loaded mark (a reload of it failed "
            f"or is running). Loaded versions: {', '.join(sorted(loaded)) or 'none'}"
        )


# --- rollback: applied -------------------------------------------------------------------------

def rollback_target(client, prefix: str | None, target_version: str | None = None) -> tuple[dict, str, dict | None]:
    """(served control item, target version, target's loaded mark) of a rollback, checked.

    Target: `target_version`, else the control item's `previous`. Refused, naming what can be
    served instead: nothing served, no target, a malformed one, or (unless the target is served
    already, when the mark is None) a target whose table is gone or has no loaded mark.
    """
    served = served_version(client, prefix)
    retained = feeds_versions(client, prefix) if served else []
    target = rollback_target_version(served, target_version, retained)
    if target == served["version"]:
        return served, target, None
    marks = loaded_versions(client, prefix)
    table = marks[target][TABLE] if target in marks else feeds_table(target, prefix)
    check_rollback_target(target, table, table_exists(client, table), marks, retained)
    return served, target, marks[target]


def rollback(client, prefix: str | None, target_version: str | None = None, *,
             expected_version: str | None = None, manifest_uri: str | None = None, log: Log = logger) -> dict:
    """Serve `target_version` again (default: the control item's `previous`), checked by
    `rollback_target`.

    When the target is already served, changes nothing and returns `flipped: False` (so a
    retried rollback task is a no-op). Otherwise the same conditional write as `flip` (an older
    version allowed), expecting the version served now (or `expected_version` when the caller
    read it earlier: a flip in between then wins and this raises FlipConflictError). Manifest
    recorded: `manifest_uri`, else the one of the target's `loaded` mark. The check and the flip
    hold the control item's lease, so retention cannot retire the target in between.
    """
    with control_lease(client, prefix, f"rollback to {target_version or 'the previous version'}", log=log):
        served, target, mark = rollback_target(client, prefix, target_version)
        current = served["version"]
        if target == current:
            log.info("Version %s is already served (flipped at %s); nothing to roll back", target,
                     served.get("flipped_at"))
            return {"version": target, "previous": served.get("previous"), "flipped": False,
                    "table": served["table"], "manifest": served.get("manifest")}
        if expected_version is not None and expected_version != current:
            raise FlipConflictError(
                f"rollback refused: expected {expected_version} to be served, but {current} is served now "
                "(a flip happened since the rollback was planned). Nothing was changed; re-trigger the rollback",
                served_version=current,
            )
        manifest_uri = manifest_uri or mark["manifest"]
        log.info("Rolling back served version %s -> %s (table %s, manifest %s)", current, target,
                 mark[TABLE], manifest_uri)
        result = flip(client, prefix, target, manifest_uri, expected_version=current, allow_older=True, log=log)
    result["flipped"] = True
    log.info("Served version is now %s again (was %s, flipped at %s)", target, current, result["flipped_at"])
    return result
