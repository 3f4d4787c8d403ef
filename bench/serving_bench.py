"""Serving benchmark (not a test): load throughput and read-API latency on a local dynalite.

    .venv/bin/python bench/serving_bench.py [--payloads 20000] [--requests 2000] [--concurrency 1 8] [--runs 3]

Everything runs on 127.0.0.1 in a temporary folder and stops by itself:
1. starts its own dynalite on a free port (`flashfeed.local.dynamodb.start/stop`);
2. writes a feeds partition (JSON-lines files per data set + manifest.json, as the collections
   export does) with about `--payloads` payloads;
3. loads it with `loader.load_feeds` (BatchWriteItem, thread pool) and, into another
   table on the same dynalite, with a naive one-PutItem-per-item loop; prints items/s and the ratio;
4. flips to the loaded version and measures the read API in two set-ups, alternating, `--runs`
   times each: the baseline (the API over a boto3 client, one uvicorn worker, access log on: how
   it ran before) and `python -m flashfeed.serving.api` as shipped (its own DynamoDB reader,
   `serving.api_workers` workers, no access log). Each run sends `--requests` GETs of random
   members/feeds/variants per concurrency level over keep-alive connections, after a warm-up,
   and prints p50/p95/p99 and the API's CPU per request (its processes' CPU time from /proc);
   then the medians over the runs. The APIs are stopped by their PIDs.

Figures are for a laptop-sized local dynalite (single Node.js process), not for AWS.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flashfeed.core.lake import FEEDS, VARIANTS, feed_folder  # noqa: E402
from flashfeed.local import dynamodb as local_dynamodb  # noqa: E402
from flashfeed.serving import control, loader, manifests, payloads, tables  # noqa: E402

VERSION = "20261122t1100"
PREFIX = "bench-"
DIVISIONS = ("women", "men", "all")
API_START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def payload_line(member_id: str, feed: str, variant: str, rng: random.Random) -> str:
    """A payload of a few KB, like a card/full collection (groups of brands with styles)."""
    groups = 10 if variant == "card" else 25
    record = {
        "member_id": member_id, "feed": feed, "variant": variant, "version": VERSION,
        "groups": [{"key": f"g{i}", "name": f"Brand {rng.randrange(10_000)}", "affinity": round(rng.random(), 4),
                    "styles": [f"s-{rng.randrange(1_000_000)}" for _ in range(12)]} for i in range(groups)],
    }
    return json.dumps(record, separators=(",", ":"))


def write_feeds(feeds_dir: Path, payloads: int, files_per_data_set: int = 2) -> dict:
    """A feeds partition of about `payloads` payloads (members x 6 data sets + fallback)."""
    rng = random.Random(42)
    data_set_count = len(FEEDS) * len(VARIANTS)
    members = max(1, payloads // data_set_count)
    member_ids = [f"m-{i:07d}" for i in range(members)]
    data_sets: dict[str, list[str]] = {}
    for feed in FEEDS:
        for variant in VARIANTS:
            data_sets[feed_folder(feed, variant)] = [payload_line(m, feed, variant, rng) for m in member_ids]
    data_sets["fallback"] = [payload_line(f"__fallback__#{d}", feed, variant, rng)
                             for d in DIVISIONS for feed in FEEDS for variant in VARIANTS]
    manifest_sets = {}
    for name, rows in data_sets.items():
        (feeds_dir / name).mkdir(parents=True, exist_ok=True)
        files = []
        chunk = -(-len(rows) // files_per_data_set)
        for index in range(files_per_data_set):
            part = rows[index * chunk:(index + 1) * chunk]
            data = "".join(f"{row}\n" for row in part).encode("utf-8")
            path = f"{name}/part-{index:05d}-bench.json"
            (feeds_dir / path).write_bytes(data)
            files.append({"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                          "payloads": len(part)})
        manifest_sets[name] = {"payloads": len(rows), "files": files}
    manifest = {"version": VERSION, "dt": "2026-11-22", "launch": "1100", "data_sets": manifest_sets,
                "total_payloads": sum(len(rows) for rows in data_sets.values()), "members": members}
    (feeds_dir / manifests.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


def naive_load(client, feeds_dir: Path, manifest: dict, table: str) -> int:
    """One PutItem per item, one thread: the baseline."""
    tables.ensure_feeds_table(client, table)
    written = 0
    for item in payloads.iter_items(str(feeds_dir), manifest):
        client.put_item(TableName=table, Item=item)
        written += 1
    return written


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = max(0, min(len(sorted_values) - 1, int(round(share * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def wait_for_api(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + API_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with code {process.returncode} before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/ready")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not answer /v1/ready within {API_START_TIMEOUT:.0f} s")


def run_level(port: int, members: int, requests: int, concurrency: int) -> dict:
    """`requests` GETs split over `concurrency` threads, each with its own keep-alive connection."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    per_thread = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]

    def worker(index: int, count: int) -> None:
        rng = random.Random(index)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        mine, codes = [], {}
        try:
            for _ in range(count):
                member = f"m-{rng.randrange(members):07d}"
                path = f"/v1/members/{member}/feeds/{rng.choice(FEEDS)}?variant={rng.choice(VARIANTS)}"
                started = time.perf_counter()
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                mine.append(time.perf_counter() - started)
                codes[response.status] = codes.get(response.status, 0) + 1
        finally:
            conn.close()
        with lock:
            latencies.extend(mine)
            for code, n in codes.items():
                statuses[code] = statuses.get(code, 0) + n

    threads = [threading.Thread(target=worker, args=(i, n)) for i, n in enumerate(per_thread)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"concurrency": concurrency, "requests": len(latencies), "statuses": statuses,
            "rps": len(latencies) / elapsed, "p50": percentile(latencies, 0.50) * 1000,
            "p95": percentile(latencies, 0.95) * 1000, "p99": percentile(latencies, 0.99) * 1000,
            "mean": statistics.fmean(latencies) * 1000}


