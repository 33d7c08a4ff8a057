"""The operator console with 100,000 tasks in the store (`python -m bench --only console`).

- the task list's first page as the console asks for it (`GET /v1/tasks?limit=50`, also with a
  state filter), timed from a keep-alive client: request sent -> body read;
- the page's total transfer in headless Chromium until the list is usable (response headers and
  bodies of every request: the page, its script and style sheet, `/v1/status`, the first page);
- time to a usable list: navigation start -> the first page rendered (the page's own
  `apixo:list-ready` performance mark), cold (a fresh browser context, empty cache).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import aiohttp

from bench import report
from bench.procs import log
from bench.scenarios import Env, _daemon, _fresh_db
from tests.helpers.browser import LAUNCH_ARGS, find_chromium

PAGE = "/v1/tasks?limit=50"  # what the console asks for (app.js PAGE_SIZE)
WARMUP = 5
SAMPLES = 50
LOADS = 5


async def _time_get(http: aiohttp.ClientSession, url: str) -> list[float]:
    out = []
    for i in range(WARMUP + SAMPLES):
        t0 = time.perf_counter()
        async with http.get(url) as resp:
            body = await resp.read()
            assert resp.status == 200, body[:200]
        if i >= WARMUP:
            out.append((time.perf_counter() - t0) * 1000)
    return out


async def _browser_loads(url: str) -> list[dict[str, float]]:
    from playwright.async_api import Request, async_playwright

    executable = find_chromium()
    if executable is None:
        raise RuntimeError("no Chromium: install Debian's chromium (see docs/console.md)")
    loads = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            for _ in range(LOADS):
                context = await browser.new_context(viewport={"width": 1280, "height": 800})
                page = await context.new_page()
                requests: list[Request] = []
                page.on("request", lambda r, seen=requests: seen.append(r))
                await page.goto(url)
                await page.wait_for_selector("body[data-ready=tasks]")
                usable_ms = await page.evaluate(
                    "performance.getEntriesByName('apixo:list-ready')[0].startTime"
                )
                rows = await page.locator("table.list tbody tr").count()
                transfer = 0
                for request in requests:
                    if request.url.startswith("data:"):
                        continue
                    sizes = await request.sizes()
                    transfer += sizes["responseBodySize"] + sizes["responseHeadersSize"]
                loads.append(
                    {
                        "usable_ms": float(usable_ms),
                        "transfer_bytes": float(transfer),
                        "requests": float(len(requests)),
                        "rows": float(rows),
                    }
                )
                await context.close()
        finally:
            await browser.close()
    return loads


async def console(env: Env) -> dict[str, Any]:
    db = _fresh_db(env, "console", env.base_100k)
    daemon = await _daemon(env, "console", db)
    try:
        base = daemon.intake_url()
        async with aiohttp.ClientSession() as http:
            first_page = await _time_get(http, base + PAGE)
            filtered = await _time_get(http, base + PAGE + "&state=pending")
            async with http.get(base + PAGE) as resp:
                page_bytes = len(await resp.read())
        log(f"console: first page p50 {statistics.median(first_page):.1f} ms")
        loads = await _browser_loads(base + "/ui/")
    finally:
        await daemon.stop()
    usable = [load["usable_ms"] for load in loads]
    transfer = max(load["transfer_bytes"] for load in loads)
    return report.console_section(
        first_page_ms=first_page,
        transfer_bytes=transfer,
        usable_ms=usable,
        tasks=100_000,
        filtered_page_p95_ms=round(report.percentile(filtered, 95) or 0.0, 2),
        first_page_json_bytes=page_bytes,
        requests_until_usable=int(loads[0]["requests"]),
        rows_shown=int(loads[0]["rows"]),
    )
