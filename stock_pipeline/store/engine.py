"""Connections to the pipeline database: one engine per URL per process, its database
brought to this release's schema by the migrations (`migrate.py`) the first time the
process opens it, and database failures turned into one sentence naming the variable."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stock_pipeline.foundation.errors import PipelineDatabaseUnavailableError
from stock_pipeline.store import migrate

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine per URL per process, its database brought to this release's schema
    (or PipelineDatabaseUnavailableError / PipelineDatabaseSchemaError saying why not)."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = new_engine(url)
            _bring_to_head(engine)
            _engines[url] = engine
        return engine


def new_engine(url: str) -> Engine:
    """An engine with the pipeline's connection settings; the schema is not touched."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(url, connect_args={"timeout": 30})
    # Each account run in this process holds one connection for its write lock, and parallel
    # runs (ALLEGRO_SYNC_PARALLEL_ACCOUNTS) write their audits at once: room for many, kept for few.
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=40)


def _bring_to_head(engine: Engine) -> None:
    with database_errors(engine):
        migrate.upgrade_to_head(engine)


@contextmanager
def database_errors(engine: Engine) -> Iterator[None]:
    """Database failures while opening or migrating become one sentence naming the
    variable; the engine is disposed (it is not kept)."""
    shown = f"the pipeline database {engine.url.render_as_string(hide_password=True)} (STOCK_PIPELINE_DATABASE_URL)"
    try:
        yield
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise PipelineDatabaseUnavailableError(f"cannot reach {shown}: {_first_line(exc)}") from None
    except sa.exc.DBAPIError as exc:  # e.g. no right to CREATE in it
        engine.dispose()
        raise PipelineDatabaseUnavailableError(
            f"cannot bring {shown} to revision {migrate.head_revision()}: {_first_line(exc)}"
        ) from None
    except BaseException:
        engine.dispose()
        raise


def _first_line(exc: sa.exc.DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
