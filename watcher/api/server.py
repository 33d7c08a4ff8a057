"""The intake HTTP API: register, inspect and cancel tasks, inspect and redeliver webhooks,
ping an endpoint, reload, health, metrics. docs/api.md is the reference; watcher/api/openapi.py
describes it.

Every answer is JSON (except /metrics); every error is `{"error": {"code", "message", ...}}`.
The server runs inside the daemon's event loop and never handles signals itself. Domain work
goes through `WatchService`, so a 201/200 on `POST /v1/tasks` means the task is committed.

A web page in the operator's browser must not be able to drive the API (watcher/api/guard.py):
requests for another Host or from another Origin get 403, and a body must be declared
`application/json` (415): HTML forms and CORS-free `fetch` calls can only send form encodings
and `text/plain`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog
from aiohttp import web

from watcher import jsontext
from watcher.api import console
from watcher.api.guard import HostPolicy
from watcher.api.metrics import Metrics
from watcher.api.openapi import openapi_document
from watcher.api.status import DaemonSnapshot, status_json
from watcher.api.views import (
    delivery_json,
    instances_json,
    model_stats_json,
    ping_json,
    task_detail_json,
    task_json,
)
from watcher.config.settings import IntakeConfig
from watcher.errors import (
    ConfigProblem,
    DeliveryNotFound,
    EndpointNotFound,
    FieldProblem,
    InvalidCursor,
    InvalidTask,
    StoreError,
    TaskConflict,
    TaskFinished,
    TaskNotFound,
    WatcherError,
)
from watcher.models import PublicDeliveryStatus, TaskSource, TaskState
from watcher.service import WatchService
from watcher.store.postgres_cluster import InstanceRecord
from watcher.tasks.spec import is_task_id, parse_task_spec

log = structlog.get_logger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Probes must answer without credentials: systemd, load balancers and orchestrators call them.
# The hint route checks its own token (intake.hint_token, in the query string: the upstream's
# callback cannot send headers).
HINT_PATH = "/v1/hints/apixo"
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", HINT_PATH})
HINT_MAX_BYTES = 64 * 1024
# Routes whose request has a JSON body; on the others a body is refused unless it is JSON too.
BODY_ROUTES = frozenset({("POST", "/v1/tasks")})
JSON_TYPE = "application/json"
FORM_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
_SHUTDOWN_TIMEOUT_S = 5.0
_LINGER_MAX_S = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
E = TypeVar("E", bound=StrEnum)


class DaemonControl(Protocol):
    """What the intake asks of the daemon that runs it."""

    async def reload(self) -> list[ConfigProblem]:
        """Reload the config: [] when applied, else every problem (the old config stays)."""
        ...

    def liveness(self) -> list[str]:
        """Reasons the daemon is not alive ([] when it is)."""
        ...

    async def readiness(self) -> list[str]:
        """Reasons the daemon is not ready ([] when it is)."""
        ...

    def snapshot(self) -> DaemonSnapshot:
        """The live counters of the scheduler and the deliverer (`GET /v1/status`)."""
        ...

    async def instances(self) -> tuple[list[InstanceRecord], str]:
        """The live instances sharing the store, and this one's id (`GET /v1/instances`)."""
        ...


class ApiError(WatcherError):
    """An intake request was refused; becomes a JSON error answer."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.field = field
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})
        super().__init__(message)


def error_body(
    code: str, message: str, *, field: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The JSON of an error answer; `field` is null unless the error is about one field."""
    return {"error": {"code": code, "message": message, "field": field}, **extra}


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def _dumps(data: Any) -> str:
    """Every answer is RFC 8259 JSON; a NaN in a record stored before values were checked is
    answered as null."""
    try:
        return json.dumps(data, allow_nan=False)
    except ValueError:
        return json.dumps(jsontext.finite(data), allow_nan=False)


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; accepting them would put invalid JSON into webhook bodies.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e999: out of range, would be echoed as Infinity
        raise ValueError("a number is out of range")
    return value


