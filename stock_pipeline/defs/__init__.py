"""Dagster wiring only: the account-partitioned assets and their checks, the sync job
with its hooks, the dry-run rehearsal job, the schedule and sensors, the resources that
hand adapters to steps, the IO manager and the bridge from structlog to a run's event
log. The rules live in `core/` and the I/O in the adapters and `engine/`; the code
location that assembles all this is `stock_pipeline/definitions.py`."""
