"""The pipeline's own progress and decisions in the Dagster run's event log: real runs
against the simulator over HTTP, read back from the instance, and the bridge itself."""

from __future__ import annotations

import logging
import re
import threading
import time

from dagster import DagsterInstance, serialize_value

from stock_pipeline.allegro.auth import AllegroAuth
from stock_pipeline.allegro.client import AllegroClient
from stock_pipeline.cli.sync_runner import sync_accounts
from stock_pipeline.defs.run_log import FORWARDED, run_log
from stock_pipeline.foundation.logs import REDACTED, get_logger, remember_secrets
from stock_pipeline.foundation.settings import load_settings
from stock_pipeline.observability import progress
from stock_pipeline.simulator.rate_limits import SellerWriteLimits
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.engine import engine_for
from stock_pipeline_tests.helpers import register_account, write_stock

log = get_logger("test_run_log")


def run_messages(run_id: str) -> list[tuple[int, str]]:
    """(level, text) of the run's log lines (not Dagster's own structured events)."""
    return [(r.level, r.user_message) for r in DagsterInstance.get().all_logs(run_id) if r.dagster_event is None]


def lines_like(messages, pattern: str) -> list[tuple[int, str]]:
    return [(level, text) for level, text in messages if re.search(pattern, text)]


class Captured(logging.Handler):
    """A stand-in for `context.log`: a logger whose records are kept."""

    def __init__(self, name: str):
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.logger = logging.Logger(name)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def lines(self) -> list[str]:
        return [r.getMessage() for r in self.records]


# ---- a real run, read back from the instance -----------------------------------------


def test_a_run_logs_its_listing_commands_polls_patches_retries_and_429_pauses(settings, simulator, issued, capsys):
    register_account(settings, simulator, "shop-a")
    # 2 500 offers: three listing pages. 400 change to four values (quantity commands),
    # three to values of their own (PATCHes).
    simulator.add_offers("shop-a", [{"sku": f"S{i}", "stock": 1} for i in range(2500)])
    write_stock(
        settings.stock_database_url,
        [(f"S{i}", 2 + i % 4 if i < 400 else 1) for i in range(2497)]
        + [(f"S{i}", 50 + i - 2497) for i in range(2497, 2500)],
    )
    # Seeded: the first listing call gets a 429, a later one a 500 (asserted below, not assumed).
    simulator.set_faults(rate=0.4, kinds=("429", "500"), seed=28, paths=("/sale/offers",))

    [summary] = sync_accounts(load_settings(), ["shop-a"])

    assert summary.success, summary.error
    assert simulator.stats()["faults"] == {"429": 1, "500": 1}
    messages = run_messages(summary.run_id)
    text = "\n".join(line for _, line in messages)
    assert [line for _, line in lines_like(messages, r"^listing page ")] == [
        "listing page 1/3 (offers 0–999 of 2500)",
        "listing page 2/3 (offers 1000–1999 of 2500)",
        "listing page 3/3 (offers 2000–2499 of 2500)",
    ]
    assert "listing: 2500/2500 offers" in text
    [(level, pause)] = lines_like(messages, r"^429 on GET /sale/offers")
    assert level == logging.WARNING
    assert pause == (
        "429 on GET /sale/offers: every process sharing the client_id pauses 0.2 s "
        "(no Retry-After: ALLEGRO_SYNC_RATE_LIMIT_PAUSE)"
    )
    retries = lines_like(messages, r"^retry \d/3 of GET /sale/offers in [\d.]+ s: ")
    assert len(retries) == 2 and {level for level, _ in retries} == {logging.WARNING}
    assert "429" in retries[0][1] and "HTTP 500" in retries[1][1]
    sent = lines_like(messages, r"^sent quantity command [0-9a-f-]{36}: stock \d on 100 offers$")
    assert len(sent) == 4
    polls = lines_like(messages, r"^poll quantity command [0-9a-f-]{36}: \d+/\d+ done$")
    assert polls and all(level == logging.INFO for level, _ in polls)
    command_ids = {re.search(r"command ([0-9a-f-]{36})", line).group(1) for _, line in sent}
    assert {re.search(r"command ([0-9a-f-]{36})", line).group(1) for _, line in polls} == command_ids
    [(_, patches)] = lines_like(messages, r"^PATCH ×")
    assert re.fullmatch(r"PATCH ×3 \(3/3\) \[\d+→50, \d+→51, \d+→52\]: 3 done", patches), patches
    assert "no writes pending from earlier runs" in text
    assert re.search(r"^writing \d+ changes: 4 commands \(400 offers\), 3 PATCHes$", text, re.M)
    assert re.search(r"^writes: (\d+)/\1 done$", text, re.M)

    # No token in any record of the run's event log, though the run used some.
    bearer = {
        r.headers["authorization"].removeprefix("Bearer ")
        for r in simulator.requests
        if r.headers.get("authorization", "").startswith("Bearer ")
    }
    assert bearer and bearer <= set(issued)
    records = [serialize_value(r) for r in DagsterInstance.get().all_logs(summary.run_id)]
    assert not [token for token in issued for record in records if token in record]
    # The terminal already shows these lines through structlog: Dagster's console logger leaves them out.
    assert not [
        line for line in capsys.readouterr().err.splitlines() if " - WARNING - " in line and "retry 1/3" in line
    ]


