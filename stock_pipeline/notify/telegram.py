"""Telegram alerts: one message per failed run per account, HTML-escaped, within the
4 096-character limit, honouring Telegram's own 429 `retry_after`."""

from __future__ import annotations

import html
import time
from typing import Callable

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from stock_pipeline import USER_AGENT
from stock_pipeline.foundation.logs import get_logger

log = get_logger(__name__)

TELEGRAM_LIMIT = 4096
TAIL = "\n\n<i>Manual check required</i>"


class TelegramError(Exception):
    pass


class _RateLimited(Exception):
    """A 429 from Telegram inside `send`'s retries; the body holds `parameters.retry_after`."""

    def __init__(self, body: dict):
        super().__init__("HTTP 429")
        self.body = body

    @property
    def retry_after(self) -> float:
        return float((self.body.get("parameters") or {}).get("retry_after", 5))


def escape(value: object) -> str:
    return html.escape(str(value), quote=False)


def failure_message(
    *,
    account: str | None,
    run_id: str,
    job: str,
    error: str,
    run_url: str | None = None,
    offers: list[dict] | None = None,
    when: str | None = None,
) -> str:
    """The alert text (Telegram HTML). Offers beyond what fits are counted, not listed."""
    lines = [
        "🚨 <b>Allegro stock sync failed</b>",
        "",
        f"<b>Account:</b> {escape(account or 'all accounts')}",
        f"<b>Job:</b> <code>{escape(job)}</code>",
        f"<b>Run:</b> <code>{escape(run_id)}</code>",
    ]
    if when:
        lines.append(f"<b>Time:</b> {escape(when)}")
    if run_url:
        lines.append(f'<a href="{html.escape(run_url, quote=True)}">Open the run in Dagster</a>')
    lines += ["", f"<b>Error:</b> <pre>{escape(error[:1500])}</pre>"]
    text = "\n".join(lines)
    offers = offers or []
    if offers:
        text += "\n\n<b>Offers not written:</b>"
        text = _append_within_limit(
            text,
            [
                f"• <code>{escape(o.get('offer_id'))}</code> SKU <code>{escape(o.get('sku'))}</code>: "
                f"{escape(o.get('before'))} → {escape(o.get('after'))} ({escape(o.get('error') or '')[:200]})"
                for o in offers
            ],
            footer=TAIL,
        )
    return text + TAIL


def bad_rows_message(*, bad_rows: list[dict], problems: dict[str, int], run_url: str | None = None) -> str:
    """A warning that warehouse rows were excluded (they never become a 0 on Allegro)."""
    text = "\n".join(
        [
            "⚠️ <b>Warehouse stock feed has bad rows</b>",
            "",
            f"<b>Excluded:</b> {sum(problems.values())} row(s); their SKUs are left as they are on Allegro.",
            *(f"• {escape(problem)}: {count}" for problem, count in problems.items()),
        ]
    )
    if run_url:
        text += f'\n<a href="{html.escape(run_url, quote=True)}">Open the run in Dagster</a>'
    text += "\n\n<b>First rows:</b>"
    return _append_within_limit(
        text,
        [
            f"• SKU <code>{escape(r.get('sku'))}</code> stock <code>{escape(r.get('stock'))}</code>: "
            f"{escape(r.get('problem'))}"
            for r in bad_rows
        ],
        footer="",
    )


def _append_within_limit(text: str, lines: list[str], footer: str) -> str:
    """Adds lines while the message stays under Telegram's limit; the rest are counted."""
    for shown, line in enumerate(lines):
        remainder = f"\n… and {len(lines) - shown} more"
        if len(text) + len(line) + 1 + len(remainder) + len(footer) > TELEGRAM_LIMIT:
            return text + remainder
        text += "\n" + line
    return text


class TelegramNotifier:
    def __init__(
        self,
        api_url: str,
        bot_token: str,
        chat_id: str,
        *,
        timeout: float = 10.0,
        max_attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._bot_url = f"{api_url.rstrip('/')}/bot{bot_token}"  # holds the token: never logged or shown
        self._url = f"{self._bot_url}/sendMessage"
        self._chat_id = chat_id
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._sleep = sleep

    def send(self, text: str) -> None:
        if len(text) > TELEGRAM_LIMIT:
            text = text[: TELEGRAM_LIMIT - 1]
        payload = {"chat_id": self._chat_id, "text": text, "parse_mode": "HTML", "disable_web_page_preview": True}
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type((httpx.HTTPError, _RateLimited)),
            before_sleep=_before_sleep,
            retry_error_callback=_give_up,
            sleep=self._sleep,
        )
        retrying(self._send_once, payload)

    def _wait(self, state: RetryCallState) -> float:
        """Telegram's own retry_after after a 429; 2, 4, … seconds after a network error."""
        exc = state.outcome.exception()
        if not isinstance(exc, _RateLimited):
            return 2.0 * state.attempt_number
        if state.attempt_number >= self._max_attempts:
            return 0.0  # no attempt follows (tenacity asks before it stops): retry_after is not read
        return exc.retry_after

    def _send_once(self, payload: dict) -> None:
        response = httpx.post(self._url, json=payload, timeout=self._timeout, headers={"User-Agent": USER_AGENT})
        if response.status_code == 200:
            return
        body = _json(response)
        if response.status_code == 429:
            raise _RateLimited(body)
        raise TelegramError(_rejected(response.status_code, body))

    def bot_name(self) -> str:
        """getMe: proves the bot token is valid without sending anything; returns @username."""
        try:
            response = httpx.get(f"{self._bot_url}/getMe", timeout=self._timeout, headers={"User-Agent": USER_AGENT})
        except httpx.HTTPError as exc:
            raise TelegramError(f"cannot reach the Telegram API: {type(exc).__name__}") from None
        body = _json(response)
        if response.status_code != 200 or not body.get("ok"):
            raise TelegramError(
                f"Telegram rejected the bot token: HTTP {response.status_code} {body.get('description', '')}"
            )
        bot = body.get("result") or {}
        return f"@{bot['username']}" if bot.get("username") else str(bot.get("first_name", "?"))


def _before_sleep(state: RetryCallState) -> None:
    exc = state.outcome.exception()
    if isinstance(exc, _RateLimited):  # a network error is retried without a log line
        log.warning("telegram_rate_limited", retry_after=exc.retry_after)


def _give_up(state: RetryCallState) -> None:
    exc = state.outcome.exception()
    if isinstance(exc, _RateLimited):
        raise TelegramError(_rejected(429, exc.body))
    # httpx's message holds the URL, and so the bot token: only the error's type is reported.
    raise TelegramError(f"cannot reach the Telegram API: {type(exc).__name__}") from None


def _rejected(status: int, body: dict) -> str:
    # The bot token is part of the URL: only Telegram's description is reported.
    return f"Telegram rejected the message: HTTP {status} {body.get('description', '')}"


def _json(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