# The read API as it ran before this benchmark's last change: boto3, one worker, access log on.
BASELINE_API = """
import sys, uvicorn
from flashfeed.serving import tables
from flashfeed.serving.api import create_app
uvicorn.run(create_app(tables.dynamodb_client(sys.argv[2])), host="127.0.0.1", port=int(sys.argv[1]),
            workers=1, access_log=True, log_level="info")
"""


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (uvicorn's workers), from /proc."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:        # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def start_api(command: list[str], port: int, work: Path, name: str) -> subprocess.Popen:
    log = open(work / f"api-{name}.log", "ab")
    api = subprocess.Popen(command, cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)),
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()                                   # the child keeps its own handle
    wait_for_api(port, api)
    return api


def stop_api(api: subprocess.Popen) -> None:
    if api.poll() is None:
        api.terminate()
        try:
            api.wait(timeout=10)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()


def measure_api(api: subprocess.Popen, port: int, members: int, requests: int, levels: list[int]) -> list[dict]:
    """One run: a warm-up, then each concurrency level with the API's CPU per request."""
    run_level(port, members, min(200, requests), 1)
    rows = []
    for level in levels:
        cpu_before = process_cpu_seconds(api.pid)
        row = run_level(port, members, requests, level)
        row["api_cpu_ms"] = 1000 * (process_cpu_seconds(api.pid) - cpu_before) / row["requests"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=20_000, help="payloads to generate and load (default 20000)")
    parser.add_argument("--requests", type=int, default=2_000, help="API requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="client concurrency levels")
    parser.add_argument("--threads", type=int, default=None, help="load_feeds threads (default serving.load_threads)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each API set-up (medians are reported)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (for inspection)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="flashfeed-bench-"))
    home = work / "home"
    api: subprocess.Popen | None = None
    try:
        config_text = (REPO / "include" / "flashfeed.yaml").read_text()
        config_file = work / "flashfeed.yaml"
        config_file.write_text(config_text.replace("table_prefix: flashfeed-", f"table_prefix: {PREFIX}"))
        os.environ["FLASHFEED_CONFIG"] = str(config_file)
        os.environ["FLASHFEED_HOME"] = str(home)

        endpoint = local_dynamodb.start(home=home, port=free_port())
        client = tables.dynamodb_client(endpoint)
        print(f"dynalite at {endpoint} (data in {home})")

        feeds_dir = work / "feeds"
        started = time.perf_counter()
        manifest = write_feeds(feeds_dir, args.payloads)
        total = int(manifest["total_payloads"])
        size = sum(f.stat().st_size for f in feeds_dir.rglob("*.json"))
        print(f"generated {total:,} payloads for {manifest['members']:,} members, {size / 1e6:.1f} MB, "
              f"in {time.perf_counter() - started:.1f} s")

        threads = int(args.threads or tables.serving_config()["load_threads"])
        table = tables.feeds_table(VERSION, PREFIX)
        naive_table = f"{PREFIX}naive-{VERSION}"
        for name in (table, naive_table):        # created up front: timings are writes, not table creation
            tables.ensure_feeds_table(client, name)
        quiet = logging.getLogger("flashfeed.bench")
        quiet.setLevel(logging.ERROR)             # the table exists on purpose; keep the output to the figures
        result = loader.load_feeds(client, str(feeds_dir), manifest, PREFIX, threads=threads, log=quiet)
        loader.verify_load(client, PREFIX, manifest, str(feeds_dir), result.written, sample_members=50, seed=VERSION,
                           log=quiet)
        batch_rate = result.written / result.seconds   # includes its checksum pass over the files

        started = time.perf_counter()
        naive_written = naive_load(client, feeds_dir, manifest, naive_table)
        naive_seconds = time.perf_counter() - started
        naive_rate = naive_written / naive_seconds

        print()
        print(f"Load of {total:,} items (same dynalite, same files; tables created beforehand; "
              "load_feeds time includes its checksum pass)")
        print(f"  {'method':<40} {'seconds':>8} {'items/s':>9}")
        print(f"  {f'load_feeds (BatchWriteItem, {threads} threads)':<40} {result.seconds:>8.1f} {batch_rate:>9,.0f}")
        print(f"  {'naive PutItem loop (1 thread)':<40} {naive_seconds:>8.1f} {naive_rate:>9,.0f}")
        print(f"  ratio load_feeds / naive: {batch_rate / naive_rate:.1f}x "
              f"({result.retried_batches} batches retried)")

        control.flip(client, PREFIX, VERSION, str(feeds_dir / manifests.MANIFEST_FILE), expected_version=None)
        members = int(manifest["members"])
        workers = int(tables.serving_config()["api_workers"])
        setups = {
            "baseline": lambda port: [sys.executable, "-c", BASELINE_API, str(port), endpoint],
            "shipped": lambda port: [sys.executable, "-m", "flashfeed.serving.api", "--host", "127.0.0.1", "--port",
                                     str(port), "--endpoint", endpoint],
        }
        print()
        print("Read API: baseline = boto3 client, 1 uvicorn worker, access log; "
              "shipped = python -m flashfeed.serving.api "
              f"(DynamoDB reader, {workers} workers, no access log). {args.requests:,} requests per level and run, "
              "keep-alive, random members/feeds/variants; setups alternate")
        print(f"  {'setup':<9} {'run':>3} {'clients':>7} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
              f"{'API CPU ms/req':>14}  status")
        results: dict[str, list[list[dict]]] = {name: [] for name in setups}
        for run in range(1, args.runs + 1):
            for name, command in setups.items():
                port = free_port()
                api = start_api(command(port), port, work, name)
                try:
                    rows = measure_api(api, port, members, args.requests, args.concurrency)
                finally:
                    stop_api(api)
                    api = None
                results[name].append(rows)
                for row in rows:
                    codes = ", ".join(f"{code}: {n}" for code, n in sorted(row["statuses"].items()))
                    print(f"  {name:<9} {run:>3} {row['concurrency']:>7} {row['rps']:>7.0f} {row['p50']:>7.1f} "
                          f"{row['p95']:>7.1f} {row['p99']:>7.1f} {row['api_cpu_ms']:>14.2f}  {codes}")
        print()
        print(f"Medians over {args.runs} runs")
        print(f"  {'clients':>7} {'setup':<9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'API CPU ms/req':>14}")
        for index, level in enumerate(args.concurrency):
            median = {name: {key: statistics.median(rows[index][key] for rows in runs)
                             for key in ("rps", "p50", "p99", "api_cpu_ms")} for name, runs in results.items()}
            for name, m in median.items():
                print(f"  {level:>7} {name:<9} {m['rps']:>7.0f} {m['p50']:>7.1f} {m['p99']:>7.1f} "
                      f"{m['api_cpu_ms']:>14.2f}")
            base, shipped = median["baseline"], median["shipped"]
            print(f"  {level:>7} {'ratio':<9} {shipped['rps'] / base['rps']:>6.1f}x {'':>7} "
                  f"{base['p99'] / shipped['p99']:>6.1f}x {base['api_cpu_ms'] / shipped['api_cpu_ms']:>13.1f}x"
                  "  (throughput up; p99 and CPU down)")
        return 0
    finally:
        if api is not None:
            stop_api(api)
        local_dynamodb.stop(home=home)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
