"""Pipeline benchmark (not a test): the daily model and one launch at N members, through Airflow.

    .venv/bin/python bench/pipeline_bench.py --members 10000 100000 [--runs 2] [--label after]

For every size and run, in a fresh FLASHFEED_HOME under `--work` (default /tmp/flashfeed-bench),
it does what `make demo` does, step for step:
1. starts the project's own DynamoDB (dynalite) for that home on a free 127.0.0.1 port;
2. `flashfeed airflow-init` (Airflow's PostgreSQL for that home on a free port, the flashfeed_spark pool);
3. generates the demo world of N members (`flashfeed demo-data`, same days, date and seed as
   `make demo`; timed apart, not part of the pipeline's wall time);
4. `airflow dags test flashfeed_daily_model` for 05:00 of the day, then
   `airflow dags test flashfeed_launch_feeds` for the 11:00 launch (45 minutes ahead), which
   loads every payload into the local DynamoDB and flips the served version;
5. checks the feeds contract of the end-to-end test on the result (every product of every
   payload on sale with stock in the window, none twice, the fallback present);
6. stops dynalite and PostgreSQL by their PIDs and removes the home (`--keep` keeps it).

Figures, read from Airflow's own metadata (task start and end), the task output and the lake:
wall time per task (per group for the ALS tasks), the fixed start-up cost of every Spark task
(JVM start until the Spark session is ready, which each job logs), peak RSS of the largest
process and of all of them together (sampled from /proc every 0.5 s), rows in and out per
stage, and cost per member. Each size is written to `bench/results/pipeline-<N>[-<label>].json`;
`bench/results/pipeline[-<label>].md` holds the tables of every size measured with that label
and how each figure grows from one size to the next. Medians are over `--runs`.

`--spark-master URL` points the `spark_default` connection at a Spark master instead of
local[*] (e.g. the local standalone cluster of `flashfeed spark-cluster start`); nothing else
changes. `--timeout` bounds each DAG run; a run that does not finish in time is recorded with
the tasks it finished and `finished: false`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flashfeed.core import calendar, lake  # noqa: E402
from flashfeed.demo.run import DEMO_DATE, DEMO_DAYS, DEMO_LAUNCH, DEMO_SEED  # noqa: E402
from flashfeed.local import dynamodb as local_dynamodb  # noqa: E402
from flashfeed.local import postgres as local_postgres  # noqa: E402
from flashfeed.local.env import project_env  # noqa: E402

RESULTS = REPO / "bench" / "results"
DAILY, LAUNCH = "flashfeed_daily_model", "flashfeed_launch_feeds"
DAILY_HOUR, LAUNCH_LEAD = 5, timedelta(minutes=45)
NY = ZoneInfo("America/New_York")
RSS_SAMPLE_SECONDS = 0.5
# A job logs when its Spark session is ready, or (train_group on the driver) that it needs none.
SESSION_READY = re.compile(r"Spark (?:session|driver) (\S+) ready .*?\), ([\d.]+) s after the driver JVM started")
# The Spark application name of each job (spark_session's app_name) -> its task id.
APP_TASKS = (
    (re.compile(r"^flashfeed-features-"), "features.build_features"),
    (re.compile(r"^flashfeed-als-.*-group-(\w+)$"), "train.train_group_als"),
    (re.compile(r"^flashfeed-als-.*-global$"), "train.train_global_als"),
    (re.compile(r"^flashfeed-score-"), "build.score_products"),
    (re.compile(r"^flashfeed-collections-"), "build.build_collections"),
)


# --- measuring ---------------------------------------------------------------------------------

class RssSampler:
    """Peak resident memory of this process's descendants (Spark JVMs, Python drivers, dynalite),
    sampled from /proc: the largest single process and the sum of all of them."""

    def __init__(self) -> None:
        self.peak_process: tuple[int, str] = (0, "")
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _processes() -> dict[int, tuple[int, int, str]]:
        """pid -> (parent pid, RSS bytes, short command line)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
                rss_kb = next((int(line.split()[1]) for line in (entry / "status").read_text().splitlines()
                               if line.startswith("VmRSS:")), 0)
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue   # gone meanwhile
            found[int(entry.name)] = (ppid, rss_kb * 1024, describe_command([a.decode(errors="replace") for a in argv]))
        return found

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            processes = self._processes()
            children: dict[int, list[int]] = {}
            for pid, (ppid, _, _) in processes.items():
                children.setdefault(ppid, []).append(pid)
            mine, todo = [], list(children.get(me, []))
            while todo:
                pid = todo.pop()
                mine.append(pid)
                todo.extend(children.get(pid, []))
            total = sum(processes[pid][1] for pid in mine)
            self.peak_total = max(self.peak_total, total)
            for pid in mine:
                if processes[pid][1] > self.peak_process[0]:
                    self.peak_process = (processes[pid][1], processes[pid][2])


