"""structlog set-up: JSON in production, key=value on a terminal, and a processor
that redacts secrets from every event before any renderer sees them.

Redaction works three ways: by key (a field named like a secret is blanked whatever
its value), by shape (Bearer/Basic credentials, token=… parameters, Telegram bot
paths, JWTs, Fernet blobs in free text) and by value (the tokens this process has
handled and the secret settings are replaced wherever they turn up, even bare). The
secret settings come from the Settings object the process started with
(`redact_settings`, called by the CLI and by `build_definitions`), never from the
environment.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from stock_pipeline.foundation.settings import Settings

REDACTED = "[REDACTED]"
# Shorter values are not matched literally: redacting every "demo" would mangle logs.
_MIN_LITERAL_SECRET = 8
_MAX_REMEMBERED = 512

# Keys whose values are secrets wherever they appear in an event (dicts included, e.g. headers).
_SECRET_KEYS = re.compile(
    r"(token|secret|password|passwd|authorization|api[_-]?key|encryption[_-]?key|device_code|cookie|credentials?)$",
    re.IGNORECASE,
)
_SECRET_NAME = r"(?:(?:access|refresh|id|bot)[_ ])?token|device_code|client_secret|password|api_key"
# Secrets embedded in free text.
_SECRET_PATTERNS = [
    # Authorization header values.
    (re.compile(r"(?i)\b(bearer\s+)[\w.~+/=-]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(basic\s+)[A-Za-z0-9+/]{8,}=*"), r"\1" + REDACTED),  # base64(client_id:secret)
    # refresh_token=… in query strings and forms, "refresh_token": "…" in JSON and reprs,
    # "Invalid refresh token: …" in Allegro's error descriptions.
    (
        re.compile(rf"(?i)(?<![A-Za-z0-9_])((?:{_SECRET_NAME})[\"']?\s*[=:]\s*[\"']?)[^&\s\"',;)}}\]]+"),
        r"\1" + REDACTED,
    ),
    # Telegram bot tokens: in /bot<token>/method paths, and bare (<bot id>:<35 characters>).
    (re.compile(r"(/bot)\d+:[^/\s?#\"']+"), r"\1" + REDACTED),
    (re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}"), REDACTED),
    # JWTs (Allegro's access and refresh tokens are JWTs) and Fernet tokens (tokens at rest).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"), REDACTED),
    (re.compile(r"(?:fernet:)?gAAAAA[A-Za-z0-9_-]{20,}=*"), REDACTED),
]

_remembered: tuple[str, ...] = ()
_remembered_lock = threading.Lock()
_setting_secrets: tuple[str, ...] = ()
_configuration: dict | None = None


def redact_settings(settings: "Settings") -> None:
    """Makes the secrets of these settings (client secret, bot token, encryption keys, URL
    passwords) redacted wherever they appear; a process that loads other settings later
    (the demo) adds theirs."""
    global _setting_secrets
    with _remembered_lock:
        _setting_secrets = tuple(dict.fromkeys(_setting_secrets + settings.secret_values()))


def remember_secrets(*values: str | None) -> None:
    """Makes these values (tokens just read or issued) redacted wherever they appear later."""
    global _remembered
    fresh = [v for v in values if v and len(v) >= _MIN_LITERAL_SECRET and v not in _remembered]
    if fresh:
        with _remembered_lock:
            _remembered = (tuple(dict.fromkeys(_remembered + tuple(fresh))))[-_MAX_REMEMBERED:]


@functools.lru_cache(maxsize=8)
def _literal_secrets_of(settings_values: tuple[str, ...], remembered: tuple[str, ...]) -> tuple[str, ...]:
    secrets = [s for s in settings_values if len(s) >= _MIN_LITERAL_SECRET] + list(remembered)
    return tuple(sorted(set(secrets), key=len, reverse=True))  # a secret containing another goes first


def _literal_secrets() -> tuple[str, ...]:
    # Called for every string of every log event: rebuilt only when a secret changes.
    return _literal_secrets_of(_setting_secrets, _remembered)


def redact_text(text: str) -> str:
    for secret in _literal_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key, value):
    if isinstance(key, str) and _SECRET_KEYS.search(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: _redact_value(k, v) for k, v in value.items()}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return [value[0], _redact_value(value[0], value[1])]  # a (name, value) pair, as headers often come
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact_value("", v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    # Anything else (exceptions, requests, URLs…) is rendered by its repr: redact that.
    shown = repr(value)
    redacted = redact_text(shown)
    return value if redacted == shown else redacted


def redact_secrets(_logger, _method_name, event_dict):
    """structlog processor: never let a token, Authorization header or secret through."""
    return {key: _redact_value(key, value) for key, value in event_dict.items()}


class RedactingFilter(logging.Filter):
    """The same redaction for standard-library log records (httpx logs every URL it calls)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


# Libraries that log request URLs or headers through the standard logging module.
_REDACTED_STDLIB_LOGGERS = ("httpx", "httpcore", "urllib3")


# structlog's method names → logging levels (the terminal filter and the run-log bridge).
METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


# Processors that also get each event once it is redacted. The Dagster run-log bridge
# (`defs/run_log.py`) adds itself when imported: this layer knows nothing of Dagster.
_redacted_event_sinks: list = []


def add_redacted_event_sink(processor) -> None:
    """`processor(logger, method_name, event_dict)` sees every event after redaction."""
    if processor not in _redacted_event_sinks:
        _redacted_event_sinks.append(processor)


def to_redacted_event_sinks(logger, method_name: str, event_dict: dict) -> dict:
    for processor in list(_redacted_event_sinks):
        event_dict = processor(logger, method_name, event_dict)
    return event_dict


def _below(terminal_level: int):
    def drop_below_terminal_level(logger, method_name: str, event_dict: dict) -> dict:
        if METHOD_LEVELS.get(method_name, logging.INFO) < terminal_level:
            raise structlog.DropEvent
        return event_dict

    return drop_below_terminal_level


def configure_logging(json: bool | None = None, level: int = logging.INFO, terminal_level: int = logging.INFO) -> None:
    """JSON lines when not on a terminal (production, Dagster daemon), key=value otherwise;
    each event, once redacted, also goes to the registered sinks (inside ``run_log``: the
    Dagster run's event log).
    ``terminal_level`` only quiets stderr: a CLI sync prints its summary and problems, while
    the run's event log still gets every event from ``level`` up."""
    global _configuration
    if json is None:
        json = not sys.stderr.isatty()
    _configuration = {"json": json, "level": level, "terminal_level": terminal_level}
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            to_redacted_event_sinks,  # after redaction: no sink ever sees a secret
            _below(terminal_level),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    for name in _REDACTED_STDLIB_LOGGERS:
        stdlib_logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in stdlib_logger.filters):
            stdlib_logger.addFilter(RedactingFilter())


def logging_configuration() -> dict | None:
    """The arguments of this process's last `configure_logging` (None: never configured), so
    that a worker process the CLI starts logs as the CLI does (a quiet terminal stays quiet)."""
    return dict(_configuration) if _configuration is not None else None


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
