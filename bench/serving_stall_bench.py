"""Stalled-store benchmark (not a test): read-API latency while the local DynamoDB is paused.

    .venv/bin/python bench/serving_stall_bench.py [--clients 8] [--stall 20] [--runs 3]

What an SRE sees when DynamoDB stops answering (a network partition, a stuck node): everything
runs on 127.0.0.1 in a temporary folder and stops by itself.
1. starts its own dynalite on a free port, writes and loads a small served version
   (`serving_bench.write_feeds`, `loader.load_feeds`, `control.flip`);
2. starts the read API as shipped (`python -m flashfeed.serving.api`, `serving.api_workers`
   workers) and waits until `/v1/ready` answers 200;
3. `--clients` threads each ask, in a closed loop with `--think` seconds between requests, for a
   random member's `products` card: `--before` seconds normally, then the dynalite process is
   paused with SIGSTOP for `--stall` seconds, then resumed with SIGCONT and watched for
   `--after` seconds;
4. prints, per run and as medians over `--runs` runs: the latency distribution of the requests
   sent while the store was paused (p50 / p90 / p99 / max), their statuses, and the time from
   SIGCONT until every client had a 200 again.

Old API processes left waiting on a paused store are stopped by their PIDs between runs.
"""
from __future__ import annotations

import argparse
import http.client
import logging
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from serving_bench import PREFIX, VERSION, free_port, percentile, start_api, stop_api, write_feeds  # noqa: E402

from flashfeed.local import dynamodb as local_dynamodb  # noqa: E402
from flashfeed.serving import control, loader, manifests, tables  # noqa: E402

CLIENT_TIMEOUT_SECONDS = 120.0      # long enough to see how long a stalled request really takes


