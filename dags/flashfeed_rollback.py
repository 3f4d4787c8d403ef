"""
### flashfeed_rollback

Manual rollback of the served feed version (no schedule: trigger it from the UI or CLI).

1. `plan_rollback` reads the control item: the version served now and the target, by default
   the previous served version, and checks that the target's table still exists (the error
   lists the versions that do).
2. `rollback_served_version` flips back with the same conditional write as a launch, expecting
   the version read in step 1: if a launch flipped in between, it fails and changes nothing.
   Clearing it after success is a no-op.
3. `apply_retention` deletes feeds tables older than the last `serving.retain_versions`
   served versions (never the served, the previous or an unflipped newer one).

Param `target_version` (`YYYYMMDDtHHMM`, e.g. `20261122t1100`); empty = the previous version.
Triggering twice with an empty target flips back and forth: give the target explicitly.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, task

from flashfeed_airflow.defaults import default_args
from flashfeed_airflow.schedules import NO_RETRIES, START_DATE
from flashfeed_airflow.serving import ApplyRetentionOperator, RollbackServedVersionOperator

PLAN = "ti.xcom_pull(task_ids='plan_rollback')"

with DAG(
    dag_id="flashfeed_rollback",
    description="Manual: serve an older retained feed version again, then apply retention",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retry_delay=timedelta(minutes=1)),
    params={
        "target_version": Param(
            None,
            type=["null", "string"],   # null (left empty in the form) = the previous version
            pattern=r"^$|^[0-9]{8}t[0-9]{4}$",
            title="Version to serve again",
            description="Version to serve again, as YYYYMMDDtHHMM (e.g. 20261122t1100); leave empty "
                        "to serve the previous version again.",
        ),
    },
    tags=["flashfeed", "dynamodb", "rollback"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True)
    def plan_rollback(params=None) -> dict:
        """Reads the control item: the served version and the checked target (XCom)."""
        from flashfeed_airflow.serving import plan_rollback

        return plan_rollback(params.get("target_version") or None)

    rollback_served_version = RollbackServedVersionOperator(
        task_id="rollback_served_version",
        target_version=f"{{{{ {PLAN}['target'] }}}}",
        expected_version=f"{{{{ {PLAN}['served'] }}}}",
        retries=NO_RETRIES,  # a lost race or a refused rollback needs a person, not a retry
        doc_md="One conditional write on the control item, expecting the version `plan_rollback` read: "
               "if a launch flipped in between, it fails and changes nothing. **Re-run**: trigger the DAG "
               "again with an explicit `target_version`.",
    )
    apply_retention = ApplyRetentionOperator(task_id="apply_retention")

    plan_rollback() >> rollback_served_version >> apply_retention
