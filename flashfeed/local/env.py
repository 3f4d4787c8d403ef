"""The environment every local flashfeed process runs in (Airflow, Spark, DynamoDB, API).

One place decides where local state lives and which endpoints are used, so that `make demo`,
`make airflow`, the tests and a user's shell all agree. Values already set are kept, so a
production deployment overrides any of them from its own environment.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from flashfeed.core.config import flashfeed_home, project_path
from flashfeed.local import postgres as local_postgres

DEFAULT_DYNAMODB_PORT = 8000
LOCAL_SPARK_MASTER = "local[*]"


def project_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    home = Path(env.get("FLASHFEED_HOME") or flashfeed_home())
    venv_bin = str(Path(sys.executable).parent)
    defaults = {
        "FLASHFEED_HOME": str(home),
        "FLASHFEED_LAKE": str(home / "lake"),
        "FLASHFEED_DYNAMODB_ENDPOINT": f"http://127.0.0.1:{env.get('FLASHFEED_DYNAMODB_PORT', DEFAULT_DYNAMODB_PORT)}",
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project_path("dags")),
        # A checkout's plugins/; an installed package has none (flashfeed_airflow is a package there).
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(project_path("plugins")),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "airflow" / "logs"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": "8080",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": LOCAL_SPARK_MASTER}),
        "SPARK_LOCAL_IP": "127.0.0.1",  # Spark's driver and UI listen on loopback only
        "SPARK_CONF_DIR": str(project_path("include", "spark-conf")),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        # Local DynamoDB accepts any credentials; real AWS uses the deployment's own.
        "AWS_ACCESS_KEY_ID": "flashfeed-local",
        "AWS_SECRET_ACCESS_KEY": "flashfeed-local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    # The tasks' DynamoDB (flashfeed_airflow.aws): the project's own, through Airflow's
    # connection aws_default; a deployment defines aws_default in its secrets backend instead.
    env.setdefault("AIRFLOW_CONN_AWS_DEFAULT", aws_connection(
        env["FLASHFEED_DYNAMODB_ENDPOINT"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
        env["AWS_DEFAULT_REGION"]))
    # Airflow's metadata: the project's PostgreSQL (flashfeed/local/postgres.py, started by the
    # commands that run Airflow); its password is read from PGPASSFILE, never from the URL.
    env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", local_postgres.sqlalchemy_url(
        local_postgres.configured_port(env), env.get("FLASHFEED_POSTGRES_DATABASE", local_postgres.DATABASE)))
    env.setdefault("PGPASSFILE", str(local_postgres.password_file(home)))
    # Task processes report to the api-server's execution API; Airflow's default URL assumes
    # port 8080, so follow the configured host and port.
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                   f"http://{env['AIRFLOW__API__HOST']}:{env['AIRFLOW__API__PORT']}/execution/")
    # spark-submit and airflow must come from the project's environment.
    if not env.get("PATH", "").startswith(venv_bin):
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    return env


def aws_connection(dynamodb_endpoint: str, access_key: str, secret_key: str, region: str) -> str:
    """An Airflow AWS connection (JSON, for AIRFLOW_CONN_<ID>) whose DynamoDB is `dynamodb_endpoint`."""
    return json.dumps({"conn_type": "aws", "login": access_key, "password": secret_key,
                       "extra": {"region_name": region,
                                 "service_config": {"dynamodb": {"endpoint_url": dynamodb_endpoint}}}})
