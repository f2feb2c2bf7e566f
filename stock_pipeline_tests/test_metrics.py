"""Sync metrics in a real Redis, read back as Prometheus text and over real HTTP."""

from __future__ import annotations

import httpx
import pytest
import redis as redis_lib
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from stock_pipeline.observability import metrics as metrics_module
from stock_pipeline.observability.metrics import NullMetrics, SyncMetrics, build_metrics, render_prometheus, serve
from stock_pipeline_tests.services import REDIS_URL

RUN = dict(changed=3, written=2, failed=1, pending=0, api_calls=5, duration_seconds=1.5)


@pytest.fixture
def prefix(client_id):
    """A key prefix of its own: conftest's client_id deletes every key containing it afterwards."""
    return f"test_metrics:{client_id}"


@pytest.fixture
def redis_client():
    # decode_responses=True here, while serve() reads bytes: rendering must handle both.
    client = redis_lib.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted label items): value} of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_accumulate_per_account_across_processes(redis_client, prefix):
    # Two clients and two SyncMetrics, as two Dagster run workers would have.
    first = SyncMetrics(redis_lib.Redis.from_url(REDIS_URL), prefix)
    second = SyncMetrics(redis_lib.Redis.from_url(REDIS_URL), prefix)
    first.record_listing("shop-a", offers=10, api_calls=0)
    first.record_run("shop-a", **RUN, success=True)
    second.record_listing("shop-a", offers=10, api_calls=0)
    second.record_run("shop-a", **{**RUN, "pending": 4, "duration_seconds": 2.5}, success=False)
    second.record_listing("shop-b", offers=10, api_calls=0)
    second.record_run("shop-b", **RUN, success=True)

    got = samples(render_prometheus(redis_client, prefix))

    a, b = (("account", "shop-a"),), (("account", "shop-b"),)
    assert got[("allegro_sync_processed_offers_total", a)] == 20
    assert got[("allegro_sync_changed_offers_total", a)] == 6
    assert got[("allegro_sync_updated_offers_total", a)] == 4
    assert got[("allegro_sync_api_calls_total", a)] == 10
    # One failed write per run, plus the failed run itself.
    assert got[("allegro_sync_errors_total", a)] == 3
    assert got[("allegro_sync_runs_total", a + (("result", "success"),))] == 1
    assert got[("allegro_sync_runs_total", a + (("result", "failure"),))] == 1
    # Gauges hold the latest run.
    assert got[("allegro_sync_pending_writes", a)] == 4
    assert got[("allegro_sync_last_run_duration_seconds", a)] == 2.5
    assert got[("allegro_sync_last_run_timestamp_seconds", a)] > 1_700_000_000

    assert got[("allegro_sync_processed_offers_total", b)] == 10
    assert got[("allegro_sync_errors_total", b)] == 1
    # The failure series exists at 0 from the first run on.
    assert got[("allegro_sync_runs_total", b + (("result", "failure"),))] == 0


def test_histogram_buckets_are_cumulative_with_sum_and_count(redis_client, prefix):
    metrics = SyncMetrics(redis_client, prefix)
    for seconds in (0.03, 0.3, 0.5, 3.0, 30.0):
        metrics.observe_api_response("GET /sale/offers", seconds)
    metrics.observe_api_response("PUT /sale/offer-quantity-change-commands/{id}", 0.2)
    metrics.flush()

    got = samples(render_prometheus(redis_client, prefix))

    name = "allegro_sync_api_response_time_seconds"
    route = ("route", "GET /sale/offers")
    expected = {"0.05": 1, "0.1": 1, "0.25": 1, "0.5": 3, "1.0": 3, "2.5": 3, "5.0": 4, "10.0": 4, "+Inf": 5}
    assert {le: got[(f"{name}_bucket", (("le", le), route))] for le in expected} == expected
    assert got[(f"{name}_count", (route,))] == 5
    assert got[(f"{name}_sum", (route,))] == pytest.approx(33.83)
    other = ("route", "PUT /sale/offer-quantity-change-commands/{id}")
    assert got[(f"{name}_bucket", (("le", "0.1"), other))] == 0
    assert got[(f"{name}_bucket", (("le", "0.25"), other))] == 1


