"""`GET /v1/status`: what the daemon is doing right now, in one cheap answer.

The operator console polls it for its banner (readiness, a credential pause, a rate-limit
slow-down) and its filters. Everything here is read from memory (the scheduler's and the
deliverer's counters), never counted over the store, so a console left open costs the daemon
the same with 100 tasks as with 100,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from watcher import __version__
from watcher.api.views import iso
from watcher.cluster.member import ClusterStats
from watcher.delivery.deliverer import DeliveryStats
from watcher.models import PublicDeliveryStatus, TaskState
from watcher.polling.scheduler import SchedulerStats


@dataclass(frozen=True, slots=True)
class DaemonSnapshot:
    """The daemon's live counters (None: that part is not running, e.g. while starting)."""

    polling: SchedulerStats | None
    delivery: DeliveryStats | None
    cluster: ClusterStats | None = None  # several instances on PostgreSQL


def status_json(
    snapshot: DaemonSnapshot, *, reasons: Sequence[str], model_stats: bool
) -> dict[str, Any]:
    """The answer of `GET /v1/status`.

    `reasons` are the readiness reasons (those of `/readyz`; empty: ready). `model_stats` says
    whether this daemon serves `GET /v1/stats/models`, so the console asks for it only then.
    """
    polling = snapshot.polling
    delivery = snapshot.delivery
    return {
        "version": __version__,
        "ready": not reasons,
        "reasons": list(reasons),
        "polling": {
            "watched": polling.watched if polling else 0,
            "in_flight": polling.in_flight if polling else 0,
            "credentials_paused": polling.credentials_paused if polling else False,
            "pause_reason": polling.pause_reason if polling else None,
            "rate_limited_until": iso(polling.rate_limited_until) if polling else None,
        },
        "delivery": {
            "pending": delivery.pending if delivery else 0,
            "in_flight": delivery.in_flight if delivery else 0,
        },
        "task_states": [s.value for s in TaskState],
        "delivery_statuses": [s.value for s in PublicDeliveryStatus],
        "model_stats": model_stats,
        "cluster": _cluster_json(snapshot.cluster),
    }


def _cluster_json(cluster: ClusterStats | None) -> dict[str, Any] | None:
    if cluster is None:
        return None
    return {
        "instance_id": cluster.instance_id,
        "instances": cluster.live,
        "budget_share": round(cluster.share, 6),
        "lease_in_doubt": cluster.lease_in_doubt,
    }
