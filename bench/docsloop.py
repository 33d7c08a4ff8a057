"""The upstream docs' own polling loop (`wait_for_result` in statusTask.txt), run as its own
process: one thread per task, a blocking GET, `time.sleep(3)` between polls, 60 attempts.

`python -m bench.docsloop BASE_URL TASK_ID...` (ids read from stdin, one per line, when none
are given) prints `{"client", "polls", "results": [[task_id, detected_at], ...]}`. Uses
`requests` exactly as the docs do when it is installed, else `urllib.request`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

try:
    import requests

    CLIENT = f"requests {requests.__version__}"

    def _get(url: str, task_id: str, api_key: str) -> dict[str, Any]:
        response = requests.get(
            url,
            params={"taskId": task_id},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
        )
        data: dict[str, Any] = response.json()["data"]
        return data

except ImportError:  # pragma: no cover - depends on the environment
    import urllib.parse
    import urllib.request

    CLIENT = "urllib.request (stdlib)"

    def _get(url: str, task_id: str, api_key: str) -> dict[str, Any]:
        query = urllib.parse.urlencode({"taskId": task_id})
        request = urllib.request.Request(
            f"{url}?{query}", headers={"Authorization": f"Bearer {api_key}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            data: dict[str, Any] = json.loads(response.read())["data"]
            return data


_lock = threading.Lock()
_polls = 0


def wait_for_result(
    base_url: str, model: str, task_id: str, api_key: str, on_poll: Callable[[], None]
) -> list[str]:
    """The docs' function, verbatim apart from the base URL and a poll counter."""
    max_attempts = 60
    poll_interval = 3  # seconds
    for _ in range(max_attempts):
        data = _get(f"{base_url}/statusTask/{model}", task_id, api_key)
        on_poll()
        if data["state"] == "success":
            urls: list[str] = json.loads(data["resultJson"])["resultUrls"]
            return urls
        if data["state"] == "failed":
            raise Exception(f"{data['failCode']}: {data['failMsg']}")
        time.sleep(poll_interval)
    raise Exception("Timeout waiting for result")


def main(argv: list[str]) -> None:
    base_url = argv[0]
    ids = argv[1:] or [line.strip() for line in sys.stdin if line.strip()]
    results: list[tuple[str, float]] = []
    errors: list[str] = []

    def count() -> None:
        global _polls
        with _lock:
            _polls += 1

    def run(task_id: str) -> None:
        try:
            wait_for_result(base_url, "nano-banana", task_id, "sk-bench", count)
        except Exception as exc:
            with _lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            return
        with _lock:
            results.append((task_id, time.time()))

    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    out = {"client": CLIENT, "polls": _polls, "results": results, "errors": errors[:5]}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
