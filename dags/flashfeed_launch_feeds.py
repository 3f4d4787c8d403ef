"""
### flashfeed_launch_feeds

Ahead of each launch (11:00, 15:00 and 20:00 America/New_York, 45 minutes early) builds every
member's collections (six, plus "because you viewed") and every product's related and
bought-together lists for the products on sale in [launch, launch + 24 h), loads them into a
new versioned DynamoDB table and flips the served version to it.

`plan_launch` names the launch slot (date, `HHMM`, version `YYYYMMDDtHHMM`). Then one task
group per stage:

1. **inputs**: wait for the day's affinities and related subclass-brands (`flashfeed_daily_model`)
   and sale calendar.
2. **build**: `score_products` (Spark) -> `products/dt=D/launch=HHMM`; `build_collections`
   (Spark) -> `feeds/dt=D/launch=HHMM` with `manifest.json`.
3. **serve**: `validate_feeds` checks the manifest, `load_feeds` writes the table
   `<prefix>feeds-<version>` and verifies it, `flip_served_version` points the API at it
   (conditional write) unless the new version has fewer than `serving.min_coverage_ratio` x
   the served version's members; `apply_retention` deletes feeds tables older than the last
   `serving.retain_versions` served versions (skipped on a dry run).

**Params**: `launch` forces a slot of the run's day; `dry_run` loads and verifies without
flipping; `allow_low_coverage` flips even when the coverage check fails (logged with the
figures); `allow_older_version` serves a slot older than the served version;
`reload_served_version` reloads the slot that is served right now (refused without it) into a
new table `<prefix>feeds-<version>-r<N>` and switches the live version to it once verified.

**Backfills** (`airflow backfill create`, or Backfill in the UI) rebuild each slot's feeds from
that day's data, byte for byte as the first time. A slot older than the served version is
neither loaded nor flipped (those tasks are skipped, saying why) unless `allow_older_version`
is set. Flips run one at a time (`max_active_tis_per_dag=1` and the control item's lease), and
the flip's conditional write refuses to replace a newer served version, so a late run of an
older slot never overtakes a newer one. Re-running a slot overwrites that slot's partitions and
reloads its table from empty (deleting the version's old table first).

**Alerts**: a task that fails for good is logged and posted to FLASHFEED_ALERT_WEBHOOK;
`flashfeed_launch_watch` alerts when a launch is not flipped 15 minutes before it goes live.
Roll back with the `flashfeed_rollback` DAG.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, MultipleCronTriggerTimetable, Param, TaskGroup, task

from flashfeed_airflow.defaults import default_args
from flashfeed_airflow.schedules import (
    LOAD_TIMEOUT,
    NO_RETRIES,
    SPARK_LAUNCH_TIMEOUT,
    SPARK_POOL,
    START_DATE,
    TIMEZONE,
    launch_crons,
    launch_slot_param,
    spark_submit_conf,
)
from flashfeed_airflow.sensors import SuccessMarkerSensor
from flashfeed_airflow.serving import ApplyRetentionOperator, FlipServedVersionOperator, LoadFeedsOperator
from flashfeed_airflow.spark import LakeSparkSubmitOperator, spark_job

PLAN = "ti.xcom_pull(task_ids='plan_launch')"
SLOT_ARGS = ["--dt", f"{{{{ {PLAN}['dt'] }}}}", "--launch", f"{{{{ {PLAN}['launch'] }}}}"]

with DAG(
    dag_id="flashfeed_launch_feeds",
    description="Per-launch collections -> versioned DynamoDB table -> flip of the served version",
    schedule=MultipleCronTriggerTimetable(*launch_crons(), timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retry_delay=timedelta(minutes=1)),
    params={
        "launch": launch_slot_param("build"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Build, load and verify the new table, but do not flip or delete anything."),
        "allow_low_coverage": Param(
            False, type="boolean", title="Allow low coverage",
            description="Flip even if the new version has fewer than serving.min_coverage_ratio x the "
                        "served version's members.",
        ),
        "allow_older_version": Param(
            False, type="boolean", title="Allow an older version",
            description="Load and serve this slot even if it is older than the served version (e.g. to "
                        "serve a backfilled day again). Off: an older slot is built in the lake only.",
        ),
        "reload_served_version": Param(
            False, type="boolean", title="Reload the served version",
            description="Reload this slot even though it is the version served right now: into a new table "
                        "(<prefix>feeds-<version>-r<N>), switched to once verified. Off: such a load is refused.",
        ),
    },
    tags=["flashfeed", "feeds", "spark", "dynamodb"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True, retries=NO_RETRIES)  # pure date arithmetic: a retry cannot change it
    def plan_launch(logical_date=None, dag_run=None, params=None) -> dict:
        """Names the launch slot and the lake partitions this run reads and writes (XCom)."""
        from flashfeed_airflow.planning import plan_launch, run_date

        return plan_launch(run_date(logical_date, dag_run.run_after), params.get("launch") or None)

    plan = plan_launch()

    with TaskGroup("inputs", tooltip="Wait for the day's affinities, related lists and sale calendar (_SUCCESS)"):
        waits = [
            SuccessMarkerSensor(
                task_id=f"wait_for_{name}", partition=f"{{{{ {PLAN}['{name}'] }}}}", producer=producer,
                mode="reschedule", poke_interval=120, timeout=int(timedelta(hours=3).total_seconds()),
                retries=NO_RETRIES,  # timed out = the data is not there; waiting again is a re-run
            )
            for name, producer in (("affinity", "flashfeed_daily_model of the same day"),
                                   ("related", "flashfeed_daily_model (related_items) of the same day"),
                                   ("sale_calendar", "the upstream export of raw sale_calendar"))
        ]

    with TaskGroup("build", tooltip="Score the products on sale, build six collections per member"):
        score_products = LakeSparkSubmitOperator(
            task_id="score_products", application=spark_job("score_products"),
            application_args=SLOT_ARGS, name="flashfeed-score-products", conn_id="spark_default",
            conf=spark_submit_conf("plan_launch"),
            pool=SPARK_POOL, execution_timeout=SPARK_LAUNCH_TIMEOUT,
            doc_md="""
