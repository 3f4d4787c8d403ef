"""The DAGs' Spark applications: spark-submit of an installed job file, with the lake's S3
settings from an Airflow connection. Each job ships the project's Python code to the executors
itself (spark_jobs/executor_code.py), so a cluster's workers need no checkout."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from flashfeed_airflow.aws import DEFAULT_AWS_CONN_ID


def spark_job(name: str) -> str:
    """The file of the Spark application `spark_jobs/<name>.py` where the package spark_jobs is
    (the checkout's, or site-packages'), for spark-submit's application. Found without importing
    anything, so DAG files call it at parse time; a job that is not there fails the parse."""
    package = importlib.util.find_spec("spark_jobs")
    path = Path(package.origin).parent / f"{name}.py" if package and package.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"no Spark job {name!r}: {path or 'the package spark_jobs'} is not installed")
    return str(path)


class LakeSparkSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator for a job that reads and writes the lake. For an `s3a://` lake
    (FLASHFEED_LAKE), the job's environment gets the S3 endpoint and region of the connection
    `aws_conn_id`, which the job's Spark session turns into s3a settings. Credentials: a
    connection's static keys go into the environment too (s3a reads them there, so no secret
    is on a command line); without static keys nothing does, and s3a's provider chain finds
    refreshing credentials itself on the driver and on every executor (environment, web
    identity, container or instance role: `include/spark-conf/spark-defaults.conf`), so no
    temporary token is frozen into a job that may outlive it."""

    def __init__(self, *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    def lake_environment(self) -> dict[str, str]:
        """The environment variables the job needs for the lake (none for a local lake)."""
        from flashfeed.core import lake
        from flashfeed.core.config import lake_root
        from flashfeed_airflow.aws import describe_s3_credentials, s3_settings

        if not lake_root().startswith(lake.S3_SCHEMES):
            return {}
        settings = s3_settings(self.aws_conn_id)
        self.log.info("S3 lake %s: endpoint %s, region %s; Spark signs with %s", lake_root(),
                      settings["endpoint"] or "AWS", settings["region"] or "default",
                      describe_s3_credentials(settings, self.aws_conn_id))
        return lake.s3_environment(settings)

    def execute(self, context: Any) -> None:
        self.env_vars = {**(self.env_vars or {}), **self.lake_environment()}
        return super().execute(context)
