"""Allegro's authorisation server at /auth/oauth: the refresh_token grant with single-use
rotation, the device flow, the client_credentials grant (an application token, no
seller behind it), the 20-session cap and revocation.

Tokens are opaque random strings; only this store knows what they mean.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Mapping

from stock_pipeline.simulator.loopback import Reply

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CLIENT_CREDENTIALS_GRANT = "client_credentials"
SCOPE = "allegro:api:sale:offers:read allegro:api:sale:offers:write"
MAX_SESSIONS_PER_SELLER = 20
DEVICE_CODE_LIFETIME = 3600
SLOW_DOWN_STEP = 5  # RFC 8628: each slow_down widens the polling interval by 5 s
OAUTH_CONTENT_TYPE = "application/json;charset=UTF-8"
# Where Allegro sends the seller to confirm a device flow (nobody opens it in tests).
VERIFICATION_URI = "https://allegro.pl/skojarz-aplikacje"


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str):
        super().__init__(f"{error}: {description}")
        self.status, self.error, self.description = status, error, description

    def reply(self) -> Reply:
        return Reply(
            self.status, {"error": self.error, "error_description": self.description}, content_type=OAUTH_CONTENT_TYPE
        )


class InvalidToken(Exception):
    """The access token is unknown, expired or revoked (the API answers 401 invalid_token)."""


@dataclass
class _Session:
    """One authorisation of a seller: the refresh token and the access token it last gave."""

    login: str
    refresh_token: str
    access_token: str | None = None
    access_expires_at: float = 0.0


@dataclass
class _DeviceGrant:
    device_code: str
    user_code: str
    expires_at: float
    interval: float
    last_poll_at: float | None = None
    approved_login: str | None = None


def _new_token() -> str:
    return secrets.token_urlsafe(32)


class TokenStore:
    def __init__(self, access_token_ttl: int):
        self.access_token_ttl = access_token_ttl
        self._lock = threading.Lock()
        self._sessions: dict[str, list[_Session]] = {}  # login -> sessions, oldest first
        self._by_refresh: dict[str, _Session] = {}
        self._by_access: dict[str, _Session] = {}
        self._device_grants: dict[str, _DeviceGrant] = {}  # by device code
        self._application_tokens: dict[str, float] = {}  # client_credentials tokens -> expiry

    def new_session(self, login: str) -> str:
        """A new authorisation of `login`; returns its refresh token."""
        with self._lock:
            return self._open_session(login).refresh_token

    def _open_session(self, login: str) -> _Session:
        session = _Session(login, _new_token())
        sessions = self._sessions.setdefault(login, [])
        sessions.append(session)
        self._by_refresh[session.refresh_token] = session
        while len(sessions) > MAX_SESSIONS_PER_SELLER:
            self._forget(sessions.pop(0))
        return session

    def _forget(self, session: _Session) -> None:
        self._by_refresh.pop(session.refresh_token, None)
        if session.access_token:
            self._by_access.pop(session.access_token, None)

    def authenticate(self, access_token: str) -> str:
        """The login the access token acts for."""
        with self._lock:
            session = self._by_access.get(access_token)
            if session is None and access_token in self._application_tokens:
                # Allegro's /sale resources act for a seller; an application token has none.
                raise InvalidToken("Application token (client_credentials) cannot act for a seller")
            if session is None:
                raise InvalidToken("Invalid access token")
            if time.time() >= session.access_expires_at:
                raise InvalidToken("Access token expired")
            return session.login

    def refresh(self, refresh_token: str) -> tuple[str, dict]:
        """(login, token answer). The refresh token is single-use: using it kills it and the
        session's access token."""
        with self._lock:
            session = self._by_refresh.get(refresh_token)
            if session is None:
                raise OAuthError(400, "invalid_grant", f"Invalid refresh token: {refresh_token[:6]}…")
            self._forget(session)
            session.refresh_token = _new_token()
            self._by_refresh[session.refresh_token] = session
            return session.login, self._grant_access(session)

    def _grant_access(self, session: _Session) -> dict:
        session.access_token = _new_token()
        session.access_expires_at = time.time() + self.access_token_ttl
        self._by_access[session.access_token] = session
        return {
            "access_token": session.access_token,
            "token_type": "bearer",
            "refresh_token": session.refresh_token,
            "expires_in": self.access_token_ttl,
            "scope": SCOPE,
            "allegro_api": True,
            "jti": str(uuid.uuid4()),
        }

    def application_token(self) -> dict:
        """The client_credentials answer: an access token for the application itself, no
        refresh token (the client simply asks again)."""
        with self._lock:
            token = _new_token()
            self._application_tokens[token] = time.time() + self.access_token_ttl
            return {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.access_token_ttl,
                "scope": "allegro:api",
                "allegro_api": True,
                "jti": str(uuid.uuid4()),
            }

    def revoke(self, login: str) -> None:
        with self._lock:
            for session in self._sessions.pop(login, []):
                self._forget(session)

    def expire_access_tokens(self, login: str) -> None:
        with self._lock:
            for session in self._sessions.get(login, []):
                session.access_expires_at = 0.0

    # ---- device flow -----------------------------------------------------------------

    def start_device_flow(self, interval: float) -> _DeviceGrant:
        with self._lock:
            grant = _DeviceGrant(
                device_code=_new_token(),
                user_code=secrets.token_hex(4).upper(),
                expires_at=time.time() + DEVICE_CODE_LIFETIME,
                interval=interval,
            )
            self._device_grants[grant.device_code] = grant
            return grant

    def approve_device(self, user_code: str, login: str) -> None:
        with self._lock:
            for grant in self._device_grants.values():
                if grant.user_code == user_code:
                    grant.approved_login = login
                    return
        raise KeyError(f"no device flow waits for user code {user_code!r}")

    def poll_device(self, device_code: str, auto_approve_login: str | None) -> tuple[str, dict]:
        """(login, token answer) once the seller confirmed; OAuthError until then."""
        with self._lock:
            now = time.time()
            grant = self._device_grants.get(device_code)
            if grant is None:
                raise OAuthError(400, "invalid_grant", "Invalid device code")
            if now >= grant.expires_at:
                del self._device_grants[device_code]
                raise OAuthError(400, "expired_token", "Device code expired")
            polled_too_soon = grant.last_poll_at is not None and now - grant.last_poll_at < grant.interval
            grant.last_poll_at = now
            if polled_too_soon:
                grant.interval += SLOW_DOWN_STEP
                raise OAuthError(400, "slow_down", f"Polling too fast; wait {grant.interval} s between requests")
            login = grant.approved_login or auto_approve_login
            if login is None:
                raise OAuthError(400, "authorization_pending", "Authorization pending")
            del self._device_grants[device_code]
            return login, self._grant_access(self._open_session(login))


