"""OAuth against Allegro's authorisation server: refresh_token grant and device flow.

A refresh token is single-use and using it kills the old access token too, so this
module never retries a refresh that may have reached the server: a timeout after
sending could have burnt the token, and a replay would get invalid_grant anyway.
Only failures before the request was sent (connect errors) are retried.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from stock_pipeline import USER_AGENT
from stock_pipeline.allegro.http import error_detail, json_body
from stock_pipeline.foundation.errors import AllegroTokenError, InvalidClientError, InvalidGrantError
from stock_pipeline.foundation.logs import redact_text
from stock_pipeline.foundation.tokens import TokenPair

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True)
class DeviceAuthorisation:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int

    def __repr__(self) -> str:
        return f"DeviceAuthorisation(user_code={self.user_code!r}, uri={self.verification_uri!r})"


class AllegroAuth:
    def __init__(
        self,
        auth_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
        connect_retries: int = 3,
    ):
        self._auth_url = auth_url.rstrip("/")
        self._client_id = client_id
        self._http = http or httpx.Client(timeout=timeout)
        self._basic = httpx.BasicAuth(client_id, client_secret)
        self._connect_retries = connect_retries

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, params: dict[str, str]) -> httpx.Response:
        """Retries only a refused connection (nothing was sent): 0.5, 1, 2, … seconds apart."""
        retrying = Retrying(
            stop=stop_after_attempt(self._connect_retries + 1),
            wait=wait_exponential(multiplier=0.5),
            retry=retry_if_exception_type(httpx.ConnectError),
            retry_error_callback=self._unreachable,
        )
        return retrying(self._post_once, path, params)

    def _unreachable(self, state: RetryCallState) -> None:
        raise AllegroTokenError(
            f"cannot reach Allegro's authorisation server at {self._auth_url}: {state.outcome.exception()}"
        ) from None

    def _post_once(self, path: str, params: dict[str, str]) -> httpx.Response:
        try:
            # In the form body, not the query string: URLs end up in proxy and access logs.
            return self._http.post(
                f"{self._auth_url}/{path}",
                data=params,
                auth=self._basic,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
        except httpx.ConnectError:
            raise  # retried by _post
        except httpx.HTTPError as exc:
            raise AllegroTokenError(
                f"call to {self._auth_url}/{path} failed after sending ({type(exc).__name__}); "
                "if it was a refresh, the refresh token may be used up"
            ) from None

    @staticmethod
    def _token_pair(response: httpx.Response) -> TokenPair:
        body = json_body(response)
        try:
            expires_in = int(body.get("expires_in", 43199))
            return TokenPair(
                access_token=body["access_token"],
                refresh_token=body["refresh_token"],
                expires_at=datetime.now(timezone.utc) + timedelta(seconds=expires_in),
            )
        except KeyError as exc:
            raise AllegroTokenError(f"token answer from Allegro lacks {exc.args[0]}") from None

    def refresh(self, refresh_token: str) -> TokenPair:
        response = self._post("token", {"grant_type": "refresh_token", "refresh_token": refresh_token})
        if response.status_code == 200:
            return self._token_pair(response)
        detail = error_detail(response)
        if response.status_code in (400, 401) and "invalid_grant" in detail:
            # Allegro's description echoes the token itself: keep only the error code.
            raise InvalidGrantError("refresh token rejected by Allegro (invalid_grant)")
        raise AllegroTokenError(f"token refresh failed: HTTP {response.status_code} {redact_text(detail)}")

    def check_client(self) -> int:
        """Proves Allegro accepts the client_id and secret, with the client_credentials
        grant: it asks for an application token and drops it, so no seller's single-use
        refresh token is spent. Returns the lifetime Allegro gave that token (seconds)."""
        response = self._post("token", {"grant_type": "client_credentials"})
        if response.status_code == 200:
            return int(json_body(response).get("expires_in", 0))
        detail = redact_text(error_detail(response))
        if response.status_code == 401 or "invalid_client" in detail:
            raise InvalidClientError(f"Allegro rejected the client credentials: HTTP {response.status_code} {detail}")
        raise AllegroTokenError(f"client_credentials grant failed: HTTP {response.status_code} {detail}")

    def start_device_flow(self) -> DeviceAuthorisation:
        response = self._post("device", {"client_id": self._client_id})
        if response.status_code != 200:
            raise AllegroTokenError(
                f"device authorisation failed: HTTP {response.status_code} {redact_text(error_detail(response))}"
            )
        body = json_body(response)
        return DeviceAuthorisation(
            device_code=body["device_code"],
            user_code=body["user_code"],
            verification_uri=body.get("verification_uri", ""),
            verification_uri_complete=body.get("verification_uri_complete", body.get("verification_uri", "")),
            expires_in=int(body.get("expires_in", 3600)),
            interval=int(body.get("interval", 5)),
        )

    def wait_for_device_token(
        self,
        device: DeviceAuthorisation,
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_pending: Callable[[], None] | None = None,
    ) -> TokenPair:
        """Polls until the seller confirms; honours `slow_down` by widening the interval (RFC 8628)."""
        interval = max(0, device.interval)
        deadline = time.monotonic() + device.expires_in
        while time.monotonic() < deadline:
            response = self._post("token", {"grant_type": DEVICE_CODE_GRANT, "device_code": device.device_code})
            if response.status_code == 200:
                return self._token_pair(response)
            detail = error_detail(response)
            if "authorization_pending" in detail:
                if on_pending:
                    on_pending()
            elif "slow_down" in detail:
                interval += 5
            elif "access_denied" in detail:
                raise InvalidGrantError("the seller refused the authorisation")
            else:
                raise InvalidGrantError(
                    f"device authorisation failed: HTTP {response.status_code} {redact_text(detail)}"
                )
            sleep(interval)
        raise AllegroTokenError("device authorisation expired before the seller confirmed it")
