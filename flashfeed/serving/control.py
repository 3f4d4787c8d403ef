"""The control item: which version is served (the served-version pointer), and which are loaded.

Table `<prefix>control`, item `pk = "served"`: `version`, `previous`, `flipped_at` (ISO UTC),
`manifest` (URI), `history` (every flip, oldest first), `experiment` (the served version's, JSON),
`stopped_variants`, and `loaded`: a map of version -> {written, manifest, verified_at, experiment}
for the feeds tables that were loaded AND verified. Changing `version` is the flip: one
conditional UpdateItem that requires the version the caller expects to replace and a `loaded`
mark for the new one, so two flips can never both win and nothing can flip to a table that is
half-written. Before a flip, `check_coverage` compares the members of the new and served versions.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from flashfeed.serving.errors import FlipConflictError, ManifestError, NotLoadedError, TableNotFoundError
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

Log = logging.Logger | logging.LoggerAdapter


def _served_key() -> dict:
    return {"pk": {"S": SERVED_KEY}}


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def mark_loaded(client, prefix: str | None, version: str, written: int, manifest_uri: str,
                experiment: dict | None = None) -> None:
    """Record that `<prefix>feeds-<version>` holds exactly `written` verified payloads, and the
    experiment its payloads were built for (the flip serves it with the version)."""
    _ensure_loaded_map(client, prefix)
    mark = {"written": {"N": str(int(written))}, "manifest": {"S": manifest_uri},
            "verified_at": {"S": _now_iso()},
            EXPERIMENT: {"S": json.dumps(experiment or {}, sort_keys=True)}}
    client.update_item(TableName=control_table(prefix), Key=_served_key(),
                       UpdateExpression="SET #loaded.#version = :mark",
                       ExpressionAttributeNames={"#loaded": LOADED, "#version": version},
                       ExpressionAttributeValues={":mark": {"M": mark}})


def clear_loaded(client, prefix: str | None, version: str, log: Log = logger) -> None:
    """Remove a version's `loaded` mark: done before its table is written or deleted."""
    if version in loaded_versions(client, prefix):
        log.info("Removing the loaded mark of %s until it is verified again", version)
    _ensure_loaded_map(client, prefix)
    client.update_item(TableName=control_table(prefix), Key=_served_key(),
                       UpdateExpression="REMOVE #loaded.#version",
                       ExpressionAttributeNames={"#loaded": LOADED, "#version": version})


def loaded_versions(client, prefix: str | None = None) -> dict[str, dict]:
    """version -> {written, manifest, verified_at} of every loaded and verified version."""
    marks = _control_item(client, prefix).get(LOADED, {}).get("M", {})
    return {version: {"written": int(mark["M"]["written"]["N"]), "manifest": mark["M"]["manifest"]["S"],
                      "verified_at": mark["M"]["verified_at"]["S"]}
            for version, mark in marks.items()}


# --- served pointer ----------------------------------------------------------------------------

def served_version(client, prefix: str | None = None) -> dict | None:
    """The control item: {version, previous, flipped_at, manifest, table}, or None if nothing is served."""
    item = _control_item(client, prefix)
    if "version" not in item:
        return None
    values = {name: item[name].get("S")
              for name in ("version", "previous", "flipped_at", "manifest") if name in item}
    values.setdefault("previous", None)
    values["history"] = [entry["S"] for entry in item.get("history", {}).get("L", []) if "S" in entry]
    values["table"] = feeds_table(values["version"], prefix)
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


# --- flip --------------------------------------------------------------------------------------

def _flip_update(new_version: str, manifest_uri: str, expected_version: str | None,
                 flipped_at: str) -> dict[str, Any]:
    """UpdateItem's expressions of a flip: serve `new_version` if `expected_version` is served."""
    names = {"#version": "version", "#previous": "previous", "#flipped_at": "flipped_at", "#manifest": "manifest",
             "#history": "history", "#experiment": EXPERIMENT,
             "#loaded": LOADED, "#new": new_version}
    values: dict[str, Any] = {":new": {"S": new_version}, ":at": {"S": flipped_at}, ":manifest": {"S": manifest_uri},
                              ":empty": {"L": []}, ":new_list": {"L": [{"S": new_version}]},
                              ":no_experiment": {"S": "{}"}}
    # Every flip (rollbacks included) appends to `history` in the same write, so "the last N
    # served versions" (retention) is defined by the control item alone; and it serves the
    # version's experiment (from its loaded mark) in the same write, so payloads and assignment
    # always switch together.
    history = ("#history = list_append(if_not_exists(#history, :empty), :new_list), "
               "#experiment = if_not_exists(#loaded.#new.#experiment, :no_experiment)")
    if expected_version is None:
        update = (f"SET #version = :new, #flipped_at = :at, #manifest = :manifest, {history} "
                  "REMOVE #previous")
        condition = "attribute_not_exists(#version) AND attribute_exists(#loaded.#new)"
    else:
        update = (f"SET #version = :new, #previous = :expected, #flipped_at = :at, "
                  f"#manifest = :manifest, {history}")
        condition = "#version = :expected AND attribute_exists(#loaded.#new)"
        values[":expected"] = {"S": expected_version}
    return {"UpdateExpression": update, "ConditionExpression": condition,
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}


def _refused_flip(client, prefix: str | None, new_version: str, expected_version: str | None) -> Exception:
    """Why a flip's condition failed: no loaded mark (the expected version is still served) or
    another flip won."""
    actual = served_version(client, prefix)
    actual_version = actual["version"] if actual else None
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
         expected_version: str | None) -> dict:
    """Serve `new_version` if and only if `expected_version` is served now (None: nothing yet).

    One conditional UpdateItem: of two concurrent flips from the same expected version, one
    wins and the other gets FlipConflictError naming the version actually served. The same
    condition requires the new version's `loaded` mark (NotLoadedError otherwise), so a load
    that restarts meanwhile cannot be flipped to.
    """
    if new_version == expected_version:
        raise ValueError(f"{new_version} is already the expected served version; nothing to flip")
    table = feeds_table(new_version, prefix)
    if not table_exists(client, table):
        raise TableNotFoundError(
            f"refusing to flip to {new_version}: its table {table} does not exist (or is not ACTIVE); "
            "load and verify it first"
        )
    _ensure_loaded_map(client, prefix)
    flipped_at = _now_iso()
    try:
        client.update_item(TableName=control_table(prefix), Key=_served_key(),
                           **_flip_update(new_version, manifest_uri, expected_version, flipped_at))
    except Exception as error:
        if error_code(error) != "ConditionalCheckFailedException":
            raise
        raise _refused_flip(client, prefix, new_version, expected_version) from None
    return {"version": new_version, "previous": expected_version, "flipped_at": flipped_at,
            "manifest": manifest_uri, "table": table}


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
