"""Alembic migrations of the pipeline database, shipped inside the package and run by
`stock_pipeline.store.migrate` (no alembic.ini is needed at run time).

- `env.py`: how Alembic runs them (on the connection `migrate` hands over, which holds
  the migration lock; version table `stock_pipeline_alembic_version`).
- `versions/`: one file per schema change, `0001_…`, `0002_…`, in order. A file, once
  released, is never edited: a later change is a new file.
- `pre_alembic.py`: the tables `metadata.create_all` made before migrations existed,
  frozen: migrations 0001 and 0002 create them, and a database made by those releases
  is recognised by them and stamped instead of refused.
"""
