"""The loader at scale and after a crash: 20,000+ payloads verified, and a load killed half-way."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from flashfeed.serving import control, errors, loader, payloads, tables
from tests.unit.test_serving_store import VERSION, count_items, write_feeds

MEMBERS_FOR_20K = 3_334          # x 6 data sets + 18 fallback payloads = 20,022 payloads
pytestmark = pytest.mark.slow   # 20,000+ payloads into dynalite: not in `make test-fast`
KILL_AFTER_ITEMS = 2_000
KILL_TIMEOUT_S = 120
PROGRESS = re.compile(r"Loading \S+: ([\d,]+) / [\d,]+ payloads written \([\d.]+ %\), [\d,]+ items/s, ETA \S+")


def test_load_of_twenty_thousand_payloads_is_verified(tmp_path, client, monkeypatch, caplog):
    manifest = write_feeds(tmp_path, members=MEMBERS_FOR_20K, files_per_data_set=3)
    assert manifest["total_payloads"] >= 20_000
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    table = tables.feeds_table(VERSION, prefix)
    monkeypatch.setattr(loader, "PROGRESS_LOG_SECONDS", 0.5)     # several progress lines in a short load
    with caplog.at_level(logging.INFO, logger=loader.logger.name):
        result = loader.load_feeds(client, str(tmp_path), manifest, prefix)
    progress = [int(m.group(1).replace(",", "")) for m in
                (PROGRESS.search(r.getMessage()) for r in caplog.records) if m]
    assert len(progress) >= 2 and progress == sorted(progress) and progress[-1] <= manifest["total_payloads"]
    assert result.written == manifest["total_payloads"] == count_items(client, table)
    checked = loader.verify_load(client, prefix, manifest, str(tmp_path), result.written, sample_members=200)
    assert checked >= 200
    assert control.loaded_versions(client, prefix)[VERSION]["written"] == manifest["total_payloads"]


def test_load_killed_half_way_is_rerun_to_a_complete_verified_table(tmp_path, client, dynamodb_endpoint):
    manifest = write_feeds(tmp_path, members=2_000)
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    table = tables.feeds_table(VERSION, prefix)
    # As if an earlier load of this version had been verified: the reload must take the mark away.
    control.mark_loaded(client, prefix, VERSION, manifest["total_payloads"], "earlier")
    load_script = (
        "import json, sys; from flashfeed.serving import loader, tables; "
        "c = tables.dynamodb_client(sys.argv[1]); m = json.load(open(sys.argv[2] + '/manifest.json')); "
        "loader.load_feeds(c, sys.argv[2], m, sys.argv[3], threads=1)"
    )
    proc = subprocess.Popen([sys.executable, "-c", load_script, dynamodb_endpoint, str(tmp_path), prefix],
                            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    written = 0
    while written < KILL_AFTER_ITEMS:
        assert proc.poll() is None, "the load finished before it could be killed; raise the member count"
        assert time.monotonic() < deadline, "the load did not make progress"
        time.sleep(0.2)
        if tables.table_exists(client, table):
            written = count_items(client, table)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = count_items(client, table)
    assert 0 < partial < manifest["total_payloads"]
    # The killed load left no loaded mark, so nothing can flip to the half-written table ...
    assert VERSION not in control.loaded_versions(client, prefix)
    with pytest.raises(errors.NotLoadedError, match="no loaded mark"):
        control.flip(client, prefix, VERSION, "m", expected_version=None)
    assert control.served_version(client, prefix) is None
    # ... and it never passes verification.
    with pytest.raises(errors.VerificationError):
        loader.verify_load(client, prefix, manifest, str(tmp_path), partial, sample_members=20)
    assert VERSION not in control.loaded_versions(client, prefix)

    result = loader.load_feeds(client, str(tmp_path), manifest, prefix)   # the retried task
    assert result.created_table          # the half-written table was deleted: it starts from empty
    assert result.written == manifest["total_payloads"] == count_items(client, table)  # no duplicates
    loader.verify_load(client, prefix, manifest, str(tmp_path), result.written, sample_members=50)
    control.flip(client, prefix, VERSION, "m", expected_version=None)
    assert json.loads(payloads.get_payload(client, table, "m-001999", "products", "full"))["member_id"] == "m-001999"
