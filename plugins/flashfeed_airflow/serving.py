"""Airflow operators for the last step of a launch: load the feeds into DynamoDB, then flip.

Thin wrappers around `flashfeed.serving` (loader, control, retention) (heavy imports happen in `execute`, so DAG
parsing stays cheap). DynamoDB's endpoint, region and credentials come from the Airflow
connection `aws_conn_id` (default `aws_default`; `flashfeed_airflow.aws`), table names from
config `serving.table_prefix`.

Logs are written for the person watching the 10:45 run before an 11:00 launch: what is being
done and on how much data, progress, and on failure the cause and the next step.
"""
from __future__ import annotations

from typing import Any, Sequence

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from flashfeed_airflow.aws import DEFAULT_AWS_CONN_ID, dynamodb_client

TRUE_STRINGS = {"true", "1", "yes", "on"}
FALSE_STRINGS = {"false", "0", "no", "off", ""}


def _as_bool(value: Any, name: str) -> bool:
    """Templated flags render to strings ("False" is truthy): parse them explicitly."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_STRINGS:
        return True
    if text in FALSE_STRINGS or text == "none":
        return False
    raise ValueError(f"{name}={value!r} is not a boolean (use true or false)")


def _skip_older_version(version: str, served: dict | None, allow_older: bool, log, doing: str) -> None:
    """A backfill rebuilds old slots in the lake; it must not serve them over a newer version
    unless the run asks for it (param allow_older_version)."""
    from flashfeed.serving.control import is_older_version

    if not is_older_version(version, served and served["version"]):
        return
    if allow_older:
        log.warning("%s %s although it is older than the served version %s: allow_older_version=true",
                    doing, version, served["version"])
        return
    raise AirflowSkipException(
        f"not {doing.lower()} {version}: it is older than the served version {served['version']} (a "
        "backfill or a late re-run); its feeds stay in the lake. To serve it anyway, trigger this slot "
        "with param allow_older_version=true")


class LoadFeedsOperator(BaseOperator):
    """Load one launch's feeds (`<feeds_uri>/manifest.json` and the files it lists) into the
    versioned table `<prefix>feeds-<version>` and verify it against the manifest.

    Returns (XCom) `{"table": ..., "written": ..., "version": ...}`. Restartable: a retry
    deletes the version's tables and loads a new one, so nothing of an earlier export survives;
    verification counts the table's own items. The version is marked loaded (and so may be
    flipped to) only after its verification passes; the mark is removed as soon as a load of it
    starts. Never flips; `FlipServedVersionOperator` does that afterwards. Skipped for a version
    older than the served one unless `allow_older_version` (nothing would serve it).

    The served version itself is refused unless `reload_served_version`: then it is loaded into
    a new table `<prefix>feeds-<version>-r<N>` and, once verified, the served table switches to
    it in one conditional write (not with `dry_run`: verified only).
    """

    template_fields: Sequence[str] = ("feeds_uri", "version", "allow_older_version", "reload_served_version",
                                      "dry_run")
    ui_color = "#d9f0ff"

    def __init__(self, *, feeds_uri: str, version: str, allow_older_version: bool | str = False,
                 reload_served_version: bool | str = False, dry_run: bool | str = False,
                 aws_conn_id: str | None = DEFAULT_AWS_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self.feeds_uri = feeds_uri
        self.version = version
        self.allow_older_version = allow_older_version
        self.reload_served_version = reload_served_version
        self.dry_run = dry_run

    def execute(self, context: Any) -> dict:
        from flashfeed.core.config import load_config
        from flashfeed.serving import control, errors, loader, manifests, tables

        config = load_config()["serving"]
        manifest = manifests.read_manifest(self.feeds_uri)
        if manifest["version"] != self.version:
            raise errors.ManifestError(
                f"manifest at {self.feeds_uri} is for version {manifest['version']}, but this run "
                f"loads {self.version}; the feeds partition holds another launch's export. "
                "Re-run the collections task for this launch"
            )
        client = dynamodb_client(self.aws_conn_id)
        table = tables.feeds_table(self.version)
        served = control.served_version(client)
        _skip_older_version(self.version, served,
                            _as_bool(self.allow_older_version, "allow_older_version"), self.log, "Loading")
        data_sets = ", ".join(f"{name} {int(ds['payloads']):,}" for name, ds in manifest["data_sets"].items())
        self.log.info(
            "Loading version %s: %s payloads for %s members (%s) from %s",
            self.version, f"{int(manifest['total_payloads']):,}",
            f"{int(manifest.get('members', 0)):,}" if "members" in manifest else "?", data_sets, self.feeds_uri,
        )
        try:
            result = loader.load_feeds(client, self.feeds_uri, manifest, threads=config["load_threads"],
                                       reload_served=_as_bool(self.reload_served_version, "reload_served_version"),
                                       log=self.log)
            table = result.table
            loader.verify_load(client, None, manifest, self.feeds_uri, result.written,
                               config["verify_sample_members"], seed=self.version, log=self.log, table=result.table,
                               replaces=result.replaces, dry_run=_as_bool(self.dry_run, "dry_run"))
        except errors.ServingStoreError as error:
            self.log.error("Load of %s into %s FAILED, nothing was flipped: %s", self.version, table, error)
            raise
        except Exception as error:
            self.log.error(
                "Load of %s into %s FAILED, nothing was flipped (%s: %s). Next step: check that "
                "DynamoDB is reachable (Airflow connection %s: endpoint, region, credentials), then "
                "clear this task; the load is restartable", self.version, table, type(error).__name__, error,
                self.aws_conn_id,
            )
            raise
        if result.replaces is None:
            self.log.info("Version %s is loaded and verified in %s; ready to flip", self.version, table)
        elif not _as_bool(self.dry_run, "dry_run"):
            self.log.info("Served version %s reloaded: served from %s now (was %s)", self.version, table,
                          result.replaces)
        return {"table": table, "written": result.written, "version": self.version}


class FlipServedVersionOperator(BaseOperator):
    """Serve `version`: one conditional write on the control item, under its lease, expecting
    the version that is served now (read first). Also the rollback: give a retained older version.

    With `dry_run` it only logs what it would do (and checks the target table exists). A version
    older than the served one is skipped unless `allow_older_version`, also when a newer one was
    flipped after this task read the pointer (the write's own condition: a late run of a
    backfill never overtakes a newer one).
    Returns (XCom) `{"version", "previous", "dry_run", "flipped"}`.
    """

    template_fields: Sequence[str] = ("version", "manifest_uri", "dry_run", "allow_low_coverage",
                                      "allow_older_version")
    ui_color = "#ffe4c4"

    def __init__(self, *, version: str, manifest_uri: str, dry_run: bool | str = False,
                 allow_low_coverage: bool | str = False, allow_older_version: bool | str = False,
                 aws_conn_id: str | None = DEFAULT_AWS_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self.version = version
        self.manifest_uri = manifest_uri
        self.dry_run = dry_run
        self.allow_low_coverage = allow_low_coverage
        self.allow_older_version = allow_older_version

    def _check_coverage(self, served: dict | None, allow: bool, dry_run: bool) -> None:
        """Refuse (unless `allow`) when the new version has fewer than `serving.min_coverage_ratio`
        x the served version's members (manifest `members`)."""
        from flashfeed.serving import control, errors, manifests

        if not served:
            return
        new_manifest = manifests.read_manifest_uri(self.manifest_uri)
        served_uri = served.get("manifest")
        try:
            served_manifest = manifests.read_manifest_uri(served_uri) if served_uri else None
        except errors.ManifestError as error:
            served_manifest = None
            self.log.warning("Coverage check skipped: the served version's manifest cannot be read (%s)", error)
        if served_manifest is None:
            if not served_uri:
                self.log.warning("Coverage check skipped: the control item records no manifest for %s",
                                 served["version"])
            return
        coverage = control.check_coverage(new_manifest, served_manifest)
        if coverage.ok:
            self.log.info("Coverage check passed: %s %s", self.version, coverage.describe())
            return
        if allow:
            self.log.warning("%s: %s, flipped because allow_low_coverage=true",
                             self.version, coverage.describe())
            return
        message = (f"refusing to flip to {self.version}: {coverage.describe()} (served {served['version']}). "
                   "Next step: check the collections export of this launch; if the drop is expected, "
                   "re-run with allow_low_coverage=true")
        if dry_run:
            self.log.warning("DRY RUN: a real run would fail: %s", message)
            return
        self.log.error(message)
        raise errors.CoverageError(message)

    def execute(self, context: Any) -> dict:
        from flashfeed.serving import control, errors, tables

        dry_run = _as_bool(self.dry_run, "dry_run")
        allow_low_coverage = _as_bool(self.allow_low_coverage, "allow_low_coverage")
        allow_older = _as_bool(self.allow_older_version, "allow_older_version")
        client = dynamodb_client(self.aws_conn_id)
        served = control.served_version(client)
        current = served["version"] if served else None
        outcome = {"version": self.version, "previous": current, "dry_run": dry_run, "flipped": False}

        if current == self.version:
            self.log.info("Version %s is already served (flipped at %s, table %s); nothing to do",
                          self.version, served.get("flipped_at"), served["table"])
            return outcome
        _skip_older_version(self.version, served, allow_older, self.log, "Flipping to")
        marks = control.loaded_versions(client)
        table = marks[self.version]["table"] if self.version in marks else tables.feeds_table(self.version)
        if not tables.table_exists(client, table):
            message = (f"cannot flip to {self.version}: table {table} does not exist or is not ACTIVE. "
                       "Next step: run (or clear) the load task for this version first")
            self.log.error(message)
            raise errors.TableNotFoundError(message)
        if self.version not in marks:
            message = (f"cannot flip to {self.version}: table {table} exists but is not marked loaded and "
                       "verified (its load failed, is still running, or was never verified). "
                       "Next step: clear the load task for this version; it rewrites and verifies the table")
            self.log.error(message)
            raise errors.NotLoadedError(message)
        self._check_coverage(served, allow_low_coverage, dry_run)
        if dry_run:
            self.log.info("DRY RUN: would flip served version %s -> %s (table %s, manifest %s); not flipping",
                          current or "nothing", self.version, table, self.manifest_uri)
            return outcome

        self.log.info("Flipping served version %s -> %s (table %s, manifest %s)",
                      current or "nothing", self.version, table, self.manifest_uri)
        try:
            result = control.flip(client, None, self.version, self.manifest_uri, expected_version=current,
                                  allow_older=allow_older, log=self.log)
        except errors.OlderVersionError as error:   # a newer run (e.g. of the same backfill) flipped meanwhile
            raise AirflowSkipException(f"not flipping: {error}") from None
        except errors.FlipConflictError as error:
            self.log.error("%s. Next step: if %s should still be served, check the control item "
                           "(%s) and clear this task", error, self.version, tables.control_table())
            raise
        except errors.NotLoadedError as error:   # a reload of this version started after the check above
            self.log.error("%s", error)
            raise
        self.log.info("Served version is now %s (previous %s, flipped at %s); roll back by flipping to %s",
                      result["version"], current or "nothing", result["flipped_at"], current or "-")
        outcome["flipped"] = True
        return outcome


