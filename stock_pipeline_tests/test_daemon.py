"""Operated by the real Dagster daemon, as in production: `dagster-daemon run -w workspace.yaml`
against a Postgres instance with the repository's dagster.yaml (queued runs, one run per
account). The sensor adds the partitions, the schedule launches one run per account, a
third account added with the CLI becomes a partition while the daemon runs, and a
one-account backfill from the CLI writes that account's offers and nobody else's."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

from stock_pipeline_tests.helpers import (
    REPO,
    DagsterProcess,
    assert_every_offer_right,
    dagster_bin,
    register_account,
    run_cli,
    seed,
    wait_for,
    write_requests,
    write_stock,
)

pytestmark = pytest.mark.daemon

WORKSPACE = REPO / "workspace.yaml"
ACCOUNTS = "accounts"
SCHEDULE = "account_sync_schedule"
# A `* * * * *` schedule ticks at the first minute boundary after the daemon starts; if
# the sensor has not added the partitions by then, the next minute's tick does it.
FIRST_RUNS_BOUND = 150
SENSOR_BOUND = 50  # minimum_interval_seconds=30 plus the sensor daemon's 5 s loop
RUN_BOUND = 60


def write_instance_yaml(home: Path, **coordinator: object) -> None:
    """The repository's dagster.yaml (Postgres via DAGSTER_POSTGRES_URL, queued runs with
    one run per `dagster/partition`), with test-only coordinator settings added."""
    config = yaml.safe_load((REPO / "docker" / "dagster.yaml").read_text())
    config["run_coordinator"]["config"].update(coordinator)
    config["compute_logs"]["config"]["base_dir"] = str(home / "compute_logs")  # in place of compose's shared volume
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def run_tool(tool: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [dagster_bin(tool), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert result.returncode == 0, f"{tool} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def run_failures(instance, run_id: str) -> str:
    from dagster import DagsterEventType

    failures = instance.all_logs(run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE})
    return "\n".join(f"  {e.dagster_event.step_key or 'run'}: {e.message}" for e in failures)


def runs_succeeded(instance, process: DagsterProcess, accounts: set[str], **tags: str) -> Callable[[], list]:
    """A check for `wait_for`: the runs with these tags, once there is one for each of
    `accounts` and every one has succeeded; fails at once (with the errors) when one fails."""
    from dagster import DagsterRunStatus, RunsFilter

    def check():
        runs = instance.get_runs(RunsFilter(job_name="account_sync", tags=tags))
        for run in runs:
            if run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
                pytest.fail(
                    f"run {run.run_id} ({run.tags.get('dagster/partition')}) ended {run.status.value}:\n"
                    f"{run_failures(instance, run.run_id)}\n{process.report()}"
                )
        covered = accounts <= {r.tags.get("dagster/partition") for r in runs}
        return runs if covered and all(r.status == DagsterRunStatus.SUCCESS for r in runs) else []

    return check


def unfinished(instance) -> list:
    from dagster import RunsFilter
    from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

    return instance.get_runs(RunsFilter(statuses=NOT_FINISHED_STATUSES))


def settled(instance) -> bool:
    """No run queued or running, twice 2 s apart: a tick that began before the schedule
    was stopped has submitted its runs by then, and they have finished."""
    if unfinished(instance):
        return False
    time.sleep(2)
    return not unfinished(instance)


@pytest.fixture
def daemon_home(postgres_dagster_home, monkeypatch):
    write_instance_yaml(postgres_dagster_home, dequeue_interval_seconds=1)
    monkeypatch.setenv("ALLEGRO_SYNC_SCHEDULE", "* * * * *")
    # The schedule's runs are counted here; the live sync (its own test below) would add
    # a full sync per account for its offer maps and share the two cores with them.
    monkeypatch.setenv("LIVE_SYNC", "off")
    return postgres_dagster_home


@pytest.fixture
def live_daemon_home(postgres_dagster_home, monkeypatch):
    write_instance_yaml(postgres_dagster_home)  # the repository's dagster.yaml as it is
    monkeypatch.setenv("ALLEGRO_SYNC_SCHEDULE", "0 0 1 1 *")  # no full sync but the live sensor's own
    monkeypatch.setenv("LIVE_SYNC", "on")
    return postgres_dagster_home


@pytest.fixture
def instance(daemon_home):
    from dagster import DagsterInstance

    with DagsterInstance.get() as inst:
        yield inst


def running_daemon(tmp_path):
    process = DagsterProcess([dagster_bin("dagster-daemon"), "run", "-w", str(WORKSPACE)], tmp_path / "daemon.log")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def live_daemon(live_daemon_home, tmp_path):
    yield from running_daemon(tmp_path)


@pytest.fixture
def daemon(daemon_home, tmp_path):
    yield from running_daemon(tmp_path)


def offer_state(simulator, *accounts: str) -> dict:
    return {o["id"]: (o["stock"], o["status"]) for a in accounts for o in simulator.offers(a)}


def test_daemon_schedules_each_account_senses_new_ones_and_backfills_one(settings, simulator, instance, daemon):
    register_account(settings, simulator, "shop-a")
    register_account(settings, simulator, "shop-b")
    seed(
        simulator,
        "shop-a",
        [(f"A{i:02d}", 1, "ACTIVE") for i in range(40)] + [("GONE", 2, "ACTIVE"), (None, 3, "ACTIVE")],
    )
    seed(simulator, "shop-b", [("B1", 5, "ACTIVE"), ("B2", 5, "ACTIVE"), ("A01", 9, "ACTIVE")])
    warehouse = {**{f"A{i:02d}": 2 + i % 5 for i in range(40)}, "GONE": 0, "B1": 6, "B2": 5}
    write_stock(settings.stock_database_url, list(warehouse.items()))
    before = {o["id"]: o for a in ("shop-a", "shop-b") for o in simulator.offers(a)}

    # 1. The sensor turns the accounts into partitions.
    wait_for(
        "the partitions sensor adding shop-a and shop-b",
        lambda: {"shop-a", "shop-b"} <= set(instance.get_dynamic_partitions(ACCOUNTS)),
        SENSOR_BOUND,
        daemon,
    )

    # 2. A third account, added with the CLI while the daemon runs, becomes a partition at
    # the sensor's next tick (while the schedule waits for its minute).
    refresh = simulator.add_seller("shop-c")
    seed(simulator, "shop-c", [("A01", 1, "ACTIVE"), ("B1", 1, "ACTIVE")])
    added = run_cli("accounts", "add", "shop-c", "--refresh-token", refresh)
    assert added.returncode == 0, added.stdout + added.stderr

    # 3. The schedule launches one run per account.
    wait_for(
        "a scheduled run per account, all succeeded",
        runs_succeeded(instance, daemon, {"shop-a", "shop-b"}, **{"dagster/schedule_name": SCHEDULE}),
        FIRST_RUNS_BOUND,
        daemon,
    )
    for account in ("shop-a", "shop-b"):
        assert_every_offer_right(simulator, account, warehouse, before)
    assert simulator.spec_violations == []
    wait_for(
        "the partitions sensor adding shop-c",
        lambda: "shop-c" in instance.get_dynamic_partitions(ACCOUNTS),
        SENSOR_BOUND,
        daemon,
    )

    # docker-compose.yml's healthcheck of the daemon service.
    assert "Daemon live" in run_tool("dagster-daemon", "liveness-check").stdout

    # Stop the schedule (as an operator would) so that from here on only the backfill writes.
    run_tool("dagster", "schedule", "stop", SCHEDULE, "-w", str(WORKSPACE))
    wait_for("scheduled runs still in flight to finish", lambda: settled(instance), RUN_BOUND, daemon)

    # 4. A one-account backfill from the CLI: only shop-b's offers change.
    warehouse = {sku: stock + 10 for sku, stock in warehouse.items() if stock}
    write_stock(settings.stock_database_url, list(warehouse.items()))
    untouched = offer_state(simulator, "shop-a", "shop-c")
    before = {o["id"]: o for o in simulator.offers("shop-b")}
    simulator.reset_requests()
    launched = run_tool(
        "dagster", "job", "backfill", "-j", "account_sync", "--partitions", "shop-b", "-w", str(WORKSPACE), "--noprompt"
    )
    backfill_id = re.search(r"Launched backfill job `([^`]+)`", launched.stdout)
    assert backfill_id, launched.stdout
    runs = wait_for(
        "the backfill's run",
        runs_succeeded(instance, daemon, {"shop-b"}, **{"dagster/backfill": backfill_id[1]}),
        RUN_BOUND,
        daemon,
    )
    assert [r.tags["dagster/partition"] for r in runs] == ["shop-b"]
    assert_every_offer_right(simulator, "shop-b", warehouse, before)
    assert offer_state(simulator, "shop-a", "shop-c") == untouched
    assert write_requests(simulator, "shop-b")
    assert {r.login for r in simulator.requests if r.path.startswith("/sale/")} == {"shop-b"}
    assert not unfinished(instance)

    # 5. Two runs of one account requested at once: the queue (one run per `dagster/partition`)
    # starts the second only after the first has finished.
    backfills = []
    for _ in range(2):
        launched = run_tool(
            "dagster",
            "job",
            "backfill",
            "-j",
            "account_sync",
            "--partitions",
            "shop-a",
            "-w",
            str(WORKSPACE),
            "--noprompt",
        )
        backfills.append(re.search(r"Launched backfill job `([^`]+)`", launched.stdout)[1])
    for backfill in backfills:
        wait_for(
            f"backfill {backfill}",
            runs_succeeded(instance, daemon, {"shop-a"}, **{"dagster/backfill": backfill}),
            RUN_BOUND,
            daemon,
        )
    from dagster import RunsFilter

    records = sorted(
        (r for b in backfills for r in instance.get_run_records(RunsFilter(tags={"dagster/backfill": b}))),
        key=lambda r: r.start_time,
    )
    assert len(records) == 2
    assert records[0].end_time <= records[1].start_time, "two runs of one account overlapped"


def two_live_accounts(settings, simulator, offers_a: int, offers_b: int) -> tuple[dict, Callable[[], bool]]:
    """shop-a and shop-b with L00… at 5 on Allegro and in the warehouse; returns the
    warehouse and a check that both accounts' offer maps are current."""
    from stock_pipeline.store.engine import engine_for
    from stock_pipeline.store.live_offers import LiveOffers

    register_account(settings, simulator, "shop-a")
    register_account(settings, simulator, "shop-b")
    seed(simulator, "shop-a", [(f"L{i:02d}", 5, "ACTIVE") for i in range(offers_a)])
    seed(simulator, "shop-b", [(f"L{i:02d}", 5, "ACTIVE") for i in range(offers_b)])
    warehouse = {f"L{i:02d}": 5 for i in range(max(offers_a, offers_b))}
    write_stock(settings.stock_database_url, list(warehouse.items()))
    live = LiveOffers(engine_for(settings.stock_pipeline_database_url))

    def maps_current() -> bool:
        states = live.states()
        return all(a in states and states[a].map_current for a in ("shop-a", "shop-b"))

    return warehouse, maps_current


