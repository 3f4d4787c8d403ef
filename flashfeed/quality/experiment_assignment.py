"""`flashfeed experiment assign`: each member's experiment variant, as CSV, for reading an
experiment offline (e.g. joining orders to variants).

The variant comes from the experiment that was served (a launch's `manifest.json`) or, without
one, from the config; the assignment itself is `flashfeed.core.experiments`.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys

from flashfeed.core import experiments, lake
from flashfeed.core.config import load_config


def main(argv: list[str] | None = None) -> int:
    """Each member's variant, as CSV, for reading an experiment offline."""
    parser = argparse.ArgumentParser(prog="flashfeed experiment", description=main.__doc__)
    parser.add_argument("action", choices=["assign"])
    parser.add_argument("--members", default="-", help="file of member ids, one per line (default: stdin)")
    parser.add_argument("--manifest", default=None,
                        help="a launch's manifest.json: its experiment (what was served), else the config's")
    args = parser.parse_args(argv)
    if args.manifest:
        experiment = experiments.from_dict(lake.read_json(args.manifest).get("experiment"))
    else:
        experiment = experiments.from_config(load_config())
    if experiment is None:
        print("no experiment (config experiments.name is empty, or the manifest has none)", file=sys.stderr)
        return 1
    source = sys.stdin if args.members == "-" else open(args.members, encoding="utf-8")
    writer = csv.writer(sys.stdout)
    writer.writerow(["member_id", "experiment", "variant"])
    with source:
        for line in source:
            if line.strip():
                writer.writerow([line.strip(), experiment.name, experiment.variant(line.strip())])
    print(json.dumps(experiment.as_dict()), file=sys.stderr)
    return 0