class IntakeServer:
    """The intake API on TCP or a unix socket."""

    def __init__(
        self,
        *,
        service: WatchService,
        config: IntakeConfig,
        control: DaemonControl,
        metrics: Metrics,
    ) -> None:
        self._service = service
        self._config = config
        self._control = control
        self._metrics = metrics
        self._draining = False
        self._runner: web.AppRunner | None = None
        self._unix_path: Path | None = None
        # Until bound, the configured address; the real port (of `:0`) once listening.
        self._hosts = self._host_policy()
        self.app = self._build_app()

    # -- lifecycle ------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                self._observe,
                self._errors,
                self._browsers,
                self._auth,
                self._json_bodies,
            ],
            client_max_size=max(self._config.max_body_bytes, 1024),
        )
        r = app.router
        r.add_post("/v1/tasks", self._post_task)
        r.add_get("/v1/tasks", self._list_tasks, allow_head=False)
        r.add_get("/v1/tasks/{task_id}", self._get_task, allow_head=False)
        r.add_delete("/v1/tasks/{task_id}", self._cancel_task)
        r.add_get("/v1/deliveries", self._list_deliveries, allow_head=False)
        r.add_get("/v1/deliveries/{delivery_id}", self._get_delivery, allow_head=False)
        r.add_post("/v1/deliveries/{delivery_id}/redeliver", self._redeliver)
        r.add_post("/v1/endpoints/{name}/ping", self._ping)
        r.add_post("/v1/reload", self._reload)
        r.add_post(HINT_PATH, self._hint)
        r.add_get("/v1/stats/models", self._stats_models, allow_head=False)
        r.add_get("/healthz", self._healthz, allow_head=False)
        r.add_get("/livez", self._healthz, allow_head=False)
        r.add_get("/readyz", self._readyz, allow_head=False)
        r.add_get("/metrics", self._metrics_text, allow_head=False)
        r.add_get("/openapi.json", self._openapi, allow_head=False)
        r.add_get("/v1/status", self._status, allow_head=False)
        r.add_get("/v1/instances", self._instances, allow_head=False)
        console.Console(lambda: self._config.token is not None).add_routes(r)
        return app

    async def start(self) -> None:
        """Bind and serve; WatcherError when the address can't be bound."""
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
            # Closes a connection with no request in flight: idle between requests, or not
            # done sending its headers idle_timeout after it opened or got its last answer
            # (aiohttp >= 3.14.5 starts the timer when the connection opens). Idle clients
            # must not hold file descriptors the webhooks and polls need.
            keepalive_timeout=self._config.idle_timeout_s,
            # After an early answer (413, 408), the rest of the body is read and dropped for
            # this long so that the client sees the answer rather than a reset; not longer: a
            # client that trickles its body would hold the connection all that time.
            lingering_time=min(_LINGER_MAX_S, self._config.body_timeout_s),
        )
        await runner.setup()
        cfg = self._config
        try:
            if cfg.unix_path is not None:
                path = Path(cfg.unix_path)
                _clear_stale_socket(path)
                await web.UnixSite(runner, str(path)).start()
                self._unix_path = path
                # Group access only: the token is optional on a unix socket, the mode is the guard.
                os.chmod(path, 0o660)
            else:
                host = cfg.host or "127.0.0.1"
                await web.TCPSite(runner, host, cfg.port or 0).start()
        except (OSError, WatcherError) as exc:
            await runner.cleanup()
            bound, self._unix_path = self._unix_path, None
            if bound is not None:  # bound, then chmod failed: leave no socket behind
                bound.unlink(missing_ok=True)
            if isinstance(exc, WatcherError):
                raise
            reason = exc.strerror or str(exc)
            raise WatcherError(f"cannot listen on {cfg.listen}: {reason}") from exc
        self._runner = runner
        self._hosts = self._host_policy()
        log.info("intake_listening", address=self.address, token=cfg.token is not None)

    @property
    def address(self) -> str:
        """Where the server listens: "127.0.0.1:54321" (the real port) or "unix:/path"."""
        if self._unix_path is not None:
            return f"unix:{self._unix_path}"
        if self._runner is not None:
            for sockname in self._runner.addresses:
                if isinstance(sockname, tuple):
                    host, port = sockname[0], sockname[1]
                    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return self._config.listen

    def _host_policy(self) -> HostPolicy:
        cfg = self._config
        if cfg.unix_path is not None:
            return HostPolicy(None, None, cfg.allowed_hosts)
        host, port = cfg.host or "127.0.0.1", cfg.port
        if self._runner is not None:
            for sockname in self._runner.addresses:
                if isinstance(sockname, tuple):
                    host, port = sockname[0], sockname[1]
                    break
        return HostPolicy(host, port, cfg.allowed_hosts)

    def set_draining(self) -> None:
        """Graceful stop: refuse new tasks (503) and report not ready; the rest still answers."""
        self._draining = True

    def update_config(self, config: IntakeConfig) -> None:
        """Apply a reloaded intake config: the token, body limit and timeout and the allowed
        hosts apply at once.

        A changed `listen` or `idle_timeout` needs a restart (the daemon logs that).
        """
        self._config = config
        self._hosts = self._host_policy()

    async def stop(self) -> None:
        """Stop serving (in-flight requests get a short grace) and remove the socket file."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        path, self._unix_path = self._unix_path, None
        if path is not None:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()

    # -- middlewares ----------------------------------------------------------------------------
    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        duration_ms = (time.perf_counter() - started) * 1000
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        self._metrics.intake_request(route, request.method, response.status)
        log.debug(
            "intake_request",
            method=request.method,
            path=request.path,
            status=response.status,
            duration_ms=round(duration_ms, 3),
        )
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            body = error_body(exc.code, exc.message, field=exc.field, **exc.extra)
            return _json(body, exc.status, exc.headers)
        except web.HTTPException as exc:
            return _http_exception(exc)
        except (
            TaskNotFound,
            DeliveryNotFound,
            EndpointNotFound,
            TaskConflict,
            TaskFinished,
        ) as exc:
            status, code = _DOMAIN_ERRORS[type(exc)]
            return _json(error_body(code, exc.message), status)
        except InvalidCursor:
            message = "cursor must be the next_cursor of an earlier page"
            return _json(error_body("invalid_parameter", message, field="cursor"), 400)
        except StoreError as exc:
            # The message says what failed (the store's errors are wrapped with it); the answer
            # does not: it may name files, and the client can only retry.
            log.error(
                "intake_store_error", method=request.method, path=request.path, error=exc.message
            )
            return _json(error_body("store_unavailable", "the task store is unavailable"), 503)
        except Exception:
            log.error(
                "intake_handler_failed", method=request.method, path=request.path, exc_info=True
            )
            return _json(error_body("internal", "internal error"), 500)

    @web.middleware
    async def _browsers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse what a web page could make the operator's browser send: see guard.py."""
        if request.path in OPEN_PATHS:
            return await handler(request)
        host = request.headers.get("Host")
        if not self._hosts.host_allowed(host):
            shown = (host or "")[:100]
            raise ApiError(
                403,
                "host_not_allowed",
                f"Host {shown!r} is not an address of this daemon; a name it is reached by "
                f"(e.g. through a proxy) must be listed in intake.allowed_hosts",
            )
        origin = request.headers.get("Origin")
        if origin is not None and not self._hosts.origin_allowed(origin, host):
            raise ApiError(
                403,
                "origin_not_allowed",
                f"requests from web pages of another origin ({origin[:100]!r}) are refused",
            )
        return await handler(request)

    @web.middleware
    async def _json_bodies(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A body must be declared JSON: HTML forms and `fetch` without CORS can only send
        form encodings and text/plain."""
        if request.path == HINT_PATH:
            # Its own token in the URL, no cookie or bearer a page could borrow; and the
            # upstream's callback may label its JSON as anything: the body decides (400).
            return await handler(request)
        route = request.match_info.route.resource
        takes_body = (request.method, route.canonical if route else "") in BODY_ROUTES
        # What a page can send without the browser asking first ("simple" requests); an empty
        # body declared so is refused too (clients such as aiohttp's declare
        # application/octet-stream on an empty POST: that is fine).
        form = "Content-Type" in request.headers and request.content_type in FORM_TYPES
        if (takes_body or request.body_exists or form) and request.content_type != JSON_TYPE:
            shown = request.headers.get("Content-Type", "none")[:100]
            raise ApiError(
                415,
                "unsupported_media_type",
                f"the body must be {JSON_TYPE} (Content-Type: {shown!r})",
            )
        return await handler(request)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self._config.token
        if token is not None and request.path not in OPEN_PATHS and not console.is_open(request):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            expected = token.reveal().encode()
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), expected
            ):
                raise ApiError(
                    401,
                    "unauthorized",
                    "a valid bearer token is required",
                    headers={"WWW-Authenticate": 'Bearer realm="apixo-watcher"'},
                )
        return await handler(request)

    # -- tasks ----------------------------------------------------------------------------------
    async def _post_task(self, request: web.Request) -> web.Response:
        if self._draining:
            raise ApiError(503, "draining", "the daemon is shutting down and takes no new tasks")
        raw = _parse_json(await self._read_body(request))
        config = self._service.config
        try:
            spec = parse_task_spec(
                raw,
                endpoint_names=self._service.endpoint_names(),
                allowed_callback_hosts=config.delivery.allowed_callback_hosts,
            )
        except InvalidTask as exc:
            raise _validation_error(exc.problems) from exc
        task, created = await self._service.register(spec, source=TaskSource.API)
        headers = {"Location": f"/v1/tasks/{task.task_id}"}
        return _json(task_json(task), 201 if created else 200, headers)

    async def _read_body(self, request: web.Request, limit: int | None = None) -> bytes:
        limit = self._config.max_body_bytes if limit is None else limit
        too_large = ApiError(
            413, "payload_too_large", f"the request body is larger than {limit} bytes"
        )
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        # Read in chunks with our own bound: a chunked body has no Content-Length to trust, and
        # the limit may have changed on reload (the app's client_max_size can't).
        chunks: list[bytes] = []
        size = 0
        timeout_s = self._config.body_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    chunks.append(chunk)
        except TimeoutError:
            raise ApiError(
                408,
                "request_timeout",
                f"the request body did not arrive within {timeout_s:g}s",
                headers={"Connection": "close"},
            ) from None
        return b"".join(chunks)

    async def _list_tasks(self, request: web.Request) -> web.Response:
        state = _enum_param(request, "state", TaskState)
        limit = _limit_param(request)
        cursor = _cursor_param(request)
        tasks, next_cursor = await self._service.list_tasks(state=state, limit=limit, cursor=cursor)
        return _json({"tasks": [task_json(t) for t in tasks], "next_cursor": next_cursor})

    async def _get_task(self, request: web.Request) -> web.Response:
        view = await self._service.view(request.match_info["task_id"])
        return _json(task_detail_json(view))

    async def _cancel_task(self, request: web.Request) -> web.Response:
        cancellation = await self._service.cancel(request.match_info["task_id"])
        return _json(
            {
                **task_json(cancellation.task),
                "already_cancelled": cancellation.already_cancelled,
            }
        )

    # -- deliveries -----------------------------------------------------------------------------
    async def _list_deliveries(self, request: web.Request) -> web.Response:
        status = _enum_param(request, "status", PublicDeliveryStatus)
        task_id = request.query.get("task_id") or None
        limit = _limit_param(request)
        cursor = _cursor_param(request)
        deliveries, next_cursor = await self._service.list_deliveries(
            status=status, task_id=task_id, limit=limit, cursor=cursor
        )
        return _json(
            {"deliveries": [delivery_json(d) for d in deliveries], "next_cursor": next_cursor}
        )

    async def _get_delivery(self, request: web.Request) -> web.Response:
        view = await self._service.delivery_view(request.match_info["delivery_id"])
        return _json(delivery_json(view.delivery, view.attempts))

    async def _redeliver(self, request: web.Request) -> web.Response:
        delivery = await self._service.redeliver(request.match_info["delivery_id"])
        return _json(delivery_json(delivery), 202)

    # -- adaptive polling -----------------------------------------------------------------------
    async def _hint(self, request: web.Request) -> web.Response:
        """The upstream's callback body, or anything like it: never trusted. A JSON object
        whose `data.taskId` is a string moves that task's next poll to now (if it is watched,
        within the budget); the poll decides. Unknown ids get the same answer."""
        expected = self._config.hint_token
        if expected is None:
            raise ApiError(404, "not_found", "hints are not enabled (set intake.hint_token)")
        given = request.query.get("token", "")
        if not hmac.compare_digest(given.encode(), expected.reveal().encode()):
            log.warning("hint_rejected", reason="missing or wrong token")
            raise ApiError(401, "unauthorized", "a valid token query parameter is required")
        body = await self._read_body(request, HINT_MAX_BYTES)
        task_id = _hinted_task_id(body)
        # An id no registration could have names no task, here or on another instance (to
        # which a hint for a task not watched here goes as a database notice).
        watched = is_task_id(task_id) and self._service.hint(task_id)
        log.info("hint_received", task_id=task_id, watched=watched)
        return _json({"status": "accepted"})

    async def _stats_models(self, request: web.Request) -> web.Response:
        return _json(model_stats_json(self._service.model_stats()))

    # -- endpoints ------------------------------------------------------------------------------
    async def _ping(self, request: web.Request) -> web.Response:
        result = await self._service.ping(request.match_info["name"])
        return _json(ping_json(result))

    # -- operations -----------------------------------------------------------------------------
    async def _reload(self, request: web.Request) -> web.Response:
        problems = await self._control.reload()
        if not problems:
            return _json({"status": "reloaded"})
        message = (
            f"{len(problems)} problem(s) in the configuration; the running configuration is kept"
        )
        listed = [{"path": p.path, "line": p.line, "message": p.message} for p in problems]
        return _json(error_body("invalid_config", message, problems=listed), 422)

    async def _healthz(self, request: web.Request) -> web.Response:
        reasons = self._control.liveness()
        if reasons:
            return _json({"status": "unhealthy", "reasons": reasons}, 503)
        return _json({"status": "ok"})

    async def _readiness(self) -> list[str]:
        reasons = list(await self._control.readiness())
        if self._draining and not any(r.startswith("draining") for r in reasons):
            reasons.append("draining: the daemon is stopping")
        return reasons

    async def _readyz(self, request: web.Request) -> web.Response:
        reasons = await self._readiness()
        if reasons:
            return _json({"status": "not_ready", "reasons": reasons}, 503)
        return _json({"status": "ready"})

    async def _metrics_text(self, request: web.Request) -> web.Response:
        body, content_type = await self._metrics.scrape()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    async def _instances(self, request: web.Request) -> web.Response:
        records, me = await self._control.instances()
        return _json(instances_json(records, me))

    async def _status(self, request: web.Request) -> web.Response:
        model_stats = any(
            resource.canonical == "/v1/stats/models" for resource in request.app.router.resources()
        )
        snapshot = self._control.snapshot()
        return _json(
            status_json(snapshot, reasons=await self._readiness(), model_stats=model_stats)
        )


def _hinted_task_id(body: bytes) -> str:
    """`data.taskId` of a hint body (the upstream's envelope); ApiError 400 for anything else."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        raw = None
    data = raw.get("data") if isinstance(raw, dict) else None
    task_id = data.get("taskId") if isinstance(data, dict) else None
    if not isinstance(task_id, str):
        raise ApiError(
            400,
            "invalid_hint",
            "the body must be a JSON object whose data.taskId is a string",
            field="data.taskId",
        )
    return task_id


_DOMAIN_ERRORS: Mapping[type[WatcherError], tuple[int, str]] = {
    TaskNotFound: (404, "task_not_found"),
    DeliveryNotFound: (404, "delivery_not_found"),
    EndpointNotFound: (404, "endpoint_not_found"),
    TaskConflict: (409, "task_conflict"),
    TaskFinished: (409, "task_finished"),
}

_HTTP_CODES: Mapping[int, tuple[str, str]] = {
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "method not allowed on this route"),
    413: ("payload_too_large", "the request body is too large"),
}


