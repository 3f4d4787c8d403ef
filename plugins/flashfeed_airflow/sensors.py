"""Wait for a lake partition's `_SUCCESS` marker (local folder or S3)."""
from __future__ import annotations

from airflow.sdk import BaseSensorOperator


class SuccessMarkerSensor(BaseSensorOperator):
    """Succeeds when `<partition>/_SUCCESS` exists; the partition URI is templated."""

    template_fields = ("partition",)
    ui_color = "#e8f4ea"

    def __init__(self, *, partition: str, **kwargs):
        super().__init__(**kwargs)
        self.partition = partition

    def poke(self, context) -> bool:
        from flashfeed import lake

        marker = lake.success(self.partition)
        fs, path = lake.filesystem(marker)
        if fs.exists(path):
            self.log.info("found %s", marker)
            return True
        self.log.info("not complete yet: %s does not exist (next check in %ss)", marker, self.poke_interval)
        return False
