"""The demo's UI instructions work. The demo copies stock_pipeline/cli/dagster_embedded.yaml into
.demo/dagster_home and prints a `dagster-webserver -w workspace.yaml` command, with no
daemon: a run launched from that UI must start at once (not wait in a queue nobody drains)
and go through to Allegro (the simulator)."""

from __future__ import annotations

import json
import shlex
import urllib.request

import pytest

from stock_pipeline_tests.helpers import REPO, DagsterProcess, free_port, register_account, seed, wait_for, write_stock

EMBEDDED = REPO / "stock_pipeline" / "cli" / "dagster_embedded.yaml"
RUN_BOUND = 60


def test_the_demo_instance_starts_runs_without_a_daemon(tmp_path):
    from dagster import DagsterInstance
    from dagster._core.run_coordinator import DefaultRunCoordinator, QueuedRunCoordinator

    (tmp_path / "dagster.yaml").write_text(EMBEDDED.read_text())
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_coordinator, DefaultRunCoordinator)
        assert not isinstance(instance.run_coordinator, QueuedRunCoordinator)


def test_the_demo_prints_a_ui_command_that_works_from_anywhere_and_says_to_keep_the_simulator(monkeypatch, tmp_path):
    from stock_pipeline.cli.demo import ui_instructions

    monkeypatch.chdir(REPO)
    stopped = "\n".join(ui_instructions(tmp_path / "env", "http://127.0.0.1:1", keep_running=False))
    assert f"-w {REPO / 'workspace.yaml'}" in stopped
    assert "stock-pipeline demo --keep-running" in stopped, "after a plain demo, UI runs need the simulator back"
    running = "\n".join(ui_instructions(tmp_path / "env", "http://127.0.0.1:1", keep_running=True))
    assert "another terminal" in running and "http://127.0.0.1:1" in running
    monkeypatch.chdir(tmp_path)  # not the repository: the installed module instead of the workspace file
    assert "-m stock_pipeline.definitions" in "\n".join(ui_instructions(tmp_path / "env", "x", keep_running=True))


def graphql(base_url: str, query: str, **variables) -> dict:
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    assert "errors" not in body, body
    return body["data"]


LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


@pytest.mark.timeout(180)
def test_a_run_launched_from_the_printed_webserver_command_succeeds(
    pipeline_env, settings, simulator, monkeypatch, tmp_path
):
    """The demo's UI, started as the demo prints it, on the demo's instance: a run of one
    account launched there (the UI's Launch 1 run sends this same launchRun) writes the
    warehouse's stock to Allegro, with no daemon running."""
    from dagster import DagsterInstance

    from stock_pipeline.cli.demo import ui_instructions
    from stock_pipeline.cli.sync_runner import select_accounts
    from stock_pipeline.defs.assets import accounts_partitions

    register_account(settings, simulator, "shop-a")
    offers = seed(simulator, "shop-a", [("SKU-1", 1, "ACTIVE"), ("SKU-2", 1, "ACTIVE")])
    write_stock(settings.stock_database_url, [("SKU-1", 3), ("SKU-2", 4)])
    assert select_accounts(settings, None) == ["shop-a"]
    with DagsterInstance.get() as instance:  # conftest's DAGSTER_HOME holds dagster_embedded.yaml
        instance.add_dynamic_partitions(accounts_partitions.name, ["shop-a"])

    # The demo's env file, then its printed command as a user would paste it (the port
    # given through the webserver's own DAGSTER_WEBSERVER_PORT: the line stays verbatim).
    env_file = tmp_path / "demo" / "env"
    env_file.parent.mkdir()
    env_file.write_text(
        "".join(f"export {k}={shlex.quote(v)}\n" for k, v in pipeline_env.items()) + "unset REDIS_URL\n"
    )
    # The user's shell stands in a checkout holding docker-compose's .env, which Dagster's CLI
    # would load over the demo's variables if the webserver started there.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".env").write_text("ALLEGRO_API_URL=https://api.allegro.pl.invalid\n")
    monkeypatch.chdir(REPO)
    printed = ui_instructions(env_file, simulator.api_url, keep_running=True)
    command = next(line for line in printed if "dagster-webserver" in line).strip()
    port = free_port()
    monkeypatch.setenv("DAGSTER_WEBSERVER_PORT", str(port))
    process = DagsterProcess(
        ["bash", "-c", f"cd {shlex.quote(str(checkout))} && {command}"], tmp_path / "webserver.log"
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for("dagster-webserver answering /server_info", lambda: _answers(base_url), 60, process, interval=0.5)
        launched = graphql(
            base_url,
            LAUNCH,
            params={
                "selector": {
                    "repositoryLocationName": "stock_pipeline",
                    "repositoryName": "__repository__",
                    "jobName": "account_sync",
                },
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "shop-a"}]},
            },
        )["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        def finished():
            status = graphql(base_url, STATUS, id=run_id)["runOrError"]["status"]
            return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

        assert wait_for("the run launched from the UI finishing", finished, RUN_BOUND, process) == "SUCCESS", (
            process.report()
        )
    finally:
        process.stop()
    assert [simulator.offer(offer)["stock"] for offer in offers] == [3, 4]


def _answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_a_new_dagster_home_gets_the_embedded_instance(tmp_path):
    """A first `stock-pipeline sync` with a DAGSTER_HOME that has no dagster.yaml yet."""
    from stock_pipeline.cli.sync_runner import EMBEDDED_INSTANCE_CONFIG, ensure_dagster_home
    from stock_pipeline.foundation.settings import load_settings

    home = ensure_dagster_home(load_settings({"DAGSTER_HOME": str(tmp_path / "new_home")}))
    assert (tmp_path / "new_home" / "dagster.yaml").read_text() == EMBEDDED_INSTANCE_CONFIG.read_text()
    assert home == str(tmp_path / "new_home")


@pytest.mark.cli
def test_the_demo_runs_from_a_fresh_directory(tmp_path):
    """`make demo` as a new user runs it: everything under ./.demo of the current directory."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALLEGRO_", "STOCK_", "DAGSTER_", "REDIS_"))}
    done = subprocess.run(
        [sys.executable, "-m", "stock_pipeline.cli", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "offers not matching the warehouse afterwards: 0" in done.stdout
    assert (tmp_path / ".demo" / "dagster_home" / "dagster.yaml").read_text() == EMBEDDED.read_text()
