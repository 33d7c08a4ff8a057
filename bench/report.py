"""Pure helpers: percentiles and the report's JSON (targets and whether each is met)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# The targets.
CPU_RATIO_TARGET = 1.3
PACED_RATIO_TARGET = 1.15  # paced polling (2,000 tasks every 1 s) against a paced bare loop
RSS_100K_TARGET_MB = 250.0
LATENCY_SLACK_MS = 100.0  # p99 <= interval + this
RESTART_TARGET_S = 3.0
DELIVERY_RATE_TARGET = 2000.0
DELIVERY_RATIO_TARGET = 0.7
CONSOLE_FIRST_PAGE_TARGET_MS = 50.0  # p95, 100k tasks in the store
CONSOLE_TRANSFER_TARGET_BYTES = 150_000
TASKS_FILE_IMPORT_TARGET_S = 3.0
TASKS_FILE_RSS_TARGET_MB = 150.0
TASKS_FILE_UNCHANGED_TARGET_S = 0.5


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _met(value: float | None, ok: bool) -> bool | None:
    return None if value is None else ok


def cpu_section(
    daemon_us: float | None, reference_us: float | None, **extra: Any
) -> dict[str, Any]:
    """Daemon CPU per poll against the minimal client loop's."""
    r = ratio(daemon_us, reference_us)
    return {
        "daemon_cpu_us_per_poll": _r(daemon_us, 1),
        "reference_cpu_us_per_get": _r(reference_us, 1),
        "ratio": _r(r),
        "target": f"ratio <= {CPU_RATIO_TARGET}",
        "met": _met(r, r is not None and r <= CPU_RATIO_TARGET),
        **extra,
    }


def paced_section(
    daemon_us: float | None, reference_us: float | None, **extra: Any
) -> dict[str, Any]:
    """Daemon CPU per request when polling at a steady pace, against a bare loop at that pace."""
    r = ratio(daemon_us, reference_us)
    return {
        "daemon_cpu_us_per_poll": _r(daemon_us, 1),
        "reference_cpu_us_per_get": _r(reference_us, 1),
        "ratio": _r(r),
        "target": f"ratio <= {PACED_RATIO_TARGET}",
        "met": _met(r, r is not None and r <= PACED_RATIO_TARGET),
        **extra,
    }


