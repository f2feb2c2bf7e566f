"""Dagster's PostgreSQL storages keep their connections in this process.

dagster-postgres opens a new connection for every statement (NullPool, so that an idle
process holds none): a run's ~80 event records cost ~80 connections, each a backend
PostgreSQL forks on the machine's cores. A process that runs a sync (the CLI, or a run
worker the daemon started for one run) is short-lived and busy, so it keeps them, as
Dagster's webserver does (`optimize_for_webserver`: pooled engines, here without a
statement timeout). A no-op on the embedded SQLite instance."""

from __future__ import annotations

import threading

from dagster import DagsterInstance

# Connections each storage may hold beyond its first while runs write side by side.
PARALLEL_CONNECTIONS = 16
_lock = threading.Lock()
_pooled: set[int] = set()  # ids of the instances already pooled in this process


def keep_connections(instance: DagsterInstance) -> None:
    """Once per instance object; later calls return at once."""
    with _lock:
        if id(instance) in _pooled:
            return
        _pooled.add(id(instance))
        instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=PARALLEL_CONNECTIONS)