def describe_command(argv: list[str]) -> str:
    """A short name for a process: the Spark application of a JVM, else the program and script."""
    if "--name" in argv:
        return f"spark-submit {argv[argv.index('--name') + 1]}"
    if argv and argv[0].endswith("java"):
        return "java " + next((a for a in argv if a.startswith("org.apache.spark")), "")
    return " ".join(Path(a).name if i < 2 else a for i, a in enumerate(argv[:3]))


def task_times(env: dict, dag_id: str) -> list[dict]:
    """Every task instance of the DAG's newest run, from Airflow's database (the home's
    PostgreSQL): id, group (mapped ALS), state, seconds."""
    import psycopg2

    url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(url, passfile=env["PGPASSFILE"]) as db, db.cursor() as cursor:
        cursor.execute("SELECT run_id FROM dag_run WHERE dag_id = %s ORDER BY id DESC LIMIT 1", (dag_id,))
        run = cursor.fetchone()
        if run is None:
            return []
        cursor.execute("SELECT task_id, map_index, rendered_map_index, state, start_date, end_date, duration "
                       "FROM task_instance WHERE dag_id = %s AND run_id = %s ORDER BY start_date", (dag_id, run[0]))
        rows = cursor.fetchall()
    return [{"task": task, "group": (label or "").removeprefix("group ") or None if index >= 0 else None,
             "state": state, "started": start.isoformat() if start else None,
             "seconds": round(duration, 2) if duration is not None else None}
            for task, index, label, state, start, _end, duration in rows]


def startup_seconds(output: str) -> dict[tuple[str, str | None], float]:
    """(task id, group) -> seconds from the driver JVM's start to a ready Spark session, from the
    line every flashfeed Spark job logs (spark_jobs/common.py spark_session)."""
    found = {}
    for app, seconds in SESSION_READY.findall(output):
        for pattern, task in APP_TASKS:
            match = pattern.match(app)
            if match:   # the first line of a task: a session a job starts later does not count
                found.setdefault((task, match.group(1) if match.groups() else None), float(seconds))
    return found


def parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.rglob("*.parquet"))


def stage_rows(root: str, day: str, launch: str) -> dict:
    """Rows in and out per stage, from what each stage wrote (metadata and its own JSON files)."""
    rows: dict = {}
    features = Path(lake.features(day, root))
    if (features / "groups.json").exists():
        groups = json.loads((features / "groups.json").read_text())
        events = groups["events"]
        per_group = groups["per_group"].values()
        rows["build_features"] = {"in": events["read"], "out": sum(g["ratings"] for g in per_group),
                                  "unit": "events -> ratings", "members": sum(g["members"] for g in per_group),
                                  "groups": len(groups["groups"])}
        per_group, affinity_rows = {}, 0
        for group in groups["groups"]:
            metrics_file = Path(lake.models(day, group, root)) / "metrics.json"
            if metrics_file.exists():
                metrics = json.loads(metrics_file.read_text())
                per_group[group] = {"in": metrics["ratings"], "out": metrics["affinity_rows"],
                                    "members": metrics["members"], "candidates": metrics["candidates"],
                                    "served_from": metrics["served_from"]}
                affinity_rows += metrics["affinity_rows"]
        rows["train_group_als"] = {"in": sum(g["in"] for g in per_group.values()), "out": affinity_rows,
                                   "unit": "ratings -> affinities", "per_group": per_group}
    products = Path(lake.products(day, launch, root))
    if (products / lake.SUCCESS).exists():
        rows["score_products"] = {"in": parquet_rows(Path(lake.raw("sale_calendar", day, root))),
                                  "out": parquet_rows(products), "unit": "sale calendar rows -> scored products"}
    manifest_file = Path(lake.feeds(day, launch, root)) / "manifest.json"
    if manifest_file.exists():
        manifest = json.loads(manifest_file.read_text())
        rows["build_collections"] = {"in": rows.get("train_group_als", {}).get("out"),
                                     "out": manifest["total_payloads"],
                                     "unit": "affinities -> payloads", "members": manifest["members"]}
        rows["load_feeds"] = {"in": manifest["total_payloads"], "out": manifest["total_payloads"],
                              "unit": "payloads -> DynamoDB items"}
    return rows