def test_daemon_live_sync_builds_offer_maps_then_writes_a_warehouse_change_within_seconds(
    settings, simulator, live_daemon_home, live_daemon
):
    """Live sync with default settings as the daemon runs it: the live sensor's first tick
    takes each account's journal position and asks for a full sync, which builds the offer
    map; then a warehouse change reaches every offer of its SKU on Allegro, through one live
    run per account, writing nothing else; and a purchase is not raised back."""
    from dagster import DagsterInstance, RunsFilter

    warehouse, maps_current = two_live_accounts(settings, simulator, 30, 10)

    wait_for("the live sensor's full syncs building both offer maps", maps_current, FIRST_RUNS_BOUND, live_daemon)
    bought = next(o for o in simulator.offers("shop-a") if o["sku"] == "L20")
    simulator.purchase("shop-a", bought["id"], 2)  # 5 -> 3 on Allegro; the warehouse still says 5
    simulator.reset_requests()
    changed = time.monotonic()
    write_stock(settings.stock_database_url, list({**warehouse, "L03": 11}.items()))

    def written():
        return sorted(o["stock"] for a in ("shop-a", "shop-b") for o in simulator.offers(a) if o["sku"] == "L03")

    wait_for("L03 = 11 on both accounts", lambda: written() == [11, 11], RUN_BOUND, live_daemon)
    delay = time.monotonic() - changed
    time.sleep(8)  # another tick or two: the purchase's journal events are seen by now
    patched = {r.path.rsplit("/", 1)[-1] for r in write_requests(simulator) if r.method == "PATCH"}
    l03 = {o["id"] for a in ("shop-a", "shop-b") for o in simulator.offers(a) if o["sku"] == "L03"}
    assert patched == l03, "a live run wrote more than the changed SKU's offers"
    assert next(o for o in simulator.offers("shop-a") if o["id"] == bought["id"])["stock"] == 3  # the sale stands
    with DagsterInstance.get() as instance:
        live_runs = instance.get_run_records(RunsFilter(job_name="live_stock_sync"))
    assert {r.dagster_run.tags["dagster/partition"] for r in live_runs} == {"shop-a", "shop-b"}
    assert delay < RUN_BOUND


