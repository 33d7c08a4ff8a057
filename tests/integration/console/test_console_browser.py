"""The operator console in a real browser: headless Chromium driven by Playwright.

One daemon (with an intake token), one sandbox upstream and one receiver serve the whole module,
and one browser; each test opens a fresh browser context (its own sessionStorage). Every test
also checks, when it ends, that the page made no request to a host other than the daemon (the
image previews of the test's own loopback result URLs aside) and logged no console error.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from standardwebhooks import Webhook

from tests.helpers.browser import LAUNCH_ARGS, browser_required, find_chromium
from tests.helpers.console_scene import TOKEN, Scene, console_scene
from tests.integration.api.test_intake import FakeControl, FakeScheduler, make_config
from watcher.api.metrics import Metrics
from watcher.api.server import IntakeServer
from watcher.clock import ManualClock
from watcher.polling.learning import ModelStats
from watcher.service import WatchService
from watcher.store.adapter import AsyncAdapter
from watcher.store.sqlite import SqliteStore
from watcher.upstream.sandbox import error, failed, pending, processing, success

EXECUTABLE = find_chromium()
if EXECUTABLE is None:
    message = (
        "no Chromium for the console's browser tests: install Debian's chromium "
        "(apt-get install chromium; .ci/run does so as root)"
    )
    if browser_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

from playwright.async_api import (  # noqa: E402 (only once a browser is known to exist)
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    async_playwright,
    expect,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scene(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scene]:
    async with console_scene(tmp_path_factory.mktemp("console")) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=EXECUTABLE, args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Console:
    """One browser context on the console, with everything it requested and logged."""

    context: BrowserContext
    page: Page
    base: str  # the daemon: http://127.0.0.1:PORT
    images: str | None = None  # where the test's result URLs point (previews load from there)
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    allowed_errors: list[str] = field(default_factory=list)

    async def open(self, hash_: str = "", *, token: str | None = TOKEN) -> None:
        """Open the console (at `#hash_`) and give it the token when it asks."""
        await self.page.goto(f"{self.base}/ui/{hash_}")
        if token is not None:
            await self.page.get_by_label("Token", exact=True).fill(token)
            await self.page.get_by_role("button", name="Open the console").click()
        await expect(self.page.locator("#auth")).to_be_hidden()

    def listen(self) -> None:
        """Record every request, console error and uncaught exception of the page."""
        self.page.on("request", self._on_request)
        self.page.on("console", self._on_console)
        self.page.on("pageerror", self._on_page_error)

    def _on_request(self, request: Request) -> None:
        self.requests.append(request)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _on_page_error(self, exc: Exception) -> None:
        self.errors.append(f"page error: {exc}")

    def allow(self, text: str) -> None:
        """A console error this test provokes on purpose (e.g. a refused token)."""
        self.allowed_errors.append(text)

    def api_requests(self, path: str = "/v1/") -> list[Request]:
        return [r for r in self.requests if r.url.startswith(self.base + path)]

    def check_clean(self) -> None:
        allowed = (self.base + "/", "data:", *([self.images] if self.images else []))
        foreign = [r.url for r in self.requests if not r.url.startswith(allowed)]
        assert not foreign, f"requests to other hosts: {foreign}"
        unexpected = [e for e in self.errors if not any(a in e for a in self.allowed_errors)]
        assert not unexpected, f"console errors: {unexpected}"


@pytest_asyncio.fixture(loop_scope="module")
async def console(browser: Browser, scene: Scene) -> AsyncIterator[Console]:
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id="Europe/Berlin"
    )
    page = await context.new_page()
    c = Console(context, page, scene.base, str(scene.upstream_server.make_url("/img/")))
    c.listen()
    try:
        yield c
    finally:
        await context.close()
    c.check_clean()


def rows(page: Page) -> Any:
    return page.locator("table.list tbody tr[data-task-id]")


# -- auth ----------------------------------------------------------------------------------------
async def test_the_token_is_asked_once_kept_in_the_tab_and_sent_as_a_bearer_token(
    console: Console,
) -> None:
    page = console.page
    await page.goto(console.base + "/ui/")
    await expect(page.get_by_role("heading", name="Intake token")).to_be_visible()
    await expect(page.get_by_label("Token", exact=True)).to_be_focused()
    assert console.api_requests() == []  # it asks first instead of making a refused request

    console.allow("status of 401")
    await page.get_by_label("Token", exact=True).fill("not-the-token")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("alert")).to_have_text("The daemon did not accept this token.")

    await page.get_by_label("Token", exact=True).fill(TOKEN)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    await expect(page.locator("#readiness")).to_have_text("Ready")

    await page.reload()  # the same tab: no second prompt
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    await expect(page.locator("#auth")).to_be_hidden()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    assert await page.evaluate("sessionStorage.getItem('apixo-watcher.token')") == TOKEN
    assert await console.context.cookies() == []

    sent = [(await r.all_headers()).get("authorization") for r in console.api_requests()]
    refused = sent.count("Bearer not-the-token")
    assert refused >= 1
    assert sent[refused:] == [f"Bearer {TOKEN}"] * (len(sent) - refused)

    await page.get_by_role("button", name="Forget token").click()
    await expect(page.get_by_label("Token", exact=True)).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('apixo-watcher.token')") is None


# -- the task list -------------------------------------------------------------------------------
async def test_the_list_is_newest_first_filters_by_state_pages_and_finds_by_id(
    console: Console, scene: Scene
) -> None:
    await scene.add("list-pending", [pending()])
    await scene.add("list-done", [success((scene.image_url("result"),))], endpoints=["app"])
    await scene.add("list-failed", [failed()], endpoints=["app"])
    await scene.wait_task("list-failed", lambda t: t["state"] == "failed")
    await scene.wait_task("list-done", lambda t: t["state"] == "succeeded")

    page = console.page
    await console.open()
    await expect(rows(page).first).to_be_visible()
    ids = await rows(page).evaluate_all("rows => rows.map(r => r.dataset.taskId)")
    ours = [i for i in ids if i.startswith("list-")]
    assert ours == ["list-failed", "list-done", "list-pending"]
    # the daemon has learned from the two finished tasks: its per-model statistics show
    await expect(page.locator("#models")).to_contain_text("nano-banana")
    assert console.api_requests("/v1/stats/models") != []
    failed_row = page.locator('tr[data-task-id="list-failed"]')
    await expect(failed_row.get_by_text("failed", exact=True)).to_be_visible()  # in words

    await page.get_by_label("State").select_option("failed")
    await expect(page).to_have_url(re.compile(r"#/tasks\?state=failed$"))
    await expect(rows(page).filter(has_text="list-done")).to_have_count(0)
    await expect(page.locator('tr[data-task-id="list-failed"]')).to_be_visible()
    states = await rows(page).locator("td:nth-child(3)").all_inner_texts()
    assert set(states) == {"failed"}

    await page.goto(scene.ui + "#/tasks?limit=2")
    await expect(rows(page)).to_have_count(2)
    first_page = await rows(page).all_inner_texts()
    await page.get_by_role("button", name="Older →").click()
    await expect(page.get_by_text("Page 2")).to_be_visible()
    await expect(rows(page).first).not_to_have_text(first_page[0])
    second_page = await rows(page).all_inner_texts()
    assert not set(second_page) & set(first_page)
    await page.get_by_role("button", name="← Newer").click()
    await expect(page.get_by_text("Page 1")).to_be_visible()
    assert await rows(page).all_inner_texts() == first_page

    await page.get_by_label("Find a task").fill("list-done")
    await page.get_by_role("button", name="Find").click()
    await expect(page.get_by_role("heading", name="Task list-done")).to_be_visible()
    await expect(page.locator(".facts")).to_contain_text("succeeded")

    console.allow("status of 404")
    await page.goto(scene.ui + "#/tasks")
    await page.get_by_label("Find a task").fill("no-such-task")
    await page.keyboard.press("Enter")
    await expect(page.get_by_text("No task has the id")).to_contain_text("no-such-task")


# -- one task ------------------------------------------------------------------------------------
async def test_a_task_shows_its_timeline_attempts_results_and_previews(
    console: Console, scene: Scene
) -> None:
    scene.receiver.script("/crm", 500)  # the first attempt to crm fails, the retry succeeds
    urls = (scene.image_url("first"), scene.image_url("second"))
    await scene.add(
        "timeline-1",
        [pending(), processing(), success(urls)],
        endpoints=["app", "crm"],
        metadata={"order_id": 77},
    )
    await scene.wait_task(
        "timeline-1",
        lambda t: (
            len(t["deliveries"]) == 2 and all(d["status"] == "succeeded" for d in t["deliveries"])
        ),
    )

    page = console.page
    await console.open("#/tasks/timeline-1")
    timeline = page.locator("ol.timeline")
    await expect(timeline).to_contain_text("Registered from the intake API")
    items = await timeline.locator("li").all_inner_texts()
    text = "\n".join(items)
    assert "pending → processing" in text
    assert "processing → succeeded" in text
    assert "Event task.succeeded" in text
    assert re.search(
        r"Delivery attempt 1 to app \(task.succeeded\): succeeded HTTP 200 in [\d.]+ ms", text
    )
    assert re.search(r"Delivery attempt 1 to crm \(task.succeeded\): retry HTTP 500 in", text)
    assert re.search(r"Delivery attempt 2 to crm \(task.succeeded\): succeeded HTTP 200", text)
    assert re.search(r"Polled \d+ times in all", text)

    crm = page.locator("article.delivery").filter(has_text="crm")
    await expect(crm.locator("tbody tr")).to_have_count(2)
    await expect(crm.locator("tbody tr").first).to_contain_text("HTTP 500")
    await expect(page.locator("section[aria-labelledby=metadata-title] pre")).to_contain_text(
        '"order_id": 77'
    )

    # The result URLs are links, with previews that really loaded from the result host.
    for url in urls:
        await expect(page.locator(f'a[href="{url}"]')).to_be_visible()
    await page.wait_for_function(
        "[...document.querySelectorAll('.results img')]"
        ".every(i => i.complete && i.naturalWidth === 160)"
    )
    assert await page.locator(".results img").count() == 2

    # Local time on screen, UTC on hover.
    stamp = page.locator("ol.timeline time").first
    assert (await stamp.get_attribute("title") or "").endswith(" UTC")
    assert re.match(r"\d{4}-\d\d-\d\dT", await stamp.get_attribute("datetime") or "")


# -- actions -------------------------------------------------------------------------------------
async def test_redeliver_sends_a_failed_delivery_again_with_the_same_webhook_id(
    console: Console, scene: Scene
) -> None:
    scene.receiver.script("/crm", 500, 500)  # both attempts of the schedule fail
    await scene.add("redeliver-1", [success((scene.image_url("result"),))], endpoints=["crm"])
    task = await scene.wait_task("redeliver-1", lambda t: t["deliveries"][0]["status"] == "failed")
    webhook_id = task["deliveries"][0]["webhook_id"]
    delivery_id = task["deliveries"][0]["delivery_id"]
    before = len(scene.receiver.on("/crm"))

    page = console.page
    await console.open()
    await page.get_by_role("link", name="Deliveries").click()
    await page.get_by_label("Status").select_option("failed")
    row = page.locator(f'tr[data-delivery-id="{delivery_id}"]')
    await expect(row).to_contain_text("failed")
    await row.get_by_role("button", name=f"Redeliver {delivery_id}").click()

    await scene.receiver.wait_for(before + 1, path="/crm")
    again = scene.receiver.on("/crm")[-1]
    assert again.webhook_id == webhook_id
    assert again.verified
    Webhook(scene.secret).verify(again.raw_body, dict(again.headers))  # raises if it is not
    await expect(page.locator("#announce")).to_contain_text(f"Redelivery of {delivery_id} queued")
    await scene.wait_task("redeliver-1", lambda t: t["deliveries"][0]["status"] == "succeeded")
    await expect(row).to_have_count(0)  # no longer failed: gone from the failed filter


async def test_cancel_stops_watching_a_task_with_the_keyboard_only(
    console: Console, scene: Scene
) -> None:
    await scene.add("cancel-1", [pending()])
    await scene.wait_task("cancel-1", lambda t: t["polls"] >= 1)

    page = console.page
    await console.open("#/tasks/cancel-1")
    await expect(page.locator(".facts")).to_contain_text("pending")
    await page.get_by_role("button", name="Cancel watching…").focus()
    await page.keyboard.press("Enter")
    confirm = page.get_by_role("button", name="Yes, stop watching")
    await expect(confirm).to_be_focused()
    await page.keyboard.press("Enter")

    await expect(page.locator(".facts")).to_contain_text("cancelled")
    await expect(page.get_by_role("button", name="Cancel watching…")).to_have_count(0)
    task = await scene.get("/v1/tasks/cancel-1")
    assert task["state"] == "cancelled"
    assert scene.daemon.scheduler is not None
    assert scene.daemon.scheduler.get("cancel-1") is None


# -- escaping ------------------------------------------------------------------------------------
MARKUP = '<img src="x" onerror="window.__pwned = 1"><script>window.__pwned = 2</script>'


async def test_markup_in_data_is_shown_as_text_and_runs_nothing(
    console: Console, scene: Scene
) -> None:
    await scene.add(
        "markup-1",
        [failed("<b>BAD</b>", MARKUP)],
        endpoints=["app"],
        metadata={"note": MARKUP, "<i>key</i>": "<a href='javascript:alert(1)'>x</a>"},
    )
    await scene.wait_task("markup-1", lambda t: t["state"] == "failed")

    page = console.page
    await console.open("#/tasks/markup-1")
    await expect(page.locator(".facts")).to_contain_text("failed")
    metadata = await page.locator("section[aria-labelledby=metadata-title] pre").inner_text()
    assert MARKUP.replace('"', '\\"') in metadata
    assert "<i>key</i>" in metadata
    await expect(page.get_by_text("The upstream says")).to_contain_text(f"<b>BAD</b> {MARKUP}")

    # A task id typed into the address bar is shown as text too.
    console.allow("status of 404")
    await page.goto(scene.ui + "#/tasks/" + "%3Cimg%20src%3Dx%20onerror%3Dwindow.__pwned%3D3%3E")
    await expect(page.get_by_text("No task has the id")).to_contain_text("<img src=x")

    await page.goto(scene.ui + "#/tasks/markup-1")
    await expect(page.locator(".facts")).to_contain_text("failed")
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("#view img, #view script, #view b, #view i").count() == 0
    assert await page.locator('#view a[href^="javascript:"]').count() == 0

    # And the policy would stop an injected inline script anyway.
    console.allow("Content Security Policy")
    with pytest.raises(Exception, match=r"Content Security Policy|Refused"):
        await page.add_script_tag(content="window.__pwned = 4")
    assert await page.evaluate("window.__pwned") is None


# -- the banner and the refresh ------------------------------------------------------------------
async def test_the_banner_shows_a_slow_down_and_a_credential_pause_and_refreshes_itself(
    browser: Browser, tmp_path: Path
) -> None:
    """A daemon of its own (no token: no prompt), as both conditions stop its polling."""
    async with console_scene(tmp_path / "a", token=None) as slowed:
        context = await browser.new_context()
        page = await context.new_page()
        c = Console(context, page, slowed.base)
        c.listen()
        await page.clock.install()
        await c.open(token=None)
        await expect(page.locator("#readiness")).to_have_text("Ready")
        await expect(page.locator("#banners")).to_be_empty()

        await slowed.add("slow-1", [error(429, "slow down", retry_after="600")])
        await until(lambda: slowed.daemon.snapshot().polling.rate_limited_until is not None)
        await page.clock.run_for(5_000)  # the next refresh, without a reload
        await expect(page.locator("#banners")).to_contain_text(
            "Slowed down: the upstream asked for fewer requests."
        )

        # While the tab is hidden the page asks nothing; shown again, it refreshes at once.
        await page.evaluate(
            "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
            "document.dispatchEvent(new Event('visibilitychange'))"
        )
        asked = len(c.api_requests())
        await page.clock.run_for(60_000)
        assert len(c.api_requests()) == asked
        await page.evaluate(
            "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});"
            "document.dispatchEvent(new Event('visibilitychange'))"
        )
        await until(lambda: len(c.api_requests()) > asked)
        await context.close()
        c.check_clean()

    async with console_scene(tmp_path / "b", token=None) as paused:
        context = await browser.new_context()
        page = await context.new_page()
        c = Console(context, page, paused.base)
        c.listen()
        await paused.add("paused-1", [error(401, "Invalid or missing API key")])
        await until(lambda: paused.daemon.snapshot().polling.credentials_paused)
        await c.open(token=None)
        await expect(page.locator("#readiness")).to_have_text("Not ready")
        banners = page.locator("#banners")
        await expect(banners).to_contain_text("Polling is paused: upstream rejected the API key")
        await expect(banners).to_contain_text("Not ready:")
        await context.close()
        c.check_clean()


async def until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_per_model_statistics_show_once_the_daemon_serves_them(
    browser: Browser, tmp_path: Path
) -> None:
    """`GET /v1/stats/models` with a model the adaptive strategy learned (a scheduler that
    knows sora-2 stands in for one that ran for a while)."""
    config = make_config(tmp_path)
    store = SqliteStore(config.store.path)
    scheduler = FakeScheduler()
    scheduler.stats = [ModelStats("sora-2", 240, 61.2, 95.0, 180.4, "adaptive", 4.25, 1.9)]
    service = WatchService(
        store=AsyncAdapter(store), config=config, clock=ManualClock(), scheduler=scheduler
    )
    server = IntakeServer(
        service=service, config=config.intake, control=FakeControl(), metrics=Metrics()
    )
    await server.start()
    context = await browser.new_context()
    try:
        c = Console(context, await context.new_page(), f"http://{server.address}")
        c.listen()
        await c.open(token=None)
        models = c.page.locator("#models")
        await expect(models).to_be_visible()
        await expect(models.get_by_role("row").nth(1)).to_contain_text("sora-2")
        await expect(models.get_by_role("row").nth(1)).to_contain_text("adaptive")
        await expect(models.get_by_role("row").nth(1)).to_contain_text("180.4")
        await context.close()
        c.check_clean()
    finally:
        await server.stop()
        store.close()
