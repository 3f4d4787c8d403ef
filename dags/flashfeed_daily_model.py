"""
### flashfeed_daily_model

Once a day at 05:00 America/New_York, before the first launch, learns every member's affinity
to the subclass-brands on sale today.

`plan_model_day` names the day D (local date of the run) and the partitions this run owns.
Then one task group per stage:

1. **inputs**: `wait_for_*` wait for the day's raw inputs (`_SUCCESS`): events and returns of
   D-1, catalog and sale calendar of D.
2. **features**: `build_features` (Spark): cleaning, implicit ratings, member groups ->
   `features/dt=D`.
3. **train**: `discover_groups` reads the groups of the day; `train_global_als` fits one ALS
   over every member -> `models/dt=D/global`; `train_group_als` is one Spark application per
   member group (mapped) -> `models/dt=D/group=G`, `affinity/dt=D/group=G`. Its quality gate
   judges the group's own ALS, the global one, a repeat-aware blend and popularity on the same
   held-out members and serves the best (popularity when no model reaches it); a group where no
   model trains at all is served its last good model, or popularity.
4. **related**: `related_items` (Spark) -> `related/dt=D`: related and bought-together
   subclass-brands, tested offline against popularity (runs beside the training).
5. **publish**: `report_quality` logs which groups fell back and why, and writes
   `models/dt=D/metrics.json` and `report.png`; `publish_affinity` seals
   `affinity/dt=D/_SUCCESS`, which the launch feeds wait for.

Re-running a day (clear + re-run, or a backfill) overwrites that day's partitions only; a
backfill reads each day's own raw partitions. Param `groups` retrains only the listed groups
(the others keep the day's earlier output). Every Spark application takes a slot of the
`flashfeed_spark` pool; a task that fails for good alerts (log + FLASHFEED_ALERT_WEBHOOK).
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, CronTriggerTimetable, Param, TaskGroup, task

from flashfeed_airflow.defaults import default_args
from flashfeed_airflow.schedules import (
    DAILY_MODEL_CRON,
    NO_RETRIES,
    SPARK_DAILY_TIMEOUT,
    SPARK_POOL,
    START_DATE,
    TIMEZONE,
    spark_submit_conf,
)
from flashfeed_airflow.sensors import SuccessMarkerSensor
from flashfeed_airflow.spark import LakeSparkSubmitOperator, spark_job

RAW_INPUTS = ("events", "returns", "catalog", "sale_calendar")
PLAN = "ti.xcom_pull(task_ids='plan_model_day')"

with DAG(
    dag_id="flashfeed_daily_model",
    description="Daily per-group ALS affinities of members to subclass-brands on sale",
    schedule=CronTriggerTimetable(DAILY_MODEL_CRON, timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retry_delay=timedelta(minutes=2)),
    params={
        "groups": Param(
            [],
            type="array",
            items={"type": "string", "pattern": "^[0-9]{2,3}$"},
            uniqueItems=True,
            title="Member groups to retrain",
            description="Group keys of 2-3 digits, one per line (e.g. 13 = women, spend bucket 3); "
                        "empty = every group of the day. The other groups keep the day's earlier output.",
        ),
    },
    tags=["flashfeed", "model", "spark"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True, retries=NO_RETRIES)  # pure date arithmetic: a retry cannot change it
    def plan_model_day(logical_date=None, dag_run=None) -> dict:
        """Names the model day D and the lake partitions this run reads and writes (XCom)."""
        from flashfeed_airflow.planning import plan_model_day, run_date

        return plan_model_day(run_date(logical_date, dag_run.run_after))

    plan = plan_model_day()

    with TaskGroup("inputs", tooltip="Wait for the day's raw partitions (_SUCCESS)"):
        waits = [
            SuccessMarkerSensor(
                task_id=f"wait_for_{name}",
                partition=f"{{{{ {PLAN}['raw']['{name}'] }}}}",
                producer=f"the upstream export of raw {name} (or `flashfeed import`)",
                mode="reschedule",
                poke_interval=300,
                timeout=int(timedelta(hours=5).total_seconds()),
                retries=NO_RETRIES,  # timed out = the data is not there; waiting again is a re-run
            )
            for name in RAW_INPUTS
        ]

    with TaskGroup("features", tooltip="Cleaning, implicit ratings, member groups"):
        build_features = LakeSparkSubmitOperator(
            task_id="build_features",
            application=spark_job("features"),
            application_args=["--dt", f"{{{{ {PLAN}['dt'] }}}}"],
            name="flashfeed-features",
            conn_id="spark_default", conf=spark_submit_conf("plan_model_day"),
            pool=SPARK_POOL,
            execution_timeout=SPARK_DAILY_TIMEOUT,
            doc_md="""
