"""Fixed costs of a Spark job (not a test): what a train_group_als task pays before useful work.

    .venv/bin/python bench/spark_fixed_costs.py --lake DIR --dt 2026-11-22 --group 24 [--repeats 3]

In one process, as a spark-submit of train_group does: starts the Spark session (the time from
the driver JVM's start, as every job logs it), then fits the group's ALS on the gate's training
part `--repeats` times, each time from the Parquet files and from the frame on the driver
(`spark.createDataFrame`, what train_group does). The first fit of a JVM pays for class loading
and JIT compilation; the later ones show what the fit itself costs. Needs `features/dt=D` in the
lake (run the daily model or `spark_jobs/features.py` first).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flashfeed.core import lake  # noqa: E402
from flashfeed.core.config import group_settings, load_config  # noqa: E402
from flashfeed.local.env import project_env  # noqa: E402
from spark_jobs.common import driver_startup_seconds, spark_session  # noqa: E402
from spark_jobs.transforms import als  # noqa: E402

RATING_COLUMNS = ["member_sk", "subclass_brand_id", "rating"]   # what ALS reads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--dt", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    root = str(Path(args.lake).resolve())
    os.environ.update(project_env({**os.environ, "FLASHFEED_LAKE": root}))
    config = load_config()
    params = group_settings(config, "als", args.group)
    path = f"{lake.features(args.dt, root)}/gate/ratings/group={args.group}"
    frame = lake.read_table(path, [*RATING_COLUMNS, "part"])
    frame = frame[frame["part"] == "train"][RATING_COLUMNS]      # the gate's training part
    blocks, _ = als.blocks_for(int(frame["member_sk"].nunique()), params)

    spark = spark_session("flashfeed-fixed-costs-bench", config)
    startup = driver_startup_seconds()
    spark.sparkContext.setCheckpointDir(tempfile.mkdtemp(prefix="flashfeed-fixed-costs-"))
    inputs = {"parquet": lambda: spark.read.parquet(path).where("part = 'train'").select(*RATING_COLUMNS),
              "driver frame": lambda: spark.createDataFrame(frame)}
    seconds: dict[str, list[float]] = {name: [] for name in inputs}
    order = []
    for _ in range(args.repeats):
        for name, data in inputs.items():
            started = time.monotonic()
            als.estimator(params, blocks).fit(data()).userFactors.count()
            seconds[name].append(time.monotonic() - started)
            order.append(name)
    spark.stop()
    print(f"group {args.group} on {args.dt}: {len(frame):,} gate training ratings, {blocks} user blocks, "
          f"rank {params['rank']}, {params['max_iter']} iterations")
    print(f"Spark session ready {startup:.1f} s after the driver JVM started")
    print(f"first fit of the JVM ({order[0]}): {seconds[order[0]][0]:.1f} s")
    for name, values in seconds.items():
        later = values[1:] if name == order[0] else values
        print(f"{name}: fits {', '.join(f'{s:.1f}' for s in values)} s; median after the first fit "
              f"{statistics.median(later):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
