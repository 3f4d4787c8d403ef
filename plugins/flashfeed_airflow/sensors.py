"""Wait for a lake partition's `_SUCCESS` marker (local folder or S3)."""
from __future__ import annotations

from airflow.sdk import BaseSensorOperator


class SuccessMarkerSensor(BaseSensorOperator):
    """Succeeds when `<partition>/_SUCCESS` exists; the partition URI is templated.

    `producer` says who writes the partition, so that the log of a sensor that times out
    (Airflow's own message only says it timed out) names what to check next.
    """

    template_fields = ("partition",)
    ui_color = "#e8f4ea"

    def __init__(self, *, partition: str, producer: str, **kwargs):
        super().__init__(**kwargs)
        self.partition = partition
        self.producer = producer

    def poke(self, context) -> bool:
        from flashfeed import lake

        marker = lake.success(self.partition)
        fs, path = lake.filesystem(marker)
        if fs.exists(path):
            self.log.info("found %s", marker)
            return True
        self.log.info("not complete yet: %s does not exist (next check in %ss; fails after %ss). It is written "
                      "by %s: if it is late, check that first", marker, self.poke_interval, self.timeout,
                      self.producer)
        return False
