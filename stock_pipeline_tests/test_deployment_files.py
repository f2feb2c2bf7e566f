"""The deployment files are checked here, since CI cannot start Docker: docker-compose.yml
against the Compose Specification schema (vendored in scripts/compose-spec/) and for its
wiring (every setting in .env reaches the pipeline containers, the UI only on loopback
or behind the password of the `remote` proxy), the Dockerfile (its sources, a non-root
user) and .dockerignore, .env.example, docker/dagster.yaml as a Dagster instance on
Postgres with compute logs the webserver can read, both workspace files, and the code
location itself (`dagster definitions validate`)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest
import yaml
from cryptography.fernet import Fernet

from stock_pipeline_tests.helpers import REPO, dagster_bin, scratch_database

COMPOSE = REPO / "docker-compose.yml"
SCHEMA = REPO / "scripts" / "compose-spec" / "compose-spec.json"
SERVICES = {"postgres", "redis", "code", "webserver", "daemon", "metrics", "proxy"}
PIPELINE_SERVICES = {"code", "webserver", "daemon", "metrics"}  # the project's image and environment
DAGSTER_SERVICES = {"code", "webserver", "daemon"}  # these run or read runs, so they share the asset values
# What an operator must put in .env; everything else has a default in the compose file.
REQUIRED_ENV = {
    "ALLEGRO_CLIENT_ID": "my-client-id",
    "ALLEGRO_CLIENT_SECRET": "my-secret",
    "STOCK_DATABASE_URL": "postgresql+psycopg://shop@warehouse.example/shop",
    "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
}
# Read by docker/dagster.yaml, Dagster itself and definitions.py; pinned by the compose file.
DAGSTER_ENV = {"DAGSTER_HOME", "DAGSTER_POSTGRES_URL", "DAGSTER_COMPUTE_LOGS_DIR", "STOCK_PIPELINE_STORAGE_DIR"}
# Settings the compose file points at its own services, whatever .env says.
PINNED = {
    "STOCK_PIPELINE_DATABASE_URL": "@postgres:5432/stock_pipeline",
    "REDIS_URL": "redis://redis:6379/0",
    # Paths inside the containers (volumes), the same for the code server, the runs and the UI.
    "DAGSTER_HOME": "/opt/dagster/dagster_home",
    "STOCK_PIPELINE_STORAGE_DIR": "/opt/dagster/storage/frames",
}
INSTANCE = REPO / "docker" / "dagster.yaml"

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(node, env: dict[str, str]):
    """Compose's variable interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match) -> str:
        if match[0] == "$$":
            return "$"
        name, op, value = match["name"] or match["bare"], match["op"] or "", env.get(match["name"] or match["bare"])
        missing = value is None or (op.startswith(":") and value == "")
        if missing and op.endswith("-"):
            return match["arg"]
        if missing and op.endswith("?"):
            raise KeyError(f"{name}: {match['arg']}")
        return value or ""

    return _VARIABLE.sub(substitute, node)


def read_dotenv(path: Path) -> dict[str, str]:
    """The KEY=value lines of an env file (comments and blank lines skipped, quotes removed)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key.strip()] = value
    return values


def container_environment(compose: dict, service: str, dotenv: dict[str, str]) -> dict[str, str]:
    """A container's environment as Compose builds it when `dotenv` is the project's .env:
    its env_file entries (here only that .env), overlaid by `environment` interpolated from
    the same .env, which wins (Compose's precedence)."""
    spec = compose["services"][service]
    env: dict[str, str] = {}
    files = spec.get("env_file", [])
    for entry in [files] if isinstance(files, str) else files:
        path = entry if isinstance(entry, str) else entry["path"]
        assert path in (".env", "./.env"), f"{service} reads env_file {path}; only the project's .env is expected"
        env.update(dotenv)
    environment = interpolate(spec.get("environment", {}), dotenv)
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, dotenv.get(item, "")) for item in environment)
    env.update({key: "" if value is None else str(value) for key, value in environment.items()})
    return env


def setting_variables() -> list[str]:
    from stock_pipeline.foundation.settings import Settings

    return sorted(f.name.upper() for f in fields(Settings))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def resolved(compose) -> dict:
    return interpolate(compose, REQUIRED_ENV)


