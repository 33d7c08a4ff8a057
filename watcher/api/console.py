"""The operator console: a web page served from the intake listener at `/ui/`.

Plain HTML, CSS and JavaScript shipped in the package (watcher/api/ui/), no build step. The
files are read once and answer without the intake token (they hold no data); the page itself
asks for the token when one is configured and sends it as a bearer token on every API call,
which uses the same JSON routes as the CLI. docs/console.md describes it.

Every console answer carries a Content-Security-Policy that allows scripts, styles and API
calls from this origin only (no inline script, no CDN) and images from anywhere (the previews
of a task's result URLs), and forbids framing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

UI_PATH = "/ui/"
# Route names of the console's static files: the auth middleware lets these through.
OPEN_ROUTE_NAMES = frozenset({"console_redirect", "console_index", "console_file"})

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # Previews load from the tasks' own result URLs, wherever the upstream put them.
        "img-src 'self' https: http: data:",
        "connect-src 'self'",
        "font-src 'none'",
        "object-src 'none'",
        "media-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Revalidate every time (cheap: ETag), so an upgraded daemon serves its new page at once.
    "Cache-Control": "no-cache",
}

_FILES = {
    "app.js": "text/javascript",
    "app.css": "text/css",
}
# The page tells the script whether the daemon wants a token, so a first visit asks for it
# instead of making a request that is bound to be refused.
_AUTH_PLACEHOLDER = b'content="auth-unknown"'


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> StaticFile:
        return cls(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _read(name: str) -> bytes:
    return (resources.files("watcher.api") / "ui" / name).read_bytes()


class Console:
    """The console's routes; `token_required` is asked per request (a reload may change it)."""

    def __init__(self, token_required: Callable[[], bool]) -> None:
        self._token_required = token_required
        index = _read("index.html")
        if _AUTH_PLACEHOLDER not in index:
            raise RuntimeError("watcher/api/ui/index.html lost its auth placeholder")
        self._index = {
            required: StaticFile.of(
                index.replace(
                    _AUTH_PLACEHOLDER, b'content="token"' if required else b'content="none"'
                ),
                "text/html",
            )
            for required in (True, False)
        }
        self._files = {name: StaticFile.of(_read(name), kind) for name, kind in _FILES.items()}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/ui", self._redirect, allow_head=False, name="console_redirect")
        router.add_get(UI_PATH, self._index_page, allow_head=False, name="console_index")
        router.add_get(UI_PATH + "{file}", self._file, allow_head=False, name="console_file")

    async def _redirect(self, request: web.Request) -> web.Response:
        # Relative, so the page also works behind a proxy that serves it under a sub-path.
        return web.Response(status=308, headers={**SECURITY_HEADERS, "Location": "ui/"})

    async def _index_page(self, request: web.Request) -> web.Response:
        return _answer(request, self._index[self._token_required()])

    async def _file(self, request: web.Request) -> web.Response:
        found = self._files.get(request.match_info["file"])
        if found is None:
            raise web.HTTPNotFound()  # the intake's usual JSON 404
        return _answer(request, found)


def is_open(request: web.Request) -> bool:
    """Whether the request is for one of the console's static files (no token needed)."""
    resource = request.match_info.route.resource
    return resource is not None and resource.name in OPEN_ROUTE_NAMES


def _answer(request: web.Request, found: StaticFile) -> web.Response:
    headers = {**SECURITY_HEADERS, "ETag": found.etag}
    if any(
        tag.strip() == found.etag
        for value in request.headers.getall("If-None-Match", [])
        for tag in value.split(",")
    ):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = f"{found.content_type}; charset=utf-8"
    return web.Response(body=found.body, headers=headers)
