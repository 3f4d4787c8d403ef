"""The S3 connector's record (issue 25, item 5): `make install` knows which pyspark and Hadoop the
connector jars were chosen for, and stops with the next step when they no longer match.

Each test builds a fake pyspark jars folder (empty files named like pyspark's own jars) in a
tmp folder; nothing is downloaded (the sources are replaced by fakes).
"""
from __future__ import annotations

import hashlib
import zipfile

import pytest

from flashfeed.local import s3a_jars

SPARK, HADOOP = "4.3.0", "3.5.0"
PYPI_JARS = {s3a_jars.HADOOP_AWS[0]: b"hadoop-aws 3.3.1", s3a_jars.SLIM_BUNDLE: b"sdk v1, s3 part"}


def pyspark_jars(folder, spark=SPARK, hadoop=HADOOP):
    """pyspark's own jars as they name Spark and Hadoop (the rest of its jars does not matter here)."""
    folder.mkdir(exist_ok=True)
    for jar in folder.glob("spark-core_*.jar"):
        jar.unlink()
    for jar in folder.glob("hadoop-client-*.jar"):
        jar.unlink()
    for name in (f"spark-core_2.13-{spark}.jar", f"hadoop-client-api-{hadoop}.jar",
                 f"hadoop-client-runtime-{hadoop}.jar"):
        (folder / name).write_bytes(b"")
    return folder


def fake_source(jars: dict[str, bytes], source="pypi:fake"):
    calls = []

    def fetch(spark, hadoop, work):
        calls.append((spark, hadoop))
        for name, data in jars.items():
            (work / name).write_bytes(data)
        return source, [work / name for name in jars]

    fetch.calls = calls
    return fetch


def never_fetch(spark, hadoop, work):
    raise AssertionError("nothing should be downloaded")


@pytest.fixture
def installed(tmp_path):
    """A folder where the connector was installed for pyspark 4.3.0 / Hadoop 3.5.0."""
    folder = pyspark_jars(tmp_path / "jars")
    s3a_jars.install(folder, fetch=fake_source(PYPI_JARS))
    return folder


def test_versions_come_from_pyspark_own_jar_names(tmp_path):
    assert s3a_jars.pyspark_versions(pyspark_jars(tmp_path / "jars")) == (SPARK, HADOOP)


def test_install_records_what_it_chose_and_for_which_pyspark(installed):
    record = s3a_jars.read_record(installed)
    assert record["chosen_for"] == {"pyspark": SPARK, "hadoop": HADOOP}
    assert record["source"] == "pypi:fake"
    assert set(record["jars"]) == set(PYPI_JARS)
    assert all(len(sha256) == 64 for sha256 in record["jars"].values())
    assert s3a_jars.problems(installed) == []


def test_a_matching_connector_is_kept_without_downloading(installed):
    assert "matches pyspark 4.3.0 (Hadoop 3.5.0)" in s3a_jars.install(installed, fetch=never_fetch)


def test_pyspark_upgraded_with_the_old_jars_left_behind_stops_with_the_next_step(installed):
    """pip removes only its own files: the connector and its record outlive the old pyspark."""
    pyspark_jars(installed, spark="4.4.0", hadoop="3.5.1")
    with pytest.raises(s3a_jars.ConnectorError) as stopped:
        s3a_jars.install(installed, fetch=never_fetch)
    message = str(stopped.value)
    assert (f"pyspark is 4.4.0 (Hadoop 3.5.1) but the S3 connector jars in {installed} were chosen for "
            "pyspark 4.3.0 (Hadoop 3.5.0)") in message
    assert "-m flashfeed.local.s3a_jars --force" in message and "make install" in message


def test_jars_without_a_record_are_not_trusted(tmp_path):
    """What an install before the record left: the jar names alone say nothing about pyspark."""
    folder = pyspark_jars(tmp_path / "jars")
    (folder / s3a_jars.HADOOP_AWS[0]).write_bytes(b"old")
    [problem] = s3a_jars.problems(folder)
    assert "without a record of the pyspark they were chosen for" in problem
    with pytest.raises(s3a_jars.ConnectorError, match="--force"):
        s3a_jars.install(folder, fetch=never_fetch)


def test_a_changed_or_missing_jar_is_named(installed):
    (installed / s3a_jars.HADOOP_AWS[0]).write_bytes(b"another build")
    (installed / s3a_jars.SLIM_BUNDLE).unlink()
    found = s3a_jars.problems(installed)
    assert any(s3a_jars.HADOOP_AWS[0] in p and "sha256 differs" in p for p in found)
    assert any(s3a_jars.SLIM_BUNDLE in p and "missing" in p for p in found)


def test_a_second_connector_on_the_classpath_is_named(installed):
    (installed / "org.apache.hadoop_hadoop-aws-3.5.0.jar").write_bytes(b"")
    [problem] = s3a_jars.problems(installed)
    assert "does not list" in problem and "org.apache.hadoop_hadoop-aws-3.5.0.jar" in problem