def test_daemon_restart_keeps_the_live_cursor_no_change_lost_none_applied_twice(
    settings, simulator, live_daemon_home, tmp_path
):
    """The daemon stops (a deploy, a crash between runs) and starts again: the live sensor
    resumes from its stored cursor. A change written before the stop is not written again;
    changes committed while it was down are written after the start; the offer maps are
    not rebuilt (no new full sync)."""
    from dagster import DagsterInstance, RunsFilter

    warehouse, maps_current = two_live_accounts(settings, simulator, 20, 20)

    def on_allegro(sku: str) -> list[int]:
        return sorted(o["stock"] for a in ("shop-a", "shop-b") for o in simulator.offers(a) if o["sku"] == sku)

    first = DagsterProcess([dagster_bin("dagster-daemon"), "run", "-w", str(WORKSPACE)], tmp_path / "daemon-1.log")
    try:
        wait_for("both offer maps built", maps_current, FIRST_RUNS_BOUND, first)
        simulator.reset_requests()
        warehouse["L03"] = 11
        write_stock(settings.stock_database_url, list(warehouse.items()))
        wait_for("L03 = 11 before the restart", lambda: on_allegro("L03") == [11, 11], RUN_BOUND, first)
        with DagsterInstance.get() as instance:
            wait_for("no run in flight", lambda: settled(instance), RUN_BOUND, first)
    finally:
        first.stop()

    # While the daemon is down the warehouse goes on changing.
    warehouse["L04"] = 12
    warehouse["L05"] = 13
    write_stock(settings.stock_database_url, list(warehouse.items()))

    second = DagsterProcess([dagster_bin("dagster-daemon"), "run", "-w", str(WORKSPACE)], tmp_path / "daemon-2.log")
    try:
        wait_for(
            "the changes made while the daemon was down",
            lambda: on_allegro("L04") == [12, 12] and on_allegro("L05") == [13, 13],
            RUN_BOUND + SENSOR_BOUND,
            second,
        )
        time.sleep(8)  # a few more ticks: anything written twice would be by now
        with DagsterInstance.get() as instance:
            full_syncs = instance.get_run_records(RunsFilter(job_name="account_sync"))
    finally:
        second.stop()

    patches = [r.path.rsplit("/", 1)[-1] for r in write_requests(simulator) if r.method == "PATCH"]
    offers_of = {
        sku: {o["id"] for a in ("shop-a", "shop-b") for o in simulator.offers(a) if o["sku"] == sku}
        for sku in ("L03", "L04", "L05")
    }
    assert sorted(patches) == sorted(offers_of["L03"] | offers_of["L04"] | offers_of["L05"]), (
        "each changed offer written exactly once, nothing else written"
    )
    assert len(full_syncs) == 2, "the restart rebuilt the offer maps"
