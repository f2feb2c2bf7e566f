"""Schema migrations of the pipeline database (Alembic), and the start-up rule.

Every process that opens the pipeline database (`engine_for`: the CLI, the code server,
run workers, the daemon's sensors) brings it to this release's head revision first, or
refuses to use it:

- at head: nothing happens (one SELECT of the version table, no lock taken);
- behind, or empty: the missing migrations run, under the migration lock, so that
  processes starting together migrate once: the first takes the lock and migrates, the
  others wait for it, then find the database at head;
- made by a release before migrations (the pipeline's tables, no version table): its
  tables are compared with the schemas those releases made (`migrations/pre_alembic.py`);
  the one they match exactly is stamped, then the later migrations run. Tables that match
  none are refused, with the differences and the command that resolves it;
- newer than this release (a revision this release does not know): refused, since this
  code cannot know what changed: "the pipeline database is at revision X, newer than
  this release (head Y): upgrade stock_pipeline".

The lock is a session-level Postgres advisory lock (key 4242001, the one `create_all`
used) held around the whole Alembic run, each migration committing with its version row;
on SQLite it is the database's own write lock (BEGIN IMMEDIATE), the whole run being one
transaction. `stock-pipeline db upgrade` does the same on demand (a deploy step), and
`stock-pipeline db current` only reports.

The version table is `stock_pipeline_alembic_version`, so the pipeline's history never
collides with Dagster's own `alembic_version` should both live in one database.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from stock_pipeline.foundation.errors import PipelineDatabaseSchemaError
from stock_pipeline.foundation.logs import get_logger

log = get_logger(__name__)

VERSION_TABLE = "stock_pipeline_alembic_version"
MIGRATION_LOCK_KEY = 4242001
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
URL_VARIABLE = "STOCK_PIPELINE_DATABASE_URL"

EMPTY = "empty"  # none of the pipeline's tables
UNVERSIONED = "unversioned"  # the pipeline's tables without a migration history
BEHIND = "behind"
AT_HEAD = "head"
AHEAD = "ahead"  # a revision this release does not know


def current_metadata() -> sa.MetaData:
    """The schema this release's code expects (every table module imported)."""
    from stock_pipeline.store import (  # noqa: F401 (their tables)
        ended_offers,
        guard_state,
        live_offers,
        policies,
        sale_holds,
        sync_status,
    )
    from stock_pipeline.store.schema import metadata

    return metadata


def include_name(name: str | None, type_: str, parent_names) -> bool:
    """For autogenerate: everything but the version table."""
    return not (type_ == "table" and name == VERSION_TABLE)


def alembic_config(connection: Connection | None = None):
    """Alembic's configuration, in code: the migrations ship inside the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return _script().get_current_head()


@functools.cache
def _revisions() -> tuple[str, ...]:
    """This release's revisions, oldest first."""
    return tuple(reversed([s.revision for s in _script().walk_revisions()]))


@functools.cache
def _pipeline_table_names() -> frozenset[str]:
    """Every table the pipeline has ever made: how its tables are told from anyone else's."""
    from stock_pipeline.store.migrations.pre_alembic import schemas

    names = set(current_metadata().tables)
    for metadata in schemas().values():
        names |= set(metadata.tables)
    return frozenset(names)


@dataclass(frozen=True)
class SchemaState:
    revision: str | None  # in the version table; None: no version table (or no row in it)
    head: str  # this release's
    tables: frozenset[str]  # the pipeline's tables present

    @property
    def status(self) -> str:
        if self.revision is None:
            return UNVERSIONED if self.tables else EMPTY
        if self.revision not in _revisions():
            return AHEAD
        return AT_HEAD if self.revision == self.head else BEHIND

    def pending(self) -> list[str]:
        """The migrations an upgrade would run, in order."""
        order = _revisions()
        if self.status == EMPTY:
            return list(order)
        if self.status == BEHIND:
            return list(order[order.index(self.revision) + 1 :])
        return []


def read_state(conn: Connection) -> SchemaState:
    from alembic.runtime.migration import MigrationContext

    heads = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_heads()
    tables = frozenset(set(sa.inspect(conn).get_table_names()) & _pipeline_table_names())
    # This history is linear: several rows can only come from code this release does not know.
    return SchemaState(",".join(sorted(heads)) or None, head_revision(), tables)


def shown_url(engine_or_conn) -> str:
    return engine_or_conn.engine.url.render_as_string(hide_password=True)


