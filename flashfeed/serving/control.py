"""The control item: which version is served (the served-version pointer), which are loaded, and
the lease that serialises the writers of the pointer.

Table `<prefix>control`, item `pk = "served"`: `version`, `previous`, `flipped_at` (ISO UTC),
`manifest` (URI), `table` (the served version's feeds table: `<prefix>feeds-<version>`, or its
`-r<N>` reload; an item without it serves `<prefix>feeds-<version>`), `history` (every flip,
oldest first), `experiment` (the served version's, JSON), `stopped_variants`, and `loaded`: a map
of version -> {written, manifest, verified_at, experiment, table} for the feeds tables that were
loaded AND verified.

- The flip (changing `version`) is one conditional UpdateItem that requires the version the
  caller expects to replace, a `loaded` mark for the new one and, unless the caller allows an
  older version, that the served version is older than the new one: two flips can never both
  win, nothing can flip to a half-written table, and a late older run cannot overtake a newer one.
  It serves the table and the experiment recorded in the new version's mark in the same write.
- A reload of the served version switches `table` (and the mark) to the verified new table in
  one conditional UpdateItem (`switch_served_table`): readers see the old table or the new one.
- Marks are removed conditionally: a load's (`clear_loaded`) only while the version is not
  served, retention's (`retire_loaded`) only for a version older than the served one and not the
  previous one; the table goes only after that write succeeded.
- The lease (`lease_owner`, `lease_until`, `lease_purpose`; `control_lease`): flips, rollbacks,
  retention and the reload switch each take it for their few control-item calls, so two of them
  never interleave. Taken with a conditional UpdateItem (free, or expired: a holder that died
  leaves a lease that expires after `serving.lease_seconds`), released only by its owner; a
  contender retries with backoff for `serving.lease_wait_seconds`, then fails naming the holder.
  Nested use in the same thread (a rollback's flip) is re-entrant. No lease is held across a load.

Before a flip, `check_coverage` compares the members of the new and served versions.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from flashfeed.serving.errors import (
    FlipConflictError,
    LeaseError,
    ManifestError,
    NotLoadedError,
    OlderVersionError,
    ServedVersionReloadError,
    TableNotFoundError,
)
from flashfeed.serving.tables import (
    control_table,
    ensure_control_table,
    error_code,
    feeds_table,
    serving_config,
    table_exists,
)

logger = logging.getLogger(__name__)

SERVED_KEY = "served"
LOADED = "loaded"
EXPERIMENT = "experiment"          # the served version's experiment (JSON), copied from its loaded mark
STOPPED = "stopped_variants"       # experiment variants served as control: "<experiment>:<variant>"
TABLE = "table"                    # the served version's feeds table; in a loaded mark, that version's
LEASE_OWNER = "lease_owner"        # the lease: who holds it (host:pid:random) ...
LEASE_UNTIL = "lease_until"        # ... until when (epoch seconds, the holder's clock) ...
LEASE_PURPOSE = "lease_purpose"    # ... and for what ("retention", "flip to 20261122t1500")
LEASE_BACKOFF_BASE_SECONDS = 0.05  # a contender's first pause; doubled each attempt ...
LEASE_BACKOFF_CAP_SECONDS = 2.0    # ... up to this
WAIT_ROUNDING_SECONDS = 1e-9       # float sums of the pauses: a remainder below this is no pause

Log = logging.Logger | logging.LoggerAdapter


def _served_key() -> dict:
    return {"pk": {"S": SERVED_KEY}}


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _is_conditional_failure(error: Exception) -> bool:
    return error_code(error) == "ConditionalCheckFailedException"


def _control_item(client, prefix: str | None) -> dict:
    """The raw control item (consistent read); {} when the table or the item does not exist."""
    try:
        response = client.get_item(TableName=control_table(prefix), Key=_served_key(), ConsistentRead=True)
    except Exception as error:
        if error_code(error) == "ResourceNotFoundException":
            return {}
        raise
    return response.get("Item") or {}


# --- loaded marks ------------------------------------------------------------------------------

def _ensure_loaded_map(client, prefix: str | None) -> None:
    # A nested path can only be set or removed once its parent map exists.
    ensure_control_table(client, prefix)
    client.update_item(TableName=control_table(prefix), Key=_served_key(),
                       UpdateExpression="SET #loaded = if_not_exists(#loaded, :empty)",
                       ExpressionAttributeNames={"#loaded": LOADED},
                       ExpressionAttributeValues={":empty": {"M": {}}})


def _mark(written: int, manifest_uri: str, experiment: dict | None, table: str) -> dict:
    return {"M": {"written": {"N": str(int(written))}, "manifest": {"S": manifest_uri},
                  "verified_at": {"S": _now_iso()},
                  EXPERIMENT: {"S": json.dumps(experiment or {}, sort_keys=True)},
                  TABLE: {"S": table}}}


def mark_loaded(client, prefix: str | None, version: str, written: int, manifest_uri: str,
                experiment: dict | None = None, table: str | None = None) -> None:
    """Record that `table` (default `<prefix>feeds-<version>`) holds exactly `written` verified
    payloads of `version`, and the experiment they were built for (the flip serves both with
    the version)."""
    _ensure_loaded_map(client, prefix)
    mark = _mark(written, manifest_uri, experiment, table or feeds_table(version, prefix))
    client.update_item(TableName=control_table(prefix), Key=_served_key(),
                       UpdateExpression="SET #loaded.#version = :mark",
                       ExpressionAttributeNames={"#loaded": LOADED, "#version": version},
                       ExpressionAttributeValues={":mark": mark})


def clear_loaded(client, prefix: str | None, version: str, log: Log = logger) -> None:
    """Remove a version's `loaded` mark before its tables are rewritten or deleted by a load:
    one UpdateItem on condition that the version is not served (ServedVersionReloadError
    otherwise, and the mark stays). From then on no flip or rollback can serve it."""
    if version in loaded_versions(client, prefix):
        log.info("Removing the loaded mark of %s until it is verified again", version)
    _ensure_loaded_map(client, prefix)
    try:
        client.update_item(TableName=control_table(prefix), Key=_served_key(),
                           UpdateExpression="REMOVE #loaded.#v",
                           ConditionExpression="attribute_not_exists(#version) OR #version <> :v",
                           ExpressionAttributeNames={"#loaded": LOADED, "#v": version, "#version": "version"},
                           ExpressionAttributeValues={":v": {"S": version}})
    except Exception as error:
        if not _is_conditional_failure(error):
            raise
        raise ServedVersionReloadError(
            f"{version} is served right now, so its loaded mark and its table stay as they are. Next step: "
            "to reload the live version, re-run with reload_served_version=true (it loads a new table and "
            "switches to it once verified), or first serve another version (flashfeed_rollback)") from None


def retire_loaded(client, prefix: str | None, version: str, log: Log = logger) -> bool:
    """Retention's removal of a version's `loaded` mark: one UpdateItem on condition that a
    version newer than `version` is served and `version` is not the previous one. True when
    removed (the version can no longer be flipped or rolled back to, so its tables may go);
    False when the condition failed (a flip or rollback made it served or previous meanwhile)."""
    _ensure_loaded_map(client, prefix)
    try:
        client.update_item(
            TableName=control_table(prefix), Key=_served_key(),
            UpdateExpression="REMOVE #loaded.#v",
            ConditionExpression="#version > :v AND (attribute_not_exists(#previous) OR #previous <> :v)",
            ExpressionAttributeNames={"#loaded": LOADED, "#v": version, "#version": "version",
                                      "#previous": "previous"},
            ExpressionAttributeValues={":v": {"S": version}})
    except Exception as error:
        if not _is_conditional_failure(error):
            raise
        now = served_version(client, prefix)
        log.warning("Retention: kept %s: it became served or previous meanwhile (served %s, previous %s)",
                    version, now and now["version"], now and now.get("previous"))
        return False
    return True


def loaded_versions(client, prefix: str | None = None) -> dict[str, dict]:
    """version -> {written, manifest, verified_at, table} of every loaded and verified version
    (`table`: the one its mark records, `<prefix>feeds-<version>` for marks without one)."""
    marks = _control_item(client, prefix).get(LOADED, {}).get("M", {})
    return {version: {"written": int(mark["M"]["written"]["N"]), "manifest": mark["M"]["manifest"]["S"],
                      "verified_at": mark["M"]["verified_at"]["S"],
                      TABLE: mark["M"].get(TABLE, {}).get("S") or feeds_table(version, prefix)}
            for version, mark in marks.items()}


# --- served pointer ----------------------------------------------------------------------------

def served_version(client, prefix: str | None = None) -> dict | None:
    """The control item: {version, previous, flipped_at, manifest, table, history, experiment,
    stopped}, or None if nothing is served. `table` is the recorded served table (a reload's
    `-r<N>`), `<prefix>feeds-<version>` for an item written before tables were recorded."""
    item = _control_item(client, prefix)
    if "version" not in item:
        return None
    values = {name: item[name].get("S")
              for name in ("version", "previous", "flipped_at", "manifest") if name in item}
    values.setdefault("previous", None)
    values["history"] = [entry["S"] for entry in item.get("history", {}).get("L", []) if "S" in entry]
    values[TABLE] = item.get(TABLE, {}).get("S") or feeds_table(values["version"], prefix)
    values[EXPERIMENT] = json.loads(item.get(EXPERIMENT, {}).get("S") or "{}")
    values["stopped"] = sorted(item.get(STOPPED, {}).get("SS", []))
    return values


def set_variant_stopped(client, prefix: str | None, experiment: str, variant: str, stopped: bool) -> dict:
    """Serve an experiment variant's members as control (`stopped`) or their variant again: one
    UpdateItem on the control item, no reload; the API follows within its pointer cache."""
    action = "ADD" if stopped else "DELETE"
    client.update_item(TableName=control_table(prefix), Key=_served_key(),
                       UpdateExpression=f"{action} #stopped :variant",
                       ExpressionAttributeNames={"#stopped": STOPPED},
                       ExpressionAttributeValues={":variant": {"SS": [f"{experiment}:{variant}"]}})
    return served_version(client, prefix) or {}


def is_older_version(version: str, other: str | None) -> bool:
    """True when `version` is an older launch than `other` (False when there is no other):
    versions are YYYYMMDDtHHMM, so their order as strings is their order in time."""
    return other is not None and version < other


# --- the lease: one flip, rollback, retention or reload switch at a time ----------------------

_held_leases: ContextVar[frozenset[str]] = ContextVar("flashfeed_held_leases", default=frozenset())


@dataclass(frozen=True)
class Lease:
    owner: str
    purpose: str
    until: float            # epoch seconds


def lease_retry_delays(wait_seconds: float, base: float = LEASE_BACKOFF_BASE_SECONDS,
                       cap: float = LEASE_BACKOFF_CAP_SECONDS) -> list[float]:
    """A contender's pauses between attempts to take the lease: doubling from `base`, at most
    `cap`, the last one shortened so that they add up to `wait_seconds` (the bounded wait)."""
    delays: list[float] = []
    total, delay = 0.0, base
    while wait_seconds - total > WAIT_ROUNDING_SECONDS:
        step = min(delay, cap, wait_seconds - total)
        delays.append(step)
        total += step
        delay *= 2
    return delays


def _lease_holder(client, prefix: str | None) -> Lease | None:
    item = _control_item(client, prefix)
    if LEASE_OWNER not in item:
        return None
    return Lease(owner=item[LEASE_OWNER]["S"], purpose=item.get(LEASE_PURPOSE, {}).get("S", "?"),
                 until=float(item[LEASE_UNTIL]["N"]))


def _describe_holder(holder: Lease | None) -> str:
    if holder is None:
        return "a holder that released it meanwhile"
    until = datetime.fromtimestamp(holder.until, timezone.utc).isoformat(timespec="seconds")
    return f"{holder.owner} ({holder.purpose}) until {until}"


def acquire_lease(client, prefix: str | None, purpose: str, *, seconds: float | None = None,
                  wait_seconds: float | None = None, log: Log = logger) -> Lease:
    """Take the control item's lease for `seconds` (config `serving.lease_seconds`): one
    conditional UpdateItem, which succeeds when nobody holds it or the holder's time is up.
    While another holds it, retry with backoff for `wait_seconds` (`serving.lease_wait_seconds`),
    then raise LeaseError naming the holder."""
    settings = serving_config() if seconds is None or wait_seconds is None else {}
    seconds = settings["lease_seconds"] if seconds is None else seconds
    wait_seconds = settings["lease_wait_seconds"] if wait_seconds is None else wait_seconds
    ensure_control_table(client, prefix)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    delays = iter(lease_retry_delays(wait_seconds, LEASE_BACKOFF_BASE_SECONDS, LEASE_BACKOFF_CAP_SECONDS))
    started = time.monotonic()
    holder: Lease | None = None
    while True:
        now = time.time()
        until = now + seconds
        try:
            client.update_item(
                TableName=control_table(prefix), Key=_served_key(),
                UpdateExpression="SET #owner = :owner, #until = :until, #purpose = :purpose",
                ConditionExpression="attribute_not_exists(#owner) OR #until < :now",
                ExpressionAttributeNames={"#owner": LEASE_OWNER, "#until": LEASE_UNTIL, "#purpose": LEASE_PURPOSE},
                ExpressionAttributeValues={":owner": {"S": owner}, ":until": {"N": f"{until:.3f}"},
                                           ":purpose": {"S": purpose}, ":now": {"N": f"{now:.3f}"}})
        except Exception as error:
            if not _is_conditional_failure(error):
                raise
            seen = _lease_holder(client, prefix)
            if seen is not None and (holder is None or seen.owner != holder.owner):
                log.info("Waiting for the lease on %s (for %s): held by %s", control_table(prefix), purpose,
                         _describe_holder(seen))
            holder = seen or holder
            delay = next(delays, None)
            if delay is None:
                raise LeaseError(
                    f"could not take the lease on {control_table(prefix)} for {purpose} within "
                    f"{wait_seconds:g} s (serving.lease_wait_seconds): it is held by {_describe_holder(holder)}. "
                    "Nothing was changed. Next step: let that task finish, then clear this task; if its process "
                    "died, its lease expires by itself at the time shown",
                    holder=holder.owner if holder else None) from None
            time.sleep(delay)
            continue
        if holder is not None:
            log.info("Took the lease on %s for %s after waiting %.1f s", control_table(prefix), purpose,
                     time.monotonic() - started)
        return Lease(owner=owner, purpose=purpose, until=until)


def release_lease(client, prefix: str | None, lease: Lease, log: Log = logger) -> bool:
    """Give the lease back: one UpdateItem on condition that `lease.owner` still holds it, so a
    holder whose time ran out never removes its successor's lease. False when it had lost it."""
    try:
        client.update_item(TableName=control_table(prefix), Key=_served_key(),
                           UpdateExpression="REMOVE #owner, #until, #purpose",
                           ConditionExpression="#owner = :owner",
                           ExpressionAttributeNames={"#owner": LEASE_OWNER, "#until": LEASE_UNTIL,
                                                     "#purpose": LEASE_PURPOSE},
                           ExpressionAttributeValues={":owner": {"S": lease.owner}})
    except Exception as error:
        if not _is_conditional_failure(error):
            raise
        log.warning("The lease for %s ran out before it was released (held past serving.lease_seconds) and "
                    "is now held by %s; the work done under it was guarded by its own conditional writes",
                    lease.purpose, _describe_holder(_lease_holder(client, prefix)))
        return False
    return True


