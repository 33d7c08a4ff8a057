"""Metrics: names, labels and types as Prometheus scrapes them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from watcher.api.metrics import Metrics
from watcher.models import TaskState


def scrape(metrics: Metrics) -> tuple[dict[str, str], list[Sample]]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for family in text_string_to_metric_families(body.decode()):
        types[family.name] = family.type
        samples.extend(family.samples)
    return types, samples


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample `apixo_watcher_<name>` with exactly these labels."""
    name = "apixo_watcher_" + name
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def test_build_info_and_zeroed_gauges_exist_from_the_start() -> None:
    types, samples = scrape(Metrics(version="1.2.3"))
    assert types["apixo_watcher_build_info"] == "gauge"
    assert value(samples, "build_info", version="1.2.3") == 1
    for state in TaskState:
        assert value(samples, "tasks", state=state.value) == 0
    assert value(samples, "deliveries", status="pending") == 0
    assert value(samples, "deliveries", status="failed") == 0
    assert value(samples, "upstream_credentials_paused") == 0


def test_upstream_metrics() -> None:
    m = Metrics()
    m.upstream_request("nano-banana", "ok", 0.2)
    m.upstream_request("nano-banana", "ok", 0.3)
    m.upstream_request("sora-2", "http_429", 0.05)
    m.rate_limited()
    m.credentials_paused(True)
    m.set_request_rate(7.5)
    m.detection_delay("nano-banana", 1.5)
    types, samples = scrape(m)

    assert types["apixo_watcher_upstream_requests"] == "counter"
    assert value(samples, "upstream_requests_total", model="nano-banana", outcome="ok") == 2
    assert value(samples, "upstream_requests_total", model="sora-2", outcome="http_429") == 1
    assert types["apixo_watcher_upstream_request_duration_seconds"] == "histogram"
    assert value(samples, "upstream_request_duration_seconds_count", model="nano-banana") == 2
    assert value(samples, "upstream_request_duration_seconds_sum", model="nano-banana") == 0.5
    assert value(samples, "upstream_rate_limited_total") == 1
    assert types["apixo_watcher_upstream_credentials_paused"] == "gauge"
    assert value(samples, "upstream_credentials_paused") == 1
    assert types["apixo_watcher_upstream_request_rate_limit"] == "gauge"
    assert value(samples, "upstream_request_rate_limit") == 7.5
    assert types["apixo_watcher_detection_delay_seconds"] == "histogram"
    assert value(samples, "detection_delay_seconds_count", model="nano-banana") == 1

    m.credentials_paused(False)
    _, samples = scrape(m)
    assert value(samples, "upstream_credentials_paused") == 0


def test_webhook_metrics() -> None:
    m = Metrics()
    m.webhook_attempt("app", "succeeded", 0.1)
    m.webhook_attempt("app", "retry", 10.0)
    m.delivery_latency("app", 0.4)
    types, samples = scrape(m)
    assert types["apixo_watcher_webhook_attempts"] == "counter"
    assert value(samples, "webhook_attempts_total", endpoint="app", outcome="succeeded") == 1
    assert value(samples, "webhook_attempts_total", endpoint="app", outcome="retry") == 1
    assert value(samples, "webhook_attempt_duration_seconds_count", endpoint="app") == 2
    assert types["apixo_watcher_delivery_latency_seconds"] == "histogram"
    assert value(samples, "delivery_latency_seconds_bucket", endpoint="app", le="0.5") == 1
    assert value(samples, "delivery_latency_seconds_bucket", endpoint="app", le="0.25") == 0


def test_config_reload_counts_outcomes_and_stamps_the_last_success() -> None:
    m = Metrics()
    m.config_reload(True, now=1_700_000_000.0)
    m.config_reload(False, now=1_700_000_100.0)
    types, samples = scrape(m)
    assert types["apixo_watcher_config_reloads"] == "counter"
    assert value(samples, "config_reloads_total", outcome="success") == 1
    assert value(samples, "config_reloads_total", outcome="failure") == 1
    assert types["apixo_watcher_config_last_reload_success_timestamp_seconds"] == "gauge"
    assert value(samples, "config_last_reload_success_timestamp_seconds") == 1_700_000_000.0


def test_state_gauges_are_replaced_and_absent_states_read_zero() -> None:
    m = Metrics()
    m.set_tasks_by_state({"pending": 3, "succeeded": 7})
    m.set_deliveries(pending=2, retrying=4, failed=1)
    m.set_tasks_by_state({"succeeded": 8})
    _, samples = scrape(m)
    assert value(samples, "tasks", state="pending") == 0
    assert value(samples, "tasks", state="succeeded") == 8
    assert value(samples, "deliveries", status="pending") == 2
    assert value(samples, "deliveries", status="retrying") == 4
    assert value(samples, "deliveries", status="failed") == 1


def test_delivery_gauges_exist_from_the_start() -> None:
    _, samples = scrape(Metrics())
    for status in ("pending", "retrying", "failed"):
        assert value(samples, "deliveries", status=status) == 0


def test_collect_hook_refreshes_gauges_at_scrape_and_its_failure_keeps_the_scrape_working() -> None:
    m = Metrics()
    counts = {"processing": 1}
    m.set_collect_hook(lambda: m.set_tasks_by_state(counts))
    _, samples = scrape(m)
    assert value(samples, "tasks", state="processing") == 1
    counts["processing"] = 5
    _, samples = scrape(m)
    assert value(samples, "tasks", state="processing") == 5

    def broken() -> None:
        raise RuntimeError("store down")

    m.set_collect_hook(broken)
    _, samples = scrape(m)
    assert value(samples, "tasks", state="processing") == 5