def feeds_contract(root: str, day: str, launch: str) -> dict:
    """The end-to-end test's checks on the served feeds: products on sale with stock, none twice
    in a payload, fallback for the divisions and overall. Returns counts; raises on a breach."""
    import pyarrow.parquet as pq

    on_sale = set(pq.read_table(lake.products(day, launch, root), columns=["style_id"]).column(0).to_pylist())
    feeds, payloads, fallback = Path(lake.feeds(day, launch, root)), 0, set()
    for data_set in [lake.feed_folder(f, v) for f in lake.FEEDS for v in lake.VARIANTS] + ["fallback"]:
        for part in (feeds / data_set).glob("part-*.json"):
            with open(part, encoding="utf-8") as handle:
                for line in handle:
                    payload = json.loads(line)
                    styles = [s for g in payload["groups"] for s in g["styles"]]
                    if len(styles) != len(set(styles)) or not set(styles) <= on_sale:
                        raise AssertionError(f"feeds contract broken: {payload['member_id']} {data_set}")
                    payloads += 1
                    if data_set == "fallback":
                        fallback.add(payload["member_id"])
    if lake.FALLBACK_MEMBER_PREFIX + "all" not in fallback:
        raise AssertionError("feeds contract broken: no global fallback payload")
    return {"payloads_checked": payloads, "fallback_payloads": len(fallback)}


# --- running -----------------------------------------------------------------------------------