def test_force_replaces_every_connector_jar_for_the_pyspark_there(installed):
    pyspark_jars(installed, spark="4.4.0", hadoop="3.5.1")
    (installed / "aws-java-sdk-bundle-1.12.262.jar").write_bytes(b"a stray")
    fetch = fake_source({"hadoop-aws-3.5.1.jar": b"new"}, source="maven:org.apache.hadoop:hadoop-aws:3.5.1")
    message = s3a_jars.install(installed, force=True, fetch=fetch)
    assert fetch.calls == [("4.4.0", "3.5.1")]
    assert "replacing" in message
    assert s3a_jars.connector_jars_present(installed) == {"hadoop-aws-3.5.1.jar"}
    assert s3a_jars.read_record(installed)["chosen_for"] == {"pyspark": "4.4.0", "hadoop": "3.5.1"}
    assert s3a_jars.problems(installed) == []


def test_pypi_connector_only_on_a_hadoop_it_was_tried_on(tmp_path):
    folder = pyspark_jars(tmp_path / "jars", hadoop="3.6.0")
    with pytest.raises(s3a_jars.ConnectorError) as stopped:
        s3a_jars.install(folder)          # the real PyPI source refuses before downloading
    message = str(stopped.value)
    assert "ships Hadoop 3.6.0" in message and "PYPI_CONNECTOR_TRIED_ON" in message
    assert "tests/e2e/test_s3_lake.py" in message
    assert s3a_jars.read_record(folder) is None


def test_maven_jars_that_pyspark_already_ships_are_not_added_twice(tmp_path):
    folder = pyspark_jars(tmp_path / "jars")
    (folder / "commons-lang3-3.18.0.jar").write_bytes(b"")
    resolved = [tmp_path / name for name in ("org.apache.hadoop_hadoop-aws-3.5.0.jar",
                                             "software.amazon.awssdk_bundle-2.29.52.jar",
                                             "org.apache.commons_commons-lang3-3.18.0.jar")]
    assert [jar.name for jar in s3a_jars.jars_to_add(resolved, folder)] == [
        "org.apache.hadoop_hadoop-aws-3.5.0.jar", "software.amazon.awssdk_bundle-2.29.52.jar"]


def test_this_environment_connector_matches_its_pyspark():
    """What `make install` left in this venv (nothing, or a connector recorded for this pyspark)."""
    assert s3a_jars.problems() == [], s3a_jars.mismatch_message(s3a_jars.problems())


def maven_artifact(repository, group, artifact, version, dependencies=()):
    """A jar and its pom in a Maven repository layout, with the .sha1 files Central publishes."""
    folder = repository.joinpath(*group.split("."), artifact, version)
    folder.mkdir(parents=True)
    jar = folder / f"{artifact}-{version}.jar"
    with zipfile.ZipFile(jar, "w") as archive:
        archive.writestr(f"{artifact}.txt", f"{group}:{artifact}:{version}")
    deps = "".join(f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
                   "<scope>compile</scope></dependency>" for g, a, v in dependencies)
    pom = folder / f"{artifact}-{version}.pom"
    pom.write_text(f'<?xml version="1.0"?><project><modelVersion>4.0.0</modelVersion><groupId>{group}</groupId>'
                   f"<artifactId>{artifact}</artifactId><version>{version}</version>"
                   f"<dependencies>{deps}</dependencies></project>")
    for path in (jar, pom):
        path.with_name(path.name + ".sha1").write_text(hashlib.sha1(path.read_bytes()).hexdigest())


@pytest.mark.slow
def test_from_maven_installs_hadoop_aws_of_pyspark_hadoop_and_its_sdk(tmp_path, monkeypatch):
    """The Docker images' path, for real: spark-submit resolves hadoop-aws of the folder's Hadoop
    version and the SDK bundle it depends on (from a repository in tmp_path instead of Maven
    Central, through FLASHFEED_IVY_SETTINGS), and they land in the jars folder, recorded."""
    repository = tmp_path / "maven"
    sdk = ("software.amazon.awssdk", "bundle", "2.99.1")
    maven_artifact(repository, "org.apache.hadoop", "hadoop-aws", HADOOP, dependencies=[sdk])
    maven_artifact(repository, *sdk)
    settings = tmp_path / "ivysettings.xml"
    settings.write_text(f'<ivysettings><settings defaultResolver="local-maven"/><resolvers>'
                        f'<ibiblio name="local-maven" m2compatible="true" root="{repository.as_uri()}/"/>'
                        "</resolvers></ivysettings>")
    monkeypatch.setenv(s3a_jars.IVY_SETTINGS_ENV, str(settings))
    folder = pyspark_jars(tmp_path / "jars")

    s3a_jars.install(folder, fetch=s3a_jars.fetch_from_maven)
    record = s3a_jars.read_record(folder)
    assert record["source"] == f"maven:org.apache.hadoop:hadoop-aws:{HADOOP}"
    assert set(record["jars"]) == {f"org.apache.hadoop_hadoop-aws-{HADOOP}.jar",
                                   "software.amazon.awssdk_bundle-2.99.1.jar"}
    assert s3a_jars.problems(folder) == []
