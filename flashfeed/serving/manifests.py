"""A launch's feeds manifests and the lake files they list: read, check, checksum.

The collections export writes `<feeds_dir>/manifest.json`: the version, its data sets (one per
collection and variant, experiment variants, the fallback and product feeds) with their files'
sha256, sizes and payload counts, and the member count the flip's coverage check compares.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Iterator

from flashfeed.core import lake
from flashfeed.core.experiments import VARIANT_PATTERN as EXPERIMENT_VARIANT
from flashfeed.core.lake import FALLBACK_DATA_SET, FEEDS, MEMBER_FEEDS, PRODUCT_FEEDS, feed_folder, member_data_sets
from flashfeed.serving.errors import ChecksumMismatchError, ManifestError

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
BYTES_PER_KB = 1024
RERUN = "; re-run the collections task for this launch"

Log = logging.Logger | logging.LoggerAdapter


def join_uri(base: str, relative: str) -> str:
    """`relative` under `base`, a local folder or an s3:// prefix."""
    return f"{str(base).rstrip('/')}/{relative.lstrip('/')}"


def read_manifest(feeds_dir: str) -> dict:
    """`<feeds_dir>/manifest.json` (local folder or s3://), checked for the fields the load needs."""
    uri = join_uri(feeds_dir, MANIFEST_FILE)
    try:
        with lake.open_file(uri, "rb") as handle:
            manifest = json.loads(handle.read())
    except FileNotFoundError:
        raise ManifestError(
            f"no manifest at {uri}: the collections export has not finished for this launch "
            "(it writes manifest.json before _SUCCESS); re-run the collections task"
        ) from None
    except json.JSONDecodeError as error:
        raise ManifestError(f"manifest {uri} is not valid JSON ({error}); re-run the collections task") from None
    check_manifest(manifest, uri)
    return manifest


def read_manifest_uri(uri: str) -> dict:
    """A manifest by its own URI (`.../manifest.json`, local path or s3://), e.g. the served one's."""
    try:
        with lake.open_file(uri, "rb") as handle:
            return json.loads(handle.read())
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {uri}: it was moved or deleted since that launch's export; re-run "
                            "the collections task of that launch") from None
    except json.JSONDecodeError as error:
        raise ManifestError(f"manifest {uri} is not valid JSON ({error}); re-run the collections task of that "
                            "launch") from None


def _check_data_set(name: str, data_set: dict, where: str) -> int:
    """A data set's file list; returns its payload count."""
    data_set_feed(name)   # validates the name
    files = data_set.get("files")
    if not isinstance(files, list):
        raise ManifestError(f"{where}: data set {name} has no file list{RERUN}")
    for entry in files:
        for field in ("path", "sha256", "payloads"):
            if field not in entry:
                raise ManifestError(f"{where}: a file of data set {name} has no {field!r}: {entry}{RERUN}")
    listed = sum(int(f["payloads"]) for f in files)
    if listed != int(data_set.get("payloads", listed)):
        raise ManifestError(
            f"{where}: data set {name} says {data_set['payloads']} payloads but its files add up to {listed}{RERUN}"
        )
    return listed


def check_manifest(manifest: dict, where: str = "manifest") -> None:
    """The fields and invariants the loader relies on; raises ManifestError naming the first gap."""
    for field in ("version", "data_sets", "total_payloads"):
        if field not in manifest:
            raise ManifestError(f"{where} has no {field!r}{RERUN}")
    total = sum(_check_data_set(name, data_set, where) for name, data_set in manifest["data_sets"].items())
    if total != int(manifest["total_payloads"]):
        raise ManifestError(
            f"{where}: total_payloads is {manifest['total_payloads']} but the data sets add up to {total}{RERUN}"
        )


def data_set_feed(name: str) -> tuple[str, str | None, str | None] | None:
    """What a data set holds: (feed, variant, None) of a member data set (`brands_card`),
    (feed, variant, experiment variant) of an experiment variant's (`brands_card.no_boost`),
    (feed, None, None) of a product data set (`related`), None for the fallback data set."""
    if name == FALLBACK_DATA_SET:
        return None
    if name in PRODUCT_FEEDS:
        return name, None, None
    base, _, arm = name.partition(".")
    for feed, variants in MEMBER_FEEDS.items():
        for variant in variants:
            an_experiment_variant = feed in FEEDS and EXPERIMENT_VARIANT.fullmatch(arm)
            if base == feed_folder(feed, variant) and (not arm or an_experiment_variant):
                return feed, variant, arm or None
    raise ManifestError(
        f"unknown data set {name!r} in the manifest; expected one of {member_data_sets()} (the six collections "
        f"also as <data set>.<experiment variant>), {FALLBACK_DATA_SET!r} or {list(PRODUCT_FEEDS)}. The export "
        "and the loader disagree: deploy the same flashfeed version to both, then re-run the collections task"
    )


def manifest_files(manifest: dict) -> Iterator[tuple[str, dict]]:
    """(data set name, file entry) in manifest order: the order loads and samples rely on."""
    for name, data_set in manifest["data_sets"].items():
        for entry in data_set["files"]:
            yield name, entry


def payload_lines(handle) -> Iterator[bytes]:
    """Non-blank lines without their line terminator: exactly the bytes stored as `payload`."""
    for raw in handle:
        line = raw.rstrip(b"\r\n")
        if line.strip():
            yield line


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < BYTES_PER_KB or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= BYTES_PER_KB
    return f"{size:.1f} GB"


def _file_problems(uri: str, entry: dict, version: str) -> tuple[int, list[str]]:
    """(bytes read, what differs from the manifest entry) of one feeds file."""
    digest = hashlib.sha256()
    size = lines = 0
    try:
        with lake.open_file(uri, "rb") as handle:
            for raw in handle:
                digest.update(raw)
                size += len(raw)
                if raw.strip():
                    lines += 1
    except FileNotFoundError:
        raise ManifestError(f"{uri} is listed in the manifest of {version} but missing{RERUN}") from None
    problems = []
    if digest.hexdigest() != entry["sha256"]:
        problems.append(f"sha256 {digest.hexdigest()} != manifest {entry['sha256']}")
    if "bytes" in entry and size != int(entry["bytes"]):
        problems.append(f"{size} bytes != manifest {entry['bytes']}")
    if lines != int(entry["payloads"]):
        problems.append(f"{lines} payload lines != manifest {entry['payloads']}")
    return size, problems


def verify_checksums(feeds_dir: str, manifest: dict, log: Log = logger) -> int:
    """sha256, size and payload count of every listed file against the manifest; returns bytes read.

    Runs before anything is written, so a file changed after the export (or a partial
    copy) is refused instead of served.
    """
    total_bytes = 0
    for name, entry in manifest_files(manifest):
        uri = join_uri(feeds_dir, entry["path"])
        size, problems = _file_problems(uri, entry, manifest["version"])
        if problems:
            raise ChecksumMismatchError(
                f"refusing to load {manifest['version']}: {uri} ({name}) does not match its manifest: "
                f"{'; '.join(problems)}. The file changed after the export or was copied partially{RERUN}"
            )
        total_bytes += size
    log.info("Checksums OK: %d files, %s, %s payloads match the manifest of %s",
             sum(1 for _ in manifest_files(manifest)), human_bytes(total_bytes),
             f"{int(manifest['total_payloads']):,}", manifest["version"])
    return total_bytes
