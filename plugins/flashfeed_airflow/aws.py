"""AWS clients of the flashfeed tasks, from an Airflow connection (the amazon provider's hook).

Every task that touches DynamoDB takes `aws_conn_id` (default `aws_default`): endpoint, region
and credentials come from that connection, so a secrets backend provides them in production.
Locally `flashfeed.local.env.project_env` defines `aws_default` (AIRFLOW_CONN_AWS_DEFAULT) with the
project's own DynamoDB as the `dynamodb` endpoint of its `service_config`. Imported by tasks
only, never at DAG parse time.
"""
from __future__ import annotations

DEFAULT_AWS_CONN_ID = "aws_default"


def dynamodb_client(aws_conn_id: str | None = DEFAULT_AWS_CONN_ID):
    """A boto3 DynamoDB client for the connection, with the loader's pool, retries and timeouts
    (`tables.client_config`). Region: the connection's, else config `serving.region`."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    from flashfeed.serving import tables

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="dynamodb", config=tables.client_config())
    region = hook.conn_config.region_name or tables.serving_config()["region"]
    return hook.get_client_type(region_name=region)


def s3_settings(aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> dict:
    """An S3 lake's endpoint, region and credentials from the connection (its `s3` endpoint in
    `service_config`, else its `endpoint_url`; credentials as the hook resolves them, an
    instance role included): what `flashfeed.core.lake.use_s3` and a Spark job's environment take."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    credentials = hook.get_credentials()
    return {"endpoint": hook.conn_config.get_service_endpoint_url("s3"), "region": hook.conn_config.region_name,
            "access_key": credentials.access_key, "secret_key": credentials.secret_key,
            "session_token": credentials.token}