def _http_exception(exc: web.HTTPException) -> web.Response:
    code, message = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
    headers = {}
    if exc.status == 405 and "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    return _json(error_body(code, message), exc.status, headers)


def _parse_json(body: bytes) -> object:
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc


def _validation_error(problems: list[FieldProblem]) -> ApiError:
    # A problem with the body as a whole (not an object) has field "": shown as null.
    listed = [{"field": p.field or None, "code": p.code, "message": p.message} for p in problems]
    first = problems[0]
    message = "; ".join(
        f"{p.field}: {p.message}" if p.field else f"the body {p.message}" for p in problems
    )
    return ApiError(
        422,
        "validation_failed",
        message,
        field=first.field or None,
        extra={"problems": listed},
    )


def _enum_param(request: web.Request, name: str, kind: type[E]) -> E | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ApiError(
            400, "invalid_parameter", f"{name} must be one of: {allowed}", field=name
        ) from None


def _limit_param(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(
            400,
            "invalid_parameter",
            f"limit must be a whole number from 1 to {MAX_LIMIT}",
            field="limit",
        )
    return int(raw)


def _cursor_param(request: web.Request) -> str | None:
    return request.query.get("cursor") or None


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file left by a dead process; refuse to take over a live one."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WatcherError(f"cannot listen on unix:{path}: {exc.strerror}") from exc
    if not stat.S_ISSOCK(mode):
        raise WatcherError(f"cannot listen on unix:{path}: the path exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # nobody answers: stale
            return
    raise WatcherError(f"cannot listen on unix:{path}: another process is listening there")