@contextmanager
def control_lease(client, prefix: str | None, purpose: str, *, seconds: float | None = None,
                  wait_seconds: float | None = None, log: Log = logger) -> Iterator[Lease | None]:
    """Hold the control item's lease for the block (`acquire_lease`, then `release_lease`).
    Re-entrant: a block nested in one that holds it (same thread or task) yields None."""
    table = control_table(prefix)
    held = _held_leases.get()
    if table in held:
        yield None
        return
    lease = acquire_lease(client, prefix, purpose, seconds=seconds, wait_seconds=wait_seconds, log=log)
    token = _held_leases.set(held | {table})
    try:
        yield lease
    finally:
        _held_leases.reset(token)
        try:
            release_lease(client, prefix, lease, log)
        except Exception as error:   # the block's own outcome matters more; the lease expires anyway
            log.warning("Could not release the lease for %s (%s: %s); it expires at %s", purpose,
                        type(error).__name__, error,
                        datetime.fromtimestamp(lease.until, timezone.utc).isoformat(timespec="seconds"))


# --- flip --------------------------------------------------------------------------------------

def _flip_update(new_version: str, manifest_uri: str, expected_version: str | None,
                 flipped_at: str, default_table: str, allow_older: bool = False) -> dict[str, Any]:
    """UpdateItem's expressions of a flip: serve `new_version` if `expected_version` is served,
    the new version has a loaded mark and (unless `allow_older`) is newer than the served one."""
    names = {"#version": "version", "#previous": "previous", "#flipped_at": "flipped_at", "#manifest": "manifest",
             "#history": "history", "#experiment": EXPERIMENT, "#table": TABLE,
             "#loaded": LOADED, "#new": new_version}
    values: dict[str, Any] = {":new": {"S": new_version}, ":at": {"S": flipped_at}, ":manifest": {"S": manifest_uri},
                              ":empty": {"L": []}, ":new_list": {"L": [{"S": new_version}]},
                              ":no_experiment": {"S": "{}"}, ":default_table": {"S": default_table}}
    # Every flip (rollbacks included) appends to `history` in the same write, so "the last N
    # served versions" (retention) is defined by the control item alone; and it serves the
    # version's table and experiment (from its loaded mark) in the same write, so table,
    # payloads and assignment always switch together.
    history = ("#history = list_append(if_not_exists(#history, :empty), :new_list), "
               "#experiment = if_not_exists(#loaded.#new.#experiment, :no_experiment), "
               "#table = if_not_exists(#loaded.#new.#table, :default_table)")
    if expected_version is None:
        update = (f"SET #version = :new, #flipped_at = :at, #manifest = :manifest, {history} "
                  "REMOVE #previous")
        condition = "attribute_not_exists(#version) AND attribute_exists(#loaded.#new)"
    else:
        update = (f"SET #version = :new, #previous = :expected, #flipped_at = :at, "
                  f"#manifest = :manifest, {history}")
        condition = "#version = :expected AND attribute_exists(#loaded.#new)"
        if not allow_older:
            condition += " AND #version < :new"     # a late older run never overtakes a newer one
        values[":expected"] = {"S": expected_version}
    return {"UpdateExpression": update, "ConditionExpression": condition,
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}


