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
    """An S3 lake's endpoint and region from the connection (its `s3` endpoint in
    `service_config`, else its `endpoint_url`), with its credentials in one of two forms: what
    `flashfeed.core.lake.use_s3` and a Spark job's environment (`lake.s3_environment`) take.

    - The connection holds static keys (login and password, or `aws_access_key_id` in its extra,
      and no `role_arn`), e.g. a local S3-compatible store: `access_key`, `secret_key` and
      the `session_token` stored with them, if any.
    - Otherwise (an instance or container role, IRSA, a profile, a role the hook assumes): no
      keys at all, and `credentials` is the hook's botocore credentials object, which refreshes
      itself before it expires. The task's S3 client takes its current values for every lake
      operation, and a Spark job gets no keys: s3a's own provider chain
      (`include/spark-conf/spark-defaults.conf`) finds and refreshes them on the driver and on
      every executor. Nothing is frozen, so a job may outlive a temporary token.
    """
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    connection = hook.conn_config
    settings = {"endpoint": connection.get_service_endpoint_url("s3"), "region": connection.region_name,
                "access_key": None, "secret_key": None, "session_token": None, "credentials": None,
                "role_arn": connection.role_arn}
    if has_static_keys(connection):
        settings.update(access_key=connection.aws_access_key_id, secret_key=connection.aws_secret_access_key,
                        session_token=connection.aws_session_token)
    else:
        settings["credentials"] = hook.get_session().get_credentials()
    return settings


def has_static_keys(connection) -> bool:
    """Whether an AWS connection (the hook's `conn_config`) signs with the keys it holds, rather
    than with credentials the hook or AWS's chain obtains (and refreshes)."""
    return bool(connection.aws_access_key_id and connection.aws_secret_access_key and not connection.role_arn)


def describe_s3_credentials(settings: dict, aws_conn_id: str | None) -> str:
    """How a task's S3 settings sign, for its log (never a secret)."""
    if settings.get("access_key"):
        return f"the static keys of connection {aws_conn_id}"
    chain = ("AWS's provider chain where it runs (environment, web identity, container or instance role), "
             "refreshed before each token expires")
    if settings.get("role_arn"):
        return (f"{chain}: connection {aws_conn_id} assumes role {settings['role_arn']} for the task's own calls "
                "only, so that chain must reach the lake too (docs/operations.md#credentials-that-refresh)")
    return f"no keys in connection {aws_conn_id}: {chain}"
