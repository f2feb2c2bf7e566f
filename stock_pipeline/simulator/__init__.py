"""A development and test tool, not part of the pipeline: doubles that speak real HTTP on
loopback, a faithful Allegro REST API simulator (offers, stock changes, batch commands,
OAuth, rate limits, faults, spec checks) and a fake Telegram Bot API. It imports nothing
of the pipeline, and nothing of the pipeline imports it but the demo."""

from stock_pipeline.simulator.allegro import AllegroSimulator, RequestRecord
from stock_pipeline.simulator.telegram import FakeTelegram

__all__ = ["AllegroSimulator", "FakeTelegram", "RequestRecord"]
