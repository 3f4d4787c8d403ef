"""flashfeed Airflow operators, sensors and hooks (thin wrappers around the flashfeed library)."""
from flashfeed.core import lake


def _lake_s3_settings() -> dict:
    from flashfeed_airflow.aws import s3_settings

    return s3_settings()


# An s3:// lake read by a task (manifests, feed files, markers) is reached with the
# aws_default connection, resolved at the first S3 access (never at DAG parse time).
lake.default_s3_provider(_lake_s3_settings)
