"""A tiny webhook receiver that verifies apixo-watcher's signatures (for the README's loop).

    pip install aiohttp standardwebhooks
    APP_WEBHOOK_SECRET=whsec_... python examples/receiver.py   # 127.0.0.1:9000/hooks/apixo

It answers 204 to a verified webhook and 401 otherwise, and prints what arrived. Webhooks are
delivered at least once: a real receiver keeps the `webhook-id`s it has handled and ignores a
repeat.
"""

from __future__ import annotations

import json
import os

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

seen: set[str] = set()


async def hook(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        event = Webhook(os.environ["APP_WEBHOOK_SECRET"]).verify(body, dict(request.headers))
    except WebhookVerificationError as exc:
        print(f"rejected: {exc}")
        return web.Response(status=401)
    webhook_id = request.headers["webhook-id"]
    repeat = " (repeat, ignored)" if webhook_id in seen else ""
    seen.add(webhook_id)
    data = event["data"]
    print(f"verified {event['type']} for {data['task_id']} [{webhook_id}]{repeat}")
    print(json.dumps(data.get("result_urls") or data.get("fail_msg") or data, indent=2))
    return web.Response(status=204)


if __name__ == "__main__":
    # A success carries the upstream's whole answer: allow more than aiohttp's 1 MiB default.
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post("/hooks/apixo", hook)
    web.run_app(app, host="127.0.0.1", port=9000)
