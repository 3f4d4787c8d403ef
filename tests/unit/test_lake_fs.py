"""LakeFS without a Spark session: what train_group uses when a group fits on the driver."""
from __future__ import annotations

from spark_jobs.common import LakeFS


def test_lake_fs_without_a_session_writes_reads_and_renames_like_the_sessions(spark, tmp_path):
    alone, with_session = LakeFS(), LakeFS(spark)
    alone.write_json(f"{tmp_path}/staging/metrics.json", {"served_from": "model"})
    alone.rename(f"{tmp_path}/staging", f"{tmp_path}/models/group=13")
    assert not alone.exists(f"{tmp_path}/staging")
    assert with_session.read_json(f"{tmp_path}/models/group=13/metrics.json") == {"served_from": "model"}
    assert alone.list_dirs(f"{tmp_path}/models") == ["group=13"]
