"""Prometheus metrics of the daemon, served as text at `GET /metrics`.

Every metric is named `apixo_watcher_*` and lives in a registry owned by one `Metrics` object
(not the process-global one), so tests can build as many as they like. Labels are bounded sets
(model, endpoint name, outcome, state): never a task id, which would grow without limit.
"""

from __future__ import annotations

import bisect
import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from watcher import __version__
from watcher.models import PublicDeliveryStatus, TaskState

log = structlog.get_logger(__name__)

PREFIX = "apixo_watcher_"

# The delivery statuses with a gauge: what waits or needs a person (not the succeeded ones).
_DELIVERY_GAUGES = (
    PublicDeliveryStatus.PENDING,
    PublicDeliveryStatus.RETRYING,
    PublicDeliveryStatus.FAILED,
)
# Upstream status calls: milliseconds to the configured timeout (seconds).
_REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Event created -> webhook accepted: immediate, or hours later after retries.
_DELIVERY_BUCKETS = (
    *(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    *(60.0, 300.0, 1800.0, 7200.0, 21600.0, 86400.0),
)
_MIRROR_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Detection delay, upstream completeTime -> the poll that saw it: up to the polling interval.
_LAG_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class _Children:
    """The labelled children of one metric, cached per label values: `labels()` validates and
    locks on every call, which showed in profiles of the per-poll and per-attempt paths."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def get(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class _UpstreamRequests(Collector):
    """The upstream request series (`upstream_requests_total` by model and outcome,
    `upstream_request_duration_seconds` by model), counted in plain Python per poll and read
    out as metric families when the registry is collected. A Counter's `inc` and a
    Histogram's `observe` take a lock each (the histogram's buckets one more), which at
    thousands of polls a second was ~2 % of the CPU of a poll. The samples are exactly those
    per-request `inc`/`observe` calls would give (tests/unit/api/test_metrics.py compares)."""

    __slots__ = ("_by_model", "_counts", "_created")

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}  # (model, outcome) -> requests
        # model -> [sum of durations, then a count per bucket, the last one +Inf's]
        self._by_model: dict[str, list[float]] = {}
        self._created: dict[object, float] = {}  # series key -> when it first counted

    def add(self, model: str, outcome: str, duration_s: float) -> None:
        key = (model, outcome)
        counts = self._counts
        count = counts.get(key)
        if count is None:
            self._created[key] = time.time()
            count = 0
        counts[key] = count + 1
        tally = self._by_model.get(model)
        if tally is None:
            self._created[model] = time.time()
            tally = self._by_model[model] = [0.0] * (len(_REQUEST_BUCKETS) + 2)
        amount = max(0.0, duration_s)
        tally[0] += amount
        # The first bucket whose bound is >= amount, as Histogram.observe finds it.
        tally[1 + bisect.bisect_left(_REQUEST_BUCKETS, amount)] += 1

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            PREFIX + "upstream_requests",
            "Upstream status requests by model and outcome.",
            labels=["model", "outcome"],
        )
        for key, count in self._counts.items():
            requests.add_metric(list(key), count, created=self._created[key])
        durations = HistogramMetricFamily(
            PREFIX + "upstream_request_duration_seconds",
            "Duration of upstream status requests.",
            labels=["model"],
        )
        bounds = [*map(floatToGoString, _REQUEST_BUCKETS), "+Inf"]
        for model, tally in self._by_model.items():
            buckets, total = [], 0.0
            for bound, observed in zip(bounds, tally[1:], strict=True):
                total += observed
                buckets.append((bound, total))
            durations.add_metric([model], buckets, tally[0])
            durations.samples.append(
                Sample(durations.name + "_created", {"model": model}, self._created[model])
            )
        return [requests, durations]


class Metrics:
    """The daemon's metrics; the scheduler, deliverer, daemon and intake call its methods."""

    def __init__(self, *, version: str = __version__) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._collect_hook: Callable[[], object] | None = None

        self._build_info = Gauge(
            PREFIX + "build_info", "Build information; always 1.", ["version"], registry=reg
        )
        self._build_info.labels(version=version).set(1)

        self._upstream_requests = _UpstreamRequests()
        reg.register(self._upstream_requests)
        self._rate_limited = Counter(
            PREFIX + "upstream_rate_limited",
            "Upstream answers of 429 (rate limit exceeded).",
            registry=reg,
        )
        self._request_rate = Gauge(
            PREFIX + "upstream_request_rate_limit",
            "The request budget in effect (requests per second): max_requests_per_second, "
            "lower while recovering from a 429 (halved per 429, recovering additively).",
            registry=reg,
        )
        self._credentials_paused = Gauge(
            PREFIX + "upstream_credentials_paused",
            "1 while polling is paused because the upstream rejected the API key or account.",
            registry=reg,
        )
        self._webhook_attempts = Counter(
            PREFIX + "webhook_attempts",
            "Webhook delivery attempts by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=reg,
        )
        self._webhook_duration = Histogram(
            PREFIX + "webhook_attempt_duration_seconds",
            "Duration of webhook delivery attempts.",
            ["endpoint"],
            buckets=_REQUEST_BUCKETS,
            registry=reg,
        )
        self._delivery_latency = Histogram(
            PREFIX + "delivery_latency_seconds",
            "Time from an event's creation to its successful delivery, by endpoint.",
            ["endpoint"],
            buckets=_DELIVERY_BUCKETS,
            registry=reg,
        )
        self._detection_delay = Histogram(
            PREFIX + "detection_delay_seconds",
            "Time from the upstream's completeTime to the watcher noticing, by model.",
            ["model"],
            buckets=_LAG_BUCKETS,
            registry=reg,
        )
        self._reloads = Counter(
            PREFIX + "config_reloads",
            "Configuration reloads by outcome (success or failure).",
            ["outcome"],
            registry=reg,
        )
        self._last_reload = Gauge(
            PREFIX + "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
            registry=reg,
        )
        self._tasks = Gauge(
            PREFIX + "tasks", "Tasks in the store by state.", ["state"], registry=reg
        )
        self._deliveries = Gauge(
            PREFIX + "deliveries",
            "Deliveries waiting for their first attempt of a round (pending), waiting after a "
            "failed attempt (retrying), or given up (failed).",
            ["status"],
            registry=reg,
        )
        self._intake_requests = Counter(
            PREFIX + "intake_requests",
            "Intake API requests by route, method and status code.",
            ["route", "method", "status"],
            registry=reg,
        )
        self._contained_errors = Counter(
            PREFIX + "contained_errors",
            "Unexpected errors raised while handling one task's answer (loop=scheduler) or one "
            "delivery's attempt (loop=deliverer), made that task's or delivery's error.",
            ["loop", "error_type"],
            registry=reg,
        )
        self._mirror_files = Counter(
            PREFIX + "mirror_files",
            "Result files mirrored (outcome=done) or given up (outcome=failed).",
            ["outcome"],
            registry=reg,
        )
        self._mirror_bytes = Counter(
            PREFIX + "mirror_bytes", "Bytes of result files mirrored.", registry=reg
        )
        self._mirror_duration = Histogram(
            PREFIX + "mirror_duration_seconds",
            "Time to copy one result file (its last try), by outcome.",
            ["outcome"],
            buckets=_MIRROR_BUCKETS,
            registry=reg,
        )
        self._mirror_deleted = Counter(
            PREFIX + "mirror_deleted_files",
            "Mirrored files deleted after mirror.retention.",
            registry=reg,
        )
        self._mirror_held = Gauge(
            PREFIX + "mirror_held_tasks",
            "Succeeded tasks whose webhook waits for their result files to be mirrored.",
            registry=reg,
        )
        self._cluster_instances = Gauge(
            PREFIX + "cluster_instances",
            "Live instances sharing the store (1 on SQLite); each uses 1/n of the budget.",
            registry=reg,
        )
        self._cluster_held_tasks = Gauge(
            PREFIX + "cluster_held_tasks",
            "Active tasks this instance holds and polls.",
            registry=reg,
        )
        self._cluster_lease_in_doubt = Gauge(
            PREFIX + "cluster_lease_in_doubt",
            "1 while no heartbeat reached the store for two thirds of store.lease: this "
            "instance holds its polls and webhook attempts back.",
            registry=reg,
        )
        self._cluster_instances.set(1)
        self._webhook_attempts_by = _Children(self._webhook_attempts)
        self._webhook_duration_by = _Children(self._webhook_duration)
        self._delivery_latency_by = _Children(self._delivery_latency)
        # Series that exist from the start read 0 instead of being absent, so alerts on them work.
        for state in TaskState:
            self._tasks.labels(state=state.value).set(0)
        for status in _DELIVERY_GAUGES:
            self._deliveries.labels(status=status.value).set(0)
        for outcome in ("success", "failure"):
            self._reloads.labels(outcome=outcome)
        for outcome in ("done", "failed"):
            self._mirror_files.labels(outcome=outcome)

    # -- upstream -------------------------------------------------------------------------------
    def upstream_request(self, model: str, outcome: str, duration_s: float) -> None:
        """One status request finished; `outcome` is a short word ("ok", "http_429", "timeout")."""
        self._upstream_requests.add(model, outcome, duration_s)

    def rate_limited(self) -> None:
        """The upstream answered 429."""
        self._rate_limited.inc()

    def set_request_rate(self, rate_per_s: float) -> None:
        """The request budget in effect now (the scheduler's, read at each scrape)."""
        self._request_rate.set(rate_per_s)

    def credentials_paused(self, paused: bool) -> None:
        """Polling was paused (True) or resumed (False) because of the API key or account."""
        self._credentials_paused.set(1 if paused else 0)

    def detection_delay(self, model: str, seconds: float) -> None:
        """A terminal state was detected `seconds` after the upstream's completeTime."""
        self._detection_delay.labels(model=model).observe(max(0.0, seconds))

    # -- webhooks -------------------------------------------------------------------------------
    def webhook_attempt(self, endpoint: str, outcome: str, duration_s: float) -> None:
        """One webhook attempt finished; `outcome` is an AttemptOutcome value."""
        self._webhook_attempts_by.get(endpoint, outcome).inc()
        self._webhook_duration_by.get(endpoint).observe(max(0.0, duration_s))

    def delivery_latency(self, endpoint: str, seconds: float) -> None:
        """A delivery succeeded `seconds` after its event was created."""
        self._delivery_latency_by.get(endpoint).observe(max(0.0, seconds))

    def contained_error(self, loop: str, error_type: str) -> None:
        """An unexpected error of one poll or attempt was contained (`error_type`: the
        exception's class name, a bounded set)."""
        self._contained_errors.labels(loop=loop, error_type=error_type).inc()

    # -- mirroring ------------------------------------------------------------------------------
    def mirror_file(self, outcome: str, size: int, duration_s: float) -> None:
        """One result file was mirrored (`done`, `size` bytes) or given up (`failed`)."""
        self._mirror_files.labels(outcome=outcome).inc()
        self._mirror_duration.labels(outcome=outcome).observe(max(0.0, duration_s))
        if size:
            self._mirror_bytes.inc(size)

    def mirror_deleted(self, files: int) -> None:
        """`files` mirrored files were deleted after mirror.retention."""
        self._mirror_deleted.inc(files)

    def set_mirror_held(self, tasks: int) -> None:
        """How many succeeded tasks wait for their mirror now."""
        self._mirror_held.set(tasks)

    # -- cluster --------------------------------------------------------------------------------
    def set_cluster(self, *, instances: int, held_tasks: int, lease_in_doubt: bool) -> None:
        """This instance among the others (read at each scrape)."""
        self._cluster_instances.set(instances)
        self._cluster_held_tasks.set(held_tasks)
        self._cluster_lease_in_doubt.set(1 if lease_in_doubt else 0)

    # -- daemon ---------------------------------------------------------------------------------
    def config_reload(self, success: bool, *, now: float | None = None) -> None:
        """A configuration (re)load finished; the first load at start counts too."""
        self._reloads.labels(outcome="success" if success else "failure").inc()
        if success:
            self._last_reload.set(time.time() if now is None else now)

    def set_tasks_by_state(self, counts: Mapping[str, int]) -> None:
        """Replace the task gauges; states absent from `counts` read 0."""
        for state in TaskState:
            self._tasks.labels(state=state.value).set(counts.get(state.value, 0))

    def set_deliveries(self, *, pending: int, retrying: int, failed: int) -> None:
        """Replace the delivery gauges (the public statuses: `retrying` is not in `pending`)."""
        self._deliveries.labels(status=PublicDeliveryStatus.PENDING.value).set(pending)
        self._deliveries.labels(status=PublicDeliveryStatus.RETRYING.value).set(retrying)
        self._deliveries.labels(status=PublicDeliveryStatus.FAILED.value).set(failed)

    def intake_request(self, route: str, method: str, status: int) -> None:
        """An intake API request was answered; `route` is the path template, not the path."""
        self._intake_requests.labels(route=route, method=method, status=str(status)).inc()

    # -- exposition -----------------------------------------------------------------------------
    def set_collect_hook(self, hook: Callable[[], object] | None) -> None:
        """Run `hook` before each render, e.g. to refresh the gauges from the store; `scrape`
        also awaits what it returns (a coroutine reading an async store)."""
        self._collect_hook = hook

    async def scrape(self) -> tuple[bytes, str]:
        """`render`, awaiting an async collect hook first."""
        if self._collect_hook is not None:
            try:
                result = self._collect_hook()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # A scrape must still answer (with the last values) when e.g. the store is down.
                log.warning("metrics_collect_hook_failed", exc_info=True)
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        if self._collect_hook is not None:
            try:
                self._collect_hook()
            except Exception:
                # A scrape must still answer (with the last values) when e.g. the store is down.
                log.warning("metrics_collect_hook_failed", exc_info=True)
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
