"""
### flashfeed_experiment

Manual: stop or resume one variant of the experiment the served version runs (config
`experiments`), without a reload. A stopped variant's members are served control (and reported
as control in `X-Feed-Experiment`) within the read API's pointer cache; resuming serves them
their variant again. The stop is kept in the control item across flips until resumed.

Params: `variant` (a variant of the served experiment other than control) and `action`
(`stop` or `resume`). To end an experiment for good, empty `experiments.name` in the config:
the next launch builds control only.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, task

from flashfeed_airflow.defaults import default_args
from flashfeed_airflow.schedules import NO_RETRIES, START_DATE

with DAG(
    dag_id="flashfeed_experiment",
    description="Manual: stop or resume an experiment variant of the served feeds, without a reload",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retry_delay=timedelta(minutes=1)),
    params={
        "variant": Param("", type="string", pattern=r"^[a-z0-9_]{1,32}$", title="Experiment variant",
                         description="The variant to stop or resume, as named in config experiments.variants "
                                     "(not control)."),
        "action": Param("stop", type="string", enum=["stop", "resume"], title="Stop or resume",
                        description="stop: its members see control from now on; resume: their variant again."),
    },
    tags=["flashfeed", "dynamodb", "experiment"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True, retries=NO_RETRIES)   # a refused variant stays refused: fix the param instead
    def set_experiment_variant(params=None) -> dict:
        """One write on the control item: the variant's members are served control, or their variant again."""
        from flashfeed_airflow.serving import set_experiment_variant

        return set_experiment_variant(params["variant"], params["action"] == "stop")

    set_experiment_variant()
