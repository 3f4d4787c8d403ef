"""Hadoop's S3 connector (s3a) in pyspark's jars, chosen for pyspark's own Hadoop, with a record
of that choice that `make install` checks.

    python -m flashfeed.local.s3a_jars               # install, or check what is there (make install)
    python -m flashfeed.local.s3a_jars --force       # remove the connector jars there, install anew
    python -m flashfeed.local.s3a_jars --from-maven  # the Docker images: hadoop-aws of pyspark's Hadoop

The pyspark wheel has no S3 connector. The jars go into `pyspark/jars`, so that every Spark
started from this Python (spark-submit, `flashfeed evaluate`, a standalone cluster) reads and
writes `s3a://`. Two sources:

- **PyPI** (the default; `make install`, since this project may only download from PyPI, npm
  and Debian). No PyPI package carries hadoop-aws 3.4 or later or the AWS SDK v2 bundle it
  needs: `sagemaker-pyspark==1.4.5` has hadoop-aws 3.3.1 and the AWS SDK v1 bundle;
  `snowpark-connect-deps-1`/`-2`/`-iceberg` have no hadoop-aws; `sagemaker-feature-store-pyspark`
  relocates the SDK v2 into its own package, so hadoop-aws cannot use it. So the PyPI connector
  is hadoop-aws 3.3.1 and the S3, STS, KMS and DynamoDB clients of the SDK v1 bundle (13 of its
  192 MB), checked against pinned sha256 sums. It is installed only on a Hadoop it was tried on
  (`PYPI_CONNECTOR_TRIED_ON`: tests/e2e/test_s3_lake.py with `include/spark-conf`).
- **Maven Central through Spark's own resolver** (`--from-maven`, for the Docker images, built
  where Maven Central is reachable): `org.apache.hadoop:hadoop-aws` of exactly pyspark's Hadoop
  version and what it depends on (the AWS SDK v2 bundle), checksums checked by the resolver.
  FLASHFEED_IVY_SETTINGS names an Ivy settings file to use instead (a Maven mirror).

The record (`RECORD_NAME`, next to the jars) says which pyspark and Hadoop the connector was
chosen for, where it came from, and each jar's sha256. pip leaves it and the connector jars
behind when it upgrades pyspark, so a later `make install` compares the record with the pyspark
that is there now and stops, naming the next step, when they differ, when a jar changed or went
missing, or when connector jars lie there that the record does not list.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

RECORD_NAME = "flashfeed-s3a-connector.json"
# pyspark's own jars that say which Spark and which Hadoop client it ships.
SPARK_CORE_JAR = re.compile(r"^spark-core_[\d.]+-(?P<version>.+)\.jar$")
HADOOP_CLIENT_JAR = re.compile(r"^hadoop-client-api-(?P<version>.+)\.jar$")
# Any file that looks like an S3 connector jar, whoever put it there (Ivy names a jar
# `<organisation>_<artifact>-<version>.jar`): two connectors on one classpath break s3a.
CONNECTOR_JAR_PATTERNS = ("*hadoop-aws-*.jar", "*aws-java-sdk-bundle-*.jar", "software.amazon.awssdk_bundle-*.jar")

PYPI_SOURCE = "sagemaker-pyspark==1.4.5"
HADOOP_AWS = ("hadoop-aws-3.3.1.jar", "6be50ad8a8b445d2802381b085b2a3ede5c29d353450a6a21f16b2fefa962b6e")
SDK_BUNDLE = ("aws-java-sdk-bundle-1.11.901.jar", "b87175b32a16544cc1b37cf40390eb375833e62bed67f8ce6cde4b7ad6429ead")
SLIM_BUNDLE = "aws-java-sdk-bundle-1.11.901-s3a.jar"
SDK_SERVICES_KEPT = {"s3", "dynamodbv2", "securitytoken", "kms"}   # what s3a's code refers to
# Hadoop client versions (pyspark's) on which the PyPI connector passed tests/e2e/test_s3_lake.py
# with the compatibility lines of include/spark-conf/spark-defaults.conf.
PYPI_CONNECTOR_TRIED_ON = {"3.5.0"}

MAVEN_ARTIFACT = "org.apache.hadoop:hadoop-aws"
# An Ivy settings file whose resolvers replace Spark's defaults (Maven Central), e.g. a company's
# Maven mirror; the tests point it at a repository in a tmp folder.
IVY_SETTINGS_ENV = "FLASHFEED_IVY_SETTINGS"

# A source puts the connector's jars into a work folder: (spark version, hadoop version, work
# folder) -> (where they came from, the jar files).
Fetch = Callable[[str, str, Path], tuple[str, list[Path]]]


class ConnectorError(SystemExit):
    """The connector cannot be installed or no longer matches pyspark; the message says what to do."""


def jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def _version_of(folder: Path, pattern: re.Pattern, what: str) -> str:
    versions = sorted({m["version"] for jar in folder.glob("*.jar") if (m := pattern.match(jar.name))})
    if len(versions) != 1:
        raise ConnectorError(f"{folder} should hold exactly one {what} jar, found versions {versions or 'none'}: "
                             "reinstall pyspark (`make install`)")
    return versions[0]


def pyspark_versions(folder: Path) -> tuple[str, str]:
    """(Spark version, Hadoop client version) of the pyspark whose jars are in `folder`, read from
    its own jar names (pyspark's Python files may come from another package: see the Makefile)."""
    return (_version_of(folder, SPARK_CORE_JAR, "spark-core"),
            _version_of(folder, HADOOP_CLIENT_JAR, "hadoop-client-api"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(folder: Path) -> dict | None:
    path = folder / RECORD_NAME
    return json.loads(path.read_text()) if path.exists() else None


def write_record(folder: Path, spark: str, hadoop: str, source: str, jar_names: list[str]) -> dict:
    record = {"chosen_for": {"pyspark": spark, "hadoop": hadoop}, "source": source,
              "jars": {name: sha256_of(folder / name) for name in sorted(jar_names)}}
    (folder / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return record


def connector_jars_present(folder: Path) -> set[str]:
    return {jar.name for pattern in CONNECTOR_JAR_PATTERNS for jar in folder.glob(pattern)}


def force_command() -> str:
    return f"{sys.executable} -m flashfeed.local.s3a_jars --force"


def problems(folder: Path | None = None) -> list[str]:
    """Why the connector in `folder` (pyspark's jars) does not match the pyspark there; [] when it
    does, or when no connector is installed at all."""
    folder = folder or jars_dir()
    record = read_record(folder)
    present = connector_jars_present(folder)
    if record is None:
        return [f"S3 connector jars {sorted(present)} are in {folder} without a record of the pyspark they "
                "were chosen for (an older `make install` put them there)"] if present else []
    spark, hadoop = pyspark_versions(folder)
    chosen = record["chosen_for"]
    found = []
    if (chosen["pyspark"], chosen["hadoop"]) != (spark, hadoop):
        found.append(f"pyspark is {spark} (Hadoop {hadoop}) but the S3 connector jars in {folder} were chosen for "
                     f"pyspark {chosen['pyspark']} (Hadoop {chosen['hadoop']})")
    for name, sha256 in record["jars"].items():
        if not (folder / name).exists():
            found.append(f"{name}, recorded as part of the S3 connector, is missing from {folder}")
        elif sha256_of(folder / name) != sha256:
            found.append(f"{name} in {folder} changed since it was installed (sha256 differs from the record)")
    strays = sorted(present - set(record["jars"]))
    if strays:
        found.append(f"{folder} also holds S3 connector jars the record does not list: {strays}")
    return found


def mismatch_message(found: list[str]) -> str:
    return ("The S3 connector does not match pyspark:\n- " + "\n- ".join(found)
            + f"\nNext step: `{force_command()}` (it removes the connector jars there and installs the ones "
              "for this pyspark), then `make install` again.")


def remove_connector(folder: Path) -> list[str]:
    """Delete the recorded jars, any other connector jars and the record; the names removed."""
    record = read_record(folder) or {"jars": {}}
    names = sorted((set(record["jars"]) | connector_jars_present(folder)) - {RECORD_NAME})
    for name in names:
        (folder / name).unlink(missing_ok=True)
    (folder / RECORD_NAME).unlink(missing_ok=True)
    return names


# --- PyPI: sagemaker-pyspark's hadoop-aws 3.3.1 and AWS SDK v1 --------------------------------

def _checked(data: bytes, name: str, sha256: str) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ConnectorError(f"{name} from {PYPI_SOURCE} has sha256 {digest}, expected {sha256}: "
                             "refusing to install it")
    return data


def slim_bundle(bundle: Path, target: Path) -> None:
    """The SDK bundle without the clients s3a never loads (and without their JSON models)."""
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as slim:
        for entry in source.infolist():
            parts = entry.filename.split("/")
            if entry.filename.startswith("models/"):
                continue
            if entry.filename.startswith("com/amazonaws/services/") and len(parts) > 3 \
                    and parts[3] not in SDK_SERVICES_KEPT:
                continue
            slim.writestr(entry, source.read(entry))


def fetch_from_pypi(spark: str, hadoop: str, work: Path) -> tuple[str, list[Path]]:
    if hadoop not in PYPI_CONNECTOR_TRIED_ON:
        raise ConnectorError(
            f"pyspark {spark} ships Hadoop {hadoop}; the only S3 connector on PyPI ({HADOOP_AWS[0]} and the AWS "
            f"SDK v1, from {PYPI_SOURCE}) was tried on Hadoop {', '.join(sorted(PYPI_CONNECTOR_TRIED_ON))} only. "
            f"Next step: add {hadoop!r} to PYPI_CONNECTOR_TRIED_ON in flashfeed/local/s3a_jars.py, run "
            "`python -m flashfeed.local.s3a_jars` and `pytest tests/e2e/test_s3_lake.py`, and keep it only if they "
            "pass (else pin a pyspark whose Hadoop is listed)")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(work), PYPI_SOURCE],
                   check=True)
    archive = next(work.glob("sagemaker_pyspark-*.tar.gz"))
    wanted = {HADOOP_AWS[0]: HADOOP_AWS[1], SDK_BUNDLE[0]: SDK_BUNDLE[1]}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if name in wanted and "/jars/" in member.name:
                (work / name).write_bytes(_checked(tar.extractfile(member).read(), name, wanted.pop(name)))
    if wanted:
        raise ConnectorError(f"{PYPI_SOURCE} lacks {sorted(wanted)}")
    slim_bundle(work / SDK_BUNDLE[0], work / SLIM_BUNDLE)
    return f"pypi:{PYPI_SOURCE}", [work / HADOOP_AWS[0], work / SLIM_BUNDLE]


# --- Maven Central through Spark's resolver: hadoop-aws of pyspark's own Hadoop ----------------

def jars_to_add(resolved: list[Path], folder: Path) -> list[Path]:
    """The jars Spark's resolver fetched, less those pyspark already ships: Ivy names a jar
    `<organisation>_<artifact>-<version>.jar`, pyspark `<artifact>-<version>.jar`."""
    return [jar for jar in resolved if not (folder / jar.name.split("_", 1)[-1]).exists()]


def fetch_from_maven(spark: str, hadoop: str, work: Path) -> tuple[str, list[Path]]:
    """spark-submit resolves `--packages` (and checks the checksums) before it runs the
    application, so an empty application leaves exactly the connector and its dependencies."""
    coordinate = f"{MAVEN_ARTIFACT}:{hadoop}"
    empty_application = work / "resolve_only.py"
    empty_application.write_text("")
    ivy = work / "ivy"
    spark_submit = jars_dir().parent / "bin" / "spark-submit"
    settings = os.environ.get(IVY_SETTINGS_ENV)
    mirror = ["--conf", f"spark.jars.ivySettings={settings}"] if settings else []
    subprocess.run([str(spark_submit), "--master", "local[1]", "--packages", coordinate,
                    "--conf", f"spark.jars.ivy={ivy}", *mirror, str(empty_application)], check=True)
    resolved = sorted((ivy / "jars").glob("*.jar"))
    if not any(MAVEN_ARTIFACT.split(":")[1] in jar.name for jar in resolved):
        raise ConnectorError(f"Spark's resolver left no hadoop-aws jar for {coordinate} in {ivy / 'jars'}")
    return f"maven:{coordinate}", resolved


# --- install or check --------------------------------------------------------------------------

def install(folder: Path | None = None, *, force: bool = False, fetch: Fetch = fetch_from_pypi) -> str:
    """Install the connector for the pyspark in `folder` and record it; if one is there, check it
    (ConnectorError naming the next step when it does not match). `force` replaces whatever
    connector is there, once the new one is downloaded (so a Spark starting meanwhile misses it
    for a moment only)."""
    folder = folder or jars_dir()
    spark, hadoop = pyspark_versions(folder)
    if not force:
        found = problems(folder)
        if found:
            raise ConnectorError(mismatch_message(found))
        record = read_record(folder)
        if record is not None:
            return f"S3 connector in {folder} matches pyspark {spark} (Hadoop {hadoop}): {', '.join(record['jars'])}"
    with tempfile.TemporaryDirectory(prefix="flashfeed-s3a-") as work:
        source, jars = fetch(spark, hadoop, Path(work))
        removed = remove_connector(folder) if force else []
        jars = jars_to_add(jars, folder)
        for jar in jars:
            # Copy then rename within the folder: a Spark starting meanwhile never sees half a jar.
            partial = folder / f".{jar.name}.partial"
            partial.write_bytes(jar.read_bytes())
            partial.replace(folder / jar.name)
    write_record(folder, spark, hadoop, source, [jar.name for jar in jars])
    replaced = f" (replacing {', '.join(removed)})" if removed else ""
    return (f"installed {', '.join(jar.name for jar in jars)} from {source} into {folder} for pyspark {spark} "
            f"(Hadoop {hadoop}){replaced}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashfeed.local.s3a_jars", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true",
                        help="remove the S3 connector jars from pyspark's jars and install them anew")
    parser.add_argument("--from-maven", action="store_true",
                        help="hadoop-aws of pyspark's Hadoop version and its AWS SDK v2, by Spark's resolver "
                             "(needs Maven Central; the Docker images use it)")
    args = parser.parse_args(argv)
    print(install(force=args.force, fetch=fetch_from_maven if args.from_maven else fetch_from_pypi))
    return 0


if __name__ == "__main__":
    sys.exit(main())
