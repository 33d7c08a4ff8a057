"""The OpenAPI document is valid, complete, and true of the live server (schemathesis)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.api.test_intake import (
    TOKEN,
    FakeControl,
    Harness,
    make_config,
    running_intake,
)
from watcher.api.metrics import Metrics
from watcher.api.openapi import openapi_document
from watcher.api.server import IntakeServer
from watcher.clock import ManualClock
from watcher.config.settings import Config
from watcher.service import WatchService
from watcher.store.adapter import AsyncAdapter
from watcher.store.memory import MemoryStore

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
MAX_EXAMPLES = 30


def test_the_document_is_valid_openapi() -> None:
    validate(openapi_document())


def test_every_registered_route_is_documented_and_nothing_else(tmp_path: Path) -> None:
    config: Config = make_config(tmp_path)
    service = WatchService(store=AsyncAdapter(MemoryStore()), config=config, clock=ManualClock())
    server = IntakeServer(
        service=service, config=config.intake, control=FakeControl(), metrics=Metrics()
    )
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in server.app.router.routes()
        if route.resource is not None
    }
    documented = {
        (method, path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert registered == documented


def test_every_secured_operation_documents_401_and_the_probes_are_open() -> None:
    doc = openapi_document()
    assert doc["security"] == [{"bearerAuth": []}]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if path in ("/healthz", "/livez", "/readyz") or path.startswith("/ui"):
                assert operation["security"] == []
            elif path == "/v1/hints/apixo":  # its own token, in the query
                assert operation["security"] == []
                assert "401" in operation["responses"]
            else:
                assert "401" in operation["responses"], (method, path)
                assert "security" not in operation


HINT = "/v1/hints/apixo"


def test_the_browser_guards_are_documented() -> None:
    doc = openapi_document()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            # (the hint route: its token is in the URL, the upstream calls it through a proxy,
            # and its body is judged by content alone)
            if method == "parameters" or path in ("/healthz", "/livez", "/readyz", HINT):
                continue
            assert "403" in operation["responses"], (method, path)
            assert ("415" in operation["responses"]) == (method in ("post", "delete")), (
                method,
                path,
            )


def has_inputs(operation: Any) -> bool:
    return bool(len(operation.path_parameters) or len(operation.query) or operation.body)


def fuzz(base_url: str, seeded: dict[str, dict[str, str]]) -> None:
    """Generate requests for every operation and check each answer against the document."""
    schema = schemathesis.openapi.from_dict(openapi_document())
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for result in schema.get_all_operations():
        operation = result.ok()

        # First the seeded objects, so the success answers are checked too.
        params = [p.name for p in operation.path_parameters]
        for name in params:
            if name in seeded:
                for value in seeded[name].values():
                    case = operation.Case(path_parameters={name: value})
                    case.call_and_validate(base_url=base_url, headers=auth, checks=CHECKS)

        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(
                max_examples=MAX_EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                case.call_and_validate(base_url=base_url, headers=auth, checks=CHECKS)

            try:
                check()
            except Unsatisfiable:
                # An operation without parameters or body has no invalid input to generate.
                if mode is schemathesis.GenerationMode.POSITIVE or has_inputs(operation):
                    raise


@pytest.mark.timeout(120)
async def test_the_live_server_answers_as_documented(tmp_path: Path) -> None:
    async with running_intake(tmp_path, token=TOKEN) as h:
        seeded = await seed(h)
        # schemathesis is synchronous: it runs in a thread while this loop serves its requests.
        await asyncio.to_thread(fuzz, h.base_url, seeded)


async def seed(h: Harness) -> dict[str, dict[str, str]]:
    for task_id in ("seed-done", "seed-active"):
        body = {
            "task_id": task_id,
            "model": "nano-banana",
            "callback_url": "https://hooks.example.com/cb",
            "metadata": {"order": 1},
        }
        answer = await h.call("POST", "/v1/tasks", json_body=body)
        assert answer.status == 201
    deliveries = h.finish("seed-done", fail_app=True)
    await h.call("POST", "/v1/tasks", json_body={"task_id": "seed-retrying", "model": "m"})
    deliveries += h.finish("seed-retrying", retry_app=True)
    return {
        "task_id": {"done": "seed-done", "active": "seed-active"},
        "delivery_id": {f"{d.task_id}/{d.endpoint}": d.delivery_id for d in deliveries},
        "name": {"app": "app"},
    }
