"""`stock-pipeline demo`: the whole chain on one machine with nothing set up.

Starts the Allegro simulator, fills an embedded (SQLite) warehouse, registers two
demo accounts through the real OAuth refresh exchange, runs a full sync of both
through Dagster, checks every offer against the warehouse and prints the summary.
Everything lives under ./.demo (DAGSTER_HOME keeps the runs for the UI). The demo's
settings are its own variables (written to .demo/env for the UI) and the defaults,
whatever the shell exports: it never reads nor changes the process environment.
"""

from __future__ import annotations

import random
import shlex
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from stock_pipeline.allegro.auth import AllegroAuth
from stock_pipeline.core.snapshot import MAX_QUANTITY
from stock_pipeline.observability import progress

DEMO_DIR = Path(".demo")
DEMO_ACCOUNTS = {"demo-shop-a": 2600, "demo-shop-b": 1300}
STOCK_VALUES = list(range(0, 25)) + [50, 100]
# The demo's tokens are the simulator's, so its key is public: base64 of b"demo-only-key-not-a-secret-00000".
# Tokens are never stored without a key (foundation/tokens.py), the demo included.
DEMO_TOKEN_ENCRYPTION_KEY = "ZGVtby1vbmx5LWtleS1ub3QtYS1zZWNyZXQtMDAwMDA="


def _seed_offers(rng: random.Random, count: int, prefix: str) -> list[dict]:
    """Offers as sellers have them: SKUs with several offers, offers without SKU, some ended."""
    offers = []
    for i in range(count):
        sku = f"{prefix}-{i % (count * 3 // 4):05d}" if rng.random() > 0.02 else None
        status = "ENDED" if rng.random() < 0.01 else "ACTIVE"
        offers.append({"sku": sku, "stock": rng.choice(STOCK_VALUES[1:]), "status": status})
    return offers


def _warehouse(rng: random.Random, offers: list[dict]) -> pd.DataFrame:
    current = {o["sku"]: o["stock"] for o in offers if o["sku"]}
    rows = []
    for sku, stock in current.items():
        roll = rng.random()
        if roll < 0.75:
            rows.append((sku, stock))  # unchanged: must cost no write
        elif roll < 0.97:
            rows.append((sku, rng.choice(STOCK_VALUES[1:])))
        elif roll < 0.99:
            rows.append((sku, 0))  # sold out: the offer ends
        # else: the SKU is not in the warehouse feed: its offers are left alone
    return pd.DataFrame(rows, columns=["sku", "stock"])


def _expected(offers_now: list[dict], stock: pd.DataFrame, before: dict[str, dict]) -> list[str]:
    """Offers that do not match what the sync should have produced."""
    warehouse = dict(zip(stock["sku"], stock["stock"]))
    wrong = []
    for offer in offers_now:
        was = before[offer["id"]]
        if not was["sku"] or was["sku"] not in warehouse or was["status"] != "ACTIVE":
            if offer["stock"] != was["stock"] or offer["status"] != was["status"]:
                wrong.append(offer["id"])  # should have been left alone
            continue
        target = min(int(warehouse[was["sku"]]), MAX_QUANTITY)
        if target == 0 and offer["status"] != "ENDED":
            wrong.append(offer["id"])
        elif target > 0 and offer["stock"] != target:
            wrong.append(offer["id"])
    return wrong


def ui_instructions(env_file: Path, simulator_url: str, keep_running: bool) -> list[str]:
    """How to open the demo's runs in the Dagster UI. The demo instance starts runs at once
    (no daemon needed), so runs launched there work while the simulator is up. The command
    runs in a subshell inside .demo: the exports stay out of the user's shell, and Dagster's
    CLI does not load a .env of the current directory (docker-compose's) over them."""
    workspace = Path("workspace.yaml")
    target = f"-w {shlex.quote(str(workspace.absolute()))}" if workspace.exists() else "-m stock_pipeline.definitions"
    binary = shlex.quote(str(Path(sys.executable).parent / "dagster-webserver"))
    webserver = f"  (cd {shlex.quote(str(env_file.parent))} && . ./{env_file.name} && exec {binary} {target})"
    if keep_running:
        return [
            f"The Allegro simulator keeps running at {simulator_url}; Ctrl-C here stops it.",
            "In another terminal, start the Dagster UI on the demo's runs:",
            webserver,
            "  then open http://127.0.0.1:3000: Assets → stock_updates → Partitions shows the runs;",
            "  Jobs → account_sync → Materialize all… → Custom → an account → Launch 1 run syncs it again.",
        ]
    return [
        "See the runs, the asset graph and the metadata in the Dagster UI:",
        webserver,
        "  then open http://127.0.0.1:3000 (Assets → stock_updates → Partitions).",
        "The Allegro simulator has stopped, so a run launched from the UI now would fail. To launch runs",
        "from the UI too, run the demo with the simulator kept up, and start the UI as it says meanwhile:",
        f"  {shlex.quote(str(Path(sys.executable).parent / 'stock-pipeline'))} demo --keep-running",
    ]


