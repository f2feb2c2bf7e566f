"""The pipeline's own log lines and progress in the Dagster run's event log.

Inside a run, structlog events go to the process's stderr (the compute logs) and
progress reports to whatever listens (the CLI's printer): a scheduled run's page in
the UI would show neither. While ``run_log(context.log)`` is active, the events of
this thread (of this context: a ``ContextVar``, so concurrent runs in threads never
cross) are also written to the run's event log, one short line each, at their own
level, after redaction (the forwarding processor runs after ``redact_secrets``), and
progress reports go there too, throttled to a line every ``progress_interval``
seconds per stage plus the last. Outside a bridge nothing changes.

An event with a ``msg`` field is shown as that text (``listing page 3/12 (offers
2000–2999)``); any other as ``event key=value …``.

Lines forwarded to the run also reach the run's Dagster loggers (the console logger
of an in-process run). The CLI already shows the structlog lines on stderr, so its
console logger leaves out records marked ``FORWARDED`` (``sync_runner``).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import structlog

from stock_pipeline.foundation.logs import (
    METHOD_LEVELS,
    add_redacted_event_sink,
    redact_secrets,
    redact_text,
    to_redacted_event_sinks,
)
from stock_pipeline.observability import progress

# Set on every record the bridge sends, so a logger that already shows our structlog
# output (the CLI's terminal) can leave it out.
FORWARDED = "stock_pipeline_forwarded"
PROGRESS_INTERVAL = 2.0
MAX_VALUE_CHARS = 200
MAX_LINE_CHARS = 1000

# Added by the processors for the renderers; the run's event log has its own.
_NOT_SHOWN = frozenset({"event", "msg", "timestamp", "level", "logger", "logger_name"})
_PROGRESS_LABELS = {"listing": "offers", "writes": "done"}


class RunLogBridge:
    """Forwards to one Dagster logger (``context.log``); made and entered by ``run_log``."""

    def __init__(
        self,
        dagster_logger: logging.Logger,
        progress_interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._logger = dagster_logger
        self._interval = progress_interval
        self._clock = clock
        self._last_progress: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._sending = threading.local()  # a line that logs while being sent is not sent again

    def send(self, level: int, line: str) -> None:
        if getattr(self._sending, "active", False):
            return
        self._sending.active = True
        try:
            self._logger.log(level, line, extra={FORWARDED: True})
        except Exception:  # noqa: BLE001 - a log line must never fail the sync
            pass
        finally:
            self._sending.active = False

    def progress(self, account: str, stage: str, done: int, total: int) -> None:
        now = self._clock()
        with self._lock:
            last = self._last_progress.get((account, stage))
            if last is not None and done < total and now - last < self._interval:
                return
            self._last_progress[(account, stage)] = now
        self.send(logging.INFO, f"{stage}: {done}/{total} {_PROGRESS_LABELS.get(stage, '')}".rstrip())


_current: contextvars.ContextVar[RunLogBridge | None] = contextvars.ContextVar("stock_pipeline_run_log", default=None)
_install_lock = threading.Lock()
_listening = False


@contextmanager
def run_log(dagster_logger: logging.Logger, *, progress_interval: float = PROGRESS_INTERVAL) -> Iterator[RunLogBridge]:
    """While active in this context, the pipeline's structlog events and progress reports
    also go to ``dagster_logger`` (an asset's ``context.log``): ``with run_log(context.log): …``."""
    _install()
    token = _current.set(RunLogBridge(dagster_logger, progress_interval))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def in_run_log(compute_fn: Callable) -> Callable:
    """The same as a decorator (below ``@asset``): runs the body inside ``run_log(context.log)``.
    The signature is kept (``functools.wraps``), so Dagster sees the same parameters."""

    def context_of(args, kwargs):
        return kwargs["context"] if "context" in kwargs else args[0]

    if inspect.isgeneratorfunction(compute_fn):  # a body that yields its outputs

        @functools.wraps(compute_fn)
        def generator(*args, **kwargs):
            with run_log(context_of(args, kwargs).log):
                yield from compute_fn(*args, **kwargs)

        return generator

    @functools.wraps(compute_fn)
    def wrapper(*args, **kwargs):
        with run_log(context_of(args, kwargs).log):
            return compute_fn(*args, **kwargs)

    return wrapper


def forward_to_run_log(_logger, method_name: str, event_dict: dict) -> dict:
    """structlog processor, placed after ``redact_secrets``: sends the (redacted) event to
    the active bridge, if any, and passes it on unchanged to the renderer."""
    bridge = _current.get()
    if bridge is not None:
        try:
            line = format_line(event_dict)
        except Exception:  # noqa: BLE001
            line = str(event_dict.get("event"))
        bridge.send(METHOD_LEVELS.get(method_name, logging.INFO), line)
    return event_dict


add_redacted_event_sink(forward_to_run_log)


def format_line(event_dict: dict) -> str:
    """One short line: the event's ``msg`` if it has one, else ``event key=value …``."""
    text = event_dict.get("msg")
    if text:
        line = text if isinstance(text, str) else redact_text(str(text))  # a str was redacted already
    else:
        parts = [str(event_dict.get("event", ""))]
        parts += [f"{key}={_show(key, value)}" for key, value in event_dict.items() if key not in _NOT_SHOWN]
        line = " ".join(parts)
    line = line.replace("\n", " ")
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"


def _show(key: str, value: Any) -> str:
    if key in ("exception", "exc_info") and isinstance(value, str):  # a formatted traceback: its last line
        value = value.strip().splitlines()[-1] if value.strip() else value
    if isinstance(value, float):
        text = f"{value:g}"
    elif value is None or isinstance(value, (str, bool, int, dict, list, tuple)):
        text = str(value)  # already redacted by redact_secrets
    else:
        # redact_secrets keeps an object whose repr showed no secret; its str() may differ.
        text = redact_text(str(value))
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    if not text or any(c.isspace() for c in text) or "=" in text:
        text = '"' + text.replace('"', "'") + '"'
    return text


def _forward_progress(account: str, stage: str, done: int, total: int) -> None:
    bridge = _current.get()
    if bridge is not None:
        bridge.progress(account, stage, done, total)


def _install() -> None:
    """Listens to progress (once per process) and makes sure the structlog chain forwards,
    after redaction, whatever configured it (``configure_logging`` already does)."""
    global _listening
    with _install_lock:
        if not _listening:
            progress.add_listener(_forward_progress)
            _listening = True
        ensure_forwarding()


def ensure_forwarding() -> None:
    processors = list(structlog.get_config()["processors"])
    sinks = to_redacted_event_sinks  # forward_to_run_log is one of them
    if sinks in processors and redact_secrets in processors[: processors.index(sinks)]:
        return
    processors = [p for p in processors if p is not sinks]
    if redact_secrets in processors:
        processors.insert(processors.index(redact_secrets) + 1, sinks)
    else:  # never a line to the run that was not redacted
        processors[-1:-1] = [redact_secrets, sinks]
    structlog.configure(processors=processors)