def test_two_thousand_patches_keep_the_event_log_short(settings, simulator, monkeypatch):
    monkeypatch.setenv("ALLEGRO_SYNC_RATE_LIMIT", "60000")
    monkeypatch.setenv("ALLEGRO_SYNC_USER_PATCHES_PER_MINUTE", "60000")
    simulator.write_limits = SellerWriteLimits(9000, 250_000, 60_000)
    register_account(settings, simulator, "shop-a")
    simulator.add_offers("shop-a", [{"sku": f"P{i}", "stock": 1} for i in range(2000)])
    write_stock(settings.stock_database_url, [(f"P{i}", i + 2) for i in range(2000)])  # one value each: PATCHes

    [summary] = sync_accounts(load_settings(), ["shop-a"])

    assert summary.success and summary.written == 2000, summary.error
    everything = DagsterInstance.get().all_logs(summary.run_id)
    assert len(everything) < 200, len(everything)
    patch_lines = [line for _, line in lines_like(run_messages(summary.run_id), r"^PATCH ×")]
    assert sum(int(re.match(r"PATCH ×(\d+)", line).group(1)) for line in patch_lines) == 2000
    assert patch_lines[-1].startswith("PATCH ×") and "(2000/2000)" in patch_lines[-1]


def test_writes_left_pending_are_a_warning_and_the_next_runs_recheck_is_logged(settings, simulator, monkeypatch):
    register_account(settings, simulator, "shop-a")
    simulator.add_offers("shop-a", [{"sku": f"S{i}", "stock": 1} for i in range(100)])
    write_stock(settings.stock_database_url, [(f"S{i}", 3) for i in range(100)])  # one quantity command
    simulator.command_task_delay = 2.0
    monkeypatch.setenv("ALLEGRO_SYNC_POLL_TIMEOUT", "0.3")

    [first] = sync_accounts(load_settings(), ["shop-a"])
    assert first.success and first.pending == 100, first.error
    [(level, pending)] = lines_like(run_messages(first.run_id), r"still processing")
    assert level == logging.WARNING and re.fullmatch(
        r"quantity command [0-9a-f-]{36}: 100 offers still processing when polling stopped, recorded pending "
        r"\(the next run asks again\)",
        pending,
    )
    assert lines_like(run_messages(first.run_id), r"^poll quantity command [0-9a-f-]{36}: 0/100 done$")

    time.sleep(2.0)
    [second] = sync_accounts(load_settings(), ["shop-a"])
    assert second.success, second.error
    lines = [line for _, line in run_messages(second.run_id)]
    assert "rechecking 100 writes pending from earlier runs (1 command, 0 PATCH operations)" in lines
    assert "pending writes from earlier runs: 100 settled, 0 still pending" in lines
    assert "nothing to write" in lines


def test_accepted_patches_are_polled_and_summed_up_in_one_line(settings, simulator):
    simulator.patch_async_probability = 1.0  # every PATCH answers 202 with an operation to poll
    register_account(settings, simulator, "shop-a")
    simulator.add_offers("shop-a", [{"sku": f"S{i}", "stock": 1} for i in range(30)])
    write_stock(settings.stock_database_url, [(f"S{i}", 10 + i) for i in range(30)])

    [summary] = sync_accounts(load_settings(), ["shop-a"])

    assert summary.success and summary.written == 30, summary.error
    messages = run_messages(summary.run_id)
    assert [line for _, line in lines_like(messages, r"^PATCH ×")] == ["PATCH ×30 (30/30): 30 accepted"]
    [(_, polled)] = lines_like(messages, r"accepted PATCHes finished")
    assert re.fullmatch(r"30/30 accepted PATCHes finished \(\d+ polls\)", polled)