class OAuthServer:
    """The HTTP side of /auth/oauth: client authentication and the two endpoints."""

    def __init__(self, client_id: str, client_secret: str, tokens: TokenStore):
        self._client_id = client_id
        self._client_secret = client_secret
        self.tokens = tokens
        self.device_interval: float = 5
        self.auto_approve_login: str | None = None

    def handle(
        self, method: str, endpoint: str, params: Mapping[str, str], authorization: str
    ) -> tuple[Reply, str | None]:
        """(answer, login the request acted for). `endpoint` is the path below /auth/oauth."""
        try:
            if endpoint not in ("/token", "/device"):
                raise OAuthError(404, "not_found", f"no endpoint /auth/oauth{endpoint}")
            if method != "POST":
                raise OAuthError(405, "invalid_request", f"/auth/oauth{endpoint} takes POST, not {method}")
            self._authenticate_client(authorization)
            if endpoint == "/device":
                return self._device(params), None
            login, answer = self._token(params)
            return Reply(200, answer, content_type=OAUTH_CONTENT_TYPE), login
        except OAuthError as error:
            return error.reply(), None

    def _authenticate_client(self, authorization: str) -> None:
        scheme, _, encoded = authorization.partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            client_id = secret = ""
        if scheme.lower() != "basic" or (client_id, secret) != (self._client_id, self._client_secret):
            raise OAuthError(401, "invalid_client", "Bad client credentials")

    def _device(self, params: Mapping[str, str]) -> Reply:
        if params.get("client_id") != self._client_id:
            raise OAuthError(400, "invalid_request", "client_id parameter missing or not the authenticated client")
        grant = self.tokens.start_device_flow(self.device_interval)
        return Reply(
            200,
            {
                "device_code": grant.device_code,
                "user_code": grant.user_code,
                "verification_uri": VERIFICATION_URI,
                "verification_uri_complete": f"{VERIFICATION_URI}?code={grant.user_code}",
                "expires_in": DEVICE_CODE_LIFETIME,
                "interval": self.device_interval,
            },
            content_type=OAUTH_CONTENT_TYPE,
        )

    def _token(self, params: Mapping[str, str]) -> tuple[str | None, dict]:
        grant_type = params.get("grant_type")
        if grant_type == "refresh_token":
            if not params.get("refresh_token"):
                raise OAuthError(400, "invalid_request", "refresh_token parameter missing")
            return self.tokens.refresh(params["refresh_token"])
        if grant_type == DEVICE_CODE_GRANT:
            if not params.get("device_code"):
                raise OAuthError(400, "invalid_request", "device_code parameter missing")
            return self.tokens.poll_device(params["device_code"], self.auto_approve_login)
        if grant_type == CLIENT_CREDENTIALS_GRANT:
            return None, self.tokens.application_token()
        raise OAuthError(400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported here")