def _older_refusal(new_version: str, served: str) -> OlderVersionError:
    return OlderVersionError(
        f"refusing to flip to {new_version}: it is older than {served}, which is served now (a late run, or an "
        "older slot of a backfill). Nothing was changed; to serve the older version anyway, run with "
        "allow_older_version=true (or use flashfeed_rollback)",
        served_version=served,
    )


def _refused_flip(client, prefix: str | None, new_version: str, expected_version: str | None,
                  allow_older: bool) -> Exception:
    """Why a flip's condition failed: no loaded mark (the expected version is still served),
    another flip won, or what is served is newer than the new version."""
    actual = served_version(client, prefix)
    actual_version = actual["version"] if actual else None
    if not allow_older and actual_version is not None and new_version < actual_version:
        return _older_refusal(new_version, actual_version)
    if actual_version == expected_version:
        return NotLoadedError(
            f"refusing to flip to {new_version}: it has no loaded mark in {control_table(prefix)}, so its "
            "table is not known to be complete (its load failed, is running, or never passed "
            "verification). Nothing was changed; run (or clear) the load task of this version"
        )
    return FlipConflictError(
        f"flip to {new_version} refused: expected {expected_version or 'nothing'} to be served, "
        f"but {actual_version or 'nothing'} is served now (another flip or a rollback won). "
        "Nothing was changed; check which run flipped before retrying",
        served_version=actual_version,
    )


