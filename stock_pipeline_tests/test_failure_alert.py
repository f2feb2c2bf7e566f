"""A failed account run reaches Telegram through the run-failure sensor."""

from __future__ import annotations

from dagster import DagsterInstance

from stock_pipeline.cli.sync_runner import sync_accounts
from stock_pipeline.definitions import build_definitions
from stock_pipeline.notify.telegram import TELEGRAM_LIMIT, failure_message
from stock_pipeline_tests.helpers import register_account, send_failure_alert, write_stock


def test_failed_run_sends_one_escaped_telegram_message(settings, simulator, telegram, pipeline_env):
    register_account(settings, simulator, "shop-a")
    simulator.add_offers("shop-a", [{"sku": "A", "stock": 1}])
    write_stock(settings.stock_database_url, [("A", 2)])
    simulator.revoke_tokens("shop-a")
    simulator.expire_access_tokens("shop-a")
    instance = DagsterInstance.get()
    defs = build_definitions(settings)

    [summary] = sync_accounts(settings, ["shop-a"], instance=instance, defs=defs)
    assert not summary.success and "re-authorisation" in summary.error

    run = instance.get_run_by_id(summary.run_id)
    send_failure_alert(defs, instance, run)

    assert len(telegram.messages) == 1
    message = telegram.messages[0]
    assert str(message["chat_id"]) == "-100200300" and message["parse_mode"] == "HTML"
    assert "<b>Account:</b> shop-a" in message["text"]
    assert "stock-pipeline accounts add" in message["text"]
    assert f"http://dagster.example:3000/runs/{run.run_id}" in message["text"]
    assert "test-bot-token" not in message["text"]


def test_message_stays_under_telegram_limit_and_counts_the_rest():
    offers = [{"offer_id": str(i), "sku": f"<S{i}>", "before": 1, "after": 2, "error": "x" * 50} for i in range(500)]
    text = failure_message(account="a", run_id="r", job="account_sync", error="boom", offers=offers)
    assert len(text) <= TELEGRAM_LIMIT
    assert "&lt;S0&gt;" in text and "more" in text


def test_telegram_429_retry_after_is_honoured(telegram):
    from stock_pipeline.notify.telegram import TelegramNotifier

    slept = []
    telegram.fail_next(1, retry_after=3)
    TelegramNotifier(telegram.api_url, "1:tok", "42", sleep=slept.append).send("<b>hi</b>")
    assert slept == [3.0] and [m["text"] for m in telegram.messages] == ["<b>hi</b>"]


def test_bad_rows_warning_lists_the_first_rows_within_the_limit():
    from stock_pipeline.notify.telegram import bad_rows_message

    rows = [{"sku": f"<S{i}>", "stock": "-1", "problem": "stock is negative"} for i in range(2000)]
    text = bad_rows_message(bad_rows=rows, problems={"stock is negative": 2000})
    assert len(text) <= TELEGRAM_LIMIT and "&lt;S0&gt;" in text and "more" in text
