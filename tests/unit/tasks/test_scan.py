"""The fast reading of plain tasks files must say exactly what the composed path says."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from tests.helpers.yamlbomb import alias_bomb
from watcher.errors import ConfigError
from watcher.tasks.document import EntryResult, compose_tasks, open_tasks, read_entries
from watcher.tasks.scan import scan_tasks

ENDPOINTS = ("app", "audit")
HOSTS = ("hooks.example.com",)


def both_ways(text: str) -> tuple[list[EntryResult] | str, list[EntryResult] | str]:
    """What the fast path and the composed path read from `text` (the document's problem
    when it is rejected)."""

    def read(tasks: object) -> list[EntryResult]:
        return list(
            read_entries(
                tasks,  # type: ignore[arg-type]
                text,
                endpoint_names=ENDPOINTS,
                allowed_callback_hosts=HOSTS,
            )
        )

    try:
        composed: list[EntryResult] | str = read(compose_tasks(text, "t") or [])
    except ConfigError as exc:
        composed = str(exc.problems)
    try:
        opened: list[EntryResult] | str = read(open_tasks(text, "t") or [])
    except ConfigError as exc:
        opened = str(exc.problems)
    return opened, composed


PLAIN = [
    # the bench's shape
    """\
    tasks:
      - task_id: f-000001
        model: nano-banana
        metadata: {order_id: 1, customer: c1}
      - task_id: f-000002
        model: nano-banana
        metadata: {order_id: 2, customer: c2}
    """,
    # items at the key's own indentation, every field, values of every plain type
    """\
    tasks:
    - task_id: a1
      model: flux-2
      endpoints: [app, audit, app]
      callback_url: https://hooks.example.com:8443/cb?a=1&b=x%20y
      deadline: 2h
      metadata: {a: 1, b: -2, c: 0x1F, d: 0o17, e: 1_000, g: 012, h: 0}
    - task_id: a2
      model: flux-2
      metadata: {a: 1.5, b: 1e3, c: 1.0e+3, d: 6.8523015e+5, e: 685_230.15}
    - task_id: a2b
      model: 190:20:30
      deadline: 12:30
    - task_id: a3
      model: flux-2
      metadata: {a: yes, b: No, c: on, d: OFF, e: true, f: null, g: Null, h: y, i: n}
    - task_id: a4
      model: flux-2
      metadata: {}
      endpoints: []
    """,
    # bad entries, each with its problems and lines; the same id with two models
    """\
    tasks:
      - task_id: ok-1
        model: m
      - model: m
        colour: blue
      - task_id: bad/x
        model: m
      - task_id: ok-2
        model: m
        endpoints: [nowhere]
        callback_url: http://elsewhere.example.com/x
        deadline: 0
        metadata: {big: 1}
        extra: 1
      - task_id: ok-1
        model: other
      - task_id: 12
        model: true
      - task_id: d1
        model: m
        deadline: soon
        metadata: [1, 2]
    """,
    # a URL, a number and a date-like id as values
    """\
    tasks:
      - task_id: t-1
        model: a:b
        callback_url: http://hooks.example.com/x:y
        metadata: {n: -1, s: 2024-01-01x}
    """,
]

NOT_PLAIN = [
    # comments, blank lines, quotes, block scalars, nesting
    "tasks:\n  # one\n  - task_id: a\n    model: m\n",
    "tasks:\n\n  - task_id: a\n    model: m\n",
    "tasks:\n  - task_id: 'a'\n    model: m\n",
    "tasks:\n  - task_id: a\n    model: m\n    metadata:\n      order: 1\n",
    "tasks:\n  - task_id: a\n    model: m\n    metadata: {a: {b: c}}\n",
    "tasks:\n  - task_id: a\n    model: m\n    metadata: {a: [b]}\n",
    "tasks:\n  - task_id: a\n    model: m\n    note: |\n      x\n",
    # flow style, other keys, no entries
    "tasks: [{task_id: a, model: m}]\n",
    "tasks:\n  - task_id: a\n    model: m\nother: 1\n",
    "tasks:\n",
    "tasks: []\n",
    "# header\ntasks:\n  - task_id: a\n    model: m\n",
    # anchors, aliases, tags, merge keys
    "tasks:\n  - task_id: &i a\n    model: m\n  - task_id: *i\n    model: m\n",
    "tasks:\n  - &e {task_id: a, model: m}\n  - *e\n",
    "tasks:\n  - task_id: a\n    model: !!str m\n",
    "tasks:\n  - task_id: a\n    model: m\n    <<: {x: 1}\n",
    # values the fast path leaves to the composed one (dates, keys that are no strings)
    "tasks:\n  - task_id: a\n    model: m\n    metadata: {at: 2024-01-01}\n",
    "tasks:\n  - task_id: a\n    model: m\n    deadline: 2024-01-01 10:00:00\n",
    "tasks:\n  - task_id: a\n    model: m\n    on: x\n",
    "tasks:\n  - task_id: a\n    model: m\n    metadata: {null: x}\n",
    "tasks:\n  - task_id: a\n    model: m\n    metadata: {a: .inf, b: -.5, c: .nan}\n",
    "tasks:\n  - task_id: a\n    model: m\n    metadata: {a: +12}\n",
    "tasks:\n  - task_id: a\n    model: =\n",
    # duplicates
    "tasks:\n  - task_id: a\n    model: m\n    model: n\n",
    "tasks:\n  - task_id: a\n    model: m\n    metadata: {a: 1, a: 2}\n",
    # broken documents: mixed indentation, a key with no value, a trailing colon, tabs
    "tasks:\n  - task_id: a\n    model: m\n - task_id: b\n   model: m\n",
    "tasks:\n  - task_id: a\n     model: m\n",
    "tasks:\n  - task_id: a\n    model: m:\n",
    "tasks:\n  - task_id: a\n    model: m \n",
    "tasks:\n  - task_id: a\n\tmodel: m\n",
    "tasks:\n  - task_id: a\n    model: m\n  - x\n",
    "tasks:\n  - task_id: a\r\n    model: m\r\n",
    "tasks:\n  - task_id: a\n    model: m\n---\ntasks:\n",
    "tasks:\n  - task_id: a\n    model: m\n    metadata:\n" + alias_bomb(8, indent="      "),
]


@pytest.mark.parametrize("text", [textwrap.dedent(t) for t in PLAIN])
def test_a_plain_file_is_read_fast_and_the_same(text: str) -> None:
    assert scan_tasks(text) is not None
    opened, composed = both_ways(text)
    assert opened == composed  # entries, their paths, lines and fingerprints; problems


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_anything_else_is_composed_as_before(text: str) -> None:
    assert scan_tasks(text) is None
    opened, composed = both_ways(text)
    assert opened == composed


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "7",
        "007",
        "0x_1F",
        "1_0",
        "1:2:3",
        "1.",
        "1.5e+3",
        "y",
        "Y",
        "yes",
        "NO",
        "On",
        "nULL",
        "NULL",
        "True",
        "tRUE",
        "-1",
        "-0",
        "-x",
        "a-b",
        "1e5",
        "0b1_0",
        "1:60",
    ],
)
def test_each_plain_scalar_means_what_the_safe_loader_says(value: str) -> None:
    text = f"tasks:\n  - task_id: t\n    model: m\n    metadata: {{v: {value}}}\n"
    scanned = scan_tasks(text)
    expected = yaml.safe_load(text)["tasks"][0]["metadata"]
    if scanned is not None:
        assert scanned[0].raw["metadata"] == expected
        assert type(scanned[0].raw["metadata"]["v"]) is type(expected["v"])
    opened, composed = both_ways(text)
    assert opened == composed


def test_an_appended_entry_keeps_the_fingerprints_of_the_others_on_both_paths() -> None:
    text = "tasks:\n  - task_id: a\n    model: m\n"
    appended = text + "  - task_id: b\n    model: m\n"
    commented = "# now with a comment\n" + appended  # composed: not the plain shape any more
    fast = [e.fingerprint for e in scan_entries(appended)]
    assert fast[0] == scan_entries(text)[0].fingerprint
    assert fast == [e.fingerprint for e in composed_entries(commented)]


def scan_entries(text: str) -> list[EntryResult]:
    assert scan_tasks(text) is not None
    return both_ways(text)[0]  # type: ignore[return-value]


def composed_entries(text: str) -> list[EntryResult]:
    assert scan_tasks(text) is None
    return both_ways(text)[1]  # type: ignore[return-value]