def flip(client, prefix: str | None, new_version: str, manifest_uri: str,
         expected_version: str | None, *, allow_older: bool = False, log: Log = logger) -> dict:
    """Serve `new_version` if and only if `expected_version` is served now (None: nothing yet).

    One conditional UpdateItem, under the control item's lease: of two concurrent flips from
    the same expected version, one wins and the other gets FlipConflictError naming the version
    actually served. The same condition requires the new version's `loaded` mark
    (NotLoadedError otherwise), so a load that restarts meanwhile cannot be flipped to, and,
    unless `allow_older` (a rollback, param allow_older_version), that the served version is
    older than the new one (OlderVersionError). It serves the table the mark records.
    """
    if new_version == expected_version:
        raise ValueError(f"{new_version} is already the expected served version; nothing to flip")
    if not allow_older and expected_version is not None and new_version < expected_version:
        raise _older_refusal(new_version, expected_version)
    with control_lease(client, prefix, f"flip to {new_version}", log=log):
        mark = loaded_versions(client, prefix).get(new_version)
        table = mark[TABLE] if mark else feeds_table(new_version, prefix)
        if not table_exists(client, table):
            raise TableNotFoundError(
                f"refusing to flip to {new_version}: its table {table} does not exist (or is not ACTIVE); "
                "load and verify it first"
            )
        _ensure_loaded_map(client, prefix)
        flipped_at = _now_iso()
        try:
            client.update_item(TableName=control_table(prefix), Key=_served_key(),
                               **_flip_update(new_version, manifest_uri, expected_version, flipped_at,
                                              feeds_table(new_version, prefix), allow_older))
        except Exception as error:
            if not _is_conditional_failure(error):
                raise
            raise _refused_flip(client, prefix, new_version, expected_version, allow_older) from None
    return {"version": new_version, "previous": expected_version, "flipped_at": flipped_at,
            "manifest": manifest_uri, "table": table}


