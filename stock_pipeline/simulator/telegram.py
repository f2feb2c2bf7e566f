"""FakeTelegram: the part of the Telegram Bot API the pipeline uses (sendMessage for
alerts, getMe for `stock-pipeline doctor`), on loopback, with Telegram's checks and
error bodies."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from stock_pipeline.simulator.loopback import JsonRequestHandler, LoopbackServer, Reply
from stock_pipeline.simulator.telegram_html import TelegramHtmlError, html_to_text, utf16_length

MAX_MESSAGE_LENGTH = 4096
PARSE_MODES = ("html", "markdownv2", "markdown")  # Telegram ignores their case
BOT_USER = {"id": 1000000001, "is_bot": True, "first_name": "Stock pipeline (fake)", "username": "fake_stock_bot"}
_METHOD_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")


def _failure(code: int, description: str, **extra: Any) -> Reply:
    return Reply(code, {"ok": False, "error_code": code, "description": description, **extra})


def _bad_request(description: str) -> Reply:
    return _failure(400, f"Bad Request: {description}")


def _chat_id(value: Any) -> int | str:
    """Telegram takes a numeric id (sent as number or string) or an @channel name."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


class _TelegramHandler(JsonRequestHandler):
    def handle_request(self) -> None:
        url = urlsplit(self.path)
        params: dict[str, Any] = dict(parse_qsl(url.query))
        body = self.read_body()
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if content_type == "application/json" and body:
                params.update(json.loads(body))
            elif content_type == "application/x-www-form-urlencoded":
                params.update(parse_qsl(body.decode("utf-8")))
        except (ValueError, TypeError):
            self.send_reply(_bad_request("can't parse request body"))
            return
        self.send_reply(self.server.app.call(self.command, url.path, params))


class FakeTelegram(LoopbackServer):
    handler_class = _TelegramHandler

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self._lock = threading.Lock()
        self._messages: list[dict] = []
        self._failures_left = 0
        self._retry_after = 0
        self._next_message_id = 1
        # None: any bot token is accepted. A set: only these, others get Telegram's 401.
        self.accepted_tokens: set[str] | None = None

    @property
    def api_url(self) -> str:
        return self.base_url

    @property
    def messages(self) -> list[dict]:
        """Messages sent so far: token, chat_id, text (as sent), parse_mode, message_id."""
        with self._lock:
            return list(self._messages)

    def fail_next(self, count: int, retry_after: int = 2) -> None:
        """The next `count` calls answer 429 Too Many Requests with this retry_after."""
        with self._lock:
            self._failures_left, self._retry_after = count, retry_after

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()
            self._failures_left = 0

    def call(self, http_method: str, path: str, params: dict[str, Any]) -> Reply:
        found = _METHOD_PATH.match(path)
        if found is None or found["method"].lower() not in ("sendmessage", "getme"):
            return _failure(404, "Not Found")
        if http_method not in ("GET", "POST"):
            return _failure(405, "Method Not Allowed")
        with self._lock:
            if self.accepted_tokens is not None and found["token"] not in self.accepted_tokens:
                return _failure(401, "Unauthorized")
            if self._failures_left > 0:
                self._failures_left -= 1
                return _failure(
                    429,
                    f"Too Many Requests: retry after {self._retry_after}",
                    parameters={"retry_after": self._retry_after},
                )
        if found["method"].lower() == "getme":
            return Reply(
                200,
                {
                    "ok": True,
                    "result": {
                        **BOT_USER,
                        "can_join_groups": True,
                        "can_read_all_group_messages": False,
                        "supports_inline_queries": False,
                    },
                },
            )
        return self._send_message(found["token"], params)

    def _send_message(self, token: str, params: dict[str, Any]) -> Reply:
        chat_id, text, parse_mode = params.get("chat_id"), params.get("text"), params.get("parse_mode") or None
        if chat_id in (None, ""):
            return _bad_request("chat_id is empty")
        if not isinstance(text, str) or not text.strip():
            return _bad_request("message text is empty")
        if parse_mode is not None and str(parse_mode).lower() not in PARSE_MODES:
            return _bad_request(f"unsupported parse_mode {parse_mode!r}")
        shown = text
        if parse_mode is not None and parse_mode.lower() == "html":
            try:
                shown = html_to_text(text)
            except TelegramHtmlError as problem:
                return _bad_request(f"can't parse entities: {problem}")
        if not shown.strip():
            return _bad_request("message text is empty")
        if utf16_length(shown) > MAX_MESSAGE_LENGTH:
            return _bad_request("message is too long")
        chat_id = _chat_id(chat_id)
        with self._lock:
            message_id = self._next_message_id
            self._next_message_id += 1
            self._messages.append(
                {"token": token, "chat_id": chat_id, "text": text, "parse_mode": parse_mode, "message_id": message_id}
            )
        chat_type = "private" if isinstance(chat_id, int) and chat_id > 0 else "channel"
        return Reply(
            200,
            {
                "ok": True,
                "result": {
                    "message_id": message_id,
                    "from": BOT_USER,
                    "date": int(time.time()),
                    "chat": {"id": chat_id, "type": chat_type},
                    "text": shown,
                },
            },
        )
