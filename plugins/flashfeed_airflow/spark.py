"""The DAGs' Spark applications: spark-submit with the lake's S3 settings from an Airflow connection."""
from __future__ import annotations

from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from flashfeed_airflow.aws import DEFAULT_AWS_CONN_ID


class LakeSparkSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator for a job that reads and writes the lake. For an `s3a://` lake
    (FLASHFEED_LAKE), the job's environment gets the S3 endpoint, region and credentials of
    the connection `aws_conn_id`: the job's Spark session turns the first two into s3a settings
    and s3a reads the credentials from the environment, so no secret is on a command line."""

    def __init__(self, *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> None:
        from flashfeed.core import lake
        from flashfeed.core.config import lake_root
        from flashfeed_airflow.aws import s3_settings

        if lake_root().startswith(lake.S3_SCHEMES):
            settings = s3_settings(self.aws_conn_id)
            self.env_vars = {**(self.env_vars or {}), **lake.s3_environment(settings)}
            self.log.info("S3 lake %s: endpoint %s, region %s, credentials of connection %s", lake_root(),
                          settings["endpoint"] or "AWS", settings["region"] or "default", self.aws_conn_id)
        return super().execute(context)
