"""Schema migrations of the pipeline database, for real: the migrated schema equals the
code's `metadata` (the guard of every future schema change), a database made and filled
by the previous release's own code (commit 73ea1ae, run from a checkout of it) is
upgraded keeping every row and then syncs with the tokens it stored, and the start-up
rule holds (idempotent, refuses a newer database, processes starting together migrate
once). On Postgres and on SQLite."""

from __future__ import annotations

import fnmatch
import json
import multiprocessing
import os
import subprocess
import sys
import tomllib
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from stock_pipeline.cli.doctor import check_pipeline_database
from stock_pipeline.foundation.errors import PipelineDatabaseSchemaError
from stock_pipeline.store import migrate
from stock_pipeline.store.engine import dispose_engines, engine_for, new_engine
from stock_pipeline.store.migrate import VERSION_TABLE
from stock_pipeline_tests.helpers import run_cli, write_stock

REPO = Path(__file__).resolve().parents[1]
PREVIOUS_RELEASE = "73ea1ae"
HEAD = migrate.head_revision()
TOKEN_REQUEST = "/auth/oauth/token"


@pytest.fixture
def new_database(tmp_path):
    """Makes new, empty databases: new_database("postgres" | "sqlite", name) -> URL."""
    from stock_pipeline_tests.helpers import scratch_database

    with ExitStack() as stack:
        stack.callback(dispose_engines)

        def make(kind: str, name: str = "pipeline") -> str:
            if kind == "sqlite":
                return f"sqlite:///{tmp_path / (name + '.db')}"
            return stack.enter_context(scratch_database())

        yield make


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request, new_database):
    """A new, empty pipeline database of either kind."""
    return new_database(request.param)


def _plain_engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


