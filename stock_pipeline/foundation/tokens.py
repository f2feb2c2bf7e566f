"""OAuth token pairs, and their encryption at rest in the accounts table (Fernet).

`TOKEN_ENCRYPTION_KEY` holds one Fernet key, or several separated by commas to rotate:
the first encrypts, every one decrypts. Every refresh rewrites an account's tokens
with the first key, so once each active account has refreshed (access tokens live
12 hours) the old keys can be dropped from the list.

Stored values carry the prefix `fernet:`. A value without it is a plaintext token
written before encryption existed: it is read as it is and encrypted by the next
write (the next refresh, or `accounts add`).

The rule without a key: tokens are never written unencrypted, whatever the database.
Plaintext rows of an older version stay readable, but the refresh that would rewrite
them is refused before the refresh token is used. The demo is no exception: it sets
its own fixed, public key (`stock_pipeline.cli.demo.DEMO_TOKEN_ENCRYPTION_KEY`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from stock_pipeline.foundation.errors import SettingsError

KEY_VARIABLE = "TOKEN_ENCRYPTION_KEY"
PREFIX = "fernet:"
MAKE_KEY = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_at: datetime

    def __repr__(self) -> str:  # never print a token, even in a traceback
        return f"TokenPair(expires_at={self.expires_at.isoformat()})"


class TokenEncryptionError(SettingsError):
    """Tokens cannot be stored or read with the TOKEN_ENCRYPTION_KEY given (or missing)."""


def parse_keys(raw: str | None) -> list[Fernet]:
    """The Fernet keys of a TOKEN_ENCRYPTION_KEY value (comma-separated); never echoes a key."""
    parts = [part.strip() for part in (raw or "").split(",") if part.strip()]
    keys = []
    for number, part in enumerate(parts, start=1):
        try:
            keys.append(Fernet(part))
        except ValueError:
            which = f"key {number} of {len(parts)}" if len(parts) > 1 else "its value"
            raise SettingsError(
                f"{KEY_VARIABLE} must be a Fernet key (32 bytes, url-safe base64), or several separated by commas "
                f"(the first encrypts, all decrypt); {which} is not. Make one with: {MAKE_KEY}"
            ) from None
    return keys


def is_encrypted(stored: str | None) -> bool:
    return bool(stored) and stored.startswith(PREFIX)


class TokenCipher:
    """Seals tokens for the accounts table and opens them again; without keys it can
    only open plaintext (legacy) values. Built from the validated settings
    (`Settings.token_cipher()`), never from the environment."""

    def __init__(self, keys: list[Fernet]):
        self._fernet = MultiFernet(keys) if keys else None

    def require(self, account: str) -> None:
        """Raises unless tokens of `account` can be stored; call it before a token is spent."""
        if self._fernet is None:
            raise TokenEncryptionError(
                f"refusing to store the tokens of account {account!r} unencrypted: {KEY_VARIABLE} is not set. "
                f"Make a key with: {MAKE_KEY} and set {KEY_VARIABLE} in every process of the pipeline "
                "(keep it: stored tokens cannot be read without it)"
            )

    def seal(self, account: str, token: str | None) -> str | None:
        if token is None:
            return None
        self.require(account)
        return PREFIX + self._fernet.encrypt(token.encode()).decode()

    def open(self, account: str, stored: str | None) -> str | None:
        if not is_encrypted(stored):
            return stored  # empty, or plaintext from before encryption: the next write encrypts it
        if self._fernet is None:
            raise TokenEncryptionError(
                f"cannot decrypt stored tokens of account {account!r}: they are encrypted and {KEY_VARIABLE} is not set"
            )
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise TokenEncryptionError(
                f"cannot decrypt stored tokens of account {account!r}: {KEY_VARIABLE} does not match the key they "
                "were stored with (when rotating, list the new key first and keep the old one after it, "
                "separated by a comma)"
            ) from None
