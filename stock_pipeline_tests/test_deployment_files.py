"""The deployment files are checked here, since CI cannot start Docker: docker-compose.yml
against the Compose Specification schema (vendored in scripts/compose-spec/) and for its
wiring, the Dockerfile's sources, dagster.yaml as a Dagster instance on Postgres, both
workspace files, and the code location itself (`dagster definitions validate`)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import fields

import jsonschema
import pytest
import yaml
from cryptography.fernet import Fernet

from stock_pipeline_tests.conftest import scratch_database
from stock_pipeline_tests.test_daemon import REPO, dagster_bin

COMPOSE = REPO / "docker-compose.yml"
SCHEMA = REPO / "scripts" / "compose-spec" / "compose-spec.json"
SERVICES = {"postgres", "redis", "code", "webserver", "daemon", "metrics"}
PIPELINE_SERVICES = {"code", "webserver", "daemon", "metrics"}  # the project's image and environment
DAGSTER_SERVICES = {"code", "webserver", "daemon"}  # these run or read runs, so they share the asset values
# What an operator must put in .env; everything else has a default in the compose file.
REQUIRED_ENV = {"ALLEGRO_CLIENT_ID": "my-client-id", "ALLEGRO_CLIENT_SECRET": "my-secret",
                "STOCK_DATABASE_URL": "postgresql+psycopg://shop@warehouse.example/shop",
                "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode()}
DAGSTER_ENV = {"DAGSTER_POSTGRES_URL"}  # read by Dagster (dagster.yaml), not by the pipeline

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
        errors = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document)]
        assert errors == [], f"docker-compose.yml ({name}) breaks the Compose Specification:\n" + "\n".join(errors)


def test_compose_requires_the_operators_secrets(compose):
    for variable in REQUIRED_ENV:
        with pytest.raises(KeyError, match=variable):
            interpolate(compose, {k: v for k, v in REQUIRED_ENV.items() if k != variable})


def test_env_example_and_compose_name_the_same_variables():
    """Every variable .env.example offers reaches the containers, and every one compose
    requires is in .env.example."""
    offered = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), flags=re.M))
    passed = {m["name"] or m["bare"] for m in _VARIABLE.finditer(COMPOSE.read_text()) if m[0] != "$$"}
    assert offered - passed == set(), "in .env.example but never passed to a container by docker-compose.yml"
    assert set(REQUIRED_ENV) - offered == set(), "required by docker-compose.yml but missing from .env.example"


def test_compose_services_are_wired_together(resolved):
    services = resolved["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy; it has no healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in resolved.get("volumes", {}), f"{name} mounts undeclared volume {source}"
    for name in PIPELINE_SERVICES:
        assert services[name]["build"] == "." and (REPO / "Dockerfile").exists()
        assert services[name]["environment"] == services["code"]["environment"], f"{name} must share the pipeline environment"
    for name in DAGSTER_SERVICES:
        assert "/opt/dagster/storage" in {v.split(":")[1] for v in services[name]["volumes"]}, f"{name} cannot see the asset values"
    # The code server starts before the webserver and daemon, which both wait for it.
    assert services["code"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                              "redis": {"condition": "service_healthy"}}
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"] == {"code": {"condition": "service_healthy"}}
    assert "3000:3000" in services["webserver"]["ports"]
    assert services["metrics"]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_metrics_service_runs_the_real_cli(resolved):
    from stock_pipeline.cli import build_parser

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


def test_dockerfile_copies_what_the_services_use():
    text = (REPO / "Dockerfile").read_text()
    copies = [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("COPY ")]
    for *sources, _ in copies:
        for source in sources:
            assert (REPO / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
    assert ["dagster.yaml", "/opt/dagster/dagster_home/dagster.yaml"] in copies
    assert ["docker/workspace.yaml", "/opt/dagster/workspace.yaml"] in copies
    assert "ENV DAGSTER_HOME=/opt/dagster/dagster_home" in text
    assert "-c constraints.txt" in text, "the image must install the pinned versions"


def test_compose_environment_is_valid_pipeline_settings(resolved):
    from stock_pipeline.settings import Settings, load_settings

    environment = {k: str(v) for k, v in resolved["services"]["code"]["environment"].items()}
    known = {f.name.upper() for f in fields(Settings)} | DAGSTER_ENV
    assert set(environment) - known == set(), "variables the pipeline does not read"
    settings = load_settings(environment)
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.frames_dir == "/opt/dagster/storage/frames"  # a volume shared by the code server and run workers
    assert "@postgres:5432/stock_pipeline" in settings.stock_pipeline_database_url
    assert "@postgres:5432/dagster" in environment["DAGSTER_POSTGRES_URL"]
    assert settings.allegro_sync_schedule == "*/30 * * * *"
    # The pipeline's database is created beside Dagster's by the init script.
    assert "CREATE DATABASE stock_pipeline" in (REPO / "docker" / "create-pipeline-db.sql").read_text()


def test_docker_compose_config_accepts_the_file(tmp_path):
    try:
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no docker CLI on this machine; the schema and wiring tests above cover the file")
    if plugin.returncode != 0:
        reason = (plugin.stderr.strip() or plugin.stdout.strip()).splitlines()[0]
        pytest.skip(f"the docker CLI has no compose plugin ({reason}); the schema and wiring tests above cover the file")
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True,
                            env={**os.environ, **REQUIRED_ENV}, timeout=60)
    assert result.returncode == 0, result.stderr


def test_dagster_yaml_is_a_valid_postgres_instance_with_queued_runs(tmp_path, monkeypatch):
    from dagster import DagsterInstance
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    dagster_instance_config(str(tmp_path))  # raises on anything the schema rejects
    with scratch_database(driver="postgresql") as url:
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
            assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
            assert isinstance(instance.run_launcher, DefaultRunLauncher)
            coordinator = instance.run_coordinator
            assert isinstance(coordinator, QueuedRunCoordinator)
            assert coordinator.get_run_queue_config().max_concurrent_runs == 4
            assert coordinator.get_run_queue_config().tag_concurrency_limits == [
                {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
            assert instance.get_runs() == []  # the schema was created and answers


@pytest.mark.parametrize("target", [["-m", "stock_pipeline.definitions"], ["-w", "workspace.yaml"]], ids=["module", "workspace"])
def test_dagster_definitions_validate(tmp_path, target):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = subprocess.run([dagster_bin("dagster"), "definitions", "validate", *target], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, "DAGSTER_HOME": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr
