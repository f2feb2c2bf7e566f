import pytest

from stock_pipeline.errors import SettingsError
from stock_pipeline.settings import load_settings


def test_defaults_make_the_demo_work_with_nothing_set():
    s = load_settings({})
    assert s.allegro_sync_rate_limit == 9000 and s.allegro_sync_retry_count == 3
    assert s.allegro_sync_retry_delay == 30.0 and s.allegro_sync_schedule == "*/30 * * * *"
    assert s.redis_url is None and s.telegram_bot_token is None
    assert s.stock_max_plausible_stock == 1_000_000


@pytest.mark.parametrize("name,value,message", [
    ("ALLEGRO_SYNC_RATE_LIMIT", "lots", "ALLEGRO_SYNC_RATE_LIMIT must be a whole number"),
    ("ALLEGRO_SYNC_BATCH_SIZE", "5000", "ALLEGRO_SYNC_BATCH_SIZE must be between 1 and 1000"),
    ("ALLEGRO_API_URL", "api.allegro.pl", "ALLEGRO_API_URL must be a URL"),
    ("REDIS_URL", "localhost:6379", "REDIS_URL must be a URL"),
    ("ALLEGRO_SYNC_SCHEDULE", "every hour", "ALLEGRO_SYNC_SCHEDULE must be a cron expression"),
    ("STOCK_QUERY", "DELETE FROM products", "STOCK_QUERY must be a SELECT"),
    ("STOCK_DATABASE_URL", "not a url", "STOCK_DATABASE_URL must be an SQLAlchemy database URL"),
    ("STOCK_MAX_PLAUSIBLE_STOCK", "1e6", "STOCK_MAX_PLAUSIBLE_STOCK must be a whole number, got '1e6'"),
    ("STOCK_MAX_PLAUSIBLE_STOCK", "99998", "STOCK_MAX_PLAUSIBLE_STOCK must be between 99999 and 9007199254740992"),
    ("STOCK_MAX_PLAUSIBLE_STOCK", str(2**53 + 1), "STOCK_MAX_PLAUSIBLE_STOCK must be between 99999 and 9007199254740992"),
])
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(SettingsError, match=message):
        load_settings({name: value})


def test_schedule_in_seconds_as_in_the_original_design():
    assert load_settings({"ALLEGRO_SYNC_SCHEDULE": "1800"}).allegro_sync_schedule == "*/30 * * * *"
    assert load_settings({"ALLEGRO_SYNC_SCHEDULE": "7200"}).allegro_sync_schedule == "0 */2 * * *"


def test_telegram_needs_both_token_and_chat():
    with pytest.raises(SettingsError, match="ALLEGRO_ERROR_NOTIFICATION_CHAT_ID is not set"):
        load_settings({"TELEGRAM_BOT_TOKEN": "1:abc"})


def test_secret_values_are_not_echoed():
    with pytest.raises(SettingsError, match="STOCK_DATABASE_URL") as info:
        load_settings({"STOCK_DATABASE_URL": "postgresql://user:hunter2@db:notaport/x"})
    assert "hunter2" not in str(info.value)


def test_the_plausible_maximum_reaches_the_snapshot_resource():
    from stock_pipeline.defs.resources import build_resources

    settings = load_settings({"STOCK_MAX_PLAUSIBLE_STOCK": "5000000"})
    assert settings.stock_max_plausible_stock == 5_000_000
    assert build_resources(settings)["stock_db"].max_plausible_stock == 5_000_000
