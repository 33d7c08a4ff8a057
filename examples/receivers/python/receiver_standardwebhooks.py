"""An apixo-watcher webhook receiver with the `standardwebhooks` package.

    pip install standardwebhooks
    APP_WEBHOOK_SECRET=whsec_... python examples/receivers/python/receiver_standardwebhooks.py

Listens on 127.0.0.1:9000 (set HOST and PORT to change; PORT=0 picks a free port) and accepts
`POST` on any path. The library checks the signature (any of them, during a rotation) and the
timestamp (5 minutes either way); the rest is the same as receiver_stdlib.py: the raw body,
idempotency by webhook-id, answer first and work later. docs/receivers.md explains each step.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

MAX_BODY_BYTES = 1024 * 1024

if not os.environ.get("APP_WEBHOOK_SECRET"):
    sys.exit("set APP_WEBHOOK_SECRET to the endpoint's whsec_... secret")
webhook = Webhook(os.environ["APP_WEBHOOK_SECRET"])  # "whsec_..."

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
            event = webhook.verify(body, dict(self.headers.items()))
        except (WebhookVerificationError, ValueError) as exc:  # ValueError: not even UTF-8
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
    server = ThreadingHTTPServer(
        (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "9000"))), Handler
    )
    threading.Thread(target=worker, daemon=True).start()
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