# --- a reload of the served version: switch its table ------------------------------------------

def switch_served_table(client, prefix: str | None, version: str, old_table: str, new_table: str, written: int,
                        manifest_uri: str, experiment: dict | None = None, log: Log = logger) -> dict:
    """Serve the verified `new_table` for the served `version` instead of `old_table`: one
    conditional UpdateItem, under the lease, that sets the served `table`, the version's loaded
    mark (`written`, `manifest_uri`, `experiment`, the new table), `manifest` and `experiment`
    together, on condition that `version` is still served from `old_table`. Readers see the
    old table or the new one, never a mix. FlipConflictError when a flip, a rollback or another
    reload changed the pointer meanwhile (then nothing changes)."""
    table_condition = "#table = :old"
    if old_table == feeds_table(version, prefix):
        table_condition = f"({table_condition} OR attribute_not_exists(#table))"   # an item from before `table`
    with control_lease(client, prefix, f"switch of {version} to {new_table}", log=log):
        _ensure_loaded_map(client, prefix)
        try:
            client.update_item(
                TableName=control_table(prefix), Key=_served_key(),
                UpdateExpression=("SET #table = :new, #loaded.#v = :mark, #manifest = :manifest, "
                                  "#experiment = :experiment"),
                ConditionExpression=f"#version = :v AND {table_condition}",
                ExpressionAttributeNames={"#table": TABLE, "#loaded": LOADED, "#v": version, "#version": "version",
                                          "#manifest": "manifest", "#experiment": EXPERIMENT},
                ExpressionAttributeValues={
                    ":new": {"S": new_table}, ":old": {"S": old_table}, ":v": {"S": version},
                    ":mark": _mark(written, manifest_uri, experiment, new_table), ":manifest": {"S": manifest_uri},
                    ":experiment": {"S": json.dumps(experiment or {}, sort_keys=True)}})
        except Exception as error:
            if not _is_conditional_failure(error):
                raise
            now = served_version(client, prefix)
            raise FlipConflictError(
                f"reload of {version} not switched: {version} was to be served from {old_table}, but now "
                f"{now and now['version'] or 'nothing'} is served from {now and now['table'] or '-'} (a flip, a "
                f"rollback or another reload won meanwhile). Nothing was changed; the verified table {new_table} "
                "is not served (retention deletes it with its version). Next step: check which run changed the "
                "served version, then re-run this load if it is still needed",
                served_version=now and now["version"]) from None
    log.info("Served version %s now reads %s (was %s): switched in one conditional write", version, new_table,
             old_table)
    return {"version": version, "table": new_table, "replaced": old_table}


