"""The pipeline database (Postgres in production, SQLite for the demo): accounts and
their encrypted tokens, per-account policies, the writes audit, the memory of offers we
ended, guard baselines, sync status and the per-account write lock. `schema.py` declares
the tables, `migrations/` changes them (Alembic), `engine.py` opens a database and brings
it to this release's schema. The store never speaks HTTP: a token refresh goes through
the `TokenRefresher` it is handed."""
