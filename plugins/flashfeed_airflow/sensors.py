"""Wait for a lake partition's `_SUCCESS` marker (local folder or S3)."""
from __future__ import annotations

from airflow.sdk import BaseSensorOperator

from flashfeed_airflow.aws import DEFAULT_AWS_CONN_ID


class SuccessMarkerSensor(BaseSensorOperator):
    """Succeeds when `<partition>/_SUCCESS` exists; the partition URI is templated.

    An `s3://` or `s3a://` lake is checked with the amazon provider's S3Hook on the Airflow
    connection `aws_conn_id` (its `s3` endpoint, region and credentials); a local one on disk.
    `producer` says who writes the partition, so that the log of a sensor that times out
    (Airflow's own message only says it timed out) names what to check next.
    """

    template_fields = ("partition",)
    ui_color = "#e8f4ea"

    def __init__(self, *, partition: str, producer: str, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID, **kwargs):
        super().__init__(**kwargs)
        self.partition = partition
        self.producer = producer
        self.aws_conn_id = aws_conn_id

    def marker_exists(self, marker: str) -> bool:
        from flashfeed.core import lake

        if marker.startswith(lake.S3_SCHEMES):
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            bucket, key = S3Hook.parse_s3_url(lake.fsspec_url(marker))
            return S3Hook(aws_conn_id=self.aws_conn_id).check_for_key(key, bucket)
        fs, path = lake.filesystem(marker)
        return fs.exists(path)

    def poke(self, context) -> bool:
        from flashfeed.core import lake

        marker = lake.success(self.partition)
        if self.marker_exists(marker):
            self.log.info("found %s", marker)
            return True
        self.log.info("not complete yet: %s does not exist (next check in %ss; fails after %ss). It is written "
                      "by %s: if it is late, check that first", marker, self.poke_interval, self.timeout,
                      self.producer)
        return False
