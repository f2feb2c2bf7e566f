"""How Alembic runs the pipeline's migrations.

At run time `stock_pipeline.store.migrate` builds the Alembic configuration in code and
hands over, in `config.attributes["connection"]`, a connection that holds the migration
lock (a Postgres advisory lock, or SQLite's write lock for the whole run); nothing is
read from an alembic.ini.

For developers, the repository's alembic.ini points here, so `alembic revision
--autogenerate` compares a database (`-x url=…`, else STOCK_PIPELINE_DATABASE_URL) with
the current `metadata`. Operators run `stock-pipeline db upgrade`, never `alembic upgrade`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from stock_pipeline.store.migrate import VERSION_TABLE, current_metadata, include_name

config = context.config


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=current_metadata(),
        version_table=VERSION_TABLE,  # not Dagster's own alembic_version, should both share a database
        # Each migration commits with its version row (Postgres), so one that needs an
        # autocommit block can be written; SQLite runs inside the caller's transaction.
        transaction_per_migration=True,
        compare_type=True,
        compare_server_default=True,
        include_name=include_name,
        render_as_batch=True,  # ALTERs that SQLite cannot do become copy-and-move
        **kwargs,
    )


def _url() -> str:
    # A developer's `alembic revision`/`alembic check`: the database named with -x url=…, else
    # the one the settings name (STOCK_PIPELINE_DATABASE_URL, validated like everywhere else).
    from stock_pipeline.foundation.settings import load_settings

    return context.get_x_argument(as_dictionary=True).get("url") or load_settings().stock_pipeline_database_url


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _configure(connection=config.attributes["connection"])
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = sa.create_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
