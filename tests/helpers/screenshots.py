"""`make screenshots`: regenerate the console screenshots in docs/ (docs/console.md shows them).

    python -m tests.helpers.screenshots [OUT_DIR]

Starts the real daemon against the sandbox with a handful of tasks in every state, opens the
console in headless Chromium (local time: Europe/Berlin, so the UTC-on-hover is visibly
different) and saves PNGs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path

import structlog
from playwright.async_api import Page, async_playwright

from tests.helpers.browser import LAUNCH_ARGS, find_chromium
from tests.helpers.console_scene import Scene, console_scene
from watcher.upstream.sandbox import error, failed, pending, processing, success

ROOT = Path(__file__).resolve().parents[2]


async def populate(scene: Scene) -> None:
    """Tasks in every state, a failed delivery and a retried one."""
    scene.receiver.script("/crm", 500, 503, 500, 500)
    await scene.add(
        "img_7f3a91c2",
        [pending(), processing(), success((scene.image_url("sunset"), scene.image_url("dunes")))],
        metadata={"order_id": 4211, "customer": "acme"},
    )
    await scene.add(
        "img_51bd0e77",
        [processing(), success((scene.image_url("harbour"),))],
        endpoints=["app", "crm"],
        metadata={"order_id": 4212},
    )
    await scene.add(
        "vid_0c44e1a9",
        [processing(), failed("CONTENT_VIOLATION", "Content violates usage policy")],
        model="sora-2",
        metadata={"order_id": 4213},
    )
    await scene.add("img_9a0d2b5e", [pending()], metadata={"order_id": 4214})
    await scene.add("vid_e2b7c830", [processing()], model="sora-2", metadata={"order_id": 4215})
    await scene.add("img_3c9e6f10", [error(500, "upstream hiccup"), pending()])
    for task_id in ("img_7f3a91c2", "img_51bd0e77", "vid_0c44e1a9"):
        await scene.wait_task(task_id, lambda t: t["state"] in ("succeeded", "failed"))
    await scene.wait_task(
        "img_51bd0e77", lambda t: any(d["status"] == "failed" for d in t["deliveries"])
    )
    await scene.wait_task("vid_e2b7c830", lambda t: t["state"] == "processing")
    # Last, as it holds back every poll: the upstream asks for fewer requests (the banner).
    await scene.add("img_b4e0a7d1", [error(429, "Too many requests", retry_after="900")])
    await scene.wait_task("img_b4e0a7d1", lambda t: t["polls"] >= 1)


async def open_console(page: Page, scene: Scene, hash_: str = "") -> None:
    await page.goto(scene.ui + hash_)
    if scene.token:
        await page.get_by_label("Token", exact=True).fill(scene.token)
        await page.get_by_role("button", name="Open the console").click()
    await page.wait_for_selector("table.list tbody tr")


async def take(out: Path) -> list[Path]:
    executable = find_chromium()
    if executable is None:
        raise SystemExit("no Chromium found: install Debian's chromium (see docs/console.md)")
    out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with console_scene(Path(tmp)) as scene, async_playwright() as p:
            await populate(scene)
            browser = await p.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
            try:
                desktop = await browser.new_context(
                    viewport={"width": 1280, "height": 800},
                    locale="en-GB",
                    timezone_id="Europe/Berlin",
                    color_scheme="light",
                )
                page = await desktop.new_page()
                await page.goto(scene.ui)
                await page.wait_for_selector("#auth:not([hidden])")
                shots.append(out / "console-token.png")
                await page.screenshot(path=shots[-1])

                await open_console(page, scene)
                shots.append(out / "console-tasks.png")
                await page.screenshot(path=shots[-1], full_page=True)

                await page.goto(scene.ui + "#/tasks/img_51bd0e77")
                await page.wait_for_selector("article.delivery")
                await page.wait_for_function(
                    "[...document.images].every(i => i.complete && i.naturalWidth > 0)"
                )
                shots.append(out / "console-task.png")
                await page.screenshot(path=shots[-1], full_page=True)

                await page.goto(scene.ui + "#/deliveries?status=failed")
                await page.wait_for_selector("table.list tbody tr[data-delivery-id]")
                shots.append(out / "console-deliveries.png")
                await page.screenshot(path=shots[-1])

                phone = await browser.new_context(
                    viewport={"width": 390, "height": 844},
                    device_scale_factor=1,
                    locale="en-GB",
                    timezone_id="Europe/Berlin",
                    color_scheme="dark",
                    is_mobile=True,
                    has_touch=True,
                )
                page = await phone.new_page()
                await open_console(page, scene)
                shots.append(out / "console-phone.png")
                await page.screenshot(path=shots[-1])
            finally:
                await browser.close()
    return shots


def main() -> None:
    # The daemon logs through structlog; only its warnings are of interest here.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs"
    for path in asyncio.run(take(out)):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