# --- coverage ----------------------------------------------------------------------------------

@dataclass
class Coverage:
    new_members: int
    served_members: int
    min_ratio: float

    @property
    def ratio(self) -> float:
        return self.new_members / self.served_members if self.served_members else 1.0

    @property
    def ok(self) -> bool:
        return self.ratio >= self.min_ratio

    def describe(self) -> str:
        return (f"coverage {self.ratio:.1%} below {self.min_ratio:.0%}" if not self.ok else
                f"coverage {self.ratio:.1%} (>= {self.min_ratio:.0%})") + \
               f" ({self.new_members:,} members vs {self.served_members:,} served)"


def _members(manifest: dict, where: str) -> int:
    try:
        return int(manifest["members"])
    except (KeyError, TypeError, ValueError):
        raise ManifestError(f"{where} has no member count ('members'); re-run the collections task") from None


def check_coverage(new_manifest: dict, served_manifest: dict, min_ratio: float | None = None) -> Coverage:
    """Members of the new version against the served one's; `.ok` False below `min_ratio`
    (default config `serving.min_coverage_ratio`, 0.8)."""
    if min_ratio is None:
        min_ratio = serving_config()["min_coverage_ratio"]
    return Coverage(new_members=_members(new_manifest, f"manifest of {new_manifest.get('version', '?')}"),
                    served_members=_members(served_manifest, f"served manifest {served_manifest.get('version', '?')}"),
                    min_ratio=float(min_ratio))
