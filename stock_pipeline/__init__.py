"""stock_pipeline keeps the stock of every Allegro offer, for many seller accounts, equal
to the seller's own warehouse database.

Its layers, top to bottom. A layer imports only the layers below it, lazy imports
included (`stock_pipeline_tests/test_architecture.py` holds the rules and fails on a
cycle):

    cli/             the `stock-pipeline` command, the demo and the operator's views
    definitions.py   the Dagster code location, built from defs/
    defs/            Dagster wiring: assets, checks, jobs, schedule, sensors, resources
    engine/          the write engine: a plan applied to Allegro, every write audited
    allegro/  warehouse/  store/  notify/  rate_limit/  observability/
                     adapters, one per outside system (Allegro's API, the seller's stock
                     database, the pipeline database, Telegram, the Redis token bucket,
                     Redis metrics); none imports another
    core/            pure rules over frames and values: cleaning, policy, diff, plan, guards
    foundation/      settings, errors, logging and token types, used by every layer

`simulator/` stands apart: a development and test tool (Allegro and Telegram over
loopback HTTP) that imports nothing of the pipeline; only the demo starts it.
"""

__version__ = "0.1.0"
# Every call to Allegro (and Telegram) names the app and its version.
USER_AGENT = f"stock_pipeline/{__version__} (+https://github.com/stock-pipeline/stock_pipeline)"