def test_intake_requests_are_counted_by_route_template() -> None:
    m = Metrics()
    m.intake_request("/v1/tasks/{task_id}", "GET", 404)
    _, samples = scrape(m)
    labels = {"route": "/v1/tasks/{task_id}", "method": "GET", "status": "404"}
    assert value(samples, "intake_requests_total", **labels) == 1


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.rate_limited()
    _, samples = scrape(b)
    assert value(samples, "upstream_rate_limited_total") == 0


def test_every_metric_is_prefixed_and_has_no_task_id_label() -> None:
    m = Metrics()
    m.upstream_request("m", "ok", 0.1)
    m.webhook_attempt("e", "succeeded", 0.1)
    m.delivery_latency("e", 1)
    m.detection_delay("m", 1)
    types, samples = scrape(m)
    assert all(name.startswith("apixo_watcher_") for name in types)
    assert all("task_id" not in s.labels for s in samples)


def test_contained_errors_are_counted_by_loop_and_type() -> None:
    m = Metrics()
    m.contained_error("scheduler", "RecursionError")
    m.contained_error("scheduler", "RecursionError")
    m.contained_error("deliverer", "ValueError")
    types, samples = scrape(m)
    assert types["apixo_watcher_contained_errors"] == "counter"
    assert (
        value(samples, "contained_errors_total", loop="scheduler", error_type="RecursionError") == 2
    )
    assert value(samples, "contained_errors_total", loop="deliverer", error_type="ValueError") == 1


def test_mirror_metrics() -> None:
    m = Metrics()
    _, samples = scrape(m)
    assert value(samples, "mirror_files_total", outcome="done") == 0  # there from the start
    m.mirror_file("done", 1000, 0.2)
    m.mirror_file("done", 24, 0.1)
    m.mirror_file("failed", 0, 5.0)
    m.mirror_deleted(3)
    m.set_mirror_held(2)
    types, samples = scrape(m)
    assert types["apixo_watcher_mirror_files"] == "counter"
    assert value(samples, "mirror_files_total", outcome="done") == 2
    assert value(samples, "mirror_files_total", outcome="failed") == 1
    assert value(samples, "mirror_bytes_total") == 1024
    assert types["apixo_watcher_mirror_duration_seconds"] == "histogram"
    assert value(samples, "mirror_duration_seconds_count", outcome="done") == 2
    assert value(samples, "mirror_deleted_files_total") == 3
    assert value(samples, "mirror_held_tasks") == 2


def test_upstream_series_read_as_per_request_inc_and_observe_would_give() -> None:
    """The upstream request series are counted in plain Python and read out as metric
    families when the registry is collected: the samples are those of a Counter and a
    Histogram fed each request, whenever the registry is read (here between requests too),
    every bucket edge included, `_created` series too."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from watcher.api import metrics as metrics_module

    plain = CollectorRegistry()
    counter = Counter("apixo_watcher_upstream_requests", "x", ["model", "outcome"], registry=plain)
    histogram = Histogram(
        "apixo_watcher_upstream_request_duration_seconds",
        "x",
        ["model"],
        buckets=metrics_module._REQUEST_BUCKETS,
        registry=plain,
    )
    m = Metrics()
    bounds = metrics_module._REQUEST_BUCKETS
    durations = [0.0, -1.0, 0.1 + 0.2, 1e-9, 45.0, *bounds, *(b * 1.0000001 for b in bounds)]
    for i, duration in enumerate(durations):
        model = ("nano-banana", "sora-2")[i % 2]
        outcome = ("ok", "http_503", "timeout")[i % 3]
        m.upstream_request(model, outcome, duration)
        counter.labels(model, outcome).inc()
        histogram.labels(model).observe(max(0.0, duration))
        if i % 7 == 0:
            m.registry.get_sample_value("apixo_watcher_build_info", {"version": "x"})

    def upstream_samples(registry: CollectorRegistry) -> list[tuple[str, str, float]]:
        return sorted(
            (s.name, repr(sorted(s.labels.items())), s.value)
            for family in registry.collect()
            if family.name
            in (
                "apixo_watcher_upstream_requests",
                "apixo_watcher_upstream_request_duration_seconds",
            )
            for s in family.samples
            if not s.name.endswith("_created")
        )

    assert upstream_samples(m.registry) == upstream_samples(plain)
    assert len(upstream_samples(plain)) > 2 * len(bounds)
    # And a scrape after more requests shows them (the totals are set, not added twice).
    m.upstream_request("nano-banana", "ok", 0.2)
    counter.labels("nano-banana", "ok").inc()
    histogram.labels("nano-banana").observe(0.2)
    assert upstream_samples(m.registry) == upstream_samples(plain)
    _, samples = scrape(m)
    assert value(samples, "upstream_requests_total", model="nano-banana", outcome="ok") == (
        plain.get_sample_value(
            "apixo_watcher_upstream_requests_total", {"model": "nano-banana", "outcome": "ok"}
        )
    )

    def created(registry: CollectorRegistry) -> set[tuple[str, str]]:
        return {
            (s.name, repr(sorted(s.labels.items())))
            for family in registry.collect()
            if family.name.startswith("apixo_watcher_upstream_request")
            for s in family.samples
            if s.name.endswith("_created")
        }

    assert created(m.registry) == created(plain)
    assert len(created(plain)) == 6 + 2  # (model, outcome) pairs, models
