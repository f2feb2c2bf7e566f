"""What an operator watches besides the Dagster UI: per-account metrics kept in Redis and
served to Prometheus (`metrics.py`), and progress reports that whoever is watching (the
CLI's printer, a run's event log) can listen to (`progress.py`)."""
