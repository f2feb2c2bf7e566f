"""Checks that the services the tests use for real are there, before pytest starts.

`make test` runs this first so a missing Postgres or Redis is one clear message,
not a hundred connection errors. `make test-fast` (pytest -m "not services") needs
neither and does not run it. TEST_POSTGRES_URL and TEST_REDIS_URL point the tests
elsewhere (at closed ports, they show that the fast tier really needs neither).
"""

from __future__ import annotations

import os
import sys

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def main() -> int:
    import redis
    import sqlalchemy as sa

    problems = []
    try:
        engine = sa.create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure means the same thing here
        problems.append(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({type(exc).__name__}). "
            "Start it (e.g. `pg_ctlcluster 15 main start`) or set TEST_POSTGRES_URL."
        )
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:
        problems.append(
            f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__}). "
            "Start it (e.g. `redis-server --daemonize yes`) or set TEST_REDIS_URL."
        )
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