def test_compose_file_follows_the_compose_specification(compose, resolved):
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    for name, document in (("as written", compose), ("interpolated", resolved)):
        errors = [
            f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document)
        ]
        assert errors == [], f"docker-compose.yml ({name}) breaks the Compose Specification:\n" + "\n".join(errors)


def test_compose_requires_the_operators_secrets(compose):
    for variable in REQUIRED_ENV:
        with pytest.raises(KeyError, match=variable):
            interpolate(compose, {k: v for k, v in REQUIRED_ENV.items() if k != variable})


def test_env_example_and_compose_name_the_same_variables():
    """Every variable .env.example offers is read by someone (the pipeline's settings, or the
    compose file itself, such as the proxy's), and every one compose requires is in it."""
    offered = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), flags=re.M))
    interpolated = {m["name"] or m["bare"] for m in _VARIABLE.finditer(COMPOSE.read_text()) if m[0] != "$$"}
    assert offered - interpolated - set(setting_variables()) == set(), "in .env.example but read by nothing"
    assert set(REQUIRED_ENV) - offered == set(), "required by docker-compose.yml but missing from .env.example"


def test_every_setting_in_env_reaches_each_pipeline_service(compose):
    """Whatever an operator sets in .env reaches code, webserver, daemon and metrics with
    that value: every variable Settings reads, including ones added later, except the few
    the compose file points at its own Postgres and Redis."""
    variables = setting_variables()
    dotenv = {name: f"from-dotenv-{name}" for name in variables}
    for service in sorted(PIPELINE_SERVICES):
        env = container_environment(compose, service, dotenv)
        dropped = [name for name in variables if name not in env]
        assert dropped == [], f"{service}: docker-compose.yml does not pass {', '.join(dropped)} from .env"
        replaced = [name for name in variables if env[name] != dotenv[name] and name not in PINNED]
        assert replaced == [], f"{service}: docker-compose.yml replaces the .env value of {', '.join(replaced)}"
        for name, target in PINNED.items():
            assert target in env[name], f"{service}: {name} must point at the compose file's own service"


def test_env_example_has_no_placeholder_warehouse_url(compose):
    """A copied .env.example with only the Allegro credentials and the key filled in stops
    `docker compose up` at STOCK_DATABASE_URL, instead of syncing from a made-up database."""
    example = read_dotenv(REPO / ".env.example")
    assert example.get("STOCK_DATABASE_URL", "") == "", ".env.example must leave STOCK_DATABASE_URL empty"
    filled = {**example, **{k: v for k, v in REQUIRED_ENV.items() if k != "STOCK_DATABASE_URL"}}
    with pytest.raises(KeyError, match="STOCK_DATABASE_URL"):
        interpolate(compose, filled)


