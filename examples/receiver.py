"""A tiny webhook receiver that verifies apixo-watcher's signatures (for the README's loop).

    pip install aiohttp standardwebhooks
    APP_WEBHOOK_SECRET=whsec_... python examples/receiver.py   # 127.0.0.1:9000/hooks/apixo
    APP_WEBHOOK_SECRET=$(cat var/webhook-secret) python examples/receiver.py   # after `make run`

It answers 204 to a verified webhook and 401 otherwise, and prints what arrived, one line at a
time (flushed, so `python examples/receiver.py > hooks.log` shows each webhook as it arrives).
Webhooks are delivered at least once: a real receiver keeps the `webhook-id`s it has handled
and ignores a repeat. `--port` and `--host` choose where it listens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

seen: set[str] = set()


def say(text: str) -> None:
    # Flushed per line: redirected to a file, stdout would otherwise hold lines back in a buffer.
    print(text, flush=True)


async def hook(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        event = Webhook(os.environ["APP_WEBHOOK_SECRET"]).verify(body, dict(request.headers))
    except WebhookVerificationError as exc:
        say(f"rejected: {exc}")
        return web.Response(status=401)
    webhook_id = request.headers["webhook-id"]
    repeat = " (repeat, ignored)" if webhook_id in seen else ""
    seen.add(webhook_id)
    data = event["data"]
    say(
        f"verified {event['type']} for {data.get('task_id', '(test event)')} [{webhook_id}]{repeat}"
    )
    say(json.dumps(data.get("result_urls") or data.get("fail_msg") or data, indent=2))
    return web.Response(status=204)


def main() -> None:
    parser = argparse.ArgumentParser(description="Verify and print apixo-watcher webhooks.")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="default: 9000")
    args = parser.parse_args()
    if not os.environ.get("APP_WEBHOOK_SECRET"):
        sys.exit("set APP_WEBHOOK_SECRET to the endpoint's secret (make run: var/webhook-secret)")
    # A success carries the upstream's whole answer: allow more than aiohttp's 1 MiB default.
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post("/hooks/apixo", hook)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        print=lambda text: say(text.strip()),
    )


if __name__ == "__main__":
    main()