def paced_rounds_section(rounds: Sequence[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """`paced_section` over several interleaved rounds (daemon, reference, daemon, ...), each
    a mapping with `daemon_cpu_us_per_poll` and `reference_cpu_us_per_get` (None when that
    side failed). The headline is the ratio of the medians: a machine whose load changes
    between rounds moves both sides' medians alike, where a single pair's ratio takes the
    whole change. Each round's own ratio is reported too, with their minimum and maximum."""
    daemon = [r["daemon_cpu_us_per_poll"] for r in rounds if r["daemon_cpu_us_per_poll"]]
    reference = [r["reference_cpu_us_per_get"] for r in rounds if r["reference_cpu_us_per_get"]]
    round_ratios = [
        ratio(r["daemon_cpu_us_per_poll"], r["reference_cpu_us_per_get"]) for r in rounds
    ]
    known = [r for r in round_ratios if r is not None]
    return paced_section(
        percentile(daemon, 50),
        percentile(reference, 50),
        rounds=len(rounds),
        round_ratios=[_r(r) for r in round_ratios],
        ratio_min=_r(min(known, default=None)),
        ratio_max=_r(max(known, default=None)),
        rounds_met=sum(1 for r in known if r <= PACED_RATIO_TARGET),
        daemon_cpu_us_per_poll_range=[
            _r(min(daemon, default=None), 1),
            _r(max(daemon, default=None), 1),
        ],
        reference_cpu_us_per_get_range=[
            _r(min(reference, default=None), 1),
            _r(max(reference, default=None), 1),
        ],
        **extra,
        round_figures=list(rounds),
    )


def rss_section(idle_mb: float | None, loaded_mb: float | None, tasks: int) -> dict[str, Any]:
    """RSS with `tasks` watched tasks against the idle daemon's."""
    per_task = None
    if idle_mb is not None and loaded_mb is not None and tasks:
        per_task = (loaded_mb - idle_mb) * 1024 * 1024 / tasks
    return {
        "tasks": tasks,
        "idle_rss_mb": _r(idle_mb, 1),
        "rss_mb": _r(loaded_mb, 1),
        "bytes_per_task": _r(per_task, 0),
        "target": f"<= {RSS_100K_TARGET_MB:g} MB total",
        "met": _met(loaded_mb, loaded_mb is not None and loaded_mb <= RSS_100K_TARGET_MB),
    }


def latency_section(lags_s: Sequence[float], interval_s: float, **extra: Any) -> dict[str, Any]:
    """Upstream completion -> webhook received, against the polling interval."""
    p50 = percentile(lags_s, 50)
    p99 = percentile(lags_s, 99)
    limit_ms = interval_s * 1000 + LATENCY_SLACK_MS
    p99_ms = None if p99 is None else p99 * 1000
    return {
        "received": len(lags_s),
        "interval_ms": round(interval_s * 1000),
        "p50_ms": _r(None if p50 is None else p50 * 1000, 1),
        "p99_ms": _r(p99_ms, 1),
        "max_ms": _r(max(lags_s) * 1000 if lags_s else None, 1),
        "target": f"p99 <= {limit_ms:g} ms",
        "met": _met(p99_ms, p99_ms is not None and p99_ms <= limit_ms),
        **extra,
    }


def restart_section(first_poll_s: float | None, **extra: Any) -> dict[str, Any]:
    """Process start -> first poll received by the fake upstream."""
    return {
        "first_poll_s": _r(first_poll_s),
        "target": f"<= {RESTART_TARGET_S:g} s",
        "met": _met(first_poll_s, first_poll_s is not None and first_poll_s <= RESTART_TARGET_S),
        **extra,
    }


def delivery_section(
    daemon_per_s: float | None, reference_per_s: float | None, **extra: Any
) -> dict[str, Any]:
    """Webhooks per second from a backlog, against the minimal POST loop."""
    r = ratio(daemon_per_s, reference_per_s)
    ok = (
        daemon_per_s is not None
        and r is not None
        and daemon_per_s >= DELIVERY_RATE_TARGET
        and r >= DELIVERY_RATIO_TARGET
    )
    return {
        "daemon_per_s": _r(daemon_per_s, 0),
        "reference_per_s": _r(reference_per_s, 0),
        "ratio": _r(r),
        "target": f">= {DELIVERY_RATE_TARGET:g}/s and ratio >= {DELIVERY_RATIO_TARGET}",
        "met": _met(daemon_per_s, ok),
        **extra,
    }


def console_section(
    *,
    first_page_ms: Sequence[float],
    transfer_bytes: float | None,
    usable_ms: Sequence[float],
    **extra: Any,
) -> dict[str, Any]:
    """The console with many tasks: the first page served (p95), the page's total transfer
    (both with targets) and the time to a usable list (reported)."""
    p95 = percentile(first_page_ms, 95)
    ok = (
        p95 is not None
        and p95 <= CONSOLE_FIRST_PAGE_TARGET_MS
        and transfer_bytes is not None
        and transfer_bytes <= CONSOLE_TRANSFER_TARGET_BYTES
    )
    return {
        "first_page_p50_ms": _r(percentile(first_page_ms, 50), 2),
        "first_page_p95_ms": _r(p95, 2),
        "first_page_max_ms": _r(max(first_page_ms), 2) if first_page_ms else None,
        "transfer_kb": _r(None if transfer_bytes is None else transfer_bytes / 1000, 1),
        "usable_ms_median": _r(percentile(usable_ms, 50), 1),
        "usable_ms_max": _r(max(usable_ms), 1) if usable_ms else None,
        "target": (
            f"first page p95 <= {CONSOLE_FIRST_PAGE_TARGET_MS:g} ms and transfer <= "
            f"{CONSOLE_TRANSFER_TARGET_BYTES / 1000:g} KB"
        ),
        "met": _met(p95, ok),
        **extra,
    }


def tasks_file_section(
    import_s: float | None,
    rss_mb: float | None,
    unchanged_s: float | None,
    **extra: Any,
) -> dict[str, Any]:
    """A big tasks file: import time, RSS after the import, an unchanged re-read on SIGHUP."""
    ok = (
        import_s is not None
        and rss_mb is not None
        and unchanged_s is not None
        and import_s <= TASKS_FILE_IMPORT_TARGET_S
        and rss_mb <= TASKS_FILE_RSS_TARGET_MB
        and unchanged_s < TASKS_FILE_UNCHANGED_TARGET_S
        and extra.get("unchanged_reread_wrote") is not True
    )
    return {
        "import_s": _r(import_s),
        "rss_after_import_mb": _r(rss_mb, 1),
        "unchanged_reread_s": _r(unchanged_s),
        "target": (
            f"import <= {TASKS_FILE_IMPORT_TARGET_S:g} s, RSS <= {TASKS_FILE_RSS_TARGET_MB:g} MB, "
            f"unchanged re-read < {TASKS_FILE_UNCHANGED_TARGET_S:g} s writing nothing"
        ),
        "met": _met(import_s, ok),
        **extra,
    }


MIRROR_RATIO_TARGET = 0.8
MIRROR_RSS_TARGET_MB = 20.0


def mirror_section(
    *,
    big_mib_s: float,
    ref_big_mib_s: float,
    small_mib_s: float,
    ref_small_mib_s: float,
    rss_growth_mb: float,
    lags_on_s: Sequence[float],
    lags_off_s: Sequence[float],
    cpu_s_per_gib: Mapping[str, float] | None = None,
    round_ratios: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Mirror throughput against a bare download loop, RSS growth, added webhook latency;
    `cpu_s_per_gib` (the CPU seconds per GiB of each side) and `round_ratios` (each round's
    ratio, when the cases were repeated) are reported as they are, rounded."""
    big_ratio = ratio(big_mib_s, ref_big_mib_s)
    small_ratio = ratio(small_mib_s, ref_small_mib_s)
    p99_on = percentile([x * 1000 for x in lags_on_s], 99)
    p99_off = percentile([x * 1000 for x in lags_off_s], 99)
    ok = (
        big_ratio is not None
        and small_ratio is not None
        and big_ratio >= MIRROR_RATIO_TARGET
        and small_ratio >= MIRROR_RATIO_TARGET
        and rss_growth_mb < MIRROR_RSS_TARGET_MB
    )
    return {
        "big_file_mib_per_s": _r(big_mib_s, 1),
        "big_file_reference_mib_per_s": _r(ref_big_mib_s, 1),
        "big_file_ratio": _r(big_ratio),
        "small_files_mib_per_s": _r(small_mib_s, 1),
        "small_files_reference_mib_per_s": _r(ref_small_mib_s, 1),
        "small_files_ratio": _r(small_ratio),
        "cpu_s_per_gib": {k: _r(v, 2) for k, v in (cpu_s_per_gib or {}).items()},
        "round_ratios": {k: [_r(x) for x in v] for k, v in (round_ratios or {}).items()},
        "rss_growth_mb": _r(rss_growth_mb, 1),
        "webhook_p99_ms_mirrored": _r(p99_on, 1),
        "webhook_p99_ms_not_mirrored": _r(p99_off, 1),
        "webhook_p99_added_ms": _r(p99_on - p99_off, 1)
        if p99_on is not None and p99_off is not None
        else None,
        "target": (
            f"throughput >= {MIRROR_RATIO_TARGET:g} x a bare download loop (1 GiB and 1000 x 1 "
            f"MiB), RSS growth < {MIRROR_RSS_TARGET_MB:g} MB; added p99 reported"
        ),
        "met": _met(big_ratio, ok),
    }


POLLING_LIVE_DELAY_TARGET = 0.5  # adaptive / fixed, completion -> webhook
POLLING_LIVE_REQUESTS_SLACK = 1.1  # adaptive may spend this much of fixed's requests


def polling_live_section(fixed: Mapping[str, Any], adaptive: Mapping[str, Any]) -> dict[str, Any]:
    """Fixed against adaptive on the live daemon: requests per task and completion -> webhook."""
    delay = ratio(
        adaptive.get("completion_to_webhook_mean_s"), fixed.get("completion_to_webhook_mean_s")
    )
    requests = ratio(adaptive.get("requests_per_task"), fixed.get("requests_per_task"))
    ok = (
        delay is not None
        and requests is not None
        and delay <= POLLING_LIVE_DELAY_TARGET
        and requests <= POLLING_LIVE_REQUESTS_SLACK
    )
    return {
        "fixed": dict(fixed),
        "adaptive": dict(adaptive),
        "delay_ratio": _r(delay),
        "requests_ratio": _r(requests),
        "target": (
            f"adaptive completion -> webhook <= {POLLING_LIVE_DELAY_TARGET}x fixed at <= "
            f"{POLLING_LIVE_REQUESTS_SLACK}x its requests"
        ),
        "met": _met(delay, ok),
    }


def budget_section(simulated: Any, live: Any) -> dict[str, Any]:
    """The request budget: simulated waits and windows, and the live daemon's worst window."""
    met = [s.get("met") for s in (simulated, live) if isinstance(s, Mapping)]
    return {
        "simulated": simulated,
        "live": live,
        "met": None if any(m is None for m in met) or not met else all(met),
    }


CLUSTER_SCALE_TARGET = 2.5  # polls/s of three instances over one's, on one PostgreSQL
CLUSTER_STORE_RATIO_TARGET = 1.3  # daemon CPU per poll, PostgreSQL over SQLite, one instance


def cluster_section(
    *,
    sqlite: Mapping[str, Any],
    single: Mapping[str, Any],
    three: Mapping[str, Any],
    equal_hosts: Mapping[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Several instances on PostgreSQL (flat out): three against one in polls per second, and
    one on PostgreSQL against one on SQLite in daemon CPU per poll.

    Three against one is measured twice. On the machine's shared cores (`single`, `three`):
    where there are fewer free cores than instances, the three share what one had, and the
    ratio says how many cores the machine has. As equal hosts (`equal_hosts`: each instance
    capped at the same fraction of a core, bench/cpucap.py): the ratio says whether the shared
    store lets the work scale, which is what the target asks; it is the verdict when it was
    measured and every instance got its cap (the machine had the cores for all of them).
    CPU per poll of one and of three uncapped says the same from another side: three
    instances each given the CPU one had would reach 3 x (one's CPU per poll / three's),
    `projected_ratio_with_cores`."""
    shared = ratio(three.get("polls_per_s"), single.get("polls_per_s"))
    hosts = equal_hosts.get("scale_ratio")
    cap = equal_hosts.get("cores_per_instance")
    got = [
        c
        for window in ("single", "three")
        for c in (equal_hosts.get(window) or {}).get("daemon_cores") or [0.0]
    ]
    # Valid when every capped instance got (nearly) all of its cap in both windows: then the
    # cap, not a machine short of cores, bounded each of them.
    hosts_valid = hosts is not None and bool(cap) and min(got) >= 0.9 * cap
    scale = hosts if hosts_valid else shared
    store = ratio(single.get("daemon_cpu_us_per_poll"), sqlite.get("daemon_cpu_us_per_poll"))
    efficiency = ratio(single.get("daemon_cpu_us_per_poll"), three.get("daemon_cpu_us_per_poll"))
    ok = (
        scale is not None
        and store is not None
        and scale >= CLUSTER_SCALE_TARGET
        and store <= CLUSTER_STORE_RATIO_TARGET
    )
    return {
        "scale_ratio": _r(scale),
        "scale_ratio_measured_on": "equal hosts" if hosts_valid else "shared cores",
        "scale_ratio_shared_cores": _r(shared),
        "scale_ratio_equal_hosts": _r(hosts) if hosts_valid else None,
        "projected_ratio_with_cores": _r(None if efficiency is None else 3 * efficiency, 2),
        "postgres_vs_sqlite_cpu_ratio": _r(store),
        "target": (
            f"three instances >= {CLUSTER_SCALE_TARGET:g}x one in polls/s; PostgreSQL <= "
            f"{CLUSTER_STORE_RATIO_TARGET:g}x SQLite in daemon CPU per poll"
        ),
        "met": _met(scale if store is not None else None, ok),
        "sqlite": dict(sqlite),
        "single": dict(single),
        "three": dict(three),
        "equal_hosts": dict(equal_hosts),
        **extra,
    }


def assemble(sections: Mapping[str, Any], *, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The one JSON object the bench prints: metadata, every section, and a summary of which
    targets were met (None: not measured, e.g. the scenario failed)."""
    met = {
        name: section.get("met")
        for name, section in sections.items()
        if isinstance(section, Mapping) and "met" in section
    }
    return {
        "meta": dict(meta),
        **sections,
        "targets_met": met,
        "all_met": all(v is True for v in met.values()) if met else False,
    }
