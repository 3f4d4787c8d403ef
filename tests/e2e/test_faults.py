"""Faults, each injected for real: the local DynamoDB killed in the middle of a load, a Spark job
killed by SIGKILL while it writes, the lake's disk full while a partition is written. After each,
nothing is half-served or sealed half-written, and the next run completes. (Two launch runs
racing to flip: tests/unit/test_serving_store.py, exactly one wins.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from flashfeed.core import lake
from flashfeed.core.config import REPO_ROOT
from flashfeed.local import dynamodb as local_dynamodb
from flashfeed.serving import control, errors, loader, tables
from tests.conftest import start_on_free_port
from tests.e2e.helpers import e2e_env
from tests.unit.test_serving_store import write_feeds

DAY = "2026-11-22"
OLD, NEW = "20261122t1100", "20261122t1500"


class KillAfterBatches:
    """The loader's boto3 client, passed through, except that the local DynamoDB is killed
    (SIGKILL, by its PID) just before the `after`-th BatchWriteItem."""

    def __init__(self, client, home: Path, after: int):
        self._client, self._home, self._after, self.batches = client, home, after, 0

    def batch_write_item(self, **kwargs):
        self.batches += 1
        if self.batches == self._after:
            pid = json.loads(local_dynamodb.pid_file(self._home).read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
        return self._client.batch_write_item(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_dynamodb_killed_in_the_middle_of_a_load_then_restarted(tmp_path, monkeypatch):
    home = tmp_path / "dynamodb-home"
    endpoint = start_on_free_port(home)
    port = int(endpoint.rsplit(":", 1)[1])
    prefix = f"kill{uuid.uuid4().hex[:6]}-"
    try:
        client = tables.dynamodb_client(endpoint)
        old_feeds, new_feeds = tmp_path / "old", tmp_path / "new"
        old = write_feeds(old_feeds, members=20, version=OLD, files_per_data_set=1)
        result = loader.load_feeds(client, str(old_feeds), old, prefix, threads=2)
        loader.verify_load(client, prefix, old, str(old_feeds), result.written, sample_members=5, seed=1)
        control.flip(client, prefix, OLD, str(old_feeds / "manifest.json"), expected_version=None)

        new = write_feeds(new_feeds, members=400, version=NEW, files_per_data_set=2)
        dying = KillAfterBatches(client, home, after=20)            # 19 batches (475 items) land first
        with pytest.raises((BotoCoreError, ClientError)):
            loader.load_feeds(dying, str(new_feeds), new, prefix, threads=2)
        assert dying.batches >= 20

        local_dynamodb.start(home=home, port=port)                  # same data folder: what was written stays
        client = tables.dynamodb_client(endpoint)
        assert control.served_version(client, prefix)["version"] == OLD   # nothing half-served ...
        assert NEW not in control.loaded_versions(client, prefix)
        with pytest.raises(errors.NotLoadedError):                   # ... and the half-loaded version refused
            control.flip(client, prefix, NEW, str(new_feeds / "manifest.json"), expected_version=OLD)

        result = loader.load_feeds(client, str(new_feeds), new, prefix, threads=2)   # the re-run
        assert result.written == new["total_payloads"]
        loader.verify_load(client, prefix, new, str(new_feeds), result.written, sample_members=20, seed=2)
        control.flip(client, prefix, NEW, str(new_feeds / "manifest.json"), expected_version=OLD)
        assert control.served_version(client, prefix)["version"] == NEW
    finally:
        local_dynamodb.stop(home=home)


# --- Spark jobs and the importer under faults --------------------------------------------------
def _spark_submit(env: dict, job: str, *args: str) -> subprocess.Popen:
    """A job as the DAGs run it (spark-submit, local mode), in its own process group."""
    return subprocess.Popen(["spark-submit", "--master", "local[2]", str(REPO_ROOT / "spark_jobs" / job), *args],
                            env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


@pytest.fixture
def small_world(tmp_path, demo_world):
    env = e2e_env(tmp_path / "home")
    root = demo_world(tmp_path / "lake", members=60, days=3, end_date=DAY, seed=5)
    return env, root


def test_a_spark_job_killed_while_writing_leaves_nothing_sealed_and_the_next_run_rewrites(small_world):
    env, root = small_world
    partition = lake.features(DAY, root)
    staging = Path(partition + ".__staging")
    job = _spark_submit(env, "features.py", "--dt", DAY, "--lake", root)
    deadline = time.monotonic() + 300
    while not (staging.is_dir() and any(staging.rglob("*.parquet"))):   # it is writing the partition
        assert job.poll() is None, f"the job ended before writing:\n{job.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "the job never started writing"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL
    assert not Path(lake.success(partition)).exists() and not Path(partition).exists()   # nothing sealed
    assert staging.exists()                                      # the half-write stays aside, unread

    rerun = _spark_submit(env, "features.py", "--dt", DAY, "--lake", root)
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output[-4000:]
    assert Path(lake.success(partition)).exists() and not staging.exists()
    assert json.loads(Path(partition, "groups.json").read_text())["events"]["read"] > 0


@pytest.fixture
def tiny_disk(tmp_path):
    """A tmpfs of 16 MB mounted for the test (root only), filled up to `leave(bytes)` free."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)

    def leave(free_bytes: int) -> None:
        stats = os.statvfs(mount)
        ballast = stats.f_bavail * stats.f_frsize - free_bytes
        with open(mount / "ballast", "wb") as handle:
            handle.write(b"\0" * max(0, ballast))

    try:
        yield mount, leave
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_fails_the_spark_job_clearly_and_seals_nothing(small_world, tiny_disk):
    env, root = small_world
    mount, leave = tiny_disk
    lake_on_disk = mount / "lake"
    subprocess.run(["cp", "-r", root, str(lake_on_disk)], check=True)
    leave(96 * 1024)                             # less than the day's features need
    job = _spark_submit(env, "features.py", "--dt", DAY, "--lake", str(lake_on_disk))
    output = job.communicate(timeout=600)[0]
    assert job.returncode == 1
    last = [line for line in output.splitlines() if "FAILED after" in line][-1]
    assert "No space left on device: the disk under the lake or Spark's local folders is full. Next step: " \
           "free space there" in last
    assert not Path(lake.success(lake.features(DAY, str(lake_on_disk)))).exists()
    assert not list((lake_on_disk / "features").glob("*.__staging"))      # the half-write was removed


def test_a_full_disk_fails_the_import_clearly_and_seals_nothing_half_written(tmp_path, tiny_disk):
    from flashfeed.ingest import importer

    mount, leave = tiny_disk
    events = tmp_path / "events.csv"
    with open(events, "w") as handle:            # 200 days of events: a few MB of partitions
        handle.write("member_id,item_id,event_type,occurred_at\n")
        for k in range(200 * 500):
            handle.write(f"m{k % 997},s{k % 50},pdp_view,{1_700_000_000 + k * 173}\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,brand,division,department,class,subclass\n"
                     + "".join(f"s{i},B{i % 7},women,Clothing,Dresses,Day Dresses\n" for i in range(50)))
    leave(256 * 1024)
    with pytest.raises(importer.ImportFailed, match=r"import failed while writing the lake .*No space left on "
                                                    r"device.*Next step: free space"):
        importer.import_csv(events, items, str(mount / "lake"))
    written = list((mount / "lake" / "raw" / "events").iterdir())
    assert written and all((p / lake.SUCCESS).exists() for p in written if not p.name.startswith("."))
    assert not [p for p in written if p.name.startswith(".")]        # no half-written partition left aside
    assert not (mount / "lake" / "raw" / "import_report.json").exists()