def ahead_sentence(state: SchemaState) -> str:
    return (
        f"the pipeline database is at revision {state.revision}, newer than this release (head {state.head}): "
        "upgrade stock_pipeline"
    )


# --- recognising a database made before migrations ---------------------------------


def schema_differences(
    conn: Connection, metadata: sa.MetaData, tables: set[str] | frozenset[str] | None = None
) -> list[str]:
    """How the database's tables differ from `metadata`, one phrase each (empty: they
    match): tables, columns, types, nullability, server defaults, indexes, unique
    constraints (Alembic's autogenerate comparison) and primary keys (which it skips).
    `tables` limits which of the database's tables count (None: all but the version table)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    def include(name, type_, parent_names):
        if type_ == "table":
            return name != VERSION_TABLE and (tables is None or name in tables)
        return True

    context = MigrationContext.configure(
        conn, opts=dict(target_metadata=metadata, compare_type=True, compare_server_default=True, include_name=include)
    )
    found = []
    for diff in compare_metadata(context, metadata):
        found.extend(_describe(d) for d in (diff if isinstance(diff, list) else [diff]))
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name in present:
            actual = inspector.get_pk_constraint(table.name)["constrained_columns"]
            expected = [c.name for c in table.primary_key.columns]
            if list(actual) != expected:
                found.append(f"primary key of {table.name} is ({', '.join(actual)}), expected ({', '.join(expected)})")
    return found


def _describe(diff: tuple) -> str:
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        return f"table {diff[1].name} " + ("is missing" if kind == "add_table" else "is not expected")
    if kind in ("add_column", "remove_column"):
        return f"column {diff[2]}.{diff[3].name} " + ("is missing" if kind == "add_column" else "is not expected")
    if kind in ("add_index", "remove_index"):
        return f"index {diff[1].name} on {diff[1].table.name} " + (
            "is missing" if kind == "add_index" else "is not expected"
        )
    if kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        constraint = diff[1]
        return f"constraint {constraint.name or type(constraint).__name__} on {constraint.table.name} " + (
            "is missing" if kind.startswith("add") else "is not expected"
        )
    if kind.startswith("modify_"):
        _, _, table, column, _, existing, expected = diff
        what = kind.removeprefix("modify_")
        if what == "nullable":
            existing, expected = ("NULL" if v else "NOT NULL" for v in (existing, expected))
            return f"column {table}.{column} is {existing}, expected {expected}"
        if what == "default":
            existing, expected = (_default_text(v) for v in (existing, expected))
        return f"column {table}.{column} {what} is {existing}, expected {expected}"
    return repr(diff)


def _default_text(value) -> str:
    if value is None:
        return "none"
    arg = getattr(value, "arg", value)
    return str(getattr(arg, "text", arg))


def recognise_pre_alembic(conn: Connection, state: SchemaState) -> str:
    """The revision a database made by `create_all` before migrations is at, or
    PipelineDatabaseSchemaError saying why it matches none."""
    from stock_pipeline.store.migrations.pre_alembic import schemas

    closest: tuple[str, list[str]] | None = None
    for revision, metadata in schemas().items():
        differences = schema_differences(conn, metadata, tables=_pipeline_table_names())
        if not differences:
            return revision
        if closest is None or len(differences) < len(closest[1]):
            closest = (revision, differences)
    assert closest is not None
    revision, differences = closest
    shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
    raise PipelineDatabaseSchemaError(
        f"the pipeline database {shown_url(conn)} ({URL_VARIABLE}) has the pipeline's tables "
        f"({', '.join(sorted(state.tables))}) but no migration history (table {VERSION_TABLE}), and they match "
        f"no release made before migrations (the closest, revision {revision}, differs: {shown}). "
        f"If it is the pipeline's database, make its tables match revision {revision} and run: "
        f"stock-pipeline db stamp {revision}; if it is another application's, set {URL_VARIABLE} to a database "
        "of the pipeline's own"
    )


# --- the lock and the run -------------------------------------------------------------


@contextmanager
def migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection holding the migration lock. Postgres: a session-level advisory lock
    (freed by unlock, or by the session ending if the process dies); Alembic then commits
    each migration itself. SQLite: BEGIN IMMEDIATE, the database's write lock, held until
    the whole run commits (SQLite runs DDL in a transaction only when asked to)."""
    with engine.connect() as conn:
        dialect = conn.dialect.name
        if dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                try:
                    conn.rollback()
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                    conn.commit()
                except sa.exc.DBAPIError:
                    conn.invalidate()  # a closed session holds no lock
        elif dialect == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        else:  # no lock known for this database: processes must not start together on a new schema
            yield conn
            conn.commit()


