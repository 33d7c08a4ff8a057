"""Standard Webhooks signing: known vectors, and acceptance by an independent verifier."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from watcher.delivery.signing import sign, webhook_headers
from watcher.errors import InvalidSecret, WatcherError
from watcher.webhook_secret import decode_secret, generate_secret

# The example of the Standard Webhooks spec and its reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

BODY = b'{"type":"task.succeeded","data":{"task_id":"task_1","note":"caf\xc3\xa9"}}'


def test_spec_vector() -> None:
    assert sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, [SPEC_SECRET]) == SPEC_SIGNATURE


def test_secret_prefix_is_optional() -> None:
    bare = SPEC_SECRET.removeprefix("whsec_")
    assert sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, [bare]) == SPEC_SIGNATURE


def test_one_signature_per_secret_in_order() -> None:
    new = generate_secret()
    header = sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, [new, SPEC_SECRET])
    first, second = header.split(" ")
    assert first == sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, [new])
    assert second == SPEC_SIGNATURE


def test_signature_covers_id_timestamp_and_body() -> None:
    base = sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, [SPEC_SECRET])
    assert sign(SPEC_ID + "x", SPEC_TIMESTAMP, SPEC_BODY, [SPEC_SECRET]) != base
    assert sign(SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY, [SPEC_SECRET]) != base
    assert sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY + b" ", [SPEC_SECRET]) != base


def test_generated_secret_shape() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert generate_secret() != secret


def test_decode_secret_tolerates_missing_padding() -> None:
    key = bytes(range(31))  # 31 bytes: base64 ends in "="
    unpadded = "whsec_" + base64.b64encode(key).decode().rstrip("=")
    assert decode_secret(unpadded) == key


@pytest.mark.parametrize(
    "bad", ["whsec_not*base64!", "whsec_", "", "whsec_abc\u00e9", "whsec_A"], ids=repr
)
def test_bad_secret_is_rejected_without_echoing_it(bad: str) -> None:
    with pytest.raises(InvalidSecret) as info:
        decode_secret(bad)
    assert isinstance(info.value, WatcherError)
    payload = bad.removeprefix("whsec_")
    if payload:
        assert payload not in str(info.value)
        assert payload not in repr(info.value)


def test_signing_without_secrets_is_an_error() -> None:
    with pytest.raises(InvalidSecret):
        sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, [])


def test_headers() -> None:
    now = int(time.time())
    headers = webhook_headers("msg_1", now, BODY, [SPEC_SECRET], "apixo-watcher/1.2.3")
    assert headers == {
        "content-type": "application/json",
        "user-agent": "apixo-watcher/1.2.3",
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign("msg_1", now, BODY, [SPEC_SECRET]),
    }


def test_independent_verifier_accepts_our_headers() -> None:
    secret = generate_secret()
    headers = webhook_headers("msg_2", int(time.time()), BODY, [secret], "ua")
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "task.succeeded",
        "data": {"task_id": "task_1", "note": "café"},
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)


def test_rotation_either_secret_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    headers = webhook_headers("msg_3", int(time.time()), BODY, [new, old], "ua")
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)
