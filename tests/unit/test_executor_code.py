"""The zip of the project's code that every Spark job ships to its executors
(spark_jobs/executor_code.py): deterministic, named by its content, complete, importable.
That executors without flashfeed import it from there: tests/e2e/test_spark_cluster.py."""
from __future__ import annotations

import subprocess
import sys
import zipfile

from spark_jobs import executor_code


def fake_package(root, name: str, body: str = "ANSWER = 42\n"):
    package = root / name
    (package / "sub" / "__pycache__").mkdir(parents=True)
    (package / "_project" / "dags").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "answer.py").write_text(body)
    (package / "sub" / "__pycache__" / "answer.cpython-311.pyc").write_bytes(b"bytecode")
    (package / "_project" / "dags" / "a_dag.py").write_text("")
    (package / "notes.txt").write_text("not code")
    return package


def test_the_zip_holds_the_python_files_only_and_is_the_same_bytes_every_time(tmp_path):
    packages = {"fakeflash": fake_package(tmp_path / "src", "fakeflash")}
    first = executor_code.code_zip(packages, tmp_path / "a")
    again = executor_code.code_zip(packages, tmp_path / "b")
    assert first.name == again.name and first.read_bytes() == again.read_bytes()
    assert first.name.startswith("flashfeed-code-") and first.suffix == ".zip"
    with zipfile.ZipFile(first) as archive:
        assert archive.namelist() == ["fakeflash/__init__.py", "fakeflash/sub/__init__.py", "fakeflash/sub/answer.py"]
        assert {entry.date_time for entry in archive.infolist()} == {executor_code.ZIP_DATE_TIME}
    assert executor_code.code_zip(packages, tmp_path / "a") == first      # there already: not written again
    assert [p.name for p in (tmp_path / "a").iterdir()] == [first.name]   # no partial file left


def test_a_changed_file_gives_a_new_zip_and_python_imports_from_it(tmp_path):
    source = fake_package(tmp_path / "src", "fakeflash2")
    before = executor_code.code_zip({"fakeflash2": source}, tmp_path / "zips")
    (source / "sub" / "answer.py").write_text("ANSWER = 43\n")
    after = executor_code.code_zip({"fakeflash2": source}, tmp_path / "zips")
    assert after != before and before.exists()
    imported = subprocess.run([sys.executable, "-c", "from fakeflash2.sub.answer import ANSWER; print(ANSWER)"],
                              env={"PYTHONPATH": str(after)}, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "43"


def test_the_shipped_packages_are_flashfeed_and_spark_jobs_as_the_driver_imported_them():
    names = dict(executor_code.source_files(executor_code.package_folders()))
    assert {"flashfeed/core/config.py", "flashfeed/core/divisions.py", "spark_jobs/common.py",
            "spark_jobs/transforms/als.py"} <= set(names)
    assert not [name for name in names if "__pycache__" in name or not name.endswith(".py")]
