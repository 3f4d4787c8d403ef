"""DAG tests parse the real dags/ folder with Airflow pointed at a throw-away home."""
from __future__ import annotations

import os
import tempfile

# Must happen before Airflow is imported anywhere in this test session.
_HOME = tempfile.mkdtemp(prefix="flashfeed-dagtest-")
os.environ.setdefault("AIRFLOW_HOME", os.path.join(_HOME, "airflow"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