def test_compose_services_are_wired_together(resolved):
    services = resolved["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency} to be healthy; it has no healthcheck"
                )
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in resolved.get("volumes", {}), f"{name} mounts undeclared volume {source}"
    for name in PIPELINE_SERVICES:
        assert services[name]["build"] == "." and (REPO / "Dockerfile").exists()
        assert services[name]["environment"] == services["code"]["environment"], (
            f"{name} must share the pipeline environment"
        )
        assert services[name]["env_file"] == services["code"]["env_file"], f"{name} must read the same .env"
    for name in DAGSTER_SERVICES:
        assert "/opt/dagster/storage" in {v.split(":")[1] for v in services[name]["volumes"]}, (
            f"{name} cannot see the asset values"
        )
    # The code server starts before the webserver and daemon, which both wait for it.
    assert services["code"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"] == {"code": {"condition": "service_healthy"}}
    assert services["webserver"]["ports"] == ["127.0.0.1:3000:3000"]
    assert services["metrics"]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_webserver_is_published_on_loopback_only(resolved):
    """Dagster's UI has no login and launches runs (the override-guards tag included): the
    host publishes it on 127.0.0.1 only; other machines go through the `remote` proxy."""
    for port in resolved["services"]["webserver"]["ports"]:
        spec = (
            port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published', '')}:{port['target']}"
        )
        assert spec.startswith("127.0.0.1:"), f"the webserver is published on every interface: {port!r}"


def _proxy_start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """docker/proxy-start.sh as the proxy container runs it, with a stand-in for caddy."""
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "caddy").write_text('#!/bin/sh\necho "caddy-started $*"\n')
    (stub / "caddy").chmod(0o755)
    return subprocess.run(
        ["sh", str(REPO / "docker" / "proxy-start.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{stub}:{os.environ['PATH']}", **env},
    )


def test_remote_proxy_profile_requires_a_password(compose, resolved, tmp_path):
    """`docker compose --profile remote up` adds Caddy in front of the webserver, with basic
    auth from a bcrypt hash in .env; without a hash (or with a password instead) it refuses
    to start. The check is at start because Compose interpolates every service, profile or
    not: a ${PROXY_PASSWORD_HASH:?} would stop a plain `docker compose up` too."""
    proxy = compose["services"].get("proxy")
    assert proxy is not None, "no proxy service in docker-compose.yml"
    assert proxy["profiles"] == ["remote"], "the proxy must start only with --profile remote"
    assert ":?" not in json.dumps(proxy), "a required variable in a profile service breaks `docker compose up`"
    assert not any("proxy" in s.get("depends_on", {}) for n, s in compose["services"].items() if n != "proxy")
    mounts = dict(v.split(":")[:2] for v in proxy["volumes"] if v.startswith("./"))
    assert mounts["./docker/proxy-start.sh"] == proxy["command"][-1] and proxy["command"][0] == "sh"
    caddyfile = (REPO / "docker" / "Caddyfile").read_text()
    assert mounts["./docker/Caddyfile"] == "/etc/caddy/Caddyfile"
    assert re.search(r"basic_auth\s*\{\s*\{\$PROXY_USER\}\s+\{\$PROXY_PASSWORD_HASH\}\s*\}", caddyfile)
    command = resolved["services"]["webserver"]["command"]
    webserver_port = command[command.index("-p") + 1]
    assert f"reverse_proxy webserver:{webserver_port}" in caddyfile
    # The hash reaches the container from .env, unchanged ($ included).
    bcrypt = "$2a$14$nAGaTuNPMdkmNnjpDA8NN.a9wQzWl.E/2/6QRRKFd5ehH3M3q2EyG"
    assert interpolate(proxy["environment"], {"PROXY_PASSWORD_HASH": bcrypt})["PROXY_PASSWORD_HASH"] == bcrypt

    address = {"PROXY_SITE_ADDRESS": "dagster.example.com", "PROXY_USER": "admin"}
    for env, problem in (
        (address, "set PROXY_PASSWORD_HASH"),
        ({**address, "PROXY_PASSWORD_HASH": "hunter2"}, "not a bcrypt hash"),
        ({"PROXY_PASSWORD_HASH": bcrypt}, "set PROXY_SITE_ADDRESS"),
    ):
        refused = _proxy_start(tmp_path, **env)
        assert refused.returncode != 0 and problem in refused.stderr, (env, refused.stdout, refused.stderr)
        assert "caddy-started" not in refused.stdout
    started = _proxy_start(tmp_path, **address, PROXY_PASSWORD_HASH=bcrypt)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "caddy-started run --config /etc/caddy/Caddyfile --adapter caddyfile"


def test_metrics_service_runs_the_real_cli(resolved):
    from stock_pipeline.cli.main import build_parser

    command = resolved["services"]["metrics"]["command"]
    assert command[0] == "stock-pipeline"
    args = build_parser().parse_args(command[1:])
    assert (args.host, args.port) == ("0.0.0.0", 9464)
    assert f"{args.port}:{args.port}" in resolved["services"]["metrics"]["ports"]
    assert f"localhost:{args.port}/metrics" in resolved["services"]["metrics"]["healthcheck"]["test"][-1]


def test_code_server_and_workspaces_agree(resolved):
    from dagster._core.workspace.config_schema import process_workspace_config

    code = resolved["services"]["code"]
    command = code["command"]
    port = command[command.index("-p") + 1]
    module = command[command.index("-m") + 1]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert module == "stock_pipeline.definitions"
    assert code["healthcheck"]["test"][-1] == port
    docker_workspace = yaml.safe_load((REPO / "docker" / "workspace.yaml").read_text())
    local_workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    for workspace in (docker_workspace, local_workspace):
        assert process_workspace_config(workspace).success, workspace
    grpc = docker_workspace["load_from"][0]["grpc_server"]
    assert (grpc["host"], str(grpc["port"])) == ("code", port)
    assert grpc["location_name"] == local_workspace["load_from"][0]["python_module"]["location_name"]
    for name in ("webserver", "daemon"):
        assert resolved["services"][name]["command"][-2:] == ["-w", "/opt/dagster/workspace.yaml"]


def dockerfile_copies() -> list[list[str]]:
    text = (REPO / "Dockerfile").read_text()
    return [
        [a for a in shlex.split(line)[1:] if not a.startswith("--")]
        for line in text.splitlines()
        if line.startswith("COPY ")
    ]


def test_dockerfile_copies_what_the_services_use():
    text = (REPO / "Dockerfile").read_text()
    copies = dockerfile_copies()
    for *sources, _ in copies:
        for source in sources:
            assert (REPO / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
    assert ["docker/dagster.yaml", "/opt/dagster/dagster_home/dagster.yaml"] in copies
    assert ["docker/workspace.yaml", "/opt/dagster/workspace.yaml"] in copies
    assert "ENV DAGSTER_HOME=/opt/dagster/dagster_home" in text
    assert "-c constraints.txt" in text, "the image must install the pinned versions"


def test_dockerfile_runs_as_a_non_root_user(compose):
    """The services run as an unprivileged user that owns DAGSTER_HOME and the storage
    directory the shared volume is mounted on (a new named volume takes its owner)."""
    lines = (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "the Dockerfile has no USER: every service would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"the image runs as {users[-1]}"
    runs = " ".join(line for line in lines if line.startswith("RUN "))
    assert re.search(rf"useradd\b[^&]*\s{re.escape(user)}(\s|$)", runs), f"the Dockerfile never creates the user {user}"
    mounted = {v.split(":")[1] for name in DAGSTER_SERVICES for v in compose["services"][name]["volumes"]}
    chowned = re.search(rf"chown -R {re.escape(user)}(:\S+)? ([^&]+)", runs)
    assert chowned, f"nothing in the image is given to {user}"
    assert {"/opt/dagster/dagster_home", *mounted} <= set(chowned[2].split()), (
        f"{user} must own DAGSTER_HOME and {mounted}"
    )


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_build():
    import fnmatch

    path = REPO / ".dockerignore"
    assert path.exists(), "no .dockerignore: .venv, .git, .demo and .env would be sent to the Docker daemon"
    patterns = [p.strip().rstrip("/") for p in path.read_text().splitlines() if p.strip() and not p.startswith("#")]
    for needed in (".venv", ".git", ".demo", ".env"):
        assert needed in patterns, f".dockerignore does not exclude {needed}"

    def ignored(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(
            fnmatch.fnmatch(prefix, p.replace("**/", "*"))
            for p in patterns
            if not p.startswith("!")
            for prefix in prefixes
        )

    for *sources, _ in dockerfile_copies():
        for source in sources:
            files = (
                [source]
                if (REPO / source).is_file()
                else [str(f.relative_to(REPO)) for f in (REPO / source).rglob("*.py")]
            )
            assert not any(ignored(f) for f in files), f".dockerignore drops {source}, which the Dockerfile copies"


def test_compose_environment_is_valid_pipeline_settings(compose):
    from stock_pipeline.foundation.settings import load_settings

    environment = container_environment(compose, "code", REQUIRED_ENV)
    known = set(setting_variables()) | DAGSTER_ENV
    assert set(environment) - known == set(), "variables the pipeline does not read"
    settings = load_settings(environment)
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.frames_dir == "/opt/dagster/storage/frames"  # a volume shared by the code server and run workers
    assert "@postgres:5432/stock_pipeline" in settings.stock_pipeline_database_url
    assert "@postgres:5432/dagster" in environment["DAGSTER_POSTGRES_URL"]
    assert settings.allegro_sync_schedule == "*/30 * * * *"
    # The pipeline's database is created beside Dagster's by the init script.
    assert "CREATE DATABASE stock_pipeline" in (REPO / "docker" / "create-pipeline-db.sql").read_text()


def test_compute_logs_are_written_where_the_webserver_reads_them(resolved):
    """Runs execute in the code container (DefaultRunLauncher through the code server) and
    the webserver shows their stdout/stderr: the compute log directory of docker/dagster.yaml
    must be on one volume that code, webserver and daemon all mount."""
    config = yaml.safe_load(INSTANCE.read_text())
    assert "compute_logs" in config, "docker/dagster.yaml has no compute_logs: the UI could not show runs' output"
    logs = config["compute_logs"]
    assert logs["class"] == "LocalComputeLogManager"
    variable = logs["config"]["base_dir"]["env"]
    assert (
        yaml.safe_load((REPO / "docker" / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]["host"]
        == "code"
    )
    volumes = set()
    for name in DAGSTER_SERVICES:
        service = resolved["services"][name]
        directory = service["environment"][variable]
        holding = [
            v.split(":")[0] for v in service["volumes"] if directory.startswith(v.split(":")[1].rstrip("/") + "/")
        ]
        assert holding, f"{name}: {variable}={directory} is not on a volume"
        volumes.add(holding[0])
    assert len(volumes) == 1 and volumes <= set(resolved["volumes"]), (
        f"code, webserver and daemon must share one volume, got {volumes}"
    )


def test_dagster_dev_from_the_repository_root_does_not_load_the_production_instance(tmp_path, monkeypatch):
    """Without DAGSTER_HOME, `dagster dev` makes a temporary instance configured by the
    dagster.yaml of the current directory: the repository root must not hold the production
    one (it needs DAGSTER_POSTGRES_URL), so that `dagster dev -w workspace.yaml` starts."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    monkeypatch.delenv("DAGSTER_POSTGRES_URL", raising=False)
    monkeypatch.delenv("DAGSTER_COMPUTE_LOGS_DIR", raising=False)
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path), config_dir=str(REPO))) as instance:
        assert instance.get_runs() == []


def test_docker_compose_config_accepts_the_file(tmp_path):
    try:
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no docker CLI on this machine; the schema and wiring tests above cover the file")
    if plugin.returncode != 0:
        reason = (plugin.stderr.strip() or plugin.stdout.strip()).splitlines()[0]
        pytest.skip(
            f"the docker CLI has no compose plugin ({reason}); the schema and wiring tests above cover the file"
        )
    # A copy beside a .env holding the required settings (env_file needs the file to exist).
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.read_text())
    (tmp_path / "docker").symlink_to(REPO / "docker")
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in REQUIRED_ENV.items()))
    for profile in ([], ["--profile", "remote"]):
        result = subprocess.run(
            ["docker", "compose", *profile, "-f", str(tmp_path / "docker-compose.yml"), "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


def test_dagster_yaml_is_a_valid_postgres_instance_with_queued_runs(tmp_path, monkeypatch):
    from dagster import DagsterInstance
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    (tmp_path / "dagster.yaml").write_text(INSTANCE.read_text())
    dagster_instance_config(str(tmp_path))  # raises on anything the schema rejects
    with scratch_database(driver="postgresql") as url:
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
        monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_DIR", str(tmp_path / "compute_logs"))
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            assert isinstance(instance.compute_log_manager, LocalComputeLogManager)
            assert instance.compute_log_manager._base_dir == str(tmp_path / "compute_logs")
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
            assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
            assert isinstance(instance.run_launcher, DefaultRunLauncher)
            coordinator = instance.run_coordinator
            assert isinstance(coordinator, QueuedRunCoordinator)
            assert coordinator.get_run_queue_config().max_concurrent_runs == 8
            assert coordinator.get_run_queue_config().tag_concurrency_limits == [
                {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
            ]
            assert instance.get_runs() == []  # the schema was created and answers


@pytest.mark.parametrize(
    "target", [["-m", "stock_pipeline.definitions"], ["-w", "workspace.yaml"]], ids=["module", "workspace"]
)
def test_dagster_definitions_validate(tmp_path, target):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = subprocess.run(
        [dagster_bin("dagster"), "definitions", "validate", *target],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr
