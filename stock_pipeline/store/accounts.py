"""Seller accounts and their tokens, and the refresh protocol that keeps them usable.

Allegro's refresh tokens are single-use and a refresh kills the previous access token,
so refreshing is serialised per account by a row lock (SELECT … FOR UPDATE) and the
new pair is committed before anyone uses it. A process whose access token got 401
re-reads the stored row first: another process has usually refreshed already, and
refreshing again would replay a used refresh token.

An account is `active` (synced), `needs_reauth` (Allegro rejected its refresh token;
`accounts add` fixes it) or `paused` (by the operator; `accounts resume`). Only active
accounts reach Allegro: any other status stops a run at its first token read.

Tokens are encrypted at rest with TOKEN_ENCRYPTION_KEY (see foundation/tokens.py);
without a key they are never written, and a refresh is refused before it spends the
refresh token rather than after.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from stock_pipeline.foundation.errors import (
    AccountNeedsReauthorisationError,
    AccountPausedError,
    AllegroTokenError,
    InvalidGrantError,
)
from stock_pipeline.foundation.logs import get_logger, remember_secrets
from stock_pipeline.foundation.tokens import TokenCipher, TokenEncryptionError, TokenPair, is_encrypted
from stock_pipeline.store.ended_offers import ended_offers
from stock_pipeline.store.policies import account_policies
from stock_pipeline.store.sale_holds import sale_holds
from stock_pipeline.store.schema import (
    ACCOUNT_ACTIVE,
    ACCOUNT_NEEDS_REAUTH,
    ACCOUNT_PAUSED,
    accounts,
    aware_utc,
    writes,
)
from stock_pipeline.store.sync_status import sync_status

log = get_logger(__name__)


class TokenRefresher(Protocol):
    """What the store needs of the authorisation server (`allegro.auth.AllegroAuth`):
    the store never speaks HTTP itself."""

    def refresh(self, refresh_token: str) -> TokenPair: ...

    def close(self) -> None: ...


ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Refresh this long before expiry so a call never starts with a token about to die.
REFRESH_MARGIN = timedelta(minutes=5)


def validate_account_name(name: str) -> str:
    if not ACCOUNT_NAME.match(name or ""):
        raise ValueError(
            f"account name {name!r} is not valid: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 100 characters); it names a Dagster partition"
        )
    return name


@dataclass(frozen=True)
class Account:
    name: str
    status: str
    access_expires_at: datetime | None
    last_error: str | None
    updated_at: datetime | None


@dataclass(frozen=True)
class StoredTokens:
    """What is stored for an account's tokens, never the tokens themselves (for `doctor`)."""

    name: str
    status: str
    access_expires_at: datetime | None
    last_error: str | None
    has_access_token: bool
    has_refresh_token: bool
    encrypted: bool
    problem: str | None  # why the stored tokens cannot be opened with TOKEN_ENCRYPTION_KEY


@dataclass(frozen=True)
class RemovedAccount:
    name: str
    deleted: dict[str, int]  # table -> rows deleted
    writes_kept: int


_aware = aware_utc


class AccountStore:
    def __init__(self, engine: Engine, cipher: TokenCipher):
        """`cipher` seals and opens the tokens: `settings.token_cipher()`."""
        self.engine = engine
        self.cipher = cipher
        # SQLite has no row locks: serialise refreshes inside this process instead (demo only).
        self._local_locks: dict[str, threading.Lock] = {}
        self._local_locks_guard = threading.Lock()

    def save_tokens(self, name: str, pair: TokenPair) -> None:
        """Creates or re-authorises an account with a fresh token pair. A paused account
        stays paused: re-authorising fixes its tokens, resuming is the operator's call."""
        validate_account_name(name)
        values = dict(self._sealed(name, pair), last_error=None, updated_at=datetime.now(timezone.utc))
        keep_paused = sa.case((accounts.c.status == ACCOUNT_PAUSED, ACCOUNT_PAUSED), else_=ACCOUNT_ACTIVE)
        with self.engine.begin() as conn:
            updated = conn.execute(
                accounts.update().where(accounts.c.name == name).values(**values, status=keep_paused)
            ).rowcount
            if not updated:
                conn.execute(accounts.insert().values(name=name, status=ACCOUNT_ACTIVE, **values))

    def list(self, only_active: bool = False) -> list[Account]:
        query = sa.select(
            accounts.c.name,
            accounts.c.status,
            accounts.c.access_expires_at,
            accounts.c.last_error,
            accounts.c.updated_at,
        ).order_by(accounts.c.name)
        if only_active:
            query = query.where(accounts.c.status == ACCOUNT_ACTIVE)
        with self.engine.connect() as conn:
            return [
                Account(r.name, r.status, _aware(r.access_expires_at), r.last_error, _aware(r.updated_at))
                for r in conn.execute(query)
            ]

    def get(self, name: str) -> Account | None:
        return next((a for a in self.list() if a.name == name), None)

    def set_status(self, name: str, status: str, error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                accounts.update()
                .where(accounts.c.name == name)
                .values(status=status, last_error=error, updated_at=datetime.now(timezone.utc))
            )

    def require(self, name: str) -> Account:
        """The account, or ValueError naming the registered ones."""
        account = self.get(name)
        if account is None:
            known = ", ".join(a.name for a in self.list()) or "none"
            raise ValueError(f"unknown account {name!r}; registered: {known}")
        return account

    def pause(self, name: str) -> Account:
        """Stops every sync of the account (schedule, `sync`, runs launched by hand) until
        resumed. Its last error stays: it tells `resume` whether the tokens still need fixing."""
        before = self.require(name)
        with self.engine.begin() as conn:
            conn.execute(
                accounts.update()
                .where(accounts.c.name == name)
                .values(status=ACCOUNT_PAUSED, updated_at=datetime.now(timezone.utc))
            )
        return before

    def resume(self, name: str) -> str:
        """Un-pauses the account; returns its new status. An account paused while its refresh
        token was rejected goes back to needs_reauth, not to active: its tokens are still dead."""
        before = self.require(name)
        if before.status != ACCOUNT_PAUSED:
            return before.status
        status = ACCOUNT_NEEDS_REAUTH if before.last_error else ACCOUNT_ACTIVE
        with self.engine.begin() as conn:
            conn.execute(
                accounts.update()
                .where(accounts.c.name == name, accounts.c.status == ACCOUNT_PAUSED)
                .values(status=status, updated_at=datetime.now(timezone.utc))
            )
        return status

    def remove(self, name: str) -> RemovedAccount:
        """Deletes the account with its tokens and everything kept to sync it (policy,
        offers it ended, holds of its sales, last sync status), in one transaction. The writes log is the
        audit trail: its rows of the account stay."""
        self.require(name)
        deleted: dict[str, int] = {}
        with self.engine.begin() as conn:
            for table, column in (
                (ended_offers, ended_offers.c.account),
                (account_policies, account_policies.c.account),
                (sale_holds, sale_holds.c.account),
                (sync_status, sync_status.c.account),
                (accounts, accounts.c.name),
            ):
                deleted[table.name] = conn.execute(table.delete().where(column == name)).rowcount
            kept = conn.execute(sa.select(sa.func.count()).select_from(writes).where(writes.c.account == name)).scalar()
        log.info("account_removed", account=name, deleted=deleted, writes_kept=kept)
        return RemovedAccount(name, deleted, int(kept or 0))

    def stored_tokens(self) -> list[StoredTokens]:
        """Each account's token state, opening the stored tokens to prove the key fits."""
        query = sa.select(accounts).order_by(accounts.c.name)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        states = []
        for row in rows:
            problem = None
            try:
                for stored in (row.access_token, row.refresh_token):
                    self._opened(row.name, stored)
            except TokenEncryptionError as exc:
                problem = str(exc)
            states.append(
                StoredTokens(
                    name=row.name,
                    status=row.status,
                    access_expires_at=_aware(row.access_expires_at),
                    last_error=row.last_error,
                    has_access_token=bool(row.access_token),
                    has_refresh_token=bool(row.refresh_token),
                    encrypted=all(is_encrypted(v) for v in (row.access_token, row.refresh_token) if v),
                    problem=problem,
                )
            )
        return states

    def check_can_store_tokens(self, name: str) -> None:
        """Raises TokenEncryptionError when tokens could not be stored; call before spending a token."""
        self.cipher.require(name)

    def _sealed(self, name: str, pair: TokenPair) -> dict:
        remember_secrets(pair.access_token, pair.refresh_token)
        return dict(
            access_token=self.cipher.seal(name, pair.access_token),
            refresh_token=self.cipher.seal(name, pair.refresh_token),
            access_expires_at=pair.expires_at,
        )

    def _opened(self, name: str, stored: str | None) -> str | None:
        token = self.cipher.open(name, stored)
        remember_secrets(token)
        return token

    def _row(self, conn: Connection, name: str, lock: bool = False):
        query = sa.select(accounts).where(accounts.c.name == name)
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise AllegroTokenError(
                f"account {name!r} is not registered; add it with: stock-pipeline accounts add {name}"
            )
        return row

    def _local_lock(self, name: str) -> threading.Lock:
        with self._local_locks_guard:
            return self._local_locks.setdefault(name, threading.Lock())

    def tokens_for(self, name: str, auth: TokenRefresher) -> "AccountTokens":
        return AccountTokens(self, name, auth)