Spark job `spark_jobs/score_products.py --dt D --launch HHMM`. **Reads** the sale calendar and
catalog of D and six months of interactions. **Writes** `products/dt=D/launch=HHMM`: the
in-stock products on sale in [launch, launch + 24 h) with their scores. **Re-run**: clear it
(and downstream); it overwrites this slot's partition only.
""",
        )
        build_collections = LakeSparkSubmitOperator(
            task_id="build_collections", application=spark_job("build_collections"),
            application_args=SLOT_ARGS, name="flashfeed-collections", conn_id="spark_default",
            conf=spark_submit_conf("plan_launch"),
            pool=SPARK_POOL, execution_timeout=SPARK_LAUNCH_TIMEOUT,
            doc_md="""
Spark job `spark_jobs/build_collections.py --dt D --launch HHMM`. **Reads** `affinity/dt=D` and
`products/dt=D/launch=HHMM` and `related/dt=D`. **Writes** `feeds/dt=D/launch=HHMM`: the six
collections (products, brands, categories x full, card) and `because_card` per member, the
fallback payloads, `related` and `bought_together` per product on sale, and `manifest.json`
(counts, sizes, sha256 per file, the related models' test and rule figures). **Re-run**: clear it
(and downstream); same inputs give the same bytes.
""",
        )
        wait_for_feeds = SuccessMarkerSensor(
            task_id="wait_for_feeds", partition=f"{{{{ {PLAN}['feeds'] }}}}", producer="build_collections",
            mode="reschedule", poke_interval=30, timeout=int(timedelta(minutes=30).total_seconds()),
            retries=NO_RETRIES,
        )
        score_products >> build_collections >> wait_for_feeds

    with TaskGroup("serve", tooltip="Validate, load into DynamoDB, flip the served version, retention"):

        @task(multiple_outputs=True, retries=NO_RETRIES)  # a bad manifest stays bad: rebuild the collections instead
        def validate_feeds(plan: dict) -> dict:
            """Refuses an incomplete or inconsistent `manifest.json` before anything is loaded."""
            from flashfeed_airflow.planning import validate_feeds

            return validate_feeds(plan["feeds"], plan["version"])

        load_feeds = LoadFeedsOperator(
            task_id="load_feeds", feeds_uri=f"{{{{ {PLAN}['feeds'] }}}}", version=f"{{{{ {PLAN}['version'] }}}}",
            allow_older_version="{{ params.allow_older_version }}",
            reload_served_version="{{ params.reload_served_version }}", dry_run="{{ params.dry_run }}",
            execution_timeout=LOAD_TIMEOUT,
            doc_md="""
**Reads** `feeds/dt=D/launch=HHMM` (manifest and files). **Writes** the DynamoDB table
`<prefix>feeds-<version>` from empty (the version's old tables deleted first; batch writes,
retried with backoff), then verifies the table's own item count and a byte-for-byte sample and
marks the version loaded. Skipped for a slot older than the served version unless
`allow_older_version`. The served version is refused unless `reload_served_version`: then a new
table `-r<N>` is loaded and switched to once verified. **Re-run**: clear it; it starts from empty.
""",
        )
        flip_served_version = FlipServedVersionOperator(
            task_id="flip_served_version",
            version=f"{{{{ {PLAN}['version'] }}}}",
            manifest_uri=f"{{{{ {PLAN}['feeds'] }}}}/manifest.json",
            dry_run="{{ params.dry_run }}",
            allow_low_coverage="{{ params.allow_low_coverage }}",
            allow_older_version="{{ params.allow_older_version }}",
            retries=NO_RETRIES,  # a lost race or a refused flip needs a person, not a retry
            max_active_tis_per_dag=1,  # backfills: one flip at a time (besides the control item's lease)
            doc_md="""
One conditional write on the control item, under its lease, makes the API serve this version.
Refuses an unloaded version, a coverage drop (param `allow_low_coverage`) and an older version
than the served one (param `allow_older_version`; checked in the write itself, so a late run
never overtakes a newer one: then it is skipped); `dry_run` only logs. **Re-run**: clear it; flipping
to the served version is a no-op. Roll back with `flashfeed_rollback`.
""",
        )
        apply_retention = ApplyRetentionOperator(task_id="apply_retention", dry_run="{{ params.dry_run }}")
        validated = validate_feeds(plan)
        validated >> load_feeds >> flip_served_version >> apply_retention

    plan >> waits >> score_products
    wait_for_feeds >> validated
