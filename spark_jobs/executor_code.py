"""The project's Python code for Spark executors that have neither a checkout nor flashfeed installed.

A job's driver runs where flashfeed is installed (the Airflow worker, or a checkout); the
executors of a cluster have only the Python dependencies (requirements.txt). `ship_to_executors`
zips the driver's own `flashfeed` and `spark_jobs` packages and hands the zip to
SparkContext.addPyFile, which is spark-submit's --py-files from inside the job: every executor
puts the zip on its Python path before it runs a task, so a function of flashfeed or spark_jobs
runs there as it does on the driver.

Why from inside the job rather than with spark-submit --py-files: spark-submit also puts those
files on the driver's Python path, ahead of site-packages, so the driver would import flashfeed
from the zip, where the files installed beside the package (include/flashfeed.yaml,
include/sql) are not. addPyFile runs after the driver has imported both packages from where
they are installed.

The zip is deterministic (entries sorted, fixed timestamps and permissions) and named by the
digest of its own bytes: it is written once per version of the code, under
FLASHFEED_HOME/spark-py-files/, and a changed file gives a new zip.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import flashfeed
import spark_jobs
from flashfeed.core.config import flashfeed_home

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)     # the earliest date a zip entry can hold: the same bytes on every build
ZIP_FILE_MODE = 0o100644 << 16            # a regular file, rw-r--r--, as a zip entry's external attributes
NAME_DIGEST_CHARS = 16
SKIPPED_FOLDERS = {"__pycache__", "_project"}   # bytecode; the installed package's copy of dags/ and include/


def cache_folder() -> Path:
    return flashfeed_home() / "spark-py-files"


def package_folders() -> dict[str, Path]:
    """{package name: its folder} of the packages the executors need, as the driver imported them."""
    return {package.__name__: Path(package.__file__).parent for package in (flashfeed, spark_jobs)}


def source_files(packages: dict[str, Path]) -> list[tuple[str, Path]]:
    """(name inside the zip, file) of every .py file of the packages, sorted by name."""
    files = []
    for name, folder in packages.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder)
            if not SKIPPED_FOLDERS.intersection(relative.parts[:-1]):
                files.append((f"{name}/{relative.as_posix()}", path))
    return sorted(files)


def code_zip(packages: dict[str, Path], folder: Path) -> Path:
    """The zip of the packages' Python files in `folder`, named `flashfeed-code-<digest>.zip`;
    written only when no zip of the same bytes is there (atomically: concurrent jobs are safe)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in source_files(packages):
            entry = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            entry.external_attr = ZIP_FILE_MODE
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, path.read_bytes())
    content = buffer.getvalue()
    target = folder / f"flashfeed-code-{hashlib.sha256(content).hexdigest()[:NAME_DIGEST_CHARS]}.zip"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        partial.write_bytes(content)
        os.replace(partial, target)
    return target


def ship_to_executors(spark) -> Path | None:
    """Add the zip of the driver's flashfeed and spark_jobs to the session (see the module
    docstring); None when the driver itself imported them from a zip, i.e. they reached it by
    spark-submit --py-files, which ships them to the executors already."""
    packages = package_folders()
    if not all(folder.is_dir() for folder in packages.values()):
        return None
    path = code_zip(packages, cache_folder())
    spark.sparkContext.addPyFile(str(path))
    return path
