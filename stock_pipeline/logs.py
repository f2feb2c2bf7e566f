"""structlog set-up: JSON in production, key=value on a terminal, and a processor
that redacts secrets from every event before any renderer sees them."""

from __future__ import annotations

import logging
import re
import sys

import structlog

REDACTED = "[REDACTED]"

# Keys whose values are secrets wherever they appear in an event.
_SECRET_KEYS = re.compile(
    r"(access_token|refresh_token|device_code|authorization|client_secret|password|secret|bot_token|api_key|token)$",
    re.IGNORECASE,
)
# Secrets embedded in free text: bearer tokens, Telegram bot paths, token=… query parameters.
_SECRET_PATTERNS = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=]+"), r"\1" + REDACTED),
    (re.compile(r"(/bot)[^/\s]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)((?:refresh_token|access_token|device_code|client_secret)[\"']?\s*[=:]\s*[\"']?)[^&\s\"',}]+"), r"\1" + REDACTED),
]


def redact_text(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str, value):
    if isinstance(key, str) and _SECRET_KEYS.search(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value("", v) for v in value)
    return value


def redact_secrets(_logger, _method_name, event_dict):
    """structlog processor: never let a token, Authorization header or secret through."""
    return {key: _redact_value(key, value) for key, value in event_dict.items()}


def configure_logging(json: bool | None = None, level: int = logging.INFO) -> None:
    """JSON lines when not on a terminal (production, Dagster daemon), key=value otherwise."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
