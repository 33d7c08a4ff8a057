"""Standard Webhooks signing (v1, HMAC-SHA256).

A signature is `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")), where
the key is the base64-decoded part of a `whsec_...` secret. During a rotation an endpoint has
several secrets; every one of them signs, and the signatures are sent space-separated, so a
receiver holding either the old or the new secret verifies the same request.

Pure functions, no I/O. Nothing here puts a secret (or a signature) into an error message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from watcher.errors import InvalidSecret
from watcher.webhook_secret import decode_secret


def sign(webhook_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """The `webhook-signature` header value: one `v1,<base64>` per secret, in the given order."""
    if not secrets:
        raise InvalidSecret("no webhook secret to sign with")
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signatures = []
    for secret in secrets:
        digest = hmac.digest(decode_secret(secret), signed, hashlib.sha256)
        signatures.append("v1," + base64.b64encode(digest).decode("ascii"))
    return " ".join(signatures)


def webhook_headers(
    webhook_id: str, timestamp: int, body: bytes, secrets: Sequence[str], user_agent: str
) -> dict[str, str]:
    """Every header a webhook request carries (contract section 6)."""
    return {
        "content-type": "application/json",
        "user-agent": user_agent,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(webhook_id, timestamp, body, secrets),
    }
