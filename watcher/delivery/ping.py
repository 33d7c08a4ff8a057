"""`apixo-watcher ping`: one signed `webhook.test` event to one endpoint, sent once, now.

It is signed exactly like a real webhook (the same headers, one signature per configured
secret), so a receiver that accepts it accepts the real ones. It is not stored: no event, no
delivery, no retry, nothing in the delivery log or the webhook metrics. What comes back (status,
latency, the start of the answer) is for the operator; secrets are cut out of the answer first,
in case a receiver echoes one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Final

from watcher.delivery.events import TEST_EVENT_TYPE, build_test_body
from watcher.delivery.sender import Target, WebhookClient, request_headers
from watcher.errors import InvalidSecret
from watcher.ids import new_id
from watcher.logs import REDACTED, scrubber

ANSWER_PREVIEW_BYTES: Final = 512  # how much of the endpoint's answer a ping shows


@dataclass(frozen=True, slots=True)
class PingResult:
    """What one test event met."""

    endpoint: str
    event_type: str
    webhook_id: str
    sent_at: float  # Unix seconds
    signatures: int  # how many secrets signed it
    duration_ms: float
    status_code: int | None  # None: no answer (`error` says why)
    error: str | None
    answer: str  # the start of the answer body, decoded, secrets redacted
    answer_truncated: bool

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def send_test_event(
    client: WebhookClient,
    endpoint: str,
    target: Target | str,
    *,
    now: float,
    user_agent: str,
) -> PingResult:
    """Sign and POST one `webhook.test` event to `target` (or report why it cannot be sent)."""
    webhook_id = new_id("msg_", now=now)
    failed = PingResult(
        endpoint=endpoint,
        event_type=TEST_EVENT_TYPE,
        webhook_id=webhook_id,
        sent_at=now,
        signatures=0,
        duration_ms=0.0,
        status_code=None,
        error=None,
        answer="",
        answer_truncated=False,
    )
    if isinstance(target, str):
        return dataclasses.replace(failed, error=target)
    body = build_test_body(endpoint, now=now)
    try:
        headers = request_headers(webhook_id, target, body, int(now), user_agent)
    except InvalidSecret as exc:
        reason = f"endpoint '{endpoint}' has an unusable secret: {exc}"
        return dataclasses.replace(failed, error=reason)
    started = time.perf_counter()
    result, raw = await client.post_and_read(target, body, headers, keep_bytes=ANSWER_PREVIEW_BYTES)
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return PingResult(
        endpoint=endpoint,
        event_type=TEST_EVENT_TYPE,
        webhook_id=webhook_id,
        sent_at=now,
        signatures=len(target.secrets),
        duration_ms=duration_ms,
        status_code=result.status_code,
        error=None if result.ok else result.describe(),
        answer=_preview(raw[:ANSWER_PREVIEW_BYTES], target.secrets),
        answer_truncated=len(raw) > ANSWER_PREVIEW_BYTES,
    )


def _preview(raw: bytes, secrets: tuple[str, ...]) -> str:
    """The answer's first bytes as text, with the endpoint's secrets (whole, or the base64 key
    after `whsec_`) and every other secret the daemon knows replaced."""
    text = raw.decode("utf-8", "replace")
    for secret in sorted(secrets, key=len, reverse=True):
        key = secret.removeprefix("whsec_")
        for value in (secret, key):
            if len(value) >= 6:
                text = text.replace(value, REDACTED)
    return scrubber.redact(text)
