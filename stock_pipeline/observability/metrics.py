"""Sync metrics kept in Redis, so that every process (Dagster run workers, the CLI) adds
to the same numbers, and served to Prometheus as text by a small exporter (``serve``).

Layout under ``prefix`` (default ``allegro_sync_metrics``), readable in redis-cli:

* ``{prefix}:{counter}`` and ``{prefix}:{gauge}``: one hash per metric, one field per
  label set; the field is the JSON list of label values in the metric's label order,
  e.g. ``HGETALL allegro_sync_metrics:runs_total`` → ``["shop-1","success"]`` → ``12``;
* ``{prefix}:{histogram}:{label values JSON}``: one hash per label set holding the
  cumulative bucket counts (fields ``0.05`` … ``10.0``), ``count`` and ``sum``;
  ``{prefix}:{histogram}:series`` is the set of label sets seen, so reading needs no SCAN.

Nothing expires: Prometheus expects counters to only go up, and a counter that vanished
under a TTL would read as a reset. Every change of one call is one MULTI/EXEC, so a
scrape never sees half a run. Exposed names carry the ``allegro_sync_`` namespace.

API response times are the exception to one write per call: a full sync makes thousands
of calls, and a MULTI/EXEC of ten commands for each cost the sync's interpreter (the
account runs of a CLI sync share it) and Redis more than the calls' own bookkeeping. They
are added up in the process and written together, at most every
``API_RESPONSES_FLUSH_SECONDS``, with the next other record (a step's calls, a run's end:
those of a run are in Redis when it ends), or on ``flush()``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import redis
import structlog
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "DEFAULT_PREFIX",
    "API_RESPONSE_BUCKETS",
    "SyncMetrics",
    "NullMetrics",
    "build_metrics",
    "render_prometheus",
    "serve",
    "MetricsServer",
]

log = structlog.get_logger(__name__)

DEFAULT_PREFIX = "allegro_sync_metrics"
NAMESPACE = "allegro_sync"
API_RESPONSE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# A metrics write is a few bytes: waiting longer than this for Redis only delays the sync.
REDIS_SOCKET_TIMEOUT_SECONDS = 0.5
# After a failed write, skip recording for this long: with Redis unreachable every API
# call would otherwise wait for a timeout and log the same warning again.
PAUSE_AFTER_ERROR_SECONDS = 30.0
API_RESPONSES_FLUSH_SECONDS = 1.0


@dataclass(frozen=True)
class _Metric:
    name: str  # without the namespace; also the Redis key below the prefix
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    labels: tuple[str, ...]


_PROCESSED = _Metric(
    "processed_offers_total", "counter", "Allegro offers read and compared with the warehouse.", ("account",)
)
_CHANGED = _Metric(
    "changed_offers_total", "counter", "Offers whose Allegro stock differed from the warehouse.", ("account",)
)
_UPDATED = _Metric("updated_offers_total", "counter", "Offers whose stock was written to Allegro.", ("account",))
_ERRORS = _Metric("errors_total", "counter", "Failed offer writes plus failed runs.", ("account",))
_API_CALLS = _Metric("api_calls_total", "counter", "Allegro API calls made by sync runs.", ("account",))
_RUNS = _Metric("runs_total", "counter", "Sync runs by result.", ("account", "result"))
_LAST_RUN_AT = _Metric(
    "last_run_timestamp_seconds", "gauge", "Unix time the last sync run ended, whatever its result.", ("account",)
)
_LAST_SUCCESS_AT = _Metric(
    "last_success_timestamp_seconds",
    "gauge",
    "Unix time the last successful sync run ended (what freshness alerts should watch).",
    ("account",),
)
_LAST_RUN_DURATION = _Metric("last_run_duration_seconds", "gauge", "Duration of the last sync run.", ("account",))
_PENDING = _Metric(
    "pending_writes", "gauge", "Writes still unconfirmed by Allegro when the last run ended.", ("account",)
)
_LIVE_LAG = _Metric(
    "live_lag_seconds",
    "gauge",
    "Seconds from the live sensor seeing a warehouse change to Allegro confirming the last live run's writes.",
    ("account",),
)
_LIVE_WRITE_AT = _Metric(
    "live_last_write_timestamp_seconds", "gauge", "Unix time the last live run's writes were confirmed.", ("account",)
)
_API_RESPONSE = _Metric("api_response_time_seconds", "histogram", "Allegro API response time by route.", ("route",))

_METRICS = (
    _PROCESSED,
    _CHANGED,
    _UPDATED,
    _ERRORS,
    _API_CALLS,
    _RUNS,
    _LAST_RUN_AT,
    _LAST_SUCCESS_AT,
    _LAST_RUN_DURATION,
    _PENDING,
    _LIVE_LAG,
    _LIVE_WRITE_AT,
    _API_RESPONSE,
)
_BUCKET_FIELDS = tuple(floatToGoString(bound) for bound in API_RESPONSE_BUCKETS)


def _field(*label_values: str) -> str:
    # JSON keeps any account or route name unambiguous, whatever characters it has.
    return json.dumps(label_values, ensure_ascii=False, separators=(",", ":"))


def _text(value: str | bytes) -> str:
    # Callers may hand render_prometheus a client with or without decode_responses.
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class _Observed:
    buckets: list[int]  # observations in each bucket of API_RESPONSE_BUCKETS (above the last: none)
    count: int = 0
    total: float = 0.0


class SyncMetrics:
    """Records sync metrics in Redis; never raises on a Redis error (it logs a warning)."""

    def __init__(self, redis_client: redis.Redis, prefix: str = DEFAULT_PREFIX):
        self._redis = redis_client
        self._prefix = prefix
        self._paused_until = 0.0
        # Response times not yet in Redis: per route field, the observations per bucket
        # (not cumulative), their count and sum.
        self._responses: dict[str, _Observed] = {}
        self._responses_lock = threading.Lock()
        self._responses_written_at = time.monotonic()

    def record_listing(self, account: str, *, offers: int, api_calls: int) -> None:
        field = _field(account)

        def write(pipe: redis.client.Pipeline) -> None:
            pipe.hincrby(self._key(_PROCESSED), field, offers)
            pipe.hincrby(self._key(_API_CALLS), field, api_calls)

        self._write("record_listing", write, account=account)

    def record_api_calls(self, account: str, api_calls: int) -> None:
        """Calls made by a step, counted by the step that made them, whatever the run's result."""
        if api_calls:
            self._write(
                "record_api_calls",
                lambda pipe: pipe.hincrby(self._key(_API_CALLS), _field(account), api_calls),
                account=account,
            )

    def record_run(
        self,
        account: str,
        *,
        changed: int = 0,
        written: int = 0,
        failed: int = 0,
        pending: int = 0,
        api_calls: int = 0,
        duration_seconds: float = 0.0,
        success: bool,
    ) -> None:
        """The end of a run: its writes, and whether it succeeded (a failed run adds one error).
        Called once per run, by the job's hooks (stock_pipeline/defs/run_outcome.py)."""
        field = _field(account)
        counters = [
            (_CHANGED, field, changed),
            (_UPDATED, field, written),
            (_ERRORS, field, failed + (0 if success else 1)),
            (_API_CALLS, field, api_calls),
            # Both results are written, the other one with 0, so that both series
            # exist from the first run and increase() sees the first failure.
            (_RUNS, _field(account, "success"), int(success)),
            (_RUNS, _field(account, "failure"), int(not success)),
        ]
        now = time.time()
        gauges = [(_LAST_RUN_AT, now), (_LAST_RUN_DURATION, duration_seconds), (_PENDING, pending)]
        if success:
            gauges.append((_LAST_SUCCESS_AT, now))

        def write(pipe: redis.client.Pipeline) -> None:
            for metric, label_field, amount in counters:
                pipe.hincrby(self._key(metric), label_field, amount)
            for metric, value in gauges:
                pipe.hset(self._key(metric), field, repr(float(value)))

        self._write("record_run", write, account=account)

    def record_live_lag(self, account: str, lag_seconds: float | None) -> None:
        """A live run's writes confirmed, `lag_seconds` after its change was first seen."""
        field = _field(account)

        def write(pipe: redis.client.Pipeline) -> None:
            pipe.hset(self._key(_LIVE_WRITE_AT), field, repr(time.time()))
            if lag_seconds is not None:
                pipe.hset(self._key(_LIVE_LAG), field, repr(float(lag_seconds)))

        self._write("record_live_lag", write, account=account)

    def observe_api_response(self, route: str, seconds: float) -> None:
        """``route`` should be a template (``GET /sale/offers/{id}``), not a raw URL:
        each distinct value is a series kept forever. Kept in the process until the next
        write (see the module's note)."""
        field = _field(route)
        with self._responses_lock:
            observed = self._responses.get(field)
            if observed is None:
                observed = self._responses[field] = _Observed([0] * len(API_RESPONSE_BUCKETS))
            for i, bound in enumerate(API_RESPONSE_BUCKETS):
                if seconds <= bound:
                    observed.buckets[i] += 1
                    break
            observed.count += 1
            observed.total += seconds
            due = time.monotonic() - self._responses_written_at >= API_RESPONSES_FLUSH_SECONDS
        if due:
            self._write("observe_api_response", lambda pipe: None, route=route)

    def flush(self) -> None:
        """Writes the response times kept in the process."""
        self._write("observe_api_response", lambda pipe: None)

    def _take_responses(self) -> dict[str, _Observed]:
        with self._responses_lock:
            taken, self._responses = self._responses, {}
            self._responses_written_at = time.monotonic()
        return taken

    def _write_responses(self, pipe: redis.client.Pipeline, responses: dict[str, _Observed]) -> None:
        for field, observed in responses.items():
            series_key = f"{self._key(_API_RESPONSE)}:{field}"
            pipe.sadd(f"{self._key(_API_RESPONSE)}:series", field)
            # Stored cumulative, as exposed: each bucket counts observations <= its bound.
            cumulative = 0
            for bucket_field, observations in zip(_BUCKET_FIELDS, observed.buckets):
                cumulative += observations
                if cumulative:
                    pipe.hincrby(series_key, bucket_field, cumulative)
            pipe.hincrby(series_key, "count", observed.count)
            pipe.hincrbyfloat(series_key, "sum", observed.total)

    def _key(self, metric: _Metric) -> str:
        return f"{self._prefix}:{metric.name}"

    def _write(self, what: str, write: Callable[[redis.client.Pipeline], None], **context) -> None:
        """`write`'s commands, and the response times kept so far, in one MULTI/EXEC."""
        responses = self._take_responses()  # while paused they are dropped, like every other record
        if time.monotonic() < self._paused_until:
            return
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                write(pipe)
                self._write_responses(pipe, responses)
                if not pipe.command_stack:
                    return
                pipe.execute()
        except redis.RedisError as exc:
            self._paused_until = time.monotonic() + PAUSE_AFTER_ERROR_SECONDS
            log.warning(
                "metrics_not_recorded",
                metric_call=what,
                error=f"{type(exc).__name__}: {exc}",
                paused_seconds=PAUSE_AFTER_ERROR_SECONDS,
                **context,
            )