def run_demo(keep_running: bool = False) -> int:
    from stock_pipeline.cli.sync_report import ProgressPrinter, print_summary
    from stock_pipeline.cli.sync_runner import EMBEDDED_INSTANCE_CONFIG
    from stock_pipeline.simulator import AllegroSimulator

    base = DEMO_DIR.absolute()
    for stale in ("pipeline.db", "stock.db"):
        (base / stale).unlink(missing_ok=True)
    shutil.rmtree(base / "dagster_home" / "storage" / "frames", ignore_errors=True)
    (base / "dagster_home").mkdir(parents=True, exist_ok=True)
    shutil.copy(EMBEDDED_INSTANCE_CONFIG, base / "dagster_home" / "dagster.yaml")

    simulator = AllegroSimulator(command_task_delay=0.2).start()
    env = {
        "ALLEGRO_API_URL": simulator.api_url,
        "ALLEGRO_AUTH_URL": simulator.auth_url,
        "ALLEGRO_CLIENT_ID": "demo-client",
        "ALLEGRO_CLIENT_SECRET": "demo-secret",
        "STOCK_DATABASE_URL": f"sqlite:///{base / 'stock.db'}",
        "STOCK_PIPELINE_DATABASE_URL": f"sqlite:///{base / 'pipeline.db'}",
        "DAGSTER_HOME": str(base / "dagster_home"),
        "ALLEGRO_SYNC_RETRY_DELAY": "1",
        "ALLEGRO_SYNC_POLL_FIRST_AFTER": "0.3",
        "TOKEN_ENCRYPTION_KEY": DEMO_TOKEN_ENCRYPTION_KEY,
    }

    from stock_pipeline.cli.sync_runner import sync_accounts
    from stock_pipeline.foundation.logs import redact_settings
    from stock_pipeline.foundation.settings import load_settings
    from stock_pipeline.store.accounts import AccountStore
    from stock_pipeline.store.engine import engine_for

    settings = load_settings(env)  # no REDIS_URL: the demo uses the in-process limiter
    redact_settings(settings)
    rng = random.Random(2026)
    warehouse_frames, before = [], {}
    store = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())
    auth = AllegroAuth(settings.allegro_auth_url, settings.allegro_client_id, settings.allegro_client_secret)
    print(f"Allegro simulator at {simulator.api_url}", flush=True)
    for index, (account, count) in enumerate(DEMO_ACCOUNTS.items()):
        refresh_token = simulator.add_seller(account)
        offers = _seed_offers(rng, count, prefix=f"SKU{index}")
        simulator.add_offers(account, offers)
        before.update({o["id"]: o for o in simulator.offers(account)})
        warehouse_frames.append(_warehouse(rng, offers))
        store.save_tokens(account, auth.refresh(refresh_token))  # the same exchange as `accounts add --refresh-token`
        print(f"registered {account}: {count} offers", flush=True)
    warehouse = pd.concat(warehouse_frames, ignore_index=True)
    warehouse.to_sql("products", sa.create_engine(settings.stock_database_url), index=False, if_exists="replace")
    print(f"warehouse: {len(warehouse)} SKUs in {settings.stock_database_url}", flush=True)

    printer = ProgressPrinter()
    progress.add_listener(printer)
    started = time.monotonic()
    try:
        summaries = sync_accounts(settings, list(DEMO_ACCOUNTS))
    finally:
        progress.remove_listener(printer)
    print()
    print_summary(summaries)
    wrong = [o for account in DEMO_ACCOUNTS for o in _expected(simulator.offers(account), warehouse, before)]
    print(f"\nsynced in {time.monotonic() - started:.1f} s; offers not matching the warehouse afterwards: {len(wrong)}")

    env_file = base / "env"
    # REDIS_URL is unset as in this process: the demo uses the in-process limiter.
    env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()) + "unset REDIS_URL\n")
    ok = all(s.success for s in summaries) and not wrong
    print()
    print("\n".join(ui_instructions(env_file, simulator.api_url, keep_running)), flush=True)
    if keep_running:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    simulator.stop()
    return 0 if ok else 1