def run_alembic(conn: Connection, command_name: str, revision: str) -> None:
    """Alembic's `upgrade` or `stamp` to `revision` on a connection from migration_lock."""
    from alembic import command

    if conn.dialect.name != "sqlite" and conn.in_transaction():
        conn.commit()  # Alembic begins and commits each migration's transaction itself
    kwargs = {"purge": True} if command_name == "stamp" else {}
    getattr(command, command_name)(alembic_config(conn), revision, **kwargs)


@dataclass(frozen=True)
class UpgradeResult:
    before: SchemaState  # as found under the lock (or without it, when already at head)
    after: SchemaState
    stamped: str | None  # the pre-migrations release recognised, if any
    applied: tuple[str, ...]  # migrations run

    @property
    def changed(self) -> bool:
        return bool(self.stamped or self.applied)

    def sentence(self) -> str:
        if not self.changed:
            return f"the pipeline database is at revision {self.after.revision} (head): nothing to do"
        parts = []
        if self.stamped:
            parts.append(f"recognised as made before migrations, recorded at revision {self.stamped}")
        if self.applied:
            parts.append(f"applied {', '.join(self.applied)}")
        return f"the pipeline database: {'; '.join(parts)}; now at revision {self.after.revision} (head)"


def upgrade_to_head(engine: Engine) -> UpgradeResult:
    """Brings the database to head, or raises PipelineDatabaseSchemaError (see the module's rule)."""
    with engine.connect() as conn:
        state = read_state(conn)
    if state.status == AT_HEAD:
        return UpgradeResult(state, state, None, ())
    if state.status == AHEAD:
        raise PipelineDatabaseSchemaError(ahead_sentence(state))
    with migration_lock(engine) as conn:
        before = state = read_state(conn)  # whoever held the lock before us may have migrated already
        if state.status == AHEAD:
            raise PipelineDatabaseSchemaError(ahead_sentence(state))
        stamped = None
        if state.status == UNVERSIONED:
            stamped = recognise_pre_alembic(conn, state)
            log.info("pipeline_database_recognised", revision=stamped, tables=sorted(state.tables))
            run_alembic(conn, "stamp", stamped)
            state = read_state(conn)
        applied = tuple(state.pending())
        if applied:
            log.info("pipeline_database_migrating", revision=state.revision, migrations=list(applied))
            run_alembic(conn, "upgrade", "head")
        after = read_state(conn)
    result = UpgradeResult(before, after, stamped, applied)
    if result.changed:
        log.info("pipeline_database_migrated", stamped=stamped, applied=list(applied), revision=after.revision)
    return result


def stamp(engine: Engine, revision: str) -> SchemaState:
    """Records `revision` as the database's, running nothing (`stock-pipeline db stamp`)."""
    if revision not in _revisions():
        raise ValueError(f"unknown revision {revision!r}; this release has: {', '.join(_revisions())}")
    with migration_lock(engine) as conn:
        run_alembic(conn, "stamp", revision)
        state = read_state(conn)
    log.info("pipeline_database_stamped", revision=revision)
    return state


def describe(engine: Engine) -> tuple[str, bool]:
    """What `stock-pipeline db current` says, and whether this release can use the
    database (as it is, or after the automatic upgrade). Changes nothing."""
    with engine.connect() as conn:
        state = read_state(conn)
        status = state.status
        if status == AT_HEAD:
            return f"the pipeline database is at revision {state.revision} (head): up to date", True
        if status == AHEAD:
            return ahead_sentence(state), False
        upgrade = "at the next start, or now by: stock-pipeline db upgrade"
        if status == EMPTY:
            return (
                f"the pipeline database has none of the pipeline's tables yet (head {state.head}): "
                f"migrations {', '.join(state.pending())} create them {upgrade}"
            ), True
        if status == BEHIND:
            return (
                f"the pipeline database is at revision {state.revision}, behind this release (head "
                f"{state.head}): migrations {', '.join(state.pending())} run {upgrade}"
            ), True
        try:
            revision = recognise_pre_alembic(conn, state)
        except PipelineDatabaseSchemaError as exc:
            return str(exc), False
        later = _revisions()[_revisions().index(revision) + 1 :]
        return (
            f"the pipeline database was made by a release before migrations and matches revision {revision} "
            f"(head {state.head}): it is recorded at {revision}"
            + (f" and migrations {', '.join(later)} run" if later else "")
            + f" {upgrade}"
        ), True