class NullMetrics:
    """Stands in for SyncMetrics when no Redis is configured."""

    def record_listing(self, account: str, *, offers: int, api_calls: int) -> None:
        pass

    def record_api_calls(self, account: str, api_calls: int) -> None:
        pass

    def record_run(self, account: str, *, success: bool, **counts) -> None:
        pass

    def record_live_lag(self, account: str, lag_seconds: float | None) -> None:
        pass

    def observe_api_response(self, route: str, seconds: float) -> None:
        pass


def _redis_client(redis_url: str) -> redis.Redis:
    # One immediate retry on a dropped connection covers a pooled connection that a
    # restarted Redis closed. Timeouts are not retried: the MULTI/EXEC may have run,
    # and running it again would count a run twice.
    return redis.Redis.from_url(
        redis_url,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(redis.ConnectionError,)),
    )


def build_metrics(redis_url: str | None, prefix: str = DEFAULT_PREFIX) -> SyncMetrics | NullMetrics:
    """SyncMetrics on ``redis_url``, or NullMetrics when it is unset. Nothing connects here."""
    if not redis_url:
        return NullMetrics()
    return SyncMetrics(_redis_client(redis_url), prefix)


class _RedisCollector:
    """prometheus_client collector reading every metric back from Redis on each scrape."""

    def __init__(self, redis_client: redis.Redis, prefix: str):
        self._redis = redis_client
        self._prefix = prefix

    def collect(self):
        scalar_metrics = [m for m in _METRICS if m.kind != "histogram"]
        with self._redis.pipeline(transaction=True) as pipe:
            for metric in scalar_metrics:
                pipe.hgetall(f"{self._prefix}:{metric.name}")
            pipe.smembers(f"{self._prefix}:{_API_RESPONSE.name}:series")
            *scalar_values, routes = pipe.execute()
        for metric, values in zip(scalar_metrics, scalar_values):
            family_type = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
            family = family_type(f"{NAMESPACE}_{metric.name}", metric.help, labels=metric.labels)
            for label_values, value in sorted((json.loads(_text(f)), float(v)) for f, v in values.items()):
                family.add_metric(label_values, value)
            yield family
        yield self._histogram(_API_RESPONSE, sorted(_text(r) for r in routes))

    def _histogram(self, metric: _Metric, fields: list[str]) -> HistogramMetricFamily:
        with self._redis.pipeline(transaction=True) as pipe:
            for field in fields:
                pipe.hgetall(f"{self._prefix}:{metric.name}:{field}")
            series = pipe.execute()
        family = HistogramMetricFamily(f"{NAMESPACE}_{metric.name}", metric.help, labels=metric.labels)
        for field, raw in zip(fields, series):
            stored = {_text(k): _text(v) for k, v in raw.items()}
            count = int(stored.get("count", 0))
            buckets = [(le, int(stored.get(le, 0))) for le in _BUCKET_FIELDS] + [("+Inf", count)]
            family.add_metric(json.loads(field), buckets, float(stored.get("sum", 0)))
        return family


def _registry(redis_client: redis.Redis, prefix: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_RedisCollector(redis_client, prefix))
    return registry


def render_prometheus(redis_client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> str:
    """Every metric under ``prefix`` in the Prometheus text exposition format (0.0.4)."""
    return generate_latest(_registry(redis_client, prefix)).decode()


@dataclass
class MetricsServer:
    """A running exporter; ``port`` is the bound one (useful after asking for port 0)."""

    host: str
    port: int
    _httpd: WSGIServer
    _thread: threading.Thread
    _redis: redis.Redis

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._redis.close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()


def serve(redis_url: str, host: str = "127.0.0.1", port: int = 9464, prefix: str = DEFAULT_PREFIX) -> MetricsServer:
    """Serve ``GET /metrics`` on a daemon thread, reading Redis on each scrape.

    A scrape while Redis is unreachable answers HTTP 500, so Prometheus records the
    target as down rather than storing empty numbers.
    """
    client = _redis_client(redis_url)
    httpd, thread = start_http_server(port, addr=host, registry=_registry(client, prefix))
    return MetricsServer(host=host, port=httpd.server_port, _httpd=httpd, _thread=thread, _redis=client)