def test_response_times_are_kept_in_the_process_until_the_next_record_or_a_second_later(
    redis_client, prefix, monkeypatch
):
    metrics = SyncMetrics(redis_client, prefix)
    name = "allegro_sync_api_response_time_seconds"
    route = ("route", "PATCH /sale/product-offers/{id}")
    for seconds in (0.12, 0.2, 0.7):
        metrics.observe_api_response(route[1], seconds)
    assert (f"{name}_count", (route,)) not in samples(render_prometheus(redis_client, prefix))

    metrics.record_api_calls("shop-a", 3)  # a step's calls: its response times go with them
    got = samples(render_prometheus(redis_client, prefix))
    assert got[(f"{name}_count", (route,))] == 3
    assert got[(f"{name}_bucket", (("le", "0.25"), route))] == 2
    assert got[(f"{name}_bucket", (("le", "+Inf"), route))] == 3
    assert got[(f"{name}_sum", (route,))] == pytest.approx(1.02)
    assert got[("allegro_sync_api_calls_total", (("account", "shop-a"),))] == 3

    # Once API_RESPONSES_FLUSH_SECONDS have passed since the last write, an observation writes what is kept.
    monkeypatch.setattr(metrics_module, "API_RESPONSES_FLUSH_SECONDS", 0.0)
    metrics.observe_api_response(route[1], 0.05)
    assert samples(render_prometheus(redis_client, prefix))[(f"{name}_count", (route,))] == 4


def test_text_has_help_and_type_escapes_labels_and_is_stable(redis_client, prefix):
    metrics = SyncMetrics(redis_client, prefix)
    awkward = 'sklep "główny"\\nowy\n'
    for account in ("zeta", awkward, "alpha"):
        metrics.record_listing(account, offers=10, api_calls=0)
        metrics.record_run(account, **RUN, success=True)

    text = render_prometheus(redis_client, prefix)

    assert "# HELP allegro_sync_processed_offers_total " in text
    assert "# TYPE allegro_sync_processed_offers_total counter" in text
    assert "# TYPE allegro_sync_pending_writes gauge" in text
    assert "# TYPE allegro_sync_api_response_time_seconds histogram" in text
    assert 'account="sklep \\"główny\\"\\\\nowy\\n"' in text
    assert samples(text)[("allegro_sync_processed_offers_total", (("account", awkward),))] == 10
    processed = [line for line in text.splitlines() if line.startswith("allegro_sync_processed_offers_total{")]
    assert [line.split('"')[1] for line in processed] == ["alpha", "sklep \\", "zeta"]
    assert render_prometheus(redis_client, prefix) == text


def test_http_endpoint_serves_the_same_text(redis_client, prefix):
    SyncMetrics(redis_client, prefix).record_run("shop-a", **RUN, success=True)
    metrics = SyncMetrics(redis_client, prefix)
    metrics.observe_api_response("GET /sale/offers", 0.12)
    metrics.flush()

    with serve(REDIS_URL, port=0, prefix=prefix) as server:
        assert server.port != 0
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == render_prometheus(redis_client, prefix)


def test_unreachable_redis_never_breaks_a_sync():
    metrics = build_metrics("redis://127.0.0.1:1/0")

    with capture_logs() as logs:
        metrics.record_run("shop-a", **RUN, success=True)
        metrics.observe_api_response("GET /sale/offers", 0.1)

    # One warning: after the first failure recording pauses instead of failing per call.
    assert [(e["log_level"], e["event"], e["metric_call"]) for e in logs] == [
        ("warning", "metrics_not_recorded", "record_run")
    ]
    assert "ConnectionError" in logs[0]["error"]


def test_without_redis_url_metrics_do_nothing():
    metrics = build_metrics(None)

    assert isinstance(metrics, NullMetrics)
    metrics.record_run("shop-a", **RUN, success=True)
    metrics.observe_api_response("GET /sale/offers", 0.1)