class SlowLimiter:
    """Says every call waited 1.5 s (without sleeping)."""

    def acquire(self, cost: int = 1) -> float:
        return 1.5

    def penalise(self, seconds: float) -> None:
        pass


def test_a_long_wait_for_the_rate_budget_is_logged(settings, simulator):
    register_account(settings, simulator, "shop-a")
    auth = AllegroAuth(settings.allegro_auth_url, settings.allegro_client_id, settings.allegro_client_secret)
    tokens = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).tokens_for(
        "shop-a", auth
    )
    client = AllegroClient(settings.allegro_api_url, tokens, SlowLimiter(), account="shop-a")
    captured = Captured("run")
    try:
        with run_log(captured.logger):
            client.list_offers_page(0)
    finally:
        client.close()
    assert captured.lines == ["waited 1.5 s for the shared request budget (all accounts and processes)"]


# ---- the bridge ----------------------------------------------------------------------


def test_two_threads_with_their_own_bridges_never_cross():
    captured = {name: Captured(name) for name in ("a", "b")}
    both_inside = threading.Barrier(2)

    def work(name: str, total: int) -> None:
        with run_log(captured[name].logger, progress_interval=0):
            both_inside.wait()
            for i in range(total):
                log.info("step", who=name, i=i)
                progress.report(f"shop-{name}", "listing", i + 1, total)
            both_inside.wait()

    threads = [threading.Thread(target=work, args=("a", 200)), threading.Thread(target=work, args=("b", 300))]
    for thread in threads:
        thread.start()
    log.info("step", who="nobody")  # no bridge in this thread: forwarded nowhere
    progress.report("shop-c", "listing", 1, 1)
    for thread in threads:
        thread.join()

    for name, total in (("a", 200), ("b", 300)):
        lines = captured[name].lines
        assert [line for line in lines if line.startswith("step")] == [f"step who={name} i={i}" for i in range(total)]
        assert [line for line in lines if line.startswith("listing")] == [
            f"listing: {i + 1}/{total} offers" for i in range(total)
        ]
        assert len(lines) == 2 * total
        assert all(getattr(r, FORWARDED) for r in captured[name].records)


def test_progress_is_throttled_per_stage_but_the_last_report_always_shows():
    captured = Captured("run")
    with run_log(captured.logger, progress_interval=60):
        for done in range(1, 1001):
            progress.report("shop-a", "listing", done, 1000)
            progress.report("shop-a", "writes", done, 1000)
    assert captured.lines == [
        "listing: 1/1000 offers",
        "writes: 1/1000 done",
        "listing: 1000/1000 offers",
        "writes: 1000/1000 done",
    ]
    progress.report("shop-a", "listing", 1, 1)  # the bridge is gone
    assert len(captured.lines) == 4


SECRET = "s3cr3t-t0ken-value_xyz"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJ1c2VyX25hbWUiOiIxMjMifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def test_forwarded_lines_are_redacted_and_at_the_events_level():
    remember_secrets("plain-access-token-0123456789")
    captured = Captured("run")
    with run_log(captured.logger):
        log.warning("allegro_retry", error=f"401 Bearer {SECRET}", refresh_token=SECRET, attempt=1)
        log.error("call_failed", msg=f"answer was {JWT} for plain-access-token-0123456789")
        log.info("token_refreshed", account="shop-a", expires_at="2026-01-01T00:00:00+00:00")
        log.debug("not_shown_below_info")
    assert captured.lines == [
        f'allegro_retry error="401 Bearer {REDACTED}" refresh_token={REDACTED} attempt=1',
        f"answer was {REDACTED} for {REDACTED}",
        "token_refreshed account=shop-a expires_at=2026-01-01T00:00:00+00:00",
    ]
    assert [r.levelno for r in captured.records] == [logging.WARNING, logging.ERROR, logging.INFO]


def test_a_failing_dagster_logger_never_fails_the_sync():
    class Broken(logging.Logger):
        def log(self, *args, **kwargs):
            raise RuntimeError("event log storage unavailable")

    with run_log(Broken("broken")):
        log.info("listing_page", msg="listing page 1/1")
        progress.report("shop-a", "listing", 1, 1)
