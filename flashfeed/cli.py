"""`flashfeed`: the project's command line (installed in .venv/bin by `make`).

    flashfeed demo                      the whole main job on the embedded defaults
    flashfeed demo-data [...]           generate the synthetic flash-sale world into the lake
    flashfeed dynamodb start|stop|status
    flashfeed postgres start|stop|status
                                        Airflow's metadata database (PostgreSQL on 127.0.0.1)
    flashfeed airflow ARGS...           the airflow CLI in the project's environment
    flashfeed airflow-init              Airflow's database and the flashfeed_spark pool (idempotent)
    flashfeed airflow-ui                Airflow UI + scheduler on 127.0.0.1:8080 (`make airflow`)
    flashfeed api                       the read API on 127.0.0.1:8088
    flashfeed spark-cluster start|stop|status
                                        a Spark standalone master + worker on 127.0.0.1 (cluster mode)
    flashfeed show-member MEMBER_ID     print a member's served payload through the read API
    flashfeed import --events F --items F --lake URI
                                        users' own CSV files -> the lake's raw inputs
    flashfeed uci-to-csv --csv F --out DIR
                                        the UCI Online Retail sample -> events.csv, items.csv
    flashfeed evaluate --lake URI --out metrics.json [--split time|stratified]
                                        popularity vs global ALS vs per-group ALS (+ boost)
    flashfeed tune --lake URI [--groups G ...]
                                        grid of rank, regParam, alpha per group -> results table
    flashfeed experiment assign [--members FILE] [--manifest URI]
                                        each member's experiment variant, as CSV (reading an experiment)

Every command takes --help.
"""

from __future__ import annotations

import argparse
import os
import sys

# command -> module[:function] whose main(argv) (or function(argv)) runs it, imported only when used
MODULE_COMMANDS = {
    "airflow-init": "flashfeed.local.airflow:init_main",
    "airflow-ui": "flashfeed.local.airflow",
    "demo": "flashfeed.demo.run",
    "demo-data": "flashfeed.demo.generator",
    "dynamodb": "flashfeed.local.dynamodb",
    "postgres": "flashfeed.local.postgres",
    "api": "flashfeed.serving.api",
    "spark-cluster": "flashfeed.local.spark_standalone",
    "import": "flashfeed.ingest.importer",
    "uci-to-csv": "flashfeed.ingest.uci",
    "evaluate": "spark_jobs.evaluate",
    "tune": "spark_jobs.tune",
    "experiment": "flashfeed.quality.experiment_assignment",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    from flashfeed.local.env import project_env

    os.environ.update(project_env())
    if command == "airflow":
        from flashfeed.local import postgres

        postgres.ensure_running()      # the project's PostgreSQL, unless Airflow has a database of its own
        os.execvp("airflow", ["airflow", *rest])  # replaces this process: never returns
    if command in MODULE_COMMANDS:
        import importlib

        module, _, function = MODULE_COMMANDS[command].partition(":")
        return getattr(importlib.import_module(module), function or "main")(rest) or 0
    if command == "show-member":
        from flashfeed.demo import run as demo

        parser = argparse.ArgumentParser(prog="flashfeed show-member")
        parser.add_argument("member_id")
        parser.add_argument("--feed", default="products")
        parser.add_argument("--variant", default="card")
        args = parser.parse_args(rest)
        return demo.show_member(args.member_id, args.feed, args.variant)
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
