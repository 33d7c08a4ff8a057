"""An apixo-watcher webhook receiver with the Python standard library only (no packages).

    APP_WEBHOOK_SECRET=whsec_... python examples/receivers/python/receiver_stdlib.py

Listens on 127.0.0.1:9000 (set HOST and PORT to change; PORT=0 picks a free port) and accepts
`POST` on any path. `verify()` is the part to copy: Standard Webhooks v1 (HMAC-SHA256) checked
by hand, the same check as receiver_standardwebhooks.py. docs/receivers.md explains each step.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE_S = 5 * 60  # what Standard Webhooks libraries allow between the sender's clock and ours
MAX_BODY_BYTES = 1024 * 1024
SECRET = os.environ.get("APP_WEBHOOK_SECRET", "")  # "whsec_...", the endpoint's secret


class InvalidWebhook(Exception):
    """The request is not a webhook signed with our secret (or it is too old or too new)."""


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> Any:
    """The event, if `body` (the raw bytes, exactly as received) is signed with `secret`."""
    lowered = {name.lower(): value for name, value in headers.items()}
    webhook_id = lowered.get("webhook-id", "")
    timestamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (webhook_id and timestamp and signatures):
        raise InvalidWebhook("missing webhook-id, webhook-timestamp or webhook-signature")
    if not timestamp.isdigit():
        raise InvalidWebhook("webhook-timestamp is not Unix seconds")
    if abs(time.time() - int(timestamp)) > TOLERANCE_S:
        raise InvalidWebhook("webhook-timestamp is too far from our clock (a replay?)")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error as exc:
        raise InvalidWebhook("the secret is not whsec_ + base64") from exc
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.digest(key, signed, hashlib.sha256))
    # One signature per secret the sender holds (during a rotation, several): any may match.
    for signature in signatures.split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return json.loads(body)
    raise InvalidWebhook("no signature matches our secret")


# Webhooks arrive at least once: the same webhook-id may come again (a retry after a lost
# answer, a redeliver). Production code records it in its database, in the same transaction as
# the work, with a unique constraint; a set shows the idea.
seen: set[str] = set()
seen_lock = threading.Lock()
work: queue.Queue[tuple[str, Any]] = queue.Queue()


def process(webhook_id: str, event: Any) -> None:
    """The slow part (download results, update orders, ...), after the answer has gone."""
    data = event.get("data") or {}
    about = f" (task {data['task_id']})" if "task_id" in data else ""
    print(f"accepted {event.get('type')} {webhook_id}{about}", flush=True)


def worker() -> None:
    while True:
        process(*work.get())


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self.answer(400)
            return
        body = self.rfile.read(length)  # the raw bytes: never re-serialize before verifying
        try:
            event = verify(SECRET, dict(self.headers.items()), body)
        except (InvalidWebhook, ValueError) as exc:
            print(f"rejected: {exc}", flush=True)
            self.answer(400)
            return
        webhook_id = self.headers["webhook-id"]
        with seen_lock:
            repeat = webhook_id in seen
            seen.add(webhook_id)
        if repeat:
            print(f"duplicate {webhook_id} (already accepted)", flush=True)
        else:
            work.put((webhook_id, event))  # answer now, work later: the sender times out
        self.answer(204)

    def answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per webhook above is enough


def main() -> None:
    if not SECRET:
        sys.exit("set APP_WEBHOOK_SECRET to the endpoint's whsec_... secret")
    server = ThreadingHTTPServer(
        (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "9000"))), Handler
    )
    threading.Thread(target=worker, daemon=True).start()
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