class AccountTokens:
    """The AccessTokenSource of one account, backed by the store."""

    def __init__(self, store: AccountStore, name: str, auth: TokenRefresher):
        self._store = store
        self._name = name
        self._auth = auth
        # The token last read or refreshed, with its expiry: a run makes thousands of calls,
        # and the stored row only changes on refresh (ours, or another process's: then a
        # 401 sends us back to the row).
        self._cached: tuple[str, datetime] | None = None

    def close(self) -> None:
        self._auth.close()

    def _remember(self, token: str, row_or_expiry) -> str:
        expires = row_or_expiry if isinstance(row_or_expiry, datetime) else _aware(row_or_expiry.access_expires_at)
        self._cached = (token, expires)
        return token

    def _usable(self, row) -> bool:
        expires = _aware(row.access_expires_at)
        return bool(row.access_token) and expires is not None and expires - datetime.now(timezone.utc) > REFRESH_MARGIN

    def _check_active(self, row) -> None:
        if row.status == ACCOUNT_PAUSED:
            raise AccountPausedError(self._name)
        if row.status != ACCOUNT_ACTIVE:
            raise AccountNeedsReauthorisationError(self._name, row.last_error or row.status)

    def _access_token(self, row) -> str | None:
        return self._store._opened(self._name, row.access_token)

    def current(self) -> str:
        if self._cached and self._cached[1] - datetime.now(timezone.utc) > REFRESH_MARGIN:
            return self._cached[0]
        with self._store.engine.connect() as conn:
            row = self._store._row(conn, self._name)
        self._check_active(row)
        access_token = self._access_token(row)
        if self._usable(row):
            return self._remember(access_token, row)
        return self._refresh(stale_access_token=access_token)

    def after_unauthorised(self, rejected: str) -> str:
        self._cached = None
        with self._store.engine.connect() as conn:
            row = self._store._row(conn, self._name)
        self._check_active(row)
        access_token = self._access_token(row)
        if access_token != rejected and self._usable(row):
            return self._remember(access_token, row)
        return self._refresh(stale_access_token=rejected)

    def _refresh(self, stale_access_token: str | None) -> str:
        # Before the lock and the refresh: a pair that could not be stored would be lost with the old one.
        self._store.check_can_store_tokens(self._name)
        with self._store._local_lock(self._name), self._store.engine.connect() as conn:
            transaction = conn.begin()
            try:
                row = self._store._row(conn, self._name, lock=True)
                self._check_active(row)
                access_token = self._access_token(row)
                if access_token != stale_access_token and self._usable(row):
                    return self._remember(access_token, row)  # another process refreshed while we waited
                try:
                    pair = self._auth.refresh(self._store._opened(self._name, row.refresh_token))
                except InvalidGrantError as exc:
                    conn.execute(
                        accounts.update()
                        .where(accounts.c.name == self._name)
                        .values(status=ACCOUNT_NEEDS_REAUTH, last_error=str(exc), updated_at=datetime.now(timezone.utc))
                    )
                    transaction.commit()
                    log.error("account_needs_reauthorisation", account=self._name, error=str(exc))
                    raise AccountNeedsReauthorisationError(self._name, str(exc)) from None
                conn.execute(
                    accounts.update()
                    .where(accounts.c.name == self._name)
                    .values(
                        **self._store._sealed(self._name, pair), last_error=None, updated_at=datetime.now(timezone.utc)
                    )
                )
                transaction.commit()
            finally:
                if transaction.is_active:
                    transaction.rollback()
        log.info("token_refreshed", account=self._name, expires_at=pair.expires_at.isoformat())
        return self._remember(pair.access_token, pair.expires_at)
