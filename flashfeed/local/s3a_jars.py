"""Put Hadoop's S3 connector (s3a) on the local Spark's classpath, from PyPI (`make install` runs it).

    python -m flashfeed.local.s3a_jars          # idempotent; prints what it did

The pyspark wheel has no S3 connector, and this project may only download from PyPI, npm and
Debian. The one source of the connector there is the sdist of `sagemaker-pyspark==1.4.5`:
`hadoop-aws-3.3.1.jar` and the AWS SDK v1 bundle it was built against. Both are checked against
pinned sha256 sums. The bundle is 192 MB; only its S3, STS, KMS and DynamoDB clients (which
s3a loads) are kept, 13 MB. The two jars go into `pyspark/jars`, so that every local Spark
(spark-submit, `flashfeed evaluate`, the local standalone cluster) reads and writes `s3a://`.

hadoop-aws 3.3.1 runs on pyspark's Hadoop 3.5 client with the settings in
`include/spark-conf/spark-defaults.conf` (plain-number timeouts, SDK v1 credential providers).
A production cluster instead adds hadoop-aws of its own Hadoop version and the AWS SDK v2
bundle (e.g. `spark.jars.packages org.apache.hadoop:hadoop-aws:3.5.0`) and drops those lines.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

SOURCE = "sagemaker-pyspark==1.4.5"
HADOOP_AWS = ("hadoop-aws-3.3.1.jar", "6be50ad8a8b445d2802381b085b2a3ede5c29d353450a6a21f16b2fefa962b6e")
SDK_BUNDLE = ("aws-java-sdk-bundle-1.11.901.jar", "b87175b32a16544cc1b37cf40390eb375833e62bed67f8ce6cde4b7ad6429ead")
SLIM_BUNDLE = "aws-java-sdk-bundle-1.11.901-s3a.jar"
SDK_SERVICES_KEPT = {"s3", "dynamodbv2", "securitytoken", "kms"}   # what s3a's code refers to


def jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def installed(folder: Path | None = None) -> bool:
    folder = folder or jars_dir()
    return (folder / HADOOP_AWS[0]).exists() and (folder / SLIM_BUNDLE).exists()


def _checked(data: bytes, name: str, sha256: str) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{name} from {SOURCE} has sha256 {digest}, expected {sha256}: refusing to install it")
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


def install(folder: Path | None = None) -> str:
    folder = folder or jars_dir()
    if installed(folder):
        return f"s3a connector already in {folder}"
    with tempfile.TemporaryDirectory(prefix="flashfeed-s3a-") as work:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", work, SOURCE],
                       check=True)
        archive = next(Path(work).glob("sagemaker_pyspark-*.tar.gz"))
        wanted = {HADOOP_AWS[0]: HADOOP_AWS[1], SDK_BUNDLE[0]: SDK_BUNDLE[1]}
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if name in wanted and "/jars/" in member.name:
                    data = _checked(tar.extractfile(member).read(), name, wanted.pop(name))
                    (Path(work) / name).write_bytes(data)
        if wanted:
            raise SystemExit(f"{SOURCE} lacks {sorted(wanted)}")
        slim_bundle(Path(work) / SDK_BUNDLE[0], Path(work) / SLIM_BUNDLE)
        for name in (HADOOP_AWS[0], SLIM_BUNDLE):
            (Path(work) / name).replace(folder / name)
    return f"installed {HADOOP_AWS[0]} and {SLIM_BUNDLE} into {folder}"


if __name__ == "__main__":
    print(install())
