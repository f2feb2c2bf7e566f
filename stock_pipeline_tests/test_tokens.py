"""Token refresh against the simulator's single-use refresh tokens, on real Postgres."""

from __future__ import annotations

import multiprocessing
from datetime import datetime, timedelta, timezone

import pytest

from stock_pipeline.allegro.auth import AllegroAuth
from stock_pipeline.foundation.errors import AccountNeedsReauthorisationError
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.schema import accounts
from stock_pipeline_tests.helpers import allegro_auth, expire_stored_token, register_account, token_requests


def _race_worker(settings, auth_args, name, barrier, results):
    store = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())
    tokens = store.tokens_for(name, AllegroAuth(*auth_args))
    barrier.wait()
    try:
        results.put(("ok", tokens.current()))
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put(("error", repr(exc)))


def test_two_processes_racing_refresh_use_the_refresh_token_once(settings, simulator):
    register_account(settings, simulator, "shop-a")
    expire_stored_token(settings.stock_pipeline_database_url, "shop-a")
    simulator.reset_requests()

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    auth_args = (settings.allegro_auth_url, settings.allegro_client_id, settings.allegro_client_secret)
    workers = [
        ctx.Process(target=_race_worker, args=(settings, auth_args, "shop-a", barrier, results)) for _ in range(3)
    ]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)

    assert [kind for kind, _ in outcomes] == ["ok"] * 3, outcomes
    assert len({token for _, token in outcomes}) == 1  # all use the one new token
    assert token_requests(simulator) == 1  # refreshed once: no replay of a used refresh token
    store = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())
    assert store.get("shop-a").status == "active"


def test_a_401_rereads_the_stored_token_before_refreshing(settings, simulator):
    register_account(settings, simulator, "shop-a")
    store = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())
    first = store.tokens_for("shop-a", allegro_auth(settings))
    second = store.tokens_for("shop-a", allegro_auth(settings))
    old = first.current()
    simulator.reset_requests()
    refreshed = first.after_unauthorised(old)  # as if the API answered 401
    assert refreshed != old and token_requests(simulator) == 1
    # Another worker still holding `old` gets 401 too: it must pick up the stored token, not refresh again.
    assert second.after_unauthorised(old) == refreshed
    assert token_requests(simulator) == 1


def test_invalid_grant_marks_the_account_and_names_the_fix(settings, simulator):
    register_account(settings, simulator, "shop-a")
    expire_stored_token(settings.stock_pipeline_database_url, "shop-a")
    simulator.revoke_tokens("shop-a")
    store = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())
    with pytest.raises(AccountNeedsReauthorisationError, match="stock-pipeline accounts add shop-a"):
        store.tokens_for("shop-a", allegro_auth(settings)).current()
    assert store.get("shop-a").status == "needs_reauth"
    simulator.reset_requests()
    with pytest.raises(AccountNeedsReauthorisationError):  # no further refresh attempts
        store.tokens_for("shop-a", allegro_auth(settings)).current()
    assert token_requests(simulator) == 0


def test_stored_tokens_are_replaced_atomically_on_refresh(settings, simulator):
    register_account(settings, simulator, "shop-a")
    old = expire_stored_token(settings.stock_pipeline_database_url, "shop-a")
    store = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())
    new = store.tokens_for("shop-a", allegro_auth(settings)).current()
    assert new != old
    assert store.get("shop-a").access_expires_at > datetime.now(timezone.utc) + timedelta(hours=11)


def test_a_run_reads_the_stored_token_once_not_per_call(settings, simulator):
    register_account(settings, simulator, "shop-a")
    tokens = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).tokens_for(
        "shop-a", allegro_auth(settings)
    )
    first = tokens.current()
    engine = engine_for(settings.stock_pipeline_database_url)
    with engine.begin() as conn:  # were the row read again, this would show
        conn.execute(accounts.update().where(accounts.c.name == "shop-a").values(status="needs_reauth"))
    assert tokens.current() == first