def run_clients(port: int, members: int, dynalite_pid: int, args) -> dict:
    """The clients' requests: (sent at, latency, status or error) each, relative to the pause."""
    records: list[tuple[float, float, str]] = []
    lock = threading.Lock()
    start = time.monotonic()
    pause_at, resume_at = start + args.before, start + args.before + args.stall
    end_at = resume_at + args.after

    def client(index: int) -> None:
        rng = random.Random(index)
        conn = None
        mine = []
        while time.monotonic() < end_at:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_SECONDS)
            path = f"/v1/members/m-{rng.randrange(members):07d}/feeds/products?variant=card"
            sent = time.monotonic()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                outcome = str(response.status)
            except OSError as error:
                outcome = type(error).__name__
                conn.close()
                conn = None
            mine.append((sent - pause_at, time.monotonic() - sent, outcome))
            time.sleep(args.think)
        if conn is not None:
            conn.close()
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, pause_at - time.monotonic()))
    os.kill(dynalite_pid, signal.SIGSTOP)
    time.sleep(max(0.0, resume_at - time.monotonic()))
    os.kill(dynalite_pid, signal.SIGCONT)
    for thread in threads:
        thread.join()

    stalled = sorted(latency for sent, latency, _ in records if 0 <= sent < args.stall)
    statuses: dict[str, int] = {}
    for sent, _, outcome in records:
        if 0 <= sent < args.stall:
            statuses[outcome] = statuses.get(outcome, 0) + 1
    # Recovery: from SIGCONT until each client's last non-200 answer sent after it has come back.
    after = [(sent - args.stall, latency, outcome) for sent, latency, outcome in records if sent >= args.stall]
    last_bad = max((sent + latency for sent, latency, outcome in after if outcome != "200"), default=0.0)
    late = sorted((round(sent, 2), round(latency * 1000), outcome) for sent, latency, outcome in after
                  if outcome != "200")
    return {"requests": len(stalled), "statuses": statuses, "late_failures": late,
            "p50": percentile(stalled, 0.5) * 1000 if stalled else float("nan"),
            "p90": percentile(stalled, 0.9) * 1000 if stalled else float("nan"),
            "p99": percentile(stalled, 0.99) * 1000 if stalled else float("nan"),
            "max": stalled[-1] * 1000 if stalled else float("nan"),
            "recovered_s": last_bad,
            "after_ok": sum(1 for _, _, outcome in after if outcome == "200"), "after_total": len(after)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=2_000, help="payloads of the served version")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--before", type=float, default=3.0, help="seconds of normal traffic first")
    parser.add_argument("--stall", type=float, default=20.0, help="seconds the store is paused (SIGSTOP)")
    parser.add_argument("--after", type=float, default=5.0, help="seconds watched after SIGCONT")
    parser.add_argument("--think", type=float, default=0.05, help="each client's pause between requests")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="list the answers after SIGCONT that were not 200")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="flashfeed-stall-"))
    home = work / "home"
    try:
        config_file = work / "flashfeed.yaml"
        config_file.write_text((REPO / "include" / "flashfeed.yaml").read_text()
                               .replace("table_prefix: flashfeed-", f"table_prefix: {PREFIX}"))
        os.environ.update(FLASHFEED_CONFIG=str(config_file), FLASHFEED_HOME=str(home))
        endpoint = local_dynamodb.start(home=home, port=free_port())
        dynalite_pid = local_dynamodb.status(home=home).pid
        client = tables.dynamodb_client(endpoint)
        manifest = write_feeds(work / "feeds", args.payloads)
        quiet = logging.getLogger("flashfeed.bench")
        quiet.setLevel(logging.ERROR)
        result = loader.load_feeds(client, str(work / "feeds"), manifest, PREFIX, log=quiet)
        loader.verify_load(client, PREFIX, manifest, str(work / "feeds"), result.written, log=quiet)
        control.flip(client, PREFIX, VERSION, str(work / "feeds" / manifests.MANIFEST_FILE), expected_version=None)
        print(f"dynalite pid {dynalite_pid} at {endpoint}; served {VERSION} with {result.written:,} payloads "
              f"({manifest['members']:,} members)")
        print(f"{args.clients} clients, {args.think * 1000:.0f} ms think time; store paused for {args.stall:.0f} s "
              f"after {args.before:.0f} s, watched {args.after:.0f} s after SIGCONT")
        print(f"  {'run':>3} {'stalled req':>11} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
              f"{'recovered s':>11}  statuses while paused; 200s after SIGCONT")
        rows = []
        for run in range(1, args.runs + 1):
            port = free_port()
            api = start_api([sys.executable, "-m", "flashfeed.serving.api", "--host", "127.0.0.1",
                             "--port", str(port), "--endpoint", endpoint], port, work, f"run{run}")
            try:
                row = run_clients(port, int(manifest["members"]), dynalite_pid, args)
            finally:
                os.kill(dynalite_pid, signal.SIGCONT)      # never leave the store paused
                stop_api(api)
            rows.append(row)
            codes = ", ".join(f"{code}: {n}" for code, n in sorted(row["statuses"].items()))
            print(f"  {run:>3} {row['requests']:>11} {row['p50']:>8.0f} {row['p90']:>8.0f} {row['p99']:>8.0f} "
                  f"{row['max']:>8.0f} {row['recovered_s']:>11.2f}  {codes}; {row['after_ok']}/{row['after_total']}")
            if args.verbose and row["late_failures"]:
                print(f"      after SIGCONT, not 200 (sent s, ms, outcome): {row['late_failures']}")
        medians = {key: statistics.median(row[key] for row in rows)
                   for key in ("requests", "p50", "p90", "p99", "max", "recovered_s")}
        print(f"  {'med':>3} {medians['requests']:>11.0f} {medians['p50']:>8.0f} {medians['p90']:>8.0f} "
              f"{medians['p99']:>8.0f} {medians['max']:>8.0f} {medians['recovered_s']:>11.2f}")
        return 0
    finally:
        local_dynamodb.stop(home=home)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
