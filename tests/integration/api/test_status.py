"""`GET /v1/status`: readiness, the credential pause and the rate-limit slow-down in one answer."""

from __future__ import annotations

from pathlib import Path

from tests.integration.api.test_intake import TOKEN, assert_error, running_intake
from watcher.api.status import DaemonSnapshot
from watcher.cluster.member import ClusterStats
from watcher.delivery.deliverer import DeliveryStats
from watcher.polling.scheduler import SchedulerStats


async def test_status_reports_readiness_pause_and_slow_down(tmp_path: Path) -> None:
    async with running_intake(tmp_path, token=TOKEN) as h:
        assert_error(await h.call("GET", "/v1/status", auth=False), 401, "unauthorized")

        idle = await h.call("GET", "/v1/status")
        assert idle.status == 200
        assert idle.body["ready"] is True
        assert idle.body["reasons"] == []
        assert idle.body["polling"]["credentials_paused"] is False
        assert idle.body["polling"]["rate_limited_until"] is None
        assert "failed" in idle.body["delivery_statuses"]
        assert "retrying" in idle.body["delivery_statuses"]  # the console filter offers it
        assert "timed_out" in idle.body["task_states"]
        assert idle.body["model_stats"] is True  # GET /v1/stats/models is served

        h.control.readiness_reasons = ["upstream rejected the API key: polling is paused"]
        h.control.status = DaemonSnapshot(
            polling=SchedulerStats(
                watched=12,
                in_flight=2,
                credentials_paused=True,
                pause_reason="HTTP 401",
                rate_limited_until=1_767_225_660.0,
                last_progress_at=None,
            ),
            delivery=DeliveryStats(pending=3, in_flight=1, last_progress_at=0.0),
        )
        busy = await h.call("GET", "/v1/status")
        assert busy.body["ready"] is False
        assert busy.body["reasons"] == ["upstream rejected the API key: polling is paused"]
        assert busy.body["polling"] == {
            "watched": 12,
            "in_flight": 2,
            "credentials_paused": True,
            "pause_reason": "HTTP 401",
            "rate_limited_until": "2026-01-01T00:01:00.000Z",
        }
        assert busy.body["delivery"] == {"pending": 3, "in_flight": 1}
        assert busy.body["cluster"] is None  # one daemon on SQLite

        h.control.status = DaemonSnapshot(
            polling=None,
            delivery=None,
            cluster=ClusterStats("web-1.42.abc", live=3, share=1 / 3, lease_in_doubt=True),
        )
        clustered = await h.call("GET", "/v1/status")
        assert clustered.body["cluster"] == {
            "instance_id": "web-1.42.abc",
            "instances": 3,
            "budget_share": 0.333333,
            "lease_in_doubt": True,
        }


async def test_status_says_when_the_daemon_is_draining(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as h:
        h.server.set_draining()
        answer = await h.call("GET", "/v1/status")
        assert answer.body["ready"] is False
        assert answer.body["reasons"] == ["draining: the daemon is stopping"]