Spark job `spark_jobs/features.py --dt D`. **Reads** raw events and returns up to D-1 (the
look-back window), catalog and sale calendar of D. **Writes** `features/dt=D` (ratings,
`groups.json`, quality-gate split) and counted rejects under `rejects/dt=D`. Fails when more
than `cleaning.max_reject_share` of the input is rejected. **Re-run**: clear this task; it
overwrites `features/dt=D` only, then clear the train stage.
""",
        )

    with TaskGroup("train", tooltip="One ALS model per member group, behind a quality gate"):

        @task
        def discover_groups(plan: dict, params=None) -> list[list[str]]:
            """Reads `features/dt=D/groups.json`; returns the spark-submit arguments per group."""
            from flashfeed_airflow.planning import discover_groups

            groups = discover_groups(plan["features"], params.get("groups") or None)
            return [["--dt", plan["dt"], "--group", group] for group in groups]

        groups = discover_groups(plan)
        train_global_als = LakeSparkSubmitOperator(
            task_id="train_global_als",
            application=spark_job("train_global"),
            application_args=["--dt", f"{{{{ {PLAN}['dt'] }}}}"],
            name="flashfeed-als-global",
            conn_id="spark_default", conf=spark_submit_conf("plan_model_day"),
            pool=SPARK_POOL,
            execution_timeout=SPARK_DAILY_TIMEOUT,
            doc_md="""
Spark job `spark_jobs/train_global.py --dt D`: one implicit ALS over every member (settings:
`als.group_overrides.global`), a candidate of every group's quality gate. **Reads**
`features/dt=D` (every group's ratings and gate split). **Writes** `models/dt=D/global`. A
failed fit is recorded in its `metrics.json` and the groups judge their other candidates.
**Re-run**: clear this task and the train_group_als tasks.
""",
        )
        train_group_als = LakeSparkSubmitOperator.partial(
            task_id="train_group_als",
            application=spark_job("train_group"),
            name="flashfeed-als",
            conn_id="spark_default", conf=spark_submit_conf("plan_model_day"),
            pool=SPARK_POOL,
            execution_timeout=SPARK_DAILY_TIMEOUT,
            map_index_template="group {{ task.application_args[-1] }}",
            doc_md="""
Spark job `spark_jobs/train_group.py --dt D --group G`, one mapped task per member group.
**Reads** `features/dt=D` (the group's ratings and gate split). **Writes**
`models/dt=D/group=G` (the served factors, `metrics.json` with every candidate's NDCG figures
and the gate's choice) and `affinity/dt=D/group=G`. A group whose best model is below
popularity serves popularity (the task still succeeds; see report_quality). **Re-run**: clear
one map index to retrain one group, or trigger the DAG with param `groups`.
""",
        ).expand(application_args=groups)

    with TaskGroup("related", tooltip="Item-to-item co-occurrence and bought-together rules"):
        related_items = LakeSparkSubmitOperator(
            task_id="related_items",
            application=spark_job("related"),
            application_args=["--dt", f"{{{{ {PLAN}['dt'] }}}}"],
            name="flashfeed-related",
            conn_id="spark_default", conf=spark_submit_conf("plan_model_day"),
            pool=SPARK_POOL,
            execution_timeout=SPARK_DAILY_TIMEOUT,
            doc_md="""
Spark job `spark_jobs/related.py --dt D`. **Reads** `features/dt=D/events`. **Writes**
`related/dt=D`: each subclass-brand's related subclass-brands from member co-occurrence
(log-likelihood ratio; count and Jaccard tested alongside) and its bought-together ones
(FP-Growth rules over baskets), each tested offline against popularity first (MRR in
`metrics.json`; a model below popularity is not served). The launches wait for its
`_SUCCESS`. **Re-run**: clear this task; it overwrites `related/dt=D` only.
""",
        )

    with TaskGroup("publish", tooltip="Quality report, then seal the day's affinities"):

        @task(multiple_outputs=True)
        def report_quality(plan: dict) -> dict:
            """Logs which groups serve today's model and which fell back; writes
            `models/dt=D/metrics.json` and `report.png`."""
            from flashfeed_airflow.planning import report_quality

            return report_quality(plan["models"], plan["features"], plan["dt"])

        @task
        def publish_affinity(plan: dict) -> list[str]:
            """Seals `affinity/dt=D/_SUCCESS` once every group of the day has its affinities;
            the launch feeds of day D wait for it."""
            from flashfeed_airflow.planning import publish_affinity

            return publish_affinity(plan["affinity"], plan["features"])

        quality = report_quality(plan)
        quality >> publish_affinity(plan)

    plan >> waits >> build_features >> groups >> train_global_als >> train_group_als
    build_features >> related_items
    train_group_als >> quality
