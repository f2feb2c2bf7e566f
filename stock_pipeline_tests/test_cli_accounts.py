"""`stock-pipeline accounts …` as a seller runs it, against the simulator's OAuth."""

from __future__ import annotations

from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.engine import engine_for
from stock_pipeline_tests.helpers import run_cli


def test_add_with_refresh_token_exchanges_it_and_stores_the_new_pair(settings, simulator):
    refresh = simulator.add_seller("shop-a")
    result = run_cli("accounts", "add", "shop-a", "--refresh-token", refresh)
    assert result.returncode == 0, result.stderr
    account = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).get("shop-a")
    assert account.status == "active" and account.access_expires_at is not None
    assert refresh not in result.stdout + result.stderr  # never echo a token


def test_add_without_token_runs_the_device_flow(settings, simulator):
    simulator.add_seller("shop-b")
    simulator.auto_approve_device = "shop-b"
    result = run_cli("accounts", "add", "shop-b")
    assert result.returncode == 0, result.stderr
    assert "Open http" in result.stdout and "confirm the code" in result.stdout
    listed = run_cli("accounts", "list")
    assert "shop-b" in listed.stdout and "active" in listed.stdout


def test_a_used_refresh_token_is_a_clear_error(settings, simulator):
    refresh = simulator.add_seller("shop-a")
    assert run_cli("accounts", "add", "shop-a", "--refresh-token", refresh).returncode == 0
    result = run_cli("accounts", "add", "shop-c", "--refresh-token", refresh)
    assert result.returncode == 1
    assert "refresh token rejected" in result.stderr


def test_bad_account_name_is_refused_with_the_rule(settings, simulator):
    result = run_cli("accounts", "add", "bad name!", "--refresh-token", "x")
    assert result.returncode == 2 and "account name 'bad name!' is not valid" in result.stderr


def test_bad_setting_names_the_variable(settings, monkeypatch):
    monkeypatch.setenv("ALLEGRO_SYNC_RATE_LIMIT", "fast")
    result = run_cli("accounts", "list")
    assert result.returncode == 2 and "ALLEGRO_SYNC_RATE_LIMIT" in result.stderr


def test_refresh_token_can_come_from_stdin_so_it_stays_out_of_ps(settings, simulator):
    import os
    import subprocess
    import sys

    refresh = simulator.add_seller("shop-a")
    result = subprocess.run(
        [sys.executable, "-m", "stock_pipeline.cli", "accounts", "add", "shop-a", "--refresh-token", "-"],
        input=refresh + "\n",
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (
        AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).get("shop-a").status
        == "active"
    )


def test_a_refresh_token_starting_with_a_dash_is_taken_as_the_value():
    from stock_pipeline.cli.main import _glue_option_values

    assert _glue_option_values(["accounts", "add", "a", "--refresh-token", "-x9"]) == [
        "accounts",
        "add",
        "a",
        "--refresh-token=-x9",
    ]
    assert _glue_option_values(["accounts", "add", "a", "--refresh-token", "-"]) == [
        "accounts",
        "add",
        "a",
        "--refresh-token",
        "-",
    ]
