"""The console's routes over HTTP: the static files and their security headers.

The page itself is tested in a real browser in tests/integration/console/.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.api.test_intake import TOKEN, Starter, assert_error, running_intake


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Starter]:  # each server in its own directory
    """Start intake servers (real SQLite, fake daemon) on demand; all stopped afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def _start(**kwargs: Any) -> Any:
            nonlocal count
            count += 1
            directory = tmp_path / str(count)
            directory.mkdir()
            return await stack.enter_async_context(running_intake(directory, **kwargs))

        yield _start


STATIC = [
    ("/ui/", "text/html"),
    ("/ui/app.js", "text/javascript"),
    ("/ui/app.css", "text/css"),
]


@pytest.mark.parametrize(("path", "content_type"), STATIC)
async def test_the_console_files_answer_without_the_token_with_a_strict_policy(
    start: Starter, path: str, content_type: str
) -> None:
    h = await start(token=TOKEN)
    answer = await h.call("GET", path, auth=False)

    assert answer.status == 200
    assert answer.headers["Content-Type"] == f"{content_type}; charset=utf-8"
    policy = answer.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no other host
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["img-src"] == "'self' https: http: data:"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in answer.headers


async def test_the_page_says_whether_the_daemon_wants_a_token(start: Starter) -> None:
    with_token = await start(token=TOKEN)
    without = await start()

    page = (await with_token.call("GET", "/ui/", auth=False)).text
    open_page = (await without.call("GET", "/ui/")).text

    assert '<meta name="apixo-watcher-auth" content="token">' in page
    assert '<meta name="apixo-watcher-auth" content="none">' in open_page
    assert TOKEN not in page


async def test_the_page_has_no_inline_script_and_names_no_other_host(start: Starter) -> None:
    h = await start()
    for path, _ in STATIC:
        text = (await h.call("GET", path)).text
        assert not re.search(r"https?://", text.replace("http://127.0.0.1", "")), path
    page = (await h.call("GET", "/ui/")).text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts
    assert all('src="' in attrs and not body.strip() for attrs, body in scripts)
    assert " style=" not in page
    assert "<style" not in page


async def test_an_unchanged_file_is_not_sent_again(start: Starter) -> None:
    h = await start()
    first = await h.call("GET", "/ui/app.js")
    again = await h.call("GET", "/ui/app.js", headers={"If-None-Match": first.headers["ETag"]})

    assert again.status == 304
    assert again.text == ""
    assert again.headers["Content-Security-Policy"]


async def test_bare_ui_redirects_and_unknown_files_are_json_404s(start: Starter) -> None:
    h = await start(token=TOKEN)
    async with h.session.get(h.base_url + "/ui", allow_redirects=False) as resp:
        assert resp.status == 308
        assert resp.headers["Location"] == "ui/"
    assert_error(await h.call("GET", "/ui/secrets.yaml", auth=False), 404, "not_found")
    assert_error(await h.call("GET", "/ui/..%2Fv1%2Ftasks", auth=False), 404, "not_found")


async def test_only_the_static_files_are_open(start: Starter) -> None:
    h = await start(token=TOKEN)
    for path in ("/v1/status", "/v1/tasks", "/v1/deliveries", "/ui/../v1/tasks"):
        assert_error(await h.call("GET", path, auth=False), 401, "unauthorized")
