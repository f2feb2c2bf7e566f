"""Trust: a dry run changes nothing anywhere, the numbers shown are the numbers that
happened, and failures read as sentences. Real CLI, Postgres, Redis and the simulator."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest
import redis as redis_lib
import sqlalchemy as sa
from dagster import AssetKey, DagsterEventType, DagsterInstance, SkipReason

from stock_pipeline.definitions import build_definitions
from stock_pipeline.foundation.settings import load_settings
from stock_pipeline.observability.metrics import DEFAULT_PREFIX
from stock_pipeline.store.ended_offers import EndedOffers
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.guard_state import BAD_ROWS_FINGERPRINT, LAST_GOOD_SNAPSHOT_SKUS, read_value
from stock_pipeline.store.sync_status import SyncStatusStore
from stock_pipeline.store.writes_log import WritesLog
from stock_pipeline_tests.helpers import register_account, run_cli, send_failure_alert, write_requests, write_stock

SKUS = [f"S{i:02d}" for i in range(40)]


@pytest.fixture
def account(settings, simulator):
    """An account of its own (metrics in Redis are kept per account name), with 40 offers,
    one per SKU, stock 5; one sync so the guards have their baseline."""
    name = f"shop-{uuid.uuid4().hex[:8]}"
    register_account(settings, simulator, name)
    simulator.add_offers(name, [{"sku": sku, "stock": 5} for sku in SKUS])
    write_stock(settings.stock_database_url, [(sku, 5) for sku in SKUS])
    assert run_cli("sync").returncode == 0
    return name


@pytest.fixture
def shop(simulator, account):
    return {o["sku"]: o["id"] for o in simulator.offers(account)}


def _field(*labels: str) -> str:
    return json.dumps(list(labels), separators=(",", ":"))


def _metrics(redis_url: str, account: str) -> dict:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    field = _field(account)
    values = {}
    for key in client.scan_iter(f"{DEFAULT_PREFIX}:*"):
        if client.type(key) == "hash":
            values[key] = {f: v for f, v in client.hgetall(key).items() if account in f}
    client.close()
    values["_field"] = field
    return values


def _materialisations(instance: DagsterInstance) -> int:
    return sum(
        len(instance.fetch_materializations(AssetKey(name), limit=1000).records)
        for name in ("stock_snapshot", "allegro_offers", "stock_diff", "stock_updates")
    )


def _remembered(settings, redis_url: str, account: str) -> dict:
    engine = engine_for(settings.stock_pipeline_database_url)
    instance = DagsterInstance.get()
    with engine.connect() as conn:
        audit = conn.execute(sa.text("SELECT count(*) FROM writes")).scalar()
    return {
        "snapshot baseline": read_value(engine, LAST_GOOD_SNAPSHOT_SKUS),
        "bad-rows fingerprint": read_value(engine, BAD_ROWS_FINGERPRINT),
        "ended offers": EndedOffers(engine).ours(account),
        "audit rows": audit,
        "sync status": SyncStatusStore(engine).get(account),
        "materialisations": _materialisations(instance),
        "metrics": _metrics(redis_url, account),
    }


@pytest.mark.parametrize("override", [False, True], ids=["plain", "override-guards"])
def test_a_dry_run_changes_nothing_anywhere(
    settings, simulator, telegram, redis_url, account, shop, override, tmp_path
):
    # A feed that shrank to 12 SKUs (a guard would hold it), with bad rows and one SKU to 0.
    rows = [(sku, 0 if sku == "S00" else 9) for sku in SKUS[:12]] + [("S20", -4), ("S21", None)]
    write_stock(settings.stock_database_url, rows)
    before = _remembered(settings, redis_url, account)
    simulator.reset_requests()
    plan_file = tmp_path / "plan.csv"

    result = run_cli("sync", "--dry-run", "--output", str(plan_file), *(["--override-guards"] if override else []))

    assert result.returncode == 0, result.stdout + result.stderr
    assert write_requests(simulator) == []
    assert _remembered(settings, redis_url, account) == before
    assert telegram.messages == []  # the bad-rows warning is kept for the real run
    assert "would be held" in result.stdout and "shrank from 40 to 12 SKUs" in result.stdout
    plan = pd.read_csv(plan_file, dtype={"offer_id": str})
    assert len(plan) == 12 and set(plan["account"]) == {account}
    assert plan.loc[plan["sku"] == "S00", "action"].tolist() == ["end"]
    assert plan["would_be_held"].all()
    run = DagsterInstance.get().get_runs(limit=1)[0]
    assert run.job_name == "account_rehearsal" and run.tags["stock_pipeline/dry_run"] == "true"

    # The rehearsal moved no baseline: the real run is still held without an override.
    held = run_cli("sync")
    assert held.returncode == 1 and "shrank from 40 to 12 SKUs" in held.stdout
    assert write_requests(simulator) == []


def test_the_full_plan_exports_as_json(settings, simulator, account, shop, tmp_path):
    write_stock(settings.stock_database_url, [(sku, 6 + i % 30) for i, sku in enumerate(SKUS)])
    out = tmp_path / "plan.json"
    result = run_cli("sync", "--dry-run", "--output", str(out))
    assert result.returncode == 0, result.stderr
    plan = json.loads(out.read_text())
    assert len(plan) == 40 and {p["offer_id"] for p in plan} == set(shop.values())
    assert f"written to {out}" in result.stdout  # the terminal shows 20 and says where the rest are
    bad = run_cli("sync", "--output", str(out))
    assert bad.returncode == 2 and "--dry-run" in bad.stderr


def test_a_partly_failed_run_shows_the_audits_numbers_everywhere(settings, simulator, redis_url, account, shop):
    # 17 offers to 9 (one command), 3 to their own values (PATCH); Allegro refuses 3 offers.
    changed = {sku: 9 for sku in SKUS[:17]} | {"S17": 1, "S18": 2, "S19": 3}
    write_stock(settings.stock_database_url, [(sku, changed.get(sku, 5)) for sku in SKUS])
    simulator.lock_offers([shop["S00"], shop["S01"], shop["S17"]])
    calls_before = _metrics(redis_url, account)

    result = run_cli("sync")

    assert result.returncode == 1
    engine = engine_for(settings.stock_pipeline_database_url)
    run_id = DagsterInstance.get().get_runs(limit=1)[0].run_id
    audit = WritesLog(engine).status_counts(run_id)
    assert audit == {"success": 17, "failed": 3}
    line = next(li for li in result.stdout.splitlines() if li.startswith(account))
    assert line.split()[1:7] == ["failed", "40", "20", "17", "3", "0"], line
    assert "3 of 20 writes failed" in result.stdout and "locked" in result.stdout

    # The UI: the account's stock_updates materialised with what was written and what failed.
    instance = DagsterInstance.get()
    [record] = instance.fetch_materializations(AssetKey("stock_updates"), limit=1).records
    materialization = record.event_log_entry.asset_materialization
    assert record.run_id == run_id and materialization.partition == account
    assert materialization.metadata["written"].value == 17 and materialization.metadata["failed"].value == 3
    checks = [
        r.dagster_event.event_specific_data
        for r in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    ]
    confirmed = next(c for c in checks if c.check_name == "writes_confirmed")
    assert not confirmed.passed and confirmed.partition == account

    # Metrics and the account's status: the run counted once, as a failure, with the audit's numbers.
    status = SyncStatusStore(engine).get(account)
    assert (status.last_result, status.written, status.failed, status.last_run_id) == ("failed", 17, 3, run_id)
    after = _metrics(redis_url, account)
    field = after["_field"]

    def grew(metric: str, key_field: str = field) -> int:
        key = f"{DEFAULT_PREFIX}:{metric}"
        return int(float(after[key].get(key_field, 0))) - int(float(calls_before.get(key, {}).get(key_field, 0)))

    assert grew("updated_offers_total") == 17
    assert grew("errors_total") == 3 + 1
    assert grew("runs_total", _field(account, "failure")) == 1
    send_failure_alert(build_definitions(settings), instance, instance.get_run_by_id(run_id))
    assert grew("runs_total", _field(account, "failure")) == 1  # not counted again


def test_a_held_run_is_one_sentence_counted_once_and_freshness_tracks_success(
    settings, simulator, redis_url, account, shop
):
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    field = _field(account)
    last_success = client.hget(f"{DEFAULT_PREFIX}:last_success_timestamp_seconds", field)
    assert last_success is not None  # the fixture's good sync
    failures_before = int(client.hget(f"{DEFAULT_PREFIX}:runs_total", _field(account, "failure")) or 0)
    write_stock(settings.stock_database_url, [(sku, 0 if i % 2 else 5) for i, sku in enumerate(SKUS)])

    result = run_cli("sync")

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert f"diff_guard held the writes for account {account}: this run would end 20" in output
    assert "--override-guards" in output
    assert "Traceback" not in output and "DagsterAssetCheckFailedError" not in output
    assert "No dagster instance configuration file" not in output
    assert len(output.strip().splitlines()) <= 12, output
    # On the run page: the step failure is the guard's sentence, not a check-failed stack trace.
    instance = DagsterInstance.get()
    run = instance.get_runs(limit=1)[0]
    [failure] = [
        r.dagster_event.step_failure_data for r in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
    ]
    assert failure.user_failure_data.description.startswith(f"diff_guard held the writes for account {account}")
    evaluation = next(
        r.dagster_event.event_specific_data
        for r in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        if r.dagster_event.event_specific_data.check_name == "diff_guard"
    )
    assert evaluation.partition == account  # each evaluation belongs to its account

    assert client.hget(f"{DEFAULT_PREFIX}:last_success_timestamp_seconds", field) == last_success
    assert int(client.hget(f"{DEFAULT_PREFIX}:runs_total", _field(account, "failure"))) == failures_before + 1
    status = SyncStatusStore(engine_for(settings.stock_pipeline_database_url)).get(account)
    assert status.last_result == "held" and status.last_success_run_id != run.run_id
    client.close()


def test_a_bad_query_is_a_configuration_error_read_before_any_allegro_call(
    settings, simulator, account, shop, monkeypatch
):
    monkeypatch.setenv("STOCK_QUERY", "SELECT sku, stock FROM no_such_table")
    simulator.reset_requests()
    result = run_cli("sync")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "STOCK_QUERY failed" in result.stdout and "no_such_table" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert [r for r in simulator.requests if r.path.startswith("/sale/")] == []  # the warehouse is read first


def test_needs_reauthorisation_reads_as_a_sentence(settings, simulator, account, shop):
    simulator.revoke_tokens(account)
    simulator.expire_access_tokens(account)
    result = run_cli("sync", "--account", account)
    assert result.returncode == 1
    assert "needs re-authorisation" in result.stdout and f"stock-pipeline accounts add {account}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    instance = DagsterInstance.get()
    run = instance.get_runs(limit=1)[0]
    [failure] = [
        r.dagster_event.step_failure_data for r in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
    ]
    assert "needs re-authorisation" in failure.user_failure_data.description


def test_a_clean_run_says_no_failed_writes(settings, simulator, account, shop):
    write_stock(settings.stock_database_url, [(sku, 7) for sku in SKUS])
    assert run_cli("sync", "--override-guards").returncode == 0
    [record] = DagsterInstance.get().fetch_materializations(AssetKey("stock_updates"), limit=1).records
    metadata = record.event_log_entry.asset_materialization.metadata
    assert "no failed writes" in metadata["failures"].value and "nothing to change" not in metadata["failures"].value


def test_the_failure_sensor_says_when_telegram_is_not_configured(settings, simulator, account, shop, monkeypatch):
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN")
    monkeypatch.delenv("ALLEGRO_ERROR_NOTIFICATION_CHAT_ID")
    unconfigured = load_settings()
    defs = build_definitions(unconfigured)
    sensor = defs.resolve_sensor_def("telegram_on_run_failure")
    assert sensor.description.startswith("NOT CONFIGURED")
    write_stock(settings.stock_database_url, [])
    assert run_cli("sync").returncode == 1
    instance = DagsterInstance.get()
    run = instance.get_runs(limit=1)[0]
    skipped = send_failure_alert(defs, instance, run)
    assert isinstance(skipped, SkipReason) and "nobody was alerted" in skipped.skip_message
    warnings = [r.user_message for r in instance.all_logs(run.run_id) if r.level >= 30]
    assert any("Telegram alerts are not configured" in w for w in warnings)
    assert build_definitions(settings).resolve_sensor_def("telegram_on_run_failure").description.startswith("Sends")
