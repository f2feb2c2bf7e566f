"""The top layer, what people run: the `stock-pipeline` command (`main.py`), running
syncs in-process through Dagster (`sync_runner.py`) and printing them (`sync_report.py`),
the operator's views (accounts overview, history, doctor) and the demo, which starts the
bundled simulators and syncs against them."""