def _version_rows(url: str) -> list[str]:
    engine = _plain_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(VERSION_TABLE):
                return []
            return list(conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    finally:
        engine.dispose()


def _differences(url: str, metadata: sa.MetaData, tables=None) -> list[str]:
    engine = _plain_engine(url)
    try:
        with engine.connect() as conn:
            return migrate.schema_differences(conn, metadata, tables)
    finally:
        engine.dispose()


def _migrate_to(url: str, revision: str) -> None:
    engine = new_engine(url)
    try:
        with migrate.migration_lock(engine) as conn:
            migrate.run_alembic(conn, "upgrade", revision)
    finally:
        engine.dispose()


def _recording_upgrades(monkeypatch) -> list:
    """Every UpgradeResult engine_for produces from now on."""
    results = []
    real = migrate.upgrade_to_head

    def recording(engine):
        results.append(real(engine))
        return results[-1]

    monkeypatch.setattr(migrate, "upgrade_to_head", recording)
    return results


# --- the previous release's own code ------------------------------------------------


@pytest.fixture(scope="session")
def previous_release(tmp_path_factory) -> Path:
    """The package as released at 73ea1ae, extracted from this repository's history."""
    if (
        subprocess.run(
            ["git", "-C", str(REPO), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip(f"needs the git history with commit {PREVIOUS_RELEASE} (the previous release)")
    target = tmp_path_factory.mktemp(f"release_{PREVIOUS_RELEASE}")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE, "stock_pipeline"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def run_previous_release(checkout: Path, script: str, args: dict) -> dict:
    """Runs `script` with the previous release's package (PYTHONPATH) in this venv."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(dict(args, checkout=str(checkout))),
        capture_output=True,
        text=True,
        env=env,
        cwd=checkout,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


CREATE_SCHEMA = r"""
import json, sys
import stock_pipeline
args = json.load(sys.stdin)
assert stock_pipeline.__file__.startswith(args["checkout"]), stock_pipeline.__file__
from stock_pipeline.store.schema import engine_for  # the previous release's layout
engine_for(args["url"])
print(json.dumps({"package": stock_pipeline.__file__}))
"""

# The previous release registers accounts (the exchange `accounts add --refresh-token`
# made), sets a policy, remembers an offer it ended, the guards' memory, and audit rows.
FILL_DATABASE = r"""
import json, sys
from datetime import datetime, timezone
import pandas as pd
import stock_pipeline
args = json.load(sys.stdin)
assert stock_pipeline.__file__.startswith(args["checkout"]), stock_pipeline.__file__
# The previous release's layout: these scripts run on its checkout.
from stock_pipeline.allegro.auth import AllegroAuth, TokenPair
from stock_pipeline.core.policy import StockPolicy
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.ended_offers import EndedOffers
from stock_pipeline.store.guard_state import BAD_ROWS_FINGERPRINT, LAST_GOOD_SNAPSHOT_SKUS, write_value
from stock_pipeline.store.policies import PolicyStore
from stock_pipeline.store.schema import engine_for
from stock_pipeline.store.writes_log import WritesLog

engine = engine_for(args["url"])
auth = AllegroAuth(args["auth_url"], args["client_id"], args["client_secret"])
store = AccountStore(engine)
stored = {}
for name, refresh in args["refresh_tokens"].items():
    pair = auth.refresh(refresh)
    if name in args["expired"]:  # its access token has run out: the next sync must refresh
        pair = TokenPair(pair.access_token, pair.refresh_token, datetime(2020, 1, 1, tzinfo=timezone.utc))
    store.save_tokens(name, pair)
    stored[name] = {"access_token": pair.access_token, "refresh_token": pair.refresh_token}
account = args["account"]
PolicyStore(engine).set(account, StockPolicy(**args["policy"]))
EndedOffers(engine).record(account, args["ended_by_us"], "old-run-1")
write_value(engine, LAST_GOOD_SNAPSHOT_SKUS, args["snapshot_skus"])
write_value(engine, BAD_ROWS_FINGERPRINT, 0)
log = WritesLog(engine)
plan = pd.DataFrame(args["audit"])
log.record_planned("old-run-1", account, plan)
for row in args["audit"]:
    log.mark("old-run-1", account, row["action"], [row["offer_id"]], row["final"], command_id=row["command_id"],
             error=row.get("error"))
print(json.dumps(stored))
"""


def _schema_fingerprint(url: str) -> dict:
    """Everything the database says about the pipeline's tables, exactly (names of the
    NOT NULL checks Postgres makes up aside)."""
    engine = _plain_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                return {
                    "sqlite_master": conn.execute(
                        sa.text(
                            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name != :version "
                            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                        ),
                        {"version": VERSION_TABLE},
                    ).all()
                }
            query = {
                "columns": "SELECT table_name, column_name, ordinal_position, data_type, character_maximum_length, "
                "numeric_precision, datetime_precision, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = 'public' AND table_name != :version "
                "ORDER BY table_name, ordinal_position",
                "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                "AND tablename != :version ORDER BY indexname",
                "constraints": "SELECT tc.table_name, tc.constraint_name, tc.constraint_type, "
                "string_agg(k.column_name, ',' ORDER BY k.ordinal_position) "
                "FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage k "
                "ON k.constraint_name = tc.constraint_name AND k.table_name = tc.table_name "
                "WHERE tc.table_schema = 'public' AND tc.table_name != :version "
                "GROUP BY 1, 2, 3 ORDER BY 2",
                "sequences": "SELECT sequence_name, data_type, start_value, increment "
                "FROM information_schema.sequences "
                "WHERE sequence_schema = 'public' ORDER BY 1",
            }
            return {key: conn.execute(sa.text(sql), {"version": VERSION_TABLE}).all() for key, sql in query.items()}
    finally:
        engine.dispose()


# --- the schema ----------------------------------------------------------------------


def test_migrated_schema_equals_the_code_metadata(database_url):
    """The guard of every schema change: a table or column added to the code without a
    migration (or a migration the code does not reflect) fails here."""
    engine_for(database_url)
    assert _version_rows(database_url) == [HEAD]
    assert _differences(database_url, migrate.current_metadata()) == []


def test_the_comparison_notices_what_a_missing_migration_would_leave_out(database_url):
    engine_for(database_url)
    changed = sa.MetaData()
    for table in migrate.current_metadata().sorted_tables:
        table.to_metadata(changed)
    changed.tables["sync_status"].append_column(sa.Column("note", sa.Text, nullable=True))
    changed.tables["accounts"].c.status.type = sa.String(40)
    sa.Index("ix_ended_offers_run", changed.tables["ended_offers"].c.run_id)
    sa.Table("later_table", changed, sa.Column("id", sa.Integer, primary_key=True))
    differences = _differences(database_url, changed)
    assert "column sync_status.note is missing" in differences
    assert "column accounts.status type is VARCHAR(20), expected VARCHAR(40)" in differences
    assert "index ix_ended_offers_run on ended_offers is missing" in differences
    assert "table later_table is missing" in differences


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_migration_0001_makes_exactly_what_the_previous_release_made(previous_release, new_database, kind):
    from stock_pipeline.store.migrations.pre_alembic import schemas

    old_url, migrated_url = new_database(kind, "made_by_previous_release"), new_database(kind, "migrated")
    run_previous_release(previous_release, CREATE_SCHEMA, {"url": old_url})
    _migrate_to(migrated_url, "0001")

    assert _version_rows(migrated_url) == ["0001"]
    assert _schema_fingerprint(migrated_url) == _schema_fingerprint(old_url)
    # A database of that release is recognised by this same schema.
    assert _differences(old_url, schemas()["0001"]) == []
    assert _differences(migrated_url, schemas()["0001"]) == []


def test_migrations_ship_inside_the_package():
    """The wheel (and the Docker image, which pip-installs it) carries every migration file."""
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    root = REPO / "stock_pipeline"
    migrations = root / "store" / "migrations"
    for path in migrations.rglob("*"):
        if "__pycache__" in path.parts:
            continue
        if path.is_dir():
            assert (path / "__init__.py").exists(), f"{path} is not a package: its migrations would not ship"
        elif path.suffix != ".py":
            relative = path.relative_to(root).as_posix()
            assert any(fnmatch.fnmatch(relative, glob) for glob in package_data["stock_pipeline"]), relative
    assert sorted(p.name for p in (migrations / "versions").glob("0*.py"))[:2] == [
        "0001_previous_release.py",
        "0002_sync_status.py",
    ]


# --- upgrading a database of the previous release ---------------------------------------


def _dump(url: str, tables=("accounts", "writes", "ended_offers", "guard_state", "account_policies")) -> dict:
    engine = _plain_engine(url)
    try:
        with engine.connect() as conn:
            meta = sa.MetaData()
            meta.reflect(conn, only=list(tables))
            return {
                name: [
                    tuple(r)
                    for r in conn.execute(sa.select(meta.tables[name]).order_by(*meta.tables[name].primary_key.columns))
                ]
                for name in tables
            }
    finally:
        engine.dispose()


@pytest.fixture
def upgrade_url(request, pipeline_env, tmp_path, monkeypatch):
    """The pipeline database the CLI and runs use: the test's Postgres one, or an SQLite file."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'pipeline.db'}"
        monkeypatch.setenv("STOCK_PIPELINE_DATABASE_URL", url)
        return url
    return pipeline_env["STOCK_PIPELINE_DATABASE_URL"]


@pytest.mark.parametrize("upgrade_url", ["postgres", "sqlite"], indirect=True)
def test_database_of_the_previous_release_is_upgraded_keeping_every_row_and_syncs(
    previous_release, upgrade_url, settings, simulator, monkeypatch
):
    from stock_pipeline.core.policy import StockPolicy
    from stock_pipeline.store.accounts import AccountStore
    from stock_pipeline.store.ended_offers import EndedOffers
    from stock_pipeline.store.guard_state import LAST_GOOD_SNAPSHOT_SKUS, read_value
    from stock_pipeline.store.policies import PolicyStore
    from stock_pipeline.store.sale_holds import SaleHolds
    from stock_pipeline.store.sync_status import SyncStatusStore
    from stock_pipeline.store.writes_log import WritesLog

    # The sellers exist at Allegro; the previous release exchanged their refresh tokens.
    refresh_tokens = {
        "shop-old": simulator.add_seller("shop-old"),
        "shop-expired": simulator.add_seller("shop-expired"),
    }
    a, b, c, d = simulator.add_offers(
        "shop-old",
        [
            {"sku": "A", "stock": 5},
            {"sku": "B", "stock": 3},
            {"sku": "C", "stock": 0, "status": "ENDED", "ended_by": "USER"},  # ended by the previous release
            {"sku": "D", "stock": 0, "status": "ENDED", "ended_by": "USER"},  # ended by the seller
        ],
    )
    [x] = simulator.add_offers("shop-expired", [{"sku": "X", "stock": 1}])
    warehouse = [("A", 20), ("B", 3), ("C", 4), ("D", 6), ("X", 7)]
    audit = [
        dict(
            offer_id=a,
            sku="A",
            before=2,
            after=5,
            action="set",
            method="quantity_command",
            final="success",
            command_id="cmd-old-1",
        ),
        dict(
            offer_id=c,
            sku="C",
            before=3,
            after=0,
            action="end",
            method="publication_command",
            final="success",
            command_id="cmd-old-2",
        ),
        dict(
            offer_id=b,
            sku="B",
            before=1,
            after=3,
            action="set",
            method="patch",
            final="failed",
            command_id=None,
            error="HTTP 422: kept in the audit",
        ),
    ]
    stored = run_previous_release(
        previous_release,
        FILL_DATABASE,
        {
            "url": upgrade_url,
            "auth_url": settings.allegro_auth_url,
            "client_id": settings.allegro_client_id,
            "client_secret": settings.allegro_client_secret,
            "refresh_tokens": refresh_tokens,
            "expired": ["shop-expired"],
            "account": "shop-old",
            "policy": {"reserve_units": 1, "cap": 8},
            "ended_by_us": [c],
            "snapshot_skus": len(warehouse),
            "audit": audit,
        },
    )
    assert _version_rows(upgrade_url) == []  # that release knew nothing of migrations
    before = _dump(upgrade_url)
    assert len(before["accounts"]) == 2 and len(before["writes"]) == 3

    current = run_cli("db", "current")  # the operator's view; it changes nothing
    assert current.returncode == 0, current.stdout + current.stderr
    assert "made by a release before migrations and matches revision 0001" in current.stdout
    assert _version_rows(upgrade_url) == []

    upgrades = _recording_upgrades(monkeypatch)
    engine = engine_for(upgrade_url)

    [upgrade] = upgrades
    assert (upgrade.stamped, upgrade.applied, upgrade.after.revision) == ("0001", ("0002", "0003", "0004"), HEAD)
    assert _version_rows(upgrade_url) == [HEAD]
    assert _dump(upgrade_url) == before  # every row of every table, as the previous release wrote it
    assert _differences(upgrade_url, migrate.current_metadata()) == []
    store = AccountStore(engine, settings.token_cipher())
    assert [(acc.name, acc.status) for acc in store.list()] == [("shop-expired", "active"), ("shop-old", "active")]
    with engine.connect() as conn:
        rows = {r.name: r for r in conn.execute(sa.text("SELECT * FROM accounts"))}
    for name, tokens in stored.items():  # today's code opens what the previous release sealed
        assert store.cipher.open(name, rows[name].access_token) == tokens["access_token"]
        assert store.cipher.open(name, rows[name].refresh_token) == tokens["refresh_token"]
        assert rows[name].refresh_token != tokens["refresh_token"]  # and it was stored encrypted
    assert PolicyStore(engine).get("shop-old") == StockPolicy(reserve_units=1, cap=8)
    assert EndedOffers(engine).ours("shop-old") == {c}
    assert read_value(engine, LAST_GOOD_SNAPSHOT_SKUS) == len(warehouse)
    history = WritesLog(engine).history(account="shop-old")
    assert sorted(zip(history["offer_id"], history["status"], history["command_id"].fillna(""))) == sorted(
        (r["offer_id"], r["final"], r["command_id"] or "") for r in audit
    )
    assert SyncStatusStore(engine).all() == {}  # the new tables, empty until a run records one
    assert SaleHolds(engine).active("shop-old").empty

    # A real sync with the tokens the previous release stored: no re-authorisation.
    write_stock(settings.stock_database_url, warehouse)
    simulator.reset_requests()
    result = run_cli("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    offers = {o["id"]: o for o in simulator.offers("shop-old")}
    assert (offers[a]["stock"], offers[a]["status"]) == (8, "ACTIVE")  # 20 - 1 reserved, capped at 8
    assert (offers[b]["stock"], offers[b]["status"]) == (2, "ACTIVE")  # 3 - 1 reserved
    assert (offers[c]["stock"], offers[c]["status"]) == (3, "ACTIVE")  # ours: back now stock has returned
    assert offers[d]["status"] == "ENDED"  # the seller's: never re-activated
    assert simulator.offer(x)["stock"] == 7
    # shop-old used its stored access token; shop-expired refreshed once with its stored refresh token.
    assert sum(1 for r in simulator.requests if r.path.endswith(TOKEN_REQUEST)) == 1
    assert [(acc.name, acc.status) for acc in store.list()] == [("shop-expired", "active"), ("shop-old", "active")]
    statuses = SyncStatusStore(engine).all()
    assert {name: s.last_result for name, s in statuses.items()} == {"shop-old": "success", "shop-expired": "success"}
    assert len(WritesLog(engine).history(account="shop-old")) > len(audit)  # new audit rows beside the old


def test_a_database_at_0002_gets_the_sale_holds_table_keeping_every_row(database_url, monkeypatch):
    """The release before sale holds: its rows (an account, its policy, an audit row, a sync
    status) stay as they were, and the new table works at once."""
    from stock_pipeline.core.sale_holds import typed_holds
    from stock_pipeline.store.sale_holds import SaleHolds

    _migrate_to(database_url, "0002")
    engine = _plain_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO accounts (name, status) VALUES ('shop', 'active')"))
        conn.execute(
            sa.text("INSERT INTO account_policies (account, policy, updated_at) VALUES ('shop', :p, :t)"),
            {"p": '{"reserve_units": 1}', "t": "2026-11-01 10:00:00+00:00"},
        )
        conn.execute(
            sa.text(
                "INSERT INTO writes (run_id, account, offer_id, sku, before, after, action, method, status) "
                "VALUES ('run-1', 'shop', '100', 'A', 4, 5, 'set', 'patch', 'success')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO sync_status (account, last_run_id, last_result, last_finished_at) "
                "VALUES ('shop', 'run-1', 'success', :t)"
            ),
            {"t": "2026-11-01 10:00:00+00:00"},
        )
    engine.dispose()
    tables = ("accounts", "account_policies", "writes", "sync_status")
    before = _dump(database_url, tables)

    upgrades = _recording_upgrades(monkeypatch)
    upgraded = engine_for(database_url)

    assert [(u.stamped, u.applied) for u in upgrades] == [(None, ("0003", "0004"))]
    assert _dump(database_url, tables) == before
    assert _differences(database_url, migrate.current_metadata()) == []
    hold = pd.DataFrame(
        {
            "offer_id": ["100"],
            "sku": ["A"],
            "quantity": [1],
            "warehouse_stock_at_sale": [5],
            "bought_at": [pd.Timestamp("2026-11-28T11:00Z")],
            "hold_until": [pd.Timestamp("2099-01-01T00:00Z")],
            "order_event_id": ["e-1"],
            "line_item_id": ["li-1"],
        }
    )
    assert SaleHolds(upgraded).record("shop", typed_holds(hold)) == 1
    assert SaleHolds(upgraded).active("shop")["line_item_id"].tolist() == ["li-1"]


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_database_of_main_before_migrations_is_recognised_at_0002(new_database, kind):
    """Between the release and migrations, main's create_all had already made sync_status."""
    from stock_pipeline.store.migrations.pre_alembic import schemas

    url = new_database(kind)
    engine = _plain_engine(url)
    with engine.begin() as conn:
        schemas()["0002"].create_all(conn)
    engine.dispose()
    result = migrate.upgrade_to_head(new_engine(url))
    assert (result.stamped, result.applied, result.after.revision) == ("0002", ("0003", "0004"), HEAD)
    assert _differences(url, migrate.current_metadata()) == []


def test_tables_matching_no_release_are_refused_with_the_command_that_resolves_it(database_url, monkeypatch):
    """E.g. a database of a release older than 73ea1ae: writes had no guards_overridden."""
    from stock_pipeline.store.migrations.pre_alembic import schemas

    engine = _plain_engine(database_url)
    with engine.begin() as conn:
        schemas()["0001"].create_all(conn)
        conn.execute(sa.text("ALTER TABLE writes DROP COLUMN guards_overridden"))

    with pytest.raises(PipelineDatabaseSchemaError) as refused:
        engine_for(database_url)
    message = str(refused.value)
    assert "no migration history" in message and "column writes.guards_overridden is missing" in message
    assert "stock-pipeline db stamp 0001" in message
    assert _version_rows(database_url) == []  # nothing was changed

    # What the message says to do: make the tables match 0001, then stamp.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "ALTER TABLE writes ADD COLUMN guards_overridden BOOLEAN DEFAULT "
                + ("0" if conn.dialect.name == "sqlite" else "false")
                + " NOT NULL"
            )
        )
    engine.dispose()
    monkeypatch.setenv("STOCK_PIPELINE_DATABASE_URL", database_url)
    stamped = run_cli("db", "stamp", "0001")
    assert stamped.returncode == 0, stamped.stdout + stamped.stderr
    assert "recorded at revision 0001" in stamped.stdout and "0002, 0003, 0004 run at the next start" in stamped.stdout
    engine_for(database_url)
    assert _version_rows(database_url) == [HEAD]


# --- the start-up rule ---------------------------------------------------------------


def test_database_newer_than_the_release_is_refused_with_a_sentence(database_url, monkeypatch):
    engine = engine_for(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
    dispose_engines()
    sentence = (
        f"the pipeline database is at revision 0099, newer than this release (head {HEAD}): upgrade stock_pipeline"
    )

    with pytest.raises(PipelineDatabaseSchemaError) as refused:
        engine_for(database_url)
    assert str(refused.value) == sentence

    monkeypatch.setenv("STOCK_PIPELINE_DATABASE_URL", database_url)
    for command in (("accounts", "list"), ("db", "upgrade"), ("db", "current")):
        result = run_cli(*command)
        assert result.returncode == 1, (command, result.stdout + result.stderr)
        assert sentence in result.stdout + result.stderr, command
    assert _version_rows(database_url) == ["0099"]  # untouched
    check, _ = check_pipeline_database(database_url)
    assert check.level == "FAIL" and sentence in check.found


def test_doctor_reports_the_schema_revision_and_migrates_nothing(database_url):
    empty = _plain_engine(database_url)
    with empty.connect():  # an empty database (SQLite: the file now exists)
        pass
    empty.dispose()
    check, _ = check_pipeline_database(database_url)
    assert check.level == "warn" and "none of the pipeline's tables yet" in check.found, check
    assert _version_rows(database_url) == []
    engine_for(database_url)
    check, _ = check_pipeline_database(database_url)
    assert f"schema at revision {HEAD} (head)" in check.found and check.level in ("ok", "warn")  # warn: SQLite


def test_a_second_start_changes_nothing(database_url, monkeypatch):
    first = _recording_upgrades(monkeypatch)
    engine_for(database_url)
    assert first[0].applied == ("0001", "0002", "0003", "0004")
    dispose_engines()  # as a new process would

    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        engine_for(database_url)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    assert not first[1].changed and first[1].after.revision == HEAD
    changes = [
        s
        for s in statements
        if not s.lstrip().upper().startswith(("SELECT", "PRAGMA", "WITH")) or "advisory" in s.lower()
    ]
    assert statements and changes == []  # no DDL, no version row written, no lock taken
    assert _version_rows(database_url) == [HEAD]


def test_cli_db_upgrade_and_current(database_url, monkeypatch, pipeline_env):
    monkeypatch.setenv("STOCK_PIPELINE_DATABASE_URL", database_url)
    current = run_cli("db", "current")
    assert current.returncode == 0 and "none of the pipeline's tables yet" in current.stdout, current.stderr
    upgraded = run_cli("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"applied 0001, 0002, 0003, 0004; now at revision {HEAD} (head)" in upgraded.stdout
    again = run_cli("db", "upgrade")
    assert again.returncode == 0 and f"at revision {HEAD} (head): nothing to do" in again.stdout
    current = run_cli("db", "current")
    assert current.returncode == 0 and f"at revision {HEAD} (head): up to date" in current.stdout
    unknown = run_cli("db", "stamp", "0042")
    assert unknown.returncode == 2 and "unknown revision '0042'" in unknown.stderr


def _start_process(url, barrier, results):
    """A process starting up: engine_for on the database, as the code server or a run would."""
    from stock_pipeline.store import migrate as migrate_module
    from stock_pipeline.store.engine import engine_for as open_database

    outcomes = []
    real = migrate_module.upgrade_to_head
    migrate_module.upgrade_to_head = lambda engine: outcomes.append(real(engine)) or outcomes[-1]
    barrier.wait()
    try:
        open_database(url)
        results.put(("ok", [list(o.applied) for o in outcomes]))
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put(("error", repr(exc)))


def test_processes_starting_together_on_a_new_database_migrate_once(database_url):
    ctx = multiprocessing.get_context("spawn")
    count = 3
    barrier, results = ctx.Barrier(count), ctx.Queue()
    processes = [ctx.Process(target=_start_process, args=(database_url, barrier, results)) for _ in range(count)]
    for p in processes:
        p.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(timeout=30)

    assert [kind for kind, _ in outcomes] == ["ok"] * count, outcomes
    applied = sorted(tuple(runs[0]) for _, runs in outcomes)
    assert applied == [()] * (count - 1) + [("0001", "0002", "0003", "0004")], (
        outcomes
    )  # one migrated, the others found it done
    assert _version_rows(database_url) == [HEAD]
    assert _differences(database_url, migrate.current_metadata()) == []


def test_dagster_storage_in_the_same_database_keeps_its_own_version_table(postgres_dagster_home, monkeypatch):
    """Pointing Dagster and the pipeline at one database: two version tables, no collision."""
    from dagster import DagsterInstance

    dagster_url = os.environ["DAGSTER_POSTGRES_URL"]
    instance = DagsterInstance.get()  # creates Dagster's tables and its alembic_version
    instance.get_runs()
    engine = _plain_engine(dagster_url)
    with engine.connect() as conn:
        dagster_revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    pipeline_url = (
        sa.engine.make_url(dagster_url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    )

    engine_for(pipeline_url)

    assert _version_rows(pipeline_url) == [HEAD]
    assert _differences(pipeline_url, migrate.current_metadata(), tables=set(migrate.current_metadata().tables)) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [dagster_revision]
    engine.dispose()
    instance.dispose()
    reopened = DagsterInstance.get()  # Dagster still finds its own schema current
    assert reopened.get_runs() == []
    reopened.dispose()