def run_dag(dag_id: str, logical: datetime, env: dict, log_file: Path, timeout: float) -> tuple[bool, float, str]:
    """`airflow dags test` as `make demo` runs it; (finished in time and succeeded, seconds, output)."""
    started = time.monotonic()
    with open(log_file, "w", encoding="utf-8") as out:
        process = subprocess.Popen(["airflow", "dags", "test", dag_id, logical.isoformat()], env=env, cwd=REPO,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=timeout)
            finished = process.returncode == 0
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            finished = False
    return finished, time.monotonic() - started, log_file.read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_once(members: int, run: int, args) -> dict:
    home = Path(args.work) / f"members-{members}-run-{run}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = project_env({"PATH": os.environ["PATH"], "FLASHFEED_HOME": str(home),
                       local_postgres.PORT_ENV: str(free_port())})
    if args.spark_master:
        env["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps({"conn_type": "spark", "host": args.spark_master})
    day = date_of(args.date)
    slot = calendar.slot(day, args.launch)
    print(f"[{members} members, run {run}] home {home}", flush=True)
    endpoint = local_dynamodb.start(home=home, port=free_port())
    env["FLASHFEED_DYNAMODB_ENDPOINT"] = endpoint
    result: dict = {"members": members, "run": run, "spark_master": args.spark_master or "local[*]"}
    try:
        subprocess.run(["flashfeed", "airflow-init"], env=env, cwd=REPO, check=True, capture_output=True)
        started = time.monotonic()
        subprocess.run(["flashfeed", "demo-data", "--lake", env["FLASHFEED_LAKE"], "--members", str(members),
                        "--days", str(args.days), "--end-date", args.date, "--seed", str(args.seed)],
                       env=env, cwd=REPO, check=True, capture_output=True)
        result["generate_seconds"] = round(time.monotonic() - started, 1)
        print(f"  world generated in {result['generate_seconds']} s", flush=True)
        runs = ((DAILY, datetime.combine(day, dtime(DAILY_HOUR), NY)), (LAUNCH, slot.starts_at - LAUNCH_LEAD))
        result["dags"], output = {}, ""
        with RssSampler() as rss:
            for dag_id, logical in runs:
                finished, seconds, text = run_dag(dag_id, logical, env, home / f"{dag_id}.log", args.timeout)
                output += text
                result["dags"][dag_id] = {"finished": finished, "seconds": round(seconds, 1),
                                          "tasks": task_times(env, dag_id)}
                print(f"  {dag_id}: {'succeeded' if finished else 'DID NOT FINISH'} in {seconds:.0f} s", flush=True)
                if not finished:
                    break
        result["finished"] = all(d["finished"] for d in result["dags"].values()) and len(result["dags"]) == 2
        result["peak_rss_bytes"] = {"largest_process": rss.peak_process[0], "largest_process_is": rss.peak_process[1],
                                    "all_processes": rss.peak_total}
        result["cache_warnings"] = output.count("Not enough space to cache")
        startup = startup_seconds(output)
        for dag in result["dags"].values():
            for task in dag["tasks"]:
                if (task["task"], task["group"]) in startup:
                    task["startup_seconds"] = startup[(task["task"], task["group"])]
        result["rows"] = stage_rows(env["FLASHFEED_LAKE"], args.date, args.launch)
        if result["finished"]:
            result["feeds_contract"] = feeds_contract(env["FLASHFEED_LAKE"], args.date, args.launch)
            print(f"  feeds contract holds: {result['feeds_contract']}", flush=True)
    finally:
        local_dynamodb.stop(home=home)
        local_postgres.stop(home)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return result


def date_of(text: str):
    from datetime import date

    return date.fromisoformat(text)


# --- summarising -------------------------------------------------------------------------------

def summary(result: dict) -> dict:
    """The figures of one run that the tables show."""
    dags = result["dags"]
    tasks = [t for d in dags.values() for t in d["tasks"] if t["seconds"] is not None]
    spark_tasks = [t for t in tasks if "startup_seconds" in t]
    wall = sum(d["seconds"] for d in dags.values())
    startup = sum(t["startup_seconds"] for t in spark_tasks)
    by_task: dict[str, float] = {}
    for t in tasks:
        name = t["task"].split(".")[-1] + (f" [{t['group']}]" if t["group"] else "")
        by_task[name] = t["seconds"]
    als = [t for t in tasks if t["task"] == "train.train_group_als"]
    return {
        "finished": result.get("finished", False),
        "daily_seconds": dags.get(DAILY, {}).get("seconds"),
        "launch_seconds": dags.get(LAUNCH, {}).get("seconds"),
        "wall_seconds": round(wall, 1),
        "spark_tasks": len(spark_tasks),
        "startup_seconds": round(startup, 1),
        "startup_share": round(startup / wall, 3) if wall else None,
        "als_tasks": len(als),
        "als_seconds": round(sum(t["seconds"] for t in als), 1),
        "als_median_seconds": round(statistics.median(t["seconds"] for t in als), 1) if als else None,
        "peak_rss_gb": round(result["peak_rss_bytes"]["largest_process"] / 2**30, 2),
        "peak_rss_process": result["peak_rss_bytes"]["largest_process_is"],
        "peak_rss_all_gb": round(result["peak_rss_bytes"]["all_processes"] / 2**30, 2),
        "ms_per_member": round(1000 * wall / result["members"], 2),
        "cache_warnings": result["cache_warnings"],
        "tasks": by_task,
    }


def median_summary(runs: list[dict]) -> dict:
    """Median of every numeric figure over the runs (strings from the first run)."""
    sums = [summary(r) for r in runs]
    merged = {}
    for key, value in sums[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = round(statistics.median(s[key] for s in sums if s.get(key) is not None), 3)
        elif key == "tasks":
            merged[key] = {t: round(statistics.median(s["tasks"][t] for s in sums if t in s["tasks"]), 1)
                           for t in value}
        else:
            merged[key] = value
    merged["finished"] = all(s["finished"] for s in sums)
    merged["runs"] = len(sums)
    return merged


def result_path(members: int, label: str | None) -> Path:
    return RESULTS / f"pipeline-{members}{'-' + label if label else ''}.json"


def markdown(label: str | None) -> str:
    """Tables of every size measured with this label: totals with growth, then time per task."""
    pattern = re.compile(rf"^pipeline-(\d+){re.escape('-' + label) if label else ''}\.json$")
    sizes = sorted((int(m.group(1)), p) for p in RESULTS.glob("pipeline-*.json") if (m := pattern.match(p.name)))
    if not sizes:
        return ""
    data = {n: json.loads(p.read_text()) for n, p in sizes}
    meds = {n: d["median"] for n, d in data.items()}
    lines = [f"Pipeline benchmark{' (' + label + ')' if label else ''}: medians of `runs` runs per size, "
             f"Spark master {data[sizes[0][0]]['runs'][0]['spark_master']}.", "",
             "| figure | " + " | ".join(f"{n:,} members" for n, _ in sizes) + " |",
             "|---|" + "---|" * len(sizes)]

    def row(name: str, key: str, fmt=lambda v: f"{v}", growth: bool = False) -> None:
        cells, previous = [], None
        for n, _ in sizes:
            value = meds[n].get(key)
            cell = "-" if value is None else fmt(value)
            if growth and previous not in (None, 0) and value is not None:
                cell += f" (x{value / previous:.2f})"
            cells.append(cell)
            previous = value
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    row("runs", "runs")
    row("finished", "finished")
    row("daily model DAG, s", "daily_seconds", growth=True)
    row("launch DAG (incl. DynamoDB load), s", "launch_seconds", growth=True)
    row("**daily + launch, s**", "wall_seconds", lambda v: f"**{v}**", growth=True)
    row("cost per member, ms", "ms_per_member", growth=True)
    row("Spark tasks", "spark_tasks")
    row("Spark start-up (JVM to session), s", "startup_seconds", growth=True)
    row("start-up share of wall time", "startup_share", lambda v: f"{v:.0%}")
    row("ALS tasks (groups)", "als_tasks")
    row("ALS tasks in all, s", "als_seconds", growth=True)
    row("ALS task median, s", "als_median_seconds", growth=True)
    row("peak RSS, largest process, GB", "peak_rss_gb", growth=True)
    row("peak RSS, all processes, GB", "peak_rss_all_gb", growth=True)
    row("'Not enough space to cache' warnings", "cache_warnings")
    lines += ["", "Largest process: " + "; ".join(f"{n:,}: {meds[n]['peak_rss_process']}" for n, _ in sizes), ""]

    lines += ["Rows in -> out per stage (first run):", "", "| stage | unit | " +
              " | ".join(f"{n:,}" for n, _ in sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    stages = ("build_features", "train_group_als", "score_products", "build_collections", "load_feeds")
    for stage in stages:
        first = next((data[n]["runs"][0]["rows"].get(stage) for n, _ in sizes
                      if stage in data[n]["runs"][0]["rows"]), None)
        if first is None:
            continue
        cells = []
        for n, _ in sizes:
            r = data[n]["runs"][0]["rows"].get(stage)
            cells.append("-" if r is None else f"{r['in'] or 0:,} -> {r['out']:,}")
        lines.append(f"| {stage} | {first['unit']} | " + " | ".join(cells) + " |")

    lines += ["", "Wall time per task, s (median; ALS per group):", "",
              "| task | " + " | ".join(f"{n:,}" for n, _ in sizes) + " |", "|---|" + "---|" * len(sizes)]
    names: list[str] = []
    for n, _ in sizes:
        names += [t for t in meds[n]["tasks"] if t not in names]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(str(meds[n]["tasks"].get(name, "-")) for n, _ in sizes) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--runs", type=int, default=1, help="runs per size; the tables show medians")
    parser.add_argument("--days", type=int, default=DEMO_DAYS)
    parser.add_argument("--date", default=DEMO_DATE)
    parser.add_argument("--launch", default=DEMO_LAUNCH)
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--label", default=None, help="suffix of the result files, e.g. before")
    parser.add_argument("--work", default="/tmp/flashfeed-bench", help="folder for the FLASHFEED_HOMEs")
    parser.add_argument("--spark-master", default=None, help="e.g. spark://127.0.0.1:7077 (default local[*])")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per DAG run")
    parser.add_argument("--keep", action="store_true", help="keep each FLASHFEED_HOME")
    args = parser.parse_args(argv)
    os.environ.update(project_env())   # airflow, spark-submit and flashfeed of this venv on PATH
    RESULTS.mkdir(parents=True, exist_ok=True)
    for members in args.members:
        runs = [run_once(members, run, args) for run in range(1, args.runs + 1)]
        record = {"members": members, "label": args.label, "measured_at": datetime.now().isoformat(timespec="seconds"),
                  "command": " ".join(["bench/pipeline_bench.py", *(argv if argv is not None else sys.argv[1:])]),
                  "median": median_summary(runs), "runs": runs}
        result_path(members, args.label).write_text(json.dumps(record, indent=2) + "\n")
        med = record["median"]
        print(f"{members} members: daily + launch {med['wall_seconds']} s (median of {len(runs)}), "
              f"{med['ms_per_member']} ms per member, start-up share {med['startup_share']}, "
              f"peak RSS {med['peak_rss_gb']} GB ({med['peak_rss_process']})", flush=True)
    report = markdown(args.label)
    (RESULTS / f"pipeline{'-' + args.label if args.label else ''}.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
