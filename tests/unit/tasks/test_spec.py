"""Validation of one registration, shared by the intake API and the tasks file."""

from __future__ import annotations

import pytest

from watcher.errors import InvalidTask
from watcher.tasks.spec import parse_task_spec

HOSTS = ("h", "hooks.example.com", "[::1]")


def _problems(raw: object) -> list[tuple[str, str]]:
    with pytest.raises(InvalidTask) as caught:
        parse_task_spec(raw, endpoint_names=["app"], allowed_callback_hosts=HOSTS)
    return [(p.field, p.code) for p in caught.value.problems]


@pytest.mark.parametrize(
    "url",
    [
        "http://h:99999/x",  # out of range
        "http://h:65536/x",
        "http://h:0/x",
        "http://h:abc/x",
        "http://h:+80/x",
        "http://h:-1/x",
        "http://h: 80/x",
        "http://h:\u0668\u0660/x",  # Arabic-Indic digits: int() would take them
        "http://[x]/y",  # not an IP literal
        "http://[::1/y",  # unclosed bracket
        "https://hooks.example.com:8o/x",
    ],
)
def test_a_callback_url_with_a_bad_port_or_host_is_a_problem_not_a_crash(url: str) -> None:
    raw = {"task_id": "t1", "model": "m", "callback_url": url}
    assert _problems(raw) == [("callback_url", "invalid")]


@pytest.mark.parametrize(
    "url",
    ["http://h/x", "http://h:8080/x", "https://hooks.example.com:443/x", "http://[::1]:9000/x"],
)
def test_a_callback_url_with_a_good_port_is_accepted(url: str) -> None:
    spec = parse_task_spec(
        {"task_id": "t1", "model": "m", "callback_url": url},
        endpoint_names=["app"],
        allowed_callback_hosts=HOSTS,
    )
    assert spec.callback_url == url


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_metadata_that_is_not_json_is_a_problem(value: float) -> None:
    # YAML has .nan and .inf; JSON has neither, and webhook bodies must be JSON.
    raw = {"task_id": "t1", "model": "m", "metadata": {"x": [value]}}
    assert _problems(raw) == [("metadata", "invalid")]
