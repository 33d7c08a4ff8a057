"""classify(): every upstream answer maps to the outcome FACTS.md asks for."""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import Any

import pytest

from watcher.upstream import classify as classify_module
from watcher.upstream.classify import REDACTED, PollOutcome, classify, parse_retry_after, shorten
from watcher.upstream.client import status_url

NOW = 1_700_000_000.0


def env(code: Any = 200, data: Any = None, message: str = "success") -> bytes:
    return json.dumps({"code": code, "message": message, "data": data}).encode()


PENDING = {"taskId": "task_1", "state": "pending"}

# (id, http status, body, retry-after, outcome, expected detail or None)
CASES: list[tuple[str, int, bytes, str | None, PollOutcome, str | None]] = [
    ("ok", 200, env(200, PENDING), None, PollOutcome.OK, "HTTP 200: success"),
    ("ok without code", 200, json.dumps({"data": PENDING}).encode(), None, PollOutcome.OK, None),
    ("body 400 on 200", 200, env(400, None, "bad"), None, PollOutcome.BAD_REQUEST, None),
    ("body 401 on 200", 200, env(401, None, "bad key"), None, PollOutcome.CREDENTIALS,
     "HTTP 200, code 401: bad key"),
    ("body 402 on 200", 200, env(402, None), None, PollOutcome.CREDENTIALS, None),
    ("body 403 on 200", 200, env(403, None), None, PollOutcome.CREDENTIALS, None),
    ("body 404 on 200", 200, env(404, None), None, PollOutcome.NOT_FOUND, None),
    ("body 429 on 200", 200, env(429, None), None, PollOutcome.RATE_LIMITED, None),
    ("body 500 on 200", 200, env(500, PENDING), None, PollOutcome.TRANSIENT, None),
    ("body odd code on 200", 200, env(7, PENDING), None, PollOutcome.TRANSIENT, None),
    ("http 400", 400, env(400, None, "taskId is required"), None, PollOutcome.BAD_REQUEST,
     "HTTP 400: taskId is required"),
    ("http 401", 401, env(401, None), None, PollOutcome.CREDENTIALS, None),
    ("http 402", 402, env(402, None), None, PollOutcome.CREDENTIALS, None),
    ("http 403", 403, b"", None, PollOutcome.CREDENTIALS, "HTTP 403"),
    ("http 401 html", 401, b"<html>no</html>", None, PollOutcome.CREDENTIALS, "HTTP 401"),
    ("http 404", 404, env(404, None, "Task not found"), None, PollOutcome.NOT_FOUND, None),
    ("http 429", 429, env(429, None), None, PollOutcome.RATE_LIMITED, None),
    ("http 500", 500, env(500, None, "boom"), None, PollOutcome.TRANSIENT, "HTTP 500: boom"),
    ("http 503", 503, env(503, None, "model temporarily unavailable"), None,
     PollOutcome.TRANSIENT, "HTTP 503: model temporarily unavailable"),
    ("http 502 html", 502, b"<html>bad gateway</html>", None, PollOutcome.TRANSIENT, "HTTP 502"),
    ("http 418", 418, b"", None, PollOutcome.TRANSIENT, None),
    ("http 302", 302, b"", None, PollOutcome.TRANSIENT, None),
    # A non-2xx status wins over a body code that is not an error...
    ("http 500 body 200", 500, env(200, PENDING), None, PollOutcome.TRANSIENT, None),
    ("http 404 body 200", 404, env(200, PENDING), None, PollOutcome.NOT_FOUND, None),
    # ...but an error code in the body is the application's own, more specific word.
    ("http 400 body 402", 400, env(402, None, "insufficient balance"), None,
     PollOutcome.CREDENTIALS, "HTTP 400, code 402: insufficient balance"),
    ("http 500 body 404", 500, env(404, None), None, PollOutcome.NOT_FOUND, None),
    ("body code as string ignored", 200, env("401", PENDING), None, PollOutcome.OK, None),
    ("body code bool ignored", 200, env(True, PENDING), None, PollOutcome.OK, None),
    ("malformed json", 200, b"{not json", None, PollOutcome.TRANSIENT,
     "HTTP 200: malformed answer (body is not a JSON object)"),
    ("not utf-8", 200, b"\xff\xfe\x00", None, PollOutcome.TRANSIENT, None),
    ("empty body", 200, b"", None, PollOutcome.TRANSIENT,
     "HTTP 200: malformed answer (empty body)"),
    ("json array", 200, b"[1, 2]", None, PollOutcome.TRANSIENT, None),
    ("data null", 200, env(200, None), None, PollOutcome.TRANSIENT,
     "HTTP 200: malformed answer (no data object)"),
    ("data string", 200, env(200, "pending"), None, PollOutcome.TRANSIENT, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "outcome", "detail"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_classify(
    status: int, body: bytes, retry_after: str | None, outcome: PollOutcome, detail: str | None
) -> None:
    result = classify(status, body, retry_after, now=NOW)
    assert result.outcome is outcome
    assert result.http_status == status
    if detail is not None:
        assert result.detail == detail
    if outcome is PollOutcome.OK:
        assert result.data == json.loads(body)["data"]
    else:
        assert result.data is None


def test_ok_keeps_data_verbatim_and_body_code() -> None:
    data = {"taskId": "t", "state": "success", "resultJson": "{}", "extra": [1, {"x": None}]}
    result = classify(200, env(200, data), None, now=NOW)
    assert result.data == data
    assert result.code == 200


def test_detail_is_short() -> None:
    result = classify(500, env(500, None, "x" * 5000), None, now=NOW)
    assert len(result.detail) <= 200


RETRY_AFTER: list[tuple[str, str | None, float | None]] = [
    ("absent", None, None),
    ("seconds", "7", 7.0),
    ("fraction", "1.5", 1.5),
    ("spaces", "  3 ", 3.0),
    ("zero", "0", 0.0),
    ("negative", "-4", None),
    ("garbage", "soon", None),
    ("empty", "", None),
    ("nan", "nan", None),
    ("date ahead", formatdate(NOW + 30, usegmt=True), 30.0),
    ("date past", formatdate(NOW - 30, usegmt=True), 0.0),
    ("date -0000", formatdate(NOW + 30), 30.0),
]


@pytest.mark.parametrize(
    ("value", "seconds"), [c[1:] for c in RETRY_AFTER], ids=[c[0] for c in RETRY_AFTER]
)
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds
    result = classify(429, env(429, None), value, now=NOW)
    assert result.outcome is PollOutcome.RATE_LIMITED
    assert result.retry_after_s == seconds


def test_retry_after_on_503() -> None:
    result = classify(503, env(503, None), "12", now=NOW)
    assert (result.outcome, result.retry_after_s) == (PollOutcome.TRANSIENT, 12.0)


def test_status_url_quotes_model_and_task_id() -> None:
    url = status_url("https://api.apixo.ai/api/v1/", "a/b c", "task_1&x=../y")
    assert url.raw_path == "/api/v1/statusTask/a%2Fb%20c"
    assert url.query["taskId"] == "task_1&x=../y"
    assert str(url).startswith("https://api.apixo.ai/api/v1/statusTask/a%2Fb%20c?taskId=task_1")


# --- poison answers: nesting deep enough to exhaust Python's recursion (issue 9, item 1) ------

DEEP = 1000  # about 2 KB of brackets: past the interpreter's default recursion limit


def deep_list(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("status", [200, 500, 401])
def test_a_deeply_nested_envelope_is_a_malformed_answer_not_a_crash(status: int) -> None:
    body = f'{{"code": {status}, "message": "x", "data": {deep_list(DEEP)}}}'.encode()
    result = classify(status, body, None, now=NOW)
    if status == 200:
        assert result.outcome is PollOutcome.TRANSIENT
        assert result.detail == "HTTP 200: malformed answer (body is not a JSON object)"
    else:  # the status still decides; the body only could not add a message
        assert result.outcome is classify(status, b"", None, now=NOW).outcome
    assert result.data is None


def test_a_deeply_nested_inline_result_json_is_a_malformed_answer() -> None:
    body = (
        '{"code": 200, "message": "success", "data": {"state": "success", "resultJson": '
        + '{"resultUrls": ' * DEEP
        + "[]"
        + "}" * DEEP
        + "}}"
    ).encode()
    result = classify(200, body, None, now=NOW)
    assert result.outcome is PollOutcome.TRANSIENT
    assert result.data is None


def test_nesting_up_to_the_limit_is_kept() -> None:
    data = {"state": "pending", "deep": json.loads(deep_list(60))}
    result = classify(200, env(200, data), None, now=NOW)
    assert result.outcome is PollOutcome.OK
    assert result.data == data


# --- the API key echoed back (issue 9, item 14) ------------------------------------------------

KEY = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e"


def leaked_prefix(text: str, secret: str = KEY, shortest: int = 6) -> str | None:
    """The longest start of `secret` (at least `shortest` characters) found in `text`."""
    for end in range(len(secret), shortest - 1, -1):
        if secret[:end] in text:
            return secret[:end]
    return None


@pytest.mark.parametrize("pad", range(150, 200))
def test_a_key_echoed_where_the_detail_is_cut_is_never_shown_in_part(pad: int) -> None:
    # The 200-character cut used to fall inside the key, and its first characters were kept.
    body = env(401, None, "x" * pad + f" invalid key {KEY} given")
    result = classify(401, body, None, now=NOW, secrets=[KEY])
    assert result.outcome is PollOutcome.CREDENTIALS
    assert len(result.detail) <= 200
    assert leaked_prefix(result.detail) is None


def test_a_key_echoed_anywhere_in_an_answer_is_replaced_before_it_is_read() -> None:
    data = {"state": "failed", "failCode": "AUTH", "failMsg": f"key {KEY} lacks a scope"}
    result = classify(200, env(200, data, f"hello {KEY}"), None, now=NOW, secrets=[KEY])
    assert result.outcome is PollOutcome.OK
    assert result.data is not None
    assert result.data["failMsg"] == "key ********** lacks a scope"
    assert KEY not in result.detail


# -- the cache of details ----------------------------------------------------------------------
def _uncached_detail(status: int, body: bytes, secrets: tuple[str, ...]) -> str:
    """The detail as classify built it before details were cached (for answers that are not
    malformed): the same formula, scrubbed and cut by `shorten`."""
    envelope = json.loads(body) if body else None
    code = envelope.get("code") if isinstance(envelope, dict) else None
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    message = envelope.get("message") if isinstance(envelope, dict) else None
    head = f"HTTP {status}"
    if code is not None and code != status:
        head += f", code {code}"
    text = f"{head}: {message}" if isinstance(message, str) and message.strip() else head
    return shorten(text, secrets)


DETAIL_CASES = [
    (200, env(200, PENDING)),
    (200, env(200, PENDING, "all  good\n  here")),
    (200, env(401, None, "bad key sk-live-123")),
    (401, env(401, None, "key sk-live-123 rejected")),
    (503, env(503, None, "x" * 500)),  # too long to be kept, cut to 200 characters
    (500, env(500, None, "  ")),
    (429, b""),
    (404, env(404, None, "not found")),
]


@pytest.mark.parametrize("secrets", [(), ("sk-live-123",)])
def test_cached_details_are_the_details_built_afresh(secrets: tuple[str, ...]) -> None:
    for _ in range(3):  # the first round fills the cache, the next ones read it
        for status, body in DETAIL_CASES:
            detail = classify(status, body, None, now=NOW, secrets=secrets).detail
            assert detail == _uncached_detail(status, body, secrets)


def test_a_detail_cached_without_the_key_is_not_given_for_a_poll_with_it() -> None:
    body = env(401, None, "key sk-live-456 rejected")
    assert "sk-live-456" in classify(401, body, None, now=NOW).detail
    scrubbed = classify(401, body, None, now=NOW, secrets=("sk-live-456",)).detail
    assert "sk-live-456" not in scrubbed
    assert scrubbed == f"HTTP 401: key {REDACTED} rejected"


def test_the_cache_of_details_is_bounded() -> None:
    for i in range(classify_module._DETAILS_MAX * 3):
        detail = classify(500, env(500, None, f"failure {i}"), None, now=NOW).detail
        assert detail == f"HTTP 500: failure {i}"
        assert len(classify_module._DETAILS) <= classify_module._DETAILS_MAX
    long = "y" * (classify_module._CACHED_MESSAGE_MAX + 1)
    classify(500, env(500, None, long), None, now=NOW)
    assert all(key[2] != long for key in classify_module._DETAILS)
