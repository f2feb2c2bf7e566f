import ast
import os
from pathlib import Path

import pytest

import stock_pipeline
from stock_pipeline.definitions import build_definitions
from stock_pipeline.foundation.errors import SettingsError
from stock_pipeline.foundation.settings import load_settings


def test_defaults_make_the_demo_work_with_nothing_set():
    s = load_settings({})
    assert s.allegro_sync_rate_limit == 9000 and s.allegro_sync_retry_count == 3
    assert s.allegro_sync_retry_delay == 30.0 and s.allegro_sync_schedule == "*/30 * * * *"
    assert s.redis_url is None and s.telegram_bot_token is None
    assert s.stock_max_plausible_stock == 1_000_000
    assert s.stock_sale_hold_seconds == 3600  # an hour: core/sale_holds.py says why
    assert load_settings({"STOCK_SALE_HOLD_SECONDS": "5400"}).stock_sale_hold_seconds == 5400


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("ALLEGRO_SYNC_RATE_LIMIT", "lots", "ALLEGRO_SYNC_RATE_LIMIT must be a whole number"),
        ("ALLEGRO_SYNC_BATCH_SIZE", "5000", "ALLEGRO_SYNC_BATCH_SIZE must be between 1 and 1000"),
        ("ALLEGRO_API_URL", "api.allegro.pl", "ALLEGRO_API_URL must be a URL"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL must be a URL"),
        ("ALLEGRO_SYNC_SCHEDULE", "every hour", "ALLEGRO_SYNC_SCHEDULE must be a cron expression"),
        ("STOCK_QUERY", "DELETE FROM products", "STOCK_QUERY must be a SELECT"),
        ("STOCK_DATABASE_URL", "not a url", "STOCK_DATABASE_URL must be an SQLAlchemy database URL"),
        ("STOCK_SALE_HOLD_SECONDS", "30", "STOCK_SALE_HOLD_SECONDS must be between 60 and 604800, got 30"),
        ("STOCK_SALE_HOLD_SECONDS", "1h", "STOCK_SALE_HOLD_SECONDS must be a whole number, got '1h'"),
        ("STOCK_MAX_PLAUSIBLE_STOCK", "1e6", "STOCK_MAX_PLAUSIBLE_STOCK must be a whole number, got '1e6'"),
        ("STOCK_MAX_PLAUSIBLE_STOCK", "99998", "STOCK_MAX_PLAUSIBLE_STOCK must be between 99999 and 9007199254740992"),
        (
            "STOCK_MAX_PLAUSIBLE_STOCK",
            str(2**53 + 1),
            "STOCK_MAX_PLAUSIBLE_STOCK must be between 99999 and 9007199254740992",
        ),
    ],
)
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


def test_directories_are_absolute_and_the_frames_live_beside_the_instance(tmp_path):
    home = load_settings({"DAGSTER_HOME": str(tmp_path / "home")})
    assert home.dagster_home == str(tmp_path / "home")
    assert home.frames_dir == str(tmp_path / "home" / "storage" / "frames")
    explicit = load_settings({"DAGSTER_HOME": str(tmp_path / "home"), "STOCK_PIPELINE_STORAGE_DIR": "~/frames"})
    assert explicit.frames_dir == str(Path.home() / "frames")
    assert load_settings({}).frames_dir == str(Path.home() / ".stock_pipeline" / "dagster_home" / "storage" / "frames")
    for name in ("DAGSTER_HOME", "STOCK_PIPELINE_STORAGE_DIR"):
        with pytest.raises(SettingsError, match=f"{name} must be an absolute path"):
            load_settings({name: "relative/dir"})


def test_the_repr_shows_no_secret_and_no_password():
    settings = load_settings(
        {
            "ALLEGRO_CLIENT_SECRET": "client-s3cret-value",
            "TELEGRAM_BOT_TOKEN": "1:bot-t0ken-value",
            "ALLEGRO_ERROR_NOTIFICATION_CHAT_ID": "-1",
            "STOCK_DATABASE_URL": "postgresql+psycopg://shop:wareh0use-pw@db/shop",
            "STOCK_PIPELINE_DATABASE_URL": "postgresql+psycopg://sp:pipel1ne-pw@db/sp",
            "REDIS_URL": "redis://:red1s-pw@cache:6379/0",
        }
    )
    shown = repr(settings)
    assert not any(s in shown for s in ("s3cret", "t0ken", "wareh0use", "pipel1ne", "red1s")), shown
    assert "redis://:***@cache:6379/0" in shown and "postgresql+psycopg://sp:***@db/sp" in shown
    assert set(settings.secret_values()) == {
        "client-s3cret-value",
        "1:bot-t0ken-value",
        "wareh0use-pw",
        "pipel1ne-pw",
        "red1s-pw",
    }


def test_the_resources_use_the_validated_redis_url_not_the_raw_variable(monkeypatch, tmp_path, client_id, redis_url):
    """REDIS_URL with a trailing slash and space: Settings trims it, and the resources (their
    limiter and metrics included) get exactly that value, never the raw environment string."""
    from dagster import build_resources as initialise

    from stock_pipeline.defs import resources

    monkeypatch.setenv("REDIS_URL", redis_url + "/ ")
    monkeypatch.setenv("ALLEGRO_CLIENT_ID", client_id)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    validated = load_settings().redis_url
    assert validated == redis_url != os.environ["REDIS_URL"]
    connected: list[tuple[str, str | None]] = []
    for name in ("build_limiter", "build_metrics"):
        original = getattr(resources, name)
        monkeypatch.setattr(
            resources,
            name,
            lambda url, *rest, _name=name, _original=original: connected.append((_name, url)) or _original(url, *rest),
        )
    monkeypatch.setattr(resources, "_metrics", {})  # built afresh, through the recording above

    defs = build_definitions(load_settings())
    assert defs.resources["allegro"].redis_url == validated
    with initialise({"allegro": defs.resources["allegro"]}) as initialised:  # as a run initialises it
        allegro = initialised.allegro
        assert allegro.redis_url == validated
        limiter = allegro.request_limiter()
        allegro.metrics()
        assert connected == [("build_limiter", validated), ("build_metrics", validated)]
        assert limiter.acquire(1) == 0.0  # the bucket answers on that Redis


# Modules allowed to read the environment, and why. Nothing else under stock_pipeline/ may
# touch os.environ / os.getenv or build a dagster.EnvVar: every value comes from Settings.
ENVIRONMENT_READERS = {
    "foundation/settings.py": "load_settings() is the one documented read of os.environ",
}
_ENV_ATTRIBUTES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _environment_uses(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _ENV_ATTRIBUTES | {"EnvVar"}:
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Name) and node.id == "EnvVar":
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.ImportFrom) and any(a.name in _ENV_ATTRIBUTES | {"EnvVar"} for a in node.names):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_only_settings_reads_the_environment():
    package = Path(stock_pipeline.__file__).parent
    offenders = [
        f"{path.relative_to(package)}:{line}: {code}"
        for path in sorted(package.rglob("*.py"))
        if str(path.relative_to(package)) not in ENVIRONMENT_READERS
        for line, code in _environment_uses(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == [], "read the value from Settings (stock_pipeline/foundation/settings.py) instead"
    # The check itself sees each form it forbids.
    forms = "os.environ.get('X')\nos.getenv('X')\nfrom os import environ\nfrom dagster import EnvVar\nEnvVar('X')"
    assert len(_environment_uses(ast.parse(forms))) == 5