def plan_rollback(target_version: str | None = None, log: Any = None,
                  aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> dict:
    """Resolve a rollback before doing it (`retention.rollback_target`): the version served
    now, the target (default: the previous one), checked to still be servable."""
    import logging

    from flashfeed.serving import retention

    log = log or logging.getLogger(__name__)
    served, target, mark = retention.rollback_target(dynamodb_client(aws_conn_id), None, target_version)
    table = mark["table"] if mark else served["table"]
    log.info("Rollback plan: served %s -> %s (table %s)", served["version"], target, table)
    return {"served": served["version"], "target": target, "table": table}


def set_experiment_variant(variant: str, stop: bool, log: Any = None,
                           aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> dict:
    """Stop (serve as control) or resume an experiment variant of the served version: one write
    on the control item, no reload. Refuses a variant the served version's experiment lacks."""
    import logging

    from flashfeed.core import experiments
    from flashfeed.serving import control

    log = log or logging.getLogger(__name__)
    client = dynamodb_client(aws_conn_id)
    served = control.served_version(client, None)
    experiment = experiments.from_dict((served or {}).get(control.EXPERIMENT))
    if experiment is None or variant not in {v.name for v in experiment.treatments}:
        known = [v.name for v in experiment.treatments] if experiment else []
        raise ValueError(
            f"the served version {served and served['version']} runs "
            f"{'experiment ' + experiment.name if experiment else 'no experiment'}; variant {variant!r} is not one "
            f"of its variants {known} (control cannot be stopped). Check config experiments and the served version")
    after = control.set_variant_stopped(client, None, experiment.name, variant, stop)
    log.info("Experiment %s: variant %s %s; stopped variants now %s (the API follows within "
             "serving.api_pointer_cache_seconds)", experiment.name, variant,
             "stopped: its members are served control" if stop else "resumed", after.get("stopped"))
    return {"experiment": experiment.name, "variant": variant, "stopped": after.get("stopped", [])}


class RollbackServedVersionOperator(BaseOperator):
    """Serve an older retained version again: `retention.rollback`, a conditional write
    expecting `expected_version` (the version served when the rollback was planned).

    Empty `target_version` = the control item's previous version. A retry after success is a
    no-op (the target is already served). Returns (XCom) `{"version", "previous", "flipped"}`.
    """

    template_fields: Sequence[str] = ("target_version", "expected_version")
    ui_color = "#ffd0d0"

    def __init__(self, *, target_version: str = "", expected_version: str = "",
                 aws_conn_id: str | None = DEFAULT_AWS_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self.target_version = target_version
        self.expected_version = expected_version

    def execute(self, context: Any) -> dict:
        from flashfeed.serving import errors, retention

        target = (self.target_version or "").strip() or None
        expected = (self.expected_version or "").strip() or None
        try:
            result = retention.rollback(dynamodb_client(self.aws_conn_id), None, target, expected_version=expected,
                                    log=self.log)
        except errors.ServingStoreError as error:
            self.log.error("Rollback FAILED, nothing was changed: %s", error)
            raise
        return {"version": result["version"], "previous": result.get("previous"), "flipped": result["flipped"]}


class ApplyRetentionOperator(BaseOperator):
    """Delete old feeds tables: keep the last `keep` served versions (default config
    `serving.retain_versions`), never the served, the previous, or a not-yet-flipped newer one.
    Under the control item's lease, each version's loaded mark is removed with a conditional
    write first; its tables (reloads included) are deleted after.

    Skipped (not failed) when `dry_run` is true: a dry run changes nothing in DynamoDB.
    Returns (XCom) the deleted table names.
    """

    template_fields: Sequence[str] = ("dry_run",)
    ui_color = "#eeeeee"

    def __init__(self, *, keep: int | None = None, dry_run: bool | str = False,
                 aws_conn_id: str | None = DEFAULT_AWS_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self.keep = keep
        self.dry_run = dry_run

    def execute(self, context: Any) -> list[str]:
        if _as_bool(self.dry_run, "dry_run"):
            raise AirflowSkipException("dry run: nothing was flipped, so no table is deleted")
        from flashfeed.core.config import load_config
        from flashfeed.serving import retention

        keep = int(self.keep if self.keep is not None else load_config()["serving"]["retain_versions"])
        return retention.apply_retention(dynamodb_client(self.aws_conn_id), None, keep, log=self.log)
