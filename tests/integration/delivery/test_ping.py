"""`webhook.test` events (`apixo-watcher ping`) from the real dispatcher to a real receiver that
verifies them with the independent `standardwebhooks` package."""

from __future__ import annotations

import json
import socket

from structlog.testing import capture_logs

from tests.helpers.receiver import Reply, start_receiver
from tests.integration.delivery.test_deliverer import USER_AGENT, endpoint, running
from watcher.clock import ManualClock
from watcher.config.settings import EndpointConfig, Secret
from watcher.delivery.ping import ANSWER_PREVIEW_BYTES
from watcher.logs import REDACTED
from watcher.store.memory import MemoryStore
from watcher.webhook_secret import generate_secret

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


async def test_a_test_event_is_signed_like_a_webhook_with_every_secret_and_not_stored() -> None:
    new, old = generate_secret(), generate_secret()
    async with start_receiver(secrets=[old]) as receiver:
        receiver.script("/hook", Reply(200, body=b'{"received": true}'))
        target = endpoint("app", receiver.url("/hook"), new, old, headers={"x-env": "test"})
        store = MemoryStore()
        with capture_logs() as logs:
            async with running(store, [target]) as deliverer:
                result = await deliverer.ping(target)

    (request,) = receiver.received
    assert request.verified  # standardwebhooks accepts it with the old secret alone
    assert len(request.signatures) == 2  # ... because every secret signed it
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["x-env"] == "test"  # the endpoint's static headers too
    assert request.webhook_id == result.webhook_id
    assert result.webhook_id.startswith("msg_")
    assert request.body["type"] == "webhook.test"
    assert request.body["data"]["endpoint"] == "app"
    assert request.body["timestamp"].endswith("Z")

    assert result.ok
    assert (result.status_code, result.error, result.signatures) == (200, None, 2)
    assert result.answer == '{"received": true}'
    assert not result.answer_truncated
    assert result.duration_ms > 0
    # Not stored: no event, no delivery, nothing to retry.
    assert store.list_deliveries() == ([], None)
    assert store.count_deliveries() == {}
    (line,) = [e for e in logs if e["event"] == "webhook_test_sent"]
    assert (line["endpoint"], line["status_code"]) == ("app", 200)


async def test_each_ping_is_a_new_webhook_id() -> None:
    async with start_receiver() as receiver:
        target = endpoint("app", receiver.url("/hook"))
        async with running(MemoryStore(), [target]) as deliverer:
            first = await deliverer.ping(target)
            second = await deliverer.ping(target)
    assert first.webhook_id != second.webhook_id
    assert [r.webhook_id for r in receiver.received] == [first.webhook_id, second.webhook_id]


async def test_an_error_answer_is_reported_once_and_not_retried() -> None:
    async with start_receiver() as receiver:
        receiver.script("/hook", Reply(500, body=b"boom"), 200)
        target = endpoint("app", receiver.url("/hook"))
        async with running(MemoryStore(), [target]) as deliverer:
            result = await deliverer.ping(target)
    assert not result.ok
    assert (result.status_code, result.error, result.answer) == (500, "HTTP 500", "boom")
    assert len(receiver.received) == 1


async def test_the_answer_shown_is_bounded_and_never_carries_the_secret() -> None:
    secret = generate_secret()
    echoed = f"expected signature for {secret} (key {secret.removeprefix('whsec_')})"
    async with start_receiver(secrets=[secret]) as receiver:
        receiver.script("/echo", Reply(401, body=echoed.encode()))
        receiver.script("/long", Reply(200, body=json.dumps({"x": "y" * 5000}).encode()))
        echo = endpoint("echo", receiver.url("/echo"), secret)
        long = endpoint("long", receiver.url("/long"), secret)
        async with running(MemoryStore(), [echo, long]) as deliverer:
            refused = await deliverer.ping(echo)
            big = await deliverer.ping(long)

    assert refused.status_code == 401
    assert secret not in refused.answer
    assert secret.removeprefix("whsec_") not in refused.answer
    assert refused.answer.count(REDACTED) == 2
    assert big.ok
    assert big.answer_truncated
    assert len(big.answer.encode()) == ANSWER_PREVIEW_BYTES


async def test_an_endpoint_that_cannot_be_reached_or_signed_for_is_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    dead = endpoint("dead", f"http://127.0.0.1:{port}/hook", timeout_s=1.0)
    unsigned = EndpointConfig(name="bare", url="http://127.0.0.1:9/", secrets=())
    broken = EndpointConfig(
        name="broken", url="http://127.0.0.1:9/", secrets=(Secret("whsec_not base64!"),)
    )
    async with running(MemoryStore(), [dead], clock=ManualClock(start=NOW)) as deliverer:
        refused = await deliverer.ping(dead)
        no_secret = await deliverer.ping(unsigned)
        bad_secret = await deliverer.ping(broken)

    assert not refused.ok
    assert refused.status_code is None
    assert refused.error is not None
    assert refused.error.startswith("connection failed")
    assert refused.sent_at == NOW
    assert (no_secret.error, no_secret.signatures) == ("endpoint 'bare' has no secret", 0)
    assert bad_secret.error is not None
    assert "unusable secret" in bad_secret.error
    assert "not base64" not in bad_secret.error
